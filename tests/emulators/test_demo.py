"""``dbdsim demo``: both daemons, then rtmove in its own process, moving one plan whole."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest

from emulators.cli import main
from emulators.synthetic import Profile, SyntheticConfig, make_recipe

pytestmark = pytest.mark.interop


def test_the_demo_moves_the_first_plan_to_the_file_daemon_and_verifies_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--free-ports", "--out", str(tmp_path), "--seed", "13",
                 "--profile", "messy", "--patients", "2", "--slices", "6", "--rows", "32",
                 "--columns", "32"])
    assert code == 0, capsys.readouterr().err
    recipe = make_recipe(SyntheticConfig(seed=13, profile=Profile.MESSY, slices=6, rows=32,
                                         columns=32), 0)
    plan = recipe.plans[0]
    want = {plan.uid, plan.structure_set.uid, *plan.structure_set.ct.slice_uids,
            *(d.uid for d in recipe.doses if d.plan.uid == plan.uid)}
    folder = tmp_path / "filedaemon" / recipe.patient_id
    got = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
           for p in folder.glob("*.dcm")}
    assert got == want
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert {i["outcome"] for c in manifest["collections"] for i in c["items"]} == {"arrived"}
    err = capsys.readouterr().err
    assert f"{len(want)} files in {folder}" in err
