"""``rtmove find``: what the archive holds for a patient, before choosing what to move."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from rich.console import Console

from client.archive_view import Headers, PatientArchive
from client.collect import retrying
from client.receiver import Receiver
from client.report import plans_table
from client.resolve import PlanInfo, Resolver
from client.session import Session

from .common import SubParsers, add_connection_options, patient_id, run, settings


def register(commands: SubParsers) -> None:
    p = commands.add_parser(
        "find", help="list a patient's plans (label, date, approval, doses)",
        description="C-FIND the patient's studies and series, read each plan and dose "
                    "(C-MOVE to this client's own Storage SCP) and list the plans.")
    p.add_argument("--patient", required=True, type=patient_id, metavar="ID",
                   help="the Patient ID, exactly as the archive spells it")
    add_connection_options(p)
    p.set_defaults(handler=run(_find))


def _plan_json(p: PlanInfo, doses: int) -> dict[str, object]:
    return {"sop_instance_uid": p.instance.uid, "study_uid": p.instance.series.study_uid,
            "series_uid": p.instance.series.uid, "label": p.label, "name": p.name,
            "date": p.date, "approval": p.approval, "doses": doses, "readable": p.readable,
            "structure_sets": list(p.structure_set_uids)}


def _find(args: argparse.Namespace) -> int:
    s = settings(args)
    with tempfile.TemporaryDirectory(prefix="rtmove-") as tmp, \
            Receiver(s.aet, s.recv_port, Path(tmp), s.receive_bind) as receiver, \
            Session(s, receiver.on_store) as session:
        archive = PatientArchive(session, args.patient)
        resolver = Resolver(archive, Headers(session, receiver))

        def survey() -> tuple[list[PlanInfo], dict[str, int]]:
            plans = resolver.plans()
            return plans, {p.instance.uid: len(resolver.doses_of(p.instance.uid))
                           for p in plans}

        plans, doses = retrying(s, survey, "reading the patient's plans")
        series = archive.series().values()
    if args.json:
        print(json.dumps({
            "ok": True, "patient_id": args.patient, "patient_name": archive.patient_name,
            "studies": [{"uid": st.uid, "date": st.date, "description": st.description}
                        for st in archive.studies()],
            "series": [{"uid": x.uid, "study_uid": x.study_uid, "modality": x.modality,
                        "description": x.description} for x in series],
            "plans": [_plan_json(p, doses[p.instance.uid]) for p in plans]},
            ensure_ascii=False))
        return 0
    console = Console()
    console.print(plans_table(args.patient, archive.patient_name, plans, doses))
    console.print(f"{len(archive.studies())} studies, {len(list(series))} series.",
                  highlight=False)
    return 0
