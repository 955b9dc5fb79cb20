"""The scripts rtmove dcmtk-script writes, run by sh + DCMTK movescu against the emulators.

The manifest is built by hand from the synthetic recipe's ground truth (not by
rtmove's own resolution), so a script that moves exactly that collection proves
the movescu lines, not a resolver agreeing with itself.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
from daemons import DCMTK_ENV, running_daemons, small_archive

from client.cli import main
from client.dcmtk_script import movescu_commands, write_scripts
from client.manifest import Collection, Item, Manifest, Role
from client.settings import from_site
from emulators.archive import Archive
from emulators.synthetic import PatientRecipe, Profile, SyntheticConfig, make_recipe

pytestmark = pytest.mark.interop

CONFIG = SyntheticConfig(seed=7, profile=Profile.MESSY, slices=6, rows=32, columns=32)


@pytest.fixture(scope="module")
def recipe() -> PatientRecipe:
    return make_recipe(CONFIG, 0)


@pytest.fixture(scope="module")
def archive(recipe: PatientRecipe) -> Iterator[Archive]:
    archive = small_archive(patients=1, seed=CONFIG.seed, profile=CONFIG.profile,
                            slices=CONFIG.slices, size=CONFIG.rows)
    assert archive.recipe(0).patient_id == recipe.patient_id
    yield archive
    archive.close()


def _collection(recipe: PatientRecipe) -> tuple[Manifest, set[str]]:
    """The first plan's collection as a manifest, and the SOP Instance UIDs it holds."""
    plan = recipe.plans[0]
    ss = plan.structure_set
    ct = ss.ct
    doses = [dose for dose in recipe.doses if dose.plan.uid == plan.uid]
    items = (
        Item(Role.PLAN, plan.study.uid, plan.series.uid, (plan.uid,), modality="RTPLAN",
             label=plan.label),
        Item(Role.STRUCTURE_SET, ss.study.uid, ss.series.uid, (ss.uid,), modality="RTSTRUCT",
             label=ss.label),
        Item(Role.IMAGES, ct.study.uid, ct.series.uid, ct.slice_uids, modality="CT",
             label=ct.series.description),
        *(Item(Role.DOSE, dose.study.uid, dose.series.uid, (dose.uid,), modality="RTDOSE")
          for dose in doses),
    )
    manifest = Manifest(recipe.patient_id, recipe.people.patient_name.pn,
                        (Collection(plan.uid, plan.label, items=items),))
    wanted = {plan.uid, ss.uid, *ct.slice_uids, *(dose.uid for dose in doses)}
    return manifest, wanted


def _run_sh(script: Path) -> str:
    done = subprocess.run(["sh", str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env=DCMTK_ENV, timeout=300, check=False)
    assert done.returncode == 0, done.stdout
    return done.stdout


def _arrived(folder: Path) -> set[str]:
    return {str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            for path in folder.rglob("*") if path.is_file() and not path.name.startswith(".")}


def test_scripts_move_exactly_the_collection(
        recipe: PatientRecipe, archive: Archive, tmp_path: Path,
        require_tool: Callable[[str], str]) -> None:
    """Unique keys only (the sample's form), then --hierarchical through the command."""
    dcmtk_bin = str(Path(require_tool("movescu")).parent)
    manifest, wanted = _collection(recipe)
    # The collection is a strict part of the patient: "nothing else" means something.
    assert len(recipe.plans) > 1 and any(d.plan.uid != recipe.plans[0].uid
                                         for d in recipe.doses)
    assert any(role is Role.DOSE for role in (i.role for i in manifest.items()))
    manifest_file = tmp_path / "manifest.json"
    manifest.save(manifest_file)
    with running_daemons(tmp_path, archive) as (site, dbd, _fd):
        folder = site.file_daemon.output / recipe.patient_id
        settings = from_site(site, port=dbd.port)
        paths = write_scripts(manifest, settings, tmp_path / "plain",
                              dcmtk_bin_posix=dcmtk_bin, hierarchical=False)
        (sh,) = [p for p in paths if p.suffix == ".sh"]
        assert "0020,000D" not in sh.read_text(encoding="utf-8")
        output = _run_sh(sh)
        # One association per movescu line: one per RT object, one for the CT series.
        assert output.count("Requesting Association") == len(movescu_commands(manifest,
                                                                              settings))
        assert _arrived(folder) == wanted

        shutil.rmtree(folder)
        out = tmp_path / "hierarchical"
        assert main(["dcmtk-script", "--manifest", str(manifest_file), "--out", str(out),
                     "--port", str(dbd.port), "--dcmtk-bin", dcmtk_bin, "--hierarchical"]) == 0
        (sh,) = out.glob("*.sh")
        assert f"0020,000D={recipe.plans[0].study.uid}" in sh.read_text(encoding="utf-8")
        _run_sh(sh)
        assert _arrived(folder) == wanted


def test_hierarchical_scripts_satisfy_a_strict_server(
        recipe: PatientRecipe, archive: Archive, tmp_path: Path,
        require_tool: Callable[[str], str]) -> None:
    """A server checking the hierarchy (as dcmqrscp does) refuses the sample's unique
    keys (0xA900) and moves the collection when the higher levels' UIDs are sent."""
    dcmtk_bin = str(Path(require_tool("movescu")).parent)
    manifest, wanted = _collection(recipe)
    with running_daemons(tmp_path, archive, strict_hierarchy=True) as (site, dbd, _fd):
        folder = site.file_daemon.output / recipe.patient_id
        settings = from_site(site, port=dbd.port)
        for hierarchical in (False, True):
            paths = write_scripts(manifest, settings, tmp_path / str(hierarchical),
                                  dcmtk_bin_posix=dcmtk_bin, hierarchical=hierarchical)
            (sh,) = [p for p in paths if p.suffix == ".sh"]
            if hierarchical:
                _run_sh(sh)
                assert _arrived(folder) == wanted
            else:
                # movescu's exit code on a failed move differs between DCMTK versions
                # (3.6.7: 69, and set -e stops there); either way nothing may arrive.
                subprocess.run(["sh", str(sh)], capture_output=True, env=DCMTK_ENV,
                               timeout=300, check=False)
                assert not folder.exists() or _arrived(folder) == set()
