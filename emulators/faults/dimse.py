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

from .model import FindFaults, MoveFaults


def _counted(lock: threading.Lock, counter: list[int], times: int) -> bool:
    """Count one more matching request; whether the fault still applies to it."""
    with lock:
        counter[0] += 1
        return not times or counter[0] <= times


def hold(stopping: threading.Event, until_over: Callable[[], bool], seconds: float | None,
         ) -> None:
    """Wait ``seconds`` (None: for ever) or until ``until_over()`` or the daemon stops."""
    waited = 0.0
    while not stopping.is_set() and not until_over():
        if seconds is not None and waited >= seconds:
            return
        step = 0.05 if seconds is None else min(0.05, seconds - waited)
        stopping.wait(step)
        waited += step


class FindInjector:
    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self._faults = FindFaults()
        self._lock = threading.Lock()
        self._seen = [0]

    @property
    def faults(self) -> FindFaults:
        return self._faults

    @faults.setter
    def faults(self, faults: FindFaults) -> None:
        with self._lock:
            self._faults, self._seen = faults, [0]

    def before(self, level: str, stopping: threading.Event, ended: Callable[[], bool],
               ) -> tuple[int, str] | None:
        """(status, comment) to answer instead of matches, or None; may wait first."""
        faults = self._faults
        if not faults.active or (faults.level and faults.level != level.strip().upper()):
            return None
        if not _counted(self._lock, self._seen, faults.times):
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
            return faults.status, faults.comment or "fault injected by dbdsim"
        return None


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


class MoveInjector:
    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self._faults = MoveFaults()
        self._lock = threading.Lock()
        self._seen = [0]

    @property
    def faults(self) -> MoveFaults:
        return self._faults

    @faults.setter
    def faults(self, faults: MoveFaults) -> None:
        with self._lock:
            self._faults, self._seen = faults, [0]

    def plan(self, modalities: Collection[str], operations: int) -> MoveFaultPlan | None:
        """The faults of a move touching ``modalities`` with ``operations`` sub-operations."""
        faults = self._faults
        if not faults.active:
            return None
        if faults.modalities and not set(faults.modalities) & set(modalities):
            return None
        if not _counted(self._lock, self._seen, faults.times):
            return None
        failing = {k - 1 for k in faults.fail_suboperations if k <= operations}
        if faults.fail_fraction:
            with self._lock:
                rng = random.Random(f"{faults.seed}:{self._seen[0]}")
            count = round(operations * faults.fail_fraction)
            failing.update(rng.sample(range(operations), min(count, operations)))
        plan = MoveFaultPlan(faults.status, faults.comment, faults.delay, faults.drop_final,
                             frozenset(failing), faults.abort_after, faults.ignore_cancel)
        self.log.warning("fault: move over %s with %d sub-operations: %s",
                         sorted(modalities), operations, plan)
        return plan
