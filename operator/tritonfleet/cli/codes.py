"""Exit codes every ``tritonfleet`` subcommand shares (``sync`` adds its own above 2).

Defined with the other shared conventions in ``adapters.cli_args``, which the gateway's
own subcommand (below this layer) uses too.
"""

from tritonfleet.adapters.cli_args import EXIT_INVALID, EXIT_OK, EXIT_USAGE

__all__ = ["EXIT_INVALID", "EXIT_OK", "EXIT_USAGE"]
