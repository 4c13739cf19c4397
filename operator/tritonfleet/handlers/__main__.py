"""``python -m tritonfleet.handlers [ARGS]``: the same as ``tritonfleet operator [ARGS]``."""

import argparse
import sys

from tritonfleet.handlers.cli import add_parser


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tritonfleet.handlers")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["operator", *sys.argv[1:]])
    result: int = args.func(args, sys.stdout)
    return result


if __name__ == "__main__":
    sys.exit(main())
