"""DIMSE-level faults of the DB Daemon: what its C-FIND and C-MOVE answers get wrong.

The daemon asks its injectors at fixed points (before answering a query, when a
move is planned), so the serving code keeps one path and a scenario changes only
what these return.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from .injector import Injector, hold
from .model import FindFaults, MoveFaults

__all__ = ["FindFaultPlan", "FindInjector", "MoveFaultPlan", "MoveInjector", "garbled",
           "other_keys", "other_uid"]

# Keys whose single value a match must repeat (PS3.4 C.2.2.2.1, single value matching).
_MATCHED_KEYS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


@dataclass(frozen=True)
class FindFaultPlan:
    """What one C-FIND answer does wrong, decided before it is answered."""

    status: int | None = None  # answer this failure status instead of matches
    comment: str = ""
    garble: bool = False
    wrong_match: bool = False
    endless: bool = False


class FindInjector(Injector[FindFaults]):
    def __init__(self, log: logging.Logger) -> None:
        super().__init__(log, FindFaults())

    def before(self, level: str, stopping: threading.Event, ended: Callable[[], bool],
               ) -> FindFaultPlan | None:
        """How this query's answer goes wrong, or None; may wait (or never return) first."""
        faults = self.faults
        if not faults.active or (faults.level and faults.level != level.strip().upper()):
            return None
        faults, seen = self.count()
        if faults.times and seen > faults.times:
            return None
        if faults.delay:
            self.log.warning("fault: C-FIND at %s answered after %.1f s", level, faults.delay)
            hold(stopping, ended, faults.delay)
        if faults.drop:
            self.log.warning("fault: C-FIND at %s never answered", level)
            hold(stopping, ended, None)
            return None
        if faults.status is not None:
            self.log.warning("fault: C-FIND at %s answered 0x%04X", level, faults.status)
            return FindFaultPlan(faults.status, faults.comment or "fault injected by dbdsim")
        plan = FindFaultPlan(garble=faults.garble, wrong_match=faults.wrong_match,
                             endless=faults.endless)
        if plan != FindFaultPlan():
            self.log.warning("fault: C-FIND at %s answered wrongly: %s", level, plan)
            return plan
        return None


def garbled(identifier: bytes, implicit_vr: bool) -> bytes:
    """A match's bytes behind an element no decoder can make sense of.

    Explicit VR gets a VR that does not exist (DCMTK and pydicom refuse it); Implicit VR
    has no VR, so a Patient ID of undefined length that never ends swallows the match:
    pydicom then decodes an empty data set, other decoders fail.
    """
    if implicit_vr:
        return b"\x10\x00\x20\x00\xff\xff\xff\xff" + identifier
    return b"\x10\x00\x20\x00XX\x04\x00ABCD" + identifier


def other_uid(uid: str) -> str:
    """Another valid UID, the same for the same ``uid`` (so a retry sees the same mix-up)."""
    return str(generate_uid(entropy_srcs=["dbdsim-wrong", uid]))


def other_keys(match: Dataset, query: Dataset) -> None:
    """Change each key the query asked a single value of, as a daemon that answers for
    another patient or object would."""
    for keyword in _MATCHED_KEYS:
        asked = str(query.get(keyword, "") or "")
        if not asked or "\\" in asked or "*" in asked or "?" in asked or keyword not in match:
            continue
        match[keyword].value = f"X{asked}"[:64] if keyword == "PatientID" else other_uid(asked)


@dataclass
class MoveFaultPlan:
    """What one move does wrong, decided when the move is planned."""

    status: int | None = None
    comment: str = ""
    delay: float = 0.0
    drop_final: bool = False
    failing: frozenset[int] = frozenset()  # 0-based sub-operations that fail
    abort_after: int | None = None
    ignore_cancel: bool = False
    endless_pending: bool = False
    inflate_counts: int = 0
    wrong_instance: bool = False


class MoveInjector(Injector[MoveFaults]):
    def __init__(self, log: logging.Logger) -> None:
        super().__init__(log, MoveFaults())

    def plan(self, modalities: Collection[str], operations: int) -> MoveFaultPlan | None:
        """The faults of a move touching ``modalities`` with ``operations`` sub-operations."""
        faults = self.faults
        if not faults.active:
            return None
        if faults.modalities and not set(faults.modalities) & set(modalities):
            return None
        faults, seen = self.count()
        if faults.times and seen > faults.times:
            return None
        failing = {k - 1 for k in faults.fail_suboperations if k <= operations}
        if faults.fail_fraction:
            rng = random.Random(f"{faults.seed}:{seen}")
            count = round(operations * faults.fail_fraction)
            failing.update(rng.sample(range(operations), min(count, operations)))
        plan = MoveFaultPlan(faults.status, faults.comment, faults.delay, faults.drop_final,
                             frozenset(failing), faults.abort_after, faults.ignore_cancel,
                             faults.endless_pending, faults.inflate_counts,
                             faults.wrong_instance)
        self.log.warning("fault: move over %s with %d sub-operations: %s",
                         sorted(modalities), operations, plan)
        return plan
