"""The command sets of the messages sent once per object, packed directly.

A C-MOVE sends, per object, a C-STORE request and a pending C-MOVE response; a File
Daemon sends a C-STORE response. pynetdicom builds each as a pydicom Dataset and
encodes it with pydicom's generic writer (0.2-0.3 ms each, a quarter of the Python
time per CT slice moved). Their layout is fixed (PS3.7 E.1: group 0000, Implicit VR
Little Endian, elements in tag order, a group length first), so they are packed here.

Anything beyond the plain case (an offending element, an identifier, a value that is
not printable ASCII, is empty, has outer spaces or a backslash, or is too long for its
VR) returns None: the caller then lets
pynetdicom encode the message as before. The tests check byte equality with it.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Any

from pynetdicom.dimse_primitives import C_ECHO, C_GET, C_MOVE, C_STORE

_HEADER = struct.Struct("<HHI")  # group, element, value length (Implicit VR)
_US = struct.Struct("<H")
_NO_DATA_SET, _DATA_SET = 0x0101, 0x0001  # Command Data Set Type (pynetdicom's values)
_FIELD = {C_STORE: 0x8001, C_ECHO: 0x8030, C_MOVE: 0x8021, C_GET: 0x8010}  # responses
_COUNTS = ((0x1020, "NumberOfRemainingSuboperations"),
           (0x1021, "NumberOfCompletedSuboperations"),
           (0x1022, "NumberOfFailedSuboperations"),
           (0x1023, "NumberOfWarningSuboperations"))
_UI, _AE, _LO = 64, 16, 64  # maximum value lengths (PS3.5 6.2)

_Element = tuple[int, bytes]


def _text(element: int, value: object, longest: int, pad: bytes) -> _Element | None:
    text = str(value)
    # pynetdicom strips outer spaces and leaves out empty or multi-valued ones.
    if not text or text != text.strip() or "\\" in text or not text.isascii() \
            or not text.isprintable() or len(text) > longest:
        return None
    data = text.encode("ascii")
    return element, data + pad if len(data) % 2 else data


def _us(element: int, value: int) -> _Element:
    return element, _US.pack(value)


def _pack(elements: list[_Element | None]) -> bytes | None:
    if any(item is None for item in elements):
        return None
    body = b"".join(_HEADER.pack(0x0000, element, len(data)) + data
                    for element, data in (item for item in elements if item is not None))
    return _HEADER.pack(0x0000, 0x0000, 4) + struct.pack("<I", len(body)) + body


def store_request(message_id: int, sop_class: str, sop_uid: str, priority: int,
                  originator_ae: str | None, originator_id: int | None) -> bytes | None:
    """A C-STORE request's command set (a data set follows)."""
    elements = [_text(0x0002, sop_class, _UI, b"\x00"), _us(0x0100, 0x0001),
                _us(0x0110, message_id), _us(0x0700, priority), _us(0x0800, _DATA_SET),
                _text(0x1000, sop_uid, _UI, b"\x00")]
    if originator_ae is not None:
        elements.append(_text(0x1030, originator_ae, _AE, b" "))
    if originator_id is not None:
        elements.append(_us(0x1031, originator_id))
    return _pack(elements)


def response(primitive: Any) -> bytes | None:
    """The command set of a C-STORE, C-ECHO, C-MOVE or C-GET response without a data
    set, error comment at most; None for anything else."""
    field = _FIELD.get(type(primitive))
    if field is None or primitive.MessageIDBeingRespondedTo is None \
            or primitive.Status is None \
            or getattr(primitive, "OffendingElement", None) is not None \
            or getattr(primitive, "Identifier", None) is not None:
        return None
    elements: list[_Element | None] = []
    if primitive.AffectedSOPClassUID is not None:
        elements.append(_text(0x0002, primitive.AffectedSOPClassUID, _UI, b"\x00"))
    elements += [_us(0x0100, field), _us(0x0120, primitive.MessageIDBeingRespondedTo),
                 _us(0x0800, _NO_DATA_SET), _us(0x0900, primitive.Status)]
    if primitive.ErrorComment is not None:
        elements.append(_text(0x0902, primitive.ErrorComment, _LO, b" "))
    if isinstance(primitive, C_STORE) and primitive.AffectedSOPInstanceUID is not None:
        elements.append(_text(0x1000, primitive.AffectedSOPInstanceUID, _UI, b"\x00"))
    if isinstance(primitive, C_MOVE | C_GET):
        elements += [_us(element, value) for element, name in _COUNTS
                     if (value := getattr(primitive, name)) is not None]
    return _pack(elements)


def store_response(message_id: int, sop_class: str, sop_uid: str, status: int,
                   comment: str | None = None) -> bytes | None:
    """A C-STORE response's command set, as :func:`response` packs it from a primitive
    (without building one: a File Daemon answers every object)."""
    elements = [_text(0x0002, sop_class, _UI, b"\x00"), _us(0x0100, _FIELD[C_STORE]),
                _us(0x0120, message_id), _us(0x0800, _NO_DATA_SET), _us(0x0900, status)]
    if comment is not None:
        elements.append(_text(0x0902, comment, _LO, b" "))
    elements.append(_text(0x1000, sop_uid, _UI, b"\x00"))
    return _pack(elements)


@dataclass(frozen=True)
class StoreRequest:
    """The command of a plain C-STORE request (a data set follows)."""

    message_id: int
    sop_class: str
    sop_uid: str
    priority: int
    originator_ae: str | None
    originator_id: int | None


_STORE_RQ_ELEMENTS = (0x0000, 0x0002, 0x0100, 0x0110, 0x0700, 0x0800, 0x1000, 0x1030, 0x1031)
_REQUIRED = frozenset({0x0002, 0x0100, 0x0110, 0x0700, 0x0800, 0x1000})
_UID_RE = re.compile(rb"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


def parse_store_request(command: bytes) -> StoreRequest | None:
    """The C-STORE request ``command`` (a command set as received) is, when it is plain:
    the elements :func:`store_request` writes, each once, in tag order, a group length
    (if any) that is right, conformant UIDs, a priority PS3.7 defines, a printable
    originator; None for anything else (pynetdicom then decodes it, and judges it)."""
    values: dict[int, bytes] = {}
    pos, end = 0, len(command)
    while pos < end:
        if pos + 8 > end:
            return None
        group, element, length = _HEADER.unpack_from(command, pos)
        pos += 8
        if group != 0x0000 or pos + length > end or element in values \
                or element not in _STORE_RQ_ELEMENTS \
                or (values and element < max(values)):
            return None
        values[element] = command[pos:pos + length]
        pos += length
    if not values.keys() >= _REQUIRED or ((0x1030 in values) != (0x1031 in values)):
        return None
    group_length = values.get(0x0000)
    if group_length is not None and (len(group_length) != 4 or struct.unpack(
            "<I", group_length)[0] != end - 12):
        return None
    numbers: dict[int, int] = {}
    for element in (0x0100, 0x0110, 0x0700, 0x0800, 0x1031):
        if element in values:
            if len(values[element]) != 2:
                return None
            numbers[element] = _US.unpack(values[element])[0]
    if numbers[0x0100] != 0x0001 or numbers[0x0800] == _NO_DATA_SET \
            or numbers[0x0700] not in (0, 1, 2):
        return None
    sop_class, sop_uid = plain_uid(values[0x0002]), plain_uid(values[0x1000])
    originator = values.get(0x1030)
    ae = None if originator is None else _ae(originator)
    if sop_class is None or sop_uid is None or (originator is not None and ae is None):
        return None
    return StoreRequest(numbers[0x0110], sop_class, sop_uid, numbers[0x0700], ae,
                        numbers.get(0x1031))


def plain_uid(value: bytes) -> str | None:
    """A UID value as received (one NUL of padding at most), if conformant (PS3.5 9.1)."""
    value = value[:-1] if value.endswith(b"\x00") else value
    if not 0 < len(value) <= _UI or not _UID_RE.fullmatch(value):
        return None
    return value.decode("ascii")


def _ae(value: bytes) -> str | None:
    text = value.strip(b" ")
    if not 0 < len(text) <= _AE or not text.isascii() or b"\\" in text \
            or not text.decode("ascii").isprintable():
        return None
    return text.decode("ascii")
