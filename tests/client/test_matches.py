"""C-FIND matches that cannot answer their query are caught before anything moves on them."""

from __future__ import annotations

import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from client.matches import match_problem, unique_value


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
