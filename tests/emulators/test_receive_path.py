"""The File Daemon's receive path: batched P-DATA reads, stores served on the DUL thread,
the DUL's wait on its socket, and pynetdicom's log handlers left off when not logging.

These mechanisms (client/tcp.py, client/pdata_batches.py, emulators/inline_store.py)
change how pynetdicom's DUL thread reads and answers; each test here sends real PDUs
over loopback, with pynetdicom or a raw socket peer (tests/hardening/fuzz_pdus.py) for
byte layouts pynetdicom will not send, and checks what landed and what came back.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import select
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pydicom
import pytest
from daemons import LOOPBACK, associated, eventually, make_site
from hardening.fuzz_pdus import (
    ABORT,
    ABORT_PDU,
    ASSOCIATE_AC,
    CT_STORAGE,
    MR_STORAGE,
    RELEASE_RP,
    RELEASE_RQ_PDU,
    VERIFICATION,
    AssociateRQ,
    Context,
    Peer,
    Response,
    Timing,
    command_set,
    echo_rq,
    message,
    p_data,
    parse_ac,
    pdv,
    read_response,
    store_rq,
)
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom._handlers import (
    standard_dimse_recv_handler,
    standard_dimse_sent_handler,
    standard_pdu_recv_handler,
    standard_pdu_sent_handler,
)
from pynetdicom.association import Association
from pynetdicom.dsutils import encode
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.pdu import P_DATA_TF as PDataTF

from client.files import part10_body
from client.site import Site, Timeouts
from client.tcp import NO_DELAY
from emulators import bulk_send
from emulators.faults.model import FileDaemonFaults, StoreFaults
from emulators.file_daemon import FileDaemon
from emulators.pynetdicom_guards import SOP_CLASS_NOT_SUPPORTED
from emulators.sop_classes import VERIFICATION as VERIFICATION_UID
from emulators.synthetic import SyntheticConfig, make_recipe, object_refs
from emulators.synthetic.modules import with_file_meta

CLIENT_AE, FD_AE = "DCMTK", "VMSFD"  # DCMTK is trusted by the default site from 127.0.0.1
TIMEOUT = 10.0  # seconds: every timeout of the daemon and of the pynetdicom requestors
PEER_WAIT = 5.0  # a raw peer's wait for a PDU: under TIMEOUT, so a hang is not an idle abort
TIMING = Timing(network=TIMEOUT, margin=0.0)
SMALL_PDU = 4096  # a 128x128 CT slice (32 KB of pixels) is 10 P-DATA-TF PDUs
PDU_ROOM = SMALL_PDU - 6  # a fragment's bytes: the PDU's variable field less the PDV header
MOST_PER_BATCH = 64  # client.pdata_batches._MOST
CONFIG = SyntheticConfig(seed=5, slices=4, rows=128, columns=128)
CT_CONTEXT, ECHO_CONTEXT = 1, 3
RAW_RQ = AssociateRQ(called=FD_AE.encode(), calling=CLIENT_AE.encode(),
                     contexts=(Context(CT_CONTEXT, CT_STORAGE),
                               Context(ECHO_CONTEXT, VERIFICATION)))
STANDARD_HANDLERS = {standard_dimse_recv_handler, standard_dimse_sent_handler,
                     standard_pdu_recv_handler, standard_pdu_sent_handler}
C_ECHO_RSP, C_STORE_RSP = 0x8030, 0x8001


# --- a File Daemon that reports what its DUL did ---------------------------------------------

@dataclass
class Probe:
    """What one accepted association's DUL did."""

    batches: list[int] = field(default_factory=list)  # PDVs handed on by each Evt10
    pdata_pdus: int = 0  # P-DATA-TF PDUs read off the socket and decoded
    store_threads: list[str] = field(default_factory=list)  # "dul"/"reactor" per C-STORE


class ProbedDaemon(FileDaemon):
    """The File Daemon, with each association's Evt10 actions, P-DATA-TF PDUs and C-STORE
    handler threads recorded (hooks bound after the project's own, so they see its DUL)."""

    def __init__(self, site: Site, max_pdu: int | None = None) -> None:
        super().__init__(site)
        if max_pdu is not None:
            self.ae.maximum_pdu_size = max_pdu  # the largest PDU the requestor may send us
        self.probes: list[Probe] = []
        self.echo_delay = 0.0  # seconds the reactor takes to answer a C-ECHO
        self.echo_started = threading.Event()  # the reactor is serving a C-ECHO

    def handlers(self) -> list[EventHandlerType]:
        return [*super().handlers(), (evt.EVT_CONN_OPEN, self._watch),
                (evt.EVT_PDU_RECV, self._pdu_received), (evt.EVT_C_ECHO, self._on_echo)]

    @staticmethod
    def probe(assoc: Association) -> Probe:
        probe: Probe = cast(Any, assoc).test_probe
        return probe

    def _watch(self, event: Event) -> None:
        assoc = event.assoc
        probe = Probe()
        cast(Any, assoc).test_probe = probe
        self.probes.append(probe)
        dul = cast(Any, assoc.dul)
        machine = dul.state_machine
        act = machine.do_action

        def do_action(fsm_event: str) -> None:
            # DT-2 takes the front of _recv_pdu: the (maybe merged) P-DATA-TF of this Evt10.
            if fsm_event == "Evt10" and dul._recv_pdu.queue:
                pdu = dul._recv_pdu.queue[0]
                if isinstance(pdu, PDataTF):
                    probe.batches.append(len(pdu.presentation_data_value_items))
            act(fsm_event)

        machine.do_action = do_action

    def _pdu_received(self, event: Event) -> None:
        if isinstance(event.pdu, PDataTF):
            self.probe(event.assoc).pdata_pdus += 1

    def _on_echo(self, event: Event) -> int:
        self.echo_started.set()
        time.sleep(self.echo_delay)
        return 0x0000

    def _on_store(self, event: Event) -> int | Dataset:
        assoc, current = event.assoc, threading.current_thread()
        where = "dul" if current is assoc.dul else "reactor" if current is assoc \
            else current.name
        self.probe(assoc).store_threads.append(where)
        return super()._on_store(event)


@contextmanager
def running(site: Site, max_pdu: int | None = None) -> Iterator[ProbedDaemon]:
    """The probed daemon, stopped after the block; no thread outlives it."""
    before = set(threading.enumerate())
    with ProbedDaemon(site, max_pdu) as fd:
        yield fd
    assert eventually(lambda: not set(threading.enumerate()) - before), \
        set(threading.enumerate()) - before


def _accepted(fd: FileDaemon) -> Association:
    """The daemon's one established association (waits for it)."""
    assert eventually(lambda: len(fd.ae.active_associations) == 1
                       and fd.ae.active_associations[0].is_established)
    return fd.ae.active_associations[0]


def _all_ended(fd: FileDaemon) -> bool:
    return eventually(lambda: not fd.ae.active_associations)


@contextmanager
def requestor(port: int, *, max_pdu: int = SMALL_PDU,
              handlers: Sequence[EventHandlerType] = ()) -> Iterator[Association]:
    """A pynetdicom association (CT storage, verification) with TIMEOUT everywhere;
    released, and its AE shut down, after the block."""
    ae = AE(ae_title=CLIENT_AE)
    ae.maximum_pdu_size = max_pdu
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT
    ae.add_requested_context(CTImageStorage, [ImplicitVRLittleEndian])
    ae.add_requested_context(VERIFICATION_UID)
    with associated(ae, LOOPBACK, port, FD_AE, handlers) as assoc:
        assert assoc.is_established
        yield assoc


@contextmanager
def raw_peer(port: int) -> Iterator[Peer]:
    """A raw socket peer with an association (CT storage on 1, verification on 3)."""
    with Peer(port, PEER_WAIT) as peer:
        assert peer.send(RAW_RQ.encode())
        answer = peer.read()
        assert answer.kind == ASSOCIATE_AC, answer
        granted = parse_ac(answer.body)
        assert granted.usable(CT_CONTEXT) and granted.usable(ECHO_CONTEXT)
        yield peer


# --- what is sent ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def slices() -> list[Dataset]:
    """Four 128x128 CT slices (Implicit VR Little Endian)."""
    recipe = make_recipe(CONFIG, 0)
    out: list[Dataset] = []
    for obj in object_refs(recipe):
        if obj.modality == "CT" and len(out) < 4:
            ds = with_file_meta(obj.build())
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
            out.append(ds)
    assert len(out) == 4
    return out


@pytest.fixture
def site(tmp_path: Path) -> Site:
    site = make_site(tmp_path)
    return dataclasses.replace(site, file_daemon=dataclasses.replace(
        site.file_daemon, timeouts=Timeouts(acse=TIMEOUT, dimse=TIMEOUT, network=TIMEOUT)))


def _wire(ds: Dataset) -> bytes:
    data = encode(ds, True, True, False)
    assert data is not None
    return data


def _store_command(ds: Dataset, message_id: int, sop_class: bytes = CT_STORAGE) -> bytes:
    return command_set(store_rq(sop_class, str(ds.SOPInstanceUID).encode(), message_id))


def _fragments(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


def _stored(output: Path) -> dict[str, bytes]:
    """SOP Instance UID -> the data set bytes of each file under ``output`` (all files:
    a temporary or stray one fails the reading)."""
    files = [p for p in output.rglob("*") if p.is_file()] if output.exists() else []
    out: dict[str, bytes] = {}
    for path in files:
        uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        out[uid] = part10_body(path.read_bytes())
    return out


def _response(peer: Peer) -> Response:
    response = read_response(peer, TIMING)
    assert isinstance(response, Response), f"no DIMSE response: {response}"
    return response


def _responded_to(response: Response) -> int:
    return int.from_bytes(response.command[0x00000120], "little")


# --- 1. batching keeps the data intact -------------------------------------------------------

@pytest.mark.parametrize("sender", ["pynetdicom", "one-write"])
def test_batched_reads_store_every_byte_and_hand_each_pdv_on_once(
        site: Site, slices: list[Dataset], sender: str) -> None:
    """Merging P-DATA-TF PDUs must neither drop, repeat nor reorder a fragment: files are
    the bytes sent. pynetdicom sends one PDU per DUL turn; bulk_send writes a message at
    once, so its PDUs wait on the socket together and must be batched."""
    with running(site, SMALL_PDU) as fd:
        output = fd.output
        with requestor(fd.port, handlers=NO_DELAY if sender == "one-write" else ()) as assoc:
            assert assoc.acceptor.maximum_length == SMALL_PDU
            if sender == "pynetdicom":
                statuses = [int(assoc.send_c_store(ds).Status) for ds in slices]
            else:
                with bulk_send.sending(assoc):
                    statuses = [int(bulk_send.send_c_store(assoc, ds, msg_id=n).Status)
                                for n, ds in enumerate(slices, 1)]
        assert _all_ended(fd)
        [probe] = fd.probes

    assert statuses == [0] * len(slices)
    assert _stored(output) == {str(ds.SOPInstanceUID): _wire(ds) for ds in slices}
    # One command PDU and ceil(size / room) data PDUs per slice, each with one PDV.
    expected = sum(1 + math.ceil(len(_wire(ds)) / PDU_ROOM) for ds in slices)
    assert probe.pdata_pdus == expected
    assert sum(probe.batches) == expected, "a PDV lost or handed on twice"
    assert max(probe.batches) <= MOST_PER_BATCH
    if sender == "one-write":
        assert len(probe.batches) < probe.pdata_pdus, "no P-DATA-TF was batched"


def test_a_batch_stops_at_64_pdus_and_the_message_stays_whole(
        site: Site, slices: list[Dataset]) -> None:
    """A data set of over 64 PDUs in one write is handed on in several batches of at most
    64 PDUs, in order: the file is still the bytes sent."""
    ds = slices[0]
    data = _wire(ds)
    with running(site) as fd, raw_peer(fd.port) as peer:
        pieces = message(CT_CONTEXT, _store_command(ds, 1), data, max_fragment=200)
        data_pdus = math.ceil(len(data) / 200)
        assert data_pdus > 2 * MOST_PER_BATCH
        assert peer.send(pieces)
        response = _response(peer)
        assert peer.send(RELEASE_RQ_PDU)
        assert peer.read().kind == RELEASE_RP
        probe = fd.probes[0]
        output = fd.output
    assert response.status == 0
    assert _stored(output) == {str(ds.SOPInstanceUID): data}
    assert sum(probe.batches) == probe.pdata_pdus == 1 + data_pdus
    assert max(probe.batches) <= MOST_PER_BATCH
    assert len(probe.batches) >= 1 + math.ceil(data_pdus / MOST_PER_BATCH)
    assert len(probe.batches) < probe.pdata_pdus, "no P-DATA-TF was batched"


# --- 2. batching respects the PDUs of other types --------------------------------------------

@pytest.mark.parametrize("ending", ["release", "abort"])
def test_a_whole_store_then_a_release_or_abort_in_one_write(
        site: Site, slices: list[Dataset], ending: str) -> None:
    """The batch stops at the A-RELEASE-RQ / A-ABORT after the data set: the object is
    stored and answered, then the release is answered (A-RELEASE-RP) or the abort ends
    the connection."""
    ds = slices[1]
    data = _wire(ds)
    with running(site) as fd, raw_peer(fd.port) as peer:
        output = fd.output
        wire = message(CT_CONTEXT, _store_command(ds, 7), data, max_fragment=3000)
        assert peer.send(wire + (RELEASE_RQ_PDU if ending == "release" else ABORT_PDU))
        response = _response(peer)
        after = peer.read()
        assert _all_ended(fd)
        stored = fd.stored
    assert response.field == C_STORE_RSP and _responded_to(response) == 7
    assert response.status == 0
    assert after.kind == (RELEASE_RP if ending == "release" else None), after
    assert stored == 1
    assert _stored(output) == {str(ds.SOPInstanceUID): data}


@pytest.mark.parametrize("ending", ["release", "abort"])
def test_a_release_or_abort_inside_a_data_set_is_not_swallowed_by_a_batch(
        site: Site, slices: list[Dataset], ending: str) -> None:
    """Data PDUs without the last-fragment bit, then A-RELEASE-RQ / A-ABORT, in one write:
    the batch must stop at the other PDU, which is honoured at once (a swallowed one would
    leave the peer waiting for the daemon's network timeout); nothing is stored."""
    ds = slices[2]
    data = _wire(ds)
    with running(site) as fd, raw_peer(fd.port) as peer:
        output = fd.output
        fragments = _fragments(data, 2000)[:6]
        wire = p_data(pdv(CT_CONTEXT, 0x03, _store_command(ds, 1))) \
            + b"".join(p_data(pdv(CT_CONTEXT, 0x00, piece)) for piece in fragments)
        assert peer.send(wire + (RELEASE_RQ_PDU if ending == "release" else ABORT_PDU))
        answer = peer.read()
        assert _all_ended(fd)
        stored = fd.stored
        probe = fd.probes[0]
    assert answer.kind == (RELEASE_RP if ending == "release" else None), answer
    assert stored == 0
    assert _stored(output) == {}
    assert sum(probe.batches) == probe.pdata_pdus == 1 + len(fragments)


# --- 3. a PDU cut in the middle of a batch ---------------------------------------------------

@pytest.mark.parametrize("cut", ["in-header", "in-body"])
def test_a_pdu_cut_mid_batch_stores_nothing_and_the_daemon_serves_on(
        site: Site, slices: list[Dataset], cut: str) -> None:
    """Command, data PDUs, then part of the next P-DATA-TF and a close: the association
    ends, no file or temporary file is left, and the next association is served."""
    ds = slices[3]
    data = _wire(ds)
    with running(site) as fd:
        output = fd.output
        with raw_peer(fd.port) as peer:
            fragments = _fragments(data, 2000)
            whole = fragments[:5]
            nxt = p_data(pdv(CT_CONTEXT, 0x00, fragments[5]))
            partial = nxt[:3] if cut == "in-header" else nxt[:6 + len(fragments[5]) // 2]
            wire = p_data(pdv(CT_CONTEXT, 0x03, _store_command(ds, 1))) \
                + b"".join(p_data(pdv(CT_CONTEXT, 0x00, piece)) for piece in whole) + partial
            assert peer.send(wire)
        assert _all_ended(fd), "the association outlived its closed connection"
        [probe] = fd.probes
        assert fd.stored == 0
        assert _stored(output) == {}
        # Each whole PDU handed on exactly once; the cut one never.
        assert sum(probe.batches) == probe.pdata_pdus == 1 + len(whole)
        with requestor(fd.port) as assoc:
            assert int(assoc.send_c_echo().Status) == 0
            assert int(assoc.send_c_store(ds).Status) == 0
        assert _stored(output) == {str(ds.SOPInstanceUID): data}


# --- 4. stores served on the DUL thread ------------------------------------------------------

@pytest.mark.parametrize(("faults", "thread"), [
    (FileDaemonFaults(), "dul"),
    (FileDaemonFaults(store=StoreFaults(write_delay=0.02)), "reactor"),
], ids=["no-fault", "write-delay"])
def test_stores_are_served_inline_unless_a_fault_may_hold_them(
        site: Site, slices: list[Dataset], faults: FileDaemonFaults, thread: str) -> None:
    """Without faults the C-STORE handler runs on the DUL thread that decoded the request;
    a write delay must not hold that thread (it reads nothing meanwhile, not even an
    A-ABORT), so the reactor serves those, and they still succeed."""
    with running(site) as fd:
        fd.inject(faults)
        output = fd.output
        with requestor(fd.port) as assoc:
            statuses = [int(assoc.send_c_store(ds).Status) for ds in slices[:3]]
        [probe] = fd.probes
    assert statuses == [0, 0, 0]
    assert probe.store_threads == [thread] * 3
    assert _stored(output) == {str(ds.SOPInstanceUID): _wire(ds) for ds in slices[:3]}


def test_misdirected_stores_are_refused_and_pipelined_answers_keep_their_order(
        site: Site, slices: list[Dataset]) -> None:
    """A C-STORE naming MR storage on the CT context is answered 0x0122 (by the reactor:
    never inline), without a hang; a C-ECHO, that store and a good C-STORE sent in one
    write are answered in the order sent, whichever thread serves each."""
    rounds = 5
    with running(site) as fd, raw_peer(fd.port) as peer:
        output = fd.output
        seen: list[tuple[int, int, int | None]] = []
        good: list[Dataset] = []
        for n in range(rounds):
            misdirected, ds = slices[n % 2], slices[2 + n % 2]
            ds = copy.deepcopy(ds)
            ds.SOPInstanceUID = pydicom.uid.generate_uid()
            good.append(ds)
            first = 3 * n + 1
            wire = message(ECHO_CONTEXT, command_set(echo_rq(first))) \
                + message(CT_CONTEXT, _store_command(misdirected, first + 1, MR_STORAGE),
                          _wire(misdirected), max_fragment=3000) \
                + message(CT_CONTEXT, _store_command(ds, first + 2), _wire(ds),
                          max_fragment=3000)
            assert peer.send(wire)
            for _ in range(3):
                response = _response(peer)
                seen.append((_responded_to(response), response.field, response.status))
        assert peer.send(RELEASE_RQ_PDU)
        assert peer.read().kind == RELEASE_RP
        [probe] = fd.probes
    expected: list[tuple[int, int, int | None]] = []
    for n in range(rounds):
        first = 3 * n + 1
        expected += [(first, C_ECHO_RSP, 0), (first + 1, C_STORE_RSP, SOP_CLASS_NOT_SUPPORTED),
                     (first + 2, C_STORE_RSP, 0)]
    assert seen == expected
    assert len(probe.store_threads) == rounds  # the misdirected ones never reach the handler
    assert _stored(output) == {str(ds.SOPInstanceUID): _wire(ds) for ds in good}


@pytest.mark.parametrize("together", [True, False], ids=["one-write", "while-serving"])
def test_a_store_arriving_while_the_reactor_serves_waits_its_turn(
        site: Site, slices: list[Dataset], together: bool) -> None:
    """A C-STORE decoded while the reactor still holds an earlier request (a slow C-ECHO,
    queued behind it or already being served) must not be served inline ahead of it:
    answers stay in request order. Once the reactor is done, the next store is served
    inline again."""
    first, second = slices[0], slices[1]
    echo = message(ECHO_CONTEXT, command_set(echo_rq(1)))
    store = message(CT_CONTEXT, _store_command(first, 2), _wire(first))
    with running(site) as fd, raw_peer(fd.port) as peer:
        fd.echo_delay = 0.3
        output = fd.output
        if together:
            assert peer.send(echo + store)
        else:
            assert peer.send(echo)
            assert fd.echo_started.wait(PEER_WAIT)
            assert peer.send(store)
        answers = [_response(peer), _response(peer)]
        assert peer.send(message(CT_CONTEXT, _store_command(second, 3), _wire(second)))
        answers.append(_response(peer))
        assert peer.send(RELEASE_RQ_PDU)
        assert peer.read().kind == RELEASE_RP
        [probe] = fd.probes
    assert [(_responded_to(r), r.field, r.status) for r in answers] \
        == [(1, C_ECHO_RSP, 0), (2, C_STORE_RSP, 0), (3, C_STORE_RSP, 0)]
    assert probe.store_threads == ["reactor", "dul"]
    assert set(_stored(output)) == {str(first.SOPInstanceUID), str(second.SOPInstanceUID)}


def test_a_misdirected_store_alone_is_answered_not_hung(
        site: Site, slices: list[Dataset]) -> None:
    """The misdirected request alone on a fresh association (the inline path's first
    look): a failure status within the peer's wait, and the association goes on."""
    ds = slices[0]
    with running(site) as fd, raw_peer(fd.port) as peer:
        output = fd.output
        assert peer.send(message(CT_CONTEXT, _store_command(ds, 9, MR_STORAGE), _wire(ds)))
        response = _response(peer)
        assert peer.send(message(ECHO_CONTEXT, command_set(echo_rq(10))))
        echo = _response(peer)
        assert peer.send(RELEASE_RQ_PDU)
        assert peer.read().kind == RELEASE_RP
    assert (_responded_to(response), response.status) == (9, SOP_CLASS_NOT_SUPPORTED)
    assert (_responded_to(echo), echo.status) == (10, 0)
    assert _stored(output) == {}


@pytest.mark.parametrize("case", ["context-never-agreed", "no-instance-uid"])
def test_a_store_whose_answer_is_an_abort_is_aborted_not_hung(
        site: Site, slices: list[Dataset], case: str) -> None:
    """A request whose serving aborts the association is left to the reactor: pynetdicom's
    abort waits for the DUL thread, so served inline it would wait for ever. The peer gets
    an A-ABORT within its wait, and the daemon serves the next association."""
    ds = slices[0]
    fields = store_rq(CT_STORAGE, str(ds.SOPInstanceUID).encode(), 1)
    context = CT_CONTEXT
    if case == "context-never-agreed":
        context = 5
    else:
        del fields[0x1000]  # Affected SOP Instance UID: a required command element
    with running(site) as fd:
        output = fd.output
        with raw_peer(fd.port) as peer:
            assert peer.send(message(context, command_set(fields), _wire(ds)))
            answer = peer.read()
        assert answer.kind == ABORT, answer
        assert _all_ended(fd)
        with requestor(fd.port) as assoc:
            assert int(assoc.send_c_echo().Status) == 0
    assert _stored(output) == {}


# --- 5. the DUL's wait on its socket ends when data arrives ----------------------------------

def test_arriving_stores_end_a_long_socket_wait(site: Site, slices: list[Dataset]) -> None:
    """With the daemon's DUL waiting 30 s at a time on its socket, stores still complete
    within the requestor's 10 s timeouts: each arriving PDU ends the wait, and the
    response (queued by the DUL itself when served inline) goes out at once."""
    with running(site) as fd, requestor(fd.port) as assoc:
        output = fd.output
        dul = cast(Any, _accepted(fd).dul)
        assert dul._run_loop_delay == 0  # the loop's sleep is replaced by the wait
        default = dul.dbdsim_wait
        dul.dbdsim_wait = 30.0
        try:
            statuses = [int(assoc.send_c_store(ds).Status) for ds in slices]
        finally:
            dul.dbdsim_wait = default  # the release's answer is queued by the reactor
    assert statuses == [0] * len(slices)
    assert set(_stored(output)) == {str(ds.SOPInstanceUID) for ds in slices}


def test_a_reactor_answer_waiting_on_a_long_wait_goes_out_when_data_arrives(
        site: Site, slices: list[Dataset]) -> None:
    """A C-ECHO is answered by the reactor thread, whose queued response the DUL sees only
    after its wait (by design: client.tcp.wait_on_socket). With a 30 s wait, the next
    request arriving must end it: both responses then come, in order."""
    ds = slices[0]
    with running(site) as fd, raw_peer(fd.port) as peer:
        dul = cast(Any, _accepted(fd).dul)
        default = dul.dbdsim_wait
        dul.dbdsim_wait = 30.0
        try:
            assert peer.send(message(ECHO_CONTEXT, command_set(echo_rq(1))))
            # The echo's response is queued for the DUL (or, racing, already sent).
            assert eventually(lambda: not dul.to_provider_queue.empty()
                               or bool(select.select([peer.sock], [], [], 0)[0]))
            assert peer.send(message(CT_CONTEXT, _store_command(ds, 2), _wire(ds)))
            first, second = _response(peer), _response(peer)
        finally:
            dul.dbdsim_wait = default
        assert peer.send(RELEASE_RQ_PDU)
        assert peer.read().kind == RELEASE_RP
    assert [(_responded_to(r), r.field, r.status) for r in (first, second)] \
        == [(1, C_ECHO_RSP, 0), (2, C_STORE_RSP, 0)]


# --- 6. pynetdicom's standard log handlers ---------------------------------------------------

def _standard_handlers(assoc: Association) -> set[Callable[..., Any]]:
    bound: set[Callable[..., Any]] = set()
    for event in (evt.EVT_DIMSE_RECV, evt.EVT_DIMSE_SENT, evt.EVT_PDU_RECV, evt.EVT_PDU_SENT):
        bound |= {handler for handler, _ in assoc.get_handlers(event)}
    return bound & STANDARD_HANDLERS


@pytest.mark.parametrize("level", [logging.WARNING, logging.DEBUG],
                         ids=["warning", "debug"])
def test_pynetdicom_handlers_are_bound_only_when_its_logger_would_log(
        site: Site, caplog: pytest.LogCaptureFixture, level: int) -> None:
    """Below INFO logging, pynetdicom's standard handlers (which format every PDU and
    message) are unbound from both ends of each connection; at DEBUG they stay, and
    their lines are logged. caplog restores the logger's level afterwards."""
    caplog.set_level(level, logger="pynetdicom")
    with running(site) as fd, requestor(fd.port, handlers=NO_DELAY) as assoc:
        accepted = _accepted(fd)
        assert int(assoc.send_c_echo().Status) == 0
        ours, theirs = _standard_handlers(assoc), _standard_handlers(accepted)
    handler_lines = [r for r in caplog.records
                     if r.name == "pynetdicom._handlers" and r.levelno == logging.DEBUG]
    if level == logging.WARNING:
        assert ours == set() and theirs == set()
    else:
        assert ours == STANDARD_HANDLERS and theirs == STANDARD_HANDLERS
        assert handler_lines, "no debug line from pynetdicom's standard handlers"


def test_the_connection_sees_the_level_it_opens_under(site: Site) -> None:
    """The level is read at each connection: lowering it between two associations
    re-binds the handlers on the second only (``-vv`` keeps working mid-run)."""
    logger = logging.getLogger("pynetdicom")
    saved = logger.level
    try:
        with running(site) as fd:
            logger.setLevel(logging.WARNING)
            with requestor(fd.port, handlers=NO_DELAY) as quiet:
                assert _standard_handlers(quiet) == set()
            logger.setLevel(logging.INFO)
            with requestor(fd.port, handlers=NO_DELAY) as loud:
                assert _standard_handlers(loud) == STANDARD_HANDLERS
    finally:
        logger.setLevel(saved)

