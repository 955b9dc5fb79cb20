"""DCMTK's movescu drives the emulated DB Daemon: what arrives is what the generator makes.

Moves go to the emulated File Daemon and to a DCMTK ``storescp`` started by the
test; every arrived file is compared with the generator's own output: dataset bytes
(pixel data included) when the export character set is the patient's own, and
element by element plus pixel bytes when the daemon re-encoded the text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
from daemons import assert_same_object, dcmtk, running_daemons, small_archive
from peers import free_port, running

from client.site import Quirks, TrustedAE
from emulators.archive import Archive
from emulators.files import part10_body, write_patient
from emulators.synthetic import object_refs

pytestmark = pytest.mark.interop

RT_DOSE = "1.2.840.10008.5.1.4.1.1.481.2"


@pytest.fixture(scope="module")
def archive() -> Iterator[Archive]:
    archive = small_archive(patients=3, seed=7, slices=6, size=32)
    yield archive
    archive.close()


@pytest.fixture(scope="module")
def expected(archive: Archive, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """SOP Instance UID -> the file ``dbdsim generate`` writes for it."""
    out = tmp_path_factory.mktemp("generated")
    paths: dict[str, Path] = {}
    for index in range(archive.index.counts().patients):
        recipe = archive.recipe(index)
        for obj, path in zip(object_refs(recipe), write_patient(recipe, out), strict=True):
            paths[obj.sop_uid] = path
    return paths


def _uids(sql: str, *params: object, archive: Archive) -> list[str]:
    return [row[0] for row in archive.index.query(sql, params)]


def assert_same_objects(folder: Path, wanted: set[str], expected: dict[str, Path], *,
                        exact: bool = False) -> None:
    """``folder`` (recursively) holds exactly ``wanted``, each equal to the generator's;
    ``exact``: byte for byte after the File Meta, pixel data included."""
    arrived = {}
    for path in folder.rglob("*"):
        if path.is_file() and not path.name.startswith("."):
            arrived[str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = path
    assert set(arrived) == wanted
    for uid, path in arrived.items():
        if exact:
            got, want = path.read_bytes(), expected[uid].read_bytes()
            assert part10_body(got) == part10_body(want), uid
        else:
            assert_same_object(path, expected[uid])


def movescu(port: int, destination: str, level: str, *keys: str, model: str = "-S",
            ) -> str:
    argv = ["movescu", model, "-v", "-aet", "DCMTK", "-aec", "VMSDBD1", "-aem", destination,
            "-k", f"QueryRetrieveLevel={level}", *(a for k in keys for a in ("-k", k)),
            "127.0.0.1", str(port)]
    result = dcmtk(*argv)
    assert result.returncode == 0, result.stdout
    return result.stdout


@pytest.fixture
def storescp(tmp_path: Path, require_tool: Callable[[str], str],
             ) -> Iterator[tuple[TrustedAE, Path]]:
    """A DCMTK storescp the DB Daemon may move to: (its trusted AE row, its folder)."""
    require_tool("storescp")
    port, folder = free_port(), tmp_path / "storescp"
    folder.mkdir()
    argv = ["storescp", "-aet", "STORESCP", "-od", str(folder), str(port)]
    with running(argv, port, tmp_path / "storescp.log"):
        yield TrustedAE("STORESCP", "127.0.0.1", port), folder


def test_study_series_and_instances_to_the_file_daemon(
        archive: Archive, expected: dict[str, Path], tmp_path: Path,
        require_tool: Callable[[str], str]) -> None:
    """Every identifier real scripts send moves exactly its objects, byte for byte."""
    require_tool("movescu")
    patient = archive.recipe(0)
    with running_daemons(tmp_path, archive) as (_site, dbd, fd):
        folder = fd.output / patient.patient_id
        # A whole patient, study by study (PATIENT level is not in Study Root).
        studies = _uids("SELECT study_uid FROM study st JOIN patient p ON p.pk = st.patient_pk"
                        " WHERE p.patient_id = ?", patient.patient_id, archive=archive)
        for study in studies:
            movescu(dbd.port, "VMSFD", "STUDY", f"StudyInstanceUID={study}")
        wanted = {obj.sop_uid for obj in object_refs(patient)}
        assert_same_objects(folder, wanted, expected)


@pytest.mark.parametrize("case", ["series", "plan", "uid-list", "doses-of-study",
                                  "patient-root"])
def test_lenient_identifiers_to_storescp(
        case: str, archive: Archive, expected: dict[str, Path], tmp_path: Path,
        storescp: tuple[TrustedAE, Path], require_tool: Callable[[str], str]) -> None:
    """SERIES by SeriesInstanceUID only, IMAGE by SOPInstanceUID (or a list), IMAGE by
    StudyInstanceUID + SOPClassUID, and Patient Root PATIENT by PatientID."""
    require_tool("movescu")
    entry, folder = storescp
    recipe = archive.recipe(1)
    ct = recipe.cts[0]
    plans = [plan.uid for plan in recipe.plans]
    model = "-S"
    if case == "series":
        keys, wanted = [f"SeriesInstanceUID={ct.series.uid}"], set(ct.slice_uids)
        level = "SERIES"
    elif case == "plan":
        keys, wanted, level = [f"SOPInstanceUID={plans[0]}"], {plans[0]}, "IMAGE"
    elif case == "uid-list":
        keys, wanted, level = ["SOPInstanceUID=" + "\\".join(plans)], set(plans), "IMAGE"
    elif case == "doses-of-study":
        study = recipe.doses[0].study.uid
        keys = [f"StudyInstanceUID={study}", f"SOPClassUID={RT_DOSE}"]
        wanted = {d.uid for d in recipe.doses if d.study.uid == study}
        level = "IMAGE"
    else:
        keys, level, model = [f"PatientID={recipe.patient_id}"], "PATIENT", "-P"
        wanted = {obj.sop_uid for obj in object_refs(recipe)}
    # The destination takes this patient's own character set: nothing is re-encoded,
    # so every byte must be the generator's (patient 1 is ISO_IR 100).
    assert recipe.people.charset == "ISO_IR 100"
    entry = dataclasses.replace(entry, export_charset=recipe.people.charset)
    with running_daemons(tmp_path, archive, extra=(entry,)) as (_site, dbd, _fd):
        movescu(dbd.port, "STORESCP", level, *keys, model=model)
    assert_same_objects(folder, wanted, expected, exact=True)


def test_one_association_carries_several_moves(
        archive: Archive, expected: dict[str, Path], tmp_path: Path,
        require_tool: Callable[[str], str]) -> None:
    """movescu sends one C-MOVE per query file, all on one association."""
    require_tool("movescu")
    recipe = archive.recipe(2)
    queries = []
    for i, plan in enumerate(recipe.plans):
        ds = pydicom.Dataset()
        ds.QueryRetrieveLevel = "IMAGE"
        ds.SOPInstanceUID = plan.uid
        path = tmp_path / f"q{i}.dcm"
        ds.save_as(path, implicit_vr=True, little_endian=True)
        queries.append(str(path))
    with running_daemons(tmp_path, archive) as (_site, dbd, fd):
        result = dcmtk("movescu", "-S", "-v", "-aet", "DCMTK", "-aec", "VMSDBD1",
                       "-aem", "VMSFD", "127.0.0.1", str(dbd.port), *queries)
        assert result.returncode == 0, result.stdout
        assert result.stdout.count("Requesting Association") == 1
        assert_same_objects(fd.output, {plan.uid for plan in recipe.plans}, expected)


def _final_response(output: str) -> str:
    lines = [line for line in output.splitlines() if "Final Move Response" in line]
    assert lines, output
    return lines[-1]


def _final_status(debug_output: str) -> int:
    """The status of the last C-MOVE response in ``movescu -d`` output."""
    lines = [line for line in debug_output.splitlines() if "DIMSE Status" in line]
    assert lines, debug_output
    return int(lines[-1].split(":", 2)[2].split(":")[0].strip(), 16)


def test_quirk_c001_for_dose_moves(archive: Archive, tmp_path: Path,
                                   require_tool: Callable[[str], str]) -> None:
    """Doses answered 0xC001 with no sub-operation while plans still move."""
    require_tool("movescu")
    recipe = archive.recipe(0)
    quirks = Quirks(c001_modalities=("RTDOSE",))
    with running_daemons(tmp_path, archive, quirks=quirks) as (_site, dbd, fd):
        result = dcmtk("movescu", "-S", "-d", "-aet", "DCMTK", "-aec", "VMSDBD1",
                       "-aem", "VMSFD", "-k", "QueryRetrieveLevel=IMAGE",
                       "-k", f"SOPInstanceUID={recipe.doses[0].uid}", "127.0.0.1",
                       str(dbd.port))
        assert _final_status(result.stdout) == 0xC001, result.stdout
        assert "Completed Suboperations       : 0" in result.stdout
        assert not fd.output.exists() or not any(fd.output.rglob("*.dcm"))
        movescu(dbd.port, "VMSFD", "IMAGE", f"SOPInstanceUID={recipe.plans[0].uid}")
        assert len(list(fd.output.rglob("*.dcm"))) == 1


def test_quirk_partial_move_reports_success(archive: Archive, tmp_path: Path,
                                            require_tool: Callable[[str], str]) -> None:
    """Half a series sent, success reported: only a count check can tell."""
    require_tool("movescu")
    ct = archive.recipe(0).cts[0]
    quirks = Quirks(partial_move_fraction=0.5)
    with running_daemons(tmp_path, archive, quirks=quirks) as (_site, dbd, fd):
        output = movescu(dbd.port, "VMSFD", "SERIES", f"SeriesInstanceUID={ct.series.uid}")
        assert "Success" in _final_response(output)
        assert len(list(fd.output.rglob("*.dcm"))) == len(ct.slice_uids) // 2


def test_quirk_plan_without_beams_fails_its_suboperation(
        archive: Archive, tmp_path: Path, require_tool: Callable[[str], str]) -> None:
    """A plan with an empty Beam Sequence, stored into the daemon, is refused on export:
    a failed sub-operation (0xB000, its UID in the Failed SOP Instance UID List)."""
    require_tool("movescu")
    require_tool("storescu")
    recipe = archive.recipe(0)
    plan_ref = next(obj for obj in object_refs(recipe) if obj.modality == "RTPLAN")
    plan = plan_ref.build()
    plan.BeamSequence = []
    plan.SOPInstanceUID = plan.SOPInstanceUID + ".1"
    plan.file_meta = pydicom.dataset.FileMetaDataset()
    plan.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    path = tmp_path / "empty-beams.dcm"
    plan.save_as(path, enforce_file_format=True)
    quirks = Quirks(refuse_plans_without_beams=True)
    with running_daemons(tmp_path, archive, quirks=quirks) as (_site, dbd, fd):
        stored = dcmtk("storescu", "-aet", "DCMTK", "-aec", "VMSDBD1", "127.0.0.1",
                       str(dbd.port), str(path))
        assert stored.returncode == 0, stored.stdout
        result = dcmtk("movescu", "-S", "-d", "-aet", "DCMTK", "-aec", "VMSDBD1",
                       "-aem", "VMSFD", "-k", "QueryRetrieveLevel=IMAGE",
                       "-k", f"SOPInstanceUID={plan.SOPInstanceUID}\\{plan_ref.sop_uid}",
                       "127.0.0.1", str(dbd.port))
        assert _final_status(result.stdout) == 0xB000, result.stdout
        assert "Failed Suboperations          : 1" in result.stdout, result.stdout
        assert plan.SOPInstanceUID in result.stdout  # the FailedSOPInstanceUIDList
        arrived = {p.name for p in fd.output.rglob("*.dcm")}
        assert arrived == {f"RTPLAN.{plan_ref.sop_uid}.dcm"}


def test_cancel_between_suboperations(archive: Archive, tmp_path: Path,
                                      require_tool: Callable[[str], str]) -> None:
    """C-CANCEL after the first pending response ends the move with 0xFE00."""
    require_tool("movescu")
    ct = archive.recipe(0).cts[0]
    with running_daemons(tmp_path, archive) as (_site, dbd, fd):
        result = dcmtk("movescu", "-S", "-v", "--cancel", "1", "-aet", "DCMTK",
                       "-aec", "VMSDBD1", "-aem", "VMSFD", "-k", "QueryRetrieveLevel=SERIES",
                       "-k", f"SeriesInstanceUID={ct.series.uid}", "127.0.0.1", str(dbd.port))
        assert "Cancel" in _final_response(result.stdout), result.stdout
        assert 1 <= len(list(fd.output.rglob("*.dcm"))) < len(ct.slice_uids)


def test_export_charset_follows_the_destination(archive: Archive, tmp_path: Path,
                                                storescp: tuple[TrustedAE, Path],
                                                require_tool: Callable[[str], str]) -> None:
    """A destination configured for ISO_IR 100 gets Latin-1 objects as the archive has them."""
    require_tool("movescu")
    entry, folder = storescp
    recipe = archive.recipe(0)
    assert recipe.people.charset == "ISO_IR 100"
    latin = dataclasses.replace(entry, export_charset="ISO_IR 100")
    with running_daemons(tmp_path, archive, extra=(latin,)) as (_site, dbd, _fd):
        movescu(dbd.port, "STORESCP", "IMAGE", f"SOPInstanceUID={recipe.plans[0].uid}")
    (path,) = folder.iterdir()
    ds = pydicom.dcmread(path)
    assert ds.SpecificCharacterSet == "ISO_IR 100"
    assert str(ds.PatientName) == recipe.people.patient_name.pn


def test_strict_hierarchy_refuses_a_series_move_without_its_study(
        archive: Archive, tmp_path: Path, require_tool: Callable[[str], str]) -> None:
    """With strict_hierarchy, SERIES needs StudyInstanceUID (0xA900); with it, it moves."""
    require_tool("movescu")
    ct = archive.recipe(0).cts[0]
    with running_daemons(tmp_path, archive, strict_hierarchy=True) as (_site, dbd, fd):
        result = dcmtk("movescu", "-S", "-d", "-aet", "DCMTK", "-aec", "VMSDBD1",
                       "-aem", "VMSFD", "-k", "QueryRetrieveLevel=SERIES",
                       "-k", f"SeriesInstanceUID={ct.series.uid}", "127.0.0.1", str(dbd.port))
        assert _final_status(result.stdout) == 0xA900, result.stdout
        assert not fd.output.exists() or not any(fd.output.rglob("*.dcm"))
        movescu(dbd.port, "VMSFD", "SERIES", f"StudyInstanceUID={ct.study.uid}",
                f"SeriesInstanceUID={ct.series.uid}")
        assert len(list(fd.output.rglob("*.dcm"))) == len(ct.slice_uids)
