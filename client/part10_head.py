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
from .raw_elements import Malformed, Top, Truncated, plain_text, top_level

# pydicom's stop_before_pixels stops at these, at the top level (filereader._at_pixel_data).
PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00009, 0x7FE00008})
_PIXEL_DATA = 0x7FE00010
META_HEAD = 144  # preamble, "DICM", and the (0002,0000) group length element
_META_ELEMENT = struct.Struct("<HH2sH")  # the File Meta group is Explicit VR Little Endian
_META_LONG_VRS = (b"OB", b"OW", b"UN", b"UT", b"SQ", b"UC", b"UR")
_PRIVATE_SYNTAXES = frozenset(str(uid) for uid in PrivateTransferSyntaxes)
_US = {True: struct.Struct("<H"), False: struct.Struct(">H")}
_LENGTH = {True: struct.Struct("<I"), False: struct.Struct(">I")}
_ITEM_DELIMITERS = {True: b"\xfe\xff\xdd\xe0\x00\x00\x00\x00",
                    False: b"\xff\xfe\xe0\xdd\x00\x00\x00\x00"}


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
        value = self.raw(tag)
        return None if value is None else plain_text(value)

    def uid(self, tag: int) -> str | None:
        """A UID value ('' if absent or empty); None if not plain."""
        if tag not in self.elements:
            return ""
        value = self.raw(tag)
        if value is None:
            return None
        return "" if not value else plain_uid(value)

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
        value = self.raw(0x00080005)
        if value is None:
            return () if not self.has(0x00080005) else None
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


def read_head(data: bytes, *, whole: bool) -> Part10Head | None:
    """The head of the Part 10 file whose first bytes are ``data`` (all of it if
    ``whole``); None if pydicom should read it (module doc); NeedMore if ``data``
    ends before the head does and the file goes on."""
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
        vr = data[body_at + 4:body_at + 6]
        if (0x40 < vr[0] < 0x5B and 0x40 < vr[1] < 0x5B) == implicit:
            return None  # pydicom takes the other encoding from the first element
    try:
        found, end = top_level(memoryview(data)[body_at:], implicit, little, PIXEL_TAGS)
    except Truncated:
        if whole:
            return None
        raise NeedMore from None
    except Malformed:
        return None
    return Part10Head(data, uid, body_at, body_at + end, {e.tag: e for e in found})


def meta_syntax(data: bytes) -> tuple[str, int] | None:
    """The Transfer Syntax UID in a Part 10 file's plain File Meta group (a group
    length, short explicit elements, a conformant UID) and where the data set starts;
    None if ``data`` does not hold such a group whole."""
    if len(data) < META_HEAD or data[128:132] != b"DICM" \
            or data[132:136] != b"\x02\x00\x00\x00" or data[136:138] != b"UL":
        return None
    body_at = META_HEAD + int.from_bytes(data[140:144], "little")
    if len(data) < body_at:
        return None
    pos, syntax = META_HEAD, None
    while pos + _META_ELEMENT.size <= body_at:
        group, element, vr, length = _META_ELEMENT.unpack_from(data, pos)
        if group != 0x0002:
            return None
        if vr in _META_LONG_VRS:
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
