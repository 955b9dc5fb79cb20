"""rtmove collect against three Q/R SCPs: our DB Daemon, DCMTK's dcmqrscp and Orthanc.

Every plan of 20 seeded ``messy`` patients is collected to the client itself, and
what arrives is compared with the generator's own ground truth (the recipe), never
with the client's manifest: the client must not depend on anything only our
emulator does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from archive_servers import archive_server
from daemons import running_daemons
from peers import free_port, running

from client.collect import collect
from client.resolve import PlanChoice
from client.settings import Settings
from client.settings import from_site as settings_from_site
from client.site import TrustedAE, default_site
from emulators.archive import Archive
from emulators.files import write_patient
from emulators.synthetic import Mess, PatientRecipe, Profile, SyntheticConfig
from emulators.synthetic import make_recipe as recipe_of
from emulators.synthetic.recipe import PlanSpec

pytestmark = pytest.mark.interop

CONFIG = SyntheticConfig(seed=11, profile=Profile.MESSY, slices=6, rows=32, columns=32)
PATIENTS = 20
CLIENT_AE = "RTMOVE"
SERVERS = ("emulator", "dcmqrscp", "orthanc")


@dataclass(frozen=True)
class Target:
    kind: str
    host: str
    port: int
    aec: str
    recv_port: int
    sink: Path  # where DCMTK's storescp, move destination SINK, writes

    def settings(self, out: Path, **extra: object) -> Settings:
        values: dict[str, object] = {
            "host": self.host, "port": self.port, "aec": self.aec, "aet": CLIENT_AE,
            "recv_port": self.recv_port, "dest": "self", "out": out, "backoff": 0.05,
            "timeout": 20.0, **extra}
        return settings_from_site(default_site(), **values)


def truth(plan: PlanSpec, recipe: PatientRecipe) -> set[str]:
    """What the plan's collection is, by construction."""
    ss = plan.structure_set
    return {plan.uid, ss.uid, *ss.ct.slice_uids,
            *(d.uid for d in recipe.doses if d.plan.uid == plan.uid)}


def arrived(folder: Path) -> set[str]:
    """SOP Instance UIDs of the DICOM files in ``folder`` (storescp writes no suffix)."""
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
            for p in folder.rglob("*")
            if p.is_file() and not p.name.startswith(".") and p.suffix != ".json"}


def expected_warnings(plan: PlanSpec, recipe: PatientRecipe) -> set[str]:
    out = set()
    if not any(d.plan.uid == plan.uid for d in recipe.doses):
        out.add("no-dose")
    if any(ss is not plan.structure_set and ss.ct is plan.structure_set.ct
           for ss in recipe.structure_sets):
        out.add("other-structure-set")
    return out


def warning_kind(text: str) -> str:
    if "has no dose in the archive" in text:
        return "no-dose"
    if "also has structure set(s)" in text:
        return "other-structure-set"
    return f"unexpected: {text}"


@pytest.fixture(scope="module", params=SERVERS)
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           require_tool: Callable[[str], str]) -> Iterator[Target]:
    kind = str(request.param)
    tmp = tmp_path_factory.mktemp(kind)
    require_tool("storescp")
    sink, sink_port, recv_port = tmp / "sink", free_port(), free_port()
    sink.mkdir()
    with ExitStack() as stack:
        stack.enter_context(running(["storescp", "-aet", "SINK", "-od", str(sink),
                                     str(sink_port)], sink_port, tmp / "storescp.log"))
        if kind == "emulator":
            archive = Archive.synthetic(CONFIG, PATIENTS)
            stack.callback(archive.close)
            site, dbd, _fd = stack.enter_context(running_daemons(
                tmp, archive, extra=(TrustedAE(CLIENT_AE, "127.0.0.1", recv_port),
                                     TrustedAE("SINK", "127.0.0.1", sink_port))))
            yield Target(kind, "127.0.0.1", dbd.port, site.db_daemon.ae_title, recv_port, sink)
            return
        require_tool("storescu")
        require_tool("dcmqrscp" if kind == "dcmqrscp" else "Orthanc")
        files: list[Path] = []
        for index in range(PATIENTS):
            files += write_patient(recipe_of(CONFIG, index), tmp / "files")
        server = stack.enter_context(archive_server(
            kind, tmp / "server", files,
            {CLIENT_AE: ("127.0.0.1", recv_port), "SINK": ("127.0.0.1", sink_port)}))
        yield Target(kind, server.host, server.port, server.ae_title, recv_port, sink)


@pytest.mark.parametrize("index", range(PATIENTS))
def test_every_plan_brings_exactly_its_collection(target: Target, index: int,
                                                  tmp_path: Path) -> None:
    recipe = recipe_of(CONFIG, index)
    for n, plan in enumerate(recipe.plans):
        out = tmp_path / f"plan{n}"
        result = collect(target.settings(out), recipe.patient_id, PlanChoice(uid=plan.uid))
        assert result.error is None, result.error
        assert int(result.kind) == 0, (result.kind, result.problems)
        assert arrived(out) == truth(plan, recipe), plan.label
        [collection] = result.manifest.collections
        kinds = {warning_kind(w) for w in collection.warnings}
        assert kinds == expected_warnings(plan, recipe), (plan.label, collection.warnings)


def _mess_patient(mess: Mess) -> PatientRecipe:
    return next(r for r in (recipe_of(CONFIG, i) for i in range(PATIENTS)) if mess in r.mess)


def test_approved_plans_leave_out_the_unapproved_one(target: Target, tmp_path: Path) -> None:
    recipe = _mess_patient(Mess.UNAPPROVED_PLAN)
    result = collect(target.settings(tmp_path / "out"), recipe.patient_id,
                     PlanChoice(approved_only=True))
    assert int(result.kind) == 0, result.error
    chosen = {c.plan_uid for c in result.manifest.collections}
    assert chosen == {p.uid for p in recipe.plans if p.approved}
    want = set().union(*(truth(p, recipe) for p in recipe.plans if p.approved))
    assert arrived(tmp_path / "out") == want


def test_a_label_selects_its_plan_and_an_unknown_patient_is_not_found(
        target: Target, tmp_path: Path) -> None:
    recipe = recipe_of(CONFIG, 0)
    plan = recipe.plans[0]
    result = collect(target.settings(tmp_path / "out"), recipe.patient_id,
                     PlanChoice(label=plan.label))
    assert [c.plan_uid for c in result.manifest.collections] == [plan.uid]
    with pytest.raises(Exception, match="has no patient with ID 'NOBODY'") as info:
        collect(target.settings(tmp_path / "none"), "NOBODY", PlanChoice())
    assert getattr(info.value, "kind", None) == 7


def test_the_exact_command_line_works(target: Target, tmp_path: Path) -> None:
    recipe = recipe_of(CONFIG, 1)
    plan = recipe.plans[0]
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "client.cli", "collect", "--patient", recipe.patient_id,
         "--plan", plan.uid, "--host", target.host, "--port", str(target.port),
         "--aec", target.aec, "--aet", CLIENT_AE, "--recv-port", str(target.recv_port),
         "--dest", "self", "--out", str(out), "--json"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "TCP_NODELAY": "1"},
        check=False)
    assert done.returncode == 0, done.stderr + done.stdout
    report = json.loads(done.stdout)
    assert report["ok"] is True
    assert arrived(out) == truth(plan, recipe)
    saved = json.loads((out / "manifest.json").read_text())
    outcomes = {i["outcome"] for c in saved["collections"] for i in c["items"]}
    assert outcomes == {"arrived"}


def _rtmove(target: Target, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "client.cli", *argv, "--host", target.host,
         "--port", str(target.port), "--aec", target.aec, "--aet", CLIENT_AE,
         "--recv-port", str(target.recv_port), "--json"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "TCP_NODELAY": "1"},
        check=False)


def test_to_another_destination_the_counts_are_checked(target: Target, tmp_path: Path) -> None:
    """No folder to look in: the sub-operation counts against the C-FIND count decide."""
    recipe = recipe_of(CONFIG, 2)
    plan = recipe.plans[0]
    before = arrived(target.sink)
    done = _rtmove(target, "collect", "--patient", recipe.patient_id, "--plan", plan.uid,
                   "--dest", "SINK", "--write-manifest", str(tmp_path / "m.json"))
    assert done.returncode == 0, done.stderr + done.stdout
    report = json.loads(done.stdout)
    outcomes = {i["outcome"] for c in report["manifest"]["collections"] for i in c["items"]}
    assert outcomes == {"moved"}  # the server says so; nobody looked
    assert arrived(target.sink) - before == truth(plan, recipe)


def test_find_lists_the_plans_with_label_approval_and_doses(target: Target) -> None:
    recipe = next(r for r in (recipe_of(CONFIG, i) for i in range(PATIENTS))
                  if Mess.PLAN_WITHOUT_DOSE in r.mess and Mess.UNAPPROVED_PLAN in r.mess)
    done = _rtmove(target, "find", "--patient", recipe.patient_id)
    assert done.returncode == 0, done.stderr
    plans = {p["sop_instance_uid"]: p for p in json.loads(done.stdout)["plans"]}
    assert set(plans) == {p.uid for p in recipe.plans}
    for spec in recipe.plans:
        got = plans[spec.uid]
        assert got["label"] == spec.label
        assert got["approval"] == ("APPROVED" if spec.approved else "UNAPPROVED")
        assert got["doses"] == sum(d.plan.uid == spec.uid for d in recipe.doses)


def test_move_a_hand_written_manifest(target: Target, tmp_path: Path) -> None:
    """Only UIDs, as exported from a scripting API: the CT by series, the plan by instance."""
    recipe = recipe_of(CONFIG, 3)
    plan = recipe.plans[0]
    ct = plan.structure_set.ct
    manifest = tmp_path / "uids.json"
    manifest.write_text(json.dumps({"patient_id": recipe.patient_id, "items": [
        {"study_uid": ct.study.uid, "series_uid": ct.series.uid},
        {"study_uid": plan.study.uid, "series_uid": plan.series.uid, "sop_uids": [plan.uid]},
    ]}))
    out = tmp_path / "out"
    done = _rtmove(target, "move", "--manifest", str(manifest), "--dest", "self",
                   "--out", str(out))
    assert done.returncode == 0, done.stderr + done.stdout
    assert arrived(out) == {plan.uid, *ct.slice_uids}
    saved = json.loads((out / "manifest.json").read_text())
    [series] = [i for c in saved["collections"] for i in c["items"] if i["level"] == "SERIES"]
    assert set(series["sop_uids"]) == set(ct.slice_uids)  # learned by C-FIND
    assert series["outcome"] == "arrived"


def test_an_unknown_destination_is_explained_whatever_the_server_says(
        target: Target, tmp_path: Path) -> None:
    """dcmqrscp and the emulator answer 0xA801, Orthanc 0xC000: both end as exit 5
    with a sentence naming the destination and where to add it."""
    recipe = recipe_of(CONFIG, 4)
    done = _rtmove(target, "collect", "--patient", recipe.patient_id,
                   "--plan", recipe.plans[0].uid, "--dest", "NOSUCH", "--retries", "0",
                   "--write-manifest", str(tmp_path / "m.json"))
    assert done.returncode == 5, done.stdout + done.stderr
    error = json.loads(done.stdout)["error"]
    assert "NOSUCH" in error
    if target.kind == "orthanc":
        assert "0xC000" in error and "do not know the move destination" in error
    else:
        assert f"{target.aec} does not know the move destination NOSUCH (status 0xA801)" \
            in error


def test_a_listed_series_the_archive_does_not_have_fails_by_name(target: Target,
                                                                 tmp_path: Path) -> None:
    recipe = recipe_of(CONFIG, 3)
    plan = recipe.plans[0]
    manifest = tmp_path / "uids.json"
    manifest.write_text(json.dumps({"patient_id": recipe.patient_id, "items": [
        {"study_uid": plan.study.uid, "series_uid": "1.2.3.4.5.6.7"},
        {"study_uid": plan.study.uid, "series_uid": plan.series.uid, "sop_uids": [plan.uid]},
    ]}))
    done = _rtmove(target, "move", "--manifest", str(manifest), "--dest", "self",
                   "--out", str(tmp_path / "out"))
    assert done.returncode == 8, done.stderr + done.stdout  # incomplete
    items = json.loads(done.stdout)["manifest"]["collections"][0]["items"]
    assert items[0]["outcome"] == "failed"
    assert "lists no instance in series 1.2.3.4.5.6.7" in items[0]["note"]
    assert items[1]["outcome"] == "arrived"
