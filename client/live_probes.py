"""``check-site --live`` beyond C-ECHO: a Study Root C-FIND, and a trial move to this client.

An echo proves the AE titles and the trust list; only a move proves the DB Daemon's
entry for this client names the address and port it really listens on.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from pydicom.dataset import Dataset

from .archive_view import PatientArchive
from .check_site import Check
from .errors import DicomError, Kind
from .receiver import Receiver
from .session import Session
from .settings import Settings
from .statuses import move_failure

NOBODY = "RTMOVE-CHECK-NOBODY"  # a patient ID no archive holds: the query costs nothing


def find_probe(settings: Settings, patient_id: str | None) -> Callable[[], Check]:
    def find_study_root() -> Check:
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.PatientID = patient_id or NOBODY
        ds.StudyInstanceUID = ""
        with Session(settings) as session:
            matches = session.find(ds)
        if patient_id and not matches:
            return Check("find-study-root", False,
                         f"{settings.peer} answered the C-FIND but has no patient "
                         f"{patient_id!r}", "give --patient an ID the archive holds",
                         kind=Kind.NOT_FOUND)
        return Check("find-study-root", True,
                     f"{settings.peer} answered a Study Root C-FIND at STUDY level "
                     f"({len(matches)} match(es) for {ds.PatientID})")
    return find_study_root


def trial_move_probe(settings: Settings, patient_id: str | None) -> Callable[[], Check]:
    def trial_move() -> Check:
        name = "trial-move"
        if not patient_id:
            return Check(name, False, "give --patient ID to move one small object of that "
                         "patient to this client", skipped=True)
        with tempfile.TemporaryDirectory(prefix="rtmove-check-") as tmp, \
                Receiver(settings.aet, settings.recv_port, Path(tmp),
                         settings.receive_bind) as receiver, \
                Session(settings) as session:
            archive = PatientArchive(session, patient_id)
            instance = next((i for m in ("RTPLAN", "RTSTRUCT", "RTDOSE")
                             for i in archive.of_modality(m)), None)
            if instance is None:
                return Check(name, False, f"patient {patient_id!r} has no RT object to try",
                             "give --patient a patient with a plan", skipped=True)
            ds = Dataset()
            ds.QueryRetrieveLevel = "IMAGE"
            ds.StudyInstanceUID = instance.series.study_uid
            ds.SeriesInstanceUID = instance.series.uid
            ds.SOPInstanceUID = instance.uid
            result = session.move(ds, settings.aet)
            error = move_failure(settings, settings.aet, result)
            if error is not None:
                raise error
            if receiver.path(instance.uid) is None:
                raise DicomError(
                    f"{settings.peer} reported the move of {instance.series.modality} "
                    f"{instance.uid} to {settings.aet} done (status 0x{result.status:04X}, "
                    f"{result.completed} completed) but nothing arrived on port "
                    f"{receiver.port}: its entry for {settings.aet} may name another host or "
                    "port than where this client listens.", Kind.DESTINATION)
        return Check(name, True, f"{settings.peer} moved {instance.series.modality} "
                     f"{instance.uid} to {settings.aet} on port {settings.recv_port}")
    return trial_move
