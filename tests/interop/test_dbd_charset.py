"""Character sets at the DB Daemon's door: the import override, and exports per destination."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from daemons import dcmtk, running_daemons, small_archive
from peers import free_port, running

from client.site import TrustedAE
from emulators.synthetic import SyntheticConfig, make_recipe, object_refs
from emulators.synthetic.modules import with_file_meta

pytestmark = pytest.mark.interop


def _mislabelled_plan(tmp_path: Path) -> tuple[Path, str]:
    """A plan whose text is Latin-1 but whose (0008,0005) says UTF-8: a real misconfiguration."""
    recipe = make_recipe(SyntheticConfig(seed=99, slices=2, rows=16, columns=16), 0)
    plan = next(obj for obj in object_refs(recipe) if obj.modality == "RTPLAN").build()
    plan.SpecificCharacterSet = "ISO_IR 100"
    plan.PatientName = "Müller^Jürgen"
    plan.PatientID = "LATIN1"
    path = tmp_path / "plan.dcm"
    pydicom.dcmwrite(path, with_file_meta(plan), enforce_file_format=True)
    data = path.read_bytes()
    assert data.count(b"ISO_IR 100") == 1 and b"M\xfcller" in data
    path.write_bytes(data.replace(b"ISO_IR 100", b"ISO_IR 192"))  # same length: still valid
    return path, str(plan.SOPInstanceUID)


# Without the override, pydicom (rightly) warns that the mislabelled bytes are not UTF-8.
@pytest.mark.filterwarnings("ignore:Failed to decode byte string:UserWarning")
@pytest.mark.parametrize("override", [True, False])
def test_import_charset_override(override: bool, tmp_path: Path,
                                 require_tool: Callable[[str], str]) -> None:
    """With the override, the sender's text is read as its configured import set."""
    require_tool("storescu")
    path, uid = _mislabelled_plan(tmp_path)
    sender = TrustedAE("SENDER", "127.0.0.1", 104, import_charset="ISO_IR 100",
                       charset_override=override)
    archive = small_archive(patients=1)
    threads = threading.active_count()
    with running_daemons(tmp_path, archive, extra=(sender,)) as (_site, dbd, _fd):
        result = dcmtk("storescu", "-aet", "SENDER", "-aec", "VMSDBD1", "127.0.0.1",
                       str(dbd.port), str(path))
        assert result.returncode == 0, result.stdout
        stored = archive.dataset(uid)
        (row,) = archive.index.query(
            "SELECT patient_name FROM patient WHERE patient_id = 'LATIN1'")
    assert threading.active_count() == threads
    if override:
        assert stored.SpecificCharacterSet == "ISO_IR 100"
        assert str(stored.PatientName) == "Müller^Jürgen"
        assert row["patient_name"] == "Müller^Jürgen"
    else:
        assert stored.SpecificCharacterSet == "ISO_IR 192"
        assert str(stored.PatientName) != "Müller^Jürgen"  # what a site sees without it


def test_find_answers_in_the_callers_export_charset(tmp_path: Path,
                                                    require_tool: Callable[[str], str]) -> None:
    """C-FIND responses declare the caller's export set and carry the name in it."""
    require_tool("findscu")
    archive = small_archive(patients=2, seed=7)
    recipe = archive.recipe(0)
    assert recipe.people.charset == "ISO_IR 100"
    latin = TrustedAE("LATIN", "127.0.0.1", 104, export_charset="ISO_IR 100")
    with running_daemons(tmp_path, archive, extra=(latin,)) as (_site, dbd, _fd):
        for caller, charset in (("DCMTK", "ISO_IR 192"), ("LATIN", "ISO_IR 100")):
            out = tmp_path / caller
            out.mkdir()
            result = dcmtk("findscu", "-S", "-X", "-od", str(out), "-aet", caller,
                           "-aec", "VMSDBD1", "-k", "QueryRetrieveLevel=STUDY",
                           "-k", f"PatientID={recipe.patient_id}", "-k", "PatientName",
                           "127.0.0.1", str(dbd.port))
            assert result.returncode == 0, result.stdout
            answers = [pydicom.dcmread(p) for p in sorted(out.iterdir())]
            assert answers
            for ds in answers:
                assert ds.SpecificCharacterSet == charset
                assert str(ds.PatientName) == recipe.people.patient_name.pn
            encoded = recipe.people.patient_name.pn.encode(
                "utf-8" if charset == "ISO_IR 192" else "latin-1")
            assert encoded in (sorted(out.iterdir())[0]).read_bytes()
    archive.close()


@pytest.mark.filterwarnings("ignore:Failed to encode value:UserWarning")
def test_export_of_characters_the_set_cannot_hold(tmp_path: Path,
                                                  require_tool: Callable[[str], str]) -> None:
    """A Greek name exported as ISO_IR 100 arrives with '?': what a too-narrow set does."""
    require_tool("movescu")
    require_tool("storescp")
    archive = small_archive(patients=4, seed=7)
    greek = archive.recipe(2)
    assert greek.people.charset == "ISO_IR 192"
    port, folder = free_port(), tmp_path / "in"
    folder.mkdir()
    entry = TrustedAE("NARROW", "127.0.0.1", port, export_charset="ISO_IR 100")
    with running(["storescp", "-aet", "NARROW", "-od", str(folder), str(port)], port,
                 tmp_path / "storescp.log"), \
            running_daemons(tmp_path, archive, extra=(entry,)) as (_site, dbd, _fd):
        result = dcmtk("movescu", "-S", "-aet", "DCMTK", "-aec", "VMSDBD1", "-aem", "NARROW",
                       "-k", "QueryRetrieveLevel=IMAGE",
                       "-k", f"SOPInstanceUID={greek.plans[0].uid}", "127.0.0.1",
                       str(dbd.port))
        assert result.returncode == 0, result.stdout
    (path,) = folder.iterdir()
    ds = pydicom.dcmread(path)
    assert ds.SpecificCharacterSet == "ISO_IR 100"
    assert set(str(ds.PatientName)) <= set("?^ =")
