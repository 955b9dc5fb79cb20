"""The daemons' trust rules as DCMTK sees them: who may associate with the DB Daemon and
the File Daemon, and where the DB Daemon refuses to move; each daemon keeps serving after."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from daemons import dcmtk, make_site, running_daemons, small_archive
from peers import free_port
from pynetdicom import AE

from client.site import TrustedAE
from emulators.archive import Archive
from emulators.file_daemon import FileDaemon
from emulators.sop_classes import VERIFICATION

pytestmark = pytest.mark.interop

Tool = Callable[[str], str]
DAEMONS = ("VMSDBD1", "VMSFD")  # the called AE title of each daemon under test
# A trusted row the tests can always echo with, from where they connect.
PROBE = TrustedAE("PROBE", "127.0.0.1", 1)
CALLING_REJECTED = ("Association Rejected", "Result: Rejected Permanent, Source: Service User",
                    "Reason: Calling AE Title Not Recognized")


@pytest.fixture(scope="module")
def archive() -> Iterator[Archive]:
    archive = small_archive(patients=3, slices=4, size=16)
    yield archive
    archive.close()


@contextmanager
def daemon(called: str, tmp: Path, archive: Archive, *,
           trusted: tuple[TrustedAE, ...] | None = None,
           permit_trusted_only: bool = True) -> Iterator[int]:
    """The daemon called ``called`` listening (its port), its service's trusted map and
    permit flag as given; stopped after the block."""
    if called == "VMSDBD1":
        with running_daemons(tmp, archive, trusted=trusted,
                             permit_trusted_only=permit_trusted_only) as (_site, dbd, _fd):
            yield dbd.port
        return
    site = make_site(tmp)
    service = dataclasses.replace(site.file_daemon, trusted=trusted,
                                  permit_trusted_only=permit_trusted_only)
    with FileDaemon(dataclasses.replace(site, file_daemon=service)) as fd:
        yield fd.port


def echo(tool: Tool, port: int, calling: str, called: str) -> subprocess.CompletedProcess[str]:
    return dcmtk(tool("echoscu"), "-aet", calling, "-aec", called, "127.0.0.1", str(port))


def assert_serving(tool: Tool, port: int, called: str, calling: str = "DCMTK") -> None:
    """The daemon still accepts and answers a C-ECHO from a trusted AE."""
    done = echo(tool, port, calling, called)
    assert done.returncode == 0, done.stdout
    assert "Association Rejected" not in done.stdout


def assert_rejected(done: subprocess.CompletedProcess[str], *lines: str) -> None:
    assert done.returncode != 0, done.stdout
    for line in lines:
        assert line in done.stdout, done.stdout


@pytest.mark.parametrize("called", DAEMONS)
def test_trusted_ae_echoes(called: str, tmp_path: Path, archive: Archive,
                           require_tool: Tool) -> None:
    """DCMTK, trusted from 127.0.0.1 by default, gets its C-ECHO answered, twice in a row."""
    with daemon(called, tmp_path, archive) as port:
        first = echo(require_tool, port, "DCMTK", called)
        assert first.returncode == 0, first.stdout
        assert first.stdout.strip() == ""
        assert_serving(require_tool, port, called)


@pytest.mark.parametrize("called", DAEMONS)
def test_untrusted_calling_ae_is_rejected(called: str, tmp_path: Path, archive: Archive,
                                          require_tool: Tool) -> None:
    """An AE title missing from the trusted map gets A-ASSOCIATE-RJ (1, 1, 3)."""
    with daemon(called, tmp_path, archive) as port:
        assert_rejected(echo(require_tool, port, "STRANGER", called), *CALLING_REJECTED)
        assert_serving(require_tool, port, called)


@pytest.mark.parametrize("called", DAEMONS)
def test_trusted_title_from_another_host_is_rejected(called: str, tmp_path: Path,
                                                     archive: Archive,
                                                     require_tool: Tool) -> None:
    """DCMTK trusted only from 127.0.0.2 but connecting from 127.0.0.1 is as unknown as a
    title off the list (1, 1, 3); a title trusted from 127.0.0.1 still echoes."""
    trusted = (TrustedAE("DCMTK", "127.0.0.2", 5680), PROBE)
    with daemon(called, tmp_path, archive, trusted=trusted) as port:
        assert_rejected(echo(require_tool, port, "DCMTK", called), *CALLING_REJECTED)
        assert_serving(require_tool, port, called, calling=PROBE.ae_title)


@pytest.mark.parametrize("called", DAEMONS)
def test_wrong_called_ae_is_rejected(called: str, tmp_path: Path, archive: Archive,
                                     require_tool: Tool) -> None:
    """A trusted caller naming another called AE title gets A-ASSOCIATE-RJ (1, 1, 7)."""
    with daemon(called, tmp_path, archive) as port:
        done = echo(require_tool, port, "DCMTK", "NOT_" + called)
        assert_rejected(done, "Association Rejected",
                        "Result: Rejected Permanent, Source: Service User",
                        "Reason: Called AE Title Not Recognized")
        assert "Calling AE Title Not Recognized" not in done.stdout
        assert_serving(require_tool, port, called)


@pytest.mark.parametrize("called", DAEMONS)
def test_permit_trusted_only_off_accepts_unknown_callers(called: str, tmp_path: Path,
                                                         archive: Archive,
                                                         require_tool: Tool) -> None:
    """With permit_trusted_only=False an unknown calling AE echoes; a wrong called AE
    title is still rejected."""
    with daemon(called, tmp_path, archive, permit_trusted_only=False) as port:
        stranger = echo(require_tool, port, "STRANGER", called)
        assert stranger.returncode == 0, stranger.stdout
        assert "Association Rejected" not in stranger.stdout
        assert_rejected(echo(require_tool, port, "STRANGER", "NOT_" + called),
                        "Reason: Called AE Title Not Recognized")
        assert_serving(require_tool, port, called)


def movescu(tool: Tool, port: int, destination: str,
            study_uid: str) -> subprocess.CompletedProcess[str]:
    return dcmtk(tool("movescu"), "-S", "-d", "-aet", "DCMTK", "-aec", "VMSDBD1",
                 "-aem", destination, "-k", "QueryRetrieveLevel=STUDY",
                 "-k", f"StudyInstanceUID={study_uid}", "127.0.0.1", str(port))


def dimse(output: str, field: str) -> str:
    """The first word of a field of the C-MOVE-RSP movescu -d prints."""
    match = re.search(rf"^D: {field} *: ([^\s:]+)", output, re.MULTILINE)
    assert match is not None, output
    return match.group(1)


def error_comment(output: str) -> str:
    match = re.search(r"^D: \(0000,0902\) LO \[(.*?)\]", output, re.MULTILINE)
    assert match is not None, output
    return match.group(1)


def test_move_to_unknown_destination_is_refused(tmp_path: Path, archive: Archive,
                                                require_tool: Tool) -> None:
    """C-MOVE to an AE not on the map: 0xA801 with an Error Comment naming it, no
    sub-operations, nothing written by the File Daemon."""
    study_uid = archive.index.query("SELECT study_uid FROM study")[0][0]
    with running_daemons(tmp_path, archive) as (_site, dbd, fd):
        done = movescu(require_tool, dbd.port, "NOWHERE", study_uid)
        assert "Refused: MoveDestinationUnknown" in done.stdout, done.stdout
        assert dimse(done.stdout, "DIMSE Status") == "0xa801"
        assert "NOWHERE" in error_comment(done.stdout)
        assert dimse(done.stdout, "Completed Suboperations") == "none"
        assert not any(fd.output.rglob("*.dcm"))
        assert_serving(require_tool, dbd.port, "VMSDBD1")


def test_move_to_unreachable_destination_fails_every_suboperation(
        tmp_path: Path, archive: Archive, require_tool: Tool) -> None:
    """C-MOVE to a trusted AE nobody listens for: 0xA702, every instance of the study
    failed and listed in FailedSOPInstanceUIDList, the comment naming the destination."""
    study_uid = archive.index.query(
        "SELECT st.study_uid FROM study st JOIN series se ON se.study_pk = st.pk"
        " GROUP BY st.pk ORDER BY count(*) DESC")[0][0]
    instances = sorted(str(r[0]) for r in archive.index.query(
        "SELECT i.sop_uid FROM instance_v i JOIN series se ON se.pk = i.series_pk"
        " JOIN study st ON st.pk = se.study_pk WHERE st.study_uid = ?", (study_uid,)))
    dead = TrustedAE("DEADEND", "127.0.0.1", free_port())
    with running_daemons(tmp_path, archive, extra=(dead,)) as (_site, dbd, fd):
        done = movescu(require_tool, dbd.port, dead.ae_title, study_uid)
        assert done.returncode != 0, done.stdout
        assert "Refused: OutOfResourcesSubOperations" in done.stdout, done.stdout
        assert dimse(done.stdout, "DIMSE Status") == "0xa702"
        assert dimse(done.stdout, "Completed Suboperations") == "0"
        assert dimse(done.stdout, "Failed Suboperations") == str(len(instances))
        failed = re.search(r"^D: \(0008,0058\) UI \[(.*?)\]", done.stdout, re.MULTILINE)
        assert failed is not None, done.stdout
        assert sorted(failed.group(1).split("\\")) == instances
        assert "DEADEND" in error_comment(done.stdout)
        assert not any(fd.output.rglob("*.dcm"))
        assert_serving(require_tool, dbd.port, "VMSDBD1")


# --- the implementation class UID filter ---------------------------------------------------

def dcmtk_implementation_uid(tool: Tool) -> str:
    """The Implementation Class UID echoscu sends, as ``echoscu -d`` prints it (DCMTK 3.6.7:
    1.2.276.0.7230010.3.0.3.6.7); asked of a port nobody listens on."""
    done = dcmtk(tool("echoscu"), "-d", "-to", "5", "127.0.0.1", str(free_port()))
    match = re.search(r"Our Implementation Class UID: *(\S+)", done.stdout)
    assert match is not None, done.stdout
    return match.group(1)


@pytest.mark.parametrize("called", DAEMONS)
def test_implementation_uid_filter(called: str, tmp_path: Path, archive: Archive,
                                   require_tool: Tool) -> None:
    """A trusted row requiring another implementation class UID rejects DCMTK (1, 1, 3);
    requiring DCMTK's own admits it."""
    ours = dcmtk_implementation_uid(require_tool)
    other = TrustedAE("DCMTK", "127.0.0.1", 5680, implementation_uid="1.2.3.4")
    with daemon(called, tmp_path / "other", archive, trusted=(other, PROBE)) as port:
        assert_rejected(echo(require_tool, port, "DCMTK", called), *CALLING_REJECTED)
        assert_serving(require_tool, port, called, calling=PROBE.ae_title)
    own = dataclasses.replace(other, implementation_uid=ours)
    with daemon(called, tmp_path / "own", archive, trusted=(own, PROBE)) as port:
        assert_serving(require_tool, port, called)
        assert_serving(require_tool, port, called, calling=PROBE.ae_title)


# --- the association limit -------------------------------------------------------------------

def test_max_associations_rejects_transiently_until_one_is_released(
        tmp_path: Path, archive: Archive, require_tool: Tool) -> None:
    """With max_associations=1 and one association held, echoscu gets A-ASSOCIATE-RJ
    (2, 3, 2): rejected-transient, local limit exceeded; once released, it echoes."""
    ae = AE(ae_title="DCMTK")
    ae.add_requested_context(VERIFICATION)
    try:
        with running_daemons(tmp_path, archive, max_associations=1) as (_site, dbd, _fd):
            held = ae.associate("127.0.0.1", dbd.port, ae_title="VMSDBD1")
            try:
                assert held.is_established
                assert_rejected(echo(require_tool, dbd.port, "DCMTK", "VMSDBD1"),
                                "Association Rejected", "Result: Rejected Transient",
                                "Reason: Local Limit Exceeded")
                assert int(held.send_c_echo().Status) == 0  # the held one still works
            finally:
                held.release()
            assert not held.is_established
            deadline = time.monotonic() + 2.0
            while dbd.ae.active_associations and time.monotonic() < deadline:
                time.sleep(0.02)
            assert dbd.ae.active_associations == []
            assert_serving(require_tool, dbd.port, "VMSDBD1")
    finally:
        ae.shutdown()
