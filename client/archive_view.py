"""What the archive holds for one patient, learned by Study Root C-FIND and cached.

Only keys every Q/R SCP must support are relied on (the unique keys and Modality);
anything else (labels, approval, references) is read from the objects themselves,
which :class:`Headers` fetches by C-MOVE to this client's own Storage SCP.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from .errors import DicomError, Kind
from .matches import raw_uid
from .receiver import Receiver
from .session import Session
from .statuses import move_failure

log = logging.getLogger(__name__)

RT_MODALITIES = ("RTPLAN", "RTSTRUCT", "RTDOSE")


@dataclass(frozen=True)
class Study:
    uid: str
    date: str
    description: str


@dataclass(frozen=True)
class Series:
    study_uid: str
    uid: str
    modality: str
    number: str
    description: str


@dataclass(frozen=True)
class Instance:
    series: Series
    uid: str
    sop_class_uid: str
    number: str


def _identifier(level: str, **keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


# A CT series' C-FIND at IMAGE level is 120 matches: pydicom's decoding of their UIDs
# and numbers took 9 ms of rtmove's CPU, while the images' move needed the cores.
_SOP_INSTANCE, _SOP_CLASS, _INSTANCE_NUMBER = 0x00080018, 0x00080016, 0x00200013


def _uid(ds: Dataset, tag: int, keyword: str) -> str:
    """:func:`_text` of a UID, from its raw bytes when plain."""
    uid = raw_uid(ds, tag)
    return uid if uid is not None else _text(ds, keyword)


def _number(ds: Dataset) -> str:
    """:func:`_text` of InstanceNumber, from its raw bytes when plainly digits."""
    elem = ds.get_item(_INSTANCE_NUMBER)
    raw = getattr(elem, "value", None) if elem is not None else None
    if isinstance(raw, bytes) and getattr(elem, "VR", None) in (None, "IS"):
        digits = raw.strip(b" ")
        if digits.isdigit() and digits.isascii() and (digits[:1] != b"0" or digits == b"0"):
            return digits.decode("ascii")
    return _text(ds, "InstanceNumber")


class PatientArchive:
    """The studies, series and instances of one patient, each C-FIND done at most once."""

    def __init__(self, session: Session, patient_id: str) -> None:
        self.session, self.patient_id = session, patient_id
        self.patient_name = ""
        self._studies: list[Study] | None = None
        self._series: dict[str, Series] | None = None
        self._instances: dict[str, list[Instance]] = {}

    def studies(self) -> list[Study]:
        if self._studies is None:
            found = self.session.find(_identifier(
                "STUDY", PatientID=self.patient_id, PatientName="", StudyInstanceUID="",
                StudyDate="", StudyDescription=""))
            # A server may match wildcards or ignore case in PatientID: keep exact matches.
            found = [ds for ds in found if _text(ds, "PatientID") in ("", self.patient_id)]
            if not found:
                s = self.session.settings
                raise DicomError(
                    f"{s.peer} has no patient with ID {self.patient_id!r} (a C-FIND at STUDY "
                    "level matched nothing). Check the ID as the archive spells it.",
                    Kind.NOT_FOUND)
            self.patient_name = next((_text(ds, "PatientName") for ds in found
                                      if _text(ds, "PatientName")), "")
            studies = {_text(ds, "StudyInstanceUID"): ds for ds in found}
            self._studies = [Study(uid, _text(ds, "StudyDate"), _text(ds, "StudyDescription"))
                             for uid, ds in studies.items() if uid]
        return self._studies

    def series(self) -> dict[str, Series]:
        """Every series of the patient, by Series Instance UID."""
        if self._series is None:
            out: dict[str, Series] = {}
            for study in self.studies():
                for ds in self.session.find(_identifier(
                        "SERIES", StudyInstanceUID=study.uid, SeriesInstanceUID="",
                        Modality="", SeriesNumber="", SeriesDescription="")):
                    uid = _text(ds, "SeriesInstanceUID")
                    if uid:
                        out[uid] = Series(study.uid, uid, _text(ds, "Modality").upper(),
                                          _text(ds, "SeriesNumber"),
                                          _text(ds, "SeriesDescription"))
            self._series = out
        return self._series

    def instances(self, series: Series) -> list[Instance]:
        if series.uid not in self._instances:
            found = self.session.find(_identifier(
                "IMAGE", StudyInstanceUID=series.study_uid, SeriesInstanceUID=series.uid,
                SOPInstanceUID="", SOPClassUID="", InstanceNumber=""))
            unique = {_uid(ds, _SOP_INSTANCE, "SOPInstanceUID"): ds for ds in found}
            self._instances[series.uid] = [
                Instance(series, uid, _uid(ds, _SOP_CLASS, "SOPClassUID"),
                         _number(ds)) for uid, ds in unique.items() if uid]
        return self._instances[series.uid]

    def of_modality(self, modality: str) -> list[Instance]:
        return [i for s in self.series().values() if s.modality == modality
                for i in self.instances(s)]

    def find_instance(self, sop_uid: str, modality: str) -> Instance | None:
        return next((i for i in self.of_modality(modality) if i.uid == sop_uid), None)


class Headers:
    """RT objects fetched to this client (C-MOVE to our own AE) and read, once each.

    ``elsewhere`` may name a file that already holds an object (in the destination's
    folder, see :mod:`client.early_moves`): it is read instead, unless it is unreadable.
    """

    def __init__(self, session: Session, receiver: Receiver,
                 elsewhere: Callable[[Instance], Path | None] | None = None) -> None:
        self.session, self.receiver, self.elsewhere = session, receiver, elsewhere
        self._read: dict[str, Dataset | None] = {}
        self.problems: dict[str, str] = {}  # SOP Instance UID -> why it could not be read

    def get(self, instance: Instance) -> Dataset | None:
        """The object's header; None (and a note in :attr:`problems`) if it cannot be had."""
        if instance.uid not in self._read:
            self._read[instance.uid] = self._fetch(instance)
        return self._read[instance.uid]

    def _fetch(self, instance: Instance) -> Dataset | None:
        there = self.elsewhere(instance) if self.elsewhere is not None else None
        if there is not None:
            try:
                return pydicom.dcmread(there, stop_before_pixels=True)
            except (InvalidDicomError, OSError, ValueError) as exc:
                log.info("cannot read %s (%s): moving it to this client", there, exc)
        path = self.receiver.path(instance.uid)
        if path is None:
            s = self.session.settings
            identifier = _identifier("IMAGE", StudyInstanceUID=instance.series.study_uid,
                                     SeriesInstanceUID=instance.series.uid,
                                     SOPInstanceUID=instance.uid)
            result = self.session.fetch(identifier)
            error = move_failure(s, s.aet, result)
            # Without our own AE as a destination nothing can be read: stop. A refusal of
            # this one object (0xC001, a failed sub-operation) is noted and resolution goes on.
            if error is not None and (error.kind is Kind.DESTINATION or error.transient):
                raise error
            path = self.receiver.path(instance.uid)
            if path is None:
                why = (f"the server reported status 0x{result.status:04X} with "
                       f"{result.failed} failed sub-operation(s)"
                       + (f' ("{result.comment}")' if result.comment else ""))
                self.problems[instance.uid] = why
                log.warning("%s %s did not arrive: %s", instance.series.modality,
                            instance.uid, why)
                return None
        try:
            return pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError) as exc:
            self.problems[instance.uid] = f"unreadable ({exc})"
            return None
