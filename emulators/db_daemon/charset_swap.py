"""An export's character set re-declared without decoding the object.

The DB Daemon sends each object in the destination's export character set (as the
real daemon does). A stored object in another set was decoded and re-encoded by
pydicom for every send: 0.6 ms of the 0.9 ms each CT slice's export took. When every
text value is plain ASCII (no byte over 0x7F, no escape), its bytes are the same in
both sets, as long as both are ASCII in their first 128 codes: only (0008,0005)
changes, and it is swapped in the bytes here. A top-level text value that is not
ASCII (a name with an accent, stored in Latin-1 and sent in UTF-8) is transcoded
here too, as pydicom would write it, when both sets are one code table without code
extensions and the value is one plain value; anything else is left to pydicom.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from pydicom.charset import python_encoding

from client.raw_elements import (
    ASCII_BASED,
    UNDEFINED,
    Element,
    Top,
    dictionary_vr,
    elements,
    top_level,
)

_TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC", "PN"})  # written in the set
_LONG_TEXT_VRS = frozenset({"UT", "UC"})  # a 4-byte length in Explicit VR
# One code table each, ASCII in 0x00-0x7F, no escapes: a value's bytes transcode as a
# whole (GB18030 and GBK left out: their second bytes can be ASCII delimiters).
_TRANSCODABLE = {term: python_encoding[term] for term in ASCII_BASED
                 if term not in ("", "ISO_IR 6", "GB18030", "GBK")}
_CHARSET_TAG = 0x00080005
_ESCAPE = 0x1B


def redeclared(data: bytes, implicit: bool, little: bool, stored: tuple[str, ...],
               wanted: str, top: Iterable[Top] | None = None) -> bytes | None:
    """``data`` (a data set, or its part before the pixel data) declared in ``wanted``;
    None when some text would change or cannot be judged (the caller re-encodes).

    ``top``: ``data``'s top-level elements, if the caller has walked them already
    (:func:`client.raw_elements.top_level`); without sequences, they are all there is.
    """
    if stored == (wanted,):
        return data  # as pydicom's path sends it: nothing decoded, nothing to re-declare
    if len(stored) > 1 or (stored[0] if stored else "") not in ASCII_BASED \
            or wanted not in ASCII_BASED:
        return None
    listed = list(top) if top is not None else top_level(data, implicit, little)[0]
    walked: Iterable[Element] = elements(data, implicit, little) \
        if any(element.holds_items() for element in listed) \
        else (Element(0, *element) for element in listed)
    found: tuple[int, int] | None = None  # the stored (0008,0005): offset, end
    insert_at = len(data)
    edits: list[tuple[int, int, bytes]] = []  # bytes from, to, replaced by
    for element in walked:
        vr = _vr(element.tag, element.vr)
        if vr is None or (element.tag & 0xFFFF == 0 and element.depth == 0):
            return None  # a value of unknown form, or a group length the swap would break
        if (vr in _TEXT_VRS or vr == "UN") and element.length != UNDEFINED:
            # UN: pydicom reads a known tag as its dictionary VR, text decoded in the set
            # (a binary UN value with high bytes just sends this object the slow way).
            value = data[element.start:element.start + element.length]
            if not value.isascii() or _ESCAPE in value:
                if element.depth or vr == "UN":
                    return None  # a length to change inside a sequence, or an unknown form
                text = _transcoded(value, vr, stored[0] if stored else "", wanted)
                if text is None or (len(text) > 0xFFFF and vr not in _LONG_TEXT_VRS):
                    return None
                edits.append((element.offset, element.start + element.length,
                              _text_element(element.tag, vr, text, implicit, little)))
        if element.depth == 0 and element.tag == _CHARSET_TAG:
            found = element.offset, element.start + element.length
        elif element.depth == 0 and element.tag > _CHARSET_TAG and insert_at == len(data):
            insert_at = element.offset
    new = _charset_element(wanted, implicit, little)
    edits.append((*found, new) if found is not None else (insert_at, insert_at, new))
    out, at = [], 0
    for start, end, replacement in sorted(edits, key=lambda edit: edit[:2]):
        out += [data[at:start], replacement]
        at = end
    out.append(data[at:])
    return b"".join(out)


def _transcoded(value: bytes, vr: str, stored: str, wanted: str) -> bytes | None:
    """``value`` (a top-level text value in ``stored``) as pydicom writes it in
    ``wanted``: decoded, trailing NULs and spaces stripped, encoded, padded with a space
    to an even length; None unless both sets are :data:`_TRANSCODABLE` and the value is
    one value (no backslash or escape; a person name of one component group) that
    both sets encode."""
    source, target = _TRANSCODABLE.get(stored), _TRANSCODABLE.get(wanted)
    text = value.rstrip(b"\x00 ")
    if source is None or target is None or b"\\" in text or _ESCAPE in text \
            or (vr == "PN" and b"=" in text):
        return None
    try:
        out = text.decode(source).encode(target)
    except (UnicodeDecodeError, UnicodeEncodeError):  # pydicom would warn and replace
        return None
    return out + b" " if len(out) % 2 else out


def _text_element(tag: int, vr: str, value: bytes, implicit: bool, little: bool,
                  ) -> bytes:
    order = "<" if little else ">"
    group, number = tag >> 16, tag & 0xFFFF
    if implicit:
        return struct.pack(order + "HHI", group, number, len(value)) + value
    if vr in _LONG_TEXT_VRS:
        return struct.pack(order + "HH2sHI", group, number, vr.encode(), 0, len(value)) + value
    return struct.pack(order + "HH2sH", group, number, vr.encode(), len(value)) + value


def _vr(tag: int, vr: bytes | None) -> str | None:
    """The element's VR; None for a private or unknown one in Implicit VR (its form
    cannot be known)."""
    return vr.decode("ascii", "replace") if vr is not None else dictionary_vr(tag)


def _charset_element(charset: str, implicit: bool, little: bool) -> bytes:
    value = charset.encode("ascii")
    value += b" " * (len(value) % 2)
    order = "<" if little else ">"
    if implicit:
        return struct.pack(order + "HHI", 0x0008, 0x0005, len(value)) + value
    return struct.pack(order + "HH2sH", 0x0008, 0x0005, b"CS", len(value)) + value
