"""dbdsim's pytest plugin as its users meet it: test files run by pytest in a subprocess
(pytester), with the plugin loaded from its entry point, no conftest.

Each run is a separate process (the daemons run threads; a subprocess keeps them out of
this one), so the inner tests are grouped into few files.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "docs" / "example_test_export.py"
DOC = REPO / "README.md"
RUN = ("-p", "no:cacheprovider", "--strict-markers")

FIXTURES_AND_MARKERS = '''
import dataclasses
import socket
import subprocess
import threading

import pytest

from client.site import load_site
from emulators.faults import (AssociationFaults, DBDaemonFaults, FaultError, Faults,
                              ProxySpec)
from emulators.pytest_plugin import DBDSite, SyntheticArchive

BASELINE_THREADS = threading.active_count()
SEEN = {}


def echoscu(site):
    return subprocess.run(["echoscu", "-aet", site.client_aet, "-aec", site.db_aet,
                           site.db_host, str(site.db_port)], env=site.env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)


def test_the_default_site_and_archive(dbd_site, synthetic_archive, db_daemon, file_daemon):
    assert isinstance(dbd_site, DBDSite) and isinstance(synthetic_archive, SyntheticArchive)
    assert (dbd_site.db_aet, dbd_site.fd_aet, dbd_site.client_aet) == ("VMSDBD1", "VMSFD",
                                                                      "DCMTK")
    assert (dbd_site.db_host, dbd_site.db_port) == ("127.0.0.1", db_daemon.port)
    assert (dbd_site.fd_host, dbd_site.fd_port) == ("127.0.0.1", file_daemon.port)
    assert db_daemon.running and file_daemon.running
    assert file_daemon.output == dbd_site.fd_out
    assert dbd_site.env["TCP_NODELAY"] == "1"
    assert dataclasses.replace(load_site(dbd_site.path), source="") == \\
        dataclasses.replace(dbd_site.site, source="")
    config = synthetic_archive.config
    assert (config.seed, str(config.profile), config.slices, config.rows) == (0, "clean", 8, 32)
    assert len(synthetic_archive.patients) == 1
    assert synthetic_archive.archive is db_daemon.archive
    plan = synthetic_archive.collection()
    assert plan.patient_id == synthetic_archive.patient_ids[0]
    assert plan.files_by_modality() == {"CT": 8, "RTDOSE": 1, "RTPLAN": 1, "RTSTRUCT": 1}
    assert len(plan.uids) == 11 and plan.plan_uid in plan.uids
    assert dbd_site.files() == {}
    with pytest.raises(IndexError, match="the archive has 1 patients"):
        synthetic_archive.collection(patient=1)
    SEEN["daemons"] = (db_daemon, file_daemon)


def test_after_a_test_its_daemons_are_stopped_and_their_ports_free():
    for daemon in SEEN["daemons"]:
        assert not daemon.running
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", daemon.requested_port))
    assert threading.active_count() == BASELINE_THREADS, threading.enumerate()


@pytest.mark.dbd_archive(seed=3, patients=2, profile="messy", slices=4)
def test_dbd_archive_chooses_the_archive(synthetic_archive, db_daemon):
    config = synthetic_archive.config
    assert (config.seed, str(config.profile), config.slices) == (3, "messy", 4)
    assert len(synthetic_archive.patient_ids) == 2 == db_daemon.archive.index.counts().patients
    assert len(synthetic_archive.collection(patient=1).image_uids) == 4


@pytest.mark.synthetic_archive(seed=5, patients=2)
def test_synthetic_archive_is_the_same_marker(synthetic_archive):
    assert synthetic_archive.config.seed == 5 and len(synthetic_archive.patients) == 2


@pytest.mark.dbd_scenario("happy-one-plan")
def test_a_catalog_scenario(synthetic_archive, dbd_site):
    assert synthetic_archive.config.seed == 1  # the scenario's archive
    assert echoscu(dbd_site).returncode == 0


@pytest.mark.dbd_scenario("happy-one-plan")
@pytest.mark.dbd_archive(patients=2)
def test_dbd_archive_replaces_what_it_names_of_the_scenarios_archive(synthetic_archive):
    assert synthetic_archive.config.seed == 1 and len(synthetic_archive.patients) == 2


@pytest.mark.dbd_scenario("rejecting.toml")
def test_a_scenario_file_beside_the_test_brings_its_faults(dbd_site):
    done = echoscu(dbd_site)
    assert done.returncode != 0 and "Association Rejected" in done.stdout, done.stdout


@pytest.mark.dbd_scenario("through-proxies.toml")
def test_behind_a_proxy_the_site_names_the_proxy(dbd_site, db_daemon):
    assert dbd_site.db_port != db_daemon.port  # the client leg's proxy
    assert dbd_site.site.db_daemon.port == dbd_site.db_port
    assert echoscu(dbd_site).returncode == 0


def test_dbd_faults_breaks_the_running_daemon(dbd_site, dbd_faults):
    assert echoscu(dbd_site).returncode == 0
    dbd_faults(Faults(db_daemon=DBDaemonFaults(association=AssociationFaults(
        reject=(1, 1, 3)))))
    done = echoscu(dbd_site)
    assert done.returncode != 0, done.stdout
    assert "Association Rejected" in done.stdout and "Calling AE Title Not Recognized" \\
        in done.stdout, done.stdout


def test_dbd_faults_cannot_add_a_proxy(dbd_faults):
    with pytest.raises(FaultError, match="dbd_scenario"):
        dbd_faults(Faults(proxy=(ProxySpec(),)))
'''

REJECTING_SCENARIO = '''
description = "The DB Daemon rejects every association (transient, congestion)."
[faults.db_daemon.association]
reject = [2, 3, 1]
[client]
run = ["true"]
[expect]
exit = 0
'''

THROUGH_PROXIES = '''
description = "A little latency on both legs."
[[faults.proxy]]
leg = "client"
toxics = [{ kind = "latency", latency = 0.005 }]
[[faults.proxy]]
leg = "store"
toxics = [{ kind = "latency", latency = 0.005 }]
[client]
run = ["true"]
[expect]
exit = 0
'''

BAD_MARKERS = '''
import pytest

@pytest.mark.dbd_archive(seedd=1)
def test_unknown_argument(synthetic_archive): pass

@pytest.mark.dbd_archive(patients="2")
def test_wrong_type(synthetic_archive): pass

@pytest.mark.dbd_archive(3)
def test_positional(synthetic_archive): pass

@pytest.mark.dbd_archive(profile="tidy")
def test_unknown_profile(dbd_site): pass

@pytest.mark.synthetic_archive(slices=1)
def test_too_few_slices(db_daemon): pass

@pytest.mark.dbd_archive(patients=0)
def test_no_patients(file_daemon): pass

@pytest.mark.dbd_scenario("happy-one-plam")
def test_unknown_scenario(dbd_site): pass

@pytest.mark.dbd_scenario()
def test_no_scenario_named(dbd_faults): pass

@pytest.mark.dbd_scenario("non-ascii.toml")
@pytest.mark.dbd_archive(seed=1, patients=1)
def test_a_scenario_the_archive_cannot_serve(dbd_site): pass
'''

NON_ASCII_SCENARIO = '''
description = "A patient with a non-ASCII name."
[client]
run = ["true"]
patient = "non-ascii"
[expect]
exit = 0
'''


def test_the_doc_shows_the_example_as_it_is_tested() -> None:
    assert EXAMPLE.read_text(encoding="utf-8") in DOC.read_text(encoding="utf-8")


@pytest.mark.interop
def test_the_documented_example_passes(pytester: pytest.Pytester,
                                       require_tool: Callable[[str], str]) -> None:
    for tool in ("echoscu", "movescu"):
        require_tool(tool)
    shutil.copy(EXAMPLE, pytester.path / "test_example_export.py")
    result = pytester.runpytest_subprocess(*RUN)
    result.assert_outcomes(passed=3)


@pytest.mark.interop
def test_fixtures_and_markers(pytester: pytest.Pytester,
                              require_tool: Callable[[str], str]) -> None:
    require_tool("echoscu")
    pytester.makepyfile(test_fixtures=FIXTURES_AND_MARKERS)
    (pytester.path / "rejecting.toml").write_text(REJECTING_SCENARIO, encoding="utf-8")
    (pytester.path / "through-proxies.toml").write_text(THROUGH_PROXIES, encoding="utf-8")
    result = pytester.runpytest_subprocess(*RUN, "-p", "no:randomly")
    result.assert_outcomes(passed=10)


def test_markers_are_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--markers")
    result.stdout.fnmatch_lines([
        "@pytest.mark.dbd_archive(seed=0, patients=1, profile='clean', slices=8, rows=32, "
        "columns=32):*",
        "@pytest.mark.synthetic_archive(*): the same as dbd_archive",
        "@pytest.mark.dbd_scenario(name_or_path):*",
    ])


def test_wrong_marker_arguments_fail_the_test_naming_marker_and_argument(
        pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_bad=BAD_MARKERS)
    (pytester.path / "non-ascii.toml").write_text(NON_ASCII_SCENARIO, encoding="utf-8")
    result = pytester.runpytest_subprocess(*RUN)
    result.assert_outcomes(errors=9)
    result.stdout.fnmatch_lines_random([
        "*@pytest.mark.dbd_archive: unknown argument 'seedd' (did you mean 'seed'?); known: "
        "seed, patients, profile, slices, rows, columns",
        "*@pytest.mark.dbd_archive: patients='2': expected an integer",
        "*@pytest.mark.dbd_archive: takes keyword arguments only (got dbd_archive(3))",
        "*@pytest.mark.dbd_archive: profile='tidy': one of 'clean', 'messy'",
        "*@pytest.mark.synthetic_archive: a CT needs at least 2 slices*",
        "*@pytest.mark.dbd_archive: patients must be at least 1*",
        "*@pytest.mark.dbd_scenario: no scenario 'happy-one-plam' in the catalog; did you mean "
        "happy-one-plan?*",
        "*@pytest.mark.dbd_scenario: takes one argument*(got dbd_scenario())",
        "*dbdsim cannot set up scenario 'non-ascii': non-ascii: no patient of the archive has "
        "a non-ASCII name*",
    ])
    assert "Traceback" not in result.stdout.str()
