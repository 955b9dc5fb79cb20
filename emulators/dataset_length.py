"""Whether a received data set is whole, before anything stores it.

pydicom reads a value cut short by the end of the stream as a shorter value, so both
daemons would store (or import) a partial object from a C-STORE whose last PDU was
lost; this walks the element lengths without decoding values.
"""

from __future__ import annotations

import zlib

from pydicom.uid import UID

from client.raw_elements import Malformed, Truncated, elements


def cut_short(body: bytes, transfer_syntax: UID) -> str | None:
    """Why ``body`` (a data set as received) is not whole or not readable, or None.

    pydicom reads a value cut short by the end of the stream as a shorter value, so a
    C-STORE whose last PDU was lost decoded "fine" and was stored as a partial file.
    Every defined length must fit in its container, every undefined-length sequence
    and item must be closed (PS3.5 7.5), every Explicit VR one PS3.5 defines; values
    are skipped, not decoded.
    """
    if transfer_syntax.is_deflated:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            body = inflater.decompress(body)
        except zlib.error as exc:
            return f"deflated data cannot be inflated ({exc})"
        if not inflater.eof:
            return "deflated data cut short"
    try:
        for _element in elements(body, transfer_syntax.is_implicit_VR,
                                 transfer_syntax.is_little_endian):
            pass
    except (Truncated, Malformed) as exc:
        return str(exc)
    return None
