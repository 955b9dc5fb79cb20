"""An export's character set re-declared without re-encoding its text.

The DB Daemon sends each object in the destination's export character set (as the
real daemon does). A stored object in another set was decoded and re-encoded by
pydicom for every send: 0.6 ms of the 0.9 ms each CT slice's export took. When every
text value is plain ASCII (no byte over 0x7F, no escape), its bytes are the same in
both sets, as long as both are ASCII in their first 128 codes: only (0008,0005)
changes, and it is swapped in the bytes here.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from pydicom.datadict import dictionary_VR

from client.raw_elements import ASCII_BASED, UNDEFINED, Element, Top, elements, top_level

_TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC", "PN"})  # written in the set
_CHARSET_TAG = 0x00080005
_ESCAPE = 0x1B


def redeclared(data: bytes, implicit: bool, little: bool, stored: tuple[str, ...],
               wanted: str, top: Iterable[Top] | None = None) -> bytes | None:
    """``data`` (a data set, or its part before the pixel data) declared in ``wanted``;
    None when some text would change or cannot be judged (the caller re-encodes).

    ``top``: ``data``'s top-level elements, if the caller has walked them already
    (:func:`client.raw_elements.top_level`); without sequences, they are all there is.
    """
    if len(stored) > 1 or (stored[0] if stored else "") not in ASCII_BASED \
            or wanted not in ASCII_BASED:
        return None
    listed = list(top) if top is not None else top_level(data, implicit, little)[0]
    walked: Iterable[Element] = elements(data, implicit, little) \
        if any(element.holds_items() for element in listed) \
        else (Element(0, *element) for element in listed)
    found: tuple[int, int] | None = None  # the stored (0008,0005): offset, end
    insert_at = len(data)
    for element in walked:
        vr = _vr(element.tag, element.vr)
        if vr is None or (element.tag & 0xFFFF == 0 and element.depth == 0):
            return None  # a value of unknown form, or a group length the swap would break
        if (vr in _TEXT_VRS or vr == "UN") and element.length != UNDEFINED:
            # UN: pydicom reads a known tag as its dictionary VR, text decoded in the set
            # (a binary UN value with high bytes just sends this object the slow way).
            value = data[element.start:element.start + element.length]
            if not value.isascii() or _ESCAPE in value:
                return None
        if element.depth == 0 and element.tag == _CHARSET_TAG:
            found = element.offset, element.start + element.length
        elif element.depth == 0 and element.tag > _CHARSET_TAG and insert_at == len(data):
            insert_at = element.offset
    new = _charset_element(wanted, implicit, little)
    if found is not None:
        return data[:found[0]] + new + data[found[1]:]
    return data[:insert_at] + new + data[insert_at:]


def _vr(tag: int, vr: bytes | None) -> str | None:
    if vr is not None:
        return vr.decode("ascii", "replace")
    try:
        return str(dictionary_VR(tag))
    except KeyError:  # private or unknown, in Implicit VR: its form cannot be known
        return None


def _charset_element(charset: str, implicit: bool, little: bool) -> bytes:
    value = charset.encode("ascii")
    value += b" " * (len(value) % 2)
    order = "<" if little else ">"
    if implicit:
        return struct.pack(order + "HHI", 0x0008, 0x0005, len(value)) + value
    return struct.pack(order + "HH2sH", 0x0008, 0x0005, b"CS", len(value)) + value
