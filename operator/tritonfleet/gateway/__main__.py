"""``python -m tritonfleet.gateway``: the gateway without the umbrella CLI."""

from __future__ import annotations

import sys

from tritonfleet.gateway.cli import main

if __name__ == "__main__":
    sys.exit(main())
