"""``rtmove echo``: the first thing to try against a site's daemon."""

from __future__ import annotations

import argparse
import json

from client.echo import echo

from .common import SubParsers, add_connection_options, run, settings


def register(commands: SubParsers) -> None:
    p = commands.add_parser("echo", help="C-ECHO a DICOM peer (e.g. the DB Daemon)")
    add_connection_options(p, moves=False)
    p.set_defaults(handler=run(_echo))


def _echo(args: argparse.Namespace) -> int:
    s = settings(args)
    seconds = echo(s.host, s.port, s.aet, s.aec, s.timeout)
    if args.json:
        print(json.dumps({"ok": True, "seconds": round(seconds, 4)}))
    else:
        print(f"C-ECHO {s.aec} at {s.host}:{s.port}: success in {seconds * 1000:.0f} ms")
    return 0
