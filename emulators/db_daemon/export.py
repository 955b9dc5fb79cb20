"""What the DB Daemon does to an object on its way out: character set, and export refusals."""

from __future__ import annotations

from pydicom.charset import convert_encodings
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from client.raw_elements import dictionary_vr
from client.site import Quirks

# The VRs whose values are written in the Specific Character Set (PS3.5 6.1.2.3).
_CHARSET_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC", "PN"})


def charset_of(ds: Dataset) -> tuple[str, ...]:
    """The Specific Character Set as a tuple of defined terms; () is the default repertoire."""
    value = ds.get("SpecificCharacterSet")
    if value is None or value == "":
        return ()
    if isinstance(value, MultiValue | list | tuple):
        return tuple(str(v).strip() for v in value)
    return (str(value).strip(),)


def encode_as(ds: Dataset, charset: str) -> Dataset:
    """Re-declare ``ds`` in ``charset``, as the real daemon encodes every export in the
    trusted AE's export character set; values are decoded with the old set first.

    A character the new set cannot hold is sent as ``?`` (pydicom warns), which is
    what a site with a too-narrow export set sees.
    """
    if charset_of(ds) == (charset,):
        return ds
    _decode_text(ds)  # every text value to str, in the character set it was written in
    ds.SpecificCharacterSet = charset
    implicit, little = ds.original_encoding
    if implicit is not None and little is not None:
        # What is still raw does not depend on the character set: written as read, where
        # a changed set would make pydicom convert (and re-encode) every element.
        ds.set_original_encoding(implicit, little, convert_encodings([charset]))
    return ds


def _decode_text(ds: Dataset) -> None:
    """Decode only the elements whose bytes depend on the character set (sequences
    included): ``Dataset.decode()`` converts every element, numbers too, which cost
    0.7 ms of each CT slice's export."""
    for tag in list(ds.keys()):
        elem = ds.get_item(tag)
        vr = elem.VR if elem.VR is not None else dictionary_vr(tag)
        if vr is None:
            continue
        if vr in _CHARSET_VRS:
            ds[tag]  # converted with the data set's (inherited) character set
        elif vr == "SQ":
            for item in ds[tag].value:
                _decode_text(item)


def read_as(ds: Dataset, charset: str) -> Dataset:
    """Decode ``ds``'s text as ``charset`` whatever its (0008,0005) says: the import
    override, for senders that declare one character set and write another.

    Only for a freshly decoded dataset whose elements are still raw bytes.
    """
    implicit, little = ds.original_encoding
    ds.set_original_encoding(implicit, little, convert_encodings([charset]))
    ds.SpecificCharacterSet = charset
    ds.decode()
    return ds


def export_refusal(ds: Dataset, quirks: Quirks) -> str | None:
    """Why the daemon will not export ``ds`` (a failed sub-operation), or None."""
    if quirks.refuse_plans_without_beams and ds.get("Modality") == "RTPLAN" \
            and not ds.get("BeamSequence") and not ds.get("IonBeamSequence"):
        return "RT Plan has an empty Beam Sequence; export refused"
    return None
