"""DIMSE messages sent as one write each, inside pynetdicom's state machine.

pynetdicom sends a message as one P-DATA primitive per fragment: each crosses its
event queue and polling loop on the DUL thread, about 150 µs a fragment, so a 512x512
CT slice (33 fragments of 16 KB) costs its transfer several times over (measured: a
200-slice series 1.1-1.3 s against dcmqrscp's 0.2 s). Here a whole message, command
and data set, is framed as P-DATA-TF PDUs up front and queued as ONE P-DATA request:
the state machine still sees Evt9 (DT-1 in Sta6, AR-7 in Sta7) for it, on the DUL
thread, so nothing is written behind its back (which stalls associations), and the
socket gets one write per message instead of one per fragment. The daemons use it for
every association they accept (:func:`speed_up`) and for C-MOVE sub-operations
(:func:`sending`, :func:`send_c_store` or :func:`start_c_store`)."""

from __future__ import annotations

import collections
import functools
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO
from typing import Any, cast

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse import _RQ_TO_MESSAGE, _RSP_TO_MESSAGE
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_FIND, C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from client import dimse_commands

_PDU_HEADER = struct.Struct(">BBI")  # PDU type 0x04, reserved, length
_PDV_HEADER = struct.Struct(">IBB")  # item length, presentation context ID, control header
_NO_LIMIT_FRAGMENT = 1 << 20  # peer with no maximum PDU length: 1 MB PDUs
_COMMAND_LAST, _DATA, _DATA_LAST = 0x03, 0x00, 0x02
_FAST_POLL = 0.00005  # seconds between the DUL's looks at the socket while sending
_lock = threading.Lock()


class _Bulk(P_DATA):
    """A P-DATA request whose PDUs are already encoded (its PDV list stays empty)."""


def frame(context_id: int, command: bytes, data: bytes, max_pdu: int) -> bytes:
    """The P-DATA-TF PDUs of one message: the command, then the data set, fragmented so
    that no PDU's variable field exceeds the peer's maximum length (PS3.8 9.3.5)."""
    # The variable field is one PDV item: its 4-byte length, context ID, control header.
    room = max(max_pdu - _PDV_HEADER.size, 1) if max_pdu else _NO_LIMIT_FRAGMENT
    parts: list[bytes | memoryview] = []

    def pdu(control: int, chunk: bytes | memoryview) -> None:
        item = len(chunk) + 2
        parts.append(_PDU_HEADER.pack(0x04, 0, item + 4))
        parts.append(_PDV_HEADER.pack(item, context_id, control))
        parts.append(chunk)

    view = memoryview(command)
    for start in range(0, len(command), room):
        last = start + room >= len(command)
        pdu(_COMMAND_LAST if last else 0x01, view[start:start + room])
    view = memoryview(data)
    for start in range(0, len(data), room):
        last = start + room >= len(data)
        pdu(_DATA_LAST if last else _DATA, view[start:start + room])
    return b"".join(parts)


def _install(assoc: Association) -> collections.deque[bytes]:
    """Teach this association's DUL to send queued bulk PDUs, and to let other threads
    write while it is between actions (:func:`_write`); once per association."""
    dul = cast(Any, assoc.dul)
    with _lock:
        pending: collections.deque[bytes] | None = getattr(dul, "_dbdsim_bulk", None)
        if pending is not None:
            return pending
        pending = collections.deque()
        dul._dbdsim_queue_lock = threading.Lock()
        # Held by the DUL for each state machine action, and by a thread writing P-DATA
        # itself: the state (Sta6) and what is queued cannot change under that writer.
        actions = dul._dbdsim_actions = threading.RLock()
        original: Callable[[Any], None] = dul._send
        act: Callable[[str], None] = dul.state_machine.do_action

        def do_action(event: str) -> None:
            with actions:
                act(event)

        dul.state_machine.do_action = do_action

        def send(pdu: Any) -> None:
            # DT-1 built an empty P-DATA-TF from a _Bulk request: send its bytes instead.
            if isinstance(pdu, P_DATA_TF) and not pdu.presentation_data_value_items \
                    and pending:
                if dul.socket is not None:
                    dul.socket.send(pending.popleft())
                return
            original(pdu)

        dul._send = send
        dul._dbdsim_bulk = pending
        return pending


def _queue(assoc: Association, pdus: bytes) -> None:
    """Send encoded PDUs: written at once when the state machine allows (:func:`_write`),
    else queued as one P-DATA request (the bytes and the request keep one order)."""
    pending = _install(assoc)
    if _write(assoc, pdus):
        return
    with cast(Any, assoc.dul)._dbdsim_queue_lock:
        pending.append(pdus)
        assoc.dul.send_pdu(_Bulk())


def _write(assoc: Association, pdus: bytes) -> bool:
    """Write P-DATA-TF PDUs from this thread, as DT-1 would: only in Sta6 (data
    transfer) with nothing queued before them, between the DUL's actions.

    Queued, each message waited for the DUL thread to wake and take the GIL (on 2
    cores, often from a thread encoding the next object): 0.47 ms of a CT slice's
    1.7 ms in a C-MOVE. PS3.8's state machine sends a P-DATA request in Sta6 at once
    and stays there (DT-1), so writing it here is that same transition.
    """
    dul = cast(Any, assoc.dul)
    with dul._dbdsim_actions:
        if dul.state_machine.current_state != "Sta6" or dul.to_provider_queue.queue \
                or dul.socket is None:
            return False
        dul.socket.send(pdus)  # a failure puts Evt17 on the DUL's queue, as DT-1's does
        return True


def _find_pending_key(primitive: Any) -> tuple[object, ...] | None:
    """What a C-FIND pending response's command set depends on; None for any other
    message (their command sets vary with counts, comments, UIDs)."""
    if not isinstance(primitive, C_FIND) or primitive.Status not in (0xFF00, 0xFF01) \
            or primitive.ErrorComment is not None or primitive.OffendingElement is not None \
            or primitive.Identifier is None:
        return None
    return (primitive.MessageIDBeingRespondedTo, str(primitive.AffectedSOPClassUID),
            primitive.Status)


def send_msg(assoc: Association, primitive: Any, context_id: int) -> None:
    """pynetdicom's ``DIMSEServiceProvider.send_msg``, with the message's fragments
    queued as one request (see the module's docstring): a C-FIND answering 120 images
    sends 240 PDUs, each of which crossed the DUL's queue and loop on its own.

    The pending responses of one C-FIND share one command set: it is encoded once
    (pydicom's encoding was the largest cost of each response). Each response counts as
    activity for the network timeout, as the peer's own PDUs do.
    """
    if primitive.MessageIDBeingRespondedTo is not None:
        # pynetdicom's network timeout counts only what the peer sends, and a peer waiting
        # for a long retrieve or query sends nothing: a move lasting longer than the
        # timeout ended with the daemon aborting the association the peer then released.
        assoc.dul._idle_timer.restart()
    key = _find_pending_key(primitive)
    state = cast(Any, assoc).__dict__
    commands: dict[tuple[object, ...], bytes] = state.setdefault("_dbdsim_find_commands", {})
    rewrite: Callable[[bytes], bytes] | None = state.get("_dbdsim_rewrite")
    if rewrite is not None and isinstance(primitive, C_FIND) and primitive.Identifier:
        primitive.Identifier = BytesIO(rewrite(primitive.Identifier.getvalue()))
    if key is not None and key in commands:
        identifier = cast(BytesIO, primitive.Identifier).getvalue()
        _queue(assoc, frame(context_id, commands[key], identifier,
                            int(assoc.dimse.maximum_pdu_size or 0)))
        return
    # A plain response (a C-STORE's, a pending C-MOVE's) packed directly, unless someone
    # listens for the pynetdicom message object.
    packed = None if assoc.get_handlers(evt.EVT_DIMSE_SENT) \
        else dimse_commands.response(primitive)
    if packed is not None:
        _queue(assoc, frame(context_id, packed, b"", int(assoc.dimse.maximum_pdu_size or 0)))
        return
    if primitive.MessageIDBeingRespondedTo is None:
        message = _RQ_TO_MESSAGE[primitive.__class__]()
    else:
        message = _RSP_TO_MESSAGE[primitive.__class__]()
    message.primitive_to_message(primitive)
    message.context_id = context_id
    evt.trigger(assoc, evt.EVT_DIMSE_SENT, {"message": message})
    if key is not None:
        commands.clear()  # one query at a time: only its own command set is kept
        commands[key] = cast(bytes, encode(message.command_set, True, True))
    fragments = message.encode_msg(context_id, assoc.dimse.maximum_pdu_size)
    _queue(assoc, b"".join(P_DATA_TF(fragment).encode() for fragment in fragments))


def send_response(assoc: Association, context_id: int, command: bytes) -> None:
    """Send a response whose command set is already packed, and nothing else (no data
    set): as :func:`send_msg` sends one, without a primitive to pack it from."""
    assoc.dul._idle_timer.restart()  # as send_msg: a response is activity
    _queue(assoc, frame(context_id, command, b"", int(assoc.dimse.maximum_pdu_size or 0)))


def rewrite_identifiers(assoc: Association, rewrite: Callable[[bytes], bytes] | None,
                        ) -> None:
    """Pass the identifier of each C-FIND response sent on ``assoc`` through ``rewrite``
    (None: stop): a fault that corrupts matches on the wire, after pydicom encoded them."""
    cast(Any, assoc).__dict__["_dbdsim_rewrite"] = rewrite


def speed_up(assoc: Association) -> None:
    """Send every DIMSE message of ``assoc`` with :func:`send_msg` (before its first)."""
    _install(assoc)
    cast(Any, assoc.dimse).send_msg = functools.partial(send_msg, assoc)


@contextmanager
def sending(assoc: Association) -> Iterator[None]:
    """A run of :func:`send_c_store` calls on ``assoc``.

    pynetdicom pauses the association's own reactor around each send (or it may take
    the response off the queue), and that reactor looks at its pause only once a
    millisecond: ~0.5 ms lost per object. Here it is paused once for the whole run.
    This thread writes its requests itself (:func:`_write`) and the DUL wakes when a
    response arrives (:func:`client.tcp.wait_on_socket`). A DUL without that wait (no
    plain socket) sleeps 1 ms between looks: for the run it sleeps 50 µs instead.
    """
    _install(assoc)
    dul = cast(Any, assoc.dul)
    sleeps = not hasattr(dul, "dbdsim_wait")
    delay = dul._run_loop_delay
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused and assoc.is_established:
        threading.Event().wait(0.0001)
    if sleeps:
        dul._run_loop_delay = _FAST_POLL
    try:
        yield
    finally:
        if sleeps:
            dul._run_loop_delay = delay
        assoc._reactor_checkpoint.set()


def gone(assoc: Association) -> bool:
    """Whether ``assoc`` has ended, as far as its DUL knows.

    Within :func:`sending` the association's reactor is held, and it is that reactor
    which would notice a peer's A-ABORT or a closed connection and mark the association
    ended: until then ``is_established`` stays True, and each further C-STORE to a
    destination killed mid-move waited the whole DIMSE timeout (60 s) for its response.
    """
    return not assoc.is_established or bool(assoc.acse.is_aborted())


def _store_request(msg_id: int, body: Encoded, originator_aet: str | None,
                   originator_id: int | None) -> bytes:
    """A C-STORE request's command set by pynetdicom, for what dimse_commands leaves."""
    req = C_STORE()
    req.MessageID = msg_id
    req.AffectedSOPClassUID = body.sop_class
    req.AffectedSOPInstanceUID = body.sop_uid
    req.Priority = 2
    req.MoveOriginatorApplicationEntityTitle = originator_aet
    req.MoveOriginatorMessageID = originator_id
    req.DataSet = BytesIO(b"\0")  # the command then says a data set follows (0x0001)
    message = C_STORE_RQ()
    message.primitive_to_message(req)
    command = encode(message.command_set, True, True)
    if command is None:
        raise ValueError("pynetdicom cannot encode the C-STORE request")
    return command


@dataclass(frozen=True)
class Encoded:
    """A data set already encoded in ``transfer_syntax``, e.g. a stored file's bytes."""

    sop_class: str
    sop_uid: str
    transfer_syntax: str
    data: bytes


def encoded(assoc: Association, payload: Dataset | Encoded) -> tuple[int, Encoded]:
    """The accepted context for ``payload`` and its bytes in that context's syntax.

    Bytes are only sent in the syntax they are in (ValueError when no context has it:
    the caller encodes the data set instead); a data set is encoded for its context.
    """
    if isinstance(payload, Encoded):
        context = assoc._get_valid_context(payload.sop_class, payload.transfer_syntax, "scu",
                                           allow_conversion=False)
        return cast(int, context.context_id), payload
    sop_class, sop_uid = str(payload.SOPClassUID), str(payload.SOPInstanceUID)
    context = assoc._get_valid_context(sop_class, payload.file_meta.TransferSyntaxUID, "scu",
                                       allow_conversion=True)
    ts = context.transfer_syntax[0]
    data = encode(payload, ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated)
    if data is None:
        raise ValueError("failed to encode the data set")
    return cast(int, context.context_id), Encoded(sop_class, sop_uid, str(ts), data)


def send_c_store(assoc: Association, payload: Dataset | Encoded, *, msg_id: int,
                 originator_aet: str | None = None, originator_id: int | None = None,
                 ) -> Dataset:
    """``assoc.send_c_store(...)`` with one write per object, within :func:`sending`;
    the same statuses and failures (ValueError when no presentation context fits)."""
    start_c_store(assoc, payload, msg_id=msg_id, originator_aet=originator_aet,
                  originator_id=originator_id)
    return c_store_status(assoc)


def start_c_store(assoc: Association, payload: Dataset | Encoded, *, msg_id: int,
                  originator_aet: str | None = None, originator_id: int | None = None,
                  ) -> None:
    """:func:`send_c_store`'s request alone: the caller may work while the peer takes
    the object, then waits for its answer with :func:`c_store_status`."""
    if not assoc.is_established:
        raise RuntimeError("the association must be established to send a C-STORE")
    context_id, body = encoded(assoc, payload)
    command = dimse_commands.store_request(msg_id, body.sop_class, body.sop_uid, 2,
                                           originator_aet, originator_id) \
        or _store_request(msg_id, body, originator_aet, originator_id)
    _queue(assoc, frame(context_id, command, body.data, int(assoc.dimse.maximum_pdu_size or 0)))


def c_store_status(assoc: Association) -> Dataset:
    """The status of the C-STORE :func:`start_c_store` sent (an empty Dataset when no
    response came within the DIMSE timeout: the association is then aborted)."""
    _cx, rsp = assoc.dimse.get_msg(block=True)
    if rsp is None:
        assoc._handle_no_response()
        return Dataset()
    status: Dataset = assoc._check_received_status(rsp)
    return status
