"""What the File Daemon's store lane reads without pydicom or pynetdicom, against them.

The lane (emulators/store_lane.py) parses a C-STORE request's command set, walks the
data set's headers and reads four values from its raw bytes, and names the file; each
must give exactly what the library path gives, or hand the case back (None).
"""

from __future__ import annotations

import copy
import re
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import decode, encode

from client import dimse_commands, files
from client.files import part10_body
from emulators import log_policy
from emulators.archive.from_dataset import text_value
from emulators.dataset_head import LAST_HEAD_TAG, plain_values, whole_head
from emulators.dataset_length import cut_short
from emulators.files import write_patient
from emulators.synthetic import SyntheticConfig, make_recipe

_SETTINGS = settings(max_examples=200, deadline=None)
# pydicom warns about the odd values generated here as it reads them: not the subject.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
_UID = st.from_regex(r"\A(0|[1-9][0-9]{0,5})(\.(0|[1-9][0-9]{0,5})){1,6}\Z")
_AE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="\\"),
              min_size=1, max_size=16)
_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian)


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> list[Dataset]:
    recipe = make_recipe(SyntheticConfig(seed=5, slices=2, rows=32, columns=32), 0)
    from pydicom import dcmread

    return [dcmread(path) for path in write_patient(recipe, tmp_path_factory.mktemp("o"))]


def _encoded(ds: Dataset, syntax: UID) -> bytes:
    data = encode(ds, syntax.is_implicit_VR, syntax.is_little_endian)
    assert data is not None
    return data


# -- the command set ---------------------------------------------------------------------
@_SETTINGS
@given(st.integers(0, 0xFFFF), _UID, _UID, st.sampled_from([0, 1, 2]),
       st.one_of(st.none(), st.tuples(_AE, st.integers(0, 0xFFFF))))
def test_a_plain_request_parses_as_pynetdicom_decodes_it(
        message_id: int, sop_class: str, sop_uid: str, priority: int,
        originator: tuple[str, int] | None) -> None:
    ae, ae_id = originator or (None, None)
    command = dimse_commands.store_request(message_id, sop_class, sop_uid, priority, ae, ae_id)
    assert command is not None
    parsed = dimse_commands.parse_store_request(command)
    message = C_STORE_RQ()
    message.command_set = decode(_stream(command), True, True)
    theirs = message.message_to_primitive()
    assert isinstance(theirs, C_STORE) and parsed is not None
    assert (parsed.message_id, parsed.sop_class, parsed.sop_uid, parsed.priority,
            parsed.originator_ae, parsed.originator_id) == (
        theirs.MessageID, str(theirs.AffectedSOPClassUID), str(theirs.AffectedSOPInstanceUID),
        theirs.Priority, theirs.MoveOriginatorApplicationEntityTitle,
        theirs.MoveOriginatorMessageID)


def _stream(data: bytes) -> object:
    from io import BytesIO

    return BytesIO(data)


def _element(element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0, element, len(value)) + value


_CLASS = b"1.2.840.10008.5.1.4.1.1.2\x00"


@pytest.mark.parametrize("command", [
    # a priority PS3.7 does not define; no data set; a C-FIND's command field
    b"".join([_element(2, _CLASS), _element(0x100, b"\x01\x00"), _element(0x110, b"\x01\x00"),
              _element(0x700, b"\x07\x00"), _element(0x800, b"\x01\x00"),
              _element(0x1000, b"1.2.3\x00")]),
    b"".join([_element(2, _CLASS), _element(0x100, b"\x01\x00"), _element(0x110, b"\x01\x00"),
              _element(0x700, b"\x00\x00"), _element(0x800, b"\x01\x01"),
              _element(0x1000, b"1.2.3\x00")]),
    b"".join([_element(2, _CLASS), _element(0x100, b"\x20\x00"), _element(0x110, b"\x01\x00"),
              _element(0x700, b"\x00\x00"), _element(0x800, b"\x01\x00"),
              _element(0x1000, b"1.2.3\x00")]),
    # out of order; an element a C-STORE request has not; a missing one; a bad UID
    b"".join([_element(0x100, b"\x01\x00"), _element(2, _CLASS), _element(0x110, b"\x01\x00"),
              _element(0x700, b"\x00\x00"), _element(0x800, b"\x01\x00"),
              _element(0x1000, b"1.2.3\x00")]),
    b"".join([_element(2, _CLASS), _element(0x100, b"\x01\x00"), _element(0x110, b"\x01\x00"),
              _element(0x700, b"\x00\x00"), _element(0x800, b"\x01\x00"),
              _element(0x902, b"hi"), _element(0x1000, b"1.2.3\x00")]),
    b"".join([_element(2, _CLASS), _element(0x100, b"\x01\x00"), _element(0x110, b"\x01\x00"),
              _element(0x800, b"\x01\x00"), _element(0x1000, b"1.2.3\x00")]),
    b"".join([_element(2, _CLASS), _element(0x100, b"\x01\x00"), _element(0x110, b"\x01\x00"),
              _element(0x700, b"\x00\x00"), _element(0x800, b"\x01\x00"),
              _element(0x1000, b"1.02.3\x00")]),
    # a group length that is wrong; cut inside an element
    _element(0, struct.pack("<I", 3)) + _element(2, _CLASS),
    _element(2, _CLASS)[:-3],
])
def test_a_request_out_of_the_ordinary_is_left_to_pynetdicom(command: bytes) -> None:
    assert dimse_commands.parse_store_request(command) is None


@_SETTINGS
@given(st.integers(0, 0xFFFF), _UID, _UID, st.sampled_from([0, 0xA700, 0xC000, 0x0110, 0xB000]),
       st.one_of(st.none(), st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E,
                                                  exclude_characters="\\"), max_size=64)))
def test_a_store_response_is_packed_as_from_its_primitive(
        message_id: int, sop_class: str, sop_uid: str, status: int, comment: str | None) -> None:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = message_id
    rsp.AffectedSOPClassUID = sop_class
    rsp.AffectedSOPInstanceUID = sop_uid
    rsp.Status = status
    rsp.ErrorComment = comment or None
    assert dimse_commands.store_response(message_id, sop_class, sop_uid, status,
                                          comment or None) == dimse_commands.response(rsp)


# -- the data set --------------------------------------------------------------------------
@pytest.mark.parametrize("syntax", _SYNTAXES, ids=lambda s: s.name)
def test_the_head_holds_what_pydicom_reads_up_to_the_patient_module(
        objects: list[Dataset], syntax: UID) -> None:
    for ds in objects:
        data = _encoded(ds, syntax)
        head = whole_head(data, syntax)
        theirs = read_dataset(_stream(data), syntax.is_implicit_VR, syntax.is_little_endian)
        expected = {int(tag): bytes(elem.value or b"") for tag, elem in theirs._dict.items()
                    if tag <= LAST_HEAD_TAG and elem.VR != "SQ"
                    and (elem.VR is not None or theirs[tag].VR != "SQ")}
        assert head == expected, ds.Modality
        assert whole_head(bytearray(data), syntax) == head  # as the lane hands it


@pytest.mark.parametrize("syntax", _SYNTAXES, ids=lambda s: s.name)
def test_the_head_is_none_exactly_when_the_data_set_is_not_whole(
        objects: list[Dataset], syntax: UID) -> None:
    small = [ds for ds in objects if ds.Modality in ("RTPLAN", "RTSTRUCT")] + [objects[0]]
    for original in small:
        ds = copy.deepcopy(original)
        if "PixelData" in ds:
            del ds.PixelData  # cut everywhere without walking 2 KB of pixels each time
        data = _encoded(ds, syntax)
        for end in range(0, len(data), max(1, len(data) // 300)):
            assert (whole_head(data[:end], syntax) is None) == \
                (cut_short(data[:end], syntax) is not None), (ds.Modality, end)


_TEXT = st.text(st.characters(min_codepoint=0x09, max_codepoint=0x7F), max_size=12)


@_SETTINGS
@given(_TEXT, _TEXT, st.sampled_from([None, "", "ISO_IR 100", "ISO_IR 192", "ISO 2022 IR 6",
                                      "ISO_IR 13", "GB18030"]),
       st.sampled_from(_SYNTAXES))
def test_plain_values_are_what_pydicom_reads(patient_id: str, modality: str,
                                             charset: str | None, syntax: UID) -> None:
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = "1.2.3.4"
    ds.add_new(0x00080060, "CS", modality)
    ds.add_new(0x00100020, "LO", patient_id)
    data = _encoded(ds, syntax)
    head = whole_head(data, syntax)
    assert head is not None
    ours = plain_values(head)
    if ours is None:
        return
    theirs = read_dataset(_stream(data), syntax.is_implicit_VR, syntax.is_little_endian)
    assert ours == (str(theirs.SOPInstanceUID), str(theirs.SOPClassUID),
                    text_value(theirs, "PatientID"), text_value(theirs, "Modality") or "OT")


def test_plain_values_refuse_what_needs_decoding() -> None:
    head = {0x00080016: b"1.2.3\x00", 0x00080018: b"1.2.4\x00", 0x00080060: b"CT",
            0x00100020: b"ID1 "}
    assert plain_values(head) == ("1.2.4", "1.2.3", "ID1", "CT")
    for tag, value in ((0x00100020, b" ID1"), (0x00100020, b"A\\B"), (0x00100020, b"\xe9"),
                       (0x00080005, b"ISO 2022 IR 87"), (0x00080018, b"1.02")):
        assert plain_values({**head, tag: value}) is None, value


def test_raw_notes_remember_what_the_data_set_notes_remember(objects: list[Dataset]) -> None:
    for ds in objects:
        data = _encoded(ds, ExplicitVRLittleEndian)
        log_policy.KNOWN.clear()
        log_policy.note_dataset(read_dataset(_stream(data), False, True))
        expected = dict(log_policy.KNOWN._shown)
        log_policy.KNOWN.clear()
        head = whole_head(data, ExplicitVRLittleEndian)
        assert head is not None and expected
        log_policy.note_raw(head, str(ds.get("SpecificCharacterSet") or ""))
        assert dict(log_policy.KNOWN._shown) == expected
    log_policy.KNOWN.clear()


# -- the file name ---------------------------------------------------------------------------
@_SETTINGS
@given(st.text(st.sampled_from("aZ09._- \\/:é"), max_size=130))
def test_a_plain_name_is_kept_as_the_full_rules_keep_it(name: str) -> None:
    fast, shortcut = files.safe_name(name), files._PLAIN_NAME
    files._PLAIN_NAME = re.compile(r"(?!)")  # never matches: the full rules only
    try:
        assert files.safe_name(name) == fast
    finally:
        files._PLAIN_NAME = shortcut


def test_a_written_file_holds_the_bytes_received(tmp_path: Path) -> None:
    body = bytearray(b"\x08\x00\x18\x00UI\x04\x001.2\x00")
    files.write_received(tmp_path / "x.dcm", body, "1.2.840.10008.5.1.4.1.1.2", "1.2", "1.2.840"
                         ".10008.1.2.1", "AE", sync=False)
    assert part10_body((tmp_path / "x.dcm").read_bytes()) == bytes(body)
