"""``dbdsim scenario list`` and ``dbdsim scenario run NAME...|--all [--json]``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..cli_common import CommandError, SubParsers
from .catalog import find, load_all
from .model import Scenario, ScenarioError
from .runner import Result, run_scenario


def _console() -> Console:
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def _run_list(args: argparse.Namespace, _parser: argparse.ArgumentParser) -> int:
    try:
        scenarios = load_all()
    except ScenarioError as exc:
        raise CommandError(str(exc)) from exc
    if args.json:
        rows = [{"name": s.name, "description": s.description, "tags": list(s.tags),
                 "command": list(s.client.run)} for s in scenarios]
        sys.stdout.write(json.dumps({"scenarios": rows}, indent=2, ensure_ascii=False) + "\n")
        return 0
    table = Table(title=f"{len(scenarios)} scenarios", title_justify="left")
    table.add_column("Name", no_wrap=True)
    table.add_column("Tags")
    table.add_column("What it shows")
    for s in scenarios:
        table.add_row(s.name, ", ".join(s.tags), escape(s.description))
    _console().print(table)
    return 0


def _selected(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[Scenario]:
    if args.all == bool(args.names):
        parser.error("name scenarios to run, or give --all")
    try:
        return load_all() if args.all else [find(name) for name in args.names]
    except ScenarioError as exc:
        raise CommandError(str(exc)) from exc


def _run_run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    results: list[Result] = []
    for scenario in _selected(args, parser):
        work = args.keep / scenario.name if args.keep is not None else None
        try:
            result = run_scenario(scenario, work=work)
        except ScenarioError as exc:
            raise CommandError(str(exc)) from exc
        results.append(result)
        if not args.json:
            mark = "pass" if result.passed else "FAIL"
            print(f"{mark}  {scenario.name} ({result.observed.duration:.1f} s)", file=sys.stderr,
                  flush=True)
    if args.json:
        sys.stdout.write(json.dumps({"results": [r.to_json() for r in results]}, indent=2,
                                    ensure_ascii=False) + "\n")
    else:
        _print_results(results, verbose=args.verbose)
    return 0 if all(r.passed for r in results) else 1


def _print_results(results: list[Result], *, verbose: bool) -> None:
    table = Table(title="Scenarios", title_justify="left")
    for header in ("Scenario", "Result", "Exit", "Seconds", "Difference"):
        table.add_column(header, no_wrap=header != "Difference")
    for r in results:
        seen = r.observed
        table.add_row(r.scenario.name, "[green]pass" if r.passed else "[red]FAIL",
                      "timeout" if seen.exit is None else str(seen.exit),
                      f"{seen.duration:.1f}", escape("\n".join(r.differences)) or "-")
    console = _console()
    console.print(table)
    for r in results:
        if r.passed and not verbose:
            continue
        console.print(f"\n[bold]{r.scenario.name}[/]: {escape(' '.join(r.observed.command))}")
        console.print(escape(r.observed.output.rstrip()) or "(no output)")
        if r.observed.log:
            console.print("[dim]daemons' log:[/]")
            console.print(escape("\n".join(r.observed.log)))
    passed = sum(r.passed for r in results)
    console.print(f"\n{passed} of {len(results)} scenarios passed")


def add_scenario(commands: SubParsers[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "scenario", help="list or run the scenario catalog",
        description="Each scenario starts both daemons with a site set-up, an archive and "
                    "faults, runs a client command, and checks the outcome it names.")
    sub = parser.add_subparsers(title="actions", dest="action", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="the catalog's scenarios")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(run=_run_list, command_parser=listing)
    run = sub.add_parser("run", help="run scenarios and compare their outcomes",
                         description="Exit status 0 when every scenario shows its expected "
                                     "outcome, 1 when one does not.")
    run.add_argument("names", nargs="*", metavar="NAME",
                     help="catalog scenario names, or paths of scenario files")
    run.add_argument("--all", action="store_true", help="run the whole catalog")
    run.add_argument("--json", action="store_true", help="print JSON results")
    run.add_argument("--keep", type=Path, metavar="DIR",
                     help="keep each scenario's site file and folders in DIR/<name>")
    run.add_argument("-v", "--verbose", action="store_true",
                     help="show each scenario's output and the daemons' log, not only failures'")
    run.set_defaults(run=_run_run, command_parser=run)
