"""Whether a received data set is whole, before anything stores it.

pydicom reads a value cut short by the end of the stream as a shorter value, so both
daemons would store (or import) a partial object from a C-STORE whose last PDU was
lost; this walks the element lengths without decoding values.
"""

from __future__ import annotations

import struct
import zlib

from pydicom.uid import UID

_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                       b"UR", b"UT", b"UV"})
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD


def cut_short(body: bytes, transfer_syntax: UID) -> str | None:
    """Why ``body`` (a data set as received) is not whole, or None when it is.

    pydicom reads a value cut short by the end of the stream as a shorter value, so a
    C-STORE whose last PDU was lost decoded "fine" and was stored as a partial file.
    Every defined length must fit in its container, every undefined-length sequence
    and item must be closed (PS3.5 7.5); values are skipped, not decoded. Iterative:
    a peer can nest thousands of items.
    """
    if transfer_syntax.is_deflated:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            body = inflater.decompress(body)
        except zlib.error as exc:
            return f"deflated data cannot be inflated ({exc})"
        if not inflater.eof:
            return "deflated data cut short"
    order = "<" if transfer_syntax.is_little_endian else ">"
    pos = 0
    # Open containers: (defined end or None, items (True) or elements, implicit VR, hard end)
    stack: list[tuple[int | None, bool, bool, int]] = [
        (len(body), False, transfer_syntax.is_implicit_VR, len(body))]
    while stack:
        limit, items, implicit, hard = stack[-1]
        if pos == limit:
            stack.pop()
            continue
        if pos + 8 > hard:
            return f"ends inside an element header at byte {pos}"
        group, element, length = struct.unpack_from(order + "HHI", body, pos)
        tag = (group << 16) | element
        if group == 0xFFFE:  # item and delimiters: no VR, in every syntax
            pos += 8
            closes = _SEQUENCE_END if items else _ITEM_END
            if tag == closes and limit is None and len(stack) > 1:
                stack.pop()
            elif tag == _ITEM and length == _UNDEFINED:
                stack.append((None, False, implicit, hard))
            elif tag == _ITEM:
                if pos + length > hard:
                    return f"an item of {length} bytes at byte {pos} runs past the end"
                pos += length
            continue
        vr = None if implicit else body[pos + 4:pos + 6]
        if vr is None:
            head = 8
        elif vr in _LONG_VRS:
            if pos + 12 > hard:
                return f"ends inside an element header at byte {pos}"
            length, head = struct.unpack_from(order + "I", body, pos + 8)[0], 12
        else:
            length, head = struct.unpack_from(order + "H", body, pos + 6)[0], 8
        pos += head
        if length == _UNDEFINED:  # a sequence or encapsulated pixel data: items
            stack.append((None, True, implicit or vr == b"UN", hard))
        elif pos + length > hard:
            return (f"element ({group:04X},{element:04X}) declares {length} bytes, "
                    f"{hard - pos} remain")
        else:
            pos += length
    return None
