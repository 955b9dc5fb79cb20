"""The whole catalog runs in CI, and is shown able to fail.

Each scenario must show its expected outcome; the same observation must fail the
opposite expectation; and each client defect a scenario says it ``catches`` (a
deliberately broken rtmove, ``broken_rtmove.py``) must make it fail.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from emulators.scenarios import differences, flipped, load_all, run_scenario
from emulators.scenarios.model import Scenario

BROKEN = Path(__file__).with_name("broken_rtmove.py")
CATALOG = load_all()
BY_NAME = {s.name: s for s in CATALOG}
CATCHES = [(s.name, defect) for s in CATALOG for defect in s.catches]

pytestmark = [pytest.mark.interop, pytest.mark.slow]


def _needs_tools(scenario: Scenario, require_tool: object) -> None:
    program = scenario.client.run[0]
    if program not in ("rtmove", "dbdsim"):
        require_tool(program)  # type: ignore[operator]


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_scenario_shows_its_outcome(name: str, require_tool: object) -> None:
    scenario = BY_NAME[name]
    _needs_tools(scenario, require_tool)
    result = run_scenario(scenario)
    assert result.passed, (
        f"{name}: " + "; ".join(result.differences) + "\n--- output\n"
        + result.observed.output + "\n--- daemons\n" + "\n".join(result.observed.log))
    # The same observation against the opposite expectation must fail, on its exit
    # code and on the files it left.
    opposite = differences(flipped(scenario.expect), result.observed)
    assert any(line.startswith("exit code") for line in opposite), opposite
    assert any("file(s), expected" in line for line in opposite), opposite


@pytest.mark.parametrize(("name", "defect"), CATCHES, ids=[f"{n}-{d}" for n, d in CATCHES])
def test_scenario_catches_a_broken_client(name: str, defect: str) -> None:
    broken = (sys.executable, str(BROKEN), defect)
    result = run_scenario(BY_NAME[name], programs={"rtmove": broken})
    assert not result.passed, f"{name} did not notice an rtmove with defect {defect!r}"


def test_every_rtmove_scenario_names_a_defect_it_catches() -> None:
    silent = [s.name for s in CATALOG if s.client.run[0] == "rtmove" and not s.catches]
    assert not silent, f"scenarios that no broken client was shown to fail: {silent}"


def test_the_catalog_is_large_and_covers_every_fault_kind() -> None:
    assert len(CATALOG) >= 25
    used: set[str] = set()
    for scenario in CATALOG:
        _collect_set_fields("faults", scenario.faults, used)
        for proxy in scenario.faults.proxy:
            used.add(f"proxy.{proxy.leg}")
            used.update(f"toxic.{t.kind}" for t in proxy.toxics)
        quirks = scenario.site.db_daemon.quirks
        used.update(f"quirks.{f.name}" for f in dataclasses.fields(quirks)
                    if getattr(quirks, f.name) != f.default)
    wanted = {
        "faults.db_daemon.association.reject", "faults.db_daemon.association.accept_delay",
        "faults.db_daemon.association.abort_after_pdus",
        "faults.db_daemon.association.max_concurrent",
        "faults.db_daemon.find.status", "faults.db_daemon.find.drop",
        "faults.db_daemon.move.status", "faults.db_daemon.move.drop_final",
        "faults.db_daemon.move.fail_suboperations", "faults.db_daemon.move.fail_fraction",
        "faults.db_daemon.move.abort_after", "faults.db_daemon.move.ignore_cancel",
        "faults.file_daemon.store.refuse_sop_classes",
        "faults.file_daemon.store.out_of_resources_after",
        "faults.file_daemon.store.disk_full_after", "faults.file_daemon.store.write_delay",
        "faults.file_daemon.store.finish_after",
        "faults.data.dangling", "faults.data.missing_slices", "faults.data.duplicate_uid_of",
        "faults.data.charset", "faults.data.dose_on_other_grid", "faults.data.empty_beams",
        "proxy.client", "proxy.store", "toxic.latency", "toxic.bandwidth", "toxic.timeout",
        "toxic.reset_peer", "toxic.slicer", "toxic.limit_data",
        "quirks.c001_modalities", "quirks.refuse_plans_without_beams",
        "quirks.partial_move_fraction",
    }
    assert not wanted - used, f"no scenario uses {sorted(wanted - used)}"


def _collect_set_fields(prefix: str, value: object, out: set[str]) -> None:
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        return
    for f in dataclasses.fields(value):
        inner = getattr(value, f.name)
        if dataclasses.is_dataclass(inner):
            _collect_set_fields(f"{prefix}.{f.name}", inner, out)
        elif f.name != "proxy" and inner != f.default and (
                f.default_factory is dataclasses.MISSING or inner != f.default_factory()):
            out.add(f"{prefix}.{f.name}")

