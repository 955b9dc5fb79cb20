"""The archive index: synthetic rows equal imported rows; content on demand; bad files."""

from __future__ import annotations

import io
import sqlite3
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from emulators.archive import Archive, ArchiveError, ArchiveIndex, Counts
from emulators.files import write_patient
from emulators.synthetic import Profile, SyntheticConfig, make_recipe, object_refs
from emulators.synthetic.modules import with_file_meta

SMALL = SyntheticConfig(seed=5, profile=Profile.MESSY, slices=6, rows=32, columns=32)


def _bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, with_file_meta(ds), enforce_file_format=True)
    return buffer.getvalue()


def _write_patients(config: SyntheticConfig, patients: int, out: Path) -> int:
    return sum(len(write_patient(make_recipe(config, i), out)) for i in range(patients))


def _table(index: ArchiveIndex, sql: str) -> list[tuple[object, ...]]:
    return sorted(tuple(row) for row in index.query(sql))


PATIENTS = "SELECT patient_id, patient_name, birth_date, sex, charset FROM patient"
STUDIES = ("SELECT p.patient_id, st.study_uid, study_date, study_time, accession, study_id,"
           " description, referring_physician FROM study st JOIN patient p"
           " ON p.pk = st.patient_pk")
SERIES = ("SELECT st.study_uid, series_uid, modality, series_number, se.description,"
          " frame_of_reference FROM series se JOIN study st ON st.pk = se.study_pk")
INSTANCES = ("SELECT se.series_uid, sop_uid, sop_class, instance_number, label, name, rt_date,"
             " rt_time, approval, summation, referenced_uid FROM instance_v i"
             " JOIN series se ON se.pk = i.series_pk")


def test_synthetic_index_equals_index_of_the_generated_files(tmp_path: Path) -> None:
    written = _write_patients(SMALL, 6, tmp_path)
    synthetic = Archive.synthetic(SMALL, 6)
    imported, report = Archive.from_folder(tmp_path)
    assert report.skipped == []
    assert report.imported == written == synthetic.index.counts().instances
    for sql in (PATIENTS, STUDIES, SERIES, INSTANCES):
        assert _table(synthetic.index, sql) == _table(imported.index, sql), sql
    synthetic.close()
    imported.close()


def test_dataset_is_regenerated_byte_identical() -> None:
    archive = Archive.synthetic(SMALL, 3)
    for obj in object_refs(make_recipe(SMALL, 2)):
        assert _bytes(archive.dataset(obj.sop_uid)) == _bytes(obj.build())
    with pytest.raises(ArchiveError, match="no instance"):
        archive.dataset("1.2.3.4")
    archive.close()


def test_file_index_reopens_and_still_regenerates(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite"
    first = Archive.synthetic(SMALL, 2, path=path)
    counts = first.index.counts()
    first.close()
    reopened = Archive(ArchiveIndex(path))
    assert reopened.index.counts() == counts
    assert reopened.config == SMALL
    sop = next(iter(object_refs(make_recipe(SMALL, 1)))).sop_uid
    assert reopened.dataset(sop).SOPInstanceUID == sop
    reopened.close()


def test_import_reports_bad_files_and_keeps_the_good(tmp_path: Path) -> None:
    good = _write_patients(SMALL, 1, tmp_path / "good")
    bad = tmp_path / "good" / "bad"
    bad.mkdir()
    (bad / "notes.txt").write_text("not dicom at all\n")
    (bad / "empty.dcm").write_bytes(b"")
    ct = next(p for p in (tmp_path / "good").rglob("CT.*.dcm"))
    data = ct.read_bytes()
    (bad / "truncated_pixels.dcm").write_bytes(data[: len(data) - 500])
    (bad / "truncated_header.dcm").write_bytes(data[:200])
    no_uid = pydicom.dcmread(ct)
    del no_uid.SeriesInstanceUID
    no_uid.save_as(bad / "no_series_uid.dcm")

    archive, report = Archive.from_folder(tmp_path / "good")
    assert report.imported == good
    reasons = {Path(path).name: why for path, why in report.skipped}
    assert "notes.txt" in reasons and "empty.dcm" in reasons
    assert "truncated" in reasons["truncated_pixels.dcm"]
    assert "truncated_header.dcm" in reasons
    assert "SeriesInstanceUID" in reasons["no_series_uid.dcm"]
    assert archive.index.counts().instances == good
    archive.close()


def test_import_of_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError, match="not a folder"):
        Archive.from_folder(tmp_path / "nope")


def test_a_file_that_goes_bad_after_import_is_an_archive_error(tmp_path: Path) -> None:
    _write_patients(SMALL, 1, tmp_path)
    archive, _ = Archive.from_folder(tmp_path)
    ct = next(tmp_path.rglob("CT.*.dcm"))
    sop = pydicom.dcmread(ct).SOPInstanceUID
    ct.write_bytes(ct.read_bytes()[:-100])
    with pytest.raises(ArchiveError, match="truncated"):
        archive.dataset(sop)
    archive.close()


def test_query_is_read_only() -> None:
    index = ArchiveIndex()
    with pytest.raises(ValueError, match="only SELECT"):
        index.query("DELETE FROM patient")
    assert index.query("SELECT count(*) AS n FROM patient")[0]["n"] == 0
    index.close()
    with pytest.raises(sqlite3.ProgrammingError):
        index.counts()


def test_bulk_load_refuses_duplicate_uids_when_indexing() -> None:
    from emulators.archive import InstanceRow, PatientRow, SeriesRow, StudyRow

    index = ArchiveIndex(bulk=True)
    patient = PatientRow("P1", "Doe^Jane", "19600101", "F", "ISO_IR 192")
    study = StudyRow("1.2.3", "20200101", "120000", "A1", "S1", "CT", "")
    series = SeriesRow("1.2.3.4", "CT", 1, "", "1.2.3.9")
    index.add(patient, study, series, [InstanceRow("1.2.3.4.5", "1.2.840.10008.5.1.4.1.1.2", 1)])
    index.add(patient, study, series, [InstanceRow("1.2.3.4.5", "1.2.840.10008.5.1.4.1.1.2", 2)])
    with pytest.raises(ValueError, match="duplicate SOP Instance UIDs"):
        index.finish_bulk()
    index.close()


def test_adding_again_replaces_the_instance_row() -> None:
    from emulators.archive import InstanceRow, PatientRow, SeriesRow, StudyRow

    index = ArchiveIndex()
    patient = PatientRow("P1", "Doe^Jane", "19600101", "F", "ISO_IR 192")
    study = StudyRow("1.2.3", "20200101", "120000", "A1", "S1", "CT", "")
    series = SeriesRow("1.2.3.4", "CT", 1, "", "1.2.3.9")
    for number in (1, 2):
        index.add(patient, study, series,
                  [InstanceRow("1.2.3.4.5", "1.2.840.10008.5.1.4.1.1.2", number)])
    rows = index.query("SELECT instance_number FROM instance_v")
    assert [r["instance_number"] for r in rows] == [2]
    assert index.counts() == Counts(1, 1, 1, 1)
    index.close()
