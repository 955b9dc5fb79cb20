"""``rtmove check-site SITE.toml``: what is wrong with a site, before a move fails on it."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from client.check_site import Check, live_checks, static_checks
from client.errors import Kind
from client.live_probes import find_probe, trial_move_probe
from client.settings import from_site
from client.site import SiteError, load_site

from .common import SubParsers, add_output_options, run

LOAD = "site-file"
_STYLES = {"PASS": "bold green", "FAIL": "bold red", "SKIP": "yellow"}


def register(commands: SubParsers) -> None:
    p = commands.add_parser(
        "check-site", help="check a site file against the daemons' trust rules",
        description="Check that the DB Daemon, the File Daemon and this client trust each "
                    "other as a query and a move need, with distinct ports and AE titles; "
                    "with --live, also C-ECHO both daemons at the addresses the file gives.")
    p.add_argument("site_file", type=Path, metavar="SITE.toml", help="the site file to check")
    p.add_argument("--live", action="store_true",
                   help="also C-ECHO the DB Daemon and the File Daemon as the client")
    p.add_argument("--patient", metavar="ID",
                   help="with --live: C-FIND this patient and move one of its RT objects to "
                        "this client (the trial move proves the daemon can reach us)")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds to wait for each daemon's answer with --live "
                        "(default: %(default)s)")
    add_output_options(p)
    p.set_defaults(handler=run(_check_site))


def _check_site(args: argparse.Namespace) -> int:
    try:
        site = load_site(args.site_file)
    except SiteError as exc:
        # Reported as a check, so --json always has the same shape.
        loaded = Check(LOAD, False, str(exc), "correct the key named, at the line named")
        _report(args, [loaded], args.site_file)
        return int(Kind.USAGE)
    static = [Check(LOAD, True, f"read {args.site_file}"), *static_checks(site)]
    live: list[Check] = []
    if args.live:
        settings = from_site(site, timeout=args.timeout)
        probes = [find_probe(settings, args.patient), trial_move_probe(settings, args.patient)]
        live = live_checks(site, settings, timeout=args.timeout, probes=probes)
    _report(args, [*static, *live], args.site_file)
    return exit_code(static, live)


def exit_code(static: Sequence[Check], live: Sequence[Check]) -> int:
    """A wrong file is a usage error whatever the network says; else the first live failure."""
    if any(check.failed for check in static):
        return int(Kind.USAGE)
    for check in live:
        if check.failed:
            return int(check.kind)
    return int(Kind.OK)


def _label(check: Check) -> str:
    return "SKIP" if check.skipped else "PASS" if check.ok else "FAIL"


def _line(check: Check) -> str:
    text = f"{check.name}: {check.detail}"
    if check.failed and check.fix:
        text += f" — fix: {check.fix}"
    return text


def _summary(checks: Sequence[Check], site_file: Path) -> str:
    failed = sum(check.failed for check in checks)
    skipped = sum(check.skipped for check in checks)
    passed = len(checks) - failed - skipped
    if not failed and not skipped:
        return f"{site_file}: all {len(checks)} checks passed"
    parts = [f"{passed} passed", f"{failed} failed"] + [f"{skipped} skipped"] * bool(skipped)
    return f"{site_file}: {len(checks)} checks, {', '.join(parts)}"


def _report(args: argparse.Namespace, checks: Sequence[Check], site_file: Path) -> None:
    if args.json:
        print(json.dumps({
            "ok": not any(check.failed for check in checks),
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail, "fix": c.fix,
                        "skipped": c.skipped} for c in checks],
        }, ensure_ascii=False))
        return
    if not sys.stdout.isatty():  # a log or a pipe: no escape codes, no wrapping
        for check in checks:
            print(f"{_label(check)}  {_line(check)}")
        print(_summary(checks, site_file))
        return
    console = Console(highlight=False, soft_wrap=True)
    for check in checks:
        label = _label(check)
        console.print(f"[{_STYLES[label]}]{label}[/]  {escape(_line(check))}")
    console.print(escape(_summary(checks, site_file)))
