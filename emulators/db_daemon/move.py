"""The DB Daemon's C-MOVE SCP: sub-operations, counts and final statuses as PS3.4 C.4.2 says.

pynetdicom's own C-MOVE SCP cannot answer an unknown destination with an Error
Comment, nor 0xA702 when the destination cannot be reached, nor 0xC001 with
zero sub-operations; the real daemon's behaviours need all three. So the daemon
serves C-MOVE itself: :func:`install` makes pynetdicom hand C-MOVE requests on
associations of a :class:`MovingAE` to its ``mover``; every other AE in the
process keeps pynetdicom's service unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any, Protocol, cast

import pynetdicom.association as _association
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.dimse_primitives import C_MOVE
from pynetdicom.dsutils import decode, encode
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.service_class import QueryRetrieveServiceClass, ServiceClass

from client.tcp import NO_DELAY

LOG = logging.getLogger("dbdsim.db_daemon")

# C-MOVE statuses (PS3.4 C.4.2.1.5).
SUCCESS = 0x0000
PENDING = 0xFF00
CANCELLED = 0xFE00
WARNING_FAILURES = 0xB000
MOVE_DESTINATION_UNKNOWN = 0xA801
OUT_OF_RESOURCES_SUBOPS = 0xA702
IDENTIFIER_DOES_NOT_MATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000
_STORE_WARNINGS = frozenset({0xB000, 0xB006, 0xB007})
_MAX_MESSAGE_ID = 0xFFFF


class MoveRefused(Exception):
    """A C-MOVE answered with one final failure status and no sub-operations."""

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


class Mover(Protocol):
    def plan_move(self, calling: str, destination: str, sop_class: str,
                  identifier: Dataset) -> MovePlan:
        """The sub-operations of a move, or MoveRefused."""


class MovingAE(AE):
    """An AE whose C-MOVE requests are served by ``mover`` (see :func:`install`)."""

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


class _Responder:
    """Sends the C-MOVE responses of one request on its presentation context."""

    def __init__(self, service: ServiceClass, req: C_MOVE, context: PresentationContext) -> None:
        self.service, self.req = service, req
        self.cx_id = cast(int, context.context_id)
        self.ts = context.transfer_syntax[0]

    def send(self, status: int, counts: _Counts | None = None, comment: str | None = None,
             final: bool = True) -> None:
        rsp = C_MOVE()
        rsp.MessageIDBeingRespondedTo = self.req.MessageID
        rsp.AffectedSOPClassUID = self.req.AffectedSOPClassUID
        rsp.Status = status
        if comment:
            rsp.ErrorComment = comment[:64]  # type: ignore[assignment]  # typed as None
        if counts is not None:
            if not final or status == CANCELLED:
                rsp.NumberOfRemainingSuboperations = counts.remaining
            rsp.NumberOfCompletedSuboperations = counts.completed
            rsp.NumberOfFailedSuboperations = counts.failed
            rsp.NumberOfWarningSuboperations = counts.warning
            if final and counts.failed_uids:
                identifier = Dataset()
                identifier.FailedSOPInstanceUIDList = counts.failed_uids
                encoded = encode(identifier, self.ts.is_implicit_VR, self.ts.is_little_endian,
                                 self.ts.is_deflated)
                rsp.Identifier = BytesIO(cast(bytes, encoded))
        self.service.dimse.send_msg(rsp, self.cx_id)

    def identifier(self) -> Dataset:
        return decode(cast(BytesIO, self.req.Identifier), self.ts.is_implicit_VR,
                      self.ts.is_little_endian, self.ts.is_deflated)


def serve_move(service: ServiceClass, req: C_MOVE, context: PresentationContext,
               mover: Mover) -> None:
    """Serve one C-MOVE request end to end; every path ends in one final response."""
    out = _Responder(service, req, context)
    calling = str(service.assoc.requestor.ae_title).strip()
    destination = str(req.MoveDestination or "").strip()
    try:
        try:
            identifier = out.identifier()
        except Exception as exc:  # the peer's bytes: any decoding failure is a bad request
            raise MoveRefused(UNABLE_TO_PROCESS, f"cannot decode the identifier: {exc}") \
                from exc
        plan = mover.plan_move(calling, destination, str(req.AffectedSOPClassUID), identifier)
    except MoveRefused as refusal:
        LOG.warning("C-MOVE from %r to %r refused with 0x%04X: %s", calling, destination,
                    refusal.status, refusal.comment)
        out.send(refusal.status, _Counts(0) if refusal.status >= 0xC000 else None,
                 refusal.comment)
        return
    if not plan.operations:
        LOG.info("C-MOVE from %r to %r: nothing to send (0x%04X)", calling, destination,
                 plan.zero_status)
        out.send(plan.zero_status, _Counts(0))
        return
    _run_suboperations(service, req, out, plan, calling)


def _run_suboperations(service: ServiceClass, req: C_MOVE, out: _Responder, plan: MovePlan,
                       calling: str) -> None:
    counts = _Counts(len(plan.operations))
    ae: AE = service.ae
    store = ae.associate(plan.host, plan.port, contexts=plan.contexts,
                         ae_title=plan.destination, evt_handlers=NO_DELAY)
    if not store.is_established:
        why = _association_failure(store)
        LOG.warning("C-MOVE from %r: cannot associate with %s at %s:%d: %s", calling,
                    plan.destination, plan.host, plan.port, why)
        for op in plan.operations:
            counts.fail(op.sop_uid)
        out.send(OUT_OF_RESOURCES_SUBOPS, counts,
                 f"cannot associate with {plan.destination}: {why}")
        return
    try:
        for index, op in enumerate(plan.operations):
            if service.is_cancelled(cast(int, req.MessageID)):
                LOG.info("C-MOVE from %r cancelled after %d sub-operations", calling, index)
                out.send(CANCELLED, counts)
                return
            if not service.assoc.is_established:
                LOG.warning("C-MOVE from %r: the requesting association ended", calling)
                return
            if not store.is_established:
                counts.fail(op.sop_uid)
            else:
                _store_one(store, req, op, plan, counts, calling, index)
            out.send(PENDING, counts, final=False)
    finally:
        if store.is_established:
            store.release()
    final = WARNING_FAILURES if counts.failed or counts.warning else SUCCESS
    LOG.info("C-MOVE from %r to %s: %d completed, %d failed, %d warnings", calling,
             plan.destination, counts.completed, counts.failed, counts.warning)
    out.send(final, counts)


def _store_one(store: Any, req: C_MOVE, op: SubOperation, plan: MovePlan, counts: _Counts,
               calling: str, index: int) -> None:
    try:
        ds = plan.dataset(op)
    except MoveRefused as refusal:
        LOG.warning("C-MOVE sub-operation for %s refused: %s", op.sop_uid, refusal.comment)
        counts.fail(op.sop_uid)
        return
    message_id = (cast(int, req.MessageID) + index) % _MAX_MESSAGE_ID + 1
    try:
        status = store.send_c_store(ds, msg_id=message_id, originator_aet=calling,
                                    originator_id=req.MessageID)
    except (ValueError, AttributeError, RuntimeError) as exc:  # no context for this object
        LOG.warning("C-MOVE sub-operation for %s not sent: %s", op.sop_uid, exc)
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
        LOG.warning("C-MOVE sub-operation for %s failed at %s: %s", op.sop_uid,
                    plan.destination, "no response" if code is None else f"0x{code:04X}")
        counts.fail(op.sop_uid)


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
    """pynetdicom's Q/R service, except C-MOVE on a MovingAE's associations."""

    def SCP(self, req: Any, context: PresentationContext) -> None:
        mover = getattr(self.ae, "mover", None)
        if isinstance(req, C_MOVE) and isinstance(self.ae, MovingAE) and mover is not None:
            serve_move(self, req, context, mover)
        else:
            super().SCP(req, context)


# The one pynetdicom name this module replaces (in pynetdicom.association, where an
# acceptor picks the service class serving each request).
_LOOKUP = "uid_to_service_class"
_original_lookup: Callable[[str], type[ServiceClass]] | None = None


def install() -> None:
    """Route C-MOVE on MovingAE associations to :func:`serve_move`; idempotent."""
    global _original_lookup
    if _original_lookup is not None:
        return
    original: Callable[[str], type[ServiceClass]] = getattr(_association, _LOOKUP)
    _original_lookup = original

    def lookup(uid: str) -> type[ServiceClass]:
        service = original(uid)
        return _MoveDispatchingService if service is QueryRetrieveServiceClass else service

    setattr(_association, _LOOKUP, lookup)
