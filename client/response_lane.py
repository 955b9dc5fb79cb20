"""Plain DIMSE-C responses a requestor receives, decoded without pydicom.

pynetdicom's DUL thread turns every message it receives into a primitive in action DT-2:
``DIMSEMessage.decode_msg`` decodes the command set with pydicom, ``message_to_primitive``
sets each value through setters that validate UIDs with regular expressions, and
EVT_DIMSE_RECV is triggered. A collect receives that for each C-FIND match (120 for a CT
series), each pending C-MOVE response (dcmqrscp sends one per sub-operation) and, on
the DB Daemon's sub-associations, each C-STORE response. Measured per message
(``receive_primitive`` then ``msg_queue.get``, best of 5 x 5,000, on the 2-core machine):
pynetdicom 120-123 µs a pending C-MOVE response, 106 µs a C-STORE response, 87 µs a
pending C-FIND response with its identifier; here 9, 8 and 7.5 µs (5 of them parsing
the command set, 1-1.5 building the primitive; the identifier in the next P-DATA: the
same).

Here, on a requestor's association, ``receive_primitive`` first looks at the P-DATA:
when it holds a plain response's command whole (its fragments, up to the last, on one
presentation context, nothing partial pending in ``dimse.message``) and either no data
set or the whole data set after it, the primitive is built from the raw command set
(:func:`parse_response`: C-ECHO, C-STORE, C-FIND, C-GET and C-MOVE responses with only
the elements PS3.7 defines for them, each once, in tag order, of their VR's length,
a right group length if any, conformant UIDs, a printable error comment) exactly as
pynetdicom builds it (:func:`primitive`: same class, values, types, an Identifier
BytesIO written to its end, empty when no data set came) and queued as pynetdicom
queues it. A plain command whose data set follows in the next P-DATA (the usual C-FIND
match: :mod:`client.pdata_batches` ends a batch at a command's last fragment) is held
until then; if the next P-DATA is not that whole data set, both go to pynetdicom in
turn, as they came. Everything else goes to pynetdicom's own ``receive_primitive``
untouched: requests, N-services, C-CANCEL, odd or unknown elements, values pynetdicom
would reject (it then ends the association, Evt19) or decode in its own way, several
messages in one P-DATA, a message in pieces, and every message while anyone listens to
EVT_DIMSE_RECV (the lane does not trigger it: pynetdicom's debug log, for one; rtmove
counts C-FIND matches as they are queued instead) or a UID validator other than
pynetdicom's is configured.

A pending C-MOVE or C-GET response (no identifier) that comes within 20 ms of the last
one queued for the same request is dropped: it says only how far the operation got,
which the next one, or the final response, says again. Each one queued cost rtmove
about 100 µs of CPU (the requesting thread woken, pynetdicom's status data set, the
progress shown), while the move it reports on needed the cores: 120 of them a CT
series, from dcmqrscp. Progress then shows 50 times a second at most, and a move that
stops progressing while its pending responses still come is still seen as stuck.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pynetdicom import _config, evt
from pynetdicom._validators import validate_ui
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_GET, C_MOVE, C_STORE
from pynetdicom.events import Event
from pynetdicom.pdu_primitives import P_DATA

from .dimse_commands import plain_uid

_HEADER = struct.Struct("<HHI")  # group, element, value length (Implicit VR LE)
_US = struct.Struct("<H")
_UL = struct.Struct("<I")
_COMMAND, _LAST = 0x01, 0x02  # message control header bits (PS3.8 E.2)
_PENDING = 0xFF00
_PENDING_EVERY = 0.02  # seconds: one pending C-MOVE/C-GET response queued at most per
_NO_DATA_SET = 0x0101  # Command Data Set Type: no data set; any other value: one follows
_LO = 64  # longest Error Comment (PS3.5 6.2)
_GROUP_LENGTH, _SOP_CLASS, _FIELD, _RESPONDED_TO = 0x0000, 0x0002, 0x0100, 0x0120
_DATA_SET_TYPE, _STATUS, _OFFENDING, _COMMENT = 0x0800, 0x0900, 0x0901, 0x0902
_SOP_INSTANCE = 0x1000
_COUNTS = (0x1020, 0x1021, 0x1022, 0x1023)  # remaining, completed, failed, warning
_REQUIRED = frozenset({_FIELD, _RESPONDED_TO, _DATA_SET_TYPE, _STATUS})
_COMMON = _REQUIRED | {_GROUP_LENGTH, _SOP_CLASS}
_NUMBERS = (_FIELD, _RESPONDED_TO, _DATA_SET_TYPE, _STATUS, *_COUNTS)  # the US elements

Primitive = C_ECHO | C_STORE | C_FIND | C_GET | C_MOVE


@dataclass(frozen=True)
class _Kind:
    """A response the lane takes: its primitive, its elements (PS3.7 9.3, with the status
    related fields of Annex C), whether an Identifier may follow."""

    primitive: type[Primitive]
    elements: frozenset[int]
    identifier: bool


_KINDS = {
    0x8030: _Kind(C_ECHO, _COMMON | {_COMMENT}, False),
    0x8001: _Kind(C_STORE, _COMMON | {_OFFENDING, _COMMENT, _SOP_INSTANCE}, False),
    0x8020: _Kind(C_FIND, _COMMON | {_OFFENDING, _COMMENT}, True),
    0x8010: _Kind(C_GET, _COMMON | {_OFFENDING, _COMMENT, *_COUNTS}, True),
    0x8021: _Kind(C_MOVE, _COMMON | {_OFFENDING, _COMMENT, *_COUNTS}, True),
}
_ANY = frozenset().union(*(kind.elements for kind in _KINDS.values()))


@dataclass(slots=True)
class Response:
    """A plain response's command set, decoded as pydicom and pynetdicom decode it."""

    kind: _Kind
    message_id: int
    status: int
    data_set: bool  # a data set (Identifier) follows
    sop_class: str | None = None
    sop_uid: str | None = None
    comment: str | None = None
    offending: BaseTag | MultiValue[BaseTag] | None = None
    counts: tuple[int | None, int | None, int | None, int | None] = (None, None, None, None)


def parse_response(command: bytes) -> Response | None:
    """The C-ECHO, C-STORE, C-FIND, C-GET or C-MOVE response ``command`` (a command set
    as received) is, when it is plain: only elements PS3.7 defines for it, each once, in
    tag order, of the right lengths, a group length (if any) that is right, conformant
    UIDs, a printable error comment; None for anything else."""
    values: dict[int, bytes] = {}
    pos, end, last = 0, len(command), -1
    unpack = _HEADER.unpack_from
    while pos < end:
        if pos + 8 > end:
            return None
        group, element, length = unpack(command, pos)
        pos += 8
        if group or element <= last or element not in _ANY or pos + length > end:
            return None
        values[element] = command[pos:pos + length]
        pos += length
        last = element
    if not values.keys() >= _REQUIRED:
        return None
    numbers: dict[int, int] = {}
    for element in _NUMBERS:
        value = values.get(element)
        if value is not None:
            if len(value) != 2:
                return None
            numbers[element] = _US.unpack(value)[0]
    kind = _KINDS.get(numbers[_FIELD])
    if kind is None or not values.keys() <= kind.elements:
        return None
    group_length = values.get(_GROUP_LENGTH)
    if group_length is not None and (len(group_length) != 4
                                     or _UL.unpack(group_length)[0] != end - 12):
        return None
    data_set = numbers[_DATA_SET_TYPE] != _NO_DATA_SET
    if data_set and not kind.identifier:
        return None
    sop_class = sop_uid = comment = offending = None
    if _SOP_CLASS in values and (sop_class := plain_uid(values[_SOP_CLASS])) is None:
        return None
    if _SOP_INSTANCE in values and (sop_uid := plain_uid(values[_SOP_INSTANCE])) is None:
        return None
    if _COMMENT in values and (comment := _comment(values[_COMMENT])) is None:
        return None
    if _OFFENDING in values and (offending := _tags(values[_OFFENDING])) is None:
        return None
    remaining, completed, failed, warning = (numbers.get(element) for element in _COUNTS)
    return Response(kind, numbers[_RESPONDED_TO], numbers[_STATUS], data_set, sop_class,
                    sop_uid, comment, offending, (remaining, completed, failed, warning))


def _comment(value: bytes) -> str | None:
    """An Error Comment (LO) as pydicom decodes it, if plain: printable ASCII with no
    backslash (a second value) and no outer spaces, one space of padding at most."""
    text = value[:-1] if value.endswith(b" ") else value
    if not 0 < len(text) <= _LO or not text.isascii() or b"\\" in text \
            or text.startswith(b" ") or text.endswith(b" "):
        return None
    decoded = text.decode("ascii")
    return decoded if decoded.isprintable() else None


def _tags(value: bytes) -> BaseTag | MultiValue[BaseTag] | None:
    """An Offending Element (AT, VM 1-n) as pydicom decodes it."""
    if not value or len(value) % 4:
        return None
    tags = [BaseTag((group << 16) | element)
            for group, element in struct.iter_unpack("<HH", value)]
    return tags[0] if len(tags) == 1 else MultiValue(BaseTag, tags)


def primitive(response: Response, context_id: int, data_set: bytes | None) -> Primitive:
    """The primitive pynetdicom's ``message_to_primitive`` makes of the message."""
    made: Any = response.kind.primitive()
    made.MessageIDBeingRespondedTo = response.message_id
    made.Status = response.status
    # pynetdicom's setters validate each UID with two regular expressions (and UID()
    # once more), 5 us a UID; a conformant UID passes them all, and only pynetdicom's
    # own validator is in place when the lane takes a message (_Lane._command).
    if response.sop_class is not None:
        made._affected_sop_class_uid = str.__new__(UID, response.sop_class)
    if response.sop_uid is not None:
        made._affected_sop_instance_uid = str.__new__(UID, response.sop_uid)
    if response.offending is not None:
        made.OffendingElement = response.offending
    if response.comment is not None:
        made.ErrorComment = response.comment
    if response.kind.identifier:
        remaining, completed, failed, warning = response.counts
        if remaining is not None:
            made.NumberOfRemainingSuboperations = remaining
        if completed is not None:
            made.NumberOfCompletedSuboperations = completed
        if failed is not None:
            made.NumberOfFailedSuboperations = failed
        if warning is not None:
            made.NumberOfWarningSuboperations = warning
        identifier = BytesIO()
        if data_set:
            identifier.write(data_set)
        made.Identifier = identifier
    made._context_id = context_id
    made._dataset_path = None
    made._dataset_file = None
    result: Primitive = made
    return result


def take_plain_responses(event: Event) -> None:
    """EVT_CONN_OPEN handler: the lane on a requestor's association (module doc)."""
    assoc = event.assoc
    if not assoc.is_requestor:
        return
    _Lane(assoc)


_Held = tuple[P_DATA, int, Response]  # a command's P-DATA, its context, its decoding


def _fragments(pdvs: list[Any], start: int, context_id: int, kind: int,
               ) -> tuple[bytes, int] | None:
    """The command (``kind`` _COMMAND) or data set (0) whose fragments are ``pdvs[start:]``
    up to its last, all on ``context_id``, and where they end; None if they are not."""
    fragments = []
    for position in range(start, len(pdvs)):
        cid, data = pdvs[position]
        if cid != context_id or not data or data[0] & ~_LAST != kind:
            return None
        fragments.append(data[1:])
        if data[0] & _LAST:
            return (fragments[0] if len(fragments) == 1 else b"".join(fragments)), position + 1
    return None


class _Lane:
    """One association's lane."""

    def __init__(self, assoc: Any) -> None:
        self.assoc = assoc
        self.dimse: Any = assoc.dimse
        self.original: Callable[[P_DATA], None] = self.dimse.receive_primitive
        self.queue = self.dimse.msg_queue
        # A plain command whose data set is still to come: its P-DATA, its decoding.
        self.held: _Held | None = None
        self.last_pending = (-1, 0.0)  # the last pending C-MOVE/C-GET queued: message, when
        self.dimse.receive_primitive = self.receive

    def receive(self, pdata: P_DATA) -> None:
        """``DIMSEServiceProvider.receive_primitive`` for the lane's messages."""
        held = self.held
        if held is not None:
            self.held = None
            if not self._data_set(pdata.presentation_data_value_list, 0, held):
                self.original(held[0])
                self.original(pdata)
            return
        if self.dimse.message is not None or self._closed() or not self._command(pdata):
            self.original(pdata)

    def _command(self, pdata: P_DATA) -> bool:
        """Take a P-DATA that starts with a plain response's whole command; False: not."""
        pdvs = pdata.presentation_data_value_list
        if not pdvs:
            return False
        context_id = pdvs[0][0]
        command = _fragments(pdvs, 0, context_id, _COMMAND)
        if command is None:
            return False
        body, after = command
        response = parse_response(body)
        if response is None:
            return False
        held = (pdata, context_id, response)
        if not response.data_set:
            if after != len(pdvs):
                return False  # another message follows: pynetdicom's decoder drops it
            if not self._says_again(response):
                self.queue.put((context_id, primitive(response, context_id, None)))
        elif after == len(pdvs):
            self.held = held  # the data set comes in the next P-DATA, or never
        else:
            return self._data_set(pdvs, after, held)
        return True

    def _says_again(self, response: Response) -> bool:
        """Whether ``response`` is a pending C-MOVE/C-GET response to drop (module doc)."""
        if response.status != _PENDING or response.kind.primitive not in (C_MOVE, C_GET):
            return False
        now = time.monotonic()
        message, when = self.last_pending
        if message == response.message_id and now - when < _PENDING_EVERY:
            return True
        self.last_pending = (response.message_id, now)
        return False

    def _data_set(self, pdvs: list[Any], start: int, held: _Held) -> bool:
        """Take the data set of a held command, whole in ``pdvs[start:]``; False: not."""
        _, context_id, response = held
        data_set = _fragments(pdvs, start, context_id, 0)
        if data_set is None or data_set[1] != len(pdvs) or self._closed():
            return False
        self.queue.put((context_id, primitive(response, context_id, data_set[0])))
        return True

    def _closed(self) -> bool:
        """Whether pynetdicom's path must decode messages now: someone listens to
        EVT_DIMSE_RECV (the lane does not trigger it), or a UID validator of the user's is
        in place (the lane keeps to pynetdicom's own, which conformant UIDs pass)."""
        return bool(self.assoc.get_handlers(evt.EVT_DIMSE_RECV)) \
            or _config.VALIDATORS["UI"] is not validate_ui
