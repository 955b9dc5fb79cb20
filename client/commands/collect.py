"""``rtmove collect`` (resolve, move, verify) and ``rtmove move --manifest`` (move, verify)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from rich.console import Console

from client.collect import RunResult, collect, move
from client.manifest import Manifest
from client.report import RichProgress, summary
from client.resolve import PlanChoice
from client.settings import SELF
from client.transfer import ProgressSink

from .common import SubParsers, add_connection_options, patient_id, run, settings


def register(commands: SubParsers) -> None:
    p = commands.add_parser(
        "collect", help="resolve a plan's collection, move it and verify it arrived",
        description="Find the plan (C-FIND), read it and what it references (C-MOVE of the "
                    "RT objects to this client), then move the plan, its structure set, the "
                    "image series and its doses to the destination and check they arrived.")
    p.add_argument("--patient", required=True, type=patient_id, metavar="ID",
                   help="the Patient ID, exactly as the archive spells it")
    p.add_argument("--plan", type=_plan_choice, default="approved",
                   metavar="UID|LABEL|all|approved",
                   help="an RT Plan's SOP Instance UID or label, 'all' plans or the 'approved' "
                        "ones (default: %(default)s)")
    _add_move_options(p)
    p.set_defaults(handler=run(_collect))

    p = commands.add_parser(
        "move", help="move the objects a manifest lists and verify they arrived",
        description="Move what a manifest lists (written by rtmove, or by hand from UIDs "
                    "exported elsewhere: patient_id and, per object, study_uid, series_uid "
                    "and sop_uids) and write it back with each object's outcome.")
    p.add_argument("--manifest", type=Path, required=True, metavar="FILE")
    _add_move_options(p)
    p.set_defaults(handler=run(_move))


def _plan_choice(text: str) -> PlanChoice:
    try:
        return PlanChoice.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_move_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dest", metavar="AE|self",
                   help="move destination AE title, or 'self' to receive here (with --out); "
                        "default: the site's File Daemon")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="with --dest self: where files are written (<DIR>/<patient id>/...)")
    p.add_argument("--verify-dir", type=Path, metavar="DIR",
                   help="a folder where the destination's files can be read (e.g. the File "
                        "Daemon's folder for the patient): check each object arrived whole")
    p.add_argument("--write-manifest", type=Path, metavar="FILE",
                   help="where the manifest with outcomes goes (default: DIR/manifest.json "
                        "with --out, else ./manifest.json)")
    p.add_argument("--retries", type=int, help="retries of a transient failure (default 4)")
    p.add_argument("--backoff", type=float,
                   help="seconds before the first retry, doubling up to 30 (default 1)")
    add_connection_options(p)


def _progress(args: argparse.Namespace) -> contextlib.AbstractContextManager[ProgressSink]:
    if args.json or not sys.stderr.isatty():
        return contextlib.nullcontext(ProgressSink())
    return RichProgress(Console(stderr=True))


def _collect(args: argparse.Namespace) -> int:
    s = settings(args, dest=args.dest, out=args.out, retries=args.retries, backoff=args.backoff)
    with _progress(args) as progress:
        result = collect(s, args.patient, args.plan,
                         verify_dir=args.verify_dir, progress=progress)
    return _report(args, result, s.out)


def _move(args: argparse.Namespace) -> int:
    manifest = Manifest.load(args.manifest)
    s = settings(args, dest=args.dest, out=args.out, retries=args.retries, backoff=args.backoff)
    with _progress(args) as progress:
        result = move(s, manifest, verify_dir=args.verify_dir, progress=progress)
    return _report(args, result, s.out)


def _report(args: argparse.Namespace, result: RunResult, out: Path | None) -> int:
    path = args.write_manifest or ((out or Path(".")) / "manifest.json")
    manifest = result.manifest
    manifest.save(path)
    kind = result.kind
    if args.json:
        print(json.dumps({
            "ok": kind == 0, "exit_code": int(kind), "kind": kind.name.lower(),
            "error": str(result.error) if result.error else None,
            "warnings": [*manifest.warnings(), *result.warnings], "problems": result.problems,
            "manifest_path": str(path), "manifest": manifest.to_json()}, ensure_ascii=False))
        return int(kind)
    console = Console() if sys.stdout.isatty() else Console(width=120)
    console.print(summary(manifest))
    for warning in [*manifest.warnings(), *result.warnings]:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    for item in manifest.items():
        if item.note:
            console.print(f"[red]{item.outcome.value}:[/] {item.role.value} {item.label} "
                          f"{item.series_uid}: {item.note}", highlight=False)
    for problem in result.problems:
        console.print(f"[red]problem:[/] {problem}", highlight=False)
    if result.error is not None:
        print(f"rtmove: {result.error}", file=sys.stderr)
    elif kind:
        missing = sum(1 for i in manifest.items() if i.outcome.value in ("failed", "incomplete"))
        print(f"rtmove: {missing} object(s) did not arrive whole at {manifest.destination} "
              f"after the retries (see {path}).", file=sys.stderr)
    where = f" in {out}" if manifest.destination == SELF and out else ""
    console.print(f"manifest: {path}{where}", highlight=False, soft_wrap=True)
    return int(kind)
