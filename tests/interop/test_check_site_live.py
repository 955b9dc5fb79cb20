"""rtmove check-site --live against the emulated daemons: a right site passes, an untrusted
client and a stopped daemon fail with the sentence and the exit code a site engineer needs."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemons import running_daemons, small_archive
from peers import free_port

from client.check_site import live_checks, static_checks
from client.cli import main
from client.errors import Kind
from client.settings import from_site
from client.site import Site
from emulators.archive import Archive

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def archive() -> Iterator[Archive]:
    archive = small_archive(patients=1, slices=2, size=16)
    yield archive
    archive.close()


def _site_file(tmp: Path, db_port: int, fd_port: int, client_port: int) -> Path:
    """The default site at these ports; the trusted maps are derived, so they follow."""
    path = tmp / "site.toml"
    path.write_text(f"[db_daemon]\nport = {db_port}\n[file_daemon]\nport = {fd_port}\n"
                    f"[client]\nport = {client_port}\n", encoding="utf-8")
    return path


def _live_site(site: Site, db_port: int, fd_port: int) -> Site:
    return dataclasses.replace(
        site, db_daemon=dataclasses.replace(site.db_daemon, port=db_port),
        file_daemon=dataclasses.replace(site.file_daemon, port=fd_port))


def test_live_checks_pass_against_running_daemons(
        tmp_path: Path, archive: Archive, capsys: pytest.CaptureFixture[str]) -> None:
    with running_daemons(tmp_path, archive) as (site, dbd, fd):
        live = _live_site(site, dbd.port, fd.port)
        assert all(check.ok for check in static_checks(live))
        checks = live_checks(live, from_site(live), timeout=5.0)
        assert [(c.name, c.ok) for c in checks] == [("echo-db-daemon", True),
                                                   ("echo-file-daemon", True)]
        assert f"VMSDBD1 at 127.0.0.1:{dbd.port} answered C-ECHO from DCMTK" in checks[0].detail

        path = _site_file(tmp_path, dbd.port, fd.port, site.client.port)
        assert main(["check-site", str(path), "--live", "--json", "--timeout", "5"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["ok"] is True
        live = {c["name"]: c for c in report["checks"][-4:]}
        assert list(live) == ["echo-db-daemon", "echo-file-daemon", "find-study-root",
                              "trial-move"]
        assert live["trial-move"]["skipped"]  # no --patient: nothing to move

        patient = archive.recipe(0).patient_id
        assert main(["check-site", str(path), "--live", "--json", "--patient", patient]) == 0
        report = json.loads(capsys.readouterr().out)
        live = {c["name"]: c for c in report["checks"][-4:]}
        assert live["trial-move"]["ok"] and not live["trial-move"]["skipped"]
        assert f"to DCMTK on port {site.client.port}" in live["trial-move"]["detail"]


def test_a_wrong_receive_port_fails_the_trial_move(
        tmp_path: Path, archive: Archive, capsys: pytest.CaptureFixture[str]) -> None:
    """The daemon's entry for the client names one port, the client listens on another:
    echo and find pass, only the trial move shows it."""
    with running_daemons(tmp_path, archive) as (_site, dbd, fd):
        path = _site_file(tmp_path, dbd.port, fd.port, free_port())
        patient = archive.recipe(0).patient_id
        code = main(["check-site", str(path), "--live", "--json", "--patient", patient,
                     "--timeout", "5"])
        report = json.loads(capsys.readouterr().out)
    live = {c["name"]: c for c in report["checks"][-4:]}
    assert live["find-study-root"]["ok"]
    assert not live["trial-move"]["ok"], live["trial-move"]
    assert code == int(Kind.DESTINATION)


def test_untrusted_client_fails_the_db_daemon_echo(tmp_path: Path, archive: Archive) -> None:
    with running_daemons(tmp_path, archive) as (site, dbd, fd):
        live = _live_site(site, dbd.port, fd.port)
        settings = dataclasses.replace(from_site(live), aet="STRANGER")
        db_echo, fd_echo = live_checks(live, settings, timeout=5.0)
    assert not db_echo.ok
    assert db_echo.kind is Kind.REJECTED
    assert ("add STRANGER with this machine's address to the daemon's trusted application "
            "entities") in db_echo.detail
    # The File Daemon refuses STRANGER too, but answering at all shows it is up.
    assert fd_echo.ok, fd_echo.detail


def test_untrusted_client_exits_rejected(tmp_path: Path, archive: Archive,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The file says the DB Daemon trusts DCMTK, but the running one trusts no one."""
    with running_daemons(tmp_path, archive, trusted=()) as (site, dbd, fd):
        path = _site_file(tmp_path, dbd.port, fd.port, site.client.port)
        assert main(["check-site", str(path), "--live", "--timeout", "5"]) == int(Kind.REJECTED)
    out = capsys.readouterr().out
    assert "FAIL  echo-db-daemon: " in out
    assert "add DCMTK with this machine's address to the daemon's trusted" in out


def test_stopped_daemon_is_unreachable(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    ports: set[int] = set()
    while len(ports) < 3:  # three ports nobody listens on, distinct so the file loads
        ports.add(free_port())
    path = _site_file(tmp_path, *sorted(ports))
    assert main(["check-site", str(path), "--live", "--json", "--timeout", "3"]) == int(
        Kind.UNREACHABLE)
    report = json.loads(capsys.readouterr().out)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["ok"] is False
    assert not checks["echo-db-daemon"]["ok"]
    assert "No association with VMSDBD1 at 127.0.0.1:" in checks["echo-db-daemon"]["detail"]
    assert not checks["echo-file-daemon"]["ok"]
    assert checks["find-study-root"]["skipped"] and checks["trial-move"]["skipped"]
    static = [c for name, c in checks.items()
              if name not in ("echo-db-daemon", "echo-file-daemon", "find-study-root",
                              "trial-move")]
    assert all(c["ok"] for c in static)
