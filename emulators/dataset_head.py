"""The first elements of a received data set, read from their headers, if it is whole.

A File Daemon needs four values of each object (its SOP UIDs, patient ID, modality)
and the Patient module's identifiers (to keep them out of logs), and must refuse a
data set that is cut short or malformed. pydicom's reading of a whole CT slice for
that cost more than writing it. Here one walk of the element headers proves the data
set whole (:func:`client.raw_elements.top_level`) and keeps the raw values of the
top-level elements up to the Patient module. :func:`plain_values` reads the four
values from them when they are plain ASCII, in an ASCII-based character set: then
pydicom would read the same strings from them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from pydicom.uid import UID

from client.dimse_commands import plain_uid
from client.raw_elements import (
    ASCII_BASED,
    UNDEFINED,
    Malformed,
    Truncated,
    is_sequence,
    plain_text,
    top_level,
)

__all__ = ["CHARSET", "LAST_HEAD_TAG", "StoreValues", "plain_text", "plain_values",
           "whole_head"]

LAST_HEAD_TAG = 0x0010FFFF  # the Patient module's group ends the head
_SOP_CLASS, _SOP_INSTANCE, _MODALITY = 0x00080016, 0x00080018, 0x00080060
CHARSET, _PATIENT_ID = 0x00080005, 0x00100020


def whole_head(body: bytes | bytearray, syntax: UID) -> dict[int, bytes] | None:
    """The raw values of ``body``'s top-level elements up to group 0010 (sequences left
    out), by tag; None when ``body`` is deflated (not walked here), cut short or
    malformed: the caller then reads it the slow way, which says what is wrong."""
    if syntax.is_deflated:
        return None
    try:
        found, _end = top_level(body, syntax.is_implicit_VR, syntax.is_little_endian)
    except (Truncated, Malformed):
        return None
    return {tag: bytes(body[start:start + length])
            for tag, vr, _offset, start, length in found
            if tag <= LAST_HEAD_TAG and length != UNDEFINED and vr != b"SQ"
            and not (vr is None and is_sequence(tag))}


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
