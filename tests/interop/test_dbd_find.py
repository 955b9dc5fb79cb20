"""DCMTK findscu against the emulated DB Daemon: what each C-FIND returns, checked
against the archive index (Study Root by default, Patient Root and strict mode opt-in)."""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from fnmatch import fnmatchcase
from pathlib import Path

import pydicom
import pytest
from daemons import dcmtk, running_daemons, small_archive
from pydicom.dataset import Dataset

from client.site import Model
from emulators.archive import Archive

pytestmark = pytest.mark.interop

Tool = Callable[[str], str]
UTF8 = "ISO_IR 192"


@pytest.fixture(scope="module")
def archive() -> Iterator[Archive]:
    """Three messy patients (seed 7): one with two studies, one with a Greek name."""
    archive = small_archive(patients=3, slices=4, size=16)
    yield archive
    archive.close()


def findscu(tool: Tool, port: int, tmp: Path, *keys: str, model: str = "-S",
            debug: bool = False) -> tuple[subprocess.CompletedProcess[str], list[Dataset]]:
    """Run one findscu query; its output and the responses it extracted (``-X``), in order."""
    out = Path(tempfile.mkdtemp(prefix="rsp-", dir=tmp))
    argv = [tool("findscu"), model, "-aet", "DCMTK", "-aec", "VMSDBD1", "-X", "-od", str(out)]
    if debug:
        argv.append("-d")
    for key in keys:
        argv += ["-k", key]
    done = dcmtk(*argv, "127.0.0.1", str(port))
    return done, [pydicom.dcmread(path) for path in sorted(out.glob("rsp*.dcm"))]


def ok(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stdout
    assert "Error" not in done.stdout, done.stdout


def values(responses: list[Dataset], keyword: str) -> list[str]:
    return [str(ds.get(keyword, "")) for ds in responses]


def column(archive: Archive, sql: str, *params: object) -> set[str]:
    return {str(row[0]) for row in archive.index.query(sql, params)}


def study_uids_of(archive: Archive, patient_id: str) -> set[str]:
    return column(archive, "SELECT st.study_uid FROM study st JOIN patient p"
                           " ON p.pk = st.patient_pk WHERE p.patient_id = ?", patient_id)


def all_study_uids(archive: Archive) -> set[str]:
    return column(archive, "SELECT study_uid FROM study")


def test_study_level_by_patient_id(tmp_path: Path, archive: Archive,
                                   require_tool: Tool) -> None:
    """A STUDY query by PatientID returns exactly that patient's studies, each holding the
    keys asked for (values from the index) and (0008,0005) ISO_IR 192."""
    row = archive.index.query(
        "SELECT p.patient_id, p.patient_name FROM patient p JOIN study st"
        " ON st.patient_pk = p.pk GROUP BY p.pk HAVING count(*) > 1")[0]
    pid = row["patient_id"]
    expected = {r["study_uid"]: r for r in archive.index.query(
        "SELECT st.study_uid, st.study_date, st.accession FROM study st JOIN patient p"
        " ON p.pk = st.patient_pk WHERE p.patient_id = ?", (pid,))}
    assert len(expected) >= 2
    with running_daemons(tmp_path, archive) as (_site, dbd, _fd):
        done, rsps = findscu(require_tool, dbd.port, tmp_path, "QueryRetrieveLevel=STUDY",
                             f"PatientID={pid}", "PatientName", "StudyInstanceUID",
                             "StudyDate", "AccessionNumber")
    ok(done)
    assert sorted(values(rsps, "StudyInstanceUID")) == sorted(expected)
    asked = {"SpecificCharacterSet", "QueryRetrieveLevel", "PatientID", "PatientName",
             "StudyInstanceUID", "StudyDate", "AccessionNumber"}
    for ds in rsps:
        assert {elem.keyword for elem in ds} == asked
        assert ds.SpecificCharacterSet == UTF8
        assert ds.QueryRetrieveLevel == "STUDY"
        assert ds.PatientID == pid
        assert str(ds.PatientName) == row["patient_name"]
        study = expected[ds.StudyInstanceUID]
        assert (ds.StudyDate, ds.AccessionNumber) == (study["study_date"], study["accession"])


def test_series_level_with_patient_id_and_modality_only(tmp_path: Path, archive: Archive,
                                                        require_tool: Tool) -> None:
    """Lenient SERIES query without StudyInstanceUID: PatientID + Modality=RTPLAN gives
    every RTPLAN series of that patient, across studies, and nothing else."""
    pid = archive.index.query(
        "SELECT p.patient_id FROM patient p JOIN study st ON st.patient_pk = p.pk"
        " JOIN series se ON se.study_pk = st.pk WHERE se.modality = 'RTPLAN'"
        " GROUP BY p.pk ORDER BY count(*) DESC")[0][0]
    expected = column(archive, "SELECT se.series_uid FROM series se JOIN study st"
                               " ON st.pk = se.study_pk JOIN patient p ON p.pk = st.patient_pk"
                               " WHERE p.patient_id = ? AND se.modality = 'RTPLAN'", pid)
    assert len(expected) >= 2
    with running_daemons(tmp_path, archive) as (_site, dbd, _fd):
        done, rsps = findscu(require_tool, dbd.port, tmp_path, "QueryRetrieveLevel=SERIES",
                             f"PatientID={pid}", "Modality=RTPLAN", "SeriesInstanceUID",
                             "StudyInstanceUID")
    ok(done)
    assert sorted(values(rsps, "SeriesInstanceUID")) == sorted(expected)
    assert set(values(rsps, "Modality")) == {"RTPLAN"}
    assert set(values(rsps, "StudyInstanceUID")) <= study_uids_of(archive, pid)


def test_image_level_with_series_uid_only(tmp_path: Path, archive: Archive,
                                          require_tool: Tool) -> None:
    """Lenient IMAGE query with only SeriesInstanceUID lists all the series' instances."""
    series_uid, count = archive.index.query(
        "SELECT se.series_uid, count(*) FROM series se JOIN instance i ON i.series_pk = se.pk"
        " GROUP BY se.pk ORDER BY count(*) DESC")[0]
    expected = column(archive, "SELECT i.sop_uid FROM instance_v i JOIN series se"
                               " ON se.pk = i.series_pk WHERE se.series_uid = ?", series_uid)
    assert count > 1 and len(expected) == count
    with running_daemons(tmp_path, archive) as (_site, dbd, _fd):
        done, rsps = findscu(require_tool, dbd.port, tmp_path, "QueryRetrieveLevel=IMAGE",
                             f"SeriesInstanceUID={series_uid}", "SOPInstanceUID",
                             "SOPClassUID")
    ok(done)
    assert sorted(values(rsps, "SOPInstanceUID")) == sorted(expected)
    assert set(values(rsps, "SeriesInstanceUID")) == {series_uid}


def test_image_level_rt_plan_keys(tmp_path: Path, archive: Archive,
                                  require_tool: Tool) -> None:
    """IMAGE level returns RTPlanLabel and ApprovalStatus of each plan as the index holds
    them, and ApprovalStatus=UNAPPROVED matches only the unapproved plans."""
    plans = archive.index.query(
        "SELECT p.patient_id, i.sop_uid, i.label, i.approval FROM instance_v i"
        " JOIN series se ON se.pk = i.series_pk JOIN study st ON st.pk = se.study_pk"
        " JOIN patient p ON p.pk = st.patient_pk WHERE se.modality = 'RTPLAN'")
    pid = next(r["patient_id"] for r in plans if r["approval"] == "UNAPPROVED")
    expected = {(r["sop_uid"], r["label"], r["approval"])
                for r in plans if r["patient_id"] == pid}
    unapproved = {uid for uid, _label, approval in expected if approval == "UNAPPROVED"}
    assert len(expected) > len(unapproved) > 0
    with running_daemons(tmp_path, archive) as (_site, dbd, _fd):
        done, rsps = findscu(require_tool, dbd.port, tmp_path, "QueryRetrieveLevel=IMAGE",
                             f"PatientID={pid}", "Modality=RTPLAN", "SOPInstanceUID",
                             "RTPlanLabel", "ApprovalStatus")
        ok(done)
        done_u, rsps_u = findscu(require_tool, dbd.port, tmp_path, "QueryRetrieveLevel=IMAGE",
                                 f"PatientID={pid}", "Modality=RTPLAN", "SOPInstanceUID",
                                 "ApprovalStatus=UNAPPROVED")
        ok(done_u)
    got = [(ds.SOPInstanceUID, ds.RTPlanLabel, ds.ApprovalStatus) for ds in rsps]
    assert len(got) == len(expected)
    assert set(got) == expected
    assert set(values(rsps_u, "SOPInstanceUID")) == unapproved
    assert set(values(rsps_u, "ApprovalStatus")) == {"UNAPPROVED"}


def test_wildcards(tmp_path: Path, archive: Archive, require_tool: Tool) -> None:
    """``*`` alone is universal; ``RT*``, a name prefix and ``?`` select what PS3.4
    wildcard matching selects from the index."""
    rows = archive.index.query("SELECT p.patient_id, p.patient_name, st.study_uid FROM study st"
                               " JOIN patient p ON p.pk = st.patient_pk")
    target = rows[-1]
    prefix = target["patient_name"].split("^")[0][:3] + "*"
    single = "?" + target["patient_id"][1:]
    queries = {
        "PatientName=*": all_study_uids(archive),
        "PatientID=RT*": {r["study_uid"] for r in rows if r["patient_id"].startswith("RT")},
        f"PatientName={prefix}": {r["study_uid"] for r in rows
                                  if fnmatchcase(r["patient_name"], prefix)},
        f"PatientID={single}": {r["study_uid"] for r in rows
                                if fnmatchcase(r["patient_id"], single)},
    }
    assert queries["PatientID=RT*"] == all_study_uids(archive)
    assert 0 < len(queries[f"PatientName={prefix}"]) < len(rows)
    assert 0 < len(queries[f"PatientID={single}"]) < len(rows)
    with running_daemons(tmp_path, archive) as (_site, dbd, _fd):
        for key, expected in queries.items():
            done, rsps = findscu(require_tool, dbd.port, tmp_path, "QueryRetrieveLevel=STUDY",
                                 "SpecificCharacterSet=ISO_IR 192", key, "StudyInstanceUID")
            ok(done)
            assert sorted(values(rsps, "StudyInstanceUID")) == sorted(expected), key


def test_study_date_range(tmp_path: Path, archive: Archive, require_tool: Tool) -> None:
    """A range over all the dates finds every study; one before them finds none; a
    single-day range finds that day's studies only."""
    day = archive.index.query("SELECT study_date FROM study ORDER BY study_date")[0][0]
    on_day = column(archive, "SELECT study_uid FROM study WHERE study_date = ?", day)
    assert on_day != all_study_uids(archive)
    with running_daemons(tmp_path, archive) as (_site, dbd, _fd):
        results = {}
        for query in ("20000101-20991231", "19000101-19991231", f"{day}-{day}"):
            done, rsps = findscu(require_tool, dbd.port, tmp_path, "QueryRetrieveLevel=STUDY",
                                 f"StudyDate={query}", "StudyInstanceUID")
            ok(done)
            results[query] = sorted(values(rsps, "StudyInstanceUID"))
    assert results["20000101-20991231"] == sorted(all_study_uids(archive))
    assert results["19000101-19991231"] == []
    assert results[f"{day}-{day}"] == sorted(on_day)


def test_study_uid_list(tmp_path: Path, archive: Archive, require_tool: Tool) -> None:
    """Two StudyInstanceUIDs separated by a backslash match exactly those two studies."""
    uids = sorted(all_study_uids(archive))
    chosen = [uids[0], uids[-1]]
    assert len(uids) > 2
    with running_daemons(tmp_path, archive) as (_site, dbd, _fd):
        done, rsps = findscu(require_tool, dbd.port, tmp_path, "QueryRetrieveLevel=STUDY",
                             "StudyInstanceUID=" + "\\".join(chosen), "PatientID")
    ok(done)
    assert sorted(values(rsps, "StudyInstanceUID")) == chosen


def test_patient_root_find_is_refused_by_default(tmp_path: Path, archive: Archive,
                                                 require_tool: Tool) -> None:
    """The default site does not serve Patient Root FIND: findscu -P gets no presentation
    context and exits non-zero."""
    pid = archive.index.query("SELECT patient_id FROM patient")[0][0]
    with running_daemons(tmp_path, archive) as (_site, dbd, _fd):
        done, rsps = findscu(require_tool, dbd.port, tmp_path, "QueryRetrieveLevel=PATIENT",
                             f"PatientID={pid}", model="-P")
    assert done.returncode != 0, done.stdout
    assert "No Acceptable Presentation Contexts" in done.stdout
    assert rsps == []


def test_patient_root_find_when_enabled(tmp_path: Path, archive: Archive,
                                        require_tool: Tool) -> None:
    """With PATIENT_FIND in the models, a PATIENT query by PatientID returns that one
    patient, its name and its number of studies."""
    row = archive.index.query(
        "SELECT p.patient_id, p.patient_name, count(*) AS studies FROM patient p"
        " JOIN study st ON st.patient_pk = p.pk GROUP BY p.pk ORDER BY studies DESC")[0]
    models = (Model.STUDY_FIND, Model.STUDY_MOVE, Model.PATIENT_FIND)
    with running_daemons(tmp_path, archive, models=models) as (_site, dbd, _fd):
        done, rsps = findscu(require_tool, dbd.port, tmp_path, "QueryRetrieveLevel=PATIENT",
                             f"PatientID={row['patient_id']}", "PatientName",
                             "NumberOfPatientRelatedStudies", model="-P")
    ok(done)
    assert len(rsps) == 1
    ds = rsps[0]
    assert (ds.QueryRetrieveLevel, ds.PatientID) == ("PATIENT", row["patient_id"])
    assert str(ds.PatientName) == row["patient_name"]
    assert int(ds.NumberOfPatientRelatedStudies) == row["studies"]
    assert ds.SpecificCharacterSet == UTF8


def test_strict_hierarchy_refuses_image_query_without_study(tmp_path: Path, archive: Archive,
                                                            require_tool: Tool) -> None:
    """strict_hierarchy=True: an IMAGE query with only SeriesInstanceUID is answered
    0xA900 (no match); with StudyInstanceUID too it lists the series' instances."""
    study_uid, series_uid = archive.index.query(
        "SELECT st.study_uid, se.series_uid FROM series se JOIN study st"
        " ON st.pk = se.study_pk WHERE se.modality = 'CT'")[0]
    expected = column(archive, "SELECT i.sop_uid FROM instance_v i JOIN series se"
                               " ON se.pk = i.series_pk WHERE se.series_uid = ?", series_uid)
    with running_daemons(tmp_path, archive, strict_hierarchy=True) as (_site, dbd, _fd):
        refused, none = findscu(require_tool, dbd.port, tmp_path, "QueryRetrieveLevel=IMAGE",
                                f"SeriesInstanceUID={series_uid}", "SOPInstanceUID",
                                debug=True)
        done, rsps = findscu(require_tool, dbd.port, tmp_path, "QueryRetrieveLevel=IMAGE",
                             f"StudyInstanceUID={study_uid}",
                             f"SeriesInstanceUID={series_uid}", "SOPInstanceUID")
    assert refused.returncode == 0, refused.stdout
    assert re.search(r"^D: DIMSE Status *: 0xa900: ", refused.stdout, re.MULTILINE), \
        refused.stdout
    assert "ErrorComment" in refused.stdout and "StudyInstanceUID" in refused.stdout
    assert none == []
    ok(done)
    assert sorted(values(rsps, "SOPInstanceUID")) == sorted(expected)


def test_non_ascii_patient_names_round_trip(tmp_path: Path, archive: Archive,
                                            require_tool: Tool) -> None:
    """Every patient's name, non-ASCII ones included, reads back (pydicom, ISO_IR 192) as
    the index holds it; a query by the non-ASCII name itself finds that patient."""
    names = {r["patient_id"]: r["patient_name"]
             for r in archive.index.query("SELECT patient_id, patient_name FROM patient")}
    greek_pid, greek = next((pid, name) for pid, name in names.items() if not name.isascii())
    with running_daemons(tmp_path, archive) as (_site, dbd, _fd):
        done, rsps = findscu(require_tool, dbd.port, tmp_path, "QueryRetrieveLevel=STUDY",
                             "PatientName", "PatientID", "StudyInstanceUID")
        ok(done)
        done_n, by_name = findscu(require_tool, dbd.port, tmp_path,
                                  "QueryRetrieveLevel=STUDY", "SpecificCharacterSet=ISO_IR 192",
                                  f"PatientName={greek}", "PatientID", "StudyInstanceUID")
        ok(done_n)
    assert len(rsps) == len(all_study_uids(archive))
    assert {ds.PatientID: str(ds.PatientName) for ds in rsps} == names
    assert all(ds.SpecificCharacterSet == UTF8 for ds in rsps)
    assert set(values(by_name, "PatientID")) == {greek_pid}
    assert sorted(values(by_name, "StudyInstanceUID")) == sorted(study_uids_of(archive,
                                                                               greek_pid))
    assert [str(ds.PatientName) for ds in by_name] == [greek] * len(by_name)
