"""The elements of an encoded data set, walked from their headers without decoding.

pydicom reads a value cut short by the end of the stream as a shorter value, and
decoding a whole data set to read or change a few values costs milliseconds a CT
slice. Both daemons walk received and stored bytes here instead: to refuse what is not
whole (:mod:`emulators.dataset_length`), to read a received object's identity
(:mod:`emulators.dataset_head`) and to re-declare an export's character set when no
text needs re-encoding (:mod:`emulators.db_daemon.charset_swap`); rtmove and the DB
Daemon read stored files' heads here too (:mod:`client.part10_head`).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterator
from typing import NamedTuple

from pydicom.valuerep import VR

LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                       b"UR", b"UT", b"UV"})
UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010


# Character sets whose bytes 0x00-0x7F are ASCII, with no code extension (PS3.3 C.12.1.1.2):
# a value of printable ASCII bytes reads the same in each.
ASCII_BASED = frozenset({"", "ISO_IR 6", "ISO_IR 100", "ISO_IR 101", "ISO_IR 109",
                         "ISO_IR 110", "ISO_IR 126", "ISO_IR 127", "ISO_IR 138",
                         "ISO_IR 144", "ISO_IR 148", "ISO_IR 166", "ISO_IR 192", "GB18030",
                         "GBK"})


_IMPLICIT_HEADER = {True: struct.Struct("<HHI"), False: struct.Struct(">HHI")}
_EXPLICIT_HEADER = {True: struct.Struct("<HH2sH"), False: struct.Struct(">HH2sH")}  # short
_LONG_LENGTH = {True: struct.Struct("<I"), False: struct.Struct(">I")}


def plain_text(value: bytes) -> str | None:
    """``value`` as pydicom decodes a one-valued text element (its trailing padding
    stripped), if printable ASCII without a leading space or backslash; else None."""
    text = value.rstrip(b"\x00 ")
    if text[:1] == b" " or b"\\" in text or not text.isascii():
        return None
    decoded = text.decode("ascii")
    return decoded if decoded.isprintable() else None


class Truncated(ValueError):
    """The bytes end, or a length points, past where the data set ends."""


class Malformed(ValueError):
    """An element no reader can decode: an Explicit VR that is none of PS3.5's."""


VRS = frozenset(vr.value.encode() for vr in VR if len(vr.value) == 2)  # PS3.5 6.2


class Element(NamedTuple):
    """One data element (not items or delimiters) as encoded."""

    depth: int  # 0 at the top level, 1 inside a top-level sequence's items, ...
    tag: int  # (group << 16) | element
    vr: bytes | None  # None in Implicit VR
    offset: int  # where its header starts
    start: int  # where its value starts
    length: int  # its value's length (UNDEFINED: a sequence or encapsulated data)


def elements(body: bytes | bytearray | memoryview, implicit: bool, little: bool,
             ) -> Iterator[Element]:
    """Every element of ``body`` in order, nested ones included; Truncated when a
    defined length runs past its container or an undefined-length sequence or item is
    never closed (PS3.5 7.5), Malformed at an Explicit VR that is none of PS3.5's
    (pydicom stores it, then cannot decode it). Iterative: a peer can nest thousands of
    items."""
    order = "<" if little else ">"
    pos = 0
    # Open containers: (defined end or None, items (True) or elements, implicit VR, hard
    # end, whether its items hold data sets (a sequence) or bytes (encapsulated pixels))
    stack: list[tuple[int | None, bool, bool, int, bool]] = [
        (len(body), False, implicit, len(body), False)]
    while stack:
        limit, items, implicit_here, hard, nested = stack[-1]
        if pos == limit:
            stack.pop()
            continue
        if pos + 8 > hard:
            raise Truncated(f"ends inside an element header at byte {pos}")
        group, number, length = struct.unpack_from(order + "HHI", body, pos)
        tag = (group << 16) | number
        if group == 0xFFFE:  # item and delimiters: no VR, in every syntax
            pos += 8
            closes = _SEQUENCE_END if items else _ITEM_END
            if tag == closes and limit is None and len(stack) > 1:
                stack.pop()
            elif tag == _ITEM and length == UNDEFINED:
                stack.append((None, False, implicit_here, hard, False))
            elif tag == _ITEM:
                if pos + length > hard:
                    raise Truncated(f"an item of {length} bytes at byte {pos} runs past the end")
                if nested:  # a sequence item: its elements
                    stack.append((pos + length, False, implicit_here, pos + length, False))
                else:  # a fragment of encapsulated pixel data
                    pos += length
            continue
        vr = None if implicit_here else bytes(body[pos + 4:pos + 6])  # hashable
        if vr is not None and vr not in VRS:
            raise Malformed(f"element ({group:04X},{number:04X}) has no valid VR ({vr!r})")
        if vr is None:
            head = 8
        elif vr in LONG_VRS:
            if pos + 12 > hard:
                raise Truncated(f"ends inside an element header at byte {pos}")
            length, head = struct.unpack_from(order + "I", body, pos + 8)[0], 12
        else:
            length, head = struct.unpack_from(order + "H", body, pos + 6)[0], 8
        depth = sum(1 for container in stack if container[1])
        yield Element(depth, tag, vr, pos, pos + head, length)
        pos += head
        if length == UNDEFINED:  # a sequence or encapsulated pixel data: items
            fragments = tag == _PIXEL_DATA or vr in (b"OB", b"OW")
            stack.append((None, True, implicit_here or vr == b"UN", hard, not fragments))
        elif pos + length > hard:
            raise Truncated(f"element ({group:04X},{number:04X}) declares {length} bytes, "
                            f"{hard - pos} remain")
        elif vr == b"SQ" or (vr is None and is_sequence(tag)):
            stack.append((pos + length, True, implicit_here, pos + length, True))
        else:
            pos += length


class Top(NamedTuple):
    """A top-level element as encoded: its items (a sequence's, encapsulated pixel
    data's) are walked and proven whole, not listed."""

    tag: int
    vr: bytes | None  # None in Implicit VR
    offset: int  # where its header starts
    start: int  # where its value starts
    length: int  # UNDEFINED: a sequence or encapsulated data so encoded

    def holds_items(self) -> bool:
        """Whether the value is items (a sequence, encapsulated data), not one value."""
        return self.length == UNDEFINED or self.vr == b"SQ" \
            or (self.vr is None and is_sequence(self.tag))


class _NotFlat(Exception):
    """A sequence, an item or an undefined length: the general walk's case."""


def top_level(body: bytes | bytearray | memoryview, implicit: bool, little: bool,
              stop: frozenset[int] = frozenset()) -> tuple[list[Top], int]:
    """``body``'s top-level elements in order, up to the first whose tag is in ``stop``
    (or the end), and where the walk ended; with the checks of :func:`elements`
    (Truncated, Malformed) for everything before that end.

    A data set without sequences (a CT slice's) is walked in one flat loop, one
    ``struct`` unpack an element: the general walk cost three times as much.
    """
    try:
        return _flat(body, implicit, little, stop)
    except _NotFlat:
        found: list[Top] = []
        for element in elements(body, implicit, little):
            if element.depth:
                continue
            if element.tag in stop:
                return found, element.offset
            found.append(Top(element.tag, element.vr, element.offset, element.start,
                             element.length))
        return found, len(body)


def _flat(body: bytes | bytearray | memoryview, implicit: bool, little: bool,
          stop: frozenset[int]) -> tuple[list[Top], int]:
    implicit_header, explicit_header = _IMPLICIT_HEADER[little], _EXPLICIT_HEADER[little]
    long = _LONG_LENGTH[little]
    found: list[Top] = []
    make = functools.partial(tuple.__new__, Top)  # Top(...) without its __new__'s frame
    pos, end = 0, len(body)
    while pos < end:
        if pos + 8 > end:
            raise Truncated(f"ends inside an element header at byte {pos}")
        vr: bytes | None
        if implicit:
            group, number, length = implicit_header.unpack_from(body, pos)
            tag, start, vr = (group << 16) | number, pos + 8, None
            if tag in stop:
                return found, pos
            if group == 0xFFFE or length == UNDEFINED or is_sequence(tag):
                raise _NotFlat
        else:
            group, number, vr, length = explicit_header.unpack_from(body, pos)
            tag = (group << 16) | number
            if tag in stop:
                return found, pos
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
        found.append(make((tag, vr, pos, start, length)))
        pos = start + length
    return found, end


# A sequence's items, read from its value: each item's elements by tag, their values
# as bytes, a nested sequence's as its items.
RawItem = dict[int, "bytes | list[RawItem]"]
_MAX_NESTING = 16
_CHARACTER_SET, _PIXEL_REPRESENTATION = 0x00080005, 0x00280103


def sequence_items(value: bytes | bytearray | memoryview, implicit: bool, little: bool,
                   ) -> list[RawItem]:
    """The items of a sequence whose value (between its header and its end) is ``value``;
    Truncated or Malformed (a ValueError) where pydicom might read otherwise: anything
    but items at its top, an undefined length other than a sequence's or an item's, a
    VR other than PS3.5's, more than 16 sequences nested below it, an item's Specific
    Character Set other than one ASCII-based one or Pixel Representation of an odd
    length. A structure set's referenced images (120 items of a CT) took pydicom 3 ms to
    read; this, a tenth."""
    items, end = _items(memoryview(value), 0, len(value), False, implicit, little, 0)
    if end != len(value):
        raise Malformed(f"bytes after the sequence's items, at byte {end}")
    return items


def _items(body: memoryview, pos: int, end: int, delimited: bool, implicit: bool,
           little: bool, depth: int) -> tuple[list[RawItem], int]:
    """Items from ``pos`` up to ``end``, or (``delimited``) up to a Sequence Delimitation
    Item before it; the items and where they ended (after the delimiter)."""
    if depth > _MAX_NESTING:
        raise Malformed("more than 16 sequences nested below the first")
    header = _IMPLICIT_HEADER[little]  # an item's or delimiter's tag and length
    items: list[RawItem] = []
    while True:
        if pos == end and not delimited:
            return items, pos
        if pos + 8 > end:
            raise Truncated(f"ends inside an item header at byte {pos}")
        group, number, length = header.unpack_from(body, pos)
        tag, pos = (group << 16) | number, pos + 8
        if tag == _SEQUENCE_END and delimited:
            return items, pos
        if tag != _ITEM:
            raise Malformed(f"({group:04X},{number:04X}) where an item should be")
        if length == UNDEFINED:
            item, pos = _item(body, pos, end, True, implicit, little, depth)
        elif pos + length > end:
            raise Truncated(f"an item of {length} bytes at byte {pos} runs past the end")
        else:
            item, stop = _item(body, pos, pos + length, False, implicit, little, depth)
            if stop != pos + length:
                raise Malformed(f"an item's elements overrun it at byte {stop}")
            pos = stop
        items.append(item)


def _item(body: memoryview, pos: int, end: int, delimited: bool, implicit: bool,
          little: bool, depth: int) -> tuple[RawItem, int]:
    """One item's elements, from ``pos`` up to ``end`` or (``delimited``) up to its Item
    Delimitation Item; and where they ended."""
    implicit_header, explicit_header = _IMPLICIT_HEADER[little], _EXPLICIT_HEADER[little]
    long = _LONG_LENGTH[little]
    item: RawItem = {}
    while True:
        if pos == end and not delimited:
            return item, pos
        if pos + 8 > end:
            raise Truncated(f"ends inside an element header at byte {pos}")
        vr: bytes | None
        if implicit:
            group, number, length = implicit_header.unpack_from(body, pos)
            tag, start, vr = (group << 16) | number, pos + 8, None
        else:
            group, number, vr, length = explicit_header.unpack_from(body, pos)
            tag, start = (group << 16) | number, pos + 8
            if group != 0xFFFE:
                if vr not in VRS:
                    raise Malformed(f"element ({group:04X},{number:04X}) has no valid VR")
                if vr in LONG_VRS:
                    if pos + 12 > end:
                        raise Truncated(f"ends inside an element header at byte {pos}")
                    length, start = long.unpack_from(body, pos + 8)[0], pos + 12
        if group == 0xFFFE:
            length = _IMPLICIT_HEADER[little].unpack_from(body, pos)[2]
            if tag == _ITEM_END and delimited and length == 0:
                return item, pos + 8
            raise Malformed(f"({group:04X},{number:04X}) inside an item")
        if tag in item:
            raise Malformed(f"({group:04X},{number:04X}) twice in one item")
        if vr is not None and vr.decode() != dictionary_vr(tag) \
                and dictionary_vr(tag) is not None:
            raise Malformed(f"({group:04X},{number:04X}) under another VR than its own")
        sequence = vr == b"SQ" or (vr is None and is_sequence(tag))
        if length == UNDEFINED:
            if not sequence:
                raise Malformed(f"({group:04X},{number:04X}) of undefined length")
            item[tag], pos = _items(body, start, end, True, implicit, little, depth + 1)
            continue
        if start + length > end:
            raise Truncated(f"element ({group:04X},{number:04X}) declares {length} bytes, "
                            f"{end - start} remain")
        if sequence:
            item[tag] = _items(body, start, start + length, False, implicit, little,
                               depth + 1)[0]
        else:
            value = item[tag] = bytes(body[start:start + length])
            # pydicom reads two values beside those asked for: an item's character set as
            # it reads the item, its Pixel Representation as it reads a sequence in it.
            # One it cannot read (a NUL inside a character set's name, a US of 3 bytes)
            # fails the reading of the sequence holding the item, or of one in it.
            if tag == _CHARACTER_SET and plain_text(value) not in ASCII_BASED:
                raise Malformed("an item's Specific Character Set is not one ASCII-based one")
            if tag == _PIXEL_REPRESENTATION and length % 2:
                raise Malformed(f"an item's Pixel Representation of {length} bytes")
        pos = start + length


def is_sequence(tag: int) -> bool:
    """Whether the data dictionary says ``tag`` is a sequence (Implicit VR's only clue)."""
    return dictionary_vr(tag) == "SQ"


@functools.lru_cache(maxsize=4096)
def dictionary_vr(tag: int) -> str | None:
    """``tag``'s VR in pydicom's data dictionary (e.g. "US or SS"); None for private
    and unknown tags, whose form Implicit VR does not tell."""
    from pydicom.datadict import dictionary_VR

    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return None
