"""The site file cannot make the daemons listen beyond the configured address.

* ``bind = "127.0.0.1"``: nothing answers on 127.0.0.2 (Linux routes all of 127/8 to
  ``lo``, so only the bind keeps it out) nor on ``::1``.
* ``bind`` must be an IP address: the site loader refuses host names (one may resolve to
  several addresses) and ``""``.
* ``"0.0.0.0"`` / ``"::"`` (every interface) are allowed on purpose -- the real daemons
  serve a hospital network -- so ``dbdsim serve`` says so in a WARNING line naming the
  exposure, and ``rtmove check-site`` in its ``listen-exposure`` check.
* rtmove's own Storage SCP listens where its caller says; the commands leave it on every
  interface (a remote DB Daemon must reach it), which check-site states.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from daemons import make_site

from client.check_site import static_checks
from client.cli import main as rtmove
from client.receiver import Receiver
from client.settings import from_site
from client.site import Site, SiteError, load_site, parse_site
from emulators.archive import Archive
from emulators.db_daemon import DBDaemon
from emulators.file_daemon import FileDaemon
from emulators.peers import DCMTK_ENV, free_port
from emulators.synthetic import SyntheticConfig

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]


def answers(host: str, port: int) -> bool:
    """Whether something accepts a TCP connection at ``host``:``port``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        try:
            sock.connect((host, port))
        except ConnectionRefusedError:
            return False
        return True


def with_bind(site: Site, bind: str, *, permit_trusted_only: bool = True) -> Site:
    return dataclasses.replace(
        site,
        db_daemon=dataclasses.replace(site.db_daemon, bind=bind),
        file_daemon=dataclasses.replace(site.file_daemon, bind=bind,
                                        permit_trusted_only=permit_trusted_only))


@pytest.mark.parametrize("daemon", ["file-daemon", "db-daemon"])
def test_a_loopback_bind_answers_on_that_address_only(daemon: str, tmp_path: Path) -> None:
    site = make_site(tmp_path)
    if daemon == "file-daemon":
        with FileDaemon(site) as fd:
            port = fd.port
            reachable = [answers(h, port) for h in ("127.0.0.1", "127.0.0.2", "::1")]
    else:
        archive = Archive.synthetic(SyntheticConfig(seed=1, slices=2, rows=16, columns=16), 1)
        try:
            with DBDaemon(site, archive) as dbd:
                port = dbd.port
                reachable = [answers(h, port) for h in ("127.0.0.1", "127.0.0.2", "::1")]
        finally:
            archive.close()
    assert reachable == [True, False, False]


def test_the_rtmove_receiver_answers_where_it_is_bound_only(tmp_path: Path) -> None:
    with Receiver("RTMOVE", free_port(), tmp_path, bind="127.0.0.1") as receiver:
        assert [answers(h, receiver.port) for h in ("127.0.0.1", "127.0.0.2", "::1")] == \
            [True, False, False]


def test_the_rtmove_receiver_listens_where_its_db_daemon_can_reach_it(tmp_path: Path) -> None:
    """The commands bind their receiver to loopback when the DB Daemon is reached over
    loopback (nothing else need reach it), else to every interface (a DB Daemon on
    another machine must), and check-site's listen-exposure check says which."""
    site = make_site(tmp_path)
    local = from_site(site)
    assert local.receive_bind == "127.0.0.1"
    with Receiver("RTMOVE", free_port(), tmp_path, local.receive_bind) as receiver:
        assert [answers(h, receiver.port) for h in ("127.0.0.1", "127.0.0.2")] == [True, False]
    detail = {c.name: c for c in static_checks(site)}["listen-exposure"].detail
    assert "Storage SCP" in detail and "on loopback only (127.0.0.1)" in detail, detail
    remote = dataclasses.replace(local, host="10.1.2.3")
    assert remote.receive_bind == ""
    with Receiver("RTMOVE", free_port(), tmp_path, remote.receive_bind) as receiver:
        assert answers("127.0.0.2", receiver.port)
    assert dataclasses.replace(local, host="::1").receive_bind == "::1"


@pytest.mark.parametrize(("bind", "problem"), [
    ("localhost", "not a host name"), ("", "must be an IP address"),
    ("127.0.0.1 ", "must be an IP address"), ("127.1", "must be an IP address")])
def test_the_site_loader_takes_ip_addresses_only(bind: str, problem: str) -> None:
    for section in ("db_daemon", "file_daemon"):
        with pytest.raises(SiteError, match=problem):
            parse_site(f'[{section}]\nbind = "{bind}"\n')


@pytest.mark.parametrize("bind", ["0.0.0.0", "::"])
def test_a_wildcard_bind_is_allowed_and_announced(bind: str, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    site = parse_site(f'[file_daemon]\nbind = "{bind}"\nport = 0\noutput = "{tmp_path}"\n')
    with FileDaemon(site) as fd:
        port = fd.port
        assert answers("127.0.0.2", port)  # the exposure is real
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                and "every network interface" in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    shown = f"[{bind}]:{port}" if ":" in bind else f"{bind}:{port}"
    assert shown in warnings[0] and "trusted AE list" in warnings[0], warnings


def test_a_wildcard_bind_without_trust_says_anyone_may_connect(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    site = with_bind(make_site(tmp_path), "0.0.0.0", permit_trusted_only=False)
    with FileDaemon(site):
        pass
    assert any("ANY AE title from ANY host" in r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING), caplog.text


def test_a_loopback_bind_is_not_announced(tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with FileDaemon(make_site(tmp_path)):
        pass
    assert not any(r.levelno >= logging.WARNING for r in caplog.records), caplog.text


def wildcard_site(tmp: Path, db_port: int, fd_port: int) -> Path:
    path = tmp / "site.toml"
    path.write_text(f'[db_daemon]\nbind = "0.0.0.0"\nport = {db_port}\n\n'
                    f'[file_daemon]\nbind = "0.0.0.0"\nport = {fd_port}\n'
                    f'output = "{tmp / "fd"}"\n')
    return path


def test_dbdsim_serve_warns_at_start_about_every_interface(tmp_path: Path) -> None:
    db_port, fd_port = free_port(), free_port()
    site = wildcard_site(tmp_path, db_port, fd_port)
    argv = [sys.executable, "-m", "emulators.cli", "serve", "--site", str(site),
            "--patients", "1", "--slices", "2", "--rows", "16", "--columns", "16"]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=DCMTK_ENV)
    try:
        deadline = time.monotonic() + 60
        while not (answers("127.0.0.1", db_port) and answers("127.0.0.1", fd_port)):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
    finally:
        proc.terminate()
        try:
            _out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            _out, err = proc.communicate(timeout=5)
    warnings = [line for line in err.splitlines()
                if "WARNING" in line and "every network interface" in line]
    assert len(warnings) == 2, err
    assert any(f"0.0.0.0:{db_port}" in line for line in warnings), warnings
    assert any(f"0.0.0.0:{fd_port}" in line for line in warnings), warnings


def test_rtmove_check_site_names_the_exposure(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    site = wildcard_site(tmp_path, 5678, 5679)
    check = {c.name: c for c in static_checks(load_site(site))}["listen-exposure"]
    assert check.ok and check.detail.startswith("WARNING"), check
    assert "db_daemon.bind 0.0.0.0" in check.detail
    assert "file_daemon.bind 0.0.0.0" in check.detail
    rtmove(["check-site", str(site)])
    assert "listen-exposure: WARNING" in capsys.readouterr().out
    loopback = {c.name: c for c in static_checks(make_site(tmp_path))}["listen-exposure"]
    assert "loopback only" in loopback.detail and "WARNING" not in loopback.detail
