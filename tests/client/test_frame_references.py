"""A structure set's referenced frames, series and images, read raw, against pydicom.

:func:`client.frame_references.frame_references` reads ReferencedFrameOfReferenceSequence
from its raw bytes (:func:`client.raw_elements.sequence_items`) when pydicom would read
the same strings, and falls back to pydicom otherwise. Whatever the file (any of the
three uncompressed syntaxes, defined and undefined lengths mixed, missing, padded,
multi-valued or non-UID values, UIDs under another VR, UN-encoded sequences, private
and unrelated nested elements, cut or corrupted sequence bytes), its answer must be
exactly the one pydicom's reading of a fresh copy gives, or the same exception; and the
raw path must be the one taken for plain structure sets, or the speed-up is void.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from unittest import mock

import pydicom
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_sequence_item
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import (
    UID,
    RTStructureSetStorage,
)
from syntaxes import EBE, ELE, ENCODINGS, ILE, Encoding

import client.frame_references as module
from client.frame_references import (
    FrameRef,
    SeriesRef,
    _raw_frame,
    _with_pydicom,
    frame_references,
)
from client.raw_elements import Malformed, RawItem, Truncated, sequence_items

# pydicom warns about the odd values and encodings made here as it writes and reads them.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning",
                                        "ignore::DeprecationWarning")
_SETTINGS = settings(max_examples=150, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

_FRAMES = 0x30060010  # ReferencedFrameOfReferenceSequence
_STUDIES = 0x30060012  # RTReferencedStudySequence
_SERIES = 0x30060014  # RTReferencedSeriesSequence
_IMAGES = 0x30060016  # ContourImageSequence
_FRAME_UID, _SERIES_UID, _IMAGE_UID = 0x00200052, 0x0020000E, 0x00081155
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF


_EVERY_ENCODING = pytest.mark.parametrize("enc", ENCODINGS, ids=["ELE", "ILE", "EBE"])


# -- structure sets built with pydicom ------------------------------------------------------
@dataclass
class Built:
    """A structure set written to bytes; ``plain``: the raw path must read it alone."""

    data: bytes
    enc: Encoding
    plain: bool


class _Draw:
    """Draws the parts of one structure set, noting whether all of it is plain; with
    ``odd_ok`` False, it draws plain parts only, but for odd UID values if ``odd_values``."""

    def __init__(self, draw: st.DrawFn, enc: Encoding, odd_ok: bool, odd_values: bool,
                 ) -> None:
        self.draw, self.enc, self.plain = draw, enc, True
        self.odd_ok, self.odd_values = odd_ok, odd_values

    def pick(self, plain: list[str], odd: list[str], value: bool = False) -> str:
        """One of ``plain`` or (if allowed) of ``odd``, noting the latter."""
        allowed = self.odd_values if value else self.odd_ok
        choice = self.draw(st.sampled_from(plain + odd if allowed else plain))
        if choice in odd:
            self.plain = False
        return choice

    def odd(self) -> None:
        assert self.odd_ok
        self.plain = False


_UID_PART = st.one_of(st.sampled_from(["0", "1", "2", "3", "840", "10008", "113619"]),
                      st.integers(0, 99999).map(str))
_PLAIN_UIDS = st.one_of(  # at most 10 parts of 5 digits: at most 59 characters
    st.lists(_UID_PART, min_size=2, max_size=10).map(".".join),
    st.sampled_from(["1." + "2" * 62, "1." + "2" * 61, "0", "1.2"]))  # 64 and 63 chars


def _odd_texts(uid: str) -> list[str]:
    """Values pydicom reads otherwise than raw bytes, or that are no UID at all."""
    return [
        "", " ", "\x00", uid + " ", uid + "  ", " " + uid, uid + "\x00", uid + "\x00\x00",
        uid + " \x00", uid + "\x00 ", "\x00" + uid, uid + "\\" + uid, uid + "\\", "\\" + uid,
        uid[:1] + " " + uid[1:], "abc", "1.02.3", "1..2", "1.2.", ".1", "01", "1.2\n", "\t1.2",
        "1." + "2" * 63, uid + "é", "1.2.3a", "1.²", "1.2\xa0", "1.2\x00.3",
    ]


def _odd_uid_text(uid: str) -> st.SearchStrategy[str]:
    return st.sampled_from(_odd_texts(uid))


def _uid_element(d: _Draw, tag: int) -> DataElement | None:
    """The element ``tag`` of a UID, plain or oddly valued/encoded; None: absent."""
    draw = d.draw
    kind = d.pick(["plain"] * 8 + ["absent"], ["odd", "vr"], value=True)
    if kind == "absent":
        return None
    uid = draw(_PLAIN_UIDS)
    if kind == "plain":
        return DataElement(tag, "UI", uid)
    if kind == "odd":
        return DataElement(tag, "UI", draw(_odd_uid_text(uid)), validation_mode=0)
    vr = draw(st.sampled_from(_OTHER_VRS))
    return _under(tag, vr, draw(st.one_of(st.just(uid), _odd_uid_text(uid))))


_OTHER_VRS = ["LO", "SH", "CS", "UN", "OB", "UT"]


def _under(tag: int, vr: str, text: str) -> DataElement:
    """The element ``tag`` of ``text`` under ``vr``, as pydicom writes it."""
    if vr in ("UN", "OB"):
        value = text.encode("latin-1", "replace")
        value += b"\x00" * (len(value) % 2)
        element = DataElement(tag, "OB", value)
        element.VR = vr  # not converted to UI, as DataElement() would
        return element
    return DataElement(tag, vr, text, validation_mode=0)


def _extras(d: _Draw, item: Dataset, depth: int) -> None:
    """Elements beside the referenced ones: private, unrelated, nested."""
    draw, enc = d.draw, d.enc
    kinds = ["class", "number", "charset", "private", "private_sq", "unrelated_sq",
             "unknown_public", "pixel_representation"] + (["ambiguous"] if d.odd_ok else [])
    for kind in draw(st.lists(st.sampled_from(kinds), max_size=3, unique=True)):
        if kind == "class":
            item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        elif kind == "number":
            item.InstanceNumber = draw(st.sampled_from(["1", "", " 12 "]))
        elif kind == "charset":  # pydicom reads it with the item: not a plain one
            charset = d.pick(["ISO_IR 100", "ISO_IR 192", "", "ISO_IR 144"],
                             ["FOO", "ISO_IR 100\\ISO_IR 144", " ISO_IR 6"])
            item.add(DataElement(0x00080005, "CS", charset, validation_mode=0))
        elif kind == "private":
            item.add_new(0x00090010, "LO", "DBDSIM")
            item.add_new(0x00091001, "LO", draw(st.sampled_from(["x", "1.2.3", ""])))
            item.add_new(0x00091002, "OB", draw(st.binary(max_size=12)).ljust(2, b"\x00"))
            unknown = DataElement(0x00091003, "OB", b"\xfe\xff\x00\xe0\x00\x00\x00\x00")
            unknown.VR = "UN"
            item.add(unknown)
        elif kind in ("private_sq", "unrelated_sq") and depth < 3:
            inner = [_image_item(d, depth + 1) for _ in range(draw(st.integers(0, 2)))]
            sequence = Sequence(inner)
            # a private sequence of undefined length Implicit VR cannot tell from bytes
            undefined = draw(st.booleans()) if d.odd_ok or not enc.implicit else False
            sequence.is_undefined_length = undefined
            if kind == "private_sq":
                item.add_new(0x00090010, "LO", "DBDSIM")
                item.add_new(0x00091010, "SQ", sequence)
                if enc.implicit and undefined:
                    d.odd()
            else:
                item.ReferencedImageSequence = sequence  # holds ReferencedSOPInstanceUID too
        elif kind == "ambiguous":
            item.add_new(0x00280106, "US", 0)  # SmallestImagePixelValue: "US or SS"
            if not enc.implicit:
                d.odd()
        elif kind == "pixel_representation":  # read by pydicom with a sequence beside
            item.PixelRepresentation = draw(st.integers(0, 1))
        elif kind == "unknown_public":
            item.add_new(0x00109998, "LO", "not in the dictionary")


def _image_item(d: _Draw, depth: int) -> Dataset:
    item = Dataset()
    element = _uid_element(d, _IMAGE_UID)
    if element is not None:
        item.add(element)
    if depth < 3:
        _extras(d, item, depth)
    item.is_undefined_length_sequence_item = d.draw(st.booleans())
    return item


def _implicit_items(items: list[Dataset]) -> bytes:
    """``items`` encoded as a UN value holds them: Implicit VR Little Endian."""
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, True
    for item in items:
        write_sequence_item(fp, item, ["iso8859"])
    return fp.getvalue()


def _sequence_element(d: _Draw, tag: int, items: list[Dataset], top: bool = False,
                      ) -> DataElement | None:
    """The sequence ``tag`` of ``items``: as SQ of either length, or UN-encoded, or absent
    (None), or under another VR."""
    draw, enc = d.draw, d.enc
    # Implicit VR has no VR to say UN: the bytes are those of a sequence. pydicom reads a
    # top-level sequence of undefined length as it reads the file, an empty one as no
    # value, an explicit UN one itself: the raw path is for defined lengths, not UN.
    un = ["UN"] if enc.implicit and not top else []
    if top:
        form = d.pick(["defined"], ["undefined", "absent", "UN", "LO"])
    else:
        form = d.pick(["defined"] * 4 + ["undefined"] * 2 + ["absent"] + un,
                      ["LO"] + ([] if un else ["UN"]))
    if top and not items:
        d.odd()
    if form == "absent":
        return None
    if form == "LO":
        return DataElement(tag, "LO", "1.2.3", validation_mode=0)
    if form == "UN":
        undefined = draw(st.booleans())
        element = DataElement(tag, "OB", _implicit_items(items))
        element.VR = "UN"
        element.is_undefined_length = undefined
        return element
    sequence = Sequence(items)
    sequence.is_undefined_length = form == "undefined"
    return DataElement(tag, "SQ", sequence)


def _referencing_item(d: _Draw, uid_tag: int, sequence_tag: int,
                      children: list[Dataset]) -> Dataset:
    """A frame or series item: its UID (perhaps odd or absent), its children's sequence
    (perhaps absent), extra elements, a defined or undefined length."""
    item = Dataset()
    element = _uid_element(d, uid_tag)
    if element is not None:
        item.add(element)
    sequence = _sequence_element(d, sequence_tag, children)
    if sequence is not None:
        item.add(sequence)
    _extras(d, item, 1)
    item.is_undefined_length_sequence_item = d.draw(st.booleans())
    return item


def _series_item(d: _Draw) -> Dataset:
    images = [_image_item(d, 1) for _ in range(d.draw(st.integers(0, 4)))]
    return _referencing_item(d, _SERIES_UID, _IMAGES, images)


def _study_item(d: _Draw) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    item.ReferencedSOPInstanceUID = d.draw(_PLAIN_UIDS)
    series = [_series_item(d) for _ in range(d.draw(st.integers(0, 2)))]
    sequence = _sequence_element(d, _SERIES, series)
    if sequence is not None:
        item.add(sequence)
    item.is_undefined_length_sequence_item = d.draw(st.booleans())
    return item


def _frame_item(d: _Draw) -> Dataset:
    studies = [_study_item(d) for _ in range(d.draw(st.integers(0, 2)))]
    return _referencing_item(d, _FRAME_UID, _STUDIES, studies)


def _write(ds: Dataset, enc: Encoding) -> bytes:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = enc.syntax
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.set_original_encoding(None, None, None)  # encode as the meta says, whatever it was
    buffer = BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


@st.composite
def structure_sets(draw: st.DrawFn, encodings: tuple[Encoding, ...] = ENCODINGS,
                   odd_ok: bool = True, odd_values: bool | None = None) -> Built:
    """Structure sets in ``encodings``, odd in places if ``odd_ok``; their UID values odd
    in places if ``odd_values`` (by default, if ``odd_ok``)."""
    enc = draw(st.sampled_from(encodings))
    d = _Draw(draw, enc, odd_ok, odd_ok if odd_values is None else odd_values)
    ds = Dataset()
    ds.SOPClassUID = RTStructureSetStorage
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    if draw(st.booleans()):
        ds.SpecificCharacterSet = draw(st.sampled_from(["ISO_IR 100", "ISO_IR 192",
                                                        "ISO_IR 144"]))
    ds.StructureSetLabel = "RT"
    if d.pick(["none"] * 4, ["pixel representation"]) != "none":
        ds.PixelRepresentation = 0  # pydicom reads it as it reads the sequence: its say
    frames = [_frame_item(d) for _ in range(draw(st.integers(0 if odd_ok else 1, 3)))]
    element = _sequence_element(d, _FRAMES, frames, top=True)
    if element is not None:
        ds.add(element)
    roi = Dataset()
    roi.ROINumber = 1
    ds.StructureSetROISequence = Sequence([roi])  # an element after the one read
    return Built(_write(ds, enc), enc, d.plain)


# -- comparing the two readings -------------------------------------------------------------
def _read(data: bytes) -> Dataset:
    return pydicom.dcmread(BytesIO(data), stop_before_pixels=True)


def _outcome(read: Callable[[Dataset], tuple[FrameRef, ...]], data: bytes,
             ) -> tuple[FrameRef, ...] | type[BaseException]:
    """``read`` of a fresh reading of ``data``, or the type of what either raised."""
    try:
        return read(_read(data))
    except Exception as exc:  # the type is what must agree
        return type(exc)


def _raw_answer(ds: Dataset) -> tuple[FrameRef, ...]:
    """The raw path alone: no fallback, whatever it raises is raised."""
    element = ds.get_item(_FRAMES)
    assert isinstance(element, RawDataElement) and isinstance(element.value, bytes)
    assert element.VR in ("SQ", None)
    return tuple(_raw_frame(item) for item in sequence_items(
        element.value, element.is_implicit_VR, element.is_little_endian))


def _agrees(data: bytes, plain: bool = False) -> bool:
    """frame_references on one fresh reading of ``data`` is _with_pydicom's on another;
    with ``plain``, it answered from the raw bytes alone. Whether it fell back."""
    expected = _outcome(_with_pydicom, data)
    with mock.patch.object(module, "_with_pydicom", wraps=_with_pydicom) as fallback:
        got = _outcome(frame_references, data)
    assert got == expected
    if plain:
        assert not fallback.called
        assert _raw_answer(_read(data)) == expected
    if currently_in_test_context():
        event("fell back to pydicom" if fallback.called else "read raw")
    return fallback.called


@_SETTINGS
@given(structure_sets())
def test_the_raw_reading_is_pydicoms(built: Built) -> None:
    """Any structure set, odd anywhere: pydicom's answer, read raw where it is plain."""
    _agrees(built.data, built.plain)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(structure_sets(odd_ok=False))
def test_plain_structure_sets_are_read_raw(built: Built) -> None:
    """Plain ones, however they mix lengths and extra elements, never fall back."""
    assert built.plain
    assert not _agrees(built.data, plain=True)


@_SETTINGS
@given(structure_sets(odd_ok=False, odd_values=True))
def test_odd_values_in_plain_structure_sets_read_as_pydicom_reads_them(built: Built) -> None:
    """Odd values alone, in sequences the raw path reads: each odd value is the raw
    path's to refuse (or to read as pydicom does)."""
    _agrees(built.data, built.plain)


# -- plain structure sets, by hand ----------------------------------------------------------
def _plain_structure_set(enc: Encoding, images: int, undefined_items: bool,
                         undefined_nested: bool) -> bytes:
    def item(**keys: object) -> Dataset:
        ds = Dataset()
        for keyword, value in keys.items():
            setattr(ds, keyword, value)
        ds.is_undefined_length_sequence_item = undefined_items
        return ds

    def sequence(items: list[Dataset]) -> Sequence:
        seq = Sequence(items)
        seq.is_undefined_length = undefined_nested
        return seq

    contour_images = sequence([item(ReferencedSOPClassUID="1.2.840.10008.5.1.4.1.1.2",
                                    ReferencedSOPInstanceUID=f"1.2.3.4.5.{i}")
                               for i in range(images)])
    series = item(SeriesInstanceUID="1.2.3.4.7", ContourImageSequence=contour_images)
    study = item(ReferencedSOPClassUID="1.2.840.10008.3.1.2.3.1",
                 ReferencedSOPInstanceUID="1.2.3.4.8",
                 RTReferencedSeriesSequence=sequence([series]))
    frame = item(FrameOfReferenceUID="1.2.3.4.9",
                 RTReferencedStudySequence=sequence([study]))
    ds = Dataset()
    ds.SOPClassUID = RTStructureSetStorage
    ds.SOPInstanceUID = "1.2.3.4.10"
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame, item()])
    return _write(ds, enc)


@_EVERY_ENCODING
@pytest.mark.parametrize("undefined_items", [False, True])
@pytest.mark.parametrize("undefined_nested", [False, True])
def test_a_plain_structure_set_is_read_raw(enc: Encoding, undefined_items: bool,
                                           undefined_nested: bool) -> None:
    data = _plain_structure_set(enc, 120, undefined_items, undefined_nested)
    assert not _agrees(data, plain=True)
    assert frame_references(_read(data)) == (
        FrameRef("1.2.3.4.9", (SeriesRef("1.2.3.4.7", tuple(
            f"1.2.3.4.5.{i}" for i in range(120))),)),
        FrameRef(None, ()))


def _one_odd(enc: Encoding, element: DataElement) -> bytes:
    """A plain structure set but for ``element``, in place of its tag's first element."""
    ds = _read(_plain_structure_set(enc, 2, False, False))
    ds.set_original_encoding(None, None, None)
    frame = ds.ReferencedFrameOfReferenceSequence[0]
    series = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    holder = {_FRAME_UID: frame, _SERIES_UID: series,
              _IMAGE_UID: series.ContourImageSequence[0]}[element.tag]
    holder[element.tag] = element
    return _write(ds, enc)


_UID_TAGS = pytest.mark.parametrize("tag", [_FRAME_UID, _SERIES_UID, _IMAGE_UID],
                                    ids=["frame", "series", "image"])


@_EVERY_ENCODING
@_UID_TAGS
@pytest.mark.parametrize("text", _odd_texts("1.2.840.5"))
def test_each_odd_value_reads_as_pydicom_reads_it(enc: Encoding, tag: int, text: str) -> None:
    _agrees(_one_odd(enc, DataElement(tag, "UI", text, validation_mode=0)))


@_EVERY_ENCODING
@_UID_TAGS
@pytest.mark.parametrize("vr", _OTHER_VRS)
@pytest.mark.parametrize("text", ["1.2.840.5", "1.2.840.56", " 1.2", "1.2\\1.3"])
def test_a_uid_under_another_vr_reads_as_pydicom_reads_it(enc: Encoding, tag: int, vr: str,
                                                         text: str) -> None:
    _agrees(_one_odd(enc, _under(tag, vr, text)))


# -- what pydicom reads beside the values asked for -------------------------------------------
def _with_character_set(enc: Encoding, where: str, value: bytes) -> bytes:
    """A plain structure set whose item ``where`` has a Specific Character Set of
    ``value`` (10 bytes; written as ISO_IR 100, which pydicom can write, then replaced)."""
    ds = _read(_plain_structure_set(enc, 2, False, False))
    ds.set_original_encoding(None, None, None)
    frame = ds.ReferencedFrameOfReferenceSequence[0]
    series = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    if where == "unrelated":  # an undefined-length sequence pydicom reads with its item
        holder = Dataset()
        unrelated = Sequence([holder])
        unrelated.is_undefined_length = True
        series.ReferencedImageSequence = unrelated
    else:
        holder = {"frame": frame, "image": series.ContourImageSequence[0]}[where]
    holder.SpecificCharacterSet = "ISO_IR 100"
    data = _write(ds, enc)
    assert data.count(b"ISO_IR 100") == 1 and len(value) == 10
    return data.replace(b"ISO_IR 100", value)


@_EVERY_ENCODING
@pytest.mark.parametrize("where", ["frame", "image", "unrelated"])
@pytest.mark.parametrize("value", [b"ISO_IR\x00100", b"\x00SO_IR 100", b"ISO_IR 1\x00\x00",
                                   b" ISO_IR 10", b"ISO_IR 6\\\\", b"ISO 2022 \x1b", b"FOO       "])
def test_an_item_character_set_pydicom_may_fail_on_is_pydicoms_to_read(
        enc: Encoding, where: str, value: bytes) -> None:
    """pydicom reads an item's Specific Character Set as it reads the item (and those of
    the undefined-length sequences in it); one with a NUL inside makes it fail, as a
    ValueError it turns into a TypeError. The raw path leaves any but a single
    ASCII-based one to pydicom."""
    assert _agrees(_with_character_set(enc, where, value))


@_EVERY_ENCODING
@pytest.mark.parametrize("where", ["frame", "image", "unrelated"])
@pytest.mark.parametrize("value", [b"ISO_IR 100", b"ISO_IR 192", b"ISO_IR 6  ",
                                   b"ISO_IR 6\x00\x00", b"GB18030\x00  "])
def test_an_ascii_based_item_character_set_is_read_raw(enc: Encoding, where: str,
                                                       value: bytes) -> None:
    assert not _agrees(_with_character_set(enc, where, value), plain=True)


def _element(tag: int, vr: bytes, value: bytes, enc: Encoding) -> bytes:
    """A short-VR (or Implicit VR) element, packed by hand."""
    order = "<" if enc.little else ">"
    if enc.implicit:
        return struct.pack(order + "HHI", tag >> 16, tag & 0xFFFF, len(value)) + value
    return struct.pack(order + "HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def _with_pixel_representation(enc: Encoding, where: str, value: bytes) -> bytes:
    """One frame, study, series and image, the item ``where`` with a Pixel Representation
    of ``value`` (the data set's, for "top"), packed by hand."""
    def extra(here: str) -> bytes:
        return _element(0x00280103, b"US", value, enc) if where == here else b""

    def item(body: bytes) -> bytes:
        return _item(body, enc.little, False)

    def sequence(tag: int, value: bytes) -> bytes:
        return _sequence(tag, value, enc.implicit, enc.little, False)

    image = item(_element(_IMAGE_UID, b"UI", b"1.2.3\x00", enc) + extra("image"))
    series = item(_element(_SERIES_UID, b"UI", b"4.56", enc) + extra("series")
                  + sequence(_IMAGES, image))
    study = item(extra("study") + sequence(_SERIES, series))
    frame = item(_element(_FRAME_UID, b"UI", b"7.89", enc) + extra("frame")
                 + sequence(_STUDIES, study))
    top = {0x00280103: RawDataElement(Tag(0x00280103), None if enc.implicit else "US",
                                      len(value), value, 0, enc.implicit, enc.little)}
    return _packed(frame, enc, top if where == "top" else {})


@_EVERY_ENCODING
@pytest.mark.parametrize("where", ["top", "frame", "study", "series", "image"])
@pytest.mark.parametrize("value", [b"\x01", b"\x01\x00\x00", b"", b"\x00\x01",
                                   b"\x01\x00\x01\x00"], ids=["1", "3", "0", "2", "4"])
def test_a_pixel_representation_pydicom_may_fail_on_is_pydicoms_to_read(
        enc: Encoding, where: str, value: bytes) -> None:
    """pydicom reads a data set's (an item's) Pixel Representation as it reads a sequence
    in it, and fails on one of an odd length (a BytesLengthException): the raw path
    leaves such items, and any data set with one, to pydicom."""
    data = _with_pixel_representation(enc, where, value)
    fell_back = _agrees(data, plain=not len(value) % 2 and where != "top")
    assert fell_back is (len(value) % 2 == 1 or where == "top")


@_EVERY_ENCODING
@pytest.mark.parametrize("stray", [_SEQUENCE_END, _ITEM_END, _FRAME_UID],
                         ids=["sequence-end", "item-end", "element"])
@pytest.mark.parametrize("where", ["frames", "images"])
def test_a_stray_tag_where_an_item_should_be_reads_as_pydicom_reads_it(
        enc: Encoding, stray: int, where: str) -> None:
    """pydicom reads whatever stands where an item should be as an item, but for a
    Sequence Delimitation Item, at which it stops reading the sequence (of a defined
    length too); the raw path leaves both to pydicom."""
    order = "<" if enc.little else ">"

    def items(uids: list[bytes], tag: int) -> bytes:
        packed = [_item(_element(tag, b"UI", uid, enc), enc.little, False) for uid in uids]
        head = struct.pack(order + "HH", stray >> 16, stray & 0xFFFF)
        return packed[0] + head + packed[1][4:]  # the second item's tag replaced

    images = items([b"1.2.3\x00", b"1.2.4\x00"], _IMAGE_UID) if where == "images" \
        else _item(_element(_IMAGE_UID, b"UI", b"1.2.3\x00", enc), enc.little, False)
    series = _item(_sequence(_IMAGES, images, enc.implicit, enc.little, False), enc.little,
                   False)
    study = _item(_sequence(_SERIES, series, enc.implicit, enc.little, False), enc.little,
                  False)
    frame = _item(_element(_FRAME_UID, b"UI", b"7.89", enc)
                  + _sequence(_STUDIES, study, enc.implicit, enc.little, False), enc.little,
                  False)
    frames = items([b"7.89", b"7.90"], _FRAME_UID) if where == "frames" else frame
    if where == "frames":  # the first frame with its study, the stray one without
        frames = frame + frames[len(_item(_element(_FRAME_UID, b"UI", b"7.89", enc),
                                          enc.little, False)):]
    assert _agrees(_packed(frames, enc))


def test_no_references_read_as_none() -> None:
    ds = Dataset()
    ds.SOPClassUID = RTStructureSetStorage
    ds.SOPInstanceUID = "1.2.3.4.10"
    assert frame_references(_read(_write(ds, ELE))) == ()


# -- sequence bytes cut short or corrupted ---------------------------------------------------
def _value_span(data: bytes) -> tuple[int, int, Encoding]:
    """Where ReferencedFrameOfReferenceSequence's value lies in ``data``, read raw."""
    element = _read(data).get_item(_FRAMES)
    assert isinstance(element, RawDataElement) and isinstance(element.value, bytes)
    enc = Encoding(UID(""), bool(element.is_implicit_VR), bool(element.is_little_endian))
    assert data[element.value_tell:element.value_tell + len(element.value)] == element.value
    return element.value_tell, element.value_tell + len(element.value), enc


_PLAIN_SETS = structure_sets(odd_ok=False)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(_PLAIN_SETS)
def test_every_cut_of_a_sequence_is_refused_or_a_prefix(built: Built) -> None:
    """A cut value is refused (Truncated, Malformed; nothing else), but for a cut between
    top-level items: that is a shorter sequence, read as such (and as pydicom reads a
    value cut by the end of its file)."""
    assert built.plain
    start, end, enc = _value_span(built.data)
    value = built.data[start:end]
    whole = sequence_items(value, enc.implicit, enc.little)
    for cut in range(len(value)):
        try:
            items = sequence_items(value[:cut], enc.implicit, enc.little)
        except (Truncated, Malformed):
            continue
        assert items == whole[:len(items)] and len(items) < len(whole), cut


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(_PLAIN_SETS, st.data())
def test_a_file_cut_inside_the_sequence_reads_as_pydicom_reads_it(built: Built,
                                                                   data: st.DataObject) -> None:
    """A file cut short inside the sequence, as a peer's or a crash's: pydicom's answer."""
    start, end, _ = _value_span(built.data)
    cut = data.draw(st.integers(start, end - 1), label="cut")
    _agrees(built.data[:cut])


_INTERESTING = st.sampled_from([  # bytes of lengths, tags, delimiters, VRs and UIDs
    0x00, 0xFF, 0xFE, 0xE0, 0xDD, 0x0D, 0x01, 0x08, 0x20, 0x30, 0x55, *b"SQUNOBILT .\\0129"])


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(_PLAIN_SETS, st.data())
def test_corrupted_sequence_bytes_read_as_pydicom_reads_them(built: Built,
                                                            data: st.DataObject) -> None:
    """Bytes changed anywhere in the value: refused (Truncated, Malformed; nothing else),
    or read, and then as pydicom reads them."""
    start, end, enc = _value_span(built.data)
    corrupted = bytearray(built.data)
    for _ in range(data.draw(st.integers(1, 4), label="changes")):
        at = data.draw(st.integers(start, end - 1), label="at")
        corrupted[at] = data.draw(st.one_of(_INTERESTING, st.integers(0, 255)), label="to")
    try:
        sequence_items(bytes(corrupted[start:end]), enc.implicit, enc.little)
        event("corrupted: read raw")
    except (Truncated, Malformed):
        event("corrupted: refused")
    _agrees(bytes(corrupted))


# -- nesting ----------------------------------------------------------------------------------
def _item(body: bytes, little: bool, undefined: bool) -> bytes:
    order = "<" if little else ">"
    if undefined:
        return struct.pack(order + "HHI", 0xFFFE, 0xE000, _UNDEFINED) + body \
            + struct.pack(order + "HHI", 0xFFFE, 0xE00D, 0)
    return struct.pack(order + "HHI", 0xFFFE, 0xE000, len(body)) + body


def _sequence(tag: int, value: bytes, implicit: bool, little: bool, undefined: bool) -> bytes:
    order = "<" if little else ">"
    length = _UNDEFINED if undefined else len(value)
    if implicit:
        head = struct.pack(order + "HHI", tag >> 16, tag & 0xFFFF, length)
    else:
        head = struct.pack(order + "HH2sHI", tag >> 16, tag & 0xFFFF, b"SQ", 0, length)
    tail = struct.pack(order + "HHI", 0xFFFE, 0xE0DD, 0) if undefined else b""
    return head + value + tail


def _nested(levels: int, implicit: bool, little: bool, undefined: bool,
            tag: int = 0x00081140) -> bytes:
    """A sequence value whose one item holds a sequence whose one item holds ...,
    ``levels`` sequences below the top one."""
    value = _item(b"", little, undefined)
    for _ in range(levels):
        value = _item(_sequence(tag, value, implicit, little, undefined), little, undefined)
    return value


def _depth(items: list[RawItem]) -> int:
    depth = 0
    while items:
        nested = [v for v in items[0].values() if isinstance(v, list)]
        if not nested:
            break
        items, depth = nested[0], depth + 1
    return depth


@pytest.mark.parametrize(("enc", "tag"), [  # Implicit VR reads a private sequence as bytes
    (ELE, 0x00081140), (ILE, 0x00081140), (EBE, 0x00081140), (ELE, 0x00091010),
    (EBE, 0x00091010)], ids=["ELE", "ILE", "EBE", "ELE-private", "EBE-private"])
@pytest.mark.parametrize("undefined", [False, True])
def test_nesting_deeper_than_16_is_refused(enc: Encoding, undefined: bool, tag: int) -> None:
    """16 sequences below the top one are read; 17 and more are refused, not recursed
    into until Python's stack runs out."""
    assert _depth(sequence_items(_nested(16, enc.implicit, enc.little, undefined, tag),
                                 enc.implicit, enc.little)) == 16
    for levels in (17, 18, 5000):
        with pytest.raises(Malformed):
            sequence_items(_nested(levels, enc.implicit, enc.little, undefined, tag),
                           enc.implicit, enc.little)


@pytest.mark.parametrize("undefined", [False, True])
def test_deep_nesting_in_a_file_reads_as_pydicom_reads_it(undefined: bool) -> None:
    uid = struct.pack("<HH2sH", 0x0020, 0x0052, b"UI", 4) + b"1.23"
    nested = _sequence(0x00081140, _nested(40, False, True, undefined), False, True,
                       undefined)
    data = _packed(_item(uid + nested, True, False))
    assert _agrees(data)  # refused raw (Malformed): pydicom's answer
    with pytest.raises(Malformed):
        _raw_answer(_read(data))
    assert frame_references(_read(data)) == (FrameRef("1.23", ()),)


# -- values pinned --------------------------------------------------------------------------
def _one_image(value: bytes, vr: bytes = b"UI") -> bytes:
    """A file whose one ContourImageSequence item's ReferencedSOPInstanceUID is ``value``
    under ``vr`` (Explicit VR Little Endian, encoded by hand)."""
    order = "<"
    if vr in (b"UN", b"OB", b"UT"):
        element = struct.pack(order + "HH2sHI", 0x0008, 0x1155, vr, 0, len(value)) + value
    else:
        element = struct.pack(order + "HH2sH", 0x0008, 0x1155, vr, len(value)) + value
    image = _item(element, True, False)
    images = struct.pack("<HH2sHI", 0x3006, 0x0016, b"SQ", 0, len(image)) + image
    series = _item(images, True, False)
    serieses = struct.pack("<HH2sHI", 0x3006, 0x0014, b"SQ", 0, len(series)) + series
    study = _item(serieses, True, False)
    studies = struct.pack("<HH2sHI", 0x3006, 0x0012, b"SQ", 0, len(study)) + study
    return _packed(_item(studies, True, False))


def _packed(frames: bytes, enc: Encoding = ELE,
            others: dict[int, RawDataElement] | None = None) -> bytes:
    """A file in ``enc`` whose ReferencedFrameOfReferenceSequence value is ``frames``, as
    packed by hand (and with the ``others`` elements)."""
    ds = Dataset()
    for tag, other in (others or {}).items():
        ds[tag] = other
    ds.SOPClassUID = RTStructureSetStorage
    ds.SOPInstanceUID = "1.2.3.4.10"
    ds[_FRAMES] = RawDataElement(Tag(_FRAMES), None if enc.implicit else "SQ", len(frames),
                                 frames, 0, enc.implicit, enc.little)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = enc.syntax
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.set_original_encoding(enc.implicit, enc.little, "iso8859")  # raw values as they are
    buffer = BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    data = buffer.getvalue()
    assert frames in data
    return data


@pytest.mark.parametrize(("value", "vr", "raw"), [
    (b"1.2.3\x00", b"UI", True),
    (b"1.2.34", b"UI", True),
    (b"1.2.3 ", b"UI", False),
    (b"1.2.3\x00\x00", b"UI", False),
    (b" 1.2.3", b"UI", False),
    (b"1.2\\1.3", b"UI", False),
    (b"", b"UI", False),
    (b"1.02", b"UI", False),
    (b"1.2.3\xe9", b"UI", False),
    (b"1." + b"2" * 62 + b"\x00", b"UI", True),
    (b"1." + b"2" * 63, b"UI", False),
    (b"1.2.34", b"LO", False),
    (b"1.2.34", b"UN", False),
])
def test_a_uid_value_is_read_as_pydicom_reads_it(value: bytes, vr: bytes, raw: bool) -> None:
    data = _one_image(value, vr)
    assert _agrees(data) is not raw


# -- pydicom's guesses at the encoding ------------------------------------------------------
_FRAME_UID_IMPLICIT = struct.pack("<HHI", 0x0020, 0x0052, 4) + b"1.23"


def test_an_item_in_implicit_vr_in_an_explicit_file_reads_as_pydicom_reads_it() -> None:
    """pydicom reads an item whose first element has no VR as Implicit VR (as PS3.5 6.2.2
    allows for UN sequences); the raw path leaves it to pydicom."""
    data = _packed(_item(_FRAME_UID_IMPLICIT, True, False))
    assert _agrees(data)
    assert frame_references(_read(data)) == (FrameRef("1.23", ()),)


@pytest.mark.parametrize("first", [b"", struct.pack("<HH2sH", 0x0008, 0x1150, b"UI", 4) + b"1.23"],
                         ids=["first", "second"])
def test_an_element_without_vr_in_an_explicit_item_reads_as_pydicom_reads_it(
        first: bytes) -> None:
    """pydicom reads an element with no VR (bytes outside A-Z where the VR should be) in
    Implicit VR: as the item's first, the whole item; later, that element. Here its value
    would read in Explicit VR as a FrameOfReferenceUID of 9.99 had its VR been skipped."""
    hidden = struct.pack("<HH2sH", 0x0020, 0x0052, b"UI", 4) + b"9.99"
    private = struct.pack("<HHI", 0x0009, 0x1001, len(hidden)) + hidden
    data = _packed(_item(first + private, True, False))
    assert _agrees(data)
    assert frame_references(_read(data)) == (FrameRef(None, ()),)


def test_an_implicit_item_whose_first_length_reads_as_a_vr_is_read_raw() -> None:
    """In Implicit VR pydicom never switches to Explicit VR inside a sequence, whatever
    the bytes where a VR would be (here a length of 0x4F4C: "LO"); nor does the raw path."""
    private = struct.pack("<HHI", 0x0009, 0x1001, 0x4F4C) + b"\x00" * 0x4F4C
    data = _packed(_item(private + _FRAME_UID_IMPLICIT, True, False), ILE)
    assert not _agrees(data, plain=True)
    assert frame_references(_read(data)) == (FrameRef("1.23", ()),)


def test_an_implicit_data_set_declared_explicit_is_read_raw_as_pydicom_reads_it() -> None:
    """pydicom reads a data set whose first element has no VR as Implicit VR, whatever its
    File Meta says; so does the raw path, told by the element it read."""
    implicit = _plain_structure_set(ILE, 3, False, False)
    explicit = _plain_structure_set(ELE, 3, False, False)
    head = 132 + 12 + struct.unpack_from("<I", explicit, 140)[0]  # preamble, DICM, meta
    body = implicit[132 + 12 + struct.unpack_from("<I", implicit, 140)[0]:]
    data = explicit[:head] + body
    element = _read(data).get_item(_FRAMES)
    assert isinstance(element, RawDataElement) and element.is_implicit_VR
    assert not _agrees(data, plain=True)
    assert frame_references(_read(data)) == frame_references(_read(explicit))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.booleans(), st.booleans())
def test_any_bytes_are_read_or_refused(value: bytes, implicit: bool, little: bool) -> None:
    """Nothing but Truncated or Malformed escapes: no struct.error, IndexError, ..."""
    with contextlib.suppress(Truncated, Malformed):
        sequence_items(value, implicit, little)


_TREE_UID_TAGS = st.sampled_from([_FRAME_UID, _SERIES_UID, _IMAGE_UID, 0x00081150, 0x00091001,
                                   0x00080005, 0x00280106, 0x00200000, 0x00109998])
_TREE_SQ_TAGS = st.sampled_from([_STUDIES, _SERIES, _IMAGES, 0x00081140, 0x00091010,
                                 _FRAME_UID])
_TREE_VRS = st.sampled_from([b"UI"] * 6 + [b"LO", b"UN", b"OB", b"US", b"CS", b"ZZ", b"\x00\x00"])
_TREE_SQ_VRS = st.sampled_from([b"SQ"] * 6 + [b"UN", b"OB", b"LO"])
_SLIPS = st.sampled_from([0] * 12 + [-2, -1, 1, 2, 8])  # most lengths right, some not


class _Tree:
    """Packs items and elements of a sequence value, each length right or slipped."""

    def __init__(self, enc: Encoding) -> None:
        self.enc, self.order = enc, "<" if enc.little else ">"

    def element(self, tag: int, vr: bytes, value: bytes, slip: int, undefined: bool = False,
                ) -> bytes:
        group, number = tag >> 16, tag & 0xFFFF
        length = _UNDEFINED if undefined else max(0, len(value) + slip)
        if self.enc.implicit:
            return struct.pack(self.order + "HHI", group, number, length) + value
        if vr in (b"SQ", b"UN", b"OB", b"UT"):
            return struct.pack(self.order + "HH2sHI", group, number, vr, 0, length) + value
        return struct.pack(self.order + "HH2sH", group, number, vr, length & 0xFFFF) + value

    def item(self, body: bytes, slip: int, undefined: bool, closed: bool) -> bytes:
        length = _UNDEFINED if undefined else max(0, len(body) + slip)
        end = struct.pack(self.order + "HHI", 0xFFFE, 0xE00D, 0) if undefined and closed \
            else b""
        return struct.pack(self.order + "HHI", 0xFFFE, 0xE000, length) + body + end

    def delimiter(self) -> bytes:
        return struct.pack(self.order + "HHI", 0xFFFE, 0xE0DD, 0)


@st.composite
def _tree_value(draw: st.DrawFn, tree: _Tree, depth: int = 0) -> bytes:
    """A sequence value: items of UID-like elements and nested sequences, with lengths,
    VRs, delimiters and order mostly right."""
    items = []
    for _ in range(draw(st.integers(0, 3))):
        elements = []
        for _ in range(draw(st.integers(0, 3))):
            if depth < 3 and draw(st.integers(0, 2)) == 0:
                undefined = draw(st.booleans())
                nested = draw(_tree_value(tree, depth + 1))
                if undefined and draw(st.integers(0, 9)):
                    nested += tree.delimiter()
                tag = draw(_TREE_SQ_TAGS)
                elements.append((tag, tree.element(tag, draw(_TREE_SQ_VRS), nested,
                                                   draw(_SLIPS), undefined)))
            else:
                tag = draw(_TREE_UID_TAGS)
                value = draw(st.one_of(_PLAIN_UIDS.map(str.encode),
                                       st.binary(max_size=6))) + draw(st.sampled_from(
                                           [b"", b"\x00", b" "]))
                elements.append((tag, tree.element(tag, draw(_TREE_VRS), value,
                                                   draw(_SLIPS))))
        if draw(st.integers(0, 9)):
            elements.sort(key=lambda element: element[0])
        undefined = draw(st.booleans())
        items.append(tree.item(b"".join(packed for _, packed in elements), draw(_SLIPS),
                               undefined, closed=bool(draw(st.integers(0, 9)))))
    return b"".join(items)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_sequence_trees_are_refused_or_read_as_pydicom_reads_them(data: st.DataObject,
                                                                   ) -> None:
    """Sequence values built item by item, right but for a slip here and there (a length,
    a VR, a delimiter, the order): refused, or read as pydicom reads them."""
    enc = data.draw(st.sampled_from(ENCODINGS), label="encoding")
    value = data.draw(_tree_value(_Tree(enc)), label="value")
    try:
        sequence_items(value, enc.implicit, enc.little)
        event("tree: read raw")
    except (Truncated, Malformed):
        event("tree: refused")
    _agrees(_packed(value, enc))
