"""The DB Daemon's C-MOVE (and C-GET) SCP: sub-operations, counts and final statuses as
PS3.4 C.4.2 / C.4.3 say.

pynetdicom's own C-MOVE SCP cannot answer an unknown destination with an Error
Comment, nor 0xA702 when the destination cannot be reached, nor 0xC001 with
zero sub-operations; the real daemon's behaviours need all three, and its C-GET
SCP miscounts failed sub-operations. So the daemon serves both itself:
:func:`install` makes pynetdicom hand C-MOVE and C-GET requests on associations of
a :class:`MovingAE` to its ``mover``; every other AE in the process keeps
pynetdicom's services unchanged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any, Protocol, cast

import pynetdicom.association as _association
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.dsutils import decode, encode
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.service_class import QueryRetrieveServiceClass, ServiceClass

from client.tcp import NO_DELAY

from .. import bulk_send
from ..faults.dimse import MoveFaultPlan, other_uid
from ..faults.injector import hold

LOG = logging.getLogger("dbdsim.db_daemon")

# C-MOVE statuses (PS3.4 C.4.2.1.5).
SUCCESS = 0x0000
PENDING = 0xFF00
CANCELLED = 0xFE00
WARNING_FAILURES = 0xB000
MOVE_DESTINATION_UNKNOWN = 0xA801
OUT_OF_RESOURCES_SUBOPS = 0xA702
UNABLE_TO_PROCESS = 0xC000
_STORE_WARNINGS = frozenset({0xB000, 0xB006, 0xB007})
PENDING_EVERY = 0.02  # seconds between pending responses, at most
_MAX_MESSAGE_ID = 0xFFFF


class MoveRefused(Exception):
    """A retrieve answered with one final failure status and no sub-operations, or,
    raised while producing one object, that object's failed sub-operation."""

    def __init__(self, status: int, comment: str) -> None:
        super().__init__(comment)
        self.status, self.comment = status, comment


@dataclass(frozen=True)
class SubOperation:
    """One instance to send, and the presentation contexts that can carry it."""

    sop_uid: str
    sop_class: str
    transfer_syntaxes: tuple[str, ...]


@dataclass
class MovePlan:
    """What a move will do; built by the daemon before any sub-association opens."""

    destination: str
    host: str
    port: int
    operations: list[SubOperation]
    # Builds the dataset to send, or raises MoveRefused to fail that sub-operation.
    dataset: Callable[[SubOperation], Dataset]
    zero_status: int = SUCCESS  # the final status when there is nothing to send
    contexts: list[PresentationContext] = field(default_factory=list)
    faults: MoveFaultPlan | None = None  # what this move does wrong (emulators.faults)
    # The stored bytes to send as they are, when nothing about them must change (None:
    # build the data set); C-MOVE only, see bulk_send.
    encoded: Callable[[SubOperation], bulk_send.Encoded | None] = lambda _op: None
    stopping: threading.Event = field(default_factory=threading.Event)  # the daemon's


class Mover(Protocol):
    def plan_move(self, calling: str, destination: str, sop_class: str,
                  identifier: Dataset) -> MovePlan:
        """The sub-operations of a C-MOVE, or MoveRefused."""

    def plan_get(self, calling: str, sop_class: str, identifier: Dataset) -> MovePlan:
        """The sub-operations of a C-GET (sent back to ``calling``), or MoveRefused."""


class MovingAE(AE):
    """An AE whose C-MOVE and C-GET requests are served by ``mover`` (see :func:`install`)."""

    mover: Mover | None = None


@dataclass
class _Counts:
    remaining: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)

    def fail(self, uid: str) -> None:
        self.remaining -= 1
        self.failed += 1
        self.failed_uids.append(uid)


Retrieve = C_MOVE | C_GET


class _Responder:
    """Sends the C-MOVE (or C-GET) responses of one request on its presentation context."""

    def __init__(self, service: ServiceClass, req: Retrieve,
                 context: PresentationContext) -> None:
        self.service, self.req = service, req
        self.cx_id = cast(int, context.context_id)
        self.ts = context.transfer_syntax[0]
        self.inflate = 0  # the inflate_counts fault: added to every completed count

    def send(self, status: int, counts: _Counts | None = None, comment: str | None = None,
             final: bool = True) -> None:
        rsp = C_GET() if isinstance(self.req, C_GET) else C_MOVE()
        rsp.MessageIDBeingRespondedTo = self.req.MessageID
        rsp.AffectedSOPClassUID = self.req.AffectedSOPClassUID
        rsp.Status = status
        if comment:
            rsp.ErrorComment = comment[:64]  # type: ignore[assignment]  # typed as None
        if counts is not None:
            if not final or status == CANCELLED:
                rsp.NumberOfRemainingSuboperations = counts.remaining
            rsp.NumberOfCompletedSuboperations = counts.completed + self.inflate
            rsp.NumberOfFailedSuboperations = counts.failed
            rsp.NumberOfWarningSuboperations = counts.warning
            if final and counts.failed_uids:
                identifier = Dataset()
                identifier.FailedSOPInstanceUIDList = counts.failed_uids
                encoded = encode(identifier, self.ts.is_implicit_VR, self.ts.is_little_endian,
                                 self.ts.is_deflated)
                rsp.Identifier = BytesIO(cast(bytes, encoded))
        self.service.dimse.send_msg(rsp, self.cx_id)  # bulk_send.send_msg: see its idle rule

    def identifier(self) -> Dataset:
        return decode(cast(BytesIO, self.req.Identifier), self.ts.is_implicit_VR,
                      self.ts.is_little_endian, self.ts.is_deflated)


def serve_retrieve(service: ServiceClass, req: Retrieve, context: PresentationContext,
                   mover: Mover) -> None:
    """Serve one C-MOVE or C-GET end to end; every path ends in one final response.

    The peer's identifier is decoded lazily by pydicom, so a malformed element can
    raise anywhere while planning: that is answered 0xC000, never an A-ABORT.
    """
    out = _Responder(service, req, context)
    calling = str(service.assoc.requestor.ae_title).strip()
    is_get = isinstance(req, C_GET)
    destination = calling if is_get else str(cast(C_MOVE, req).MoveDestination or "").strip()
    verb = "C-GET" if is_get else "C-MOVE"
    sop_class = str(req.AffectedSOPClassUID)
    try:
        identifier = out.identifier()
        if is_get:
            plan = mover.plan_get(calling, sop_class, identifier)
        else:
            plan = mover.plan_move(calling, destination, sop_class, identifier)
    except MoveRefused as refusal:
        LOG.warning("%s from %r to %r refused with 0x%04X: %s", verb, calling, destination,
                    refusal.status, refusal.comment)
        out.send(refusal.status, _Counts(0) if refusal.status >= 0xC000 else None,
                 refusal.comment)
        return
    except Exception as exc:  # the peer's bytes, decoded late: a bad request, not a crash
        LOG.warning("%s from %r: cannot process the identifier: %s", verb, calling, exc)
        out.send(UNABLE_TO_PROCESS, _Counts(0), f"cannot process the identifier: {exc}")
        return
    faults = plan.faults or MoveFaultPlan()
    out.inflate = faults.inflate_counts
    if faults.status is not None:
        out.send(faults.status, _Counts(0), faults.comment or "fault injected by dbdsim")
        return
    if not plan.operations:
        LOG.info("%s from %r to %r: nothing to send (0x%04X)", verb, calling, destination,
                 plan.zero_status)
        out.send(plan.zero_status, _Counts(0))
        return
    if faults.delay:
        hold(plan.stopping, lambda: not service.assoc.is_established, faults.delay)
    if is_get:
        final = _run_suboperations(service, req, out, plan, calling, service.assoc)
        _finish(service, out, plan, final)
        return
    store = service.ae.associate(plan.host, plan.port, contexts=plan.contexts,
                                 ae_title=plan.destination, evt_handlers=NO_DELAY)
    if not store.is_established:
        why = _association_failure(store)
        LOG.warning("C-MOVE from %r: cannot associate with %s at %s:%d: %s", calling,
                    plan.destination, plan.host, plan.port, why)
        counts = _Counts(len(plan.operations))
        for op in plan.operations:
            counts.fail(op.sop_uid)
        out.send(OUT_OF_RESOURCES_SUBOPS, counts,
                 f"cannot associate with {plan.destination}: {why}")
        return
    try:
        with bulk_send.sending(store):
            final = _run_suboperations(service, req, out, plan, calling, store)
    finally:
        if store.is_established:
            store.release()  # before the final response, as dcmqrscp does
    _finish(service, out, plan, final)


def _finish(service: ServiceClass, out: _Responder, plan: MovePlan,
            final: tuple[int, _Counts] | None) -> None:
    if final is None:
        return
    if plan.faults is not None and plan.faults.drop_final:
        LOG.warning("fault: final response dropped; holding the association")
        hold(plan.stopping, lambda: not service.assoc.is_established, None)
        return
    if plan.faults is not None and plan.faults.endless_pending:
        _pending_for_ever(service, out, plan, final[1])
        return
    out.send(*final)


def _pending_for_ever(service: ServiceClass, out: _Responder, plan: MovePlan,
                      counts: _Counts) -> None:
    """The endless_pending fault: the same pending response each 0.2 s instead of the
    final one, until the requester cancels (unless that is ignored too) or goes away."""
    LOG.warning("fault: pending responses for ever instead of the final response")
    ignored = False
    while not plan.stopping.wait(0.2) and service.assoc.is_established:
        if service.is_cancelled(cast(int, out.req.MessageID)):
            if not plan.faults or not plan.faults.ignore_cancel:
                out.send(CANCELLED, counts)
                return
            if not ignored:
                LOG.warning("fault: C-CANCEL from the requester ignored")
                ignored = True
        out.send(PENDING, counts, final=False)


def _run_suboperations(service: ServiceClass, req: Retrieve, out: _Responder, plan: MovePlan,
                       calling: str, store: Association) -> tuple[int, _Counts] | None:
    """One C-STORE per instance on ``store`` (the destination's association for a
    C-MOVE, the requester's own for a C-GET), a pending response after each.

    Returns the final status and counts to send, or None when nobody is left to tell.
    The next object is read while the destination takes this one (measured: 1 ms of
    each CT slice's 3 ms, once), on this thread: a reading thread cost each object two
    thread hand-overs, and 16 moves at once spent more on those than on reading.
    At most two objects are in memory at once.
    """
    counts = _Counts(len(plan.operations))
    originator = None if isinstance(req, C_GET) else calling
    faults = plan.faults or MoveFaultPlan()
    operations = plan.operations
    last_pending = 0.0
    upcoming: Future[Dataset | bulk_send.Encoded] | None = \
        _produced(plan, operations[0], originator is not None)
    for index, op in enumerate(operations):
        current, upcoming = upcoming, None

        def read_next(index: int = index) -> None:
            nonlocal upcoming
            if upcoming is None and index + 1 < len(operations):
                upcoming = _produced(plan, operations[index + 1], originator is not None)

        if service.is_cancelled(cast(int, req.MessageID)):
            if not faults.ignore_cancel:
                LOG.info("retrieve from %r cancelled after %d sub-operations", calling, index)
                return CANCELLED, counts
            LOG.warning("fault: C-CANCEL from %r ignored", calling)
        if not service.assoc.is_established:
            LOG.warning("retrieve from %r: the requesting association ended", calling)
            return None
        if faults.abort_after is not None and index >= faults.abort_after:
            LOG.warning("fault: aborting %r's association after %d sub-operations", calling,
                        index)
            service.assoc.abort()
            return None
        if bulk_send.gone(store):
            counts.fail(op.sop_uid)
        elif index in faults.failing:
            LOG.warning("fault: sub-operation %d for %s fails", index + 1, op.sop_uid)
            counts.fail(op.sop_uid)
        else:
            _store_one(store, req, op, plan, counts, originator, index,
                       cast(Future[Dataset | bulk_send.Encoded], current), read_next)
        read_next()
        now = time.monotonic()
        if now - last_pending >= PENDING_EVERY or index == 0:
            # Pending responses are optional (PS3.4 C.4.2.1.5); one each 20 ms keeps a
            # progress bar moving, one per object cost 0.4 ms of each object's time.
            out.send(PENDING, counts, final=False)
            last_pending = now
    final = WARNING_FAILURES if counts.failed or counts.warning else SUCCESS
    LOG.info("retrieve from %r to %s: %d completed, %d failed, %d warnings", calling,
             plan.destination, counts.completed, counts.failed, counts.warning)
    return final, counts


def _produced(plan: MovePlan, op: SubOperation, moving: bool,
              ) -> Future[Dataset | bulk_send.Encoded]:
    """:func:`_produce`'s object, or what it raised, to be met when it is sent."""
    produced: Future[Dataset | bulk_send.Encoded] = Future()
    try:
        produced.set_result(_produce(plan, op, moving))
    except Exception as exc:  # raised again by result(), where it is sent
        produced.set_exception(exc)
    return produced


def _produce(plan: MovePlan, op: SubOperation, moving: bool) -> Dataset | bulk_send.Encoded:
    """What a sub-operation sends: the stored bytes as they are (a C-MOVE's, when
    possible), else the data set; MoveRefused fails the sub-operation."""
    if plan.faults is not None and plan.faults.wrong_instance:
        ds = plan.dataset(op)
        ds.SOPInstanceUID = other_uid(op.sop_uid)
        return ds
    if moving:
        encoded = plan.encoded(op)
        if encoded is not None:
            return encoded
    return plan.dataset(op)


def _store_one(store: Association, req: Retrieve, op: SubOperation, plan: MovePlan,
               counts: _Counts, originator: str | None, index: int,
               produced: Future[Dataset | bulk_send.Encoded],
               meanwhile: Callable[[], None]) -> None:
    """One sub-operation; ``meanwhile`` runs once the request is sent, before its
    response is awaited (a C-GET's, sent by pynetdicom, after it)."""
    try:
        payload = produced.result()
    except MoveRefused as refusal:
        LOG.warning("sub-operation for %s refused: %s", op.sop_uid, refusal.comment)
        counts.fail(op.sop_uid)
        return
    except Exception:  # one unreadable object must not end the whole move
        LOG.exception("sub-operation for %s: the object cannot be produced", op.sop_uid)
        counts.fail(op.sop_uid)
        return
    message_id = (cast(int, req.MessageID) + index) % _MAX_MESSAGE_ID + 1
    try:
        if originator is None:  # C-GET: on the requester's association, pynetdicom's way
            status = store.send_c_store(cast(Dataset, payload), msg_id=message_id)
        else:
            _start_moved(store, payload, plan, op, message_id, originator,
                         cast(int, req.MessageID))
            meanwhile()
            status = bulk_send.c_store_status(store)
    except (ValueError, AttributeError, RuntimeError, MoveRefused) as exc:  # no context
        LOG.warning("sub-operation for %s not sent: %s", op.sop_uid, exc)
        counts.fail(op.sop_uid)
        return
    code = int(status.Status) if "Status" in status else None
    if code == SUCCESS:
        counts.remaining -= 1
        counts.completed += 1
    elif code in _STORE_WARNINGS:
        counts.remaining -= 1
        counts.warning += 1
    else:
        LOG.warning("sub-operation for %s failed at %s: %s", op.sop_uid, plan.destination,
                    "no response" if code is None else f"0x{code:04X}")
        counts.fail(op.sop_uid)


def _start_moved(store: Association, payload: Dataset | bulk_send.Encoded, plan: MovePlan,
                 op: SubOperation, message_id: int, originator: str, originator_id: int,
                 ) -> None:
    """Send one C-MOVE sub-operation's request; stored bytes no accepted context
    carries as they are are sent as the data set, encoded for the context that is."""
    try:
        bulk_send.start_c_store(store, payload, msg_id=message_id,
                                originator_aet=originator, originator_id=originator_id)
        return
    except ValueError:
        if not isinstance(payload, bulk_send.Encoded):
            raise
    bulk_send.start_c_store(store, plan.dataset(op), msg_id=message_id,
                            originator_aet=originator, originator_id=originator_id)


def _association_failure(assoc: Any) -> str:
    rsp = assoc.acceptor.primitive
    if assoc.is_rejected and rsp is not None:
        return (f"association rejected (result {rsp.result}, source {rsp.result_source}, "
                f"reason {rsp.diagnostic})")
    if rsp is None:  # pynetdicom reports a refused TCP connection as an abort, too
        return "no association: connection refused, timed out or aborted"
    return "association aborted"


def contexts_for(plan: MovePlan) -> list[PresentationContext]:
    """One presentation context per (SOP class, transfer syntaxes) the move needs."""
    wanted: dict[tuple[str, tuple[str, ...]], None] = {}
    for op in plan.operations:
        wanted[(op.sop_class, op.transfer_syntaxes)] = None
    if len(wanted) > 128:
        raise MoveRefused(OUT_OF_RESOURCES_SUBOPS,
                          "the move needs more than 128 presentation contexts")
    return [build_context(sop_class, list(syntaxes)) for sop_class, syntaxes in wanted]


class _MoveDispatchingService(QueryRetrieveServiceClass):
    """pynetdicom's Q/R service, except C-MOVE and C-GET on a MovingAE's associations."""

    def SCP(self, req: Any, context: PresentationContext) -> None:
        mover = getattr(self.ae, "mover", None)
        if isinstance(req, C_MOVE | C_GET) and isinstance(self.ae, MovingAE) \
                and mover is not None:
            serve_retrieve(self, req, context, mover)
        else:
            super().SCP(req, context)


# The one pynetdicom name this module replaces (in pynetdicom.association, where an
# acceptor picks the service class serving each request).
_LOOKUP = "uid_to_service_class"
_original_lookup: Callable[[str], type[ServiceClass]] | None = None


def install() -> None:
    """Route C-MOVE and C-GET on MovingAE associations to :func:`serve_retrieve`; idempotent."""
    global _original_lookup
    if _original_lookup is not None:
        return
    original: Callable[[str], type[ServiceClass]] = getattr(_association, _LOOKUP)
    _original_lookup = original

    def lookup(uid: str) -> type[ServiceClass]:
        service = original(uid)
        return _MoveDispatchingService if service is QueryRetrieveServiceClass else service

    setattr(_association, _LOOKUP, lookup)
