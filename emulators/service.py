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
from typing import Any, Self, cast

from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.pdu_primitives import A_ASSOCIATE

from client.scp import RunningServer, serve
from client.site import Timeouts, TrustedAE
from client.tcp import NO_DELAY
from client.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

from . import bulk_send
from .faults.association import AssociationInjector
from .log_policy import HANDLERS as LOG_POLICY_HANDLERS
from .log_policy import protect
from .pynetdicom_guards import guard_connection, misdirected, release_slot, unusable_length
from .trust import TrustPolicy, exposure, log_verdict

_STOP_GRACE = 10.0  # seconds to wait for association threads after an abort
REJECT_NO_REASON = (1, 1, 1)  # PS3.8 9.3.4: rejected-permanent, service-user, no reason


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
        self.log = protect(logging.getLogger(f"dbdsim.{self.name.lower().replace(' ', '_')}"))
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
            handlers: list[EventHandlerType] = [(evt.EVT_REQUESTED, self._judge_or_reject),
                                                (evt.EVT_CONN_OPEN, guard_connection),
                                                (evt.EVT_CONN_CLOSE, release_slot),
                                                *self.policy.handlers(), *LOG_POLICY_HANDLERS,
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
        if (exposed := exposure(f"{self.name} {self.ae_title}", self.bind, self.port,
                                self.policy.permit_trusted_only)) is not None:
            self.log.warning("%s", exposed)
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
    def _judge_or_reject(self, event: Event) -> None:
        """:meth:`_on_requested`, failing closed.

        pynetdicom logs an exception raised by an EVT_REQUESTED handler and then
        negotiates the association anyway: an A-ASSOCIATE-RQ the trust check choked on
        was accepted unjudged. One without an Implementation Class UID sub-item (whose
        primitive raises ValueError when asked for it) let any AE title from any host in.
        """
        assoc = event.assoc
        try:
            self._on_requested(event)
            problem = unusable_length(assoc)
        except Exception as exc:  # the peer's request: rejected, never let through
            problem = f"cannot judge the request ({exc!r})"
        if problem is not None and assoc.acceptor.primitive is None and not assoc.is_aborted:
            self.log.warning("%s %s rejects association from %r: %s", self.name,
                             self.ae_title, calling_ae_from(assoc), problem)
            assoc.acse.send_reject(*REJECT_NO_REASON)
            assoc.kill()

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
                                        str(rq.implementation_class_uid or ""),
                                        screened=self.policy.screened(assoc))
            log_verdict(self.log, f"{self.name} {self.ae_title}", calling, verdict)
            rejection = verdict.rejection
        if rejection is not None:
            assoc.acse.send_reject(*rejection)
            assoc.kill()
            return
        bulk_send.speed_up(assoc)
        self._reject_on_failure(assoc)
        self._answermisdirected(assoc)
        self.on_accepted(event)

    def _answermisdirected(self, assoc: Association) -> None:
        """A request that does not fit its presentation context gets a failure status.

        pynetdicom picks the service from the command's Affected SOP Class UID, not
        from the context the request came on, and its services do not check the
        operation: a C-FIND naming the Verification class was answered by a C-ECHO-RSP
        (Success), a C-ECHO on a Query/Retrieve context aborted the association, and a
        request missing a required command element was dropped unanswered (the peer
        waited for its network timeout).
        """
        serve = cast(Any, assoc)._serve_request

        def checked(msg: Any, context_id: int) -> None:
            problem = misdirected(assoc, msg, context_id)
            if problem is None:
                serve(msg, context_id)
                return
            status, why = problem
            self.log.warning("%s %s: %s from %r, %s", self.name, self.ae_title, why,
                             calling_ae_from(assoc),
                             "aborting" if status is None else f"answering 0x{status:04X}")
            if status is None:
                assoc.abort()
                return
            rsp = type(msg)()
            rsp.MessageIDBeingRespondedTo = msg.MessageID
            rsp.AffectedSOPClassUID = msg.AffectedSOPClassUID
            if isinstance(msg, C_STORE):
                rsp.AffectedSOPInstanceUID = msg.AffectedSOPInstanceUID
            rsp.Status = status
            assoc.dimse.send_msg(rsp, context_id)

        cast(Any, assoc)._serve_request = checked

    def _reject_on_failure(self, assoc: Association) -> None:
        """An A-ASSOCIATE-RQ pynetdicom cannot negotiate is rejected, not left unanswered.

        pynetdicom's acceptor thread dies on some requests its DUL decoded fine (a
        presentation context with no transfer syntax: IndexError in
        ``negotiate_as_acceptor``); the peer then waits forever for the A-ASSOCIATE-AC
        or -RJ, and the association's DUL thread outlives it, never stopped.
        """
        negotiate = assoc.acse.negotiate_association

        def guarded() -> None:
            try:
                negotiate()
            except Exception as exc:  # pynetdicom's, on the peer's request: reject it
                state = assoc.dul.state_machine.current_state
                self.log.warning("%s %s cannot negotiate the association requested by %r "
                                 "(%r); %s", self.name, self.ae_title, calling_ae_from(assoc),
                                 exc, "rejecting" if state == "Sta3" else "aborting")
                if state == "Sta3":  # awaiting our A-ASSOCIATE response
                    assoc.acse.send_reject(*REJECT_NO_REASON)
                    assoc.kill()
                elif state != "Sta1":
                    assoc.abort()
                else:
                    assoc.kill()

        assoc.acse.negotiate_association = guarded  # type: ignore[method-assign]


def store_request(event: Event) -> tuple[C_STORE, bytes]:
    """The C-STORE request of ``event`` and its dataset, still encoded as the peer sent it."""
    request = cast(C_STORE, event.request)
    return request, cast(BytesIO, request.DataSet).getvalue()


def calling_ae(event: Event) -> str:
    return calling_ae_from(event.assoc)


def calling_ae_from(assoc: Association) -> str:
    return str(assoc.requestor.ae_title).strip()


