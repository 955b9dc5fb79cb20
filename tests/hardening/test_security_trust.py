"""AE trust cannot be bypassed: title variants, another host, move destinations.

The rule (PS3.5 6.2, the AE value representation): leading and trailing SPACES (20H)
are not significant, so ``" DCMTK "`` IS the AE ``DCMTK`` and must be accepted. Nothing
else is dropped or folded: the standard defines no case folding (upper and lower case
are both in the Default Character Repertoire), and DCMTK compares titles exactly (see
:func:`test_dcmtk_itself_compares_titles_case_sensitively`), so ``dcmtk`` is another
AE. Control characters and backslash are not in the AE repertoire at all: ``DCMTK\\t``
or ``DCMTK\\x00`` is no title, not a padded ``DCMTK``.

An A-ASSOCIATE-RQ carries each title in a fixed 16-byte field, so a 17th character
never reaches the daemon there (DCMTK truncates to 16 before sending): the truncation
trick is tried where a title has a variable length, the C-MOVE Move Destination.

Every attempt goes over a real association (raw PDUs for what no toolkit would send,
pynetdicom and DCMTK for the rest) and must end rejected -- A-ASSOCIATE-RJ with
calling-AE-not-recognized (1, 1, 3) / called-AE-not-recognized (1, 1, 7), or an
A-ABORT for bytes pynetdicom cannot even decode (non-ASCII, NUL), or C-MOVE 0xA801 --
or, for pure space padding, accepted; and the daemon logs why.
"""

from __future__ import annotations

import logging
import re
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import pytest
from daemons import dcmtk, running_daemons, small_archive
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.dimse_primitives import C_MOVE
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove

from client.site import Site, TrustedAE
from emulators.archive import Archive
from emulators.db_daemon import DBDaemon
from emulators.file_daemon import FileDaemon
from emulators.peers import dcmqrscp
from emulators.sop_classes import VERIFICATION
from emulators.trust import raw_ae_problem, shown

# pydicom warns about each hostile value the tests encode on purpose.
pytestmark = [pytest.mark.interop, pytest.mark.filterwarnings("ignore::UserWarning")]

Tool = Callable[[str], str]
CLIENT = b"DCMTK"
# A 16-character trusted title: the longest a row can hold, for the truncation tricks.
LONG = TrustedAE("SIXTEENCHARTITLE", "127.0.0.1", 1)
# Trusted from the other loopback address only, for the other-host checks.
ELSEWHERE = TrustedAE("ELSEWHERE", "127.0.0.2", 1)
ASSOCIATE_RJ, ASSOCIATE_AC, ABORT = 0x03, 0x02, 0x07
CALLING_RJ, CALLED_RJ = (1, 1, 3), (1, 1, 7)
MOVE_DESTINATION_UNKNOWN = 0xA801


# --- a running pair of daemons, shared by the module --------------------------------------

@dataclass
class Pair:
    site: Site
    dbd: DBDaemon
    fd: FileDaemon
    study_uid: str

    def port(self, called: str) -> int:
        return self.dbd.port if called == self.dbd.ae_title else self.fd.port

    def stored(self) -> set[Path]:
        return {p for p in self.fd.output.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    archive: Archive = small_archive(patients=1, slices=2, size=16)
    try:
        study_uid = str(archive.index.query("SELECT study_uid FROM study")[0][0])
        with running_daemons(tmp_path_factory.mktemp("trust"), archive,
                             extra=(LONG, ELSEWHERE)) as (site, dbd, fd):
            yield Pair(site, dbd, fd, study_uid)
    finally:
        archive.close()


DAEMONS = ("VMSDBD1", "VMSFD")


# --- raw A-ASSOCIATE-RQ (PS3.8 9.3.2), for titles no toolkit sends ------------------------

def _item(kind: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(payload)) + payload


def field(title: bytes) -> bytes:
    """A title as its 16-byte PDU field: cut at 16 bytes, padded with spaces."""
    return title[:16].ljust(16, b" ")


def associate_rq(called: bytes, calling: bytes) -> bytes:
    """A-ASSOCIATE-RQ for Verification with the two 16-byte title fields as given."""
    context = _item(0x20, bytes([1, 0, 0, 0]) + _item(0x30, VERIFICATION.encode())
                    + _item(0x40, b"1.2.840.10008.1.2"))
    user = _item(0x50, _item(0x51, struct.pack(">I", 16384)) + _item(0x52, b"1.2.3.4"))
    body = (struct.pack(">HH", 1, 0) + field(called) + field(calling) + bytes(32)
            + _item(0x10, b"1.2.840.10008.3.1.1.1") + context + user)
    return struct.pack(">BBI", 0x01, 0, len(body)) + body


@dataclass(frozen=True)
class Outcome:
    pdu: int | None  # the answer's PDU type; None: the connection closed without one
    reason: tuple[int, int, int] | None = None  # A-ASSOCIATE-RJ (result, source, reason)

    @property
    def accepted(self) -> bool:
        return self.pdu == ASSOCIATE_AC


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def request(port: int, called: bytes, calling: bytes, source: str = "127.0.0.1") -> Outcome:
    """Send one raw A-ASSOCIATE-RQ from ``source``; what the daemon answered. An accepted
    association is aborted at once."""
    with socket.create_connection(("127.0.0.1", port), timeout=10,
                                  source_address=(source, 0)) as sock:
        sock.sendall(associate_rq(called, calling))
        header = _read(sock, 6)
        if len(header) < 6:
            return Outcome(None)
        body = _read(sock, int.from_bytes(header[2:6], "big"))
        if header[0] == ASSOCIATE_AC:
            sock.sendall(bytes([ABORT, 0, 0, 0, 0, 4, 0, 0, 0, 0]))
        if header[0] == ASSOCIATE_RJ:
            return Outcome(ASSOCIATE_RJ, (body[1], body[2], body[3]))
        return Outcome(header[0])


def rejections(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records if "rejects association" in r.getMessage()]


# --- hypothesis: mutations of the trusted titles ------------------------------------------

CONTROL = [bytes([b]) for b in [*range(0x20), 0x7F]]
ODD = [b"\\", b" ", b"\xa0", b"\xc3\xa9", b"\xd0\xa2", b"\xef\xbc\xa4"]  # NBSP, é, Cyrillic Т, Ｄ
PRINTABLE = [bytes([b]) for b in range(0x21, 0x7F)]
INSERTED = st.lists(st.sampled_from(CONTROL + ODD + PRINTABLE), min_size=1, max_size=12).map(
    b"".join)


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    """``base`` after one to three edits: case flips, insertions, deletions, replacements,
    padding with spaces or with anything else."""
    title = base
    for _ in range(draw(st.integers(1, 3))):
        edit = draw(st.sampled_from(["case", "insert", "delete", "replace", "pad", "wrap"]))
        at = draw(st.integers(0, len(title)))
        if edit == "case":
            flips = draw(st.lists(st.booleans(), min_size=len(title), max_size=len(title)))
            title = bytes(c ^ 0x20 if flip and chr(c).isalpha() else c
                          for c, flip in zip(title, flips, strict=True))
        elif edit == "insert":
            title = title[:at] + draw(INSERTED) + title[at:]
        elif edit == "delete" and title:
            title = title[:max(0, at - 1)] + title[at:]
        elif edit == "replace" and title:
            at = min(at, len(title) - 1)
            title = title[:at] + draw(st.sampled_from(CONTROL + ODD + PRINTABLE)) + title[at + 1:]
        elif edit == "pad":
            title = b" " * draw(st.integers(0, 5)) + title + b" " * draw(st.integers(0, 5))
        else:  # wrap in what is no padding: tabs, NULs, newlines, no-break spaces...
            title = draw(INSERTED) + title if draw(st.booleans()) else title + draw(INSERTED)
    return title


def examples(long_mode: bool) -> int:
    return 1500 if long_mode else 100


@pytest.mark.parametrize("called", DAEMONS)
def test_mutated_titles_are_rejected_unless_only_space_padded(
        called: str, pair: Pair, long_mode: bool, caplog: pytest.LogCaptureFixture) -> None:
    """Hypothesis: the trusted calling title (DCMTK) and the daemon's own called title,
    mutated; accepted exactly when the 16 bytes on the wire, spaces around them removed,
    are the title itself. Every rejection is RJ (1, 1, 3) / (1, 1, 7), or an A-ABORT when
    the bytes are not even ASCII text, and is logged with its reason."""
    caplog.set_level(logging.INFO)
    port, own = pair.port(called), called.encode()
    seen = {"accepted": 0, "rejected": 0, "aborted": 0}

    @settings(max_examples=examples(long_mode), deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow])
    @given(st.data())
    def check(data: st.DataObject) -> None:
        mutate_called = data.draw(st.booleans())
        calling = CLIENT if mutate_called else data.draw(mutated(CLIENT))
        called_title = data.draw(mutated(own)) if mutate_called else own
        wire = field(called_title) if mutate_called else field(calling)
        base = own if mutate_called else CLIENT
        before = len(caplog.records)
        outcome = request(port, called_title, calling)
        logged = rejections(caplog.records[before:])
        if wire.strip(b" ") == base:
            assert outcome.accepted, (called_title, calling, outcome)
            assert not logged, logged
            seen["accepted"] += 1
            return
        assert not outcome.accepted, (called_title, calling, outcome)
        expected = CALLED_RJ if mutate_called else CALLING_RJ
        if outcome.pdu == ASSOCIATE_RJ:
            assert outcome.reason == expected, (called_title, calling, outcome)
            seen["rejected"] += 1
        else:
            # Only bytes pynetdicom cannot decode may end without an A-ASSOCIATE-RJ.
            assert raw_ae_problem(wire) is not None, (called_title, calling, outcome)
            assert outcome.pdu in (ABORT, None), outcome
            seen["aborted"] += 1
        assert len(logged) == 1, (called_title, calling, logged)
        said = shown(wire) if raw_ae_problem(wire) else wire.strip(b" ").decode()
        assert said in logged[0], (said, logged)

    check()
    # The generator reached every kind of outcome, so each assertion above was exercised.
    assert all(seen.values()), seen


# --- named variants, over the raw PDU --------------------------------------------------------

VARIANTS: list[tuple[str, bytes, bool]] = [
    ("exact", b"DCMTK", True),
    ("space padding, both sides (PS3.5: not significant)", b"  DCMTK   ", True),
    ("lower case", b"dcmtk", False),
    ("mixed case", b"DcMtK", False),
    ("NUL padding", b"DCMTK\x00", False),
    ("NUL padding to 16 bytes", b"DCMTK" + b"\x00" * 11, False),
    ("trailing tab (pynetdicom strips it)", b"DCMTK\t", False),
    ("leading tab", b"\tDCMTK", False),
    ("trailing newline", b"DCMTK\n", False),
    ("carriage return inside", b"DCM\rTK", False),
    ("backslash: a second value", b"DCMTK\\OTHER", False),
    ("trailing text", b"DCMTKX", False),
    ("trailing text after a space", b"DCMTK ADMIN", False),
    ("Cyrillic Te look-alike (UTF-8)", "DCMТK".encode(), False),
    ("fullwidth look-alike (UTF-8)", "ＤＣＭＴＫ".encode(), False),
    ("no-break space padding (Latin-1)", b"DCMTK\xa0", False),
    ("DEL padding", b"DCMTK\x7f", False),
]


@pytest.mark.parametrize("called", DAEMONS)
@pytest.mark.parametrize(("what", "title", "accepted"), VARIANTS, ids=[v[0] for v in VARIANTS])
def test_calling_title_variants(called: str, what: str, title: bytes, accepted: bool,
                                pair: Pair, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    outcome = request(pair.port(called), called.encode(), title)
    if accepted:
        assert outcome.accepted, outcome
        assert any("accepts association" in r.getMessage() for r in caplog.records)
        return
    assert not outcome.accepted, outcome
    assert outcome.reason in (CALLING_RJ, None), outcome
    assert outcome.pdu == ASSOCIATE_RJ or raw_ae_problem(field(title)) is not None
    assert len(rejections(caplog.records)) == 1, caplog.text


@pytest.mark.parametrize("called", DAEMONS)
@pytest.mark.parametrize(("what", "title", "accepted"), VARIANTS, ids=[v[0] for v in VARIANTS])
def test_called_title_variants(called: str, what: str, title: bytes, accepted: bool,
                               pair: Pair, caplog: pytest.LogCaptureFixture) -> None:
    """The same variants applied to the daemon's own title (``DCMTK`` -> the daemon's)."""
    caplog.set_level(logging.INFO)
    variant = title.replace(b"DCMTK", called.encode()).replace(b"dcmtk", called.lower().encode())
    variant = variant.replace(b"DcMtK", called[:2].encode() + called[2:].lower().encode())
    variant = variant.replace("DCMТK".encode(), called[:-1].encode() + "К".encode())
    outcome = request(pair.port(called), variant, CLIENT)
    assert outcome.accepted == (field(variant).strip(b" ") == called.encode()), (variant, outcome)
    if not outcome.accepted:
        assert outcome.reason in (CALLED_RJ, None), outcome
        assert len(rejections(caplog.records)) == 1, caplog.text


def test_trusted_title_over_16_characters_is_cut_to_the_trusted_one_on_the_wire(
        pair: Pair) -> None:
    """The A-ASSOCIATE-RQ field holds 16 bytes: the 17th of ``SIXTEENCHARTITLEX`` cannot be
    sent, so what the daemon receives is the trusted ``SIXTEENCHARTITLE`` (accepted, as it
    must be); a 15-character prefix is another title (rejected)."""
    port = pair.port("VMSFD")
    assert request(port, b"VMSFD", b"SIXTEENCHARTITLEX").accepted
    assert request(port, b"VMSFD", b"SIXTEENCHARTITL").reason == CALLING_RJ


# --- another host ------------------------------------------------------------------------------

@pytest.mark.parametrize("called", DAEMONS)
def test_trusted_title_from_another_loopback_address_is_rejected(
        called: str, pair: Pair, caplog: pytest.LogCaptureFixture) -> None:
    """DCMTK is trusted from 127.0.0.1; the same title from 127.0.0.2 (Linux routes all of
    127/8 to lo) is as unknown as a stranger: RJ (1, 1, 3), logged with the address. The
    ELSEWHERE row, trusted from 127.0.0.2, shows the other address does get in."""
    caplog.set_level(logging.INFO)
    port = pair.port(called)
    assert request(port, called.encode(), CLIENT, source="127.0.0.2").reason == CALLING_RJ
    assert any("127.0.0.2" in line for line in rejections(caplog.records)), caplog.text
    assert request(port, called.encode(), b"ELSEWHERE", source="127.0.0.2").accepted
    assert request(port, called.encode(), b"ELSEWHERE").reason == CALLING_RJ
    # pynetdicom as the requestor, its socket bound to the other address.
    ae = AE(ae_title="DCMTK")
    ae.add_requested_context(VERIFICATION)
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title=called, bind_address=("127.0.0.2", 0))
        assert assoc.is_rejected
        assert (assoc.acceptor.primitive.result, assoc.acceptor.primitive.result_source,
                assoc.acceptor.primitive.diagnostic) == CALLING_RJ
    finally:
        ae.shutdown()


# --- pynetdicom and DCMTK as requestors ------------------------------------------------------

@pytest.mark.parametrize("called", DAEMONS)
def test_pynetdicom_requestor_variants(called: str, pair: Pair) -> None:
    """What pynetdicom lets a requestor send: case variants, extra text and space padding,
    on the calling and on the called side."""
    cases = [("DCMTK", called, True), (" DCMTK ", f"  {called} ", True),
             ("dcmtk", called, False), ("DCMTK2", called, False), ("DCMTK X", called, False),
             ("DCMTK", called.lower(), False), ("DCMTK", called + "X", False)]
    for calling, called_title, accepted in cases:
        ae = AE(ae_title=calling)
        ae.add_requested_context(VERIFICATION)
        try:
            assoc = ae.associate("127.0.0.1", pair.port(called), ae_title=called_title)
            assert assoc.is_established == accepted, (calling, called_title)
            if accepted:
                assert int(assoc.send_c_echo().Status) == 0
                assoc.release()
            else:
                rq = assoc.acceptor.primitive
                reason = CALLED_RJ if called_title.strip() != called else CALLING_RJ
                assert (rq.result, rq.result_source, rq.diagnostic) == reason
        finally:
            ae.shutdown()


def _rejected_by_dcmtk(done: subprocess.CompletedProcess[str], calling: bool) -> bool:
    reason = "Calling AE Title Not Recognized" if calling else "Called AE Title Not Recognized"
    return done.returncode != 0 and (("Association Rejected" in done.stdout
                                     and reason in done.stdout)
                                     or "Association Aborted" in done.stdout
                                     or "Peer aborted Association" in done.stdout)


DCMTK_TITLES = [(" DCMTK ", True), ("dcmtk", False), ("DCMTK\t", False), ("DC\\MTK", False),
                ("DCMTK-EXTRA", False), ("DCMТK", False), ("\tDCMTK", False)]


@pytest.mark.parametrize("called", DAEMONS)
def test_dcmtk_echoscu_variants(called: str, pair: Pair, require_tool: Tool) -> None:
    for title, accepted in DCMTK_TITLES:
        done = dcmtk(require_tool("echoscu"), "-aet", title, "-aec", called, "127.0.0.1",
                     str(pair.port(called)), timeout=30)
        if accepted:
            assert done.returncode == 0, (title, done.stdout)
        else:
            assert _rejected_by_dcmtk(done, calling=True), (title, done.stdout)
        variant = title.replace("DCMTK", called).replace("dcmtk", called.lower())
        done = dcmtk(require_tool("echoscu"), "-aet", "DCMTK", "-aec", variant, "127.0.0.1",
                     str(pair.port(called)), timeout=30)
        if accepted:
            assert done.returncode == 0, (variant, done.stdout)
        else:
            assert _rejected_by_dcmtk(done, calling=False), (variant, done.stdout)


def test_dcmtk_findscu_variants(pair: Pair, require_tool: Tool) -> None:
    """A C-FIND needs an association first: variants of DCMTK never get one."""
    for title, accepted in DCMTK_TITLES:
        done = dcmtk(require_tool("findscu"), "-S", "-aet", title, "-aec", "VMSDBD1",
                     "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID",
                     "127.0.0.1", str(pair.dbd.port), timeout=30)
        if accepted:
            assert done.returncode == 0, (title, done.stdout)
        else:
            assert _rejected_by_dcmtk(done, calling=True), (title, done.stdout)


def test_dcmtk_itself_compares_titles_case_sensitively(tmp_path: Path,
                                                       require_tool: Tool) -> None:
    """The reference: dcmqrscp, knowing only DCMTK as caller and serving DCMQR, rejects
    ``dcmtk`` as calling and ``dcmqr`` as called AE title (it gives "called AE title not
    recognized" for both: a caller not allowed for a storage area is reported so)."""
    require_tool("dcmqrscp")
    with dcmqrscp(tmp_path, "DCMQR", {"DCMTK": ("127.0.0.1", 1)}, "DCMTK") as server:
        for calling, called in (("dcmtk", "DCMQR"), ("DCMTK", "dcmqr")):
            done = dcmtk(require_tool("echoscu"), "-aet", calling, "-aec", called,
                         "127.0.0.1", str(server.port), timeout=30)
            assert done.returncode != 0, done.stdout
            assert "Association Rejected" in done.stdout, done.stdout
        done = dcmtk(require_tool("echoscu"), "-aet", "DCMTK", "-aec", "DCMQR", "127.0.0.1",
                     str(server.port), timeout=30)
        assert done.returncode == 0, done.stdout


# --- the C-MOVE destination ---------------------------------------------------------------------

def move_status(port: int, destination: str, study_uid: str) -> tuple[int | None, str]:
    """A C-MOVE from DCMTK to ``destination`` exactly as given (pynetdicom validates
    a Move Destination, so the primitive's field is set behind its back); the final
    status and Error Comment, or None when the association ended without one."""
    ae = AE(ae_title="DCMTK")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", port, ae_title="VMSDBD1")
    try:
        assert assoc.is_established
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = study_uid
        context = assoc.accepted_contexts[0]
        req = C_MOVE()
        req.MessageID = 1
        req.AffectedSOPClassUID = StudyRootQueryRetrieveInformationModelMove
        req.Priority = 2
        req._move_destination = destination  # type: ignore[attr-defined]
        req.Identifier = BytesIO(encode(identifier, True, True))
        # As send_c_move does: hold the association's reactor, or it takes the responses.
        assoc._reactor_checkpoint.clear()
        while not assoc._is_paused:
            time.sleep(0.001)
        try:
            assoc.dimse.send_msg(req, context.context_id)
            while True:
                _cx, rsp = assoc.dimse.get_msg(block=True)
                if rsp is None:
                    return None, ""
                status = int(rsp.Status)
                if status not in (0xFF00, 0xFF01):
                    return status, str(getattr(rsp, "ErrorComment", "") or "")
        finally:
            assoc._reactor_checkpoint.set()
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


DESTINATIONS: list[tuple[str, str, bool]] = [
    ("exact", "VMSFD", True),
    ("space padding (PS3.5: not significant)", " VMSFD  ", True),
    ("lower case", "vmsfd", False),
    ("trailing tab (pydicom strips it)", "VMSFD\t", False),
    ("leading newline", "\nVMSFD", False),
    ("NUL padding", "VMSFD\x00", False),
    ("backslash: pydicom takes the first value", "VMSFD\\ELSEWHERE", False),
    ("trailing text", "VMSFDX", False),
    ("17 characters, the first 16 trusted", "SIXTEENCHARTITLEX", False),
    ("Latin-1 look-alike (Eth for D)", "VMSFÐ", False),
]


@pytest.mark.parametrize(("what", "destination", "sent"), DESTINATIONS,
                         ids=[d[0] for d in DESTINATIONS])
def test_move_destination_variants(what: str, destination: str, sent: bool, pair: Pair,
                                   caplog: pytest.LogCaptureFixture) -> None:
    """A destination that is the trusted VMSFD (spaces around allowed) gets the study; any
    other spelling is 0xA801 move destination unknown, nothing written, and logged."""
    caplog.set_level(logging.INFO)
    before, received = pair.stored(), pair.fd.stored
    status, comment = move_status(pair.dbd.port, destination, pair.study_uid)
    if sent:
        assert status == 0x0000, (status, comment)
        assert pair.fd.stored > received, "the File Daemon received nothing"
        return
    assert status == MOVE_DESTINATION_UNKNOWN, (status, comment)
    assert "unknown" in comment
    assert pair.stored() == before
    assert pair.fd.stored == received
    raw = destination.encode("latin-1")  # as pydicom writes an AE value
    if raw_ae_problem(raw) is not None:
        assert any("move destination" in r.getMessage() and shown(raw)
                   in r.getMessage() for r in caplog.records), caplog.text


@pytest.mark.parametrize("destination", ["vmsfd", "VMSFDX", "VMSFD\\ELSEWHERE", " VMSFD "])
def test_dcmtk_movescu_destination_variants(destination: str, pair: Pair,
                                            require_tool: Tool) -> None:
    """movescu sends these as given (it turns a tab into a space, which is then padding,
    so control characters are tried with hand-made requests above)."""
    before, received = pair.stored(), pair.fd.stored
    done = dcmtk(require_tool("movescu"), "-S", "-d", "-aet", "DCMTK", "-aec", "VMSDBD1",
                 "-aem", destination, "-k", "QueryRetrieveLevel=STUDY",
                 "-k", f"StudyInstanceUID={pair.study_uid}", "127.0.0.1", str(pair.dbd.port),
                 timeout=60)
    statuses = re.findall(r"^D: DIMSE Status *: (0x[0-9a-f]{4})", done.stdout, re.MULTILINE)
    assert statuses, done.stdout
    if destination.strip(" ") == "VMSFD":
        assert statuses[-1] == "0x0000", done.stdout
        assert pair.fd.stored > received
    else:
        assert statuses[-1] == "0xa801", done.stdout
        assert pair.stored() == before
        assert pair.fd.stored == received
