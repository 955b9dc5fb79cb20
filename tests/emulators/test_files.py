"""archive_path keeps hostile patient IDs inside the output folder; write_part10 is atomic."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path
from typing import Any

import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset

import client.files as files
import emulators.files as emulator_files
from emulators.files import archive_path, safe_name, write_part10
from emulators.synthetic import SyntheticConfig, make_recipe, object_refs

UID = "1.2.840.10008.1.2.3"
RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{n}" for n in range(1, 10)),
            *(f"LPT{n}" for n in range(1, 10))}
HOSTILE = [
    "../../etc", "a/b", "a\\b", "..", ".", "", "CON", "con", "Con.txt", "nul.txt",
    "LPT9.log", "COM1", "x\x00y", "\n", "\t", "a\x7fb", "/", "/etc/passwd", "C:\\Windows",
    "a:b", 'a"b', "a*b?", "trailing.", "trailing ", " ", "...", "x" * 300, "é" * 200,
    "\ud800", "a\u2028b", "a_b_0123456789ab", "RT0000001",
]


def _folder(out: Path, patient_id: str) -> Path:
    return archive_path(out, patient_id, "CT", UID).parent


def _assert_inside(out: Path, patient_id: str) -> Path:
    path = archive_path(out, patient_id, "CT", UID)
    assert path.parent.parent == out
    assert path.resolve().is_relative_to(out.resolve())
    assert path.name == f"CT.{UID}.dcm"
    name = path.parent.name
    assert name not in ("", ".", "..")
    assert len(name.encode("utf-8")) < 255
    assert not any(ch in name for ch in '/\\\0<>:"|?*')
    assert all(unicodedata.category(ch) not in ("Cc", "Cs", "Zl", "Zp") for ch in name)
    assert name.split(".")[0].upper() not in RESERVED
    assert not name.endswith((".", " "))
    return path


def test_ordinary_ids_are_kept_verbatim(tmp_path: Path) -> None:
    assert archive_path(tmp_path, "RT0123456", "RTPLAN", UID) == (
        tmp_path / "RT0123456" / f"RTPLAN.{UID}.dcm")
    assert safe_name("Müller-01 ÄÖ") == "Müller-01 ÄÖ"


@pytest.mark.parametrize("patient_id", HOSTILE)
def test_hostile_ids_stay_inside_out(tmp_path: Path, patient_id: str) -> None:
    path = _assert_inside(tmp_path, patient_id)
    path.parent.mkdir()
    path.write_bytes(b"x")
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("*")] == [
        path.parent.relative_to(tmp_path), path.relative_to(tmp_path)]


def test_hostile_ids_map_to_distinct_deterministic_folders(tmp_path: Path) -> None:
    folders = [_folder(tmp_path, pid) for pid in HOSTILE]
    assert len(set(folders)) == len(HOSTILE)
    assert folders == [_folder(tmp_path, pid) for pid in HOSTILE]


def test_changed_names_say_so() -> None:
    assert safe_name("").startswith("_empty_")
    assert safe_name("a/b").startswith("a_b_")
    assert safe_name("CON").startswith("_CON_")
    # An ID that merely looks like a changed one must not take that one's folder.
    assert safe_name(safe_name("a/b")) != safe_name("a/b")


def test_long_ids_sharing_a_prefix_stay_distinct() -> None:
    a, b = "p" * 500 + "a", "p" * 500 + "b"
    assert safe_name(a) != safe_name(b)
    assert len(safe_name(a).encode()) < 255


def test_modality_and_uid_are_made_safe_too(tmp_path: Path) -> None:
    path = archive_path(tmp_path, "RT1", "../x", "../../y")
    assert path.parent == tmp_path / "RT1"
    assert "/" not in path.name
    assert path.resolve().is_relative_to(tmp_path.resolve())


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for all hypothesis examples (function-scoped tmp_path would be shared anyway)."""
    return tmp_path_factory.mktemp("safe-names")


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_gives_one_creatable_component_inside_out(scratch: Path,
                                                           patient_id: str) -> None:
    path = _assert_inside(scratch, patient_id)
    path.parent.mkdir(exist_ok=True)
    assert path.parent.is_dir()
    assert path.parent.parent == scratch


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=300), unique=True, min_size=2, max_size=20))
def test_distinct_ids_give_distinct_folders(patient_ids: list[str]) -> None:
    assert len({safe_name(pid) for pid in patient_ids}) == len(patient_ids)


@given(st.text(alphabet=st.characters(codec="utf-8", categories=["L", "Nd"]),
               min_size=1, max_size=64))
def test_plain_ids_are_untouched(patient_id: str) -> None:
    """Letters and digits are kept, unless the name would pass the file-name byte limit
    (64 characters of 4-byte UTF-8 do: hypothesis found one, then it is shortened)."""
    if patient_id.upper() in RESERVED or files._MANGLED_RE.search(patient_id):
        return
    if len(patient_id.encode("utf-8")) > files._MAX_NAME_BYTES:
        assert safe_name(patient_id) != patient_id
        assert len(safe_name(patient_id).encode("utf-8")) <= files._MAX_NAME_BYTES + 13
        return
    assert safe_name(patient_id) == patient_id


# --- write_part10 ----------------------------------------------------------------------


def _dataset() -> Dataset:
    recipe = make_recipe(SyntheticConfig(seed=5, slices=2, rows=16, columns=16), 0)
    return next(obj for obj in object_refs(recipe) if obj.modality == "RTSTRUCT").build()


def test_write_part10_reads_back_and_leaves_no_temp_file(tmp_path: Path) -> None:
    ds = _dataset()
    path = tmp_path / "sub" / "RTSTRUCT.x.dcm"
    write_part10(ds, path)
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    raw = path.read_bytes()
    assert raw[128:132] == b"DICM"
    back = pydicom.dcmread(path)
    assert back.SOPInstanceUID == ds.SOPInstanceUID
    assert back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert back.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert back.ROIContourSequence[0].ContourSequence[0].ContourData == \
        ds.ROIContourSequence[0].ContourSequence[0].ContourData


def test_write_part10_replaces_and_is_deterministic(tmp_path: Path) -> None:
    path = tmp_path / "a.dcm"
    path.write_bytes(b"old")
    write_part10(_dataset(), path)
    first = path.read_bytes()
    write_part10(_dataset(), path)
    assert path.read_bytes() == first != b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.dcm"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_write_part10_honours_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_part10(_dataset(), tmp_path / "a.dcm")
    finally:
        os.umask(old)
    assert (tmp_path / "a.dcm").stat().st_mode & 0o777 == 0o644


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.dcm"
    path.write_bytes(b"old")

    def broken(fh: Any, ds: Dataset, **kwargs: Any) -> None:
        fh.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(emulator_files, "dcmwrite", broken)
    with pytest.raises(OSError, match="No space"):
        write_part10(_dataset(), path)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.dcm"]
