"""What both emulated daemons share: a pynetdicom server in a thread, trust, start/stop.

A daemon is used as ``with FileDaemon(site) as fd:`` in tests and by ``dbdsim
serve``; leaving the block stops the server, aborts live associations and waits
for their threads, so no test leaks a thread or a port.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from io import BytesIO
from typing import Self, cast

from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.pdu_primitives import A_ASSOCIATE

from client.scp import RunningServer, serve
from client.site import Timeouts, TrustedAE
from client.tcp import NO_DELAY
from client.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

from . import bulk_send
from .faults.association import AssociationInjector
from .trust import TrustPolicy, log_verdict

_STOP_GRACE = 10.0  # seconds to wait for association threads after an abort


class DaemonError(RuntimeError):
    """A daemon that cannot start (port taken, address not local, bad configuration)."""


class Daemon:
    """Base of the DB Daemon and the File Daemon: one AE, one listening socket."""

    name = "daemon"
    ae_class: type[AE] = AE

    def __init__(self, ae_title: str, bind: str, port: int, trusted: Sequence[TrustedAE],
                 permit_trusted_only: bool, max_associations: int, timeouts: Timeouts) -> None:
        self.ae_title = ae_title
        self.bind = bind
        self.requested_port = port
        self.policy = TrustPolicy(ae_title, trusted, permit_trusted_only)
        self.log = logging.getLogger(f"dbdsim.{self.name.lower().replace(' ', '_')}")
        self.ae = self.ae_class(ae_title=ae_title)
        self.ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
        self.ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
        self.ae.maximum_associations = max_associations
        self.ae.acse_timeout = timeouts.acse
        self.ae.dimse_timeout = timeouts.dimse
        self.ae.network_timeout = timeouts.network
        self._server: RunningServer | None = None
        self._lock = threading.Lock()
        # Faults (see emulators.faults): injected from outside, never by editing the daemon.
        self.association_faults = AssociationInjector(self.log)
        self.stopping = threading.Event()  # set at stop: ends every fault's wait

    # -- what subclasses provide ------------------------------------------------------
    def handlers(self) -> list[EventHandlerType]:
        """pynetdicom event handlers besides the trust check."""
        return []

    def on_start(self) -> None:
        """Acquire what the subclass needs while serving, before the server listens."""

    def on_stop(self) -> None:
        """Release what the subclass holds, after the server has stopped (or failed)."""

    def on_accepted(self, event: Event) -> None:
        """A request the trust rules let in, before its contexts are negotiated."""

    # -- lifecycle ----------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The port actually listened on (a free one when 0 was asked for)."""
        if self._server is None:
            return self.requested_port
        return self._server.port

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> Self:
        with self._lock:
            if self._server is not None:
                return self
            handlers: list[EventHandlerType] = [(evt.EVT_REQUESTED, self._on_requested),
                                                *NO_DELAY, *self.handlers()]
            self.stopping.clear()
            self.on_start()
            try:
                server = serve(self.ae, (self.bind, self.requested_port), handlers)
            except OSError as exc:
                self.on_stop()
                raise DaemonError(f"{self.name} {self.ae_title} cannot listen on "
                                  f"{self.bind}:{self.requested_port}: {exc.strerror or exc}") \
                    from exc
            self._server = server
        self.log.info("%s %s listening on %s:%d", self.name, self.ae_title, self.bind, self.port)
        return self

    def stop(self) -> None:
        """Stop listening, abort live associations and wait for their threads."""
        with self._lock:
            server, self._server = self._server, None
            if server is None:
                return
        self.stopping.set()
        threads = server.stop()
        deadline = time.monotonic() + _STOP_GRACE
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.association_faults.join(max(0.0, deadline - time.monotonic()))
        self.on_stop()
        self.log.info("%s %s stopped", self.name, self.ae_title)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def ready_line(self) -> str:
        return f"{self.name} {self.ae_title} listening on {self.bind}:{self.port}"

    # -- trust --------------------------------------------------------------------------
    def _on_requested(self, event: Event) -> None:
        """Judge each A-ASSOCIATE-RQ before pynetdicom negotiates it (PS3.8 7.1.1.7)."""
        assoc = event.assoc
        rejection = self.association_faults.on_requested(event, self.stopping)
        if assoc.is_aborted:  # a fault aborted it at its request
            return
        if rejection is None:
            rq = cast(A_ASSOCIATE, assoc.requestor.primitive)
            calling = str(rq.calling_ae_title)
            verdict = self.policy.judge(calling, str(rq.called_ae_title),
                                        str(assoc.requestor.address),
                                        str(rq.implementation_class_uid or ""))
            log_verdict(self.log, f"{self.name} {self.ae_title}", calling, verdict)
            rejection = verdict.rejection
        if rejection is not None:
            assoc.acse.send_reject(*rejection)
            assoc.kill()
            return
        bulk_send.speed_up(assoc)
        self.on_accepted(event)


def store_request(event: Event) -> tuple[C_STORE, bytes]:
    """The C-STORE request of ``event`` and its dataset, still encoded as the peer sent it."""
    request = cast(C_STORE, event.request)
    return request, cast(BytesIO, request.DataSet).getvalue()


def calling_ae(event: Event) -> str:
    return str(event.assoc.requestor.ae_title).strip()


