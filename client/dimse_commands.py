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

import struct
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
