"""Where pynetdicom 3.0 mishandles a bad peer, and what the daemons do instead.

Each workaround below was found by the fuzz harness (tests/hardening): a request
pynetdicom accepts unjudged, a DUL thread that dies with a traceback, a peer left
waiting for its timeout. They wrap pynetdicom's own methods per association, so a
pynetdicom upgrade that fixes one makes its wrapper a no-op, not a conflict.
"""

from __future__ import annotations

import logging
from typing import Any, cast

from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_GET, C_MOVE, C_STORE
from pynetdicom.events import Event
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.service_class import (
    QueryRetrieveServiceClass,
    StorageServiceClass,
    VerificationServiceClass,
)
from pynetdicom.sop_class import uid_to_service_class

from client.dul_guards import drop_overtaken_requests

_LOG = logging.getLogger("dbdsim.service")

_SMALLEST_PDU = 7  # a PDV item's length, context ID and control header, and one byte


def unusable_length(assoc: Association) -> str | None:
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


def request_served(abstract_syntax: str) -> type | None:
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


def misdirected(assoc: Association, msg: Any, context_id: int,
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
    served = request_served(abstract)
    if served is not None and not isinstance(msg, served):
        return UNRECOGNIZED_OPERATION, f"{type(msg).__name__} on a {abstract} context"
    if str(msg.AffectedSOPClassUID) != abstract:
        return SOP_CLASS_NOT_SUPPORTED, (f"{type(msg).__name__} for {msg.AffectedSOPClassUID} "
                                         f"on a {abstract} context")
    return None


def guard_connection(event: Event) -> None:
    """EVT_CONN_OPEN: work around what pynetdicom's DUL does wrong with a bad peer."""
    dul = cast(Any, event.assoc.dul)
    _primitives_while_decoding(dul)
    _events_before_reads(dul)
    drop_overtaken_requests(dul)  # see client.dul_guards
    _abort_on_invalid_messages(event.assoc)
    _keep_release_requests(event.assoc)


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


def _keep_release_requests(assoc: Association) -> None:
    """A peer's A-RELEASE-RQ seen once stays seen, so the reactor answers it.

    pynetdicom's Query/Retrieve services look for a release request between matches
    (``ServiceClass._wrap_handler``) with ``acse.is_release_requested()``, which takes the
    request off the DUL's queue; the service then stops, and the association's reactor,
    looking next, finds no request: the release was never answered, and the association
    was aborted at the network timeout. A peer that sends its A-RELEASE-RQ right behind
    a C-FIND (found by the long fuzz run) met that every time.
    """
    acse = cast(Any, assoc.acse)
    ask = acse.is_release_requested
    seen = [False]

    def kept() -> bool:
        seen[0] = seen[0] or bool(ask())
        return seen[0]

    acse.is_release_requested = kept


def release_slot(event: Event) -> None:
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
        cast(Any, assoc.dul.to_user_queue).put(None)  # None: not a primitive's type
