"""What a structure set was drawn on: its referenced frames, series and images.

rtmove reads them twice per structure set, once to find the image series to move and
once to check what arrived; for a 120-slice CT, pydicom's decoding of the 120
ContourImageSequence items took 3 ms each time, on the path to the images' move. They
are read here from the sequence's raw bytes
(:func:`client.raw_elements.sequence_items`) whenever pydicom would read the same
strings, and with pydicom otherwise.
"""

from __future__ import annotations

from typing import NamedTuple

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from .dimse_commands import plain_uid
from .raw_elements import Malformed, RawItem, Truncated, sequence_items

_FRAMES = 0x30060010  # ReferencedFrameOfReferenceSequence
_FRAME_UID = 0x00200052  # FrameOfReferenceUID
_STUDIES = 0x30060012  # RTReferencedStudySequence
_SERIES = 0x30060014  # RTReferencedSeriesSequence
_SERIES_UID = 0x0020000E  # SeriesInstanceUID
_IMAGES = 0x30060016  # ContourImageSequence
_IMAGE_UID = 0x00081155  # ReferencedSOPInstanceUID
_PIXEL_REPRESENTATION = 0x00280103  # pydicom reads it as it reads the sequence: may fail


class SeriesRef(NamedTuple):
    """An RTReferencedSeriesSequence item."""

    uid: str | None  # SeriesInstanceUID, None where absent
    images: tuple[str | None, ...]  # each ContourImageSequence item's ReferencedSOPInstanceUID


class FrameRef(NamedTuple):
    """A ReferencedFrameOfReferenceSequence item."""

    uid: str | None  # FrameOfReferenceUID, None where absent
    series: tuple[SeriesRef, ...]  # those of all its RTReferencedStudySequence items


def frame_references(ds: Dataset) -> tuple[FrameRef, ...]:
    """``ds``'s ReferencedFrameOfReferenceSequence, as pydicom reads its strings."""
    element = ds.get_item(_FRAMES) if _FRAMES in ds else None
    if element is None:
        return ()
    if isinstance(element, RawDataElement) and isinstance(element.value, bytes) \
            and element.VR in ("SQ", None) and _PIXEL_REPRESENTATION not in ds:
        try:
            return tuple(_raw_frame(item) for item in sequence_items(
                element.value, element.is_implicit_VR, element.is_little_endian))
        except (Malformed, Truncated, _NotPlain):
            pass  # pydicom reads it, and says what is wrong
    return _with_pydicom(ds)


class _NotPlain(Exception):
    """A value pydicom may read otherwise than as a plain string."""


def _raw_frame(item: RawItem) -> FrameRef:
    return FrameRef(_uid(item, _FRAME_UID), tuple(
        SeriesRef(_uid(series, _SERIES_UID),
                  tuple(_uid(image, _IMAGE_UID) for image in _sequence(series, _IMAGES)))
        for study in _sequence(item, _STUDIES) for series in _sequence(study, _SERIES)))


def _sequence(item: RawItem, tag: int) -> list[RawItem]:
    value = item.get(tag, [])
    if not isinstance(value, list):
        raise _NotPlain
    return value


def _uid(item: RawItem, tag: int) -> str | None:
    value = item.get(tag)
    if value is None:
        return None
    if not isinstance(value, bytes):
        raise _NotPlain
    uid = plain_uid(value)
    if uid is None:  # empty, padded otherwise, several values, not a UID: pydicom's say
        raise _NotPlain
    return uid


def _with_pydicom(ds: Dataset) -> tuple[FrameRef, ...]:
    return tuple(
        FrameRef(_text(frame.get("FrameOfReferenceUID")), tuple(
            SeriesRef(_text(series.get("SeriesInstanceUID")), tuple(
                _text(image.get("ReferencedSOPInstanceUID"))
                for image in series.get("ContourImageSequence", [])))
            for study in frame.get("RTReferencedStudySequence", [])
            for series in study.get("RTReferencedSeriesSequence", [])))
        for frame in ds.get("ReferencedFrameOfReferenceSequence", []))


def _text(value: object) -> str | None:
    return None if value is None else str(value)


__all__ = ["FrameRef", "SeriesRef", "frame_references"]
