"""Plain C-STORE requests read off the socket and served without pynetdicom's DIMSE layer.

Even with its reads batched (:mod:`client.pdata_batches`) and its stores served on the
DUL thread (:mod:`emulators.inline_store`), pynetdicom spent about 1.2 ms of Python on
each 512x512 CT slice a File Daemon received: a PDU object per 16 KB fragment, the
state machine's action and event triggers per PDU, the command set decoded by pydicom,
a primitive built and its UIDs validated, the data set decoded again for four values.
storescp takes 0.9 ms a slice in all, and the sender waits for each response.

Here, in data transfer, the DUL's read takes the P-DATA-TF PDUs of a message itself:
it parses their PDV items, gathers the command and the data set, and when the command
is a plain C-STORE request (:func:`client.dimse_commands.parse_store_request`) on a
storage context for its class, gives the data set to the daemon's :class:`Sink` as it
arrives (whenever the socket has nothing more for the moment: the File Daemon writes
its file while the sender is still sending), serves the request on the DUL thread once
the data set is whole, and writes the response.
Anything else is handed to pynetdicom as if it had read it (:meth:`_Lane.hand_over`):
what the lane assembled so far as one P-DATA-TF (pynetdicom's decoder sees the same
fragments' bytes in the same order), then every further PDU as pynetdicom's own read
would queue it. So the lane never answers what it does not understand: a request of
another kind, on a context that does not fit it, with a command set out of the
ordinary, fragments out of order, a data set the daemon's ``prepare`` finds unusual
(cut short, deflated...), a PDU of another type, a reactor still serving a request,
or anyone listening to the events the lane would not trigger (PDU and DIMSE events
beyond the daemons' own, e.g. pynetdicom's debug logging).

Reads keep :func:`client.tcp.bound_reads`' bounds: a PDU longer than this end accepts
ends the association (Evt17), and so does one not whole within the network timeout of
its first byte. Between PDUs of a message the lane waits on the socket at most
:data:`_WAIT`, then gives the DUL its turn (a local abort, a timer) and takes the
message up again at the next read.
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol, cast

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.presentation import PresentationContext
from pynetdicom.service_class import StorageServiceClass

from client.dimse_commands import StoreRequest, parse_store_request, store_response
from client.tcp import longest_pdu, plain_socket

from . import bulk_send
from .inline_store import Turns
from .pynetdicom_guards import request_served

_LOG = logging.getLogger(__name__)
Result = int | Dataset


class Sink(Protocol):
    """Where a plain request's data set goes as it arrives (a File Daemon's file)."""

    def feed(self, fragment: memoryview) -> None:
        """The next bytes of the data set (as they came, checked or not)."""

    def finish(self, body: bytearray) -> Callable[[], Result] | None:
        """The whole data set: the function that serves the request (returning its
        status), or None when the data set is not plain (pynetdicom's path serves it)."""

    def abandon(self) -> None:
        """The request goes to pynetdicom, or nowhere: keep nothing of it."""


# Given a plain request on its context, before its data set: where that goes.
Begin = Callable[[Association, PresentationContext, StoreRequest], Sink]

_P_DATA_TF = 0x04
_PDU_TYPES = frozenset(range(0x01, 0x08))  # those pynetdicom reads (others: Evt19)
_PDU = struct.Struct(">BxI")  # type, reserved, length
_PDV = struct.Struct(">IBB")  # item length, presentation context ID, message control header
_COMMAND, _LAST = 0x01, 0x02
_WAIT = 0.01  # seconds the lane waits for more of a message before the DUL's turn
_BUFFER = 1 << 20  # bytes read at most per system call
_TAKEN, _REFUSED, _TAKEN_LAST = 0, 1, 2  # what became of a fragment (_Lane._fragment)
_PROCESSING_FAILURE = 0xC211  # pynetdicom's status for a handler that raised
# Events the lane does not trigger: it serves nothing while anyone listens to them.
_UNHEARD = (evt.EVT_DATA_RECV, evt.EVT_PDU_RECV, evt.EVT_DIMSE_SENT)


class _Deviation(Exception):
    """What arrived is not what the lane serves: hand it to pynetdicom."""


class _Lane:
    """One association's lane (see the module doc)."""

    def __init__(self, assoc: Association, sock: socket.socket, limit: float,
                 inner: Callable[[], None], turns: Turns, begin: Begin,
                 heard: Callable[[], bool]) -> None:
        self.assoc, self.sock, self.limit, self.inner = assoc, sock, limit, inner
        self.turns, self.begin, self.heard = turns, begin, heard
        self.dul: Any = assoc.dul
        self.buffer = bytearray(_BUFFER)
        self.view = memoryview(self.buffer)
        self.low = self.high = 0  # unparsed bytes: buffer[low:high]
        self.pdu_started = 0.0  # when the first byte of the unparsed PDU came
        self.owning = False  # a message is being taken by the lane
        self.longest: int | None = None  # the longest PDU body accepted (None: any)
        self._new_message()

    def _new_message(self) -> None:
        self.started = False  # a fragment of it has come
        self.context_id = 0
        self.command = bytearray()
        self.command_done = False
        self.request: StoreRequest | None = None
        self.body = bytearray()
        self.body_done = False
        self.sink: Sink | None = None
        self.fed = 0  # bytes of the body given to the sink
        self.extra: list[tuple[int, bytes]] = []  # PDVs after a deviation, as they came

    # -- the DUL's read ----------------------------------------------------------------
    def read(self) -> None:
        """``DULServiceProvider._read_pdu_data``, for the lane's messages."""
        if not self.owning:
            if not self._may_start():
                self.inner()
                return
            self.owning = True
        self.longest = longest_pdu(self.assoc)
        try:
            self._pump()
        except _Deviation:
            self.hand_over()

    def _may_start(self) -> bool:
        dul = self.dul
        # Established, not only in Sta6: the acceptor's thread marks the association
        # established just after its A-ASSOCIATE-AC goes out, and a peer that sends at once
        # can be read before that; pynetdicom's services answer nothing until then.
        if dul.state_machine.current_state != "Sta6" or not self.assoc.is_established \
                or self.assoc.dimse.message is not None or not dul.event_queue.empty() \
                or not self.heard():
            return False
        try:
            head = self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except OSError:  # nothing waiting, or closed: pynetdicom's read says which
            return False
        return head == bytes([_P_DATA_TF])

    def _pump(self) -> None:
        """Take what has arrived; serve each message it completes; return when the
        socket has nothing more for :data:`_WAIT` (the message is taken up again at
        the next read) or the lane has no message left."""
        while True:
            while self._take_pdu():
                if self.body_done:
                    self._feed()
                    if not self._serve():
                        raise _Deviation
                    self._new_message()
                    if self.low == self.high:
                        self.owning = False
                        return
            if self.dul.state_machine.current_state != "Sta6":
                raise _Deviation
            if not self._receive(_WAIT):
                return

    def _receive(self, wait: float) -> bool:
        """Read what has arrived, waiting up to ``wait`` s; False when nothing came.
        A peer that closed, or a PDU not whole within the network timeout: pynetdicom's
        read finishes the story (:meth:`hand_over`)."""
        if self.low == self.high:
            self.low = self.high = 0
        elif self.high == len(self.buffer):  # room for more: the unparsed tail to the front
            self._room(self.high - self.low + 1)
        try:
            count = self.sock.recv_into(self.view[self.high:], 0, socket.MSG_DONTWAIT)
        except BlockingIOError:
            if self.low != self.high and time.monotonic() - self.pdu_started > self.limit:
                raise _Deviation from None
            self._feed()  # while the peer is still sending
            if not select.select([self.sock], [], [], wait)[0]:
                return False
            return self._receive(0)
        except OSError:
            raise _Deviation from None
        if not count:
            raise _Deviation
        if self.low == self.high:
            self.pdu_started = time.monotonic()
        self.high += count
        return True

    def _take_pdu(self) -> bool:
        """Parse one whole PDU from the buffer into the message; False if none is whole."""
        low, high = self.low, self.high
        if high - low < _PDU.size:
            return False
        kind, length = _PDU.unpack_from(self.buffer, low)
        if kind != _P_DATA_TF or (self.longest is not None and length > self.longest):
            raise _Deviation
        end = low + _PDU.size + length
        if end > high:
            return False
        first = low + _PDU.size
        item_length, context_id, control = _PDV.unpack_from(self.buffer, first) \
            if length >= _PDV.size else (0, 0, 0)
        if item_length + 4 == length and item_length >= 2:
            items = [(context_id, control, first + _PDV.size, end)]  # one PDV: the usual
        else:
            items = list(_pdv_items(self.view, first, end))
            if not items:
                raise _Deviation
        self.low = end
        self.pdu_started = time.monotonic()
        for position, (context_id, control, start, stop) in enumerate(items):
            taken = self._fragment(context_id, control, start, stop)
            if taken != _TAKEN:
                rest = items[position + 1:] if taken == _TAKEN_LAST else items[position:]
                self.extra = [(cid, bytes([ctl]) + bytes(self.view[a:b]))
                              for cid, ctl, a, b in rest]
                raise _Deviation
        return True

    def _fragment(self, context_id: int, control: int, start: int, stop: int) -> int:
        """Add one PDV to the message if it is the fragment a plain C-STORE request has
        next (PS3.8 E: command fragments, then data set fragments, all on one context,
        nothing after the data set's last): _TAKEN; _REFUSED if it is not; _TAKEN_LAST
        if it completes a command the lane does not serve (the message is pynetdicom's
        from there, this fragment included in what the lane took)."""
        if not self.started:
            self.started, self.context_id = True, context_id
        if context_id != self.context_id or self.body_done:
            return _REFUSED
        if not self.command_done:
            if not control & _COMMAND:
                return _REFUSED
            self.command += self.view[start:stop]
            if control & _LAST:
                self.command_done = True
                self.request = parse_store_request(bytes(self.command))
                if self.request is None or not self._fits(self.request) or not self.heard():
                    return _TAKEN_LAST
                self.sink = self.begin(self.assoc, self.assoc._accepted_cx[self.context_id],
                                       self.request)
            return _TAKEN
        if control & _COMMAND:
            return _REFUSED
        self.body += self.view[start:stop]
        if control & _LAST:
            self.body_done = True
        return _TAKEN

    def _feed(self) -> None:
        """Give the sink what came since it was last fed."""
        if self.sink is not None and self.fed < len(self.body):
            with memoryview(self.body) as whole, whole[self.fed:] as fresh:
                self.sink.feed(fresh)
            self.fed = len(self.body)

    def _fits(self, request: StoreRequest) -> bool:
        """Whether the request is one the lane may serve on its context."""
        context = self.assoc._accepted_cx.get(self.context_id)
        return context is not None and str(context.abstract_syntax) == request.sop_class \
            and request_served(request.sop_class) is C_STORE

    # -- serving -----------------------------------------------------------------------
    def _serve(self) -> bool:
        """Serve the message; False if it is not for the lane after all."""
        request = cast(StoreRequest, self.request)
        served = cast(Sink, self.sink).finish(self.body) \
            if self.turns.idle() and self.heard() else None
        if served is None:
            return False
        self.turns.busy = True  # the reactor takes nothing meanwhile (responses in order)
        try:
            result: Result = served()
        except Exception:  # the daemon's handler failed: pynetdicom's answer to that
            _LOG.exception("Exception in handler bound to 'evt.EVT_C_STORE'")
            cast(Sink, self.sink).abandon()
            result = _PROCESSING_FAILURE
        finally:
            self.turns.busy = False
        if self.assoc.is_established:
            self._respond(request, result)
        return True

    def _respond(self, request: StoreRequest, result: Result) -> None:
        command = store_response(request.message_id, request.sop_class, request.sop_uid,
                                 result) if isinstance(result, int) else None
        if command is not None:
            bulk_send.send_response(self.assoc, self.context_id, command)
            return
        rsp = C_STORE()
        rsp.MessageIDBeingRespondedTo = request.message_id
        rsp.AffectedSOPInstanceUID = request.sop_uid
        rsp.AffectedSOPClassUID = request.sop_class
        rsp = StorageServiceClass(self.assoc).validate_status(result, rsp)
        self.assoc.dimse.send_msg(rsp, self.context_id)

    # -- handing over --------------------------------------------------------------------
    def hand_over(self) -> None:
        """Queue what the lane took as pynetdicom's read would have: the message so far
        as one P-DATA-TF, then each further PDU whole (read to its end within the network
        timeout, as pynetdicom reads), or the event its read would have ended in."""
        self.owning = False
        if self.sink is not None:
            self.sink.abandon()
        pdvs: list[tuple[int, bytes]] = []
        if self.command:
            control = _COMMAND | (_LAST if self.command_done else 0)
            pdvs.append((self.context_id, bytes([control]) + bytes(self.command)))
        if self.body or self.body_done:
            control = _LAST if self.body_done else 0
            pdvs.append((self.context_id, bytes([control]) + bytes(self.body)))
        pdvs += self.extra
        self._new_message()
        if pdvs:
            primitive = P_DATA()
            primitive.presentation_data_value_list = cast(Any, [[cid, data] for cid, data in pdvs])
            self._queue(P_DATA_TF(primitive), "Evt10")
        while self.low < self.high:
            if not self._whole_pdu():
                return
            _kind, length = _PDU.unpack_from(self.buffer, self.low)
            raw = bytearray(self.view[self.low:self.low + _PDU.size + length])
            self.low += len(raw)
            try:
                pdu, event = self.dul._decode_pdu(raw)
            except Exception:  # the peer's bytes, as pynetdicom's read answers them
                self.dul.event_queue.put("Evt19")
                continue
            self._queue(pdu, event)
        self.low = self.high = 0

    def _whole_pdu(self) -> bool:
        """Read the rest of the buffered PDU; False (and its event queued) when it can
        never be whole: an unknown type (Evt19), too long, cut, or late (Evt17)."""
        deadline = self.pdu_started + self.limit
        try:
            self._fill(_PDU.size, deadline)
            kind, length = _PDU.unpack_from(self.buffer, self.low)
            if kind not in _PDU_TYPES:
                self.dul.event_queue.put("Evt19")
                self.low = self.high = 0
                return False
            longest = longest_pdu(self.assoc)
            if longest is not None and length > longest:
                raise ConnectionError("a PDU longer than this end accepts")
            self._fill(_PDU.size + length, deadline)
        except OSError:  # closed, or the network timeout: as pynetdicom's bounded read
            self.dul.event_queue.put("Evt17")
            self.low = self.high = 0
            return False
        return True

    def _fill(self, size: int, deadline: float) -> None:
        """Read until ``size`` bytes are buffered past ``low``."""
        if len(self.buffer) - self.low < size:
            self._room(size)
        while self.high - self.low < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.sock], [], [], remaining)[0]:
                raise TimeoutError("a PDU not whole within the network timeout")
            count = self.sock.recv_into(self.view[self.high:], 0, socket.MSG_DONTWAIT)
            if not count:
                raise ConnectionError("closed in the middle of a PDU")
            self.high += count

    def _room(self, size: int) -> None:
        """Move the unparsed bytes to the buffer's front, and grow it to hold ``size``."""
        kept = self.high - self.low
        self.buffer[:kept] = self.buffer[self.low:self.high]
        self.low, self.high = 0, kept
        if len(self.buffer) < size:
            self.view.release()
            self.buffer.extend(bytes(max(size, 2 * len(self.buffer)) - len(self.buffer)))
            self.view = memoryview(self.buffer)

    def _queue(self, pdu: Any, event: str) -> None:
        self.dul.event_queue.put(event)
        self.dul._recv_pdu.put(pdu)


def _pdv_items(view: memoryview, start: int, end: int,
               ) -> Iterable[tuple[int, int, int, int]]:
    """The PDV items of a P-DATA-TF's variable field: context ID, control header, and
    where the fragment lies; _Deviation if they do not fill it exactly (pynetdicom then
    finds the PDU invalid itself)."""
    pos = start
    while pos < end:
        if pos + _PDV.size > end:
            raise _Deviation
        length, context_id, control = _PDV.unpack_from(view, pos)
        if length < 2 or pos + 4 + length > end:
            raise _Deviation
        yield context_id, control, pos + _PDV.size, pos + 4 + length
        pos += 4 + length


def install(assoc: Association, turns: Turns, begin: Begin,
            heard: Callable[[], bool]) -> None:
    """Give ``assoc``'s DUL the lane (after :func:`client.tcp.bound_reads` and
    :func:`client.pdata_batches.batch_pdata_reads`, which it falls back on).
    ``heard()``: whether the daemon's own handlers are all that listen to what the lane
    would bypass (see :data:`_UNHEARD` too)."""
    dul: Any = assoc.dul
    sock = plain_socket(dul.socket)
    limit = assoc.network_timeout
    if sock is None or limit is None:
        return

    def unheard() -> bool:
        return not any(assoc.get_handlers(event) for event in _UNHEARD) and heard()

    lane = _Lane(assoc, sock, float(limit), dul._read_pdu_data, turns, begin, unheard)
    dul._read_pdu_data = lane.read
