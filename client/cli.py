"""rtmove: the command line of the mover client (each sub-command in ``client.commands``)."""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .commands import check_site, collect, dcmtk_script, echo, find


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtmove", description="Move a radiotherapy plan's collection out of an archive.")
    parser.add_argument("--version", action="version", version=f"rtmove {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for module in (echo, find, collect, dcmtk_script, check_site):
        module.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
