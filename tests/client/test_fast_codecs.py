"""The hand-packed encodings that replace pydicom/pynetdicom on hot paths.

Each packs (or walks) bytes whose layout is fixed by the standard; each must give exactly
what the library it replaces gives, or hand the case back (None) for the library to do.
The references here are the libraries themselves: pydicom's File Meta writer,
pynetdicom's DIMSE message encoding and pydicom's reader.
"""

from __future__ import annotations

import copy
import random
import struct
import warnings
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.charset import python_encoding
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filereader import read_dataset, read_file_meta_info
from pydicom.sequence import Sequence
from pydicom.uid import (
    JPEG2000,
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom.dimse import _RQ_TO_MESSAGE, _RSP_TO_MESSAGE
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_GET, C_MOVE, C_STORE
from pynetdicom.dsutils import decode, encode

from client import dimse_commands, file_meta
from client.files import (
    Received,
    _pydicom_header,
    part10_body,
    part10_transfer_syntax,
    write_received,
)
from client.raw_elements import ASCII_BASED, Element, Truncated, elements
from client.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from emulators.dataset_length import cut_short
from emulators.db_daemon.charset_swap import redeclared
from emulators.db_daemon.export import encode_as
from emulators.files import write_part10, write_patient
from emulators.synthetic import SyntheticConfig, make_recipe

_SETTINGS = settings(max_examples=150, deadline=None)
_PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
# Any digits and dots, as a peer may send them (pydicom warns about invalid ones).
_DIGITS_AND_DOTS = st.text(alphabet="0123456789.", min_size=1, max_size=64)
# pynetdicom's AE validator refuses a backslash (see the dedicated test below).
_AE_CHARACTERS = st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="\\")


def _plain(max_size: int, min_size: int = 0) -> st.SearchStrategy[str]:
    """Printable ASCII without a backslash or outer spaces: what the packers pack (the
    rest is left to pydicom and pynetdicom, which strip, split or refuse it)."""
    return st.text(alphabet=_AE_CHARACTERS, min_size=min_size, max_size=max_size).filter(
        lambda text: text == text.strip())


_AE_TITLES = _plain(16)
_TRANSFER_SYNTAXES = [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian,
                      DeflatedExplicitVRLittleEndian, JPEGBaseline8Bit, JPEGExtended12Bit,
                      JPEGLossless, JPEGLosslessSV1, JPEGLSLossless, JPEGLSNearLossless,
                      JPEG2000Lossless, JPEG2000, RLELossless]
# (implicit VR, little endian): the three uncompressed encodings a data set comes in.
_ENCODINGS = [(False, True), (True, True), (False, False)]
_ENCODING_IDS = ["explicit-le", "implicit-le", "explicit-be"]
_SYNTAX_OF = {(False, True): ExplicitVRLittleEndian, (True, True): ImplicitVRLittleEndian,
              (False, False): ExplicitVRBigEndian}


def _uids() -> st.SearchStrategy[str]:
    """Syntactically valid UIDs (no leading zeros), every length from 1 to 64: joined
    components cut to 64 characters (a cut component stays a valid one)."""
    component = st.integers(0, 10**12).map(str)
    return st.lists(component, min_size=1, max_size=20).map(
        lambda parts: ".".join(parts)[:64].rstrip("."))


def _encoded(ds: Dataset, implicit: bool, little: bool) -> bytes:
    data = encode(ds, implicit, little)
    assert data is not None, "pydicom could not encode the reference data set"
    return data


def _decoded(data: bytes, implicit: bool, little: bool) -> Dataset:
    return read_dataset(BytesIO(data), implicit, little)


def _pydicom_walk(ds: Dataset, depth: int = 0) -> Iterator[tuple[int, int]]:
    """(depth, tag) of every element as pydicom iterates it, items' contents included."""
    for elem in ds:
        yield depth, int(elem.tag)
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _pydicom_walk(item, depth + 1)


def _walk(data: bytes, implicit: bool, little: bool) -> list[tuple[int, int]]:
    return [(e.depth, e.tag) for e in elements(data, implicit, little)]


# --- client.file_meta ------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
@_SETTINGS
@given(sop_class=_uids() | _DIGITS_AND_DOTS, sop_uid=_uids() | _DIGITS_AND_DOTS,
       syntax=st.sampled_from(_TRANSFER_SYNTAXES), source_ae=_AE_TITLES)
def test_header_equals_pydicoms_file_meta(sop_class: str, sop_uid: str, syntax: UID,
                                          source_ae: str) -> None:
    """Every file the daemons store starts with this header: it must be the bytes pydicom
    wrote before, for any UID length (odd ones padded with NUL) and AE (space padded)."""
    packed = file_meta.header(sop_class, sop_uid, str(syntax), source_ae)
    assert packed is not None
    assert packed == _pydicom_header(sop_class, sop_uid, str(syntax), source_ae)


@pytest.mark.parametrize("length", [1, 2, 63, 64])
@pytest.mark.parametrize("source_ae", ["", "A", "AB", "SIXTEEN_CHARS_AE", "IN SIDE"])
def test_header_at_length_limits(length: int, source_ae: str) -> None:
    """The longest UIDs and AE titles a VR allows are packed, and equal pydicom's."""
    uid = ("1." * 32)[:length - 1] + "9" if length > 1 else "9"
    packed = file_meta.header(uid, uid, str(ExplicitVRLittleEndian), source_ae)
    assert packed == _pydicom_header(uid, uid, str(ExplicitVRLittleEndian), source_ae)


def test_header_layout() -> None:
    """Part 10 framing: 128 zero bytes, DICM, and a group length covering the group."""
    packed = file_meta.header("1.2", "1.2.3", str(ImplicitVRLittleEndian), "SRC")
    assert packed is not None
    assert packed[:132] == b"\x00" * 128 + b"DICM"
    assert packed[132:140] == b"\x02\x00\x00\x00UL\x04\x00"
    assert struct.unpack("<I", packed[140:144])[0] == len(packed) - 144
    meta = dcmread(BytesIO(packed + _encoded(_tiny(), True, True)))
    assert meta.file_meta.SourceApplicationEntityTitle == "SRC"
    assert meta.file_meta.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME


def test_header_without_source_ae_has_no_such_element() -> None:
    """An empty source AE is left out, not written empty (as pydicom's path does)."""
    packed = file_meta.header("1.2", "1.2.3", str(ExplicitVRLittleEndian), "")
    assert packed is not None
    assert b"\x02\x00\x16\x00" not in packed


@pytest.mark.parametrize(("sop_class", "sop_uid", "source_ae"), [
    ("1.2.3", "1.2.3", "MÜNCHEN"),  # non-ASCII AE
    ("1.2.3", "1.2.3", " LEAD"),  # outer spaces: pydicom strips them
    ("1.2.3", "1.2.3", "TRAIL "),
    ("1.2.3", "1.2.3", "A\\B"),  # two values
    ("1.2.3", "1.2.3", "A\x01B"),  # control character
    ("1.2.3", "1.2.3", "TAB\tAE"),
    ("1.2.3", "1.2.3", "SEVENTEEN_CHARS_A"),  # AE over 16
    ("1.2.3", "1." * 32 + "1", "AE"),  # UID of 65
    ("1.2.3", "1.2.3\x00", "AE"),  # a NUL inside a UID
    ("1.2.³", "1.2.3", "AE"),  # a non-ASCII digit
])
def test_header_leaves_unusual_values_to_pydicom(sop_class: str, sop_uid: str,
                                                 source_ae: str) -> None:
    """What is not plain printable ASCII within its VR's length is pydicom's to write."""
    assert file_meta.header(sop_class, sop_uid, str(ExplicitVRLittleEndian), source_ae) is None


def test_header_refuses_overlong_transfer_syntax() -> None:
    """The transfer syntax UID is checked like the others (a 65-char UID gives None)."""
    assert file_meta.header("1.2", "1.2", "1." * 32 + "1", "AE") is None


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
@pytest.mark.parametrize(("sop_uid", "transfer_syntax"), [
    (" 1.2.3", str(ExplicitVRLittleEndian)),  # pydicom's UID strips spaces
    ("1.2.3 ", str(ExplicitVRLittleEndian)),
    ("1.2.3", str(ExplicitVRLittleEndian) + " "),
    ("", str(ExplicitVRLittleEndian)),  # pydicom refuses an empty Type 1 element
])
def test_header_values_pydicom_normalizes_or_refuses(sop_uid: str, transfer_syntax: str,
                                                     ) -> None:
    """Printable values pydicom changes or refuses must not be packed differently: the
    header is pydicom's bytes, or None (pydicom then writes or refuses "as it always did")."""
    packed = file_meta.header("1.2.840.10008.5.1.4.1.1.2", sop_uid, transfer_syntax, "AE")
    try:
        reference: bytes | None = _pydicom_header("1.2.840.10008.5.1.4.1.1.2", sop_uid,
                                                  transfer_syntax, "AE")
    except (AttributeError, ValueError):  # pydicom refuses to write it
        reference = None
    assert packed is None or packed == reference


@pytest.mark.parametrize(("implicit", "little"), _ENCODINGS, ids=_ENCODING_IDS)
def test_write_received_file_reads_back(tmp_path: Path, implicit: bool, little: bool) -> None:
    """A stored object is a Part 10 file pydicom reads, with the received bytes unchanged
    behind the header and the File Meta naming this implementation and the sender."""
    ds = _tiny()
    body = _encoded(ds, implicit, little)
    syntax = _SYNTAX_OF[(implicit, little)]
    path = tmp_path / "p" / "CT.dcm"
    outcome = write_received(path, body, ds.SOPClassUID, ds.SOPInstanceUID, str(syntax),
                             "SENDER", sync=False)
    assert outcome is Received.WRITTEN
    raw = path.read_bytes()
    assert part10_body(raw) == body
    read = dcmread(path)
    meta = read.file_meta
    assert meta.MediaStorageSOPClassUID == ds.SOPClassUID
    assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert meta.TransferSyntaxUID == syntax
    assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert meta.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME
    assert meta.SourceApplicationEntityTitle == "SENDER"
    assert read.PatientName == ds.PatientName
    assert read.ReferencedSeriesSequence[0].SeriesInstanceUID == "1.2.3.4"
    assert write_received(path, body, ds.SOPClassUID, ds.SOPInstanceUID, str(syntax),
                          "SENDER", sync=False) is Received.IDENTICAL


# --- client.dimse_commands -------------------------------------------------------------


def _reference(primitive: Any, *, request: bool = False) -> bytes:
    """The command set pynetdicom itself encodes for ``primitive``."""
    message = (_RQ_TO_MESSAGE if request else _RSP_TO_MESSAGE)[type(primitive)]()
    message.primitive_to_message(primitive)
    data = encode(message.command_set, True, True)
    assert data is not None
    return data


def _command(data: bytes) -> Dataset:
    return decode(BytesIO(data), True, True)


_COUNT_NAMES = ("NumberOfRemainingSuboperations", "NumberOfCompletedSuboperations",
                "NumberOfFailedSuboperations", "NumberOfWarningSuboperations")
_OPTIONAL_US = st.none() | st.integers(0, 0xFFFF)


@st.composite
def _responses(draw: st.DrawFn) -> Any:
    kind = draw(st.sampled_from([C_STORE, C_ECHO, C_MOVE, C_GET]))
    primitive = kind()
    primitive.MessageIDBeingRespondedTo = draw(st.integers(0, 0xFFFF))
    primitive.Status = draw(st.integers(0, 0xFFFF))
    primitive.AffectedSOPClassUID = draw(st.none() | _uids())
    primitive.ErrorComment = draw(st.none() | _plain(64, min_size=1))
    if kind is C_STORE:
        primitive.AffectedSOPInstanceUID = draw(st.none() | _uids())
    if kind in (C_MOVE, C_GET):
        for name in _COUNT_NAMES:
            setattr(primitive, name, draw(_OPTIONAL_US))
    return primitive


@_SETTINGS
@given(primitive=_responses())
def test_response_equals_pynetdicoms(primitive: Any) -> None:
    """The packed response is byte for byte what pynetdicom sends, for every field mix."""
    packed = dimse_commands.response(primitive)
    assert packed is not None
    assert packed == _reference(primitive)


@_SETTINGS
@given(primitive=_responses())
def test_response_decodes_to_its_values(primitive: Any) -> None:
    """Decoded by pynetdicom's own reader, the packed command set says what was asked."""
    packed = dimse_commands.response(primitive)
    assert packed is not None
    command = _command(packed)
    assert command.CommandGroupLength == len(packed) - 12
    assert command.MessageIDBeingRespondedTo == primitive.MessageIDBeingRespondedTo
    assert command.Status == primitive.Status
    assert command.CommandDataSetType == 0x0101
    assert command.CommandField == {C_STORE: 0x8001, C_ECHO: 0x8030, C_MOVE: 0x8021,
                                    C_GET: 0x8010}[type(primitive)]
    if primitive.AffectedSOPClassUID is None:
        assert "AffectedSOPClassUID" not in command
    else:
        assert command.AffectedSOPClassUID == primitive.AffectedSOPClassUID
    if primitive.ErrorComment is None:
        assert "ErrorComment" not in command
    else:  # pydicom splits on backslashes and drops trailing padding spaces when reading
        values = primitive.ErrorComment.split("\\")
        read = command["ErrorComment"].value
        assert (list(read) if len(values) > 1 else [read]) == [
            *values[:-1], values[-1].rstrip(" ")]
        if primitive.ErrorComment:
            assert primitive.ErrorComment.encode("ascii") in packed
    if isinstance(primitive, C_STORE):
        assert command.get("AffectedSOPInstanceUID") == primitive.AffectedSOPInstanceUID
    for name in _COUNT_NAMES:
        assert command.get(name) == getattr(primitive, name, None)


def _store_rq(message_id: int, sop_class: str, sop_uid: str, priority: int,
              originator_ae: str | None, originator_id: int | None) -> C_STORE:
    request = C_STORE()
    request.MessageID = message_id
    request.AffectedSOPClassUID = sop_class
    request.AffectedSOPInstanceUID = sop_uid
    request.Priority = priority
    request.MoveOriginatorApplicationEntityTitle = originator_ae
    request.MoveOriginatorMessageID = originator_id
    request.DataSet = BytesIO(b"\0")
    return request


@_SETTINGS
@given(message_id=st.integers(0, 0xFFFF), sop_class=_uids(), sop_uid=_uids(),
       priority=st.integers(0, 2),
       originator_ae=st.none() | _plain(16, min_size=1),
       originator_id=_OPTIONAL_US)
def test_store_request_equals_pynetdicoms(message_id: int, sop_class: str, sop_uid: str,
                                          priority: int, originator_ae: str | None,
                                          originator_id: int | None) -> None:
    """A C-STORE request's command set as pynetdicom encodes it, and it decodes back."""
    packed = dimse_commands.store_request(message_id, sop_class, sop_uid, priority,
                                          originator_ae, originator_id)
    assert packed is not None
    assert packed == _reference(_store_rq(message_id, sop_class, sop_uid, priority,
                                          originator_ae, originator_id), request=True)
    command = _command(packed)
    assert command.CommandField == 0x0001
    assert command.MessageID == message_id
    assert command.Priority == priority
    assert command.CommandDataSetType == 0x0001
    assert command.AffectedSOPClassUID == sop_class
    assert command.AffectedSOPInstanceUID == sop_uid
    assert command.get("MoveOriginatorMessageID") == originator_id
    if originator_ae is None:
        assert "MoveOriginatorApplicationEntityTitle" not in command
    else:  # pydicom drops an AE's insignificant spaces when reading
        assert command.MoveOriginatorApplicationEntityTitle == originator_ae.strip(" ")


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
@pytest.mark.parametrize(("sop_uid", "originator_ae"), [
    ("1.2.3.4", "A\\B"),  # pynetdicom's AE validator refuses it and drops the element
    ("1.2.3.4", ""),  # pynetdicom keeps an empty title as an empty element
    ("1.2.3.4 ", "AE"),  # pynetdicom (pydicom's UID) strips the space
    ("", "AE"),  # pynetdicom leaves an empty UID out
])
def test_store_request_values_pynetdicom_normalizes(sop_uid: str, originator_ae: str) -> None:
    """Printable values pynetdicom would not send as given must still give pynetdicom's
    bytes, or None (the module's promise: byte equality, else pynetdicom encodes)."""
    packed = dimse_commands.store_request(1, "1.2.3", sop_uid, 2, originator_ae, 7)
    reference = _reference(_store_rq(1, "1.2.3", sop_uid, 2, originator_ae, 7),
                           request=True)
    assert packed is None or packed == reference


@pytest.mark.parametrize(("sop_class", "sop_uid", "originator_ae"), [
    ("1.2.3", "1." * 32 + "1", None),  # UID over 64
    ("1.2.ü", "1.2.3", None),  # non-ASCII UID
    ("1.2.3", "1.2.3", "SEVENTEEN_CHARS_A"),  # AE over 16
    ("1.2.3", "1.2.3", "MÜNCHEN"),
    ("1.2.3", "1.2.3", "A\x01"),
])
def test_store_request_leaves_unusual_values_to_pynetdicom(
        sop_class: str, sop_uid: str, originator_ae: str | None) -> None:
    """Values beyond plain printable ASCII within their VR's length give None."""
    assert dimse_commands.store_request(1, sop_class, sop_uid, 2, originator_ae, 1) is None


def _plain_store_response() -> C_STORE:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 3
    rsp.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    rsp.AffectedSOPInstanceUID = "1.2.3"
    rsp.Status = 0xC000
    return rsp


def _move_response(kind: type[C_MOVE] | type[C_GET]) -> C_MOVE | C_GET:
    rsp = kind()
    rsp.MessageIDBeingRespondedTo = 3
    rsp.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.2"
    rsp.Status = 0xFF00
    rsp.NumberOfRemainingSuboperations = 4
    return rsp


def test_plain_store_response_is_packed() -> None:
    """The baseline of the None cases below packs (so their None is due to one change)."""
    assert dimse_commands.response(_plain_store_response()) == _reference(
        _plain_store_response())


def test_response_with_offending_element_is_left_to_pynetdicom() -> None:
    """An Offending Element (an AT list) is not packed."""
    rsp = _plain_store_response()
    rsp.OffendingElement = [0x00100010]
    assert dimse_commands.response(rsp) is None


@pytest.mark.parametrize("kind", [C_MOVE, C_GET])
def test_response_with_identifier_is_left_to_pynetdicom(kind: type[C_MOVE] | type[C_GET],
                                                        ) -> None:
    """A response carrying an identifier (failed SOP instance list) has a data set."""
    rsp = _move_response(kind)
    assert dimse_commands.response(rsp) == _reference(rsp)
    rsp.Identifier = BytesIO(b"\x08\x00\x58\x11\x00\x00\x00\x00")
    assert dimse_commands.response(rsp) is None


@pytest.mark.parametrize("comment", ["Fehler: ungültig", "line\nbreak", "x" * 65, "\x1b"])
def test_response_with_unusual_error_comment_is_left_to_pynetdicom(comment: str) -> None:
    """Non-ASCII, control characters or over 64 characters: pynetdicom's to encode."""
    rsp = _plain_store_response()
    rsp.ErrorComment = comment
    assert dimse_commands.response(rsp) is None


def test_request_primitive_is_not_a_response() -> None:
    """A request (no Message ID Being Responded To) must not be packed as a response."""
    request = _store_rq(1, "1.2.3", "1.2.3.4", 2, None, None)
    request.Status = 0
    assert dimse_commands.response(request) is None


def test_find_response_is_left_to_pynetdicom() -> None:
    """C-FIND responses carry identifiers; they are not this module's."""
    rsp = C_FIND()
    rsp.MessageIDBeingRespondedTo = 1
    rsp.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.1"
    rsp.Status = 0
    assert dimse_commands.response(rsp) is None


def test_response_without_status_is_left_to_pynetdicom() -> None:
    """No status: nothing valid to pack."""
    rsp = _plain_store_response()
    rsp.Status = None
    assert dimse_commands.response(rsp) is None


# --- emulators.raw_elements / dataset_length -------------------------------------------


def _tiny() -> Dataset:
    """A small data set with what the walker must handle: nested and empty sequences,
    32-bit-length values, text, and elements after a sequence."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.StudyDescription = "Thorax"
    inner = Dataset()
    inner.CodeValue = "123"
    inner.CodeMeaning = "Meaning"
    first = Dataset()
    first.SeriesInstanceUID = "1.2.3.4"
    first.PurposeOfReferenceCodeSequence = Sequence([inner, Dataset()])
    second = Dataset()
    second.SeriesInstanceUID = "1.2.3.5"
    second.ReferencedInstanceSequence = Sequence([])
    ds.ReferencedSeriesSequence = Sequence([first, second])
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "ID1"
    ds.OtherPatientIDsSequence = Sequence([])
    ds.Rows = 2
    ds.Columns = 2
    ds.add(DataElement(0x7FE00010, "OB", b"\x01\x02\x03\x04"))
    return ds


def _with_lengths(ds: Dataset, undefined_sequences: bool) -> Dataset:
    """A copy whose sequences have undefined lengths and items defined ones, or the
    reverse, so that both forms of both are walked."""
    ds = copy.deepcopy(ds)

    def convert(dataset: Dataset) -> None:
        for elem in dataset:
            if elem.VR == "SQ":
                elem.is_undefined_length = undefined_sequences
                for item in elem.value:
                    item.is_undefined_length_sequence_item = not undefined_sequences
                    convert(item)

    convert(ds)
    return ds


_LENGTH_FORMS = pytest.mark.parametrize("undefined_sequences", [True, False],
                                        ids=["undefined-sq", "undefined-items"])


@pytest.fixture(name="synthetic", scope="module")
def _synthetic(tmp_path_factory: pytest.TempPathFactory) -> list[Dataset]:
    """One small synthetic patient (CT slices, RTSTRUCT, RTPLAN, RTDOSE) as pydicom reads
    the files ``write_patient`` wrote."""
    folder = tmp_path_factory.mktemp("patient")
    paths = write_patient(make_recipe(SyntheticConfig(seed=1, slices=3, rows=16, columns=16),
                                      0), folder)
    datasets = [dcmread(path) for path in paths]
    assert {str(ds.Modality) for ds in datasets} == {"CT", "RTSTRUCT", "RTPLAN", "RTDOSE"}
    return datasets


@_LENGTH_FORMS
@pytest.mark.parametrize(("implicit", "little"), _ENCODINGS, ids=_ENCODING_IDS)
def test_walk_matches_pydicom_on_synthetic_objects(synthetic: list[Dataset], implicit: bool,
                                                   little: bool, undefined_sequences: bool,
                                                   ) -> None:
    """The walker sees every element, nested ones at their depth, in pydicom's order, for
    the objects the archive serves, in every uncompressed encoding."""
    for source in synthetic:
        ds = _with_lengths(source, undefined_sequences)
        data = _encoded(ds, implicit, little)
        walked = _walk(data, implicit, little)
        assert walked == list(_pydicom_walk(_decoded(data, implicit, little)))
        assert walked == list(_pydicom_walk(source))
        assert max(depth for depth, _tag in walked) >= (1 if source.Modality != "CT" else 0)
        assert cut_short(data, _SYNTAX_OF[(implicit, little)]) is None


@pytest.mark.parametrize(("implicit", "little"), _ENCODINGS, ids=_ENCODING_IDS)
def test_walk_reports_offsets_and_lengths(implicit: bool, little: bool) -> None:
    """Offsets, value starts and lengths point at the element's real value bytes."""
    ds = _tiny()
    data = _encoded(ds, implicit, little)
    by_tag = {e.tag: e for e in elements(data, implicit, little) if e.depth == 0}
    patient = by_tag[0x00100010]
    assert data[patient.start:patient.start + patient.length] == b"Doe^Jane"
    assert patient.vr == (None if implicit else b"PN")
    pixels = by_tag[0x7FE00010]
    assert data[pixels.start:pixels.start + pixels.length] == b"\x01\x02\x03\x04"
    assert pixels.start - pixels.offset == (8 if implicit else 12)
    sequence = by_tag[0x00081115]
    after = min(e.offset for e in by_tag.values() if e.offset > sequence.offset)
    assert sequence.length in (0xFFFFFFFF, after - sequence.start)


def _tiny_encapsulated(has_bot: bool) -> Dataset:
    """:func:`_tiny` with a compressed image: encapsulated Pixel Data whose fragment
    bytes (a JPEG's start) do not parse as elements."""
    ds = _tiny()
    del ds.PixelData
    fragment = bytes.fromhex("ffd8ffe000104a46494600010100000100010000") + b"\x00" * 20 \
        + bytes.fromhex("ffd9")
    ds.PixelData = encapsulate([fragment], has_bot=has_bot)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return ds


def _tiny_encodings() -> list[tuple[bytes, bool, bool]]:
    return [*((_encoded(variant, implicit, little), implicit, little)
              for implicit, little in _ENCODINGS
              for variant in (_with_lengths(_tiny(), True), _with_lengths(_tiny(), False))),
            (_encoded(_tiny_encapsulated(True), False, True), False, True)]


def _collect(data: bytes, implicit: bool, little: bool) -> tuple[list[Element], bool]:
    """The elements yielded before the walk ended, and whether it ended with Truncated."""
    seen: list[Element] = []
    try:
        for element in elements(data, implicit, little):
            seen.append(element)
    except Truncated:
        return seen, True
    return seen, False


@pytest.mark.parametrize(("data", "implicit", "little"), _tiny_encodings())
def test_every_cut_is_truncated_or_a_top_level_prefix(data: bytes, implicit: bool,
                                                      little: bool) -> None:
    """Cut anywhere, the walk raises Truncated (no other error), unless the cut falls
    between two top-level elements: then it yields exactly the elements before it."""
    whole = list(elements(data, implicit, little))
    boundaries = {e.offset for e in whole if e.depth == 0} | {len(data)}
    syntax = _SYNTAX_OF[(implicit, little)]
    for cut in range(len(data) + 1):
        seen, truncated = _collect(data[:cut], implicit, little)
        assert seen == whole[:len(seen)], cut
        assert truncated == (cut not in boundaries), cut
        if not truncated:
            assert seen == [e for e in whole if e.offset < cut], cut
        reason = cut_short(data[:cut], syntax)
        assert (reason is None) == (cut in boundaries), cut
        assert reason is None or isinstance(reason, str)


def test_cut_synthetic_objects_are_reported(synthetic: list[Dataset]) -> None:
    """cut_short: None for each whole object, a reason for it cut inside any element."""
    rng = random.Random(7)
    for source in synthetic:
        for implicit, little in _ENCODINGS:
            data = _encoded(source, implicit, little)
            syntax = _SYNTAX_OF[(implicit, little)]
            assert cut_short(data, syntax) is None
            boundaries = {e.offset for e in elements(data, implicit, little)
                          if e.depth == 0}
            cuts = {len(data) - 1, len(data) - 2, len(data) // 2,
                    *rng.sample(range(1, len(data)), 15)}
            for cut in cuts - boundaries:
                assert isinstance(cut_short(data[:cut], syntax), str), (source.Modality, cut)


def test_cut_short_deflated() -> None:
    """Deflated data is judged after inflating: whole, cut stream, not a stream."""
    data = encode(_tiny(), False, True, deflated=True)
    assert data is not None
    syntax = UID(DeflatedExplicitVRLittleEndian)
    assert cut_short(data, syntax) is None
    assert isinstance(cut_short(data[:len(data) // 2], syntax), str)
    assert isinstance(cut_short(b"\xff" * 40, syntax), str)


def test_deep_nesting_is_walked_without_recursion() -> None:
    """A peer may nest thousands of items; the walk is iterative and keeps the depth."""
    levels = 5000
    opening = struct.pack("<HHI", 0x0008, 0x1115, 0xFFFFFFFF) \
        + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    closing = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    data = opening * levels + closing * levels
    assert [depth for depth, _tag in _walk(data, True, True)] == list(range(levels))
    assert cut_short(data, UID(ImplicitVRLittleEndian)) is None
    assert isinstance(cut_short(data[:-8], UID(ImplicitVRLittleEndian)), str)


@pytest.mark.parametrize("has_bot", [True, False], ids=["offset-table", "empty-offset-table"])
def test_encapsulated_pixel_data_is_whole(has_bot: bool) -> None:
    """A compressed image's fragments are opaque bytes, not elements: the walk must see
    Pixel Data as one top-level element and cut_short must accept the whole object.
    (Both daemons accept every compressed syntax and run cut_short on what they get.)"""
    data = _encoded(_tiny_encapsulated(has_bot), False, True)
    assert cut_short(data, UID(JPEGBaseline8Bit)) is None
    assert _walk(data, False, True) == list(_pydicom_walk(_decoded(data, False, True)))


def test_rle_compressed_ct_slice_is_whole(synthetic: list[Dataset]) -> None:
    """The same with a real object: a synthetic CT slice in RLE Lossless, as a site
    sending compressed images would send it, is whole."""
    pytest.importorskip("numpy")
    ds = copy.deepcopy(next(ds for ds in synthetic if ds.Modality == "CT"))
    ds.compress(RLELossless)
    data = _encoded(ds, False, True)
    assert cut_short(data, UID(RLELossless)) is None


# --- emulators.db_daemon.charset_swap --------------------------------------------------


def _ascii_dataset(charset: str | None) -> Dataset:
    """An object whose text is all ASCII, top level and inside sequences, with elements
    before and after where (0008,0005) goes."""
    ds = Dataset()
    ds.add(DataElement(0x00080001, "UL", 1234))  # Length to End: sorts before (0008,0005)
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.InstanceCreationDate = "20240102"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = "1.2.3.4"
    ds.StudyDescription = "Thorax plan"
    ds.ReferringPhysicianName = "Who^Doctor"
    code = Dataset()
    code.CodeValue = "T-1234"
    code.CodeMeaning = "Lung, left"
    ds.ProcedureCodeSequence = Sequence([code])
    ds.PatientName = "Mueller^Hans"
    ds.PatientID = "PID-1"
    ds.PatientComments = "plain ASCII comment"
    ds.ImageComments = "long text\r\nsecond line"
    return ds


def _depth0_tags(data: bytes, implicit: bool, little: bool) -> list[int]:
    return [e.tag for e in elements(data, implicit, little) if e.depth == 0]


@pytest.mark.parametrize("wanted", sorted(ASCII_BASED))
@pytest.mark.parametrize("present", [True, False], ids=["declared", "absent"])
@pytest.mark.parametrize(("implicit", "little"), _ENCODINGS, ids=_ENCODING_IDS)
def test_redeclared_changes_only_the_character_set(implicit: bool, little: bool,
                                                   present: bool, wanted: str) -> None:
    """ASCII text reads the same in any ASCII-based set, so only (0008,0005) changes;
    absent, it is inserted in tag order, where pydicom and any strict reader find it."""
    original = _ascii_dataset("ISO_IR 100" if present else None)
    data = _encoded(original, implicit, little)
    result = redeclared(data, implicit, little, ("ISO_IR 100",) if present else (), wanted)
    assert result is not None
    expected = copy.deepcopy(original)
    expected.SpecificCharacterSet = wanted
    decoded = _decoded(result, implicit, little)
    assert decoded == expected
    assert decoded.SpecificCharacterSet == wanted
    tags = _depth0_tags(result, implicit, little)
    assert tags == sorted(tags)
    assert tags == sorted(int(elem.tag) for elem in expected)
    assert result == _encoded(expected, implicit, little)


@pytest.mark.parametrize(("implicit", "little"), _ENCODINGS, ids=_ENCODING_IDS)
def test_redeclared_inserts_at_the_end_or_into_nothing(implicit: bool, little: bool) -> None:
    """With every element before (0008,0005), or none at all, it goes last."""
    ds = Dataset()
    ds.add(DataElement(0x00080001, "UL", 5))
    data = _encoded(ds, implicit, little)
    result = redeclared(data, implicit, little, (), "ISO_IR 192")
    assert result is not None
    assert _depth0_tags(result, implicit, little) == [0x00080001, 0x00080005]
    assert _decoded(result, implicit, little).SpecificCharacterSet == "ISO_IR 192"
    empty = redeclared(b"", implicit, little, (), "ISO_IR 192")
    assert empty is not None
    assert _decoded(empty, implicit, little).SpecificCharacterSet == "ISO_IR 192"


def _reencoded(data: bytes, implicit: bool, little: bool, wanted: str) -> bytes:
    """What the DB Daemon's pydicom path sends: the data set decoded, re-declared in
    ``wanted`` (:func:`emulators.db_daemon.export.encode_as`) and encoded again."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a character the set cannot hold: "?", warned
        return _encoded(encode_as(_decoded(data, implicit, little), wanted), implicit, little)


@pytest.mark.parametrize("keyword", ["PatientName", "StudyDescription", "PatientComments"])
@pytest.mark.parametrize(("implicit", "little"), _ENCODINGS, ids=_ENCODING_IDS)
def test_non_ascii_text_is_transcoded_as_pydicom_writes_it(keyword: str, implicit: bool,
                                                           little: bool) -> None:
    """A byte over 0x7F means something else in the other set: the value is transcoded
    (Latin-1 to UTF-8 here), byte for byte as pydicom's decoding and encoding write it."""
    ds = _ascii_dataset("ISO_IR 100")
    setattr(ds, keyword, "Müller")
    data = _encoded(ds, implicit, little)
    assert "ü".encode("latin-1") in data
    result = redeclared(data, implicit, little, ("ISO_IR 100",), "ISO_IR 192")
    assert result is not None
    assert "ü".encode() in result
    assert result == _reencoded(data, implicit, little, "ISO_IR 192")


# Single-byte sets and UTF-8 (transcoded), GB18030 (never transcoded: left to pydicom).
_CHARSETS = ["ISO_IR 100", "ISO_IR 101", "ISO_IR 144", "ISO_IR 192", "GB18030"]
_TEXT_KEYWORDS = ["PatientName", "StudyDescription", "PatientComments", "ImageComments",
                  "ReferringPhysicianName", "InstitutionName"]


@settings(max_examples=300, deadline=None)
@given(stored=st.sampled_from(_CHARSETS), wanted=st.sampled_from(_CHARSETS),
       encoding=st.sampled_from(_ENCODINGS),
       texts=st.dictionaries(st.sampled_from(_TEXT_KEYWORDS), st.text(
           st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")) | st.sampled_from(
               ["ü", "é", "Ж", "\\", "=", "^", " ", "\x00", "\x1b", "漢"]), max_size=12)))
def test_redeclared_text_is_what_pydicom_sends(stored: str, wanted: str,
                                               encoding: tuple[bool, bool],
                                               texts: dict[str, str]) -> None:
    """Whatever the text, a re-declaration is the pydicom path's bytes, or None (the
    daemon then takes that path); and a plain value in two single-table sets that hold
    it is always transcoded."""
    implicit, little = encoding
    ds = _ascii_dataset(stored)
    for keyword, text in texts.items():
        try:
            text.encode(python_encoding[stored])
        except UnicodeEncodeError:
            continue  # not storable in this set
        setattr(ds, keyword, text)
    data = _encoded(ds, implicit, little)
    result = redeclared(data, implicit, little, (stored,), wanted)
    if result is not None:
        assert result == _reencoded(data, implicit, little, wanted)
    plain = all("\\" not in t and "\x1b" not in t and "=" not in t and "\x00" not in t
                for t in texts.values())
    holds = all(_holds(t, wanted) for t in texts.values())
    if stored != "GB18030" and wanted != "GB18030" and plain and holds:
        assert result is not None


def _holds(text: str, charset: str) -> bool:
    try:
        text.encode(python_encoding[charset])
    except UnicodeEncodeError:
        return False
    return True


@pytest.mark.parametrize(("implicit", "little"), _ENCODINGS, ids=_ENCODING_IDS)
def test_non_ascii_text_inside_a_sequence_is_judged(implicit: bool, little: bool) -> None:
    """Texts of sequence items count as much as top-level ones."""
    ds = _ascii_dataset("ISO_IR 100")
    ds.ProcedureCodeSequence[0].CodeMeaning = "Lunge, größer"
    data = _encoded(ds, implicit, little)
    assert redeclared(data, implicit, little, ("ISO_IR 100",), "ISO_IR 192") is None


def test_escape_in_text_is_left_to_pydicom() -> None:
    """An ESC byte starts a code extension (ISO 2022): the text is not plain ASCII."""
    ds = _ascii_dataset("ISO_IR 100")
    ds.StudyDescription = "A\x1b(BB"
    data = _encoded(ds, False, True)
    assert b"\x1b" in data
    assert redeclared(data, False, True, ("ISO_IR 100",), "ISO_IR 192") is None


@pytest.mark.parametrize(("stored", "wanted"), [
    (("ISO 2022 IR 87",), "ISO_IR 192"),
    (("ISO_IR 100",), "ISO 2022 IR 87"),
    (("", "ISO 2022 IR 87"), "ISO_IR 192"),
    (("ISO_IR 100", "ISO_IR 192"), "ISO_IR 192"),
    (("ISO 2022 IR 6",), "ISO_IR 192"),
    (("ISO_IR 100",), "ISO_IR 100\\ISO_IR 192"),
    (("ISO_IR 100",), "UTF-8"),
    (("ISO_IR 100",), "ISO_IR 100 "),
])
def test_charsets_beyond_ascii_based_are_left_to_pydicom(stored: tuple[str, ...],
                                                         wanted: str) -> None:
    """Only single ASCII-based sets without code extensions may be swapped (the same
    ASCII data set with a plain pair of sets is swapped, in the test above)."""
    data = _encoded(_ascii_dataset("ISO_IR 100"), False, True)
    assert redeclared(data, False, True, stored, wanted) is None
    assert redeclared(data, False, True, ("ISO_IR 100",), "ISO_IR 192") is not None


def test_private_tag_in_implicit_vr_is_left_to_pydicom() -> None:
    """In Implicit VR a private element's VR is unknown: it may be text in the old set.
    The same element in Explicit VR states its VR, so it can be judged."""
    ds = _ascii_dataset("ISO_IR 100")
    ds.add(DataElement(0x00090010, "LO", "ACME"))
    assert redeclared(_encoded(ds, True, True), True, True, ("ISO_IR 100",),
                      "ISO_IR 192") is None
    explicit = redeclared(_encoded(ds, False, True), False, True, ("ISO_IR 100",),
                          "ISO_IR 192")
    assert explicit is not None
    assert _decoded(explicit, False, True)[0x00090010].value == "ACME"


@pytest.mark.parametrize(("implicit", "little"), _ENCODINGS, ids=_ENCODING_IDS)
def test_group_length_is_left_to_pydicom(implicit: bool, little: bool) -> None:
    """A top-level group length would be wrong once (0008,0005) changes size."""
    data = _encoded(_ascii_dataset("ISO_IR 100"), implicit, little)
    assert redeclared(data, implicit, little, ("ISO_IR 100",), "ISO_IR 192") is not None
    order = "<" if little else ">"
    group = [e for e in elements(data, implicit, little) if e.depth == 0 and e.tag >> 16 == 8]
    size = group[-1].start + group[-1].length  # pydicom writes no group lengths: add one
    length = struct.pack(order + "HHI", 0x0008, 0x0000, 4) if implicit \
        else struct.pack(order + "HH2sH", 0x0008, 0x0000, b"UL", 4)
    data = length + struct.pack(order + "I", size) + data
    assert _decoded(data, implicit, little)[0x00080000].value == size
    assert redeclared(data, implicit, little, ("ISO_IR 100",), "ISO_IR 192") is None


def test_un_encoded_text_is_judged() -> None:
    """A standard text element a sender wrote as UN (it did not know the attribute)
    is still decoded by pydicom in the declared set (UN is replaced by the dictionary
    VR on reading), so its non-ASCII bytes must stop the swap like any other text."""
    charset = struct.pack("<HH2sH", 0x0008, 0x0005, b"CS", 10) + b"ISO_IR 100"
    study = struct.pack("<HH2s2xI", 0x0008, 0x1030, b"UN", 6) + "Müller".encode("latin-1")
    patient = struct.pack("<HH2sH", 0x0010, 0x0020, b"LO", 2) + b"X "
    data = charset + study + patient
    assert _decoded(data, False, True).StudyDescription == "Müller"
    result = redeclared(data, False, True, ("ISO_IR 100",), "ISO_IR 192")
    assert result is None or _decoded(result, False, True).StudyDescription == "Müller"



# -- the File Meta group's transfer syntax ---------------------------------------------------
@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                                    ExplicitVRBigEndian], ids=lambda s: s.name)
def test_the_stored_syntax_is_read_as_pydicom_reads_it(tmp_path: Path, syntax: UID) -> None:
    """Every cut of a file's first bytes: the raw read gives pydicom's answer or None
    (pydicom's reader then decides), never another syntax."""
    ds = dcmread(write_patient(make_recipe(SyntheticConfig(seed=2, slices=2, rows=16,
                                                           columns=16), 0),
                               tmp_path / "src")[0])
    path = tmp_path / "x.dcm"
    write_part10(ds, path, syntax)
    data = path.read_bytes()
    assert part10_transfer_syntax(path) == syntax
    cut = tmp_path / "cut.dcm"
    for end in range(0, 400):
        cut.write_bytes(data[:end])
        ours = part10_transfer_syntax(cut)
        if ours is not None:
            assert ours == read_file_meta_info(cut).TransferSyntaxUID, end
    assert part10_transfer_syntax(cut) == syntax  # 399 bytes hold the whole group
