"""``python -m tritonfleet.sync ARGS``: the same as ``tritonfleet sync ARGS``,
usable before the subcommand is wired into the main CLI and in images that
only ship the package."""

import sys

from tritonfleet.sync.cli import main

sys.exit(main())
