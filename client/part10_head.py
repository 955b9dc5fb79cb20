"""A stored Part 10 file's head, read from its bytes when it is plain.

rtmove reads every file that arrived, and the DB Daemon every file it exports, to learn
what it is and whether its pixel data is all there; pydicom's ``dcmread`` (with
``stop_before_pixels``) took 0.2 ms of a CT slice's 0.4 ms of checking. Here the File
Meta group and the top-level element headers are walked in one loop
(:func:`client.raw_elements.top_level`), with the values kept as raw bytes.

The walk says None whenever pydicom might read the file otherwise: no preamble and
"DICM", a File Meta group that is not plain, a deflated, private or unknown transfer
syntax, a first element whose VR says the other encoding (pydicom then switches), or
anything cut short or malformed before the pixel data. Callers then read the file with
pydicom, which also says what is wrong. The values are read only when plain
(:func:`plain_text`, :func:`client.dimse_commands.plain_uid`): then pydicom reads the
same strings.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from pydicom.uid import UID, PrivateTransferSyntaxes

from .dimse_commands import plain_uid
from .raw_elements import (
    LONG_VRS,
    UNDEFINED,
    VRS,
    Malformed,
    Top,
    Truncated,
    dictionary_vr,
    is_sequence,
    plain_text,
    top_level,
)

# pydicom's stop_before_pixels stops at these, at the top level (filereader._at_pixel_data).
PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00009, 0x7FE00008})
_PIXEL_DATA = 0x7FE00010
META_HEAD = 144  # preamble, "DICM", and the (0002,0000) group length element
_META_ELEMENT = struct.Struct("<HH2sH")  # the File Meta group is Explicit VR Little Endian
_PRIVATE_SYNTAXES = frozenset(str(uid) for uid in PrivateTransferSyntaxes)
_US = {True: struct.Struct("<H"), False: struct.Struct(">H")}
_TAG = {True: struct.Struct("<HH"), False: struct.Struct(">HH")}
_LENGTH = {True: struct.Struct("<I"), False: struct.Struct(">I")}
_ITEM_DELIMITERS = {True: b"\xfe\xff\xdd\xe0\x00\x00\x00\x00",
                    False: b"\xff\xfe\xe0\xdd\x00\x00\x00\x00"}
_TAG_LENGTH = {True: struct.Struct("<HHI"), False: struct.Struct(">HHI")}
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD


class NeedMore(Exception):
    """The bytes given end before the head does: read more of the file."""


@dataclass(frozen=True)
class Part10Head:
    """The top-level elements before the pixel data, as encoded in ``data``."""

    data: bytes
    syntax: UID
    body_at: int  # where the data set starts (after the File Meta group)
    end_at: int  # where pydicom's stop_before_pixels read ends: pixel data, or the end
    elements: dict[int, Top]  # by tag; offsets relative to body_at

    def has(self, tag: int) -> bool:
        return tag in self.elements

    def raw(self, tag: int) -> bytes | None:
        """The value's bytes; None if absent, or holding items (a sequence)."""
        element = self.elements.get(tag)
        if element is None or element.holds_items():
            return None
        start = self.body_at + element.start
        return self.data[start:start + element.length]

    def text(self, tag: int) -> str | None:
        """A one-valued text value as pydicom reads it ('' if absent or empty); None
        if not plain."""
        if tag not in self.elements:
            return ""
        value = self._as_dictionary_vr(tag)
        return None if value is None else plain_text(value)

    def uid(self, tag: int) -> str | None:
        """A UID value ('' if absent or empty); None if not plain."""
        if tag not in self.elements:
            return ""
        value = self._as_dictionary_vr(tag)
        if value is None:
            return None
        return "" if not value else plain_uid(value)

    def _as_dictionary_vr(self, tag: int) -> bytes | None:
        """The value's bytes if pydicom reads them as the tag's dictionary VR (Implicit
        VR, or that VR: under another, ``str`` of its value is ``"b'...'"``, a number, a
        list); else None."""
        element = self.elements[tag]
        if element.vr is not None and element.vr.decode() != dictionary_vr(tag):
            return None
        return self.raw(tag)

    def us(self, tag: int) -> int | None:
        """A one-valued US value (0 if absent or empty, as ``ds.get(...) or 0``); None if
        not plain: another VR, or not two bytes."""
        element = self.elements.get(tag)
        if element is None:
            return 0
        if element.vr not in (None, b"US"):
            return None
        value = self.raw(tag)
        if value is None or len(value) not in (0, 2):
            return None
        return _US[self.syntax.is_little_endian].unpack(value)[0] if value else 0

    def charset(self) -> tuple[str, ...] | None:
        """The Specific Character Set's defined terms, as
        :func:`emulators.db_daemon.export.charset_of` reads them; None if not plain."""
        if not self.has(0x00080005):
            return ()
        value = self._as_dictionary_vr(0x00080005)
        if value is None:
            return None
        text = value.rstrip(b"\x00 ")
        if not text.isascii() or not text.decode("ascii").isprintable():
            return None
        terms = tuple(term.strip() for term in text.decode("ascii").split("\\"))
        return () if terms == ("",) else terms

    def pixel_problem(self, fh: BinaryIO, size: int) -> str | None:
        """:func:`pixel_data_problem` for this head (``fh`` is the file, size its size),
        or None if not an image; the values it needs must be plain (else ValueError)."""
        if not (self.has(0x00280010) and self.has(0x00280011)):
            return None
        fh.seek(self.end_at)
        return pixel_data_problem(self.syntax, self._expected_pixel_bytes, fh, size)

    def _expected_pixel_bytes(self) -> int:
        rows, columns = self.us(0x00280010), self.us(0x00280011)
        bits, samples = self.us(0x00280100), self.us(0x00280002)
        frames_text = self.text(0x00280008)
        if None in (rows, columns, bits, samples) or frames_text is None \
                or not (frames_text == "" or frames_text.isdigit()):
            raise ValueError("pixel module values not plain")
        frames = int(frames_text) if frames_text else 0
        return int(rows or 0) * int(columns or 0) * (samples or 1) * (frames or 1) \
            * int(bits or 0) // 8


def read_head(data: bytes, *, whole: bool, unless: frozenset[int] = frozenset(),
              ) -> Part10Head | None:
    """The head of the Part 10 file whose first bytes are ``data`` (all of it if
    ``whole``); None if pydicom should read it (module doc), or as soon as a top-level
    element with a tag in ``unless`` is met (the caller would read such a file with
    pydicom anyway: a structure set's contours need not be walked first); NeedMore if
    ``data`` ends before the head does and the file goes on."""
    meta = meta_syntax(data)
    if meta is None:
        if not whole:
            raise NeedMore  # perhaps a File Meta group longer than ``data``
        return None
    syntax, body_at = meta
    uid = UID(syntax)
    if not uid.is_transfer_syntax or uid.is_deflated or syntax in _PRIVATE_SYNTAXES:
        return None
    implicit, little = uid.is_implicit_VR, uid.is_little_endian
    if len(data) >= body_at + 6:
        if data[body_at:body_at + 2] in (b"\x02\x00", b"\x00\x02"):
            return None  # more File Meta than its group length says: pydicom reads on
        if data[body_at:body_at + 2] == b"\x00\x00":
            return None  # pydicom reads a command set first, in Implicit VR Little Endian
        vr = data[body_at + 4:body_at + 6]
        if (0x40 < vr[0] < 0x5B and 0x40 < vr[1] < 0x5B) == implicit:
            return None  # pydicom takes the other encoding from the first element
    try:
        found, end = top_level(memoryview(data)[body_at:], implicit, little,
                               PIXEL_TAGS | unless if unless else PIXEL_TAGS)
    except Truncated:
        if whole:
            return None
        raise NeedMore from None
    except Malformed:
        return None
    stop = body_at + end
    if stop == len(data) and not whole:
        raise NeedMore  # the bytes end between two elements, not at the pixel data
    if unless and stop + 4 <= len(data):
        group, number = _TAG[little].unpack_from(data, stop)
        if (group << 16) | number in unless:
            return None
    if not implicit and stop < len(data) < stop + 12 and data[stop + 4:stop + 6] in LONG_VRS:
        if whole:
            return None  # pydicom fails to read the pixel data's length (struct.error)
        raise NeedMore
    if not _as_pydicom_walks(memoryview(data)[body_at:], found, end, implicit, little):
        return None
    return Part10Head(data, uid, body_at, stop, {e.tag: e for e in found})


def _as_pydicom_walks(body: memoryview, found: list[Top], end: int, implicit: bool,
                      little: bool) -> bool:
    """Whether pydicom's reading finds the same top-level elements: each starts where
    the one before ends (pydicom stops at an item delimiter between them, and reads
    another item or delimiter as an element), and a sequence of undefined length is
    plain (:func:`_sequence_end`); pydicom reads other undefined lengths up to the first
    bytes that look like a sequence delimiter."""
    at = 0
    for element in found:
        if element.offset != at:
            return False
        if element.length != UNDEFINED:
            at = element.start + element.length
        elif element.vr == b"SQ" or (element.vr is None and is_sequence(element.tag)):
            sequence_end = _sequence_end(body, element.start, implicit, little)
            if sequence_end is None:
                return False
            at = sequence_end
        else:
            return False
    return at == end


def _sequence_end(body: memoryview, pos: int, implicit: bool, little: bool) -> int | None:
    """Where pydicom's reading of the undefined-length sequence whose items start at
    ``pos`` ends; None unless plain: items of defined length holding whole elements, or
    of undefined length closed by an item delimiter, then a sequence delimiter."""
    tag_length = _TAG_LENGTH[little]
    while pos + 8 <= len(body):
        group, number, length = tag_length.unpack_from(body, pos)
        tag, pos = (group << 16) | number, pos + 8
        if tag == _SEQUENCE_END:
            return pos
        if tag != _ITEM:
            return None  # pydicom reads anything else as an item's header
        if length == UNDEFINED:
            item_end = _item_end(body, pos, None, implicit, little)
        elif pos + length <= len(body):
            item_end = _item_end(body, pos, pos + length, implicit, little)
        else:
            return None
        if item_end is None:
            return None
        pos = item_end
    return None


def _item_end(body: memoryview, pos: int, limit: int | None, implicit: bool, little: bool,
              ) -> int | None:
    """Where pydicom's reading of the item whose elements start at ``pos`` ends (its
    defined end is ``limit``); None unless plain."""
    order = "<" if little else ">"
    end = len(body) if limit is None else limit
    while limit is None or pos < limit:
        if pos + 8 > end:
            return None
        group, number, length = _TAG_LENGTH[little].unpack_from(body, pos)
        tag = (group << 16) | number
        if group == 0xFFFE:
            return pos + 8 if tag == _ITEM_END and limit is None else None
        vr = None if implicit else bytes(body[pos + 4:pos + 6])
        if vr is None:
            pos += 8
        elif vr not in VRS:  # (all capitals: pydicom reads the item as Explicit VR too)
            return None  # pydicom reads the element as Implicit VR
        elif vr in LONG_VRS:
            if pos + 12 > end:
                return None
            length, pos = struct.unpack_from(order + "I", body, pos + 8)[0], pos + 12
        else:
            length, pos = struct.unpack_from(order + "H", body, pos + 6)[0], pos + 8
        if length == UNDEFINED:
            if not (vr == b"SQ" or (vr is None and is_sequence(tag))):
                return None  # pydicom looks for the first delimiter's bytes
            sequence_end = _sequence_end(body, pos, implicit, little)
            if sequence_end is None:
                return None
            pos = sequence_end
        elif pos + length > end:
            return None
        else:
            pos += length
    return pos


def meta_syntax(data: bytes) -> tuple[str, int] | None:
    """The Transfer Syntax UID in a Part 10 file's plain File Meta group (a group
    length, short explicit elements, a conformant UID) and where the data set starts;
    None if ``data`` does not hold such a group whole."""
    if len(data) < META_HEAD or data[128:132] != b"DICM" \
            or data[132:140] != b"\x02\x00\x00\x00UL\x04\x00":
        return None
    body_at = META_HEAD + int.from_bytes(data[140:144], "little")
    if len(data) < body_at:
        return None
    pos, syntax = META_HEAD, None
    while pos + _META_ELEMENT.size <= body_at:
        group, element, vr, length = _META_ELEMENT.unpack_from(data, pos)
        # pydicom reads an element with no valid VR as Implicit VR, and keeps the VR of
        # the Transfer Syntax UID (a str, not a UID, under another)
        if group != 0x0002 or vr not in VRS or (element == 0x0010 and vr != b"UI"):
            return None
        if vr in LONG_VRS:
            if vr not in (b"OB", b"UN") or pos + 12 > body_at:
                return None
            pos += 12 + int.from_bytes(data[pos + 8:pos + 12], "little")
            continue  # (0002,0001) File Meta Information Version, OB
        if element == 0x0010:
            syntax = plain_uid(data[pos + 8:pos + 8 + length])
            if syntax is None:
                return None
        pos += 8 + length
    return None if syntax is None or pos != body_at else (syntax, body_at)


def pixel_data_problem(syntax: UID, expected_bytes: Callable[[], int], fh: BinaryIO,
                       size: int) -> str | None:
    """Whether the pixel data of an image is all there: ``fh`` is at the element that
    follows its head, ``size`` is the file's size; read from the element's header, not
    by loading the pixels (a 120-slice CT costs milliseconds instead of 60 MB read)."""
    little = syntax.is_little_endian
    head = fh.read(8)
    if len(head) < 8 or struct.unpack("<HH" if little else ">HH", head[:4]) != (0x7FE0, 0x0010):
        # An image whose file ends before its pixels reads "fine" up to where it stops.
        return "no pixel data"
    if syntax.is_implicit_VR:
        length = _LENGTH[little].unpack(head[4:8])[0]
    else:
        rest = fh.read(4)
        if len(rest) < 4:
            return "pixel data header cut short"
        length = _LENGTH[little].unpack(rest)[0]
    remaining = size - fh.tell()
    if length == 0xFFFFFFFF:  # encapsulated (compressed): ends with a sequence delimiter
        fh.seek(size - 8)
        return None if fh.read(8) == _ITEM_DELIMITERS[little] \
            else "compressed pixel data cut short"
    expected = expected_bytes()
    got = min(length, remaining)
    return None if got >= expected else f"pixel data has {got} of {expected} bytes"
