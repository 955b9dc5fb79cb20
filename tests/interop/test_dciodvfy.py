"""dicom3tools' verdict on the synthetic archive: no IOD errors, consistent entities."""

from __future__ import annotations

import subprocess
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from emulators.synthetic import Mess, PatientRecipe, Profile, SyntheticConfig, make_recipe
from emulators.synthetic.modules import with_file_meta
from emulators.synthetic.objects import object_refs

pytestmark = pytest.mark.interop

SEED = 11
PATIENTS = 5
SMALL = SyntheticConfig(seed=SEED, profile=Profile.MESSY, slices=16, rows=128, columns=128)
FIRST_FIVE_MESSES = (Mess.SECOND_PLAN, Mess.PLAN_WITHOUT_DOSE, Mess.UNAPPROVED_PLAN,
                     Mess.SECOND_STRUCTURE_SET, Mess.SECOND_CT_STUDY)


@dataclass(frozen=True)
class Patient:
    recipe: PatientRecipe
    files: list[Path]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory,
            write_recipe: Callable[[PatientRecipe, Path], list[Path]]) -> list[Patient]:
    root = tmp_path_factory.mktemp("messy")
    patients = []
    for index in range(PATIENTS):
        recipe = make_recipe(SMALL, index)
        patients.append(Patient(recipe, write_recipe(recipe, root)))
    return patients


def run_tool(tool: str, *files: Path) -> tuple[int, list[str]]:
    """Exit status and the output lines (dicom3tools report on stderr) of one run."""
    done = subprocess.run([tool, *map(str, files)], capture_output=True, text=True,
                          errors="replace", timeout=300, check=False)
    return done.returncode, (done.stderr + done.stdout).splitlines()


def verdict_errors(tool: str, *files: Path) -> list[str]:
    """The Error lines of one run, or why the run failed without any."""
    status, lines = run_tool(tool, *files)
    errors = [line for line in lines if line.startswith("Error - ")]
    if status != 0 and not errors:
        errors.append(f"exit status {status} with no Error line: {lines[-5:]}")
    name = files[0].name if len(files) == 1 else f"{len(files)} files of {files[0].parent.name}"
    return [f"{name}: {line}" for line in errors]


def dciodvfy_all(dciodvfy: str, files: list[Path]) -> list[str]:
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = pool.map(lambda f: verdict_errors(dciodvfy, f), files)
    return [line for lines in results for line in lines]


def test_dciodvfy_finds_no_error_in_messy_archive(
        archive: list[Patient], require_tool: Callable[[str], str]) -> None:
    dciodvfy = require_tool("dciodvfy")
    files = [f for patient in archive for f in patient.files]
    assert len(files) > PATIENTS * SMALL.slices
    errors = dciodvfy_all(dciodvfy, files)
    assert not errors, f"dciodvfy reported {len(errors)} error(s):\n" + "\n".join(errors)


def test_dciodvfy_finds_no_error_in_full_size_ct_slice(
        tmp_path: Path, require_tool: Callable[[str], str]) -> None:
    dciodvfy = require_tool("dciodvfy")
    recipe = make_recipe(SyntheticConfig(seed=SEED, profile=Profile.MESSY), 0)
    ct = next(object_refs(recipe))
    ds = with_file_meta(ct.build())
    assert (ds.Modality, ds.Rows, ds.Columns) == ("CT", 512, 512)
    path = tmp_path / f"CT.{ct.sop_uid}.dcm"
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    errors = verdict_errors(dciodvfy, path)
    assert not errors, "dciodvfy reported:\n" + "\n".join(errors)


def test_dcentvfy_finds_entities_consistent_per_patient(
        archive: list[Patient], require_tool: Callable[[str], str]) -> None:
    dcentvfy = require_tool("dcentvfy")
    errors = [line for patient in archive for line in verdict_errors(dcentvfy, *patient.files)]
    assert not errors, f"dcentvfy reported {len(errors)} error(s):\n" + "\n".join(errors)


def _headers(patient: Patient) -> list[Dataset]:
    return [pydicom.dcmread(f, stop_before_pixels=True) for f in patient.files]


def _messes_seen_in_files(headers: list[Dataset]) -> set[Mess]:
    """Which of the first five messes the files themselves show (not the recipe)."""
    by_modality: dict[str, list[Dataset]] = defaultdict(list)
    for ds in headers:
        by_modality[ds.Modality].append(ds)
    plans_per_ss: dict[str, int] = defaultdict(int)
    for plan in by_modality["RTPLAN"]:
        plans_per_ss[plan.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID] += 1
    dosed = {d.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID
             for d in by_modality["RTDOSE"]}
    ss_per_ct: dict[str, int] = defaultdict(int)
    for ss in by_modality["RTSTRUCT"]:
        study = ss.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
        ss_per_ct[study.RTReferencedSeriesSequence[0].SeriesInstanceUID] += 1
    seen = set()
    if any(count >= 2 for count in plans_per_ss.values()):
        seen.add(Mess.SECOND_PLAN)
    if any(p.SOPInstanceUID not in dosed for p in by_modality["RTPLAN"]):
        seen.add(Mess.PLAN_WITHOUT_DOSE)
    if any(p.ApprovalStatus == "UNAPPROVED" for p in by_modality["RTPLAN"]):
        seen.add(Mess.UNAPPROVED_PLAN)
    if any(count >= 2 for count in ss_per_ct.values()):
        seen.add(Mess.SECOND_STRUCTURE_SET)
    if len({ct.StudyInstanceUID for ct in by_modality["CT"]}) >= 2:
        seen.add(Mess.SECOND_CT_STUDY)
    return seen


def test_messy_archive_covers_modalities_and_messes(archive: list[Patient]) -> None:
    modalities: set[str] = set()
    in_recipes: set[Mess] = set()
    in_files: set[Mess] = set()
    for patient in archive:
        headers = _headers(patient)
        modalities |= {ds.Modality for ds in headers}
        in_recipes |= patient.recipe.mess
        in_files |= _messes_seen_in_files(headers)
    assert modalities >= {"CT", "RTSTRUCT", "RTPLAN", "RTDOSE"}
    assert in_recipes >= set(FIRST_FIVE_MESSES)
    assert in_files >= set(FIRST_FIVE_MESSES)
