"""What both emulated daemons share: a pynetdicom server in a thread, trust, start/stop.

A daemon is used as ``with FileDaemon(site) as fd:`` in tests and by ``dbdsim
serve``; leaving the block stops the server, aborts live associations and waits
for their threads, so no test leaks a thread or a port.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import struct
import threading
import time
import zlib
from collections.abc import Sequence
from io import BytesIO
from typing import Any, Self, cast

from pydicom.uid import UID
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_GET, C_MOVE, C_STORE
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.fsm import TRANSITION_TABLE
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.service_class import (
    QueryRetrieveServiceClass,
    StorageServiceClass,
    VerificationServiceClass,
)
from pynetdicom.sop_class import uid_to_service_class

from client.scp import RunningServer, serve
from client.site import Timeouts, TrustedAE
from client.tcp import NO_DELAY
from client.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

from . import bulk_send
from .faults.association import AssociationInjector
from .log_policy import HANDLERS as LOG_POLICY_HANDLERS
from .log_policy import protect
from .trust import TrustPolicy, exposure, log_verdict

_STOP_GRACE = 10.0  # seconds to wait for association threads after an abort
REJECT_NO_REASON = (1, 1, 1)  # PS3.8 9.3.4: rejected-permanent, service-user, no reason
_LOG = logging.getLogger("dbdsim.service")


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
                                                (evt.EVT_CONN_OPEN, _guard_connection),
                                                (evt.EVT_CONN_CLOSE, _release_slot),
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
            problem = _unusable_length(assoc)
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
        self._answer_misdirected(assoc)
        self.on_accepted(event)

    def _answer_misdirected(self, assoc: Association) -> None:
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
            problem = _misdirected(assoc, msg, context_id)
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


_SMALLEST_PDU = 7  # a PDV item's length, context ID and control header, and one byte


def _unusable_length(assoc: Association) -> str | None:
    """Why no DIMSE message can be sent to the requestor, or None.

    pynetdicom accepts an A-ASSOCIATE-RQ without a Maximum Length sub-item (PS3.8 D.1
    requires one) or with a maximum of 1 to 6 bytes, then fails on every response it
    fragments (None arithmetic, a zero division, "fragment_length cannot be between 1
    and 7") and aborts: a C-ECHO could never be answered.
    """
    length = assoc.requestor.maximum_length
    if length is None:
        return "its A-ASSOCIATE-RQ has no Maximum Length sub-item (PS3.8 D.1)"
    if 0 < length < _SMALLEST_PDU:
        return f"its maximum PDU length of {length} bytes holds no PDV"
    return None


UNRECOGNIZED_OPERATION, SOP_CLASS_NOT_SUPPORTED = 0x0211, 0x0122  # PS3.7 C.5
_REQUESTS = (C_ECHO, C_FIND, C_MOVE, C_GET, C_STORE)


def _request_served(abstract_syntax: str) -> type | None:
    """The DIMSE-C request a context of ``abstract_syntax`` serves (None: not known here)."""
    service = uid_to_service_class(abstract_syntax)
    if issubclass(service, VerificationServiceClass):
        return C_ECHO
    if issubclass(service, StorageServiceClass):
        return C_STORE
    if issubclass(service, QueryRetrieveServiceClass):
        for name, primitive in (("C-FIND", C_FIND), ("C-MOVE", C_MOVE), ("C-GET", C_GET)):
            if abstract_syntax in QueryRetrieveServiceClass._SUPPORTED_UIDS[name]:
                return primitive
    return None


def _misdirected(assoc: Association, msg: Any, context_id: int,
                 ) -> tuple[int | None, str] | None:
    """Why ``msg`` cannot be served on ``context_id``: the failure status to answer
    (None: abort), and a phrase; None when pynetdicom may serve it (or ignore it)."""
    if getattr(msg, "MessageIDBeingRespondedTo", None) is not None:
        return None  # a response: nothing to answer
    context = assoc._accepted_cx.get(context_id)
    if context is None:  # pynetdicom aborts too, unless the request is also incomplete
        return None, f"{type(msg).__name__} on presentation context {context_id}, never agreed"
    if not isinstance(msg, _REQUESTS):
        return None, f"{type(msg).__name__} request (no N- service here)"
    if not msg.is_valid_request:
        return None, f"{type(msg).__name__} request missing a required command element"
    abstract = str(context.abstract_syntax)
    served = _request_served(abstract)
    if served is not None and not isinstance(msg, served):
        return UNRECOGNIZED_OPERATION, f"{type(msg).__name__} on a {abstract} context"
    if str(msg.AffectedSOPClassUID) != abstract:
        return SOP_CLASS_NOT_SUPPORTED, (f"{type(msg).__name__} for {msg.AffectedSOPClassUID} "
                                         f"on a {abstract} context")
    return None


def _guard_connection(event: Event) -> None:
    """EVT_CONN_OPEN: work around what pynetdicom's DUL does wrong with a bad peer."""
    dul = cast(Any, event.assoc.dul)
    _primitives_while_decoding(dul)
    _events_before_reads(dul)
    _drop_overtaken_requests(dul)
    _abort_on_invalid_messages(event.assoc)


def _primitives_while_decoding(dul: Any) -> None:
    """A PDU that cannot become a primitive is an invalid PDU (A-ABORT).

    pynetdicom decodes a PDU in ``DUL._decode_pdu`` (a failure there is PS3.8's Evt19:
    A-ABORT, then close) but builds its primitive later, in the state machine's action
    (AE-6, AA-3, ...), where a failure (an even or zero presentation context ID, a
    malformed user information sub-item, an A-ABORT source of 9) raises out of the DUL
    thread: no answer, and the connection hangs until the ACSE timeout. Building it
    while decoding puts the failure where pynetdicom handles it.
    """
    decode = dul._decode_pdu

    def checked(bytestream: bytearray) -> tuple[Any, str]:
        pdu, fsm_event = decode(bytestream)
        if not isinstance(pdu, P_DATA_TF):  # P-DATA's failures are caught where decoded
            pdu.to_primitive()
        return pdu, fsm_event

    dul._decode_pdu = checked


def _events_before_reads(dul: Any) -> None:
    """The DUL acts on what it has received before it reads more.

    pynetdicom reads the next PDU before acting on the last one's event (an acceptor's
    Evt5 is still queued when its first PDU is read): after an invalid A-ASSOCIATE-RQ,
    a read blocked on a partial next PDU delayed the A-ABORT by the network timeout.
    """
    is_transport_event = dul._is_transport_event

    def events_first() -> bool:
        return False if not dul.event_queue.empty() else bool(is_transport_event())

    dul._is_transport_event = events_first


def _abort_on_invalid_messages(assoc: Association) -> None:
    """A DIMSE message that cannot be decoded is an invalid PDU: A-ABORT (PS3.8 AA-8).

    pynetdicom decodes each command set in action DT-2, on the DUL thread; a command set
    that is empty, cut short or of an unknown Command Field raises there, the state
    machine kills its DUL thread (a traceback), and the peer sees the connection just
    close once the acceptor notices, with no A-ABORT. pynetdicom itself answers Evt19
    for a message it decoded but cannot use; this does the same for the rest.
    """
    dimse = cast(Any, assoc.dimse)
    receive = dimse.receive_primitive

    def receive_checked(primitive: Any) -> None:
        try:
            receive(primitive)
        except Exception as exc:  # the peer's bytes
            _LOG.warning("invalid DIMSE message from %s (%s): aborting the association",
                         assoc.requestor.address, type(exc).__name__)
            dimse.message = None
            assoc.dul.event_queue.put("Evt19")

    dimse.receive_primitive = receive_checked


# Events raised by our own requests (PS3.8 9.2.1): A-ASSOCIATE request, accept, reject,
# P-DATA, A-RELEASE request and response, A-ABORT.
_LOCAL_EVENTS = frozenset({"Evt1", "Evt7", "Evt8", "Evt9", "Evt11", "Evt14", "Evt15"})


def _drop_overtaken_requests(dul: Any) -> None:
    """Our request that the peer's ending of the association overtook is dropped.

    A peer whose A-ASSOCIATE-RQ is followed by an invalid PDU makes the DUL send an
    A-ABORT (Sta3 -> Sta13) while the acceptor thread still judges the request; its
    A-ASSOCIATE-RJ or -AC then comes in Sta13, where PS3.8 has no transition, and
    pynetdicom raises InvalidEventError out of the DUL thread (which dies with a
    traceback). The association is over either way: nothing is left to send.
    """
    machine = dul.state_machine
    act = machine.do_action

    def do_action(event: str) -> None:
        if event in _LOCAL_EVENTS and (event, machine.current_state) not in TRANSITION_TABLE:
            with contextlib.suppress(queue.Empty):  # its primitive, or the DUL takes it again
                dul.to_provider_queue.get(False)
            return
        act(event)

    machine.do_action = do_action


def _release_slot(event: Event) -> None:
    """A connection closed before its A-ASSOCIATE-RQ came frees its association slot now.

    pynetdicom's acceptor thread waits for the A-ASSOCIATE-RQ for the whole ACSE timeout
    even when its DUL has already closed the connection (garbage or an unknown PDU in
    Sta2: A-ABORT, then close), and counts against ``maximum_associations`` meanwhile:
    eleven HTTP probes locked trusted callers out of a default daemon for 30 s. Here it
    takes "nothing came", as when that timeout expires. Runs on the closing (DUL) thread,
    which alone queues primitives, so an A-ASSOCIATE-RQ already queued is never hidden.
    """
    assoc = event.assoc
    if assoc.is_acceptor and assoc.requestor.primitive is None \
            and assoc.dul.to_user_queue.empty():
        assoc.dul.to_user_queue.put(None)


def store_request(event: Event) -> tuple[C_STORE, bytes]:
    """The C-STORE request of ``event`` and its dataset, still encoded as the peer sent it."""
    request = cast(C_STORE, event.request)
    return request, cast(BytesIO, request.DataSet).getvalue()


_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                       b"UR", b"UT", b"UV"})
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD


def cut_short(body: bytes, transfer_syntax: UID) -> str | None:
    """Why ``body`` (a data set as received) is not whole, or None when it is.

    pydicom reads a value cut short by the end of the stream as a shorter value, so a
    C-STORE whose last PDU was lost decoded "fine" and was stored as a partial file.
    Every defined length must fit in its container, every undefined-length sequence
    and item must be closed (PS3.5 7.5); values are skipped, not decoded. Iterative:
    a peer can nest thousands of items.
    """
    if transfer_syntax.is_deflated:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            body = inflater.decompress(body)
        except zlib.error as exc:
            return f"deflated data cannot be inflated ({exc})"
        if not inflater.eof:
            return "deflated data cut short"
    order = "<" if transfer_syntax.is_little_endian else ">"
    pos = 0
    # Open containers: (defined end or None, items (True) or elements, implicit VR, hard end)
    stack: list[tuple[int | None, bool, bool, int]] = [
        (len(body), False, transfer_syntax.is_implicit_VR, len(body))]
    while stack:
        limit, items, implicit, hard = stack[-1]
        if pos == limit:
            stack.pop()
            continue
        if pos + 8 > hard:
            return f"ends inside an element header at byte {pos}"
        group, element, length = struct.unpack_from(order + "HHI", body, pos)
        tag = (group << 16) | element
        if group == 0xFFFE:  # item and delimiters: no VR, in every syntax
            pos += 8
            closes = _SEQUENCE_END if items else _ITEM_END
            if tag == closes and limit is None and len(stack) > 1:
                stack.pop()
            elif tag == _ITEM and length == _UNDEFINED:
                stack.append((None, False, implicit, hard))
            elif tag == _ITEM:
                if pos + length > hard:
                    return f"an item of {length} bytes at byte {pos} runs past the end"
                pos += length
            continue
        vr = None if implicit else body[pos + 4:pos + 6]
        if vr is None:
            head = 8
        elif vr in _LONG_VRS:
            if pos + 12 > hard:
                return f"ends inside an element header at byte {pos}"
            length, head = struct.unpack_from(order + "I", body, pos + 8)[0], 12
        else:
            length, head = struct.unpack_from(order + "H", body, pos + 6)[0], 8
        pos += head
        if length == _UNDEFINED:  # a sequence or encapsulated pixel data: items
            stack.append((None, True, implicit or vr == b"UN", hard))
        elif pos + length > hard:
            return (f"element ({group:04X},{element:04X}) declares {length} bytes, "
                    f"{hard - pos} remain")
        else:
            pos += length
    return None


def calling_ae(event: Event) -> str:
    return calling_ae_from(event.assoc)


def calling_ae_from(assoc: Association) -> str:
    return str(assoc.requestor.ae_title).strip()


