"""No data loss: the File Daemon SIGKILLed mid-move, and its disk full.

A. The File Daemon runs as its own process (``dbdsim serve --only file-daemon``) and is
   SIGKILLed at seeded random moments of an ``rtmove collect`` of a plan's collection
   (5 rounds; 50 with ``--long`` or DBDSIM_LONG=1; DBDSIM_KILL_SEED repeats a run). After
   each kill every file in its folder must be whole and identical to the archive's object,
   every file it had answered Success for must be there, and no temporary file may remain
   once it restarts; the interrupted rtmove must fail with a documented exit code within
   its timeouts (no hang), and a re-run must complete the collection.
B. The File Daemon's folder on a small tmpfs: writes that do not fit are answered 0xA700,
   what was written stays whole, no temporary file remains, rtmove says the disk is full;
   once space is freed a re-run completes. Likewise for rtmove's own ``--out`` folder.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hardening.no_data_loss_helpers import (
    CONFIG,
    DBDSIM,
    ENV,
    RTMOVE,
    Audit,
    Collection,
    Expected,
    FileDaemonProcess,
    RtmoveRun,
    SubOperationFailures,
    audit,
    file_daemon,
    make_site,
    rtmove_collect,
    write_site,
)

from client.files import is_temp_name, safe_name
from client.site import Site
from emulators.archive import Archive
from emulators.db_daemon import DBDaemon
from emulators.peers import free_port

KILLS_CI, KILLS_LONG = 5, 50
SEED = 20261129
TIMEOUT = 20.0  # rtmove --timeout of the runs that must succeed
# rtmove --timeout of the interrupted runs: the longest it may wait for any answer. The run
# must end within it plus its own work: start-up, resolving, a 1 s settle of the folder
# per object it finds missing.
KILLED_TIMEOUT, OWN_WORK = 3.0, 15.0
HARD_LIMIT = 120.0  # a run still going after this has hung
PAGE = 4096  # tmpfs allocates whole pages
DISK_MB = 3

# rtmove's documented exit codes for a destination that died mid-move: nothing reached it
# in this run (0xA702, it cannot be reached), or some objects are still missing.
DESTINATION, INCOMPLETE, LOCAL = 5, 8, 10


@dataclass
class Stage:
    """The in-process DB Daemon over a seeded archive, and the site file both sides read."""

    work: Path
    site: Site
    site_path: Path
    archive: Archive
    collection: Collection
    expected: Expected
    failures: SubOperationFailures
    db_daemon: DBDaemon

    @property
    def fd_out(self) -> Path:
        return self.site.file_daemon.output

    def dead_stores(self, wait: float = 5.0) -> int:
        """The DB Daemon's C-STORE associations to the File Daemon still open ``wait``
        seconds after it died (it must notice the death, not wait a DIMSE timeout per
        remaining object); any found are aborted so later rounds start clean."""
        port = self.site.file_daemon.port
        deadline = time.monotonic() + wait
        while True:
            dead = [a for a in self.db_daemon.ae.active_associations
                    if a.is_requestor and a.acceptor.port == port]
            if not dead or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for assoc in dead:
            assoc.abort()
        return len(dead)

    def patient_dir(self, out: Path) -> Path:
        return out / safe_name(self.collection.patient_id)


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    work = tmp_path_factory.mktemp("no-data-loss")
    site = make_site(work / "fd")
    archive = Archive.synthetic(CONFIG, 1)
    [fd_entry] = [t for t in site.db_trusted() if t.ae_title == site.file_daemon.ae_title]
    failures = SubOperationFailures()
    logger = logging.getLogger("dbdsim.db_daemon")
    logger.addHandler(failures)
    try:
        with DBDaemon(site, archive) as dbd:
            yield Stage(work, site, write_site(site, work / "site.toml"), archive,
                        Collection.of(archive.recipe(0)),
                        Expected(archive, fd_entry.export_charset), failures, dbd)
    finally:
        logger.removeHandler(failures)
        archive.close()


# -- A. SIGKILL -------------------------------------------------------------------------------

# Where the kills aim, in rotation (so that even five cover the move); each at a seeded
# random point within its phase. "mid-write": the moment a temporary file is seen, i.e.
# between its creation and its rename, the gap a crash can leave a file in.
AIMS = ("before first file", "plan/structure set", "mid-series", "mid-write", "dose")


@dataclass(frozen=True)
class KillPoint:
    """When to kill: ``delay`` seconds after rtmove starts ("before first file"), or after
    the folder first holds ``files`` whole files (and, for "mid-write", a temporary one);
    "plan/structure set" counts from the first entry of the folder instead."""

    aim: str
    files: int
    delay: float

    @classmethod
    def draw(cls, rng: random.Random, index: int, total: int) -> KillPoint:
        aim = AIMS[index % len(AIMS)]
        if aim == "before first file":  # while rtmove starts, finds and reads headers
            return cls(aim, 0, rng.uniform(0.1, 1.0))
        if aim == "plan/structure set":
            return cls(aim, 0, rng.uniform(0.0, 0.05))
        if aim == "mid-series":
            return cls(aim, rng.randint(3, total - 2), rng.uniform(0.0, 0.01))
        if aim == "mid-write":
            return cls(aim, rng.randint(0, total - 1), 0.0)
        return cls(aim, total - 1, rng.uniform(0.0, 0.03))  # the dose comes last

    def reached(self, names: list[str], since: float) -> bool:
        whole = sum(n.endswith(".dcm") and not n.startswith(".") for n in names)
        if self.aim == "before first file":
            return since >= self.delay
        if self.aim == "plan/structure set":
            return bool(names)
        if self.aim == "mid-write":
            return whole >= self.files and any(is_temp_name(n) for n in names)
        return whole >= self.files


@dataclass
class KillRound:
    index: int
    point: KillPoint
    at: float  # seconds after rtmove started
    client_running: bool  # rtmove was still running when the File Daemon died
    phase: str  # what the folder shows the kill interrupted
    mid_write: bool  # it left a temporary file: the kill fell between creation and rename
    after_kill: dict[str, int]  # whole files per modality
    temp_after_kill: int
    removed_at_restart: int
    exit_code: int
    seconds: float  # of the interrupted rtmove run
    timed_out: bool  # it ended only when an answer did not come within its --timeout
    lingering: int  # DB Daemon associations to the dead File Daemon still open after it
    rerun_exit: int
    rerun_seconds: float
    round_seconds: float

    def line(self) -> str:
        files = " ".join(f"{m}={n}" for m, n in self.after_kill.items())
        aim = f"{self.point.aim}@{self.point.files}+{self.point.delay * 1000:.0f}ms"
        phase = self.phase + (" (mid-write)" if self.mid_write else "")
        return (f"{self.index:3d} {aim:<31} {self.at:6.3f}s {phase:<30} {files:<36} "
                f"tmp={self.temp_after_kill} removed={self.removed_at_restart} "
                f"rtmove={self.exit_code} in {self.seconds:4.1f}s"
                f"{' (timed out)' if self.timed_out else ''} rerun={self.rerun_exit} in "
                f"{self.rerun_seconds:3.1f}s; round {self.round_seconds:4.1f}s")


def _phase(counts: dict[str, int], collection: Collection) -> str:
    ct = len(collection.by_modality["CT"])
    if not any(counts.values()):
        return "before first file"
    if counts == {m: len(u) for m, u in collection.by_modality.items()}:
        return "after last file"
    if counts["CT"] == 0:
        return "plan/structure set"
    if counts["CT"] < ct:
        return "mid-series"
    return "dose"


def _clear(stage: Stage) -> None:
    shutil.rmtree(stage.patient_dir(stage.fd_out), ignore_errors=True)


def _assert_complete(stage: Stage, found: Audit, what: str) -> None:
    assert found.clean, f"{what}: {found.corrupt} {found.temp} {found.other}"
    missing = stage.collection.uids - set(found.whole)
    assert not missing, f"{what}: {len(missing)} object(s) missing, e.g. {sorted(missing)[0]}"


def _wait_for(point: KillPoint, run: RtmoveRun, folder: Path) -> None:
    """Until rtmove reaches ``point`` (or ends); polled every 0.5 ms, without a busy loop:
    the DB Daemon shares this process."""
    started = time.monotonic()
    while run.running():
        if point.aim != "before first file":
            try:
                names = os.listdir(folder)
            except OSError:
                names = []
        else:
            names = []
        if point.reached(names, time.monotonic() - run.started):
            break
        if time.monotonic() - started > HARD_LIMIT:
            raise AssertionError(f"{point} never reached")
        time.sleep(0.0005)
    if point.aim != "before first file":
        time.sleep(point.delay)


def _kill_round(stage: Stage, fd: FileDaemonProcess, index: int, point: KillPoint,
                ) -> KillRound:
    began = time.monotonic()
    _clear(stage)
    collection, folder = stage.collection, stage.patient_dir(stage.fd_out)
    logged = len(fd.log())
    # No retries, and no --verify-dir (its 1 s settle per missing object): what is under
    # test is the File Daemon's folder, and how the run ends.
    with rtmove_collect(stage.site_path, collection, None, stage.work / f"kill{index}.json",
                        "--retries", "0", "--timeout", str(KILLED_TIMEOUT)) as run:
        _wait_for(point, run, folder)
        client_running = run.running()
        killed_log = fd.log_path
        fd.kill()
        at = time.monotonic() - run.started
        run.wait(HARD_LIMIT)
    lingering = stage.dead_stores()
    assert not lingering, f"round {index}: the DB Daemon still sends to the dead File Daemon"
    after = audit(stage.fd_out, stage.expected)
    what = f"round {index} ({point}, SIGKILL {at:.3f} s after rtmove started)"
    assert not after.corrupt, f"{what}: files not whole: {after.corrupt}"
    assert not after.other, f"{what}: unexpected files: {after.other}"
    # Success was answered only for files logged as written: each must be there, whole.
    acknowledged = FileDaemonProcess.written_in(killed_log, since=logged)
    lost = sorted(set(acknowledged) - {path.name for path in after.whole.values()})
    assert not lost, f"{what}: written (and answered Success) but lost: {lost}"
    counts = after.modalities(collection)
    complete = set(after.whole) >= collection.uids
    timed_out = "no answer came within" in json.dumps(run.report)
    if client_running:
        if complete:
            assert run.returncode == 0, f"{what}: everything arrived, yet {run.describe()}"
        else:
            assert run.returncode in (DESTINATION, INCOMPLETE), f"{what}: {run.describe()}"
            assert run.report.get("ok") is False, run.describe()
            assert run.report.get("kind") in ("destination", "incomplete"), run.describe()
            if run.returncode == DESTINATION:
                assert "could not deliver any object to VMSFD" in str(run.report["error"])
            else:
                assert set(run.outcomes().values()) - {"arrived"}, run.describe()
            assert run.elapsed < KILLED_TIMEOUT + OWN_WORK, \
                f"{what}: failed only after {run.elapsed:.1f} s: {run.describe()}"
    # The restart removes what the kill left half-written, and nothing else.
    fd.start()
    removed = fd.removed_at_start()
    assert sorted(removed) == sorted(p.name for p in after.temp), f"{what}: {removed}"
    restarted = audit(stage.fd_out, stage.expected)
    assert restarted.clean and restarted.whole == after.whole, f"{what}: after restart"
    with rtmove_collect(stage.site_path, collection, folder, stage.work / f"rerun{index}.json",
                        "--retries", "2", "--backoff", "0.1", "--timeout",
                        str(TIMEOUT)) as rerun:
        rerun.wait(HARD_LIMIT)
    assert rerun.returncode == 0, f"{what}: the re-run failed: {rerun.describe()}"
    assert set(rerun.outcomes().values()) == {"arrived"}, rerun.describe()
    _assert_complete(stage, audit(stage.fd_out, stage.expected), f"{what}: after the re-run")
    return KillRound(index, point, at, client_running, _phase(counts, collection),
                     bool(after.temp), counts, len(after.temp), len(removed),
                     run.returncode or 0, run.elapsed,
                     timed_out, lingering, rerun.returncode or 0, rerun.elapsed,
                     time.monotonic() - began)


def test_sigkill_of_the_file_daemon_mid_move_loses_nothing(stage: Stage,
                                                            long_mode: bool) -> None:
    kills = KILLS_LONG if long_mode else KILLS_CI
    seed = int(os.environ.get("DBDSIM_KILL_SEED", SEED))
    rng = random.Random(seed)
    total = len(stage.collection.uids)
    print(f"\n{kills} SIGKILLs of the File Daemon, seed {seed} (DBDSIM_KILL_SEED repeats "
          f"it); aim@whole files+delay, then what the folder shows")
    fd = FileDaemonProcess(stage.site_path, stage.fd_out, stage.work / "logs-kill")
    rounds: list[KillRound] = []
    started = time.monotonic()
    try:
        fd.start()
        for index in range(kills):
            rounds.append(_kill_round(stage, fd, index, KillPoint.draw(rng, index, total)))
            print(rounds[-1].line(), flush=True)
    finally:
        fd.stop()
    phases: dict[str, int] = {}
    for r in rounds:
        phases[r.phase] = phases.get(r.phase, 0) + 1
    interrupted = [r for r in rounds if r.client_running]
    print(f"kills {len(rounds)} in {time.monotonic() - started:.0f} s; phases {phases}, "
          f"{sum(r.mid_write for r in rounds)} of them mid-write; "
          f"files found after each kill {[sum(r.after_kill.values()) for r in rounds]}; "
          f"temp files left by kills {sum(r.temp_after_kill for r in rounds)}, removed at "
          f"restart {sum(r.removed_at_restart for r in rounds)}; files lost or corrupt 0; "
          f"re-runs completed {sum(r.rerun_exit == 0 for r in rounds)}/{len(rounds)}; "
          f"interrupted rtmove runs {len(interrupted)}: exit codes "
          f"{sorted({r.exit_code for r in interrupted})}, at most "
          f"{max((r.seconds for r in interrupted), default=0):.1f} s, "
          f"{sum(r.timed_out for r in interrupted)} ended only when an answer did not come "
          f"within its --timeout {KILLED_TIMEOUT:g} s; DB Daemon moves left hanging on the "
          f"dead File Daemon {sum(r.lingering for r in rounds)}")
    assert len(rounds) == kills
    # A "mid-write" aim that never sees a temporary file kills only once rtmove is done.
    assert len(interrupted) >= kills - max(1, kills // 10), "kills must land mid-run"
    assert "mid-series" in phases, phases
    if long_mode:  # the gap the cleanup closes was hit, and closed
        assert any(r.mid_write for r in rounds), phases


# -- B. a full disk ---------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """``small_disk(megabytes)``: a fresh tmpfs of that size, unmounted after the test.

    Mounting needs root (CI runs as root): without it the test is skipped, or fails under CI.
    """
    mounted: list[Path] = []

    def mount(megabytes: int) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        try:
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m",
                                   "tmpfs", str(where)], capture_output=True, text=True,
                                  timeout=30, check=False)
            problem = done.stderr.strip() if done.returncode else ""
        except (OSError, subprocess.SubprocessError) as exc:
            problem = str(exc)
        if problem:
            message = (f"cannot mount a {megabytes} MB tmpfs to rehearse a full disk "
                       f"({problem}): this needs root, as CI has")
            if os.environ.get("CI"):
                pytest.fail(f"CI is set but {message}")
            pytest.skip(message)
        mounted.append(where)
        return where

    try:
        yield mount
    finally:
        for where in reversed(mounted):
            done = subprocess.run(["umount", str(where)], capture_output=True, check=False)
            if done.returncode:  # still busy: detach it now, it goes once the last user does
                subprocess.run(["umount", "-l", str(where)], check=False)


def _pages(size: int) -> int:
    return -(-size // PAGE) * PAGE


def _leave_free(disk: Path, free: int) -> Path:
    """Fill ``disk`` with an unrelated file until ``free`` bytes are left."""
    st = os.statvfs(disk)
    size = st.f_bavail * st.f_frsize - _pages(free)
    assert size > 0, f"the disk is too small to leave {free} bytes free"
    filler = disk / "unrelated.bin"
    with filler.open("wb") as fh:
        chunk = b"\0" * (1 << 20)
        while size > 0:
            size -= fh.write(chunk[:size])
        fh.flush()
        os.fsync(fh.fileno())
    return filler


def _room_for(stage: Stage, ct_slices: int, dose_part: float) -> int:
    """Bytes the plan, structure set, ``ct_slices`` CT files and part of the dose take."""
    by = stage.collection.by_modality
    size = stage.expected.size
    return (sum(_pages(size(u)) for u in (*by["RTPLAN"], *by["RTSTRUCT"]))
            + sum(_pages(size(u)) for u in by["CT"][:ct_slices])
            + int(sum(size(u) for u in by["RTDOSE"]) * dose_part))


def test_a_full_file_daemon_disk_answers_a700_keeps_whole_files_and_recovers(
        stage: Stage, small_disk: Callable[[int], Path]) -> None:
    """Three runs of the same command on one disk: room for 40 of the 100 CT slices (the
    collection is bigger than the disk), then for all but half the dose (one object bigger
    than the free space: it fails mid-file), then the unrelated filler is removed."""
    collection = stage.collection
    ct_total = len(collection.by_modality["CT"])
    disk = small_disk(DISK_MB)
    out = disk / "fd"
    folder = stage.patient_dir(out)
    with file_daemon(stage.site_path, out, stage.work / "logs-full") as fd:
        for step, (ct_fit, dose_part) in enumerate(((40, 0.0), (ct_total, 0.5))):
            used = sum(p.stat().st_size for p in out.rglob("*.dcm")) if out.exists() else 0
            filler = _leave_free(disk, _room_for(stage, ct_fit, dose_part) - used)
            stage.failures.restart()
            failed_before = len(fd.write_failures())
            # No retries: a full disk stays full; what is under test is the folder and
            # what rtmove says.
            with rtmove_collect(stage.site_path, collection, folder,
                                stage.work / f"full{step}.json", "--retries", "0",
                                "--timeout", str(TIMEOUT)) as run:
                run.wait(HARD_LIMIT)
            statuses = stage.failures.statuses()
            kept = audit(out, stage.expected)
            counts = kept.modalities(collection)
            failed_writes = fd.write_failures()[failed_before:]
            print(f"\nfull disk, step {step}: C-STORE statuses {statuses}, files kept "
                  f"{counts}, temp files {len(kept.temp)}, rtmove exit {run.returncode}: "
                  f"{run.report.get('error')}")
            assert run.returncode == INCOMPLETE, run.describe()
            error = str(run.report["error"])
            assert "is full" in error and "Free space on that disk" in error, error
            assert "run the same command again" in error, error
            assert statuses and set(statuses) == {"0xA700"}, statuses
            assert statuses["0xA700"] == len(failed_writes), (statuses, failed_writes)
            assert failed_writes and {why for _, why in failed_writes} == {
                "[Errno 28] No space left on device"}, failed_writes
            assert kept.clean, f"{kept.corrupt} {kept.temp} {kept.other}"
            assert counts["RTPLAN"] == counts["RTSTRUCT"] == 1, counts
            assert counts["RTDOSE"] == 0, counts
            if dose_part:  # only the dose did not fit: it failed mid-file
                assert counts["CT"] == ct_total, counts
                assert {p.name.split(".", 1)[0] for p, _ in failed_writes} == {"RTDOSE"}
            else:
                assert 0 < counts["CT"] < ct_total, counts
            filler.unlink()
        with rtmove_collect(stage.site_path, collection, folder, stage.work / "full-rerun.json",
                            "--retries", "1", "--backoff", "0.1", "--timeout",
                            str(TIMEOUT)) as rerun:
            rerun.wait(HARD_LIMIT)
        assert rerun.returncode == 0, rerun.describe()
        _assert_complete(stage, audit(out, stage.expected), "after freeing space")


def test_rtmove_own_full_out_folder_is_a_local_failure_and_recovers(
        stage: Stage, small_disk: Callable[[int], Path]) -> None:
    """``--dest self``: rtmove's receiver writes as the File Daemon does. Its disk full is
    this machine's problem (exit 10) and said so: first when the headers read while
    resolving (plan, structure set, dose) move into --out, then when the CT arrives; once
    the unrelated filler is removed, a re-run completes."""
    collection = stage.collection
    by = collection.by_modality
    disk = small_disk(DISK_MB)
    out = disk / "out"
    argv = [RTMOVE, "collect", "--site", str(stage.site_path), "--patient",
            collection.patient_id, "--plan", collection.plan_uid, "--dest", "self",
            "--out", str(out), "--json", "--retries", "0", "--timeout", str(TIMEOUT),
            "--write-manifest", str(stage.work / "self.json")]
    dose = sum(_pages(stage.expected.size(u)) for u in by["RTDOSE"])
    for step, room in enumerate((_room_for(stage, 0, 0.0), dose + _room_for(stage, 40, 0.0))):
        used = sum(p.stat().st_size for p in out.rglob("*.dcm")) if out.exists() else 0
        filler = _leave_free(disk, room - used)
        done = subprocess.run(argv, capture_output=True, text=True, env=ENV,
                              timeout=HARD_LIMIT, check=False)
        kept = audit(out, stage.expected)
        counts = kept.modalities(collection)
        print(f"\n--dest self on a full disk, step {step}: exit {done.returncode}, files "
              f"kept {counts}, temp files {len(kept.temp)}: {done.stdout[-600:]}")
        assert done.returncode == LOCAL, done.stdout[-3000:] + done.stderr[-3000:]
        error = json.loads(done.stdout)["error"]
        assert "The disk holding" in error and "is full" in error, error
        assert "run the same command again" in error, error
        assert kept.clean, f"{kept.corrupt} {kept.temp} {kept.other}"
        assert counts["RTPLAN"] == counts["RTSTRUCT"] == 1, counts
        if step == 0:  # the dose header did not fit: nothing was moved
            assert counts["RTDOSE"] == counts["CT"] == 0, counts
        else:
            assert counts["RTDOSE"] == 1 and 0 < counts["CT"] < len(by["CT"]), counts
        filler.unlink()
    done = subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=HARD_LIMIT,
                          check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    _assert_complete(stage, audit(out, stage.expected), "--dest self after freeing space")


def test_serve_only_runs_the_one_daemon_asked_for(tmp_path: Path) -> None:
    """``dbdsim serve --only``: what the kills above rely on, as a user starts it."""
    base = [DBDSIM, "serve", "--only", "db-daemon", "--patients", "1", "--slices", "2",
            "--rows", "16", "--columns", "16", "--log-level", "warning"]
    refused = subprocess.run([*base, "--fd-port", "0"], capture_output=True, text=True,
                             env=ENV, timeout=HARD_LIMIT, check=False)
    assert refused.returncode != 0 and "give its real port with --fd-port" in refused.stderr
    out = tmp_path / "db.out"
    with out.open("wb") as fh:
        proc = subprocess.Popen([*base, "--db-port", "0", "--fd-port", str(free_port())],
                                stdout=fh, stderr=subprocess.STDOUT, env=ENV)
    try:
        deadline = time.monotonic() + HARD_LIMIT
        while "archive:" not in out.read_text() and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.terminate()
        assert proc.wait(HARD_LIMIT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = out.read_text()
    assert "DB Daemon VMSDBD1 listening on 127.0.0.1:" in text, text
    assert "File Daemon" not in text and "stopping" in text, text
