"""``dbdsim serve`` as a process (ready lines, DCMTK echoes, signals, trust, start-up errors),
``dbdsim patients`` against the recipes, and ``parse_trust``."""

from __future__ import annotations

import argparse
import io
import json
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pydicom
import pytest
from daemons import DCMTK_ENV, LOOPBACK, assert_same_object, dcmtk
from peers import free_port

from client.site import TrustedAE
from emulators.cli import main
from emulators.files import write_patient
from emulators.serve import parse_trust
from emulators.synthetic import PatientRecipe, Profile, SyntheticConfig, make_recipe
from emulators.synthetic.modules import da

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--patients", "2", "--slices", "4", "--rows", "16", "--columns", "16"]
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
DB_AE, FD_AE = "VMSDBD1", "VMSFD"


# --- a `dbdsim serve` process -----------------------------------------------------------

@dataclass
class Running:
    """A process and its output so far, read by threads (a pipe must never fill up)."""

    proc: subprocess.Popen[str]
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    fresh: queue.Queue[str] = field(default_factory=queue.Queue)  # stdout lines not yet seen
    pumps: list[threading.Thread] = field(default_factory=list)

    def output(self) -> str:
        return f"exit {self.proc.poll()}, stdout {''.join(self.stdout)!r}, " \
               f"stderr {''.join(self.stderr)!r}"


@dataclass
class Served:
    run: Running
    db_port: int
    fd_port: int


def _pump(stream: IO[str], lines: list[str], fresh: queue.Queue[str] | None) -> None:
    for line in stream:
        lines.append(line)
        if fresh is not None:
            fresh.put(line)


def _serve_argv(db_port: int, fd_port: int, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "emulators.cli", "serve", *SMALL, "--db-port", str(db_port),
            "--fd-port", str(fd_port), "--fd-out", str(out), *extra]


@contextmanager
def _process(argv: list[str]) -> Iterator[Running]:
    """A process whose output is collected by threads; killed if still running after."""
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=DCMTK_ENV)
    assert proc.stdout is not None and proc.stderr is not None
    run = Running(proc)
    run.pumps = [threading.Thread(target=_pump, args=(proc.stdout, run.stdout, run.fresh),
                                  daemon=True),
                 threading.Thread(target=_pump, args=(proc.stderr, run.stderr, None),
                                  daemon=True)]
    for pump in run.pumps:
        pump.start()
    try:
        yield run
    finally:
        if proc.poll() is None:  # SIGTERM first: serve cleans up (its temporary storage)
            proc.terminate()
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)
        for pump in run.pumps:
            pump.join(STOP_TIMEOUT)
        proc.stdout.close()
        proc.stderr.close()


@contextmanager
def _serving(tmp: Path, *extra: str) -> Iterator[Served]:
    """``dbdsim serve`` on free ports, inside the block once both ready lines are out."""
    db_port, fd_port = free_port(), free_port()
    wanted = [f"DB Daemon {DB_AE} listening on {LOOPBACK}:{db_port}\n",
              f"File Daemon {FD_AE} listening on {LOOPBACK}:{fd_port}, "]
    with _process(_serve_argv(db_port, fd_port, tmp / "fd", *extra)) as run:
        deadline = time.monotonic() + READY_TIMEOUT
        while not all(any(line.startswith(w) for line in run.stdout) for w in wanted):
            if time.monotonic() > deadline:
                pytest.fail(f"no ready lines after {READY_TIMEOUT} s: {run.output()}")
            if not run.pumps[0].is_alive() and run.fresh.empty():
                pytest.fail(f"serve closed stdout before both ready lines: {run.output()}")
            try:
                run.fresh.get(timeout=0.1)
            except queue.Empty:
                continue
        yield Served(run, db_port, fd_port)


def _echo(require_tool: Callable[[str], str], calling: str, called: str,
          port: int) -> subprocess.CompletedProcess[str]:
    return dcmtk(require_tool("echoscu"), "-aet", calling, "-aec", called, "-to", "10",
                 LOOPBACK, str(port), timeout=60)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_answers_echoes_and_stops_cleanly_on_a_signal(
        tmp_path: Path, require_tool: Callable[[str], str], sig: signal.Signals) -> None:
    with _serving(tmp_path) as served:
        run = served.run
        fd_line = next(line for line in run.stdout if line.startswith("File Daemon"))
        assert fd_line.rstrip("\n").endswith(f"writing to {tmp_path / 'fd'}")
        for called, port in ((DB_AE, served.db_port), (FD_AE, served.fd_port)):
            done = _echo(require_tool, "DCMTK", called, port)
            assert done.returncode == 0, done.stdout
        run.proc.send_signal(sig)
        try:
            status = run.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve still running {STOP_TIMEOUT} s after {sig.name}: {run.output()}")
    assert status == 0, run.output()
    assert any(line.startswith("archive: 2 patients") for line in run.stdout)
    assert run.stdout[-1] == "stopping\n"
    assert "Traceback" not in "".join(run.stderr)


def test_trust_option_admits_another_ae_on_both_daemons(
        tmp_path: Path, require_tool: Callable[[str], str]) -> None:
    other_port = free_port()
    with _serving(tmp_path / "without") as served:
        for called, port in ((DB_AE, served.db_port), (FD_AE, served.fd_port)):
            done = _echo(require_tool, "OTHER", called, port)
            assert done.returncode != 0, done.stdout
            assert "Association Rejected" in done.stdout
            assert "Calling AE Title Not Recognized" in done.stdout
    with _serving(tmp_path / "with", "--trust", f"OTHER@{LOOPBACK}:{other_port}") as served:
        for called, port in ((DB_AE, served.db_port), (FD_AE, served.fd_port)):
            done = _echo(require_tool, "OTHER", called, port)
            assert done.returncode == 0, done.stdout
        # Trusting OTHER adds to the derived maps: the default client is still trusted.
        done = _echo(require_tool, "DCMTK", FD_AE, served.fd_port)
        assert done.returncode == 0, done.stdout


def _run_to_end(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              check=False)
    except subprocess.TimeoutExpired as exc:  # run() has killed it
        pytest.fail(f"{argv[3]} still running after {timeout} s: {exc.stdout!r}")


@pytest.mark.parametrize(("text", "key"), [
    ('[file_daemon]\nport = "5679"\n', "file_daemon.port"),
    ('[db_daemon]\nae_tittle = "VMSDBD1"\n', "db_daemon.ae_tittle"),
    ('[[file_daemon.trusted]]\nae_title = "X"\nhost = "127.0.0.1"\n', "file_daemon.trusted[0]"),
], ids=["wrong type", "unknown key", "missing key"])
def test_serve_with_a_bad_site_file_exits_1_naming_file_and_key(
        tmp_path: Path, text: str, key: str) -> None:
    site_file = tmp_path / "broken site.toml"
    site_file.write_text(text, encoding="utf-8")
    done = _run_to_end(_serve_argv(free_port(), free_port(), tmp_path / "fd",
                                   "--site", str(site_file)))
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("dbdsim: error: ")
    assert str(site_file) in done.stderr
    assert key in done.stderr
    assert "Traceback" not in done.stderr
    assert "listening" not in done.stdout
    assert not (tmp_path / "fd").exists()


@pytest.mark.parametrize("taken", ["db", "fd"])
def test_serve_on_a_port_in_use_exits_1_with_a_clear_message(tmp_path: Path, taken: str) -> None:
    with socket.socket() as blocker:
        blocker.bind((LOOPBACK, 0))
        blocker.listen()
        busy = int(blocker.getsockname()[1])
        db_port, fd_port = (busy, free_port()) if taken == "db" else (free_port(), busy)
        done = _run_to_end(_serve_argv(db_port, fd_port, tmp_path / "fd"))
    assert done.returncode == 1, done.stderr
    name = {"db": f"DB Daemon {DB_AE}", "fd": f"File Daemon {FD_AE}"}[taken]
    assert f"dbdsim: error: {name} cannot listen on {LOOPBACK}:{busy}" in done.stderr
    assert "in use" in done.stderr
    assert "Traceback" not in done.stderr
    assert "listening on" not in done.stdout


# --- dbdsim patients -------------------------------------------------------------------------

def _patients(*argv: str) -> str:
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        status = main(["patients", *argv])
    assert status == 0
    return buffer.getvalue()


def _expected_plans(recipe: PatientRecipe) -> list[dict[str, Any]]:
    """What `patients --json` should say of ``recipe``'s plans, in its documented order."""
    plans = [{"label": plan.label, "name": plan.name, "sop_instance_uid": plan.uid,
              "date": da(plan.date), "approval": "APPROVED" if plan.approved else "UNAPPROVED",
              "doses": sum(dose.plan.uid == plan.uid for dose in recipe.doses)}
             for plan in recipe.plans]
    return sorted(plans, key=lambda p: (p["date"], p["label"], p["sop_instance_uid"]))


def _expected_patient(recipe: PatientRecipe) -> dict[str, Any]:
    return {"patient_id": recipe.patient_id, "name": recipe.people.patient_name.pn,
            "plans": _expected_plans(recipe)}


@pytest.mark.parametrize("profile", list(Profile), ids=str)
def test_patients_json_matches_the_recipes(profile: Profile) -> None:
    document = json.loads(_patients("--patients", "3", "--seed", "5", "--json",
                                    "--profile", profile.value))
    config = SyntheticConfig(seed=5, profile=profile)
    recipes = sorted((make_recipe(config, i) for i in range(3)), key=lambda r: r.patient_id)
    assert set(document) == {"patients"}
    assert document["patients"] == [_expected_patient(r) for r in recipes]
    assert all(r.plans for r in recipes)  # otherwise the comparison proves little


def test_patients_table_lists_every_patient_and_plan() -> None:
    text = _patients("--patients", "3", "--seed", "5")
    config = SyntheticConfig(seed=5)
    for recipe in (make_recipe(config, i) for i in range(3)):
        assert recipe.patient_id in text
        for plan in recipe.plans:
            assert plan.uid in text
            assert plan.label in text


def test_patients_of_an_imported_archive(tmp_path: Path) -> None:
    recipe = make_recipe(SyntheticConfig(seed=3, profile=Profile.MESSY, slices=4, rows=16,
                                         columns=16), 0)
    write_patient(recipe, tmp_path / "archive")
    document = json.loads(_patients("--archive", str(tmp_path / "archive"), "--json"))
    assert document == {"patients": [_expected_patient(recipe)]}
    assert recipe.patient_id in _patients("--archive", str(tmp_path / "archive"))


# --- parse_trust ---------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("AE@host:104", TrustedAE("AE", "host", 104)),
    ("DCMTK@127.0.0.1:11112", TrustedAE("DCMTK", "127.0.0.1", 11112)),
    ("SIXTEEN_CHARS_AE@pacs.example.org:65535",
     TrustedAE("SIXTEEN_CHARS_AE", "pacs.example.org", 65535)),
    (" PADDED @h:1", TrustedAE("PADDED", "h", 1)),
])
def test_parse_trust_accepts(text: str, expected: TrustedAE) -> None:
    assert parse_trust(text) == expected


@pytest.mark.parametrize("text", [
    "", "AE", "AE@host", "AE@host:", "@host:104", "   @host:104", "AE@:104", "AE@host:0",
    "AE@host:65536", "AE@host:abc", "AE@host:-1", "AE@host:104:5", "AE@ho st:104",
    "SEVENTEEN_CHAR_AE@host:104", "AE@host@other:104", "AE@host:104 ",
    "A\\B@host:104", "A\tB@host:104", "MÜLLER@host:104",
])
def test_parse_trust_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"AE@HOST:PORT|AE title"):
        parse_trust(text)


def test_serve_rejects_a_bad_trust_option_as_a_usage_error(tmp_path: Path) -> None:
    done = _run_to_end(_serve_argv(free_port(), free_port(), tmp_path / "fd",
                                   "--trust", "OTHER@host"))
    assert done.returncode == 2
    assert "--trust" in done.stderr and "AE@HOST:PORT" in done.stderr


def test_port_overrides_carry_the_written_trusted_maps_along() -> None:
    """--fd-port on a site whose DB Daemon map names VMSFD at 5679 moves that row too,
    so moves still reach the File Daemon; other rows keep their ports."""
    from client.site import parse_site
    from emulators.serve import with_ports

    site = parse_site(
        '[[db_daemon.trusted]]\nae_title = "VMSFD"\nhost = "127.0.0.1"\nport = 5679\n'
        '[[db_daemon.trusted]]\nae_title = "OTHER"\nhost = "127.0.0.1"\nport = 5679\n'
        '[[file_daemon.trusted]]\nae_title = "VMSDBD1"\nhost = "127.0.0.1"\nport = 5678\n')
    moved = with_ports(site, db_port=7000, fd_port=6000)
    assert (moved.db_daemon.port, moved.file_daemon.port) == (7000, 6000)
    assert [(t.ae_title, t.port) for t in moved.db_trusted()] == [("VMSFD", 6000),
                                                                  ("OTHER", 5679)]
    assert [(t.ae_title, t.port) for t in moved.fd_trusted()] == [("VMSDBD1", 7000)]
    assert with_ports(site) == site


# --- serve on port 0: moves from the served archive land as `dbdsim generate` writes them ----

_DB_READY = re.compile(rf"^DB Daemon {DB_AE} listening on {re.escape(LOOPBACK)}:(\d+)$")
_FD_READY = re.compile(
    rf"^File Daemon {FD_AE} listening on {re.escape(LOOPBACK)}:(\d+), writing to (.+)$")
_ARCHIVE_LINE = re.compile(r"^archive: (\d+) patients, (\d+) studies, (\d+) series, "
                           r"(\d+) instances$")
SERVED_ARCHIVE = ["--seed", "5", "--profile", "messy", "--slices", "4", "--rows", "16",
                  "--columns", "16"]


@dataclass
class ServedLive(Served):
    """``dbdsim serve`` on ports it chose, as its ready lines name them."""

    fd_out: Path = Path()
    studies: int = 0
    instances: int = 0


@contextmanager
def _serving_on_any_ports(fd_out: Path, *source: str) -> Iterator[ServedLive]:
    """``dbdsim serve --db-port 0 --fd-port 0`` over ``source``, inside the block once the
    ready lines and the archive line are out; the ports are parsed from the ready lines."""
    argv = [sys.executable, "-m", "emulators.cli", "serve", "--db-port", "0", "--fd-port", "0",
            "--fd-out", str(fd_out), *source]
    with _process(argv) as run:
        found: dict[str, re.Match[str]] = {}
        deadline = time.monotonic() + READY_TIMEOUT
        while len(found) < 3:
            if time.monotonic() > deadline:
                pytest.fail(f"no ready lines after {READY_TIMEOUT} s: {run.output()}")
            if not run.pumps[0].is_alive() and run.fresh.empty():
                pytest.fail(f"serve closed stdout before its ready lines: {run.output()}")
            try:
                line = run.fresh.get(timeout=0.1).rstrip("\n")
            except queue.Empty:
                continue
            for key, pattern in (("db", _DB_READY), ("fd", _FD_READY),
                                 ("archive", _ARCHIVE_LINE)):
                match = pattern.match(line)
                if match is not None:
                    assert key not in found, f"two {key} lines: {run.output()}"
                    found[key] = match
        db_port, fd_port = int(found["db"][1]), int(found["fd"][1])
        assert 0 not in (db_port, fd_port), run.output()
        assert db_port != fd_port, run.output()
        assert Path(found["fd"][2]) == fd_out, run.output()
        yield ServedLive(run, db_port, fd_port, fd_out=fd_out,
                         studies=int(found["archive"][2]),
                         instances=int(found["archive"][4]))


def _study_uids(require_tool: Callable[[str], str], port: int, folder: Path) -> list[str]:
    """Every study the DB Daemon finds at STUDY level for a universal PatientID."""
    folder.mkdir()
    done = dcmtk(require_tool("findscu"), "-S", "-X", "-od", str(folder), "-aet", "DCMTK",
                 "-aec", DB_AE, "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=",
                 "-k", "StudyInstanceUID=", LOOPBACK, str(port))
    assert done.returncode == 0, done.stdout
    return sorted(str(pydicom.dcmread(path).StudyInstanceUID)
                  for path in folder.glob("rsp*.dcm"))


def _move_everything_to_the_file_daemon(require_tool: Callable[[str], str],
                                        served: ServedLive, tmp: Path) -> None:
    studies = _study_uids(require_tool, served.db_port, tmp / "found")
    assert len(studies) == served.studies > 0, studies
    assert len(set(studies)) == len(studies), studies
    movescu = require_tool("movescu")
    for study in studies:
        done = dcmtk(movescu, "-S", "-aet", "DCMTK", "-aec", DB_AE, "-aem", FD_AE,
                     "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                     LOOPBACK, str(served.db_port))
        assert done.returncode == 0, done.stdout
        assert "Association Rejected" not in done.stdout, done.stdout


def _stop_with_sigterm(run: Running) -> None:
    run.proc.send_signal(signal.SIGTERM)
    try:
        status = run.proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"serve still running {STOP_TIMEOUT} s after SIGTERM: {run.output()}")
    assert status == 0, run.output()
    assert "Traceback" not in "".join(run.stderr), run.output()


def _relative_files(folder: Path) -> set[Path]:
    return {p.relative_to(folder) for p in folder.rglob("*") if p.is_file()}


def _assert_same_tree(arrived: Path, generated: Path, instances: int) -> None:
    """``arrived`` holds exactly the relative paths of ``generated``, each the same object."""
    got, want = _relative_files(arrived), _relative_files(generated)
    assert len(want) == instances, sorted(map(str, want))
    assert got == want, (sorted(map(str, got - want)), sorted(map(str, want - got)))
    for relative in sorted(want):
        assert_same_object(arrived / relative, generated / relative)


def _generate(out: Path, *argv: str) -> None:
    done = _run_to_end([sys.executable, "-m", "emulators.cli", "generate", "--out", str(out),
                        "--json", *argv])
    assert done.returncode == 0, done.stderr


@pytest.mark.interop
def test_serve_on_port_0_moves_the_synthetic_archive_as_generate_writes_it(
        tmp_path: Path, require_tool: Callable[[str], str]) -> None:
    with _serving_on_any_ports(tmp_path / "fd", "--patients", "2", *SERVED_ARCHIVE) as served:
        _move_everything_to_the_file_daemon(require_tool, served, tmp_path)
        _stop_with_sigterm(served.run)
    _generate(tmp_path / "generated", "--patients", "2", *SERVED_ARCHIVE)
    _assert_same_tree(tmp_path / "fd", tmp_path / "generated", served.instances)


@pytest.mark.interop
def test_serve_of_a_generated_folder_moves_it_back_as_written(
        tmp_path: Path, require_tool: Callable[[str], str]) -> None:
    generated = tmp_path / "generated"
    _generate(generated, "--patients", "1", *SERVED_ARCHIVE)
    with _serving_on_any_ports(tmp_path / "fd", "--archive", str(generated)) as served:
        _move_everything_to_the_file_daemon(require_tool, served, tmp_path)
        _stop_with_sigterm(served.run)
    _assert_same_tree(tmp_path / "fd", generated, served.instances)


@pytest.mark.interop
def test_serve_with_a_scenario_injects_its_faults(tmp_path: Path,
                                                  require_tool: Callable[[str], str]) -> None:
    """--scenario: the daemons answer as the scenario breaks them (here: every association
    rejected permanently, no reason given), while the site stays the one served."""
    with _serving(tmp_path, "--scenario", "db-rejects-permanently") as served:
        done = _echo(require_tool, "DCMTK", DB_AE, served.db_port)
    assert done.returncode != 0
    assert "Association Rejected" in done.stdout and "No Reason" in done.stdout, done.stdout


@pytest.mark.interop
def test_serve_with_a_network_scenario_prints_the_proxy_to_call(
        tmp_path: Path, require_tool: Callable[[str], str]) -> None:
    with _serving(tmp_path, "--scenario", "net-latency-both-legs") as served:
        deadline = time.monotonic() + READY_TIMEOUT
        line = ""
        while not line and time.monotonic() < deadline:
            line = next((x for x in served.run.stdout if x.startswith("client-leg proxy")), "")
            time.sleep(0.05)
        match = re.search(r":(\d+) \(call the DB Daemon here\)", line)
        assert match, served.run.output()
        assert _echo(require_tool, "DCMTK", DB_AE, int(match[1])).returncode == 0


def test_serve_refuses_an_unknown_scenario(tmp_path: Path) -> None:
    done = subprocess.run(_serve_argv(0, 0, tmp_path, "--scenario", "no-such-thing"),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "no scenario 'no-such-thing'" in done.stderr
