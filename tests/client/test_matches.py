"""C-FIND matches that cannot answer their query are caught before anything moves on them."""

from __future__ import annotations

import copy
from io import BytesIO

import pytest
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode, encode

from client import archive_view
from client.matches import QueryKeys, match_problem, unique_value


def _ds(**keys: str) -> Dataset:
    ds = Dataset()
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def _bad_uid(uid: str) -> Dataset:
    ds = _ds(StudyInstanceUID="1.2.3", SeriesInstanceUID="1.2.3.4")
    ds.add(DataElement(0x00080018, "UI", uid, validation_mode=0))  # as a peer may send it
    return ds


QUERY = _ds(QueryRetrieveLevel="IMAGE", StudyInstanceUID="1.2.3", SeriesInstanceUID="1.2.3.4",
            SOPInstanceUID="")


def test_a_match_of_the_asked_series_is_fine() -> None:
    match = _ds(StudyInstanceUID="1.2.3", SeriesInstanceUID="1.2.3.4", SOPInstanceUID="1.2.3.4.5")
    assert match_problem(QUERY, match) is None
    assert unique_value(QUERY, match) == "1.2.3.4.5"


@pytest.mark.parametrize(("match", "words"), [
    (_ds(StudyInstanceUID="1.2.3", SeriesInstanceUID="1.2.3.9", SOPInstanceUID="1.2.3.9.1"),
     "SeriesInstanceUID 1.2.3.9 for a query asking for 1.2.3.4"),
    (_ds(StudyInstanceUID="1.2.3", SeriesInstanceUID="1.2.3.4"), "without its SOPInstanceUID"),
    (_bad_uid("1.2.x"), "is not a valid UID"),
    (Dataset(), "without its SOPInstanceUID"),  # what pydicom makes of a garbled identifier
])
def test_a_match_that_cannot_answer_is_named(match: Dataset, words: str) -> None:
    problem = match_problem(QUERY, match)
    assert problem is not None and words in problem


def test_uid_lists_and_wildcards_match_as_the_standard_says() -> None:
    listed = _ds(QueryRetrieveLevel="IMAGE", SOPInstanceUID="1.1\\1.2")
    assert match_problem(listed, _ds(SOPInstanceUID="1.2")) is None
    assert match_problem(listed, _ds(SOPInstanceUID="1.3")) is not None
    wild = _ds(QueryRetrieveLevel="STUDY", PatientID="RT*", StudyInstanceUID="")
    assert match_problem(wild, _ds(PatientID="RT9", StudyInstanceUID="1.5")) is None


def test_patient_ids_agree_ignoring_case_only() -> None:
    query = _ds(QueryRetrieveLevel="STUDY", PatientID="rt1", StudyInstanceUID="")
    assert match_problem(query, _ds(PatientID="RT1", StudyInstanceUID="1.5")) is None
    problem = match_problem(query, _ds(PatientID="XRT1", StudyInstanceUID="1.5"))
    assert problem is not None and "patient 'XRT1'" in problem


def _received(uid: bytes, implicit: bool) -> Dataset:
    """A match as pynetdicom hands it over: decoded lazily, its values still raw bytes
    (``uid`` as the SOP Instance UID's bytes on the wire)."""
    head = b"\x08\x00\x18\x00"
    element = head + (len(uid).to_bytes(4, "little") if implicit
                      else b"UI" + len(uid).to_bytes(2, "little")) + uid
    rest = encode(_ds(StudyInstanceUID="1.2.3", SeriesInstanceUID="1.2.3.4"), implicit, True)
    assert rest is not None
    return decode(BytesIO(element + rest), implicit, True, False)


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # pydicom, on the bad ones
@pytest.mark.parametrize("implicit", [True, False], ids=["implicit", "explicit"])
@pytest.mark.parametrize("uid", [b"1.2.3.4.5\x00", b"1.2.3.4.50", b"1.2.3.4.5 ", b" 1.2.3.4.5",
                                 b"1.2.03.4", b"1.2.3.4.5\x00\x00", b"", b"1.2.x", b"1.2..3",
                                 b"1.2.3\\1.2.4", b"\x00\x00"])
def test_raw_uids_are_judged_as_decoded_ones(uid: bytes, implicit: bool) -> None:
    """UIDs still raw are read from their bytes when plain; every answer is the one the
    same match gives once pydicom has decoded it."""
    received = _received(uid, implicit)
    assert isinstance(received.get_item(0x00080018).value, bytes) or not uid  # still raw
    decoded = copy.deepcopy(received)
    for elem in decoded:
        elem.value  # noqa: B018 -- decode each value now
    for query in (QUERY, QueryKeys(QUERY)):
        assert match_problem(query, received) == match_problem(QUERY, decoded)
        assert unique_value(query, received) == unique_value(QUERY, decoded)


def _raw_element(tag: int, vr: bytes, value: bytes, implicit: bool) -> bytes:
    head = tag.to_bytes(4, "little")  # group then element, little endian each
    head = head[2:] + head[:2]
    return head + (len(value).to_bytes(4, "little") if implicit
                   else vr + len(value).to_bytes(2, "little")) + value


@pytest.mark.filterwarnings("ignore:Invalid value for VR")  # pydicom, on the bad ones
@pytest.mark.filterwarnings("ignore:Value .* is not valid for elements with a VR of IS")
@pytest.mark.parametrize("implicit", [True, False], ids=["implicit", "explicit"])
@pytest.mark.parametrize("number", [b"1 ", b"12", b" 3", b"007", b"0 ", b"-1", b"+2", b"1.5",
                                    b"", b"1\\2", b"12345678901 ", b"\x00"])
@pytest.mark.parametrize("uid", [b"1.2.840.10008.5.1.4.1.1.2\x00", b" 1.2.3", b"1.2.3 ", b""])
def test_an_archive_listing_reads_raw_values_as_pydicom(uid: bytes, number: bytes,
                                                        implicit: bool) -> None:
    """PatientArchive.instances reads each match's SOP UIDs and Instance Number from
    their raw bytes when plain; it must list what it would list with pydicom's values."""
    body = b"".join(_raw_element(tag, vr, value, implicit) for tag, vr, value in (
        (0x00080016, b"UI", uid), (0x00080018, b"UI", b"1.2.3.4.5\x00"),
        (0x00200013, b"IS", number)))
    received = decode(BytesIO(body), implicit, True, False)
    decoded = copy.deepcopy(received)
    for elem in decoded:
        elem.value  # noqa: B018 -- decode each value now
    for tag, keyword in ((0x00080016, "SOPClassUID"), (0x00080018, "SOPInstanceUID")):
        assert archive_view._uid(received, tag, keyword) == archive_view._text(decoded, keyword)
    assert archive_view._number(received) == archive_view._text(decoded, "InstanceNumber")
    if number in (b"1 ", b"12", b"0 "):  # plain: read from the bytes, left undecoded
        assert isinstance(received.get_item(0x00200013), RawDataElement)
    if uid.startswith(b"1.2.840"):
        assert isinstance(received.get_item(0x00080016), RawDataElement)
