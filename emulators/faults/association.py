"""Association-level faults: reject, answer late, abort after N PDUs, cap concurrency.

Applied from the daemons' A-ASSOCIATE-RQ handler, before their trust rules, so a
scenario can make a trusted client meet the answers a busy or broken daemon gives.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from pynetdicom import evt
from pynetdicom.events import Event

from .injector import Injector
from .model import AssociationFaults

LOCAL_LIMIT_EXCEEDED = (2, 3, 2)  # rejected-transient, presentation, local-limit-exceeded


class AssociationInjector(Injector[AssociationFaults]):
    """One daemon's association faults, and the aborts they have started."""

    def __init__(self, log: logging.Logger) -> None:
        super().__init__(log, AssociationFaults())
        self._threads: list[threading.Thread] = []

    def on_requested(self, event: Event, stopping: threading.Event,
                     ) -> tuple[int, int, int] | None:
        """The rejection to send for this request, or None; may wait (accept_delay) or arm
        an abort. Runs on the association's own thread."""
        faults, seen = self.count()
        if not faults.active or (faults.times and seen > faults.times):
            return None
        assoc = event.assoc
        if faults.accept_delay:
            self.log.warning("fault: answering association request %d after %.1f s", seen,
                             faults.accept_delay)
            stopping.wait(faults.accept_delay)
        if faults.max_concurrent is not None:
            live = sum(1 for a in assoc.ae.active_associations if a.is_acceptor)
            if live > faults.max_concurrent:
                self.log.warning("fault: %d live associations, more than %d: rejecting", live,
                                 faults.max_concurrent)
                return LOCAL_LIMIT_EXCEEDED
        if faults.reject is not None:
            self.log.warning("fault: rejecting association request %d with %s", seen,
                             faults.reject)
            return faults.reject
        if faults.abort_after_pdus is not None:
            self._arm_abort(assoc, faults.abort_after_pdus)
        return None

    def _arm_abort(self, assoc: Any, after: int) -> None:
        """A-ABORT once ``after`` PDUs came in, the A-ASSOCIATE-RQ counting as the first."""
        if after <= 1:
            self.log.warning("fault: aborting the association at its request")
            assoc.abort()
            return
        received = 1

        def on_pdu(_event: Event) -> None:
            nonlocal received
            received += 1
            if received == after:
                # This runs on the association's DUL thread, which abort() would wait for.
                self.log.warning("fault: aborting the association after %d PDUs", after)
                thread = threading.Thread(target=assoc.abort, name="dbdsim-fault-abort",
                                          daemon=True)
                with self._lock:
                    self._threads.append(thread)
                thread.start()

        assoc.bind(evt.EVT_PDU_RECV, on_pdu)

    def join(self, timeout: float = 10.0) -> None:
        """Wait for the abort threads this injector started (at daemon stop)."""
        with self._lock:
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(timeout)
