"""What every injector shares: its faults, replaceable while the daemon runs, and a count
of the requests they have been asked about (for ``times``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

F = TypeVar("F")


class Injector(Generic[F]):
    """One kind of fault of one daemon. Setting :attr:`faults` resets the count, so a
    test can break a running daemon afresh (or heal it) between two requests."""

    def __init__(self, log: logging.Logger, faults: F) -> None:
        self.log = log
        self._lock = threading.Lock()
        self._faults = faults
        self._seen = 0

    @property
    def faults(self) -> F:
        return self._faults

    @faults.setter
    def faults(self, faults: F) -> None:
        self.check(faults)
        with self._lock:
            self._faults, self._seen = faults, 0

    def check(self, faults: F) -> None:
        """Refuse faults this injector cannot apply (FaultError), before any is set."""

    def count(self) -> tuple[F, int]:
        """The faults in force and the number (1-based) of this request among those seen."""
        with self._lock:
            self._seen += 1
            return self._faults, self._seen


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
