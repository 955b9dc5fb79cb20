"""Helpers of ``test_no_data_loss.py``: the File Daemon as a process of its own (``dbdsim
serve --only file-daemon``, so it alone can be SIGKILLed), rtmove runs, and an audit of
what a folder holds after a crash or a full disk.

The audit is independent of the File Daemon and of rtmove: each file is parsed whole by
pydicom, its pixel data length checked against Rows x Columns x ..., and its data set
bytes compared with what the archive exports for that object.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import pydicom
from pydicom.uid import UID, ImplicitVRLittleEndian
from pynetdicom.dsutils import encode

from client.files import TEMP_PREFIX, is_temp_name, part10_body, safe_name
from client.site import Site, default_site
from client.site_dump import dump_site
from emulators.archive import Archive
from emulators.db_daemon.export import encode_as
from emulators.peers import free_port
from emulators.synthetic import PatientRecipe, Profile, SyntheticConfig

BIN = Path(sys.executable).parent
DBDSIM, RTMOVE = str(BIN / "dbdsim"), str(BIN / "rtmove")
# 70 small slices: a move of the collection takes ~1 s on a 2-core machine.
CONFIG = SyntheticConfig(seed=5, profile=Profile.CLEAN, slices=70, rows=16, columns=16)
ENV = {**os.environ, "TCP_NODELAY": "1"}
START_TIMEOUT = 30.0  # seconds for a daemon process to print its ready line


@dataclass(frozen=True)
class Collection:
    """One plan's collection, by modality, in the order rtmove moves it."""

    patient_id: str
    plan_uid: str
    by_modality: dict[str, tuple[str, ...]]

    @property
    def uids(self) -> set[str]:
        return {u for uids in self.by_modality.values() for u in uids}

    @classmethod
    def of(cls, recipe: PatientRecipe) -> Collection:
        plan = recipe.plans[0]
        ss = plan.structure_set
        return cls(recipe.patient_id, plan.uid, {
            "RTPLAN": (plan.uid,), "RTSTRUCT": (ss.uid,), "CT": ss.ct.slice_uids,
            "RTDOSE": tuple(d.uid for d in recipe.doses if d.plan.uid == plan.uid)})

    def modality(self, uid: str) -> str:
        return next(m for m, uids in self.by_modality.items() if uid in uids)


class Expected:
    """The archive's objects as the DB Daemon exports them to the File Daemon: the data set
    bytes a whole file must hold after its File Meta header, per transfer syntax."""

    def __init__(self, archive: Archive, charset: str) -> None:
        self.archive, self.charset = archive, charset
        self._bytes: dict[tuple[str, str], bytes] = {}

    def body(self, sop_uid: str, syntax: UID) -> bytes:
        key = (sop_uid, str(syntax))
        if key not in self._bytes:
            ds = encode_as(self.archive.dataset(sop_uid), self.charset)
            encoded = encode(ds, syntax.is_implicit_VR, syntax.is_little_endian)
            assert encoded is not None, f"{sop_uid} cannot be encoded in {syntax}"
            self._bytes[key] = encoded
        return self._bytes[key]

    def size(self, sop_uid: str) -> int:
        """The file's size, a little over: its File Meta header takes ~250 bytes."""
        return len(self.body(sop_uid, ImplicitVRLittleEndian)) + 400


# -- the site -------------------------------------------------------------------------------

def make_site(fd_out: Path) -> Site:
    """The default site (default timeouts) on fixed free ports: the File Daemon process and
    the in-process DB Daemon must agree on them before either starts."""
    site = default_site()
    return dataclasses.replace(
        site,
        db_daemon=dataclasses.replace(site.db_daemon, port=free_port()),
        file_daemon=dataclasses.replace(site.file_daemon, port=free_port(), output=fd_out),
        client=dataclasses.replace(site.client, port=free_port()))


def write_site(site: Site, path: Path) -> Path:
    path.write_text(dump_site(site), encoding="utf-8")
    return path


# -- the File Daemon process ----------------------------------------------------------------

_WRITTEN_RE = re.compile(r"File Daemon (?:written|identical|replaced) (.+\.dcm) from '")
_REMOVED_RE = re.compile(r"removed (.+\.tmp) \(\d+ bytes\)")
_CANNOT_WRITE_RE = re.compile(r"File Daemon cannot write (.+\.dcm): (.*)$", re.MULTILINE)


class FileDaemonProcess:
    """``dbdsim serve --only file-daemon``: started, SIGKILLed and restarted on one folder.

    Each start logs (at INFO) to its own file, so what one run of the daemon did (wrote,
    removed at start, failed to write) can be read back after a crash.
    """

    def __init__(self, site_path: Path, out: Path, logs: Path) -> None:
        self.site_path, self.out, self.logs = site_path, out, logs
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.log_path = logs / "fd-0.log"

    def start(self) -> None:
        assert self.proc is None, "already running"
        self.starts += 1
        self.logs.mkdir(parents=True, exist_ok=True)
        self.log_path = self.logs / f"fd-{self.starts}.log"
        ready = self.logs / f"fd-{self.starts}.out"
        with self.log_path.open("wb") as err, ready.open("wb") as out:
            self.proc = subprocess.Popen(
                [DBDSIM, "serve", "--only", "file-daemon", "--site", str(self.site_path),
                 "--fd-out", str(self.out), "--log-level", "info"],
                stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=ENV)
        deadline = time.monotonic() + START_TIMEOUT
        while "listening on" not in ready.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"the File Daemon did not start: {self.log()}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL, by its own pid: no handler runs, nothing is flushed or cleaned."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def stop(self) -> None:
        """SIGTERM (a clean stop); SIGKILL if it does not end within 10 s."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # Logged paths name the patient folder by a pseudonym (emulators.log_policy): files are
    # matched by name, which the SOP Instance UID makes unique.

    @staticmethod
    def written_in(log_path: Path, since: int = 0) -> list[str]:
        """Names of the files a run of the daemon logged (in ``log_path``, from offset
        ``since``) as written: it answers their C-STOREs with Success only after that."""
        text = log_path.read_text(errors="replace")[since:]
        return [Path(m[1]).name for m in _WRITTEN_RE.finditer(text)]

    def removed_at_start(self) -> list[str]:
        """Names of the temporary files this run of the daemon removed as it started."""
        return [Path(m[1]).name for m in _REMOVED_RE.finditer(self.log())]

    def write_failures(self) -> list[tuple[Path, str]]:
        return [(Path(m[1]), m[2]) for m in _CANNOT_WRITE_RE.finditer(self.log())]


@contextmanager
def file_daemon(site_path: Path, out: Path, logs: Path) -> Iterator[FileDaemonProcess]:
    fd = FileDaemonProcess(site_path, out, logs)
    fd.start()
    try:
        yield fd
    finally:
        fd.stop()


# -- rtmove ---------------------------------------------------------------------------------

@dataclass
class RtmoveRun:
    """One rtmove process; ``with`` it so that it never outlives the test."""

    proc: subprocess.Popen[str]
    started: float
    manifest: Path
    returncode: int | None = None
    elapsed: float = 0.0
    report: dict[str, object] = field(default_factory=dict)
    stderr: str = ""

    def __enter__(self) -> RtmoveRun:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float) -> RtmoveRun:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError(f"rtmove hung: still running after {timeout} s; "
                                 f"stderr: {err[-2000:]}") from None
        self.elapsed = time.monotonic() - self.started
        self.returncode = self.proc.returncode
        self.stderr = err
        try:
            self.report = json.loads(out)
        except json.JSONDecodeError:
            raise AssertionError(f"rtmove printed no JSON (exit {self.returncode}): "
                                 f"{out[-1000:]} {err[-2000:]}") from None
        return self

    def outcomes(self) -> dict[str, str]:
        manifest = self.report.get("manifest")
        assert isinstance(manifest, dict), self.report
        return {f"{i['role']}": i["outcome"] for c in manifest["collections"]
                for i in c["items"]}

    def describe(self) -> str:
        report = json.dumps(self.report)[:3000]
        return f"exit {self.returncode} after {self.elapsed:.1f} s: {report} {self.stderr[-1000:]}"


def rtmove_collect(site_path: Path, collection: Collection, verify_dir: Path | None,
                   manifest: Path, *extra: str) -> RtmoveRun:
    """``rtmove collect`` of the collection to the File Daemon, checking its folder (when
    ``verify_dir`` is given; else only the archive's counts say what arrived)."""
    verify = ["--verify-dir", str(verify_dir)] if verify_dir is not None else []
    argv = [RTMOVE, "collect", "--site", str(site_path), "--patient", collection.patient_id,
            "--plan", collection.plan_uid, *verify, "--json", "--write-manifest",
            str(manifest), *extra]
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, env=ENV)
    return RtmoveRun(proc, started, manifest)


# -- the audit ------------------------------------------------------------------------------

@dataclass
class Audit:
    """What a folder holds: whole files (by SOP Instance UID), and everything else."""

    whole: dict[str, Path] = field(default_factory=dict)
    corrupt: dict[Path, str] = field(default_factory=dict)  # a .dcm that is not whole
    temp: list[Path] = field(default_factory=list)  # write_atomic's temporaries
    other: list[Path] = field(default_factory=list)  # any other file

    def modalities(self, collection: Collection) -> dict[str, int]:
        counts = dict.fromkeys(collection.by_modality, 0)
        for uid in self.whole:
            if uid in collection.uids:
                counts[collection.modality(uid)] += 1
        return counts

    @property
    def clean(self) -> bool:
        return not (self.corrupt or self.temp or self.other)


def _pixel_bytes(ds: pydicom.Dataset) -> int:
    return (int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel") or 1)
            * int(ds.BitsAllocated) // 8 * int(ds.get("NumberOfFrames") or 1))


def _problem(path: Path, expected: Expected) -> tuple[str | None, str]:
    """(why ``path`` is not a whole copy of the archive's object, or None; its UID)."""
    raw = path.read_bytes()
    try:
        ds = pydicom.dcmread(BytesIO(raw))
        for elem in ds.iterall():  # every value decoded: a cut file fails somewhere
            _ = elem.value
        uid = str(ds.SOPInstanceUID)
        syntax = ds.file_meta.TransferSyntaxUID
        if str(ds.file_meta.MediaStorageSOPInstanceUID) != uid:
            return "File Meta names another SOP Instance UID", uid
        if "PixelData" in ds and len(ds.PixelData) != _pixel_bytes(ds):
            return (f"pixel data has {len(ds.PixelData)} bytes, Rows x Columns x ... say "
                    f"{_pixel_bytes(ds)}"), uid
        if "Rows" in ds and "PixelData" not in ds:
            return "an image without pixel data", uid
    except Exception as exc:  # whatever a cut file makes pydicom raise
        return f"does not parse: {type(exc).__name__}: {exc}", ""
    if not path.name.endswith(f".{safe_name(uid)}.dcm"):
        return f"holds {uid}, not the object its name says", uid
    try:
        want = expected.body(uid, syntax)
    except Exception as exc:
        return f"not an object of the archive: {exc}", uid
    if part10_body(raw) != want:
        return "data set bytes differ from the archive's object", uid
    return None, uid


# A file already judged is not read again while its inode, size and mtime stay the same.
_judged: dict[tuple[str, int, int, int], tuple[str | None, str]] = {}


def _judge(path: Path, expected: Expected) -> tuple[str | None, str]:
    st = path.stat()
    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _judged:
        _judged[key] = _problem(path, expected)
    return _judged[key]


def audit(folder: Path, expected: Expected, ignore: Iterable[Path] = ()) -> Audit:
    """Every file under ``folder`` (symbolic links not followed), sorted into the audit."""
    skip = {p.resolve() for p in ignore}
    result = Audit()
    for root, _dirs, names in os.walk(folder):
        for name in sorted(names):
            path = Path(root) / name
            if path.resolve() in skip:
                continue
            if is_temp_name(name):
                result.temp.append(path)
            elif name.endswith(".dcm") and not name.startswith(TEMP_PREFIX):
                problem, uid = _judge(path, expected)
                if problem is None:
                    assert uid not in result.whole, f"{uid} is in two files"
                    result.whole[uid] = path
                else:
                    result.corrupt[path] = problem
            else:
                result.other.append(path)
    return result


# -- DB Daemon log --------------------------------------------------------------------------

_SUBOP_RE = re.compile(r"sub-operation for (\S+) failed at (\S+): (.+)$")


class SubOperationFailures(logging.Handler):
    """The C-STORE statuses the (in-process) DB Daemon got for failed sub-operations."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[tuple[str, str]] = []  # (SOP Instance UID, status or "no response")
        self._earlier: set[int | None] = set()

    def restart(self) -> None:
        """Forget what was seen, and ignore threads already running: a move of an earlier
        test may still be failing its last sub-operations."""
        self.seen.clear()
        self._earlier = {t.ident for t in threading.enumerate()}

    def emit(self, record: logging.LogRecord) -> None:
        match = _SUBOP_RE.match(record.getMessage())
        if match and record.thread not in self._earlier:
            self.seen.append((match[1], match[3]))

    def statuses(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _uid, status in self.seen:
            counts[status] = counts.get(status, 0) + 1
        return counts
