"""No path outside the output folder can be written, whatever the data says.

Patient ID, SOP Instance UID and modality name the file a C-STORE lands in
(``<out>/<patient id>/<modality>.<uid>.dcm``). Hypothesis sends hostile values of all
three by real C-STORE to the File Daemon and to rtmove's own Storage SCP (the receiver
of ``--dest self``), and checks after each: every file lies under the output folder
(``resolve()`` + ``is_relative_to``), nothing appeared beside it (the parent is watched,
with an "outside" folder absolute and relative values aim at), and no folder holds two
patients' objects. pynetdicom accepts any SOP Instance UID of 1 to 64 characters unless
told to enforce conformance, so UIDs such as ``../../x`` do arrive.

Symbolic links: an output folder may already hold a link named like a patient folder
(or like a file), pointing elsewhere. The writers refuse to write through it (a failure
status, 0x0110, and an error line naming the link) and leave the link alone: it was put
there by someone who can write to the output folder, and deleting it could destroy a
site's own arrangement, while following it writes wherever it points
(:func:`client.files.check_inside`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest
from daemons import associated, make_site
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association

from client.errors import LocalError
from client.files import UnsafePathError, check_inside, safe_name
from client.receiver import Receiver
from emulators.archive.from_dataset import text_value
from emulators.bulk_send import send_c_store, sending
from emulators.file_daemon import PROCESSING_FAILURE, FileDaemon
from emulators.peers import free_port

# pydicom warns about every hostile value it is asked to encode: expected here.
pytestmark = [pytest.mark.interop, pytest.mark.filterwarnings("ignore::UserWarning")]

CLIENT = "DCMTK"
RECEIVER_AE = "RTMOVE"


@dataclasses.dataclass
class Target:
    """Where the C-STOREs go: a running writer, its AE title and its output folder."""

    port: int
    ae_title: str
    out: Path
    base: Path  # the output's parent, watched for strays
    outside: Path  # an absolute folder hostile values point at


@contextmanager
def running(kind: str, base: Path, *, patient_folders: bool = True) -> Iterator[Target]:
    """The File Daemon or rtmove's receiver writing to ``base/out``; stopped after."""
    out, outside = base / "out", base / "outside"
    out.mkdir(parents=True)
    outside.mkdir()
    if kind == "file-daemon":
        site = make_site(base)
        service = dataclasses.replace(site.file_daemon, output=out,
                                      patient_folders=patient_folders)
        with FileDaemon(dataclasses.replace(site, file_daemon=service)) as fd:
            yield Target(fd.port, fd.ae_title, out, base, outside)
    else:
        with Receiver(RECEIVER_AE, free_port(), out, bind="127.0.0.1") as receiver:
            yield Target(receiver.port, RECEIVER_AE, out, base, outside)


@contextmanager
def association(target: Target) -> Iterator[Association]:
    ae = AE(ae_title=CLIENT)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    with associated(ae, "127.0.0.1", target.port, target.ae_title) as assoc:
        assert assoc.is_established
        assoc.dimse_timeout = 20  # an unanswered C-STORE fails the test, not the CI job
        yield assoc


def dataset(patient_id: str, sop_uid: str, modality: str) -> Dataset:
    """A small CT whose naming values are as hostile as given (pydicom only warns)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.PatientID = patient_id
    ds.PatientName = "Path^Test"
    ds.Modality = modality
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def snapshot(base: Path) -> set[Path]:
    """Every entry under ``base`` (links not followed), the output folder included."""
    return {Path(folder) / name for folder, dirs, files in os.walk(base)
            for name in (*dirs, *files)}


def assert_contained(target: Target, before: set[Path]) -> None:
    """Whatever is new under the watched parent lies inside the output folder, and
    nothing is in the "outside" folder."""
    out = target.out.resolve()
    for path in snapshot(target.base) - before:
        assert path.resolve().is_relative_to(out), path
    assert not any(target.outside.iterdir()), list(target.outside.iterdir())


def assert_one_patient_per_folder(out: Path) -> None:
    """Each patient folder holds one patient's objects, and each patient one folder."""
    folders: dict[Path, set[str]] = {}
    for path in out.rglob("*.dcm"):
        if path.is_file() and not path.name.startswith("."):
            pid = text_value(pydicom.dcmread(path, stop_before_pixels=True), "PatientID")
            folders.setdefault(path.parent, set()).add(pid)
    for folder, ids in folders.items():
        assert len(ids) == 1, (folder, ids)
    owners = [next(iter(ids)) for ids in folders.values()]
    assert len(owners) == len(set(owners)), folders


# --- hostile values -----------------------------------------------------------------------

WEIRD = ["/", "\\", ".", "\x00", "\t", "\n", ":", "*", "?", '"', "<", ">", "|", " ",
         "\u2028", "\u2029", "\u2215", "\u2044", "\uff0f", "\uff3c", "\u29f8", "\u202e", "é",
         "a", "B", "1", "_", "-", "~", "$"]
NAMED = ["", ".", "..", "...", ". .", "../", "../..", "..\\..", "/", "\\", "//", "a/../../b",
         "/etc/passwd", "C:\\Windows\\System32", "\\\\server\\share", "CON", "nul", "Aux.dcm",
         "COM1", "LPT¹", "CONIN$", "con.txt", " ", "x" * 64, "é" * 64, "\x00", "a\x00b",
         "\u2028", "..\u2215..\u2215x", "\uff0e\uff0e\uff0f", "a\\b", "a_b", "%2e%2e%2f",
         "~", "$HOME", "${HOME}"]


def hostile_text(outside: Path, max_size: int) -> st.SearchStrategy[str]:
    """Values aimed at leaving the folder, by name, by alphabet, or at ``outside``."""
    aimed = [str(outside), f"{outside}/x", "../outside/x", "../outside", "../../outside",
             f"..{os.sep}outside{os.sep}..{os.sep}x"]
    return st.one_of(
        st.sampled_from([v[:max_size] for v in NAMED + aimed]),
        st.text(alphabet=st.sampled_from(WEIRD), max_size=max_size),
        st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=max_size),
        st.lists(st.sampled_from(["..", ".", "", "x", str(outside)]), max_size=6).map(
            lambda parts: "/".join(parts)[:max_size]),
    )


def latin1(text: str) -> str:
    """As the wire can carry it: UI and CS values are single bytes, read as Latin-1."""
    return text.encode("latin-1", "replace").decode("latin-1")


def hostile_uid(outside: Path) -> st.SearchStrategy[str]:
    """What pynetdicom lets through as a UID: 1 to 64 characters, no backslash (a second
    value, which it refuses), trailing NULs and spaces being UI padding. Not one of only
    whitespace: pydicom reads it as empty, and pynetdicom then drops the C-STORE request
    without an answer (its "unexpected C-STORE service message"), writing nothing."""
    return hostile_text(outside, 64).map(
        lambda v: latin1(v).replace("\\", "/").rstrip("\x00 ")).filter(
        lambda v: 0 < len(v) <= 64 and v.strip().strip("\x00").strip() != "")


def hostile_modality(outside: Path) -> st.SearchStrategy[str]:
    return hostile_text(outside, 16).map(latin1)


def examples(long_mode: bool) -> int:
    return 2000 if long_mode else 100


@pytest.mark.parametrize("kind", ["file-daemon", "rtmove-receiver"])
def test_hostile_names_never_leave_the_output_folder(kind: str, tmp_path: Path,
                                                     long_mode: bool) -> None:
    with running(kind, tmp_path) as target, association(target) as assoc:
        statuses: dict[int, int] = {}

        @settings(max_examples=examples(long_mode), deadline=None, database=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture,
                                         HealthCheck.too_slow, HealthCheck.filter_too_much])
        @given(patient_id=hostile_text(target.outside, 64), sop_uid=hostile_uid(target.outside),
               modality=hostile_modality(target.outside))
        def check(patient_id: str, sop_uid: str, modality: str) -> None:
            before = snapshot(target.base)
            status = send_c_store(assoc, dataset(patient_id, sop_uid, modality),
                                  msg_id=sum(statuses.values()) % 65536 + 1)
            assert "Status" in status, "no C-STORE response"
            code = int(status.Status)
            statuses[code] = statuses.get(code, 0) + 1
            assert_contained(target, before)

        # The association's reactor held for the whole run: pynetdicom's own send_c_store
        # pauses it per request, and once in a few thousand it took the response first.
        with sending(assoc):
            check()
        assert_one_patient_per_folder(target.out)
        # Most objects were written: the test exercised writing, not only refusals.
        assert statuses.get(0, 0) >= examples(long_mode) // 2, statuses
        for path in target.out.rglob("*"):
            assert not path.is_symlink(), path
            assert path.resolve().is_relative_to(target.out.resolve()), path


@pytest.mark.parametrize("kind", ["file-daemon", "rtmove-receiver"])
def test_distinct_hostile_ids_get_distinct_folders(kind: str, tmp_path: Path) -> None:
    """IDs that a naive sanitiser would merge ("a/b", "a\\b", "a_b", "a:b", "a b", "A/B"
    folded, ".." and "_..", "CON" and "_CON") each get a folder of their own."""
    ids = ["a/b", "a\\b", "a_b", "a:b", "a*b", "a b", "a\u2215b", "a\uff0fb", "..", "_..",
           "CON", "_CON", "con", "", "_empty_", ".", "_", "a.", "a", "a ", "x" * 64,
           "x" * 63 + "y"]
    with running(kind, tmp_path) as target, association(target) as assoc:
        for n, pid in enumerate(ids):
            before = snapshot(target.base)
            status = assoc.send_c_store(dataset(pid, f"1.2.3.{n}", "CT"))
            assert int(status.Status) == 0, (pid, status)
            assert_contained(target, before)
        folders = [p for p in target.out.iterdir() if p.is_dir()]
        # pydicom drops trailing spaces of an LO: "a " is "a" once decoded.
        assert len(folders) == len(ids) - 1, sorted(p.name for p in folders)
        assert_one_patient_per_folder(target.out)


# --- symbolic links ----------------------------------------------------------------------------

def store_status(target: Target, pid: str, uid: str, modality: str = "CT") -> Dataset:
    with association(target) as assoc:
        status = assoc.send_c_store(dataset(pid, uid, modality))
        assert "Status" in status
        return status


@pytest.mark.parametrize("kind", ["file-daemon", "rtmove-receiver"])
def test_a_symlinked_patient_folder_is_not_written_through(
        kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with running(kind, tmp_path) as target:
        link = target.out / safe_name("P1")
        link.symlink_to(target.outside, target_is_directory=True)
        status = store_status(target, "P1", "1.2.3.4")
        assert int(status.Status) == PROCESSING_FAILURE, status
        assert "symbolic link" in str(status.get("ErrorComment", "")), status
        assert not any(target.outside.iterdir())  # nothing written through it
        assert link.is_symlink()  # and the link left alone
        assert any(r.levelno >= logging.ERROR and "symbolic link" in r.getMessage()
                   for r in caplog.records), caplog.text
        # Another patient still lands, and the same patient once the link is gone.
        assert int(store_status(target, "P2", "1.2.3.5").Status) == 0
        link.unlink()
        assert int(store_status(target, "P1", "1.2.3.4").Status) == 0
        assert (target.out / "P1" / "CT.1.2.3.4.dcm").is_file()


@pytest.mark.parametrize("kind", ["file-daemon", "rtmove-receiver"])
def test_a_symlinked_file_is_not_written_through_nor_read(kind: str, tmp_path: Path) -> None:
    """The file itself a link to a file outside: neither compared nor replaced through."""
    with running(kind, tmp_path) as target:
        secret = target.outside / "secret"
        secret.write_bytes(b"outside data")
        (target.out / "P1").mkdir()
        link = target.out / "P1" / "CT.1.2.3.4.dcm"
        link.symlink_to(secret)
        status = store_status(target, "P1", "1.2.3.4")
        assert int(status.Status) == PROCESSING_FAILURE, status
        assert secret.read_bytes() == b"outside data"
        assert link.is_symlink()


def test_an_output_folder_that_is_itself_a_link_is_used(tmp_path: Path) -> None:
    """A site may keep its output on another disk behind a link: the root may be one."""
    disk = tmp_path / "disk"
    disk.mkdir()
    (tmp_path / "site").mkdir()
    out = tmp_path / "site" / "out"
    out.symlink_to(disk, target_is_directory=True)
    site = make_site(tmp_path)
    for folders in (True, False):
        service = dataclasses.replace(site.file_daemon, output=out, patient_folders=folders)
        with FileDaemon(dataclasses.replace(site, file_daemon=service)) as fd:
            target = Target(fd.port, fd.ae_title, out, tmp_path / "site", tmp_path / "none")
            assert int(store_status(target, "P1", f"1.2.3.{int(folders)}").Status) == 0
    assert len(list(disk.rglob("*.dcm"))) == 2


def test_the_receiver_refuses_to_move_headers_through_a_link(tmp_path: Path) -> None:
    """``--dest self``: headers read while resolving move from a temporary folder into
    ``--out``; a patient folder there that is a link stops the run with a clear error."""
    outside, out = tmp_path / "outside", tmp_path / "out"
    outside.mkdir()
    out.mkdir()
    (out / "P1").symlink_to(outside, target_is_directory=True)
    with Receiver(RECEIVER_AE, free_port(), tmp_path / "headers", bind="127.0.0.1") as rcv:
        target = Target(rcv.port, RECEIVER_AE, tmp_path / "headers", tmp_path, outside)
        assert int(store_status(target, "P1", "1.2.3.4").Status) == 0
        with pytest.raises(LocalError, match="symbolic link"):
            rcv.redirect(out, {"1.2.3.4"})
    assert not any(outside.iterdir())


@pytest.mark.parametrize(("relative", "ok"), [
    ("P1/CT.1.dcm", True), ("CT.1.dcm", True), ("../x/CT.1.dcm", False), ("P1/../../x", False),
    (".", False)])
def test_check_inside_refuses_paths_that_are_not_below_the_root(
        tmp_path: Path, relative: str, ok: bool) -> None:
    if ok:
        check_inside(tmp_path, tmp_path / relative)
    else:
        with pytest.raises(UnsafePathError):
            check_inside(tmp_path, tmp_path / relative)
