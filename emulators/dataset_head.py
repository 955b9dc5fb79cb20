"""The first elements of a received data set, read from their headers, if it is whole.

A File Daemon needs four values of each object (its SOP UIDs, patient ID, modality)
and the Patient module's identifiers (to keep them out of logs), and must refuse a
data set that is cut short or malformed. pydicom's reading of a whole CT slice for
that cost more than writing it. Here one walk of the element headers proves the data
set whole (as :mod:`emulators.raw_elements` does, whose walk a data set with sequences
takes) and keeps the raw values of the top-level elements up to the Patient module.
:func:`plain_values` reads the four values from them when they are plain ASCII, in
an ASCII-based character set: then pydicom would read the same strings from them.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import NamedTuple

from pydicom.datadict import dictionary_VR
from pydicom.uid import UID

from client.dimse_commands import plain_uid

from .raw_elements import ASCII_BASED, LONG_VRS, UNDEFINED, VRS, Malformed, Truncated, elements

LAST_HEAD_TAG = 0x0010FFFF  # the Patient module's group ends the head
_SOP_CLASS, _SOP_INSTANCE, _MODALITY = 0x00080016, 0x00080018, 0x00080060
CHARSET, _PATIENT_ID = 0x00080005, 0x00100020
_IMPLICIT = {True: struct.Struct("<HHI"), False: struct.Struct(">HHI")}
_EXPLICIT = {True: struct.Struct("<HH2sH"), False: struct.Struct(">HH2sH")}  # short form
_LONG_LENGTH = {True: struct.Struct("<I"), False: struct.Struct(">I")}


class _NotFlat(Exception):
    """A sequence, an item or an undefined length: the general walk's case."""


def whole_head(body: bytes | bytearray, syntax: UID) -> dict[int, bytes] | None:
    """The raw values of ``body``'s top-level elements up to group 0010 (sequences left
    out), by tag; None when ``body`` is deflated (not walked here), cut short or
    malformed: the caller then reads it the slow way, which says what is wrong."""
    if syntax.is_deflated:
        return None
    implicit, little = syntax.is_implicit_VR, syntax.is_little_endian
    try:
        try:
            return _flat_head(body, implicit, little)
        except _NotFlat:
            return _nested_head(body, implicit, little)
    except (Truncated, Malformed):
        return None


def _flat_head(body: bytes | bytearray, implicit: bool, little: bool) -> dict[int, bytes]:
    """:func:`whole_head` of a data set without sequences (a CT slice): one loop, the
    same checks as :func:`emulators.raw_elements.elements`."""
    implicit_header, explicit_header = _IMPLICIT[little], _EXPLICIT[little]
    long = _LONG_LENGTH[little]
    head: dict[int, bytes] = {}
    pos, end = 0, len(body)
    while pos < end:
        if pos + 8 > end:
            raise Truncated(f"ends inside an element header at byte {pos}")
        if implicit:
            group, number, length = implicit_header.unpack_from(body, pos)
            tag, start = (group << 16) | number, pos + 8
            if group == 0xFFFE or length == UNDEFINED or _implicit_sequence(tag):
                raise _NotFlat
        else:
            group, number, vr, length = explicit_header.unpack_from(body, pos)
            tag = (group << 16) | number
            if vr not in VRS:
                raise Malformed(f"element ({group:04X},{number:04X}) has no valid VR ({vr!r})")
            if vr in LONG_VRS:
                if pos + 12 > end:
                    raise Truncated(f"ends inside an element header at byte {pos}")
                length, start = long.unpack_from(body, pos + 8)[0], pos + 12
            else:
                start = pos + 8
            if vr == b"SQ" or length == UNDEFINED or group == 0xFFFE:
                raise _NotFlat
        if start + length > end:
            raise Truncated(f"element ({group:04X},{number:04X}) declares {length} bytes, "
                            f"{end - start} remain")
        if tag <= LAST_HEAD_TAG:
            head[tag] = bytes(body[start:start + length])
        pos = start + length
    return head


def _nested_head(body: bytes | bytearray, implicit: bool, little: bool) -> dict[int, bytes]:
    head: dict[int, bytes] = {}
    for element in elements(body, implicit, little):
        if element.depth or element.tag > LAST_HEAD_TAG or element.length == UNDEFINED \
                or element.vr == b"SQ" or (element.vr is None and _implicit_sequence(element.tag)):
            continue
        head[element.tag] = bytes(body[element.start:element.start + element.length])
    return head


def _implicit_sequence(tag: int) -> bool:
    try:
        return bool(dictionary_VR(tag) == "SQ")
    except KeyError:
        return False


class StoreValues(NamedTuple):
    """What a stored object's file name and folder come from."""

    sop_uid: str
    sop_class: str
    patient_id: str
    modality: str


def plain_values(head: Mapping[int, bytes]) -> StoreValues | None:
    """The four values as pydicom would read them, when they are plain (printable
    ASCII, one value, no outer spaces, conformant UIDs) in an ASCII-based character
    set; None otherwise (the caller reads them with pydicom)."""
    charset = plain_text(head.get(CHARSET, b""))
    sop_uid, sop_class = plain_uid(head.get(_SOP_INSTANCE, b"")), \
        plain_uid(head.get(_SOP_CLASS, b""))
    patient_id, modality = plain_text(head.get(_PATIENT_ID, b"")), \
        plain_text(head.get(_MODALITY, b""))
    if charset not in ASCII_BASED or sop_uid is None or sop_class is None \
            or patient_id is None or modality is None:
        return None
    return StoreValues(sop_uid, sop_class, patient_id, modality or "OT")


def plain_text(value: bytes) -> str | None:
    """``value`` as pydicom decodes a one-valued text element (its trailing padding
    stripped), if printable ASCII without a leading space or backslash; else None."""
    text = value.rstrip(b"\x00 ")
    if text[:1] == b" " or b"\\" in text or not text.isascii():
        return None
    decoded = text.decode("ascii")
    return decoded if decoded.isprintable() else None
