"""C-STORE into the DB Daemon, then find and move what was stored; C-GET off by default
and, when enabled, handing out exactly the generator's objects (DCMTK on both ends)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
from daemons import dcmtk, running_daemons, small_archive
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from client.site import Model
from emulators.archive import Archive
from emulators.files import part10_body, write_patient
from emulators.synthetic import PatientRecipe, Profile, SyntheticConfig, make_recipe

pytestmark = pytest.mark.interop

Tool = Callable[[str], str]
UTF8 = "ISO_IR 192"
# Another seed than small_archive's (7): its patients and UIDs are not in the archive.
NEW = SyntheticConfig(seed=10, profile=Profile.MESSY, slices=4, rows=16, columns=16)
GET_MODELS = (Model.STUDY_FIND, Model.STUDY_MOVE, Model.STUDY_GET)


@pytest.fixture
def archive() -> Iterator[Archive]:
    """A fresh archive per test: storing into it changes its index."""
    archive = small_archive(patients=3, slices=4, size=16)
    yield archive
    archive.close()


def new_patient(archive: Archive) -> PatientRecipe:
    """A UTF-8 patient of another seed: the DB Daemon exports in ISO_IR 192, so only such
    a patient's objects can come back byte for byte."""
    recipe = next(r for r in (make_recipe(NEW, i) for i in range(10))
                  if r.people.charset == UTF8)
    known = archive.index.query("SELECT count(*) FROM patient WHERE patient_id = ?",
                                (recipe.patient_id,))[0][0]
    assert known == 0
    return recipe


def by_sop_uid(paths: Iterator[Path] | list[Path]) -> dict[str, Path]:
    return {str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID): path
            for path in paths}


def test_stored_patient_is_found_and_moved_byte_for_byte(tmp_path: Path, archive: Archive,
                                                         require_tool: Tool) -> None:
    """storescu into VMSDBD1 adds a new patient: findscu finds its studies, and movescu to
    VMSFD lands every object in <output>/<patient id>/ with the dataset bytes sent."""
    recipe = new_patient(archive)
    sent = write_patient(recipe, tmp_path / "sent")
    studies = {spec.uid for spec in recipe.studies}
    with running_daemons(tmp_path, archive) as (_site, dbd, fd):
        stored = dcmtk(require_tool("storescu"), "-aet", "DCMTK", "-aec", "VMSDBD1",
                       "127.0.0.1", str(dbd.port), *map(str, sent))
        assert stored.returncode == 0, stored.stdout
        assert "Store Failed" not in stored.stdout and "Error" not in stored.stdout
        found = dcmtk(require_tool("findscu"), "-S", "-aet", "DCMTK", "-aec", "VMSDBD1",
                      "-X", "-od", str(tmp_path), "-k", "QueryRetrieveLevel=STUDY",
                      "-k", f"PatientID={recipe.patient_id}", "-k", "PatientName",
                      "-k", "StudyInstanceUID", "127.0.0.1", str(dbd.port))
        assert found.returncode == 0, found.stdout
        rsps = [pydicom.dcmread(path) for path in sorted(tmp_path.glob("rsp*.dcm"))]
        assert sorted(str(ds.StudyInstanceUID) for ds in rsps) == sorted(studies)
        assert {str(ds.PatientName) for ds in rsps} == {recipe.people.patient_name.pn}
        for study in sorted(studies):
            moved = dcmtk(require_tool("movescu"), "-S", "-v", "-aet", "DCMTK",
                          "-aec", "VMSDBD1", "-aem", "VMSFD",
                          "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                          "127.0.0.1", str(dbd.port))
            assert moved.returncode == 0, moved.stdout
            assert "Received Final Move Response (Success)" in moved.stdout, moved.stdout
        landed = fd.output / recipe.patient_id
    assert sorted(path.name for path in landed.iterdir()) == sorted(path.name for path in sent)
    for path in sent:
        assert part10_body((landed / path.name).read_bytes()) == part10_body(path.read_bytes()), \
            path.name


def test_get_is_refused_by_default(tmp_path: Path, archive: Archive,
                                   require_tool: Tool) -> None:
    """The default site serves no C-GET: getscu finds no presentation context, exits
    non-zero and receives nothing."""
    study_uid, series_uid = archive.index.query(
        "SELECT st.study_uid, se.series_uid FROM series se JOIN study st"
        " ON st.pk = se.study_pk")[0]
    out = tmp_path / "get"
    out.mkdir()
    with running_daemons(tmp_path, archive) as (_site, dbd, _fd):
        done = dcmtk(require_tool("getscu"), "-S", "-aet", "DCMTK", "-aec", "VMSDBD1",
                     "-od", str(out), "-k", "QueryRetrieveLevel=SERIES",
                     "-k", f"StudyInstanceUID={study_uid}",
                     "-k", f"SeriesInstanceUID={series_uid}", "127.0.0.1", str(dbd.port))
    assert done.returncode != 0, done.stdout
    assert "No adequate Presentation Contexts for sending C-GET" in done.stdout
    assert list(out.iterdir()) == []


def assert_same_objects(got: Dataset, expected: Dataset) -> None:
    """Equal element by element (nested sequences too) except SpecificCharacterSet, and
    the same Pixel Data bytes."""
    skip = {Tag("SpecificCharacterSet")}
    assert got.SpecificCharacterSet == UTF8
    assert {e.tag for e in got} - skip == {e.tag for e in expected} - skip
    for elem in expected:
        if elem.tag not in skip:
            assert got[elem.tag] == elem, f"{got.SOPInstanceUID}: {elem.keyword or elem.tag}"
    assert got.PixelData == expected.PixelData


def test_get_when_enabled_sends_the_generators_objects(tmp_path: Path, archive: Archive,
                                                       require_tool: Tool) -> None:
    """With STUDY_GET enabled, getscu -S retrieves one CT series of each patient: every
    instance arrives; a UTF-8 patient's with the generator's dataset bytes, the others
    (re-encoded in ISO_IR 192) with the generator's values and pixels."""
    series = archive.index.query(
        "SELECT p.synthetic_index, p.charset, st.study_uid, se.series_uid FROM series se"
        " JOIN study st ON st.pk = se.study_pk JOIN patient p ON p.pk = st.patient_pk"
        " WHERE se.modality = 'CT' GROUP BY p.pk")
    assert len(series) == 3
    assert {row["charset"] for row in series} == {UTF8, "ISO_IR 100"}
    with running_daemons(tmp_path, archive, models=GET_MODELS) as (_site, dbd, _fd):
        for index, charset, study_uid, series_uid in series:
            recipe = archive.recipe(index)
            assert recipe.people.charset == charset
            expected = by_sop_uid([
                path for path in write_patient(recipe, tmp_path / "expected")
                if pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID
                == series_uid])
            out = tmp_path / f"get-{index}"
            out.mkdir()
            done = dcmtk(require_tool("getscu"), "-S", "-aet", "DCMTK", "-aec", "VMSDBD1",
                         "-od", str(out), "-k", "QueryRetrieveLevel=SERIES",
                         "-k", f"StudyInstanceUID={study_uid}",
                         "-k", f"SeriesInstanceUID={series_uid}", "127.0.0.1", str(dbd.port))
            assert done.returncode == 0, done.stdout
            got = by_sop_uid(list(out.iterdir()))
            assert sorted(got) == sorted(expected)
            assert archive.config is not None and len(got) == archive.config.slices
            for uid, path in got.items():
                if charset == UTF8:
                    assert part10_body(path.read_bytes()) == \
                        part10_body(expected[uid].read_bytes()), uid
                else:
                    assert_same_objects(pydicom.dcmread(path), pydicom.dcmread(expected[uid]))
