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

from .injector import Injector, hold
from .model import FindFaults, MoveFaults

__all__ = ["FindInjector", "MoveFaultPlan", "MoveInjector"]


class FindInjector(Injector[FindFaults]):
    def __init__(self, log: logging.Logger) -> None:
        super().__init__(log, FindFaults())

    def before(self, level: str, stopping: threading.Event, ended: Callable[[], bool],
               ) -> tuple[int, str] | None:
        """(status, comment) to answer instead of matches, or None; may wait first."""
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
                             frozenset(failing), faults.abort_after, faults.ignore_cancel)
        self.log.warning("fault: move over %s with %d sub-operations: %s",
                         sorted(modalities), operations, plan)
        return plan
