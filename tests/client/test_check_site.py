"""rtmove check-site: each rule on its own broken site file, the output, the exit codes."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest

import client.check_site as check_site
from client.check_site import Check, live_checks, resolve_host, static_checks
from client.cli import main
from client.errors import AssociationFailed, AssociationRejected, DicomError, Kind
from client.settings import from_site
from client.site import Site, SiteError, TrustedAE, default_site, load_site, parse_site

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "site.toml"
STATIC = ("ae-titles-valid", "ae-titles-distinct", "models", "db-trusts-client",
          "client-move-destination", "db-trusts-file-daemon", "file-daemon-trusts-db",
          "port-range", "ports-distinct", "privileged-ports", "charsets-known",
          "non-ascii-names", "listen-exposure")


def _trusted(section: str, title: str, port: int, host: str = "127.0.0.1",
             **extra: str) -> str:
    lines = [f"[[{section}.trusted]]", f'ae_title = "{title}"', f'host = "{host}"',
             f"port = {port}", *(f'{key} = "{value}"' for key, value in extra.items())]
    return "\n".join(lines) + "\n"


DCMTK_ROW = _trusted("db_daemon", "DCMTK", 5680)
VMSFD_ROW = _trusted("db_daemon", "VMSFD", 5679)


def _site(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _failing(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks if check.failed}


def _only_failure(tmp_path: Path, text: str) -> Check:
    """The one check the site file ``text`` fails; every other one passes or is skipped."""
    failing = _failing(static_checks(load_site(_site(tmp_path, text))))
    assert len(failing) == 1, failing
    return next(iter(failing.values()))


def test_every_static_check_has_a_distinct_name() -> None:
    assert tuple(check.name for check in static_checks(default_site())) == STATIC


@pytest.mark.parametrize("site", [default_site(), load_site(EXAMPLE)],
                         ids=["embedded-default", "example"])
def test_default_and_example_pass_every_static_check(site: Site) -> None:
    checks = static_checks(site)
    assert all(check.ok and not check.skipped for check in checks), _failing(checks)


# --- one broken site file per rule ----------------------------------------------------

def test_same_ae_title_for_both_daemons(tmp_path: Path) -> None:
    check = _only_failure(tmp_path, '[file_daemon]\nae_title = "VMSDBD1"\n')
    assert check.name == "ae-titles-distinct"
    assert "'VMSDBD1'" in check.detail
    assert "three different AE titles" in check.fix


def test_invalid_ae_title_in_a_site_built_in_code() -> None:
    """The loader refuses bad titles, so only a Site built in code can have one."""
    with pytest.raises(SiteError):
        parse_site('[client]\nae_title = "A\\\\B"\n')
    site = default_site()
    site = dataclasses.replace(site, client=dataclasses.replace(site.client, ae_title="A\\B"))
    failing = _failing(static_checks(site))
    assert set(failing) == {"ae-titles-valid"}
    assert "backslash" in failing["ae-titles-valid"].detail


@pytest.mark.parametrize(("models", "missing"), [
    ('["study-root-move"]', '"study-root-find"'),
    ('["study-root-find", "patient-root-find"]', '"study-root-move" or "patient-root-move"'),
])
def test_models_rtmove_needs(tmp_path: Path, models: str, missing: str) -> None:
    check = _only_failure(tmp_path, f"[db_daemon]\nmodels = {models}\n")
    assert check.name == "models"
    assert missing in check.detail
    assert "db_daemon.models" in check.fix


def test_client_missing_from_the_db_daemon_map(tmp_path: Path) -> None:
    site = load_site(_site(tmp_path, VMSFD_ROW))
    checks = {check.name: check for check in static_checks(site)}
    assert _failing(list(checks.values())).keys() == {"db-trusts-client"}
    check = checks["db-trusts-client"]
    assert "DCMTK is not on VMSDBD1's trusted list" in check.detail
    assert "ae_title = 'DCMTK', host = '127.0.0.1', port = 5680" in check.fix
    assert "[[db_daemon.trusted]]" in check.fix
    assert checks["client-move-destination"].skipped  # reported once, above


def test_client_trusted_from_another_host(tmp_path: Path) -> None:
    text = _trusted("db_daemon", "DCMTK", 5680, host="127.0.0.2") + VMSFD_ROW
    check = _only_failure(tmp_path, text)
    assert check.name == "db-trusts-client"
    assert "only from 127.0.0.2" in check.detail
    assert "host = '127.0.0.1' in DCMTK's [[db_daemon.trusted]] row" in check.fix


def test_permit_trusted_only_off_accepts_the_client_but_not_as_a_destination(
        tmp_path: Path) -> None:
    text = "[db_daemon]\npermit_trusted_only = false\n" + VMSFD_ROW
    checks = {check.name: check for check in static_checks(load_site(_site(tmp_path, text)))}
    assert checks["db-trusts-client"].ok
    assert "permit_trusted_only off" in checks["db-trusts-client"].detail
    assert _failing(list(checks.values())).keys() == {"client-move-destination"}
    assert "--dest self" in checks["client-move-destination"].detail
    assert "ae_title = 'DCMTK'" in checks["client-move-destination"].fix


def test_client_row_at_another_port_than_the_client_receives_on(tmp_path: Path) -> None:
    check = _only_failure(tmp_path, _trusted("db_daemon", "DCMTK", 5681) + VMSFD_ROW)
    assert check.name == "client-move-destination"
    assert "port 5681" in check.detail and "port 5680" in check.detail
    assert "port = 5680 in DCMTK's [[db_daemon.trusted]] row" in check.fix


def test_file_daemon_row_at_the_wrong_port(tmp_path: Path) -> None:
    """The classic: C-ECHO to the File Daemon works, every move to it fails."""
    check = _only_failure(tmp_path, DCMTK_ROW + _trusted("db_daemon", "VMSFD", 5690))
    assert check.name == "db-trusts-file-daemon"
    assert "to port 5690" in check.detail
    assert "C-ECHO to the File Daemon works while every move to it fails" in check.detail
    assert "port = 5679 in VMSFD's [[db_daemon.trusted]] row" in check.fix


def test_file_daemon_missing_from_the_db_daemon_map(tmp_path: Path) -> None:
    check = _only_failure(tmp_path, DCMTK_ROW)
    assert check.name == "db-trusts-file-daemon"
    assert "0xA801" in check.detail
    assert "ae_title = 'VMSFD', host = '127.0.0.1', port = 5679" in check.fix


def test_file_daemon_row_at_the_wrong_host(tmp_path: Path) -> None:
    check = _only_failure(tmp_path, DCMTK_ROW + _trusted("db_daemon", "VMSFD", 5679,
                                                         host="127.0.0.3"))
    assert check.name == "db-trusts-file-daemon"
    assert "host = '127.0.0.1'" in check.fix


def test_db_daemon_missing_from_the_file_daemon_map(tmp_path: Path) -> None:
    check = _only_failure(tmp_path, _trusted("file_daemon", "DCMTK", 5680))
    assert check.name == "file-daemon-trusts-db"
    assert "VMSDBD1 is not on VMSFD's trusted list" in check.detail
    assert "ae_title = 'VMSDBD1', host = '127.0.0.1', port = 5678" in check.fix
    assert "[[file_daemon.trusted]]" in check.fix


def test_db_daemon_trusted_by_the_file_daemon_from_another_host(tmp_path: Path) -> None:
    check = _only_failure(tmp_path, _trusted("file_daemon", "VMSDBD1", 5678, host="10.9.9.9"))
    assert check.name == "file-daemon-trusts-db"
    assert "host = '127.0.0.1' in VMSDBD1's [[file_daemon.trusted]] row" in check.fix


def test_file_daemon_permitting_all_needs_no_db_daemon_row(tmp_path: Path) -> None:
    text = "[file_daemon]\npermit_trusted_only = false\ntrusted = []\n"
    checks = static_checks(load_site(_site(tmp_path, text)))
    assert not _failing(checks)


def test_port_zero_cannot_be_called(tmp_path: Path) -> None:
    check = _only_failure(tmp_path, "[db_daemon]\nport = 0\n")
    assert check.name == "port-range"
    assert "db_daemon.port is 0" in check.detail
    assert "give db_daemon.port a fixed port" in check.fix


def test_client_receiving_on_the_db_daemon_port(tmp_path: Path) -> None:
    check = _only_failure(tmp_path, "[client]\nport = 5678\n")
    assert check.name == "ports-distinct"
    assert "db_daemon.port and client.port are both 5678" in check.detail
    assert "client.port" in check.fix


def test_wildcard_bind_clashes_with_a_loopback_client(tmp_path: Path) -> None:
    text = '[file_daemon]\nbind = "0.0.0.0"\nport = 5680\n'
    failing = _failing(static_checks(load_site(_site(tmp_path, text))))
    assert set(failing) == {"ports-distinct"}
    assert "file_daemon.port and client.port are both 5680" in failing["ports-distinct"].detail


def test_same_port_on_different_hosts_is_fine(tmp_path: Path) -> None:
    text = '[client]\nhost = "127.0.0.2"\nport = 5678\n'
    assert not _failing(static_checks(load_site(_site(tmp_path, text))))


def test_a_privileged_port_is_a_note_not_a_failure(tmp_path: Path) -> None:
    checks = static_checks(load_site(_site(tmp_path, "[client]\nport = 104\n")))
    assert not _failing(checks)
    [check] = [c for c in checks if c.name == "privileged-ports"]
    assert "client.port 104" in check.detail
    assert "root" in check.detail


@pytest.mark.parametrize(("rows", "title"), [
    (_trusted("db_daemon", "DCMTK", 5680, export_charset="ISO_IR 6") + VMSFD_ROW, "DCMTK"),
    (DCMTK_ROW + _trusted("db_daemon", "VMSFD", 5679, export_charset="ISO_IR 6"), "VMSFD"),
], ids=["client", "file-daemon"])
def test_ascii_only_export_loses_names(tmp_path: Path, rows: str, title: str) -> None:
    check = _only_failure(tmp_path, rows)
    assert check.name == "non-ascii-names"
    assert f"{title} in ISO_IR 6" in check.detail
    assert "non-ASCII patient names will arrive as '?'" in check.detail
    assert check.fix.endswith(f'export_charset = "ISO_IR 192" (UTF-8) or a Latin set such as '
                              f'"ISO_IR 100" in [[db_daemon.trusted]] for {title}')


def test_latin_export_carries_names(tmp_path: Path) -> None:
    text = _trusted("db_daemon", "DCMTK", 5680, export_charset="ISO_IR 100") + VMSFD_ROW
    assert not _failing(static_checks(load_site(_site(tmp_path, text))))


@pytest.mark.parametrize(("row", "words"), [
    (TrustedAE("DCMTK", "127.0.0.1", 5680, import_charset="", charset_override=True),
     "charset_override on but no import_charset"),
    (TrustedAE("DCMTK", "127.0.0.1", 5680, export_charset="ISO_IR 999"),
     "'ISO_IR 999' in DCMTK's [[db_daemon.trusted]] row is no DICOM character set"),
])
def test_unusable_charsets_in_a_site_built_in_code(row: TrustedAE, words: str) -> None:
    """The loader refuses unknown and empty sets, so only a Site built in code has them."""
    for value in ("ISO_IR 999", ""):
        with pytest.raises(SiteError):
            parse_site('[[db_daemon.trusted]]\nae_title = "X"\nhost = "h"\nport = 1\n'
                       f'import_charset = "{value}"\n')
    site = default_site()
    fd_row = site.db_trusted()[1]
    site = dataclasses.replace(site, db_daemon=dataclasses.replace(
        site.db_daemon, trusted=(row, fd_row)))
    failing = _failing(static_checks(site))
    assert set(failing) == {"charsets-known"}
    assert words in failing["charsets-known"].detail


# --- hosts ------------------------------------------------------------------------------

def test_localhost_is_127_0_0_1(tmp_path: Path) -> None:
    text = '[client]\nhost = "localhost"\n' + DCMTK_ROW + VMSFD_ROW
    assert not _failing(static_checks(load_site(_site(tmp_path, text))))


def test_mapped_ipv4_is_ipv4() -> None:
    assert resolve_host("::ffff:127.0.0.1") == frozenset({"127.0.0.1"})


def test_unresolvable_host_fails_with_cannot_resolve(tmp_path: Path) -> None:
    def resolve(host: str) -> frozenset[str]:
        if host == "archive-pc":
            raise OSError("Name or service not known")
        return resolve_host(host)

    site = load_site(_site(tmp_path, DCMTK_ROW + _trusted("db_daemon", "VMSFD", 5679,
                                                          host="archive-pc")))
    failing = _failing(static_checks(site, resolve=resolve))
    assert set(failing) == {"db-trusts-file-daemon"}
    assert "cannot resolve 'archive-pc'" in failing["db-trusts-file-daemon"].detail
    assert "IP address" in failing["db-trusts-file-daemon"].fix


# --- live checks, with echo replaced ------------------------------------------------------

EchoFake = Callable[[str, int, str, str, float], float]


def _live(monkeypatch: pytest.MonkeyPatch, fake: EchoFake,
          probes: tuple[Callable[[], Check], ...] = ()) -> list[Check]:
    monkeypatch.setattr(check_site, "echo", fake)
    site = default_site()
    return live_checks(site, from_site(site), timeout=1.0, probes=probes)


def test_live_checks_echo_both_daemons_then_run_the_probes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, int, str, str]] = []

    def fake(host: str, port: int, calling: str, called: str, timeout: float) -> float:
        calls.append((host, port, calling, called))
        return 0.002

    def find_study_root() -> Check:
        return Check("find-study-root", True, "3 studies")

    def trial_move() -> Check:
        raise DicomError("VMSDBD1 refused the move with 0xC000.", Kind.REFUSED)

    checks = _live(monkeypatch, fake, (find_study_root, trial_move))
    assert calls == [("127.0.0.1", 5678, "DCMTK", "VMSDBD1"),
                     ("127.0.0.1", 5679, "DCMTK", "VMSFD")]
    assert [(c.name, c.ok) for c in checks] == [
        ("echo-db-daemon", True), ("echo-file-daemon", True), ("find-study-root", True),
        ("trial-move", False)]
    assert checks[3].detail == "VMSDBD1 refused the move with 0xC000."
    assert checks[3].kind is Kind.REFUSED


def test_probes_are_skipped_when_the_db_daemon_does_not_answer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(host: str, port: int, calling: str, called: str, timeout: float) -> float:
        raise AssociationFailed(f"No association with {called} at {host}:{port}.")

    def probe() -> Check:
        raise AssertionError("must not run")

    checks = _live(monkeypatch, fake, (probe,))
    assert [c.kind for c in checks[:2]] == [Kind.UNREACHABLE, Kind.UNREACHABLE]
    assert checks[0].detail == "No association with VMSDBD1 at 127.0.0.1:5678."
    assert checks[2].skipped and checks[2].name == "probe"


def test_file_daemon_rejecting_the_client_still_shows_it_listening(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the DB Daemon must be trusted by the File Daemon; rtmove never sends to it."""
    def fake(host: str, port: int, calling: str, called: str, timeout: float) -> float:
        if called == "VMSFD":
            raise AssociationRejected(1, 1, 3, calling, called, f"{called} at {host}:{port}")
        return 0.001

    checks = _live(monkeypatch, fake)
    assert all(check.ok for check in checks)
    assert "rejects DCMTK as calling AE title" in checks[1].detail


# --- the command ----------------------------------------------------------------------

def test_command_prints_one_line_per_check(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-site", str(EXAMPLE)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"PASS  site-file: read {EXAMPLE}"
    assert [line.split(":")[0] for line in lines[1:-1]] == [f"PASS  {name}" for name in STATIC]
    assert lines[-1] == f"{EXAMPLE}: all {len(STATIC) + 1} checks passed"


def test_command_failure_line_names_the_fix(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = _site(tmp_path, DCMTK_ROW + _trusted("db_daemon", "VMSFD", 5690))
    assert main(["check-site", str(path)]) == int(Kind.USAGE)
    out = capsys.readouterr().out
    failing = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert len(failing) == 1
    assert failing[0].startswith("FAIL  db-trusts-file-daemon: VMSDBD1 opens")
    assert " — fix: set port = 5679 in VMSFD's [[db_daemon.trusted]] row" in failing[0]
    assert out.splitlines()[-1] == f"{path}: 14 checks, 13 passed, 1 failed"
    assert "\x1b[" not in out  # not a terminal: no colour codes


def test_command_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _site(tmp_path, "[client]\nport = 5679\n")
    assert main(["check-site", str(path), "--json"]) == int(Kind.USAGE)
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert [c["name"] for c in report["checks"]] == ["site-file", *STATIC]
    bad = [c for c in report["checks"] if not c["ok"]]
    assert [c["name"] for c in bad] == ["ports-distinct"]
    assert set(bad[0]) >= {"name", "ok", "detail", "fix"}
    assert bad[0]["fix"]


def test_command_json_all_passing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-site", str(EXAMPLE), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert all(c["ok"] and c["fix"] == "" for c in report["checks"])


def test_unloadable_file_is_a_usage_error(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = _site(tmp_path, "[db_daemon]\nport = 70000\n")
    assert main(["check-site", str(path), "--json"]) == int(Kind.USAGE)
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    [check] = report["checks"]
    assert check["name"] == "site-file"
    assert "line 2, db_daemon.port" in check["detail"]
    assert main(["check-site", str(tmp_path / "missing.toml")]) == int(Kind.USAGE)
    out = capsys.readouterr().out
    assert out.startswith("FAIL  site-file: ") and "cannot read the site file" in out


def test_command_exit_code_is_the_first_failing_live_check(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    def fake(host: str, port: int, calling: str, called: str, timeout: float) -> float:
        if called == "VMSDBD1":
            raise AssociationRejected(1, 1, 3, calling, called, f"{called} at {host}:{port}")
        raise AssociationFailed("No association with VMSFD.")

    monkeypatch.setattr(check_site, "echo", fake)
    assert main(["check-site", str(EXAMPLE), "--live"]) == int(Kind.REJECTED)
    out = capsys.readouterr().out
    assert "FAIL  echo-db-daemon: VMSDBD1 at 127.0.0.1:5678 rejected" in out
    assert "FAIL  echo-file-daemon: No association with VMSFD." in out
    # A wrong file wins over the network: the file is what to fix first.
    path = _site(tmp_path, "[client]\nport = 5679\n")
    assert main(["check-site", str(path), "--live"]) == int(Kind.USAGE)
