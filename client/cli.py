"""rtmove: the command line of the mover client."""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__
from .echo import echo
from .errors import DicomError

EXIT_OK, EXIT_FAILED = 0, 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtmove", description="Move a radiotherapy plan's collection out of an archive.")
    parser.add_argument("--version", action="version", version=f"rtmove {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("echo", help="C-ECHO a DICOM peer (e.g. the DB Daemon)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5678)
    p.add_argument("--aet", default="DCMTK", help="our (calling) AE title")
    p.add_argument("--aec", default="VMSDBD1", help="the peer's (called) AE title")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def _echo(args: argparse.Namespace) -> int:
    try:
        seconds = echo(args.host, args.port, args.aet, args.aec, args.timeout)
    except DicomError as exc:
        if args.json:
            print(json.dumps({"ok": False, "error": str(exc), "transient": exc.transient}))
        else:
            print(f"rtmove: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps({"ok": True, "seconds": round(seconds, 4)}))
    else:
        print(f"C-ECHO {args.aec} at {args.host}:{args.port}: success in {seconds * 1000:.0f} ms")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "echo":
        return _echo(args)
    raise AssertionError(args.command)  # argparse only lets known commands through


if __name__ == "__main__":
    sys.exit(main())
