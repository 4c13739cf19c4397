"""Exit codes every ``tritonfleet`` subcommand shares (``sync`` adds its own above 2)."""

EXIT_OK = 0
EXIT_INVALID = 1  # the input is invalid: every problem is listed
EXIT_USAGE = 2  # bad arguments, unreadable files, or the cluster cannot be reached
