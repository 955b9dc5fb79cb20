"""``dbdsim generate`` / ``preview`` / ``--version``, in-process and via the console script."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from contextlib import redirect_stdout
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pydicom
import pytest

from emulators.cli import main
from emulators.files import archive_path
from emulators.synthetic import PatientRecipe, Profile, SyntheticConfig, make_recipe, object_refs

SMALL = ["--slices", "8", "--rows", "64", "--columns", "64"]
SEED = 11
PATIENTS = 6  # messy: every mess kind among patients 0..4, beam doses somewhere likely


def _recipes(profile: Profile, patients: int = PATIENTS) -> list[PatientRecipe]:
    config = SyntheticConfig(seed=SEED, profile=profile, slices=8, rows=64, columns=64)
    return [make_recipe(config, i) for i in range(patients)]


def _generate(out: Path, *extra: str, profile: str = "messy") -> str:
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        status = main(["generate", "--patients", str(PATIENTS), "--seed", str(SEED),
                       "--out", str(out), "--profile", profile, *SMALL, *extra])
    assert status == 0
    return buffer.getvalue()


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("archive") / "out"  # not there yet: generate creates it
    return out, json.loads(_generate(out, "--json"))


def _tree(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file()}


def test_every_object_is_a_readable_file_where_it_belongs(
        archive: tuple[Path, dict[str, Any]]) -> None:
    out, _ = archive
    recipes = _recipes(Profile.MESSY)
    expected = {archive_path(out, r.patient_id, obj.modality, obj.sop_uid)
                for r in recipes for obj in object_refs(r)}
    files = {p for p in out.rglob("*") if p.is_file()}
    assert files == expected
    assert len(files) == sum(sum(1 for _ in object_refs(r)) for r in recipes)
    for recipe in recipes:
        folder = out / recipe.patient_id
        assert len(list(folder.iterdir())) == sum(1 for _ in object_refs(recipe))
    for path in files:
        ds = pydicom.dcmread(path)
        assert path.name == f"{ds.Modality}.{ds.SOPInstanceUID}.dcm"
        assert path.parent.name == ds.PatientID
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


def test_json_summary_matches_the_recipes(archive: tuple[Path, dict[str, Any]]) -> None:
    out, document = archive
    recipes = _recipes(Profile.MESSY)
    assert set(document) == {"patients", "totals", "out"}
    assert Path(document["out"]) == out.resolve()
    rows = document["patients"]
    assert [row["patient_id"] for row in rows] == [r.patient_id for r in recipes]
    for row, recipe in zip(rows, recipes, strict=True):
        approved = sum(p.approved for p in recipe.plans)
        assert row["name"] == recipe.people.patient_name.pn
        assert (row["locale"], row["charset"]) == (recipe.people.locale, recipe.people.charset)
        assert row["ct_studies"] == len(recipe.cts)
        assert row["ct_images"] == 8 * len(recipe.cts)
        assert row["structure_sets"] == len(recipe.structure_sets)
        assert (row["plans"], row["plans_approved"], row["plans_unapproved"]) == (
            len(recipe.plans), approved, len(recipe.plans) - approved)
        assert row["doses"] == len(recipe.doses)
        assert row["objects"] == sum(1 for _ in object_refs(recipe))
        assert row["messes"] == sorted(m.value for m in recipe.mess)
        assert Path(row["folder"]) == out.resolve() / recipe.patient_id
    totals = document["totals"]
    assert totals["patients"] == PATIENTS
    for key in ("ct_studies", "ct_images", "structure_sets", "plans", "plans_approved",
                "plans_unapproved", "doses", "objects"):
        assert totals[key] == sum(row[key] for row in rows)
    assert totals["objects"] == sum(1 for p in out.rglob("*") if p.is_file())
    # The messy profile shows its messes (patients 0..4 cover the first five kinds).
    assert totals["plans_unapproved"] >= 1
    assert any(row["ct_studies"] == 2 for row in rows)


def test_same_arguments_give_identical_bytes(archive: tuple[Path, dict[str, Any]],
                                             tmp_path: Path) -> None:
    out, document = archive
    again = json.loads(_generate(tmp_path, "--json"))
    assert _tree(tmp_path) == _tree(out)
    assert again["patients"] == [
        {**row, "folder": str(tmp_path.resolve() / row["patient_id"])}
        for row in document["patients"]]


def test_table_summary_and_rerun_into_the_same_folder(tmp_path: Path) -> None:
    text = _generate(tmp_path, profile="clean")
    for recipe in _recipes(Profile.CLEAN):
        assert recipe.patient_id in text
        assert recipe.people.locale in text
        assert (tmp_path / recipe.patient_id).is_dir()
    assert f"{PATIENTS} patients" in text
    assert "\x1b[" not in text  # no colour codes and no progress bar into a pipe
    assert "writing" not in text
    # Regenerating over an existing archive rewrites the same bytes and leaves no debris.
    before = _tree(tmp_path)
    _generate(tmp_path, "--json", profile="clean")
    assert _tree(tmp_path) == before


def test_progress_bar_on_a_terminal_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["generate", "--patients", "1", "--seed", "1", "--out", str(tmp_path),
                 "--json", *SMALL]) == 0
    captured = capsys.readouterr()
    json.loads(captured.out)  # the progress bar never mixes into stdout
    assert "writing" in captured.err


@pytest.mark.parametrize("argv", [
    [],
    ["generate", "--seed", "1", "--out", "x"],  # no --patients
    ["generate", "--patients", "0", "--seed", "1", "--out", "x"],
    ["generate", "--patients", "two", "--seed", "1", "--out", "x"],
    ["generate", "--patients", "1", "--seed", "-1", "--out", "x"],
    ["generate", "--patients", "1", "--seed", "1"],  # no --out
    ["generate", "--patients", "1", "--seed", "1", "--out", "x", "--profile", "tidy"],
    ["generate", "--patients", "1", "--seed", "1", "--out", "x", "--rows", "8"],
    ["generate", "--patients", "1", "--seed", "1", "--out", "x", "--slices", "1"],
    ["preview", "--seed", "1", "--patient", "0", "--out", "x.png", "--slices", "4",
     "--slice", "4"],
    ["preview", "--seed", "1", "--out", "x.png"],  # no --patient
    ["frobnicate"],
])
def test_bad_arguments_exit_2(argv: list[str], tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_uncreatable_output_folder_exits_1(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    status = main(["generate", "--patients", "1", "--seed", "1",
                   "--out", str(blocker / "out"), *SMALL])
    captured = capsys.readouterr()
    assert status == 1
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("dbdsim: error: cannot create output folder")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"dbdsim {version('dbdsim')}"


def test_preview_command_prints_the_path(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "deep" / "p.png"
    assert main(["preview", "--seed", "1", "--patient", "2", "--out", str(out),
                 "--profile", "messy", "--slice", "3", *SMALL]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _console_script() -> str:
    found = shutil.which("dbdsim", path=str(Path(sys.executable).parent)) or \
        shutil.which("dbdsim")
    if found is None:
        pytest.fail("the dbdsim console script is not installed (pip install -e .)")
    return found


def test_console_script(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [_console_script(), "generate", "--patients", "2", "--seed", str(SEED),
         "--out", str(out), "--profile", "messy", "--json", *SMALL],
        capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    recipes = _recipes(Profile.MESSY, 2)
    assert [row["patient_id"] for row in document["patients"]] == [
        r.patient_id for r in recipes]
    assert document["totals"]["objects"] == sum(1 for p in out.rglob("*") if p.is_file()) == \
        sum(sum(1 for _ in object_refs(r)) for r in recipes)

    bad = subprocess.run([_console_script(), "generate", "--patients", "0", "--seed", "1",
                          "--out", str(out)], capture_output=True, text=True, timeout=60,
                         check=False)
    assert bad.returncode == 2
    assert bad.stdout == ""
