"""``dbdsim``: the emulators' command line.

Each subcommand is one ``_add_<name>`` function, listed in ``COMMANDS``, that
registers its parser with ``run`` and ``command_parser`` defaults, so later commands
(``serve``, ``patients``, ``scenario``) plug in without touching the others.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from rich.console import Console, JustifyMethod
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from .cli_common import (
    MAX_PATIENTS,
    CommandError,
    Runner,
    SubParsers,
    add_archive_options,
    int_at_least,
    interactive,
    synthetic_config,
)
from .demo import add_demo
from .files import safe_name, write_patient
from .preview import render_preview
from .scenarios.command import add_scenario
from .serve import add_patients, add_serve
from .synthetic import Mess, PatientRecipe, make_recipe, object_refs

PROG = "dbdsim"


# --- generate --------------------------------------------------------------------------


def _summary(recipe: PatientRecipe, out: Path) -> dict[str, Any]:
    """What one patient's folder holds, from the recipe that produced it."""
    approved = sum(plan.approved for plan in recipe.plans)
    people = recipe.people
    return {
        "index": recipe.index,
        "patient_id": recipe.patient_id,
        "name": people.patient_name.pn,
        "locale": people.locale,
        "charset": people.charset,
        "ct_studies": len({ct.study.uid for ct in recipe.cts}),
        "ct_images": sum(len(ct.slice_uids) for ct in recipe.cts),
        "structure_sets": len(recipe.structure_sets),
        "plans": len(recipe.plans),
        "plans_approved": approved,
        "plans_unapproved": len(recipe.plans) - approved,
        "doses": len(recipe.doses),
        "objects": sum(1 for _ in object_refs(recipe)),
        "messes": sorted(str(mess) for mess in recipe.mess),
        "folder": str(out / safe_name(recipe.patient_id)),
    }


_TOTALLED = ("ct_studies", "ct_images", "structure_sets", "plans", "plans_approved",
             "plans_unapproved", "doses", "objects")


def _totals(rows: list[dict[str, Any]]) -> dict[str, int]:
    totals = {"patients": len(rows)}
    totals.update({key: sum(row[key] for row in rows) for key in _TOTALLED})
    return totals


@contextmanager
def _progress(total: int, show: bool) -> Iterator[Callable[[], None]]:
    """A callable advancing a rich progress bar on stderr, or doing nothing."""
    if not show:
        yield lambda: None
        return
    columns = (TextColumn("[bold]writing"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("writing", total=total)
        yield lambda: progress.advance(task)


def _write_archive(recipes: list[PatientRecipe], out: Path) -> None:
    total = sum(sum(1 for _ in object_refs(recipe)) for recipe in recipes)
    with _progress(total, interactive()) as advance:
        for recipe in recipes:
            try:
                write_patient(recipe, out, lambda _path: advance())
            except OSError as exc:
                where = exc.filename or out / safe_name(recipe.patient_id)
                raise CommandError(f"cannot write {where}: {exc.strerror or exc}") from exc


def _print_table(rows: list[dict[str, Any]], totals: dict[str, int], out: Path) -> None:
    table = Table(title=f"Synthetic archive in {escape(str(out))}", title_justify="left")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("Patient ID", "left"), ("Name", "left"), ("Locale\ncharset", "left"),
        ("CT\nstudies", "right"), ("CT\nimages", "right"), ("Structure\nsets", "right"),
        ("Plans\n(appr/unappr)", "right"), ("Doses", "right"), ("Files", "right"),
        ("Messes", "left"))
    for header, justify in columns:
        table.add_column(header, justify=justify, no_wrap=header == "Patient ID")
    table.columns[-1].min_width = max(len(mess) for mess in Mess)

    def plans(row: dict[str, Any]) -> str:
        return f"{row['plans']} ({row['plans_approved']}/{row['plans_unapproved']})"

    for row in rows:
        # IDs and names are data, not rich markup ("[b]" in an imported ID stays literal).
        table.add_row(escape(row["patient_id"]), escape(row["name"]),
                      f"{row['locale']}\n{row['charset']}",
                      str(row["ct_studies"]), str(row["ct_images"]),
                      str(row["structure_sets"]), plans(row), str(row["doses"]),
                      str(row["objects"]), "\n".join(row["messes"]) or "-",
                      end_section=row is rows[-1])
    table.add_row(f"{totals['patients']} patients", "", "", str(totals["ct_studies"]),
                  str(totals["ct_images"]), str(totals["structure_sets"]), plans(totals),
                  str(totals["doses"]), str(totals["objects"]), "", style="bold")
    # Rich wraps to 80 columns when stdout is not a terminal; a log deserves full rows.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    console.print(table)


def _run_generate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.patients > MAX_PATIENTS:
        parser.error(f"--patients: at most {MAX_PATIENTS} patients per seed")
    config = synthetic_config(args, parser)
    out: Path = args.out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"cannot create output folder {out}: {exc.strerror or exc}") from exc
    recipes = [make_recipe(config, index) for index in range(args.patients)]
    _write_archive(recipes, out)
    root = out.resolve()
    rows = [_summary(recipe, root) for recipe in recipes]
    totals = _totals(rows)
    if args.json:
        document = {"patients": rows, "totals": totals, "out": str(root)}
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    else:
        _print_table(rows, totals, out)
    return 0


def _add_generate(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "generate", help="write a synthetic archive as DICOM files",
        description="Write every object of patients 0..N-1 as "
                    "<out>/<patient id>/<modality>.<sop uid>.dcm, then summarise them.")
    parser.add_argument("--patients", type=int_at_least(1), required=True, metavar="N",
                        help="number of patients")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="output folder (created if missing)")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON summary instead of the table")
    add_archive_options(parser)
    parser.set_defaults(run=_run_generate, command_parser=parser)


# --- preview ---------------------------------------------------------------------------


def _run_preview(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    config = synthetic_config(args, parser)
    if args.patient >= MAX_PATIENTS:
        parser.error(f"--patient: must be below {MAX_PATIENTS}")
    if args.slice is not None and args.slice >= config.slices:
        parser.error(f"--slice: must be below --slices ({config.slices})")
    try:
        path = render_preview(make_recipe(config, args.patient), args.out, args.slice)
    except OSError as exc:
        raise CommandError(f"cannot write {args.out}: {exc.strerror or exc}") from exc
    print(path)
    return 0


def _add_preview(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "preview", help="draw one patient's CT slice, contours and dose as a PNG",
        description="Render the slice through the PTV (or --slice) of a synthetic patient's "
                    "first CT, with its structure set's contours and its first plan's dose.")
    parser.add_argument("--patient", type=int_at_least(0), required=True, metavar="K",
                        help="patient index within the archive")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE.png",
                        help="PNG to write")
    parser.add_argument("--slice", type=int_at_least(0), metavar="N",
                        help="0-based CT slice (default: through the PTV centre)")
    add_archive_options(parser)
    parser.set_defaults(run=_run_preview, command_parser=parser)


# --- entry point -----------------------------------------------------------------------

COMMANDS: tuple[Callable[[SubParsers[argparse.ArgumentParser]], None], ...] = (
    _add_generate,
    _add_preview,
    add_serve,
    add_patients,
    add_demo,
    add_scenario,
)


def _version() -> str:
    """The installed distribution's version: the one source of truth is pyproject.toml."""
    try:
        return version("dbdsim")
    except PackageNotFoundError:  # run from a bare source tree
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Emulators of a radiotherapy archive's DICOM daemons.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(title="commands", dest="command", required=True,
                                     metavar="COMMAND")
    for add in COMMANDS:
        add(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``dbdsim``; returns the exit status (argparse exits 2 itself on bad arguments)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Runner = args.run
    try:
        # The subcommand's own parser, so that usage errors show that command's usage.
        return run(args, args.command_parser)
    except CommandError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
