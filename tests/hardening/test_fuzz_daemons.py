"""Malformed input to both daemons over real sockets: every case must end in a defined
DICOM answer within the daemons' timeouts, and the daemons must come out unharmed.

A hostile or broken peer can send anything: bytes that are no PDU, PDUs that lie about
their length, associations asking for nonsense, DIMSE messages that are framed wrong or
carry identifiers pydicom chokes on. PS3.8 and PS3.7 say what the daemon answers to each
(A-ASSOCIATE-RJ, A-ABORT, a failure status, or closing the connection); a hang, a
traceback in a daemon thread, a leaked thread, socket or temporary file is a bug.

One daemon pair serves the whole module, with 2 s timeouts. CI runs a few hundred
derandomized cases; ``pytest --long`` (or DBDSIM_LONG=1) runs over 10,000 random ones.
Figures: ``hypothesis.event`` per outcome, and summary lines at the end of the run
(cases and outcomes per test, by status or reason; also ``fuzz-summary.json`` in
pytest's base temp folder).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pytest
from daemons import make_site, small_archive
from hardening.fuzz_pdus import (
    ABORT,
    C_CANCEL_RQ,
    CT_STORAGE,
    RESPONSE_BIT,
    STUDY_FIND,
    VERIFICATION,
    AssocCase,
    AssociateRQ,
    Context,
    DimseCase,
    Framing,
    Kind,
    Outcome,
    RawCase,
    Response,
    SplitCase,
    StoreCase,
    Tally,
    Timing,
    associate_mutation,
    baseline_rq,
    command_set,
    dimse_case,
    echo_rq,
    element,
    established_case,
    find_cases,
    find_rq,
    frame,
    garbage_first,
    message,
    move_cases,
    move_rq,
    oversized_length,
    pdu,
    raw_case,
    split_cases,
    store_cases,
    store_rq,
    stray_pdus,
    text,
    truncated_pdu,
    ui,
    unknown_pdu_type,
    us,
)
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st

from client.files import TEMP_PREFIX, TEMP_SUFFIX, part10_body
from client.site import Site, Timeouts
from emulators.db_daemon import DBDaemon
from emulators.file_daemon import FileDaemon
from emulators.serve import serving

TIMEOUT = 2.0  # the daemons' ACSE, DIMSE and network timeouts, seconds
TIMING = Timing(network=TIMEOUT, margin=3.0)  # later than timeout + margin: a hang
ECHO_EVERY = 25  # cases between C-ECHO checks of both daemons
STOP_WAIT = 10.0  # seconds for threads and sockets to go after the daemons stop

# pynetdicom logs these with a traceback on its normal paths for bad peer input (the
# connection ends mid-PDU: Evt17; an undecodable PDU or DIMSE message: Evt19 and an
# A-ABORT; an AE title that is not ASCII; a move destination that does not listen).
BENIGN_LOGGED = (
    "Connection closed before the entire PDU was received",
    "Unable to decode the received PDU data",
    "Received an invalid DIMSE message",
    "Association request failed: unable to connect to remote",
    "TCP Initialisation Error",
)
BENIGN_EXCEPTIONS = (UnicodeDecodeError,)
# pynetdicom's own handlers that only build debug log lines (bound whatever the log
# level); evt.trigger catches what they raise on odd PDUs, and nothing else changes.
BENIGN_HANDLER = "event handler 'standard_"

# pydicom warns about every invalid value it decodes; the fuzzer sends them on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# -- the daemons under test -------------------------------------------------------------------


def fuzz_site(tmp: Path) -> Site:
    """The test site with short timeouts, so a daemon that waits answers in seconds."""
    site = make_site(tmp)
    timeouts = Timeouts(acse=TIMEOUT, dimse=TIMEOUT, network=TIMEOUT)
    return dataclasses.replace(
        site,
        db_daemon=dataclasses.replace(site.db_daemon, timeouts=timeouts, max_associations=20),
        file_daemon=dataclasses.replace(site.file_daemon, timeouts=timeouts,
                                        max_associations=20))


class Watch(logging.Handler):
    """Tracebacks in daemon threads: uncaught (threading.excepthook) or logged by
    pynetdicom and dbdsim while handling a request (a crash they survived)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.problems: list[str] = []
        # The error logged last on each thread: pynetdicom logs what it was doing, then
        # the traceback, as two records.
        self._last: dict[int | None, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.exc_info is None or record.exc_info[0] is None:
            self._last[record.thread] = (message, record.created)
            return
        context, logged = self._last.pop(record.thread, ("", 0.0))
        if record.created - logged > 0.5:  # not this traceback's (thread ids are reused)
            context = ""
        if context.startswith(BENIGN_LOGGED) or message.startswith(BENIGN_LOGGED) \
                or BENIGN_HANDLER in context \
                or issubclass(record.exc_info[0], BENIGN_EXCEPTIONS):
            return
        text = "".join(traceback.format_exception(*record.exc_info))
        with self._lock:
            self.problems.append(f"[{record.name}] {context} / {message}\n{text}")

    def excepthook(self, args: threading.ExceptHookArgs) -> None:
        text = "".join(traceback.format_exception(args.exc_type, args.exc_value,
                                                  args.exc_traceback))
        name = args.thread.name if args.thread is not None else "?"
        with self._lock:
            self.problems.append(f"uncaught in thread {name}:\n{text}")

    def take(self) -> list[str]:
        with self._lock:
            problems, self.problems = self.problems, []
        return problems


@dataclass
class Stage:
    """Both daemons, what the fuzzer needs to know about them, and what it counted."""

    site: Site
    dbd: DBDaemon
    fd: FileDaemon
    fd_out: Path
    known: dict[str, list[str]]
    threads_before: set[threading.Thread]
    sockets_before: int
    summary_path: Path
    watch: Watch = field(default_factory=Watch)
    tally: Tally = field(default_factory=Tally)
    stored: dict[str, bytes] = field(default_factory=dict)  # SOP UID -> body, on success
    since_echo: int = 0
    finished: bool = False

    def known_uid(self, kind: str) -> bytes:
        uids = self.known.get(kind) or ["1.2.3"]
        return uids[len(self.stored) % len(uids)].encode()


def socket_count() -> int:
    """Sockets this process holds open (the daemons run in it)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            continue
    return count


def _known_uids(dbd: DBDaemon) -> dict[str, list[str]]:
    index = dbd.archive.index
    return {
        "study": [r[0] for r in index.query("SELECT study_uid FROM study LIMIT 3")],
        "series": [r[0] for r in index.query("SELECT series_uid FROM series LIMIT 3")],
        "sop": [r[0] for r in index.query("SELECT sop_uid FROM instance LIMIT 3")],
    }


class _Summary:
    """Prints the module's figures in pytest's terminal summary, whatever ``-s`` says."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        for line in self.lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory,
          pytestconfig: pytest.Config) -> Iterator[Stage]:
    tmp = tmp_path_factory.mktemp("fuzz")
    summary = _Summary()
    pytestconfig.pluginmanager.register(summary, "dbdsim-fuzz-summary")
    gc.collect()
    threads_before = set(threading.enumerate())
    sockets_before = socket_count()
    site = fuzz_site(tmp)
    archive = small_archive(patients=2, slices=3, size=16)
    with serving(site, archive) as (dbd, fd):
        result = Stage(site, dbd, fd, site.file_daemon.output, _known_uids(dbd),
                       threads_before, sockets_before,
                       tmp_path_factory.getbasetemp() / "fuzz-summary.json")
        loggers = [logging.getLogger(name) for name in ("pynetdicom", "dbdsim")]
        for logger in loggers:
            logger.addHandler(result.watch)
        try:
            yield result
            if not result.finished:  # the final test did not run (-k): check here instead
                _assert_clean(result)
        finally:
            for logger in loggers:
                logger.removeHandler(result.watch)
            summary.lines.extend(_summary_lines(result))
    archive.close()


@contextmanager
def watching(stage: Stage) -> Iterator[None]:
    """Uncaught thread exceptions go to the stage's watch for the test's duration.

    Installed inside the test body: pytest sets its own threading.excepthook around
    each test call, which would replace one installed by a fixture.
    """
    previous = threading.excepthook
    threading.excepthook = stage.watch.excepthook
    try:
        yield
    finally:
        threading.excepthook = previous


def fuzz_settings(long_mode: bool, ci: int, long: int, *, shrink: bool = True) -> settings:
    """CI: ``ci`` reproducible examples; long mode: ``long`` random ones.

    Only long mode shrinks a failure: an example that waits for a daemon timeout makes
    shrinking take minutes (hypothesis stops at five), too long for CI.
    """
    shrink = shrink and long_mode
    phases = list(Phase) if shrink else [p for p in Phase if p is not Phase.shrink]
    return settings(max_examples=long if long_mode else ci, deadline=None, phases=phases,
                    derandomize=not long_mode, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much,
                                           HealthCheck.function_scoped_fixture])


# -- judging one case ---------------------------------------------------------------------------


def judge(stage: Stage, test: str, family: str, outcome: Outcome,
          allowed: frozenset[Kind], what: object) -> None:
    """Count the outcome; fail on a disallowed one, a daemon traceback, or a dead daemon."""
    stage.tally.add(test, outcome)
    event(f"{family} -> {outcome.label}")
    problems = stage.watch.take()
    stage.since_echo += 1
    unexpected = outcome.kind not in allowed or bool(problems)
    if unexpected or stage.since_echo >= ECHO_EVERY:
        stage.since_echo = 0
        echoes = echo_both(stage)
        problems += [f"{name} no longer answers C-ECHO: {o.label}"
                     for name, o in echoes.items() if o.kind is not Kind.RESPONSE or o.status]
    assert outcome.kind in allowed, \
        f"{family}: {outcome.label} is not one of {sorted(map(str, allowed))}\ncase: {what!r}"
    assert not problems, f"{family}: {what!r}\n" + "\n".join(problems)


def echo_both(stage: Stage) -> dict[str, Outcome]:
    """A C-ECHO from the trusted client AE to each daemon."""
    out = {}
    for daemon in (stage.dbd, stage.fd):
        rq = baseline_rq(daemon.ae_title.encode())
        out[daemon.name] = dimse_case(daemon.port, rq, message(1, command_set(echo_rq())),
                                      TIMING, expect_response=True)
    return out


RAW_ALLOWED = frozenset({Kind.ABORTED, Kind.CLOSED, Kind.REJECTED})


def run_raw(stage: Stage, test: str, case: RawCase, daemon: str) -> None:
    port = stage.dbd.port if daemon == "db" else stage.fd.port
    outcome = raw_case(port, case.chunks, case.end, TIMING)
    judge(stage, test, f"{daemon}:{case.family}:{case.end}", outcome, RAW_ALLOWED, case)


# -- the tests --------------------------------------------------------------------------------


def test_garbage_before_association(stage: Stage, long_mode: bool) -> None:
    """Bytes that are no PDU, as the first thing on a connection: A-ABORT or close."""

    @fuzz_settings(long_mode, 50, 1200)
    @given(case=garbage_first(), daemon=st.sampled_from(["db", "fd"]))
    @example(case=RawCase("garbage", (b"GET / HTTP/1.1\r\n\r\n",), "half-close"), daemon="db")
    @example(case=RawCase("garbage", (b"\x16\x03\x01\x02\x00\x01\x00\x01",), "close"),
             daemon="fd")  # a TLS ClientHello
    def run(case: RawCase, daemon: str) -> None:
        run_raw(stage, "garbage", case, daemon)

    with watching(stage):
        run()


def test_unknown_pdu_types(stage: Stage, long_mode: bool) -> None:
    """PDU types 0x00 and 0x08-0xFF (PS3.8 9.3: undefined): an invalid PDU, A-ABORT."""

    @fuzz_settings(long_mode, 30, 800)
    @given(case=unknown_pdu_type(), daemon=st.sampled_from(["db", "fd"]))
    def run(case: RawCase, daemon: str) -> None:
        run_raw(stage, "unknown-type", case, daemon)

    with watching(stage):
        run()


def test_truncated_and_oversized_pdus(stage: Stage, long_mode: bool) -> None:
    """Length fields larger than the bytes sent (up to 0xFFFFFFFF), then the peer stops
    sending: the daemon reads what comes, never allocates what the length claims."""

    @fuzz_settings(long_mode, 40, 1200)
    @given(data=st.data(), daemon=st.sampled_from(["db", "fd"]))
    def run(data: st.DataObject, daemon: str) -> None:
        called = (stage.dbd if daemon == "db" else stage.fd).ae_title.encode()
        case = data.draw(st.one_of(truncated_pdu(called), oversized_length(called)))
        run_raw(stage, "truncated", case, daemon)

    with watching(stage):
        run()


def test_connections_held_open(stage: Stage, long_mode: bool) -> None:
    """Partial PDUs (and nothing at all) on connections the peer keeps open: the daemon
    ends each within its timeouts. Run side by side, since each takes a timeout."""

    def batch(called: bytes) -> st.SearchStrategy[list[RawCase]]:
        one = st.one_of(truncated_pdu(called, ("hold",)), oversized_length(called, ("hold",)),
                        unknown_pdu_type(("hold",)),
                        st.just(RawCase("silent", (), "hold")))
        return st.lists(one, min_size=1, max_size=8)

    @fuzz_settings(long_mode, 3, 45, shrink=False)  # each example waits a timeout
    @given(data=st.data(), daemon=st.sampled_from(["db", "fd"]))
    def run(data: st.DataObject, daemon: str) -> None:
        server = stage.dbd if daemon == "db" else stage.fd
        cases = data.draw(batch(server.ae_title.encode()))
        with ThreadPoolExecutor(len(cases)) as pool:
            outcomes = list(pool.map(
                lambda case: raw_case(server.port, case.chunks, case.end, TIMING), cases))
        for case, outcome in zip(cases, outcomes, strict=True):
            judge(stage, "held-open", f"{daemon}:{case.family}:hold", outcome, RAW_ALLOWED,
                  case)

    with watching(stage):
        run()


def test_tiny_pieces(stage: Stage, long_mode: bool) -> None:
    """A valid session written a few bytes at a time is a valid session."""

    @fuzz_settings(long_mode, 10, 300)
    @given(case=split_cases(), daemon=st.sampled_from(["db", "fd"]))
    def run(case: SplitCase, daemon: str) -> None:
        server = stage.dbd if daemon == "db" else stage.fd
        rq = dataclasses.replace(baseline_rq(server.ae_title.encode()), max_pdu=case.max_pdu)
        if case.max_pdu is None or 0 < case.max_pdu < 7:  # no room for a PDV: refused
            outcome = raw_case(server.port, (rq.encode(),), "hold", TIMING)
            judge(stage, "tiny-pieces", f"{daemon}:max-pdu", outcome,
                  frozenset({Kind.REJECTED}), case)
            return
        if case.find and daemon == "db":  # many responses, in fragments of the PDU size
            identifier = b"".join(element(tag, text(value)) for tag, value in (
                (0x00080018, b""), (0x00080052, b"IMAGE"), (0x00100020, b"*")))
            payload = message(3, command_set(find_rq()), identifier)
        else:
            payload = message(1, command_set(echo_rq()))
        outcome = dimse_case(server.port, rq, payload, TIMING, expect_response=True,
                             pieces=case.pieces)
        judge(stage, "tiny-pieces", f"{daemon}:pieces:find={case.find}", outcome,
              frozenset({Kind.RESPONSE}), case)
        assert outcome.status == 0, outcome

    with watching(stage):
        run()


def test_stray_pdus_in_association(stage: Stage, long_mode: bool) -> None:
    """PDUs with no place in an established association, or broken ones: A-ABORT (AA-8),
    a close when the peer closed first, or the release PS3.8 makes of a release request."""

    @fuzz_settings(long_mode, 30, 600)
    @given(case=stray_pdus(), daemon=st.sampled_from(["db", "fd"]))
    def run(case: RawCase, daemon: str) -> None:
        server = stage.dbd if daemon == "db" else stage.fd
        outcome = established_case(server.port, baseline_rq(server.ae_title.encode()),
                                   case.chunks[0], case.end, TIMING)
        if case.family.startswith("abort"):  # PS3.8 AA-3: the daemon just closes
            allowed = {Kind.CLOSED, Kind.ABORTED}
        elif case.end == "hold":
            allowed = {Kind.ABORTED, Kind.RELEASED}
        else:
            allowed = {Kind.ABORTED, Kind.CLOSED}
        judge(stage, "stray-pdu", f"{daemon}:{case.family}", outcome, frozenset(allowed), case)

    with watching(stage):
        run()


def test_association_requests(stage: Stage, long_mode: bool) -> None:
    """Hand-built A-ASSOCIATE-RQs with absurd fields: RJ, A-ABORT, or AC and a release."""

    @fuzz_settings(long_mode, 80, 2200)
    @given(data=st.data(), daemon=st.sampled_from(["db", "fd"]))
    def run(data: st.DataObject, daemon: str) -> None:
        server = stage.dbd if daemon == "db" else stage.fd
        case = data.draw(associate_mutation(server.ae_title.encode()))
        check_association(stage, server, case, daemon)

    with watching(stage):
        run()


def check_association(stage: Stage, server: DBDaemon | FileDaemon, case: AssocCase,
                      daemon: str) -> None:
    complete = case.complete
    # A PDU the daemon cannot read whole ends when we stop sending: half-close at once.
    outcome = raw_case(server.port, (case.data,), "hold" if complete else "half-close", TIMING)
    if complete and case.mutation in ("", "item-length", "flip"):
        allowed = frozenset({Kind.ACCEPTED, Kind.REJECTED, Kind.ABORTED})
    else:  # a shorter length: the rest of the bytes are read as a second PDU
        allowed = frozenset({Kind.ACCEPTED, Kind.REJECTED, Kind.ABORTED, Kind.CLOSED})
        if outcome.kind is Kind.PROTOCOL and outcome.detail.startswith("release answered"):
            outcome = Outcome(Kind.ABORTED, "after accept")
    judge(stage, "associate", f"{daemon}:{case.family}:{case.mutation or 'exact'}", outcome,
          allowed, case)


def _fields(case: DimseCase) -> dict[int, bytes]:
    return dict(case.fields)


def owes_response(case: DimseCase) -> bool:
    """Whether the daemon has a whole request to answer, as PS3.7 frames one."""
    fields = _fields(case)
    command_field = fields.get(0x0100, b"")
    if case.raw_command is not None or len(command_field) != 2:
        return False  # whatever comes of random bytes: an answer or an abort
    if int.from_bytes(command_field, "little") & RESPONSE_BIT:
        return False  # an unsolicited response is not answered
    if int.from_bytes(command_field, "little") == C_CANCEL_RQ:
        return False  # PS3.7 9.3.2.3: a C-CANCEL has no response
    kind = case.framing.kind
    if kind in ("no-command-last", "empty-pdu", "pdv-zero", "pdv-one"):
        return False
    announces = case.announces_data
    if kind in ("no-data-last", "missing-data"):
        return not announces
    return True


def well_formed(case: DimseCase, how: str) -> bool:
    """A request PS3.7 allows: only its identifier (the data set) may be nonsense."""
    return how == "none" and case.raw_command is None and case.group_length is None \
        and case.framing.kind in ("normal", "reserved-bits", "two-pdvs-one-pdu",
                                  "tiny-fragments")


def answers(fields: dict[int, bytes]) -> Callable[[Response], str | None]:
    """A check that a response is of the request's type and names its Message ID."""

    def check(response: Response) -> str | None:
        field = fields.get(0x0100, b"")
        if len(field) == 2 and response.field != int.from_bytes(field, "little") | RESPONSE_BIT:
            return f"a 0x{response.field:04X} response to a 0x{field.hex()} request"
        message_id = fields.get(0x0110, b"")
        if len(message_id) == 2 and response.command.get(0x00000120) != message_id:
            return "the response names another Message ID"
        return None

    return check


def valid_ae(raw: bytes) -> bool:
    """PS3.5 6.2: 1-16 ASCII characters, no backslash or control character, after the
    padding spaces are gone."""
    title = raw.strip(b" ")
    return 0 < len(title) <= 16 and all(0x20 <= b < 0x7F and b != 0x5C for b in title)


def run_dimse(stage: Stage, test: str, server: DBDaemon | FileDaemon, case: DimseCase,
              context_id: int, data: bytes | None, *, may_abort: bool = False) -> Outcome:
    """One DIMSE case; ``may_abort``: a well-formed request whose command element
    pynetdicom refuses to decode (A-ABORT then)."""
    payload = frame(case.framing, context_id, case.command(), data)
    expect = owes_response(case)
    check = answers(_fields(case)) if case.raw_command is None else None
    outcome = dimse_case(server.port, baseline_rq(server.ae_title.encode()), payload, TIMING,
                         expect_response=expect, pieces=case.framing.pieces, check=check)
    how = case.family.split(":", 1)[1]
    field = int.from_bytes(_fields(case).get(0x0100, b"\0\0")[:2], "little")
    if well_formed(case, how) and expect and not may_abort:
        allowed = frozenset({Kind.RESPONSE})
    elif expect:
        allowed = frozenset({Kind.RESPONSE, Kind.ABORTED})
    elif field & RESPONSE_BIT:  # unsolicited: ignored, or answered as a malformed request
        allowed = frozenset({Kind.RELEASED, Kind.ABORTED, Kind.RESPONSE})
    else:
        allowed = frozenset({Kind.RELEASED, Kind.ABORTED})
    judge(stage, test, f"{case.family}:{case.framing.kind}", outcome, allowed, case)
    return outcome


def test_find_identifiers(stage: Stage, long_mode: bool) -> None:
    """C-FIND with wrong VRs, undecodable values, huge sequences, invalid dates and
    levels, broken command sets and framing: a status, or an A-ABORT for bad framing."""

    @fuzz_settings(long_mode, 90, 2300)
    @given(case=find_cases())
    def run(case: DimseCase) -> None:
        context_id = 5 if case.identifier is not None and case.identifier.explicit else 3
        data = case.identifier.encode(stage.known_uid) if case.identifier is not None else None
        run_dimse(stage, "find", stage.dbd, case, context_id, data)

    with watching(stage):
        run()


def test_move_requests(stage: Stage, long_mode: bool) -> None:
    """C-MOVE to absurd destinations with absurd identifiers: a final status each."""

    @fuzz_settings(long_mode, 40, 1000)
    @given(case=move_cases())
    def run(case: DimseCase) -> None:
        sop_class = _fields(case).get(0x0002, b"")
        context_id = 9 if sop_class.rstrip(b"\0").endswith(b".2.1.2") else 7
        assert case.identifier is not None
        data = case.identifier.encode(stage.known_uid)
        # Invalid destinations, empty included, are answered 0xA801 (emulators.trust
        # screens them raw); one that pynetdicom cannot decode at all may still abort.
        destination = _fields(case).get(0x0600, b"")
        run_dimse(stage, "move", stage.dbd, case, context_id, data,
                  may_abort=not valid_ae(destination.rstrip(b"\0")))

    with watching(stage):
        run()


def test_store_objects(stage: Stage, long_mode: bool) -> None:
    """C-STORE to the File Daemon of objects that do not parse, are cut short, or say
    other UIDs than the command: refused, and nothing half-written left behind."""

    @fuzz_settings(long_mode, 60, 1300)
    @given(case=store_cases(), daemon=st.sampled_from(["fd", "fd", "fd", "db"]))
    @example(case=TRUNCATED_STORE, daemon="fd")  # was stored as a partial file
    @example(case=TRUNCATED_STORE, daemon="db")  # was imported into the archive
    def run(case: StoreCase, daemon: str) -> None:
        check_store(stage, case, stage.fd if daemon == "fd" else stage.dbd)

    with watching(stage):
        run()


# Pixel data cut 5 bytes into its value: pydicom reads it as a shorter value.
TRUNCATED_STORE = StoreCase("store:truncate", b"1.2.826.0.1.3680043.9.7433.99.2.1",
                            b"1.2.826.0.1.3680043.9.7433.99.2.1", CT_STORAGE, CT_STORAGE,
                            b"FUZZ1", "truncate", 87, False, Framing())


def check_store(stage: Stage, case: StoreCase, server: DBDaemon | FileDaemon) -> None:
    body, whole = case.body()
    context_id = 13 if case.explicit else 11
    # The same framing rules as any request that carries a data set.
    dimse = DimseCase("store:none", ((0x0100, us(1)), (0x0800, us(0))), None, case.framing)

    def check(response: Response) -> str | None:
        if response.status == 0 and whole is False:
            return "success for an object that is not a whole data set"
        if response.status == 0 and (case.sop_uid != case.dataset_uid
                                     or case.command_class != case.dataset_class):
            return "success for an object whose UIDs differ from the command's"
        return None

    payload = frame(case.framing, context_id, case.command(), body)
    expect = owes_response(dimse)
    outcome = dimse_case(server.port, baseline_rq(server.ae_title.encode()), payload,
                         TIMING, expect_response=expect, pieces=case.framing.pieces,
                         check=check)
    if outcome.status == 0 and server is stage.fd:  # stored, even if it should not be
        stage.stored[case.sop_uid.decode()] = body
    if case.framing.kind == "normal" and expect and case.command_class:
        allowed = frozenset({Kind.RESPONSE})  # else: no Affected SOP Class, no request
    elif expect:
        allowed = frozenset({Kind.RESPONSE, Kind.ABORTED})
    else:
        allowed = frozenset({Kind.RELEASED, Kind.ABORTED})
    name = "fd" if server is stage.fd else "db"
    judge(stage, "store", f"{name}:{case.family}:{case.framing.kind}", outcome, allowed, case)


# -- regressions: what the fuzzer found, with the exact answer each input now gets -----------


def test_probes_free_their_association_slots(stage: Stage) -> None:
    """More non-DICOM connections than association slots, then a trusted C-ECHO.

    pynetdicom's acceptor waited the whole ACSE timeout for an A-ASSOCIATE-RQ on a
    connection already closed; each such thread held a slot, so the C-ECHO was rejected
    (2/3/2, local limit exceeded) until the timeout (30 s by default) had passed."""
    with watching(stage):
        for _ in range(stage.fd.ae.maximum_associations + 1):
            outcome = raw_case(stage.fd.port, (b"GET / HTTP/1.1\r\n\r\n",), "half-close",
                               TIMING)
            assert outcome.kind is Kind.ABORTED, outcome
        deadline = time.monotonic() + TIMEOUT / 4
        while stage.fd.ae.active_associations and time.monotonic() < deadline:
            time.sleep(0.01)
        echo = echo_both(stage)["File Daemon"]
        assert (echo.kind, echo.status) == (Kind.RESPONSE, 0), echo
        assert not stage.watch.take()


def _rq(server: DBDaemon | FileDaemon, **changes: Any) -> AssociateRQ:
    return dataclasses.replace(baseline_rq(server.ae_title.encode()), **changes)


ASSOCIATION_REGRESSIONS: dict[str, tuple[dict[str, Any], Kind, str]] = {
    # AE-6 raised in the DUL thread: no answer, closed after the ACSE timeout.
    "even-context-id": ({"contexts": (Context(0, VERIFICATION),)}, Kind.ABORTED, ""),
    # negotiate_as_acceptor raised IndexError: the peer waited forever, a DUL thread leaked.
    "no-transfer-syntax": ({"contexts": (Context(1, VERIFICATION, ()),)}, Kind.REJECTED,
                           "1/1/1"),
    # The trust check raised, pynetdicom negotiated anyway: any AE title was let in.
    "untrusted-no-implementation-uid": ({"calling": b"INTRUDER", "implementation_uid": None},
                                        Kind.REJECTED, ""),
    # Accepted, then every response failed to fragment and the association was aborted.
    "no-maximum-length": ({"max_pdu": None}, Kind.REJECTED, "1/1/1"),
    "maximum-length-1": ({"max_pdu": 1}, Kind.REJECTED, "1/1/1"),
    "maximum-length-6": ({"max_pdu": 6}, Kind.REJECTED, "1/1/1"),
}


@pytest.mark.parametrize("name", sorted(ASSOCIATION_REGRESSIONS))
@pytest.mark.parametrize("daemon", ["db", "fd"])
def test_association_regressions(stage: Stage, name: str, daemon: str) -> None:
    changes, kind, detail = ASSOCIATION_REGRESSIONS[name]
    server = stage.dbd if daemon == "db" else stage.fd
    with watching(stage):
        started = time.monotonic()
        outcome = raw_case(server.port, (_rq(server, **changes).encode(),), "hold", TIMING)
        assert outcome.kind is kind and outcome.detail.startswith(detail), outcome
        assert time.monotonic() - started < TIMEOUT / 2
        assert not stage.watch.take()


@pytest.mark.parametrize("daemon", ["db", "fd"])
def test_invalid_pdu_answered_before_the_next_is_read(stage: Stage, daemon: str) -> None:
    """An undecodable A-ASSOCIATE-RQ followed by the start of a huge PDU: the A-ABORT
    came only when reading that second PDU timed out (the network timeout, 60 s by
    default), since pynetdicom read it before acting on the first one's Evt19."""
    server = stage.dbd if daemon == "db" else stage.fd
    data = pdu(0x01, b"\x00\x01" + bytes(69)) + b"\x01\x00\x20\x00\x00\x09\x00"
    with watching(stage):
        started = time.monotonic()
        outcome = raw_case(server.port, (data,), "hold", TIMING)
        assert outcome.kind is Kind.ABORTED, outcome
        assert time.monotonic() - started < TIMEOUT / 2
        assert not stage.watch.take()


def test_abort_with_invalid_source(stage: Stage) -> None:
    """A peer's A-ABORT with source 9: AA-3 raised building its primitive (a traceback,
    the connection closed only when the acceptor noticed); now an invalid PDU."""
    with watching(stage):
        outcome = established_case(stage.dbd.port, _rq(stage.dbd),
                                   pdu(ABORT, b"\0\0\x09\x09"), "hold", TIMING)
        assert outcome.kind in (Kind.ABORTED, Kind.CLOSED), outcome
        assert not stage.watch.take()


def _find_identifier() -> bytes:
    return element(0x00080052, text(b"STUDY")) + element(0x0020000D, b"")


DIMSE_REGRESSIONS: dict[str, tuple[int, bytes, bytes | None, Kind, int | None, int]] = {
    # name: (context, command set, data set, outcome, status, response command field)
    # DT-2 raised on the empty command set: the DUL died, a bare close, no A-ABORT.
    "empty-command-set": (3, b"", _find_identifier(), Kind.ABORTED, None, 0),
    # Served by the Verification SCP: a C-ECHO-RSP with Success to a C-FIND.
    "find-naming-verification": (3, command_set(find_rq(sop_class=VERIFICATION)),
                                 _find_identifier(), Kind.RESPONSE, 0x0122, 0x8020),
    # The Q/R service raised ValueError: A-ABORT and a logged traceback.
    "echo-on-find-context": (3, command_set(echo_rq() | {0x0002: ui(STUDY_FIND)}), None,
                             Kind.RESPONSE, 0x0211, 0x8030),
    # Not a valid request (no Affected SOP Instance UID): dropped, unanswered until the
    # network timeout.
    "store-without-instance-uid": (11, command_set(
        {k: v for k, v in store_rq(CT_STORAGE, b"1.2.3").items() if k != 0x1000}),
        b"\x08\x00\x16\x00\x00\x00\x00\x00", Kind.ABORTED, None, 0),
    # An empty Move Destination: pynetdicom refused to decode it and aborted.
    "empty-move-destination": (7, command_set(move_rq(b"")), _find_identifier(),
                               Kind.RESPONSE, 0xA801, 0x8021),
    # Same, on a presentation context never negotiated.
    "invalid-request-unknown-context": (101, command_set(
        {k: v for k, v in find_rq().items() if k != 0x0110}), _find_identifier(),
        Kind.ABORTED, None, 0),
}


@pytest.mark.parametrize("name", sorted(DIMSE_REGRESSIONS))
def test_dimse_regressions(stage: Stage, name: str) -> None:
    context_id, command, data, kind, status, field_ = DIMSE_REGRESSIONS[name]
    server = stage.fd if context_id == 11 else stage.dbd
    seen: dict[str, int] = {}

    def check(response: Response) -> str | None:
        seen["field"] = response.field
        return None

    with watching(stage):
        started = time.monotonic()
        outcome = dimse_case(server.port, _rq(server), message(context_id, command, data),
                             TIMING, expect_response=True, check=check)
        assert outcome.kind is kind and outcome.status == status, outcome
        if field_:
            assert seen["field"] == field_
        assert time.monotonic() - started < TIMEOUT / 2  # answered, not timed out
        assert not stage.watch.take()


def test_store_with_other_instance_uid_refused_by_db_daemon(stage: Stage) -> None:
    """The DB Daemon imported an object under its data set's SOP Instance UID, another
    than the C-STORE's, and answered Success; now 0xA900 like the File Daemon."""
    case = dataclasses.replace(TRUNCATED_STORE, body_mutation="none",
                               dataset_uid=TRUNCATED_STORE.sop_uid + b"9")
    with watching(stage):
        body, _whole = case.body()
        outcome = dimse_case(stage.dbd.port, _rq(stage.dbd), message(11, case.command(), body),
                             TIMING, expect_response=True)
        assert (outcome.kind, outcome.status) == (Kind.RESPONSE, 0xA900), outcome


@pytest.mark.parametrize("daemon", ["db", "fd"])
def test_store_with_an_unknown_vr_is_refused(stage: Stage, daemon: str) -> None:
    """A flipped byte made PatientName's VR 'P\\xb1': the File Daemon stored the object
    (pydicom reads it, then cannot decode that element); now it is refused, not kept."""
    server = stage.dbd if daemon == "db" else stage.fd
    case = dataclasses.replace(TRUNCATED_STORE, body_mutation="none", explicit=True)
    body, _whole = case.body()
    flipped = body.replace(b"\x10\x00\x10\x00PN", b"\x10\x00\x10\x00P\xb1", 1)
    assert flipped != body
    with watching(stage):
        outcome = dimse_case(server.port, _rq(server), message(13, case.command(), flipped),
                             TIMING, expect_response=True)
        assert outcome.kind is Kind.RESPONSE and outcome.status in (0xC000, 0x0110), outcome
        assert case.sop_uid.decode() not in {p.name for p in stage.fd_out.rglob("*.dcm")}


@pytest.mark.parametrize("daemon", ["db", "fd"])
def test_a_lying_pdu_length_is_not_buffered(stage: Stage, daemon: str) -> None:
    """A PDU header claiming 2 GB, then bytes streamed after it: the daemon closes the
    connection at once instead of buffering them until the peer stops (client.tcp)."""
    server = stage.dbd if daemon == "db" else stage.fd
    sent = 0
    with watching(stage), socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(TIMEOUT)
        sock.sendall(b"\x01\x00\x7f\xff\xff\xff")
        started = time.monotonic()
        with contextlib.suppress(OSError):  # reset or broken pipe: the daemon closed
            while sent < 64 << 20 and time.monotonic() - started < TIMEOUT:
                sock.sendall(bytes(65536))
                sent += 65536
        assert sent < 64 << 20, "the daemon took 64 MB under a lying PDU length"



def test_daemons_end_clean(stage: Stage) -> None:
    """Last: both daemons stop with no thread, socket, temporary or partial file left."""
    stage.finished = True
    _assert_clean(stage)


def _assert_clean(stage: Stage) -> None:
    echoes = echo_both(stage)
    assert all(o.kind is Kind.RESPONSE and o.status == 0 for o in echoes.values()), echoes
    stage.dbd.stop()
    stage.fd.stop()
    deadline = time.monotonic() + STOP_WAIT
    while time.monotonic() < deadline:
        extra = set(threading.enumerate()) - stage.threads_before
        if not extra and socket_count() <= stage.sockets_before:
            break
        time.sleep(0.05)
    extra = set(threading.enumerate()) - stage.threads_before
    assert not extra, f"threads left after the daemons stopped: {sorted(map(str, extra))}"
    assert socket_count() <= stage.sockets_before, \
        f"sockets left open: {socket_count()} now, {stage.sockets_before} before"
    temporary = sorted(stage.fd_out.rglob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"))
    assert not temporary, f"temporary files left: {temporary}"
    for path in stage.fd_out.rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        for _elem in ds.iterall():
            pass  # every element decodes
        sop_uid = str(ds.SOPInstanceUID)
        if sop_uid in stage.stored:
            assert part10_body(path.read_bytes()) == stage.stored[sop_uid], \
                f"{path}: not the object the File Daemon accepted"
    assert not stage.watch.take()
    figures = {"cases": stage.tally.total, "by_kind": stage.tally.kinds(),
               "by_test": stage.tally.by_test,
               "by_detail": dict(sorted(stage.tally.by_detail.items()))}
    stage.summary_path.write_text(json.dumps(figures, indent=2))


def _summary_lines(stage: Stage) -> list[str]:
    """The figures: cases and outcomes by kind, per test, and by status or reason."""
    tally = stage.tally
    kinds = ", ".join(f"{kind} {n}" for kind, n in tally.kinds().items())
    lines = [f"fuzz_daemons: {tally.total} cases ({kinds}); JSON: {stage.summary_path}"]
    for test, counts in tally.by_test.items():
        shown = ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items()))
        lines.append(f"  {test}: {sum(counts.values())} ({shown})")
    details = ", ".join(f"{label} {n}" for label, n in sorted(tally.by_detail.items()))
    lines.append(f"  by status or reason: {details}")
    return lines


