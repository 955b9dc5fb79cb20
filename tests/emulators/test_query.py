"""The DB Daemon's matching engine: each PS3.4 C.2.2.2 rule, both dialects, real identifiers."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import CTImageStorage, RTDoseStorage, RTPlanStorage, RTStructureSetStorage

from emulators.archive import (
    Archive,
    ArchiveIndex,
    InstanceRow,
    PatientRow,
    SeriesRow,
    StudyRow,
)
from emulators.db_daemon.query import (
    KEYS,
    MatchedInstance,
    QueryError,
    Root,
    find,
    move_matches,
)
from emulators.synthetic import Profile, SyntheticConfig

SMALL = SyntheticConfig(seed=11, profile=Profile.MESSY, slices=4, rows=16, columns=16)
A900, C000 = 0xA900, 0xC000


@pytest.fixture(scope="module")
def index() -> Iterator[ArchiveIndex]:
    archive = Archive.synthetic(SMALL, 5)
    yield archive.index
    archive.close()


def _edge_study(uid: str, date: str, time: str, description: str) -> StudyRow:
    return StudyRow(uid, date, time, f"ACC{uid[-1]}", f"S{uid[-1]}", description, "")


@pytest.fixture(scope="module")
def edge() -> Iterator[ArchiveIndex]:
    """Hand-made rows for what the generator never writes: brackets, empty dates, odd times."""
    index = ArchiveIndex()
    anna = PatientRow("EDGE1", "Müller^Anna", "19700101", "F", "ISO_IR 100")
    bob = PatientRow("EDGE2", "", "", "", "ISO_IR 100")
    studies = [
        (anna, _edge_study("9.1", "20200115", "115959", "Plan [draft] v1")),
        (anna, _edge_study("9.2", "20200116", "120000", "Plan draft v2")),
        (anna, _edge_study("9.3", "20200117", "120059.5", "")),
        (anna, _edge_study("9.4", "20200118", "1201", "x")),
        (bob, _edge_study("9.5", "", "", "")),
    ]
    for n, (patient, study) in enumerate(studies):
        series = SeriesRow(f"{study.uid}.1", "CT", None if n == 4 else 1, "", "9.9")
        index.add(patient, study, series, [InstanceRow(f"{study.uid}.1.1", CTImageStorage, None)])
    yield index
    index.close()


def ident(level: str | None, **keys: object) -> Dataset:
    ds = Dataset()
    with warnings.catch_warnings():  # malformed values on purpose
        warnings.simplefilter("ignore")
        if level is not None:
            ds.QueryRetrieveLevel = level
        for keyword, value in keys.items():
            setattr(ds, keyword, value)
    return ds


def with_raw(ds: Dataset, tag: int, vr: str, value: bytes) -> Dataset:
    """Add an element as it comes off the wire: decoded (and checked) only when read."""
    ds[tag] = RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)
    return ds


def results(index: ArchiveIndex, ds: Dataset, root: Root = Root.STUDY, *,
            strict: bool = False, retrieve_ae: str | None = None) -> list[Dataset]:
    return list(find(index, ds, root, strict=strict, retrieve_ae=retrieve_ae))


def column(found: list[Dataset], keyword: str) -> list[str]:
    return [str(ds[keyword].value) for ds in found]


def table(index: ArchiveIndex, sql: str, *params: object) -> list[str]:
    return [row[0] for row in index.query(sql, params)]


def refused(status: int, call: object, *args: object, **kwargs: object) -> QueryError:
    with pytest.raises(QueryError) as info:
        result = call(*args, **kwargs)  # type: ignore[operator]
        list(result)
    error = info.value
    assert error.status == status, str(error)
    assert len(error.comment) <= 64
    assert str(error).endswith(".")
    return error


STUDIES = ("SELECT st.study_uid FROM study st JOIN patient p ON p.pk = st.patient_pk"
           " ORDER BY p.patient_id, st.study_date, st.study_time, st.study_uid")


# -- universal, single value, response shape ------------------------------------------


def test_universal_key_returns_every_study_with_exactly_the_asked_keys(
        index: ArchiveIndex) -> None:
    found = results(index, ident("STUDY", StudyInstanceUID="", PatientName="",
                                 SpecificCharacterSet="ISO_IR 192"))
    assert column(found, "StudyInstanceUID") == table(index, STUDIES)
    for ds in found:
        assert {e.keyword for e in ds} == {"QueryRetrieveLevel", "StudyInstanceUID",
                                           "PatientName"}
        assert ds.QueryRetrieveLevel == "STUDY"


def test_single_value_matches_exactly_and_is_case_sensitive(index: ArchiveIndex) -> None:
    pid = table(index, "SELECT patient_id FROM patient ORDER BY patient_id")[2]
    found = results(index, ident("STUDY", PatientID=pid, StudyInstanceUID=""))
    expected = table(index, "SELECT study_uid FROM study st JOIN patient p"
                            " ON p.pk = st.patient_pk WHERE p.patient_id = ?", pid)
    assert sorted(column(found, "StudyInstanceUID")) == sorted(expected)
    assert set(column(found, "PatientID")) == {pid}
    assert results(index, ident("STUDY", PatientID=pid.lower(), StudyInstanceUID="")) == []
    assert results(index, ident("SERIES", Modality="rtplan")) == []


def test_values_come_back_as_strings(index: ArchiveIndex) -> None:
    found = results(index, ident("SERIES", Modality="RTPLAN", SeriesNumber="", StudyDate="",
                                 StudyTime="", PatientBirthDate=""))
    assert found
    for ds in found:
        assert "SeriesInstanceUID" not in ds  # not asked for
        assert str(ds.SeriesNumber).isdigit() and len(ds.StudyDate) == 8
        assert len(ds.PatientBirthDate) == 8 and len(ds.StudyTime) == 6


def test_unknown_private_and_sequence_keys_come_back_empty(index: ArchiveIndex) -> None:
    ds = ident("STUDY", StudyInstanceUID="", PatientAge="042Y", ReferencedStudySequence=[])
    ds.add_new(0x00091010, "LO", "private value")
    ds.add_new(0x00110010, "LO", "ACME 1.0")  # a private creator keeps its value
    ds.add_new(0x00111001, "SH", "x")
    found = results(index, ds)
    assert len(found) == len(table(index, STUDIES))  # matching ignored them
    first = found[0]
    assert first.PatientAge == "" and len(first.ReferencedStudySequence) == 0
    assert first[0x00091010].value == "" and first[0x00111001].value == ""
    assert first[0x00110010].value == "ACME 1.0"
    assert "SpecificCharacterSet" not in first


def test_retrieve_ae_title_is_returned_when_asked(index: ArchiveIndex) -> None:
    found = results(index, ident("STUDY", StudyInstanceUID="", RetrieveAETitle=""),
                    retrieve_ae="VMSDBD1")
    assert set(column(found, "RetrieveAETitle")) == {"VMSDBD1"}
    bare = results(index, ident("STUDY", StudyInstanceUID=""), retrieve_ae="VMSDBD1")
    assert all("RetrieveAETitle" not in ds for ds in bare)


# -- person names ------------------------------------------------------------------------


def test_person_names_match_case_insensitively(index: ArchiveIndex) -> None:
    names = table(index, "SELECT patient_name FROM patient ORDER BY patient_id")
    for name in names:
        for variant in (name, name.upper(), name.lower(), name.swapcase()):
            found = results(index, ident("STUDY", PatientName=variant, StudyInstanceUID=""))
            assert set(column(found, "PatientName")) == {name}, variant


def test_person_name_wildcards_and_component_groups(index: ArchiveIndex) -> None:
    names = table(index, "SELECT patient_name FROM patient ORDER BY patient_id")
    family = names[0].split("^")[0]
    found = results(index, ident("STUDY", PatientName=family.upper() + "^*", PatientID=""))
    assert names[0] in column(found, "PatientName")
    pattern = "?" + names[0][1:-1] + "*"
    assert names[0] in column(results(index, ident("STUDY", PatientName=pattern)),
                              "PatientName")


def test_one_component_group_finds_an_ideographic_name() -> None:
    index = ArchiveIndex()
    patient = PatientRow("JP1", "Yamada^Taro=山田^太郎=やまだ^たろう", "19500101", "M",
                         "ISO_IR 192")
    study = StudyRow("8.1", "20200101", "100000", "A", "S", "", "")
    index.add(patient, study, SeriesRow("8.1.1", "CT", 1, "", "8.9"),
              [InstanceRow("8.1.1.1", CTImageStorage, 1)])
    for query in ("yamada^taro", "山田^太郎", "Yamada^Taro=山田^太郎=やまだ^たろう", "山田*",
                  "Yamada^Taro^^"):
        assert len(results(index, ident("STUDY", PatientName=query))) == 1, query
    for query in ("Yamada", "Yamada^Taro=山田", "太郎"):
        assert results(index, ident("STUDY", PatientName=query)) == [], query
    index.close()


def test_person_names_fold_case_beyond_ascii() -> None:
    index = ArchiveIndex()
    patient = PatientRow("DE1", "Strauß^Jürgen", "19500101", "M", "ISO_IR 100")
    study = StudyRow("7.1", "20200101", "100000", "A", "S", "", "Σωκράτης^Ιωάννης")
    index.add(patient, study, SeriesRow("7.1.1", "CT", 1, "", "7.9"),
              [InstanceRow("7.1.1.1", CTImageStorage, 1)])
    for query in ("STRAUSS^JÜRGEN", "strauss^jürgen", "STRAUß^*"):
        assert len(results(index, ident("STUDY", PatientName=query))) == 1, query
    physician = results(index, ident("STUDY", ReferringPhysicianName="ΣΩΚΡΆΤΗΣ^*"))
    assert column(physician, "ReferringPhysicianName") == ["Σωκράτης^Ιωάννης"]
    index.close()


def test_referring_physician_is_a_person_name(index: ArchiveIndex) -> None:
    physician = table(index, "SELECT referring_physician FROM study LIMIT 1")[0]
    found = results(index, ident("STUDY", ReferringPhysicianName=physician.upper()))
    assert found and set(column(found, "ReferringPhysicianName")) == {physician}


# -- wildcards -------------------------------------------------------------------------


def test_wildcards_on_text_keys(index: ArchiveIndex) -> None:
    replans = results(index, ident("STUDY", StudyDescription="*re-planning"))
    assert replans and set(column(replans, "StudyDescription")) == {"CT Thorax re-planning"}
    accession = table(index, "SELECT accession FROM study LIMIT 1")[0]
    found = results(index, ident("STUDY", AccessionNumber=accession[:3] + "?" + accession[4:]))
    assert accession in column(found, "AccessionNumber")
    rt = results(index, ident("SERIES", Modality="RT*", SeriesInstanceUID=""))
    assert {m for m in column(rt, "Modality")} == {"RTPLAN", "RTSTRUCT", "RTDOSE"}
    assert len(results(index, ident("SERIES", Modality="*"))) == \
        len(table(index, "SELECT series_uid FROM series"))


def test_bracket_is_a_literal_not_a_glob_class(edge: ArchiveIndex) -> None:
    found = results(edge, ident("STUDY", StudyDescription="Plan [draft]*"))
    assert column(found, "StudyDescription") == ["Plan [draft] v1"]
    assert results(edge, ident("STUDY", StudyDescription="Plan [d]raft*")) == []
    assert len(results(edge, ident("STUDY", StudyDescription="Plan*draft*"))) == 2


def test_wildcards_are_literal_in_uids_dates_and_numbers(index: ArchiveIndex) -> None:
    assert results(index, ident("STUDY", StudyInstanceUID="2.25.*")) == []
    assert results(index, ident("STUDY", StudyInstanceUID="*")) == []
    refused(C000, find, index, ident("STUDY", StudyDate="2020*"), Root.STUDY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for number in (b"1*", b"2.5"):
            series = with_raw(ident("SERIES"), 0x00200011, "IS", number)
            refused(C000, find, index, series, Root.STUDY)


def test_a_wildcard_never_matches_an_absent_value(edge: ArchiveIndex) -> None:
    assert len(results(edge, ident("STUDY", StudyDescription="*"))) == 5  # universal
    assert len(results(edge, ident("STUDY", StudyDescription="**"))) == 3
    assert len(results(edge, ident("STUDY", PatientName="**"))) == 4
    assert results(edge, ident("STUDY", PatientName="", PatientID="EDGE2"))[0].PatientName == ""


# -- dates and times -----------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    ("20200116", ["9.2"]),
    ("20200116-20200117", ["9.2", "9.3"]),
    ("-20200116", ["9.1", "9.2"]),
    ("20200117-", ["9.3", "9.4"]),
    ("20200118-20200116", []),
])
def test_date_ranges_are_inclusive_and_skip_empty_dates(
        edge: ArchiveIndex, value: str, expected: list[str]) -> None:
    found = results(edge, ident("STUDY", StudyDate=value, StudyInstanceUID=""))
    assert column(found, "StudyInstanceUID") == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("-1200", ["9.1", "9.2", "9.3"]),  # 12:00:59.5 is within "12:00"
    ("-120000", ["9.1", "9.2"]),
    ("1200-", ["9.2", "9.3", "9.4"]),
    ("12-12", ["9.2", "9.3", "9.4"]),
    ("1200-120059", ["9.2", "9.3"]),
    ("120000", ["9.2"]),
])
def test_time_ranges_cover_partial_bounds(edge: ArchiveIndex, value: str,
                                          expected: list[str]) -> None:
    found = results(edge, ident("STUDY", StudyTime=value, StudyInstanceUID=""))
    assert column(found, "StudyInstanceUID") == expected


@pytest.mark.parametrize(("keyword", "value"), [
    ("StudyDate", "2020"), ("StudyDate", "20201301"), ("StudyDate", "2020-01-01"),
    ("StudyDate", "-"), ("StudyDate", "20200101-2021"), ("StudyDate", "a-b"),
    ("StudyTime", "25"), ("StudyTime", "12:00"), ("StudyTime", "1200-13-14"),
    ("StudyTime", "12.5"), ("PatientBirthDate", "19700230"), ("RTPlanDate", "x-"),
])
def test_malformed_dates_and_times_are_unable_to_process(
        index: ArchiveIndex, keyword: str, value: str) -> None:
    error = refused(C000, find, index, ident("IMAGE", **{keyword: value}), Root.STUDY)
    assert keyword in str(error)


def test_rt_dates_and_times_match_only_their_objects(index: ArchiveIndex) -> None:
    plans = results(index, ident("IMAGE", RTPlanDate="19000101-", SOPClassUID=""))
    assert plans and set(column(plans, "SOPClassUID")) == {RTPlanStorage}
    sets = results(index, ident("IMAGE", StructureSetTime="-2359", SOPClassUID=""))
    assert sets and set(column(sets, "SOPClassUID")) == {RTStructureSetStorage}


# -- UID lists, numbers --------------------------------------------------------------------


def test_uid_lists_match_any_listed_uid(index: ArchiveIndex) -> None:
    uids = table(index, "SELECT sop_uid FROM instance ORDER BY sop_uid LIMIT 3")
    found = results(index, ident("IMAGE", SOPInstanceUID=[*uids, "1.2.3.999"]))
    assert sorted(column(found, "SOPInstanceUID")) == uids
    studies = table(index, STUDIES)[:2]
    found = results(index, ident("STUDY", StudyInstanceUID="\\".join(studies)))
    assert column(found, "StudyInstanceUID") == studies


def test_only_uids_take_lists(index: ArchiveIndex) -> None:
    """A backslash elsewhere is one value (PS3.4 has list matching for UIDs only)."""
    assert results(index, ident("SERIES", Modality=["CT", "RTPLAN"])) == []


def test_a_multi_valued_patient_id_is_found_as_stored() -> None:
    with ArchiveIndex() as index:
        index.add(PatientRow("A\\B", "Two^Values", "", "", ""),
                  StudyRow("1.2.9", "20200101", "", "", "", "", ""),
                  SeriesRow("1.2.9.1", "CT", 1, "", ""),
                  [InstanceRow("1.2.9.1.1", CTImageStorage, 1)])
        found = results(index, ident("STUDY", PatientID=["A", "B"], StudyInstanceUID=""))
        assert column(found, "StudyInstanceUID") == ["1.2.9"]
        moved = move_matches(index, ident("PATIENT", PatientID=["A", "B"]), Root.PATIENT)
        assert [m.sop_uid for m in moved] == ["1.2.9.1.1"]


def test_integer_keys_match_numerically(index: ArchiveIndex) -> None:
    found = results(index, ident("SERIES", SeriesNumber="02", Modality=""))
    assert found and set(column(found, "SeriesNumber")) == {"2"}
    doses = results(index, ident("IMAGE", InstanceNumber="3", DoseSummationType="",
                                 SOPClassUID=RTDoseStorage))
    assert doses and set(column(doses, "DoseSummationType")) == {"BEAM"}


def test_integer_keys_with_no_value_never_match(edge: ArchiveIndex) -> None:
    assert results(edge, ident("SERIES", SeriesNumber="1", PatientID="EDGE2")) == []
    found = results(edge, ident("SERIES", SeriesNumber="", PatientID="EDGE2"))
    assert column(found, "SeriesNumber") == [""]


# -- levels and the two dialects ---------------------------------------------------------


@pytest.mark.parametrize(("level", "root"), [
    (None, Root.STUDY), ("", Root.STUDY), ("FRAME", Root.STUDY), ("study", Root.STUDY),
    ("PATIENT", Root.STUDY), (None, Root.PATIENT), ("INSTANCE", Root.PATIENT),
])
def test_missing_or_foreign_levels_do_not_match_the_model(
        index: ArchiveIndex, level: str | None, root: Root) -> None:
    for strict in (False, True):
        refused(A900, find, index, ident(level, PatientID=""), root, strict=strict)
        refused(A900, move_matches, index, ident(level, PatientID="X"), root, strict=strict)


def test_patient_root_patient_level(index: ArchiveIndex) -> None:
    found = results(index, ident("PATIENT", PatientID="", PatientName="",
                                 StudyInstanceUID="x", NumberOfPatientRelatedStudies=""),
                    Root.PATIENT)
    assert column(found, "PatientID") == table(index, "SELECT patient_id FROM patient"
                                                      " ORDER BY patient_id")
    assert set(column(found, "StudyInstanceUID")) == {""}  # below the level: ignored, empty
    refused(A900, find, index, ident("PATIENT", PatientID="", StudyInstanceUID=""),
            Root.PATIENT, strict=True)


def test_lenient_accepts_what_real_scripts_send(index: ArchiveIndex) -> None:
    pid = table(index, "SELECT patient_id FROM patient ORDER BY patient_id")[0]
    plans = results(index, ident("SERIES", PatientID=pid, Modality="RTPLAN"))
    expected = table(index, "SELECT se.series_uid FROM series se JOIN study st ON"
                            " st.pk = se.study_pk JOIN patient p ON p.pk = st.patient_pk"
                            " WHERE p.patient_id = ? AND modality = 'RTPLAN'", pid)
    assert len(plans) == len(expected) > 0
    series = table(index, "SELECT series_uid FROM series WHERE modality = 'CT' LIMIT 1")[0]
    slices = results(index, ident("IMAGE", SeriesInstanceUID=series, SOPInstanceUID=""))
    assert len(slices) == SMALL.slices
    assert column(slices, "SeriesInstanceUID") == [series] * SMALL.slices
    assert column(slices, "SOPInstanceUID") == table(
        index, "SELECT sop_uid FROM instance_v i JOIN series se ON se.pk = i.series_pk"
               " WHERE se.series_uid = ? ORDER BY instance_number", series)


def test_lenient_ignores_keys_below_the_level_and_returns_them_empty(
        index: ArchiveIndex) -> None:
    found = results(index, ident("STUDY", StudyInstanceUID="", Modality="MR",
                                 SOPInstanceUID="1.2.3", NumberOfSeriesRelatedInstances=""))
    assert len(found) == len(table(index, STUDIES))
    assert {str(ds.Modality) + ds.SOPInstanceUID for ds in found} == {""}
    assert {str(ds.NumberOfSeriesRelatedInstances) for ds in found} == {""}


def test_strict_needs_the_unique_keys_above(index: ArchiveIndex) -> None:
    study, series = index.query("SELECT st.study_uid, se.series_uid FROM series se"
                                " JOIN study st ON st.pk = se.study_pk LIMIT 1")[0]
    pid = table(index, "SELECT patient_id FROM patient LIMIT 1")[0]
    refused(A900, find, index, ident("SERIES", Modality="RTPLAN"), Root.STUDY, strict=True)
    refused(A900, find, index, ident("IMAGE", SeriesInstanceUID=series), Root.STUDY,
            strict=True)
    refused(A900, find, index, ident("SERIES", StudyInstanceUID=[study, "1.2"]), Root.STUDY,
            strict=True)
    refused(A900, find, index, ident("STUDY", PatientID="RT*"), Root.PATIENT, strict=True)
    refused(A900, find, index, ident("STUDY", PatientID=pid, Modality=""), Root.PATIENT,
            strict=True)
    ok = results(index, ident("IMAGE", StudyInstanceUID=study, SeriesInstanceUID=series,
                              SOPInstanceUID=""), strict=True)
    assert ok
    ok = results(index, ident("IMAGE", PatientID=pid, StudyInstanceUID=study,
                              SeriesInstanceUID=series, SOPInstanceUID=""),
                 Root.PATIENT, strict=True)
    assert len(ok) in (0, len(results(index, ident("IMAGE", SeriesInstanceUID=series))))
    assert results(index, ident("STUDY", PatientID=pid, StudyInstanceUID=""), Root.PATIENT,
                   strict=True)


def test_validation_is_eager(index: ArchiveIndex) -> None:
    with pytest.raises(QueryError):
        find(index, ident("SERIES", Modality="CT"), Root.STUDY, strict=True)  # not iterated
    with pytest.raises(QueryError):
        find(index, ident("STUDY", StudyDate="bad"), Root.STUDY)


def test_error_comments_fit_the_response(index: ArchiveIndex) -> None:
    long_level = "X" * 64
    error = refused(A900, find, index, ident(long_level), Root.STUDY)
    assert len(error.comment) <= 64 and long_level in str(error)


# -- counts and ModalitiesInStudy ------------------------------------------------------------


def test_count_keys(index: ArchiveIndex) -> None:
    found = results(index, ident("STUDY", StudyInstanceUID="", PatientID="",
                                 NumberOfStudyRelatedSeries="999",  # return-only: ignored
                                 NumberOfStudyRelatedInstances="",
                                 NumberOfPatientRelatedStudies="",
                                 NumberOfPatientRelatedSeries="",
                                 NumberOfPatientRelatedInstances=""))
    assert len(found) == len(table(index, STUDIES))
    counts = index.counts()
    for ds in found:
        uid = ds.StudyInstanceUID
        assert ds.NumberOfStudyRelatedSeries == table(
            index, "SELECT count(*) FROM series se JOIN study st ON st.pk = se.study_pk"
                   " WHERE st.study_uid = ?", uid)[0]
        assert ds.NumberOfStudyRelatedInstances == table(
            index, "SELECT count(*) FROM instance i JOIN series se ON se.pk = i.series_pk"
                   " JOIN study st ON st.pk = se.study_pk WHERE st.study_uid = ?", uid)[0]
        assert ds.NumberOfPatientRelatedStudies == table(
            index, "SELECT count(*) FROM study st JOIN patient p ON p.pk = st.patient_pk"
                   " WHERE p.patient_id = ?", ds.PatientID)[0]
    assert sum(int(ds.NumberOfStudyRelatedInstances) for ds in found) == counts.instances
    per_patient = results(index, ident("PATIENT", PatientID="",
                                       NumberOfPatientRelatedStudies="",
                                       NumberOfPatientRelatedSeries="",
                                       NumberOfPatientRelatedInstances=""), Root.PATIENT)
    assert sum(int(ds.NumberOfPatientRelatedStudies) for ds in per_patient) == counts.studies
    assert sum(int(ds.NumberOfPatientRelatedSeries) for ds in per_patient) == counts.series
    assert sum(int(ds.NumberOfPatientRelatedInstances) for ds in per_patient) == \
        counts.instances
    series = results(index, ident("SERIES", Modality="CT", NumberOfSeriesRelatedInstances=""))
    assert {int(ds.NumberOfSeriesRelatedInstances) for ds in series} == {SMALL.slices}


def test_modalities_in_study_matches_any_series_and_lists_them_all(
        index: ArchiveIndex) -> None:
    everything = results(index, ident("STUDY", StudyInstanceUID="", ModalitiesInStudy=""))
    for ds in everything:
        expected = sorted(set(table(
            index, "SELECT modality FROM series se JOIN study st ON st.pk = se.study_pk"
                   " WHERE st.study_uid = ?", ds.StudyInstanceUID)))
        value = ds.ModalitiesInStudy
        assert (list(value) if len(expected) > 1 else [value]) == expected
    with_dose = results(index, ident("STUDY", StudyInstanceUID="",
                                     ModalitiesInStudy=["MR", "RTDOSE"]))
    assert with_dose and all("RTDOSE" in ds.ModalitiesInStudy for ds in with_dose)
    assert results(index, ident("STUDY", ModalitiesInStudy="MR")) == []
    assert len(results(index, ident("STUDY", ModalitiesInStudy="RT*"))) == len(everything)


# -- RT keys -----------------------------------------------------------------------------


def test_rt_keys_only_on_their_modality(index: ArchiveIndex) -> None:
    found = results(index, ident("IMAGE", SOPClassUID="", RTPlanLabel="", RTPlanName="",
                                 StructureSetLabel="", ApprovalStatus="",
                                 DoseSummationType="", SeriesInstanceUID=""))
    assert len(found) == index.counts().instances
    for ds in found:
        sop_class = ds.SOPClassUID
        assert bool(ds.RTPlanLabel) == bool(ds.RTPlanName) == (sop_class == RTPlanStorage)
        assert bool(ds.StructureSetLabel) == (sop_class == RTStructureSetStorage)
        assert bool(ds.ApprovalStatus) == (sop_class in (RTPlanStorage, RTStructureSetStorage))
        assert bool(ds.DoseSummationType) == (sop_class == RTDoseStorage)
    labels = results(index, ident("IMAGE", RTPlanLabel="LUNG_*_1", SOPClassUID=""))
    assert labels and {ds.SOPClassUID for ds in labels} == {RTPlanStorage}
    struct = results(index, ident("IMAGE", StructureSetLabel="RT_Struct*", RTPlanLabel=""))
    assert struct and {ds.RTPlanLabel for ds in struct} == {""}
    unapproved = results(index, ident("IMAGE", ApprovalStatus="UNAPPROVED", RTPlanLabel=""))
    assert unapproved and all(ds.RTPlanLabel.endswith("_TRY") for ds in unapproved)
    assert "referenced_uid" not in str(KEYS)


# -- ordering ------------------------------------------------------------------------------


def test_results_are_ordered_down_the_hierarchy(index: ArchiveIndex) -> None:
    found = results(index, ident("IMAGE", PatientID="", StudyDate="", StudyTime="",
                                 StudyInstanceUID="", SeriesNumber="", SeriesInstanceUID="",
                                 InstanceNumber="", SOPInstanceUID=""))

    def key(ds: Dataset) -> tuple[object, ...]:
        return (ds.PatientID, ds.StudyDate, ds.StudyTime, ds.StudyInstanceUID,
                int(ds.SeriesNumber), ds.SeriesInstanceUID, int(ds.InstanceNumber),
                ds.SOPInstanceUID)

    assert [key(ds) for ds in found] == sorted(key(ds) for ds in found)
    assert found == results(index, ident("IMAGE", PatientID="", StudyDate="", StudyTime="",
                                         StudyInstanceUID="", SeriesNumber="",
                                         SeriesInstanceUID="", InstanceNumber="",
                                         SOPInstanceUID=""))


# -- C-MOVE identifiers ----------------------------------------------------------------------


def sops(matches: list[MatchedInstance]) -> list[str]:
    return [m.sop_uid for m in matches]


def test_move_of_one_instance_and_a_list(index: ArchiveIndex) -> None:
    plan = table(index, "SELECT sop_uid FROM instance_v WHERE sop_class = ?", RTPlanStorage)[0]
    [match] = move_matches(index, ident("IMAGE", SOPInstanceUID=plan), Root.STUDY)
    assert match.sop_uid == plan and match.modality == "RTPLAN"
    assert match.sop_class == RTPlanStorage
    location = index.locate(plan)
    assert location is not None
    assert (match.patient_id, match.study_uid, match.series_uid) == (
        location.patient_id, location.study_uid, location.series_uid)
    uids = table(index, "SELECT sop_uid FROM instance_v WHERE sop_class = ?", RTDoseStorage)
    assert sorted(sops(move_matches(index, ident("IMAGE", SOPInstanceUID=uids),
                                    Root.STUDY))) == sorted(uids)


def test_move_of_a_series_a_study_and_a_patient(index: ArchiveIndex) -> None:
    series = table(index, "SELECT series_uid FROM series WHERE modality = 'CT'")[0]
    assert len(move_matches(index, ident("SERIES", SeriesInstanceUID=series),
                            Root.STUDY)) == SMALL.slices
    study = table(index, STUDIES)[0]
    expected = table(index, "SELECT sop_uid FROM instance_v i JOIN series se"
                            " ON se.pk = i.series_pk JOIN study st ON st.pk = se.study_pk"
                            " WHERE st.study_uid = ?", study)
    assert sorted(sops(move_matches(index, ident("STUDY", StudyInstanceUID=study),
                                    Root.STUDY))) == sorted(expected)
    pid = table(index, "SELECT patient_id FROM patient")[0]
    everything = move_matches(index, ident("PATIENT", PatientID=pid), Root.PATIENT)
    assert everything and {m.patient_id for m in everything} == {pid}
    assert everything == move_matches(index, ident("PATIENT", PatientID=pid), Root.PATIENT,
                                      strict=True)


def test_move_of_all_doses_of_a_study(index: ArchiveIndex) -> None:
    study = table(index, "SELECT st.study_uid FROM study st JOIN series se ON"
                         " se.study_pk = st.pk WHERE se.modality = 'RTDOSE'")[0]
    doses = move_matches(index, ident("IMAGE", StudyInstanceUID=study,
                                      SOPClassUID=RTDoseStorage), Root.STUDY)
    assert doses and {(m.study_uid, m.modality) for m in doses} == {(study, "RTDOSE")}
    refused(A900, move_matches, index, ident("IMAGE", StudyInstanceUID=study,
                                             SOPClassUID=RTDoseStorage), Root.STUDY,
            strict=True)


def test_move_needs_a_unique_key(index: ArchiveIndex) -> None:
    error = refused(A900, move_matches, index, ident("IMAGE", SOPClassUID=RTDoseStorage,
                                                     SOPInstanceUID=""), Root.STUDY)
    assert "names no patient, study, series or instance" in str(error)


def test_move_unique_keys_never_wildcard(index: ArchiveIndex) -> None:
    assert move_matches(index, ident("PATIENT", PatientID="*"), Root.PATIENT) == []
    assert move_matches(index, ident("STUDY", PatientID="RT*"), Root.STUDY) == []


def test_move_filters_by_other_keys_in_lenient_mode(index: ArchiveIndex) -> None:
    pid = table(index, "SELECT patient_id FROM patient")[1]
    plans = move_matches(index, ident("STUDY", PatientID=pid, Modality="RTPLAN"), Root.STUDY)
    assert plans and {m.modality for m in plans} == {"RTPLAN"}


def test_strict_move(index: ArchiveIndex) -> None:
    study, series = index.query("SELECT st.study_uid, se.series_uid FROM series se"
                                " JOIN study st ON st.pk = se.study_pk"
                                " WHERE se.modality = 'CT'")[0]
    ok = move_matches(index, ident("SERIES", StudyInstanceUID=study,
                                   SeriesInstanceUID=[series, "1.2.3"]), Root.STUDY, strict=True)
    assert len(ok) == SMALL.slices
    for bad in (ident("SERIES", SeriesInstanceUID=series),  # no study above
                ident("SERIES", StudyInstanceUID=study),  # no series
                ident("SERIES", StudyInstanceUID=[study, "1.2"], SeriesInstanceUID=series),
                ident("SERIES", StudyInstanceUID=study, SeriesInstanceUID=series,
                      Modality="CT"),
                ident("SERIES", StudyInstanceUID=study, SeriesInstanceUID=series,
                      PatientID="X")):  # Study Root has no patient level
        refused(A900, move_matches, index, bad, Root.STUDY, strict=True)
    # Keys without a value are allowed in a strict identifier.
    assert move_matches(index, ident("SERIES", StudyInstanceUID=study, SeriesInstanceUID=series,
                                     Modality=""), Root.STUDY, strict=True) == ok
