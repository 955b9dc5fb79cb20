"""A local request that the end of the association overtook never kills a DUL thread.

pynetdicom 3.0 turns each primitive another thread queues for the DUL into an event, and
raises InvalidEventError out of the DUL thread when PS3.8 has no transition for it in the
state reached meanwhile (:mod:`client.dul_guards`). Each race is forced here on rtmove's
own code: the DUL is held, on the event that ends the association, until the other
thread's request is queued behind it, the order CI's timing produced by chance.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.acse import ACSE
from pynetdicom.events import Event
from pynetdicom.fsm import InvalidEventError, StateMachine
from pynetdicom.pdu import A_RELEASE_RP
from pynetdicom.pdu_primitives import A_ABORT, A_RELEASE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

from client.errors import AssociationFailed
from client.receiver import Receiver
from client.session import Session
from client.settings import from_site
from client.site import default_site
from emulators.peers import LOOPBACK, free_port

Queued = Callable[[Any], bool]  # is the request awaited queued for this DUL?


@pytest.fixture
def thread_errors(monkeypatch: pytest.MonkeyPatch) -> list[BaseException]:
    """What any thread died of during the test (pytest would only warn about it)."""
    errors: list[BaseException] = []

    def hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            errors.append(args.exc_value)

    monkeypatch.setattr(threading, "excepthook", hook)
    return errors


def _wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.0005)
    return True


def queued(kind: type, response: bool) -> Queued:
    """A primitive of ``kind`` (a response if ``response``, else a request) is queued."""
    def found(dul: Any) -> bool:
        return any(isinstance(p, kind) and (getattr(p, "result", None) is not None) == response
                   for p in list(dul.to_provider_queue.queue))
    return found


def hold_dul(monkeypatch: pytest.MonkeyPatch, mode: str, fsm_event: str,
             until: Queued) -> threading.Event:
    """The first ``fsm_event`` of a ``mode`` DUL waits until ``until`` (5 s at most);
    the event returned is set once it waits."""
    holding, act = threading.Event(), StateMachine.do_action

    def do_action(self: StateMachine, event: str) -> None:
        if event == fsm_event and self.dul.assoc.mode == mode and not holding.is_set():
            holding.set()
            _wait_for(lambda: until(self.dul))
        act(self, event)

    monkeypatch.setattr(StateMachine, "do_action", do_action)
    return holding


def _no_invalid_events(errors: list[BaseException]) -> None:
    invalid = [e for e in errors if isinstance(e, InvalidEventError)]
    assert not invalid, f"a DUL thread died: {invalid}"


def _ct() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
    ds.PatientID, ds.Modality = "P1", "CT"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return ds


def test_receiver_stopped_while_a_peer_releases(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        thread_errors: list[BaseException]) -> None:
    """A peer (Orthanc, after a move) stores to rtmove's Receiver and releases; the
    Receiver is stopped (its server aborts live associations) as its association thread
    answers the A-RELEASE-RQ. The A-ABORT goes first (Sta8 -> Sta13), then the A-RELEASE
    response comes in Sta13, where PS3.8 has no transition: the CI failure, Evt14 in Sta13."""
    hold_dul(monkeypatch, "acceptor", "Evt15", queued(A_RELEASE, response=True))
    answering, answer = threading.Event(), ACSE.send_release

    def answer_after_the_abort(self: ACSE, is_response: bool = False) -> None:
        if is_response and self.assoc.is_acceptor:
            answering.set()
            _wait_for(lambda: queued(A_ABORT, response=False)(self.dul))
        answer(self, is_response)

    monkeypatch.setattr(ACSE, "send_release", answer_after_the_abort)
    ds = _ct()
    receiver = Receiver("RTMOVE", 0, tmp_path, bind=LOOPBACK)
    receiver.start()
    ae = AE(ae_title="ORTHANC")
    try:
        ae.add_requested_context(CTImageStorage, ImplicitVRLittleEndian)
        assoc = ae.associate(LOOPBACK, receiver.port, ae_title="RTMOVE")
        assert assoc.is_established
        assert assoc.send_c_store(ds).Status == 0x0000
        releasing = threading.Thread(target=assoc.release, daemon=True)
        releasing.start()
        assert answering.wait(5), "the Receiver never answered the release"
    finally:
        receiver.stop()
        ae.shutdown()
    releasing.join(5)
    assert receiver.path(str(ds.SOPInstanceUID)) is not None
    _no_invalid_events(thread_errors)


@pytest.fixture
def rude_peer() -> Iterator[int]:
    """A Q/R SCP that sends an A-RELEASE-RP (an invalid PDU in Sta6: its peer's DUL
    answers A-ABORT, Sta6 -> Sta13) 0.2 s after accepting, and answers no C-FIND."""
    hold = threading.Event()

    def accepted(event: Event) -> None:
        socket = event.assoc.dul.socket
        threading.Timer(0.2, lambda: socket.send(A_RELEASE_RP().encode())).start()

    def find(_event: Event) -> Iterator[tuple[int, Dataset | None]]:
        hold.wait(10)
        return
        yield

    ae = AE(ae_title="RUDE")
    for uid in (StudyRootQueryRetrieveInformationModelFind,
                StudyRootQueryRetrieveInformationModelMove):
        ae.add_supported_context(uid)
    port = free_port()
    server = ae.start_server((LOOPBACK, port), block=False, evt_handlers=[
        (evt.EVT_ACCEPTED, accepted), (evt.EVT_C_FIND, find)])
    try:
        yield port
    finally:
        hold.set()
        server.shutdown()


def _session(port: int) -> Session:
    return Session(from_site(default_site(), host=LOOPBACK, port=port, aec="RUDE",
                             aet="RTMOVE", timeout=1.0))


def test_session_releases_as_the_peer_sends_an_invalid_pdu(
        rude_peer: int, monkeypatch: pytest.MonkeyPatch,
        thread_errors: list[BaseException]) -> None:
    """rtmove's (background) release: its A-RELEASE-RQ is queued as the DUL answers the
    peer's invalid PDU with an A-ABORT (Sta13): Evt11 in Sta13."""
    holding = hold_dul(monkeypatch, "requestor", "Evt13", queued(A_RELEASE, response=False))
    session = _session(rude_peer)
    session.connect()
    assert holding.wait(5), "the peer's invalid PDU never came"
    session.release_in_background()
    session.close()
    _no_invalid_events(thread_errors)


def test_session_aborts_as_the_peer_sends_an_invalid_pdu(
        rude_peer: int, monkeypatch: pytest.MonkeyPatch,
        thread_errors: list[BaseException]) -> None:
    """A C-FIND with no answer within the DIMSE timeout is aborted, as the DUL answers
    the peer's invalid PDU with an A-ABORT of its own (Sta13): Evt15 in Sta13."""
    hold_dul(monkeypatch, "requestor", "Evt13", queued(A_ABORT, response=False))
    query = Dataset()
    query.QueryRetrieveLevel, query.PatientID, query.StudyInstanceUID = "STUDY", "P1", ""
    with _session(rude_peer) as session, pytest.raises(AssociationFailed):
        session.find(query)
    _no_invalid_events(thread_errors)
