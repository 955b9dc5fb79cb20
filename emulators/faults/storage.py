"""File Daemon faults: a refused SOP class, a full disk, a slow one, a late write.

A File Daemon at a real site runs out of space, stalls on a busy disk, or answers
a C-STORE before its file is on disk; each is reproduced here at the points the
daemon passes for every object: negotiation, the answer, the write.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pydicom.uid
from pydicom.uid import UID
from pynetdicom.presentation import PresentationContext

from client.files import Received, write_atomic

from .injector import Injector, hold
from .model import FaultError, StoreFaults

OUT_OF_RESOURCES = 0xA700


def sop_class_uid(name: str) -> str:
    """A SOP class from its UID or its pydicom keyword (``RTDoseStorage``)."""
    if not name.isidentifier():
        if UID(name).is_valid:
            return name
        raise FaultError(f"{name!r} is not a valid SOP Class UID")
    value = getattr(pydicom.uid, name, None)
    if not isinstance(value, str):
        raise FaultError(f"{name!r} is neither a SOP Class UID nor a pydicom keyword such as "
                         "'RTDoseStorage'")
    return str(value)


class StoreInjector(Injector[StoreFaults]):
    def __init__(self, log: logging.Logger) -> None:
        super().__init__(log, StoreFaults())
        self._late: list[threading.Thread] = []

    def check(self, faults: StoreFaults) -> None:
        for name in faults.refuse_sop_classes:
            sop_class_uid(name)

    def negotiable(self, contexts: Iterable[PresentationContext]) -> list[PresentationContext]:
        """The contexts still offered: a refused class is simply not supported."""
        refused = {sop_class_uid(name) for name in self.faults.refuse_sop_classes}
        return [cx for cx in contexts if str(cx.abstract_syntax) not in refused]

    def before(self, stopping: threading.Event, ended: Callable[[], bool],
               ) -> tuple[int, tuple[int, str] | None]:
        """This object's number (1-based), and the failure to answer instead, if any."""
        faults, seen = self.count()
        if faults.out_of_resources_after is not None and seen > faults.out_of_resources_after:
            self.log.warning("fault: object %d answered 0xA700 (out of resources)", seen)
            return seen, (OUT_OF_RESOURCES, "out of resources (fault injected by dbdsim)")
        if faults.write_delay:
            hold(stopping, ended, faults.write_delay)
        return seen, None

    def write(self, seen: int, path: Path, write: Callable[[], Received]) -> Received | None:
        """Write (or fail to, or later); None: the file lands after the answer."""
        faults = self.faults
        if faults.disk_full_after is not None and seen > faults.disk_full_after:
            self.log.warning("fault: the disk is full when writing %s", path.name)
            write_atomic(path, _fill_disk)
        if faults.finish_after:
            thread = threading.Thread(target=self._write_late,
                                      args=(faults.finish_after, path, write),
                                      name="dbdsim-fault-late-write", daemon=True)
            with self._lock:
                self._late.append(thread)
            thread.start()
            return None
        return write()

    def _write_late(self, delay: float, path: Path, write: Callable[[], Any]) -> None:
        # Not cut short at stop: a late file still lands, as on a real disk.
        threading.Event().wait(delay)
        try:
            write()
        except OSError as exc:
            self.log.error("fault: the late write of %s failed: %s", path, exc)
        else:
            self.log.info("fault: %s written %.1f s after its C-STORE was answered", path.name,
                          delay)

    def join(self, timeout: float = 30.0) -> None:
        """Wait for late writes (at daemon stop): none is lost, none outlives the daemon."""
        with self._lock:
            threads, self._late = self._late, []
        for thread in threads:
            thread.join(timeout)


def _fill_disk(fh: Any) -> None:
    fh.write(b"\0" * 4096)  # part of the file, as a real disk fills up mid-write
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
