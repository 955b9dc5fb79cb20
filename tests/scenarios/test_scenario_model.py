"""Reading scenario files, and judging an outcome against one: every mistake a
scenario writer can make is named with its key, and every difference is reported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from client.site import default_site
from emulators.scenarios import (
    Expect,
    Observed,
    ScenarioError,
    differences,
    find,
    flipped,
    load_scenario,
    with_free_ports,
)
from emulators.scenarios.model import parse_scenario

MINIMAL = """
description = "d"
[client]
run = ["rtmove", "echo"]
[expect]
exit = 0
"""


def test_a_minimal_scenario_takes_every_default() -> None:
    scenario = parse_scenario(MINIMAL, "minimal")
    assert scenario.name == "minimal"
    assert scenario.site.db_daemon.ae_title == "VMSDBD1"
    assert scenario.archive.patients == 1
    assert scenario.client.run == ("rtmove", "echo")
    assert scenario.expect.exit == 0 and scenario.expect.complete


@pytest.mark.parametrize(("text", "message"), [
    (MINIMAL.replace('description = "d"', ""), "description"),
    (MINIMAL + "\n[archve]\nseed = 1\n", "did you mean archive"),
    (MINIMAL.replace("[expect]\nexit = 0", "[expect]"), "must say what outcome"),
    (MINIMAL.replace("exit = 0", 'kind = "refused"\nexit = 3'), "means exit 6"),
    (MINIMAL.replace("exit = 0", 'kind = "broken"'), "expect.kind 'broken'"),
    (MINIMAL + "\n[faults.db_daemon.move]\nstatuss = 1\n",
     "faults.db_daemon.move.statuss: unknown key (did you mean 'status'?)"),
    (MINIMAL + "\n[faults.db_daemon.association]\nreject = [1, 1, 5]\n", "PS3.8"),
    (MINIMAL + "\n[faults.db_daemon.move]\nstatus = \"C001\"\n", "0xC001"),
    (MINIMAL + "\n[faults.file_daemon.store]\nwrite_delay = \"slow\"\n", "expected a number"),
    (MINIMAL + "\n[site.db_daemon]\nport = 70000\n", "db_daemon.port"),
    (MINIMAL + "\n[archive]\nslices = 1\n", "archive"),
    (MINIMAL.replace('run = ["rtmove", "echo"]', 'run = "rtmove echo"'), "client.run"),
    (MINIMAL + "\n[[faults.proxy]]\nleg = \"both\"\n", "'client', 'store'"),
    (MINIMAL + "\n[[faults.proxy]]\ntoxics = [{ kind = \"latency\", rate = 5 }]\n", "rate"),
    ("description = ", "not valid TOML"),
])
def test_mistakes_are_named(text: str, message: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(text, "bad")
    assert message in str(caught.value)


def test_statuses_may_be_written_in_hex() -> None:
    scenario = parse_scenario(MINIMAL + '\n[faults.db_daemon.move]\nstatus = "0xC001"\n', "x")
    assert scenario.faults.db_daemon.move.status == 0xC001


def test_ports_are_symbols() -> None:
    """Each distinct port number becomes its own free port; equal numbers stay equal."""
    text = MINIMAL + """
[[site.db_daemon.trusted]]
ae_title = "DCMTK"
host = "127.0.0.1"
port = 5680
[[site.db_daemon.trusted]]
ae_title = "VMSFD"
host = "127.0.0.1"
port = 5999
"""
    site = with_free_ports(parse_scenario(text, "ports").site)
    rows = {row.ae_title: row.port for row in site.db_trusted()}
    assert rows["DCMTK"] == site.client.port  # 5680 both times
    ports = {site.db_daemon.port, site.file_daemon.port, site.client.port, rows["VMSFD"]}
    assert len(ports) == 4 and 5999 not in ports and 5678 not in ports


def _seen(**changes: object) -> Observed:
    seen = Observed(["rtmove"], 0, "All objects arrived", 1.0,
                    files={"CT": 8, "RTPLAN": 1})
    for key, value in changes.items():
        setattr(seen, key, value)
    return seen


@pytest.mark.parametrize(("expect", "seen", "difference"), [
    (Expect(exit=0), _seen(exit=8), "exit code 8 (incomplete), expected 0"),
    (Expect(kind="incomplete"), _seen(), "exit code 0 (ok), expected 8 (incomplete)"),
    (Expect(exit=0), _seen(exit=None), "did not finish within its timeout"),
    (Expect(output=("ARRIVED  whole",)), _seen(), "output lacks"),
    (Expect(not_output=("arrived",)), _seen(), "output holds"),
    (Expect(files={"CT": 8, "RTPLAN": 1, "RTDOSE": 1}), _seen(), "0 RTDOSE file(s), expected 1"),
    (Expect(files={"CT": 8}), _seen(), "1 RTPLAN file(s), expected 0"),
    (Expect(out_files={}), _seen(out_files={"CT": 1}), "--out folder: 1 CT"),
    (Expect(exit=0), _seen(bad_files=["CT.1.dcm: pixel data has 2 of 8 bytes"]), "bad file"),
    (Expect(exit=0, complete=False), _seen(setup_failures=["setup command x exited 1"]),
     "setup command"),
    (Expect(kind="ok"), _seen(document={"kind": "incomplete"}), "JSON kind 'incomplete'"),
])
def test_each_difference_is_reported(expect: Expect, seen: Observed, difference: str) -> None:
    found = differences(expect, seen)
    assert any(difference in line for line in found), found


def test_a_matching_outcome_has_no_difference_and_its_opposite_has_some() -> None:
    expect = Expect(kind="ok", output=("all objects",), files={"CT": 8, "RTPLAN": 1})
    assert differences(expect, _seen()) == []
    assert differences(flipped(expect), _seen())


def test_an_unknown_scenario_name_suggests_close_ones() -> None:
    with pytest.raises(ScenarioError, match="did you mean happy-one-plan"):
        find("happy-one-plane")


def test_a_scenario_file_outside_the_catalog_is_found_by_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(MINIMAL, encoding="utf-8")
    assert find(str(path)).name == "mine"
    assert load_scenario(path).path == path


def test_scenario_list_json_names_the_catalog() -> None:
    done = subprocess.run([sys.executable, "-m", "emulators.cli", "scenario", "list", "--json"],
                          capture_output=True, text=True, check=True)
    rows = json.loads(done.stdout)["scenarios"]
    assert len(rows) >= 25
    assert {"happy-one-plan", "site-c001-for-doses"} <= {r["name"] for r in rows}
    assert all(r["description"] for r in rows)


@pytest.mark.interop
def test_scenario_run_reports_a_failing_scenario_with_its_difference(tmp_path: Path) -> None:
    """A user's own scenario file whose expectation is wrong: exit 1, and the table says
    what differed; the right one passes (exit 0) in the same run's JSON."""
    wrong = tmp_path / "wrong-expectation.toml"
    wrong.write_text(find("happy-one-plan").path.read_text(encoding="utf-8")  # type: ignore[union-attr]
                     .replace("RTDOSE = 1", "RTDOSE = 2"), encoding="utf-8")
    table = subprocess.run([sys.executable, "-m", "emulators.cli", "scenario", "run",
                            str(wrong)], capture_output=True, text=True, check=False)
    assert table.returncode == 1, table.stdout + table.stderr
    assert "FAIL" in table.stdout and "1 RTDOSE file(s), expected 2" in table.stdout
    done = subprocess.run([sys.executable, "-m", "emulators.cli", "scenario", "run",
                           "happy-one-plan", "--json"], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    [result] = json.loads(done.stdout)["results"]
    assert result["passed"] and result["files"]["CT"] == 8



def test_a_scenario_without_a_site_table_is_the_default_site() -> None:
    site, default = parse_scenario(MINIMAL, "x").site, default_site()
    assert (site.db_daemon, site.file_daemon, site.client) == (
        default.db_daemon, default.file_daemon, default.client)
