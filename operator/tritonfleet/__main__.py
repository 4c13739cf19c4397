"""``python -m tritonfleet ARGS``: the same as the ``tritonfleet`` command."""

import sys

from tritonfleet.cli import main

if __name__ == "__main__":
    sys.exit(main())
