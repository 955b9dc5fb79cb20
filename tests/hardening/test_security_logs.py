"""Logs hold no pixel data, and no identifiers beyond what the configured level allows.

The policy (:mod:`emulators.log_policy`): at warning and info no patient name, no birth
date, patient IDs only as ``patient-<8 hex>``; at debug identifiers in full; at every
level no pixel data and at most 16 bytes of any other binary value
(:mod:`client.log_limits`). rtmove may name the patient (the user asked for it) but its
``-vv`` log holds no pixel data either.

Each level runs the same session against the daemons: echoes, a C-STORE of an object
with a known name, ID, birth date and pixel bytes (to the File Daemon and, imported, to
the DB Daemon), a C-FIND by PatientName, a C-FIND with a malformed birth date (a warning
quoting it), a C-FIND carrying a long binary (UN) value, and a C-MOVE of the study.
Everything logged is captured twice: through a handler set up as ``dbdsim serve`` sets
up its own, and through pytest's caplog, whose daemon records must already be clean
(the policy sits on the daemons' loggers too). One run is a real ``dbdsim serve``.
"""

from __future__ import annotations

import io
import logging
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest
from daemons import make_site, running_daemons, small_archive
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

from client.log_limits import MAX_BINARY_BYTES
from emulators import log_policy
from emulators.archive import Archive
from emulators.file_daemon import FileDaemon
from emulators.files import write_part10
from emulators.peers import DCMTK_ENV, free_port
from emulators.sop_classes import VERIFICATION
from emulators.synthetic import SyntheticConfig, make_recipe, object_refs
from emulators.synthetic.modules import with_file_meta

# pydicom warns about each hostile value the tests encode on purpose.
pytestmark = [pytest.mark.interop, pytest.mark.filterwarnings("ignore::UserWarning")]

ROOT = Path(__file__).resolve().parents[2]
NAME, PATIENT_ID, BIRTH_DATE = "Zyxwvutsky^Qrstuvwa", "PIDK7Q3Z9", "19420817"
NAME_PARTS = ("Zyxwvutsky^Qrstuvwa", "Zyxwvutsky", "Qrstuvwa")
BIRTH_FORMS = ("19420817", "1942-08-17")
# Distinctive bytes: the CT's pixels repeat PIXELS; a C-FIND carries UN_VALUE repeated.
PIXELS = b"\x9c\x11PIXEL-SECRET-7Q3Z\xe1\x80\xffK9\x00\x7f"
UN_VALUE = b"\x01\x02UN_BLOB_42_MQ8ZH%&XY\xfe\xfd"
LEVELS = ("debug", "info", "warning")


def forms(window: bytes) -> list[str]:
    """Every way a log line may spell ``window``: as text, escaped, in hex."""
    hexed = window.hex()
    return [window.decode("latin-1"), repr(window)[2:-1], hexed, hexed.upper(),
            " ".join(f"{b:02x}" for b in window), " ".join(f"{b:02X}" for b in window),
            "\\x" + "\\x".join(f"{b:02x}" for b in window)]


def windows(value: bytes, size: int) -> list[bytes]:
    doubled = value * 2  # the value repeats: windows across its seam count too
    return [doubled[i:i + size] for i in range(len(value))]


def assert_no_binary(text: str, pixels: bytes = PIXELS) -> None:
    """No 8 bytes of pixel data in any form; no more than 16 bytes of the UN value."""
    for window in windows(pixels, 8):
        for form in forms(window):
            assert form not in text, (form, _around(text, form))
    for window in windows(UN_VALUE, MAX_BINARY_BYTES + 1):
        for form in forms(window):
            assert form not in text, (form, _around(text, form))


def _around(text: str, needle: str) -> str:
    at = text.find(needle)
    return text[max(0, at - 200):at + 200]


def assert_no_identifiers(text: str, others: list[tuple[str, str, str]]) -> None:
    for part in NAME_PARTS + BIRTH_FORMS + (PATIENT_ID,):
        assert part not in text, (part, _around(text, part))
    for pid, name, birth in others:  # the archive's own patients, moved or found
        for value in (pid, name, birth):
            assert value not in text, (value, _around(text, value))


# --- the session ------------------------------------------------------------------------------

def known_object() -> Dataset:
    """A synthetic CT with the known identifiers and pixel bytes."""
    config = SyntheticConfig(seed=3, slices=2, rows=16, columns=16)
    ref = next(r for r in object_refs(make_recipe(config, 0)) if r.modality == "CT")
    ds = with_file_meta(ref.build())
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = NAME, PATIENT_ID, BIRTH_DATE
    size = len(ds.PixelData)
    ds.PixelData = (PIXELS * (size // len(PIXELS) + 1))[:size]
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def run_session(db_port: int, fd_port: int, db_ae: str = "VMSDBD1",
                fd_ae: str = "VMSFD") -> None:
    obj = known_object()
    ae = AE(ae_title="DCMTK")
    ae.add_requested_context(VERIFICATION)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind, [ImplicitVRLittleEndian])
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove, [ImplicitVRLittleEndian])
    try:
        for port, called in ((fd_port, fd_ae), (db_port, db_ae)):
            assoc = ae.associate("127.0.0.1", port, ae_title=called)
            assert assoc.is_established
            assert int(assoc.send_c_echo().Status) == 0
            assert int(assoc.send_c_store(obj).Status) == 0
            assoc.release()
        assoc = ae.associate("127.0.0.1", db_port, ae_title=db_ae)
        assert assoc.is_established
        try:
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.PatientName = NAME.split("^")[0] + "*"
            query.PatientID = ""
            query.PatientBirthDate = ""
            query.StudyInstanceUID = ""
            found = [ds for status, ds in
                     assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
                     if status is not None and int(status.Status) in (0xFF00, 0xFF01)]
            assert [str(ds.PatientID) for ds in found] == [PATIENT_ID]
            bad = Dataset()
            bad.QueryRetrieveLevel = "STUDY"
            # Not through pydicom's setter: its validation would log the value itself, here
            # in the test's own process (which the daemon's log policy cannot know of yet).
            bad.add(DataElement(0x00100030, "DA", "1942-08-17x", validation_mode=0))
            bad.StudyInstanceUID = ""
            statuses = [int(s.Status) for s, _ in
                        assoc.send_c_find(bad, StudyRootQueryRetrieveInformationModelFind)]
            assert statuses and statuses[-1] >= 0xA000, statuses
            binary = Dataset()
            binary.QueryRetrieveLevel = "STUDY"
            binary.StudyInstanceUID = ""
            binary.add_new(0x00991010, "UN", UN_VALUE * 40)  # no creator: UN to all
            binary.add_new(0x00990010, "LO", UN_VALUE * 2)  # binary in a text element
            for _ in assoc.send_c_find(binary, StudyRootQueryRetrieveInformationModelFind):
                pass
            move = Dataset()
            move.QueryRetrieveLevel = "STUDY"
            move.StudyInstanceUID = obj.StudyInstanceUID
            final = list(assoc.send_c_move(move, fd_ae,
                                           StudyRootQueryRetrieveInformationModelMove))[-1][0]
            assert int(final.Status) == 0, final
        finally:
            assoc.release()
    finally:
        ae.shutdown()


@contextmanager
def serve_like_dbdsim(level: str) -> Iterator[io.StringIO]:
    """A root handler set up as ``configure_logging(level)`` sets up stderr; levels
    restored after."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    log_policy.install(handler, level)
    root, pynetdicom = logging.getLogger(), logging.getLogger("pynetdicom")
    # The daemons' loggers decide by their effective level: whatever other tests in this
    # process set on them, here they follow the root, as under `dbdsim serve`.
    ours = [logging.getLogger(name) for name in ("dbdsim", *log_policy.DAEMON_LOGGERS)]
    saved = root.level, pynetdicom.level, [logger.level for logger in ours]
    root.addHandler(handler)
    root.setLevel(level.upper())
    pynetdicom.setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
    for logger in ours:
        logger.setLevel(logging.NOTSET)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        pynetdicom.setLevel(saved[1])
        for logger, was in zip(ours, saved[2], strict=True):
            logger.setLevel(was)


@pytest.fixture(scope="module")
def archive() -> Iterator[Archive]:
    archive = small_archive(patients=2, slices=2, size=16)
    yield archive
    archive.close()


def archive_patients(archive: Archive) -> list[tuple[str, str, str]]:
    return [(str(r[0]), str(r[1]), str(r[2])) for r in archive.index.query(
        "SELECT patient_id, patient_name, birth_date FROM patient")]


@pytest.mark.parametrize("level", LEVELS)
def test_each_level_logs_what_the_policy_allows(level: str, tmp_path: Path, archive: Archive,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="dbdsim.never")  # caplog's handler takes all
    with serve_like_dbdsim(level) as stream, running_daemons(tmp_path, archive) as (_s, dbd, fd):
        run_session(dbd.port, fd.port, dbd.ae_title, fd.ae_title)
    text = stream.getvalue()
    daemons = "\n".join(record.getMessage() + "\n" + (record.exc_text or "")
                        for record in caplog.records if record.name.startswith("dbdsim"))
    assert text.strip(), "nothing was logged"
    assert_no_binary(text)
    assert_no_binary(daemons)
    if level == "debug":
        # Identifiers in full: pynetdicom dumps the C-FIND responses at this level.
        assert NAME in text and PATIENT_ID in text and BIRTH_DATE in text
        assert "bytes)" in text  # the UN value was shown, cut
        return
    for logged in (text, daemons):
        assert_no_identifiers(logged, archive_patients(archive))
    # The lines are there, with the identifiers replaced.
    assert log_policy.BIRTH_DATE_SHOWN in text  # the malformed birth date's warning
    if level == "info":
        # File Daemon: written, under a pseudonym (which one depends on what else this
        # process has logged: the policy learns identifiers as they come).
        assert re.search(rf"{log_policy.PSEUDONYM_PREFIX}[0-9a-f]{{8}}/CT\.", text), text
        assert "accepts association" in text
    else:
        assert "INFO" not in text


# --- dbdsim serve, as a process ------------------------------------------------------------------

def serve_process(tmp: Path, db_port: int, fd_port: int,
                  *extra: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "emulators.cli", "serve", "--patients", "1", "--slices", "2",
            "--rows", "16", "--columns", "16", "--db-port", str(db_port), "--fd-port",
            str(fd_port), "--fd-out", str(tmp / "fd"), *extra]
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=DCMTK_ENV)


@contextmanager
def serving(tmp: Path, *extra: str) -> Iterator[tuple[int, int, list[str]]]:
    """``dbdsim serve`` ready inside the block (ports, stderr lines so far); SIGTERM after."""
    db_port, fd_port = free_port(), free_port()
    proc = serve_process(tmp, db_port, fd_port, *extra)
    assert proc.stdout is not None and proc.stderr is not None
    lines: queue.Queue[str] = queue.Queue()
    errors: list[str] = []
    pumps = [threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True),
             threading.Thread(target=lambda: [errors.append(x) for x in proc.stderr],
                              daemon=True)]
    for pump in pumps:
        pump.start()
    try:
        deadline, ready = time.monotonic() + 60, 0
        while ready < 2:
            assert time.monotonic() < deadline and proc.poll() is None, "".join(errors)
            try:
                ready += "listening on" in lines.get(timeout=0.1)
            except queue.Empty:
                continue
        yield db_port, fd_port, errors
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        for pump in pumps:
            pump.join(5)
        proc.stdout.close()
        proc.stderr.close()


def test_dbdsim_serve_stderr_at_info(tmp_path: Path) -> None:
    """The real thing: ``dbdsim serve`` (default --log-level info) given the session's
    store and find; its stderr names no patient and holds no pixel bytes."""
    with serving(tmp_path) as (db_port, fd_port, errors):
        run_session(db_port, fd_port)
        time.sleep(0.3)  # the last lines on their way through the pipe
    text = "".join(errors)
    assert "written" in text, text
    assert_no_binary(text)
    assert_no_identifiers(text, [])
    assert f"{log_policy.PSEUDONYM_PREFIX}" in text


# --- rtmove -vv -----------------------------------------------------------------------------------

def test_rtmove_debug_log_has_no_pixel_data(tmp_path: Path, archive: Archive) -> None:
    """``rtmove -vv collect --dest self`` logs pynetdicom's DICOM traffic; the moved CTs'
    pixel bytes appear nowhere in it (the patient may: the user asked for them)."""
    pid = archive_patients(archive)[0][0]
    with running_daemons(tmp_path, archive) as (site, dbd, _fd):
        out = tmp_path / "out"
        done = subprocess.run(
            [sys.executable, "-m", "client.cli", "collect", "-vv", "--patient", pid,
             "--plan", "all", "--dest", "self", "--out", str(out), "--host", "127.0.0.1",
             "--port", str(dbd.port), "--aec", dbd.ae_title, "--aet", site.client.ae_title,
             "--recv-port", str(site.client.port), "--retries", "0"],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
            env={**os.environ, **DCMTK_ENV})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "DEBUG" in done.stderr and "pynetdicom" in done.stderr  # -vv did log
    cts = [p for p in out.rglob("CT.*.dcm")]
    assert cts, list(out.rglob("*"))
    for path in cts[:3]:
        pixels = pydicom.dcmread(path).PixelData
        middle = pixels[len(pixels) // 2:len(pixels) // 2 + 24]
        assert len(set(middle)) > 4, "pick pixel bytes that are not a flat background"
        assert_no_binary(done.stderr, pixels=middle)


def test_ids_known_only_from_disk_are_pseudonymised_too(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A patient folder left by an earlier run names an ID no peer sent in this one: the
    File Daemon's lines about it (a stale temporary file removed at start, an instance
    that came before under it) still show the folder as a pseudonym at info."""
    caplog.set_level(logging.INFO)
    site = make_site(tmp_path)
    old_id = "DISKONLY-ID7"
    obj = known_object()
    obj.PatientID = old_id
    old = site.file_daemon.output / old_id / f"CT.{obj.SOPInstanceUID}.dcm"
    write_part10(obj, old)
    (old.parent / f".{old.name}.0123456789ab.tmp").write_bytes(b"cut short")
    with FileDaemon(site) as fd:
        run_store(fd.port, known_object())  # the same instance, under PATIENT_ID now
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("dbdsim"))
    assert old_id not in text and PATIENT_ID not in text, text
    assert f"{log_policy.pseudonym(old_id)}/.CT." in text, text  # the temporary file
    assert f"{log_policy.pseudonym(old_id)}/CT." in text, text  # came before as ...
    assert not old.exists()


def run_store(port: int, ds: Dataset) -> None:
    ae = AE(ae_title="DCMTK")
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title="VMSFD")
        assert assoc.is_established
        assert int(assoc.send_c_store(ds).Status) == 0
        assoc.release()
    finally:
        ae.shutdown()
