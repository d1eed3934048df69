"""The `dropscope` command: each sub-command lives in its own module and registers itself here."""

from __future__ import annotations

import argparse
import sys

from dropscope import __version__


def build_parser() -> argparse.ArgumentParser:
    # Imported here so `dropscope --version` stays fast and one broken part does not hide the others.
    from dropscope import check, compare, fix, history, report, trend

    parser = argparse.ArgumentParser(prog="dropscope", description="Fleet-wide packet drop diagnosis.")
    parser.add_argument("--version", action="version", version=f"dropscope {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    report.add_arguments(commands)
    compare.add_arguments(commands)
    check.add_arguments(commands)
    fix.add_arguments(commands)
    trend.add_arguments(commands)
    history.add_arguments(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
