"""client.idle_reactor: an idle requestor's association thread waits for news.

The checkpoint must still pause the thread exactly as pynetdicom's Event does (a request
under way must never have its responses taken), and news (a message, a release, an
abort) must wake it at once: the tests set the idle wait to 10 s, so a thread that only
woke on its own would fail them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from peers import free_port
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from client import idle_reactor
from client.association import associate
from client.idle_reactor import IdleCheckpoint
from client.session import quiesce_reactor

LONG = 10.0  # the idle wait under test: far longer than any test waits
PROMPT = 2.0  # seconds: what "at once" is allowed on a loaded CI machine


@pytest.fixture(autouse=True)
def long_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(idle_reactor, "_IDLE", LONG)


def _waiter(checkpoint: IdleCheckpoint) -> tuple[threading.Thread, threading.Event]:
    returned = threading.Event()

    def run() -> None:
        checkpoint.wait()
        returned.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, returned


def test_a_poke_ends_an_idle_wait_at_once() -> None:
    checkpoint = IdleCheckpoint()
    thread, returned = _waiter(checkpoint)
    time.sleep(0.05)
    assert not returned.is_set(), "an idle wait with no news ended early"
    checkpoint.poke()
    assert returned.wait(PROMPT)
    thread.join(PROMPT)


def test_news_before_the_wait_is_not_lost() -> None:
    checkpoint = IdleCheckpoint()
    checkpoint.poke()
    started = time.monotonic()
    assert checkpoint.wait()
    assert time.monotonic() - started < PROMPT
    thread, returned = _waiter(checkpoint)  # the news was taken: the next wait waits
    time.sleep(0.05)
    assert not returned.is_set()
    checkpoint.set()  # set() wakes it too (pynetdicom's kill and abort rely on it)
    assert returned.wait(PROMPT)
    thread.join(PROMPT)


def test_a_cleared_checkpoint_holds_the_thread_whatever_the_news() -> None:
    checkpoint = IdleCheckpoint()
    checkpoint.clear()
    thread, returned = _waiter(checkpoint)
    for _ in range(5):
        checkpoint.poke()
        time.sleep(0.02)
    assert not returned.is_set(), "news let the thread past a paused checkpoint"
    checkpoint.set()
    assert returned.wait(PROMPT)
    thread.join(PROMPT)


def test_cleared_during_an_idle_wait_the_thread_stays_paused() -> None:
    """A request clears the checkpoint while the thread waits idle: the request's
    responses are its own until it sets the checkpoint again, poked or not."""
    checkpoint = IdleCheckpoint()
    thread, returned = _waiter(checkpoint)
    time.sleep(0.05)
    checkpoint.clear()
    checkpoint.poke()
    time.sleep(0.05)
    assert not returned.is_set()
    checkpoint.set()
    assert returned.wait(PROMPT)
    thread.join(PROMPT)


def test_a_timed_wait_is_an_events() -> None:
    checkpoint = IdleCheckpoint()
    checkpoint.clear()
    assert checkpoint.wait(0.01) is False
    checkpoint.set()
    assert checkpoint.wait(0.01) is True


@pytest.fixture
def scp() -> Iterator[tuple[AE, int, list[Association]]]:
    """A pynetdicom Verification SCP on a free port, and the associations it accepted."""
    ae = AE(ae_title="PEER")
    ae.add_supported_context(Verification)
    accepted: list[Association] = []
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[
        (evt.EVT_ESTABLISHED, lambda event: accepted.append(event.assoc))])
    assert server is not None
    try:
        yield ae, port, accepted
    finally:
        server.shutdown()


def _requestor(port: int) -> Association:
    ae = AE(ae_title="RTMOVE")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
    return associate(ae, "127.0.0.1", port, "PEER", 5)


def _until(condition: object, limit: float) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.005)
    return False


def test_requestors_get_it_and_acceptors_do_not(
        scp: tuple[AE, int, list[Association]]) -> None:
    _ae, port, accepted = scp
    assoc = _requestor(port)
    try:
        assert isinstance(assoc._reactor_checkpoint, IdleCheckpoint)
        assert _until(lambda: accepted, PROMPT)
        assert not isinstance(accepted[0]._reactor_checkpoint, IdleCheckpoint)
        for _ in range(20):  # a request finds the thread at the checkpoint, and is served
            quiesce_reactor(assoc)
            assert assoc._reactor_checkpoint._cond._waiters  # type: ignore[attr-defined]
            assoc._reactor_checkpoint.set()
            status = assoc.send_c_echo()
            assert status is not None and status.Status == 0x0000
    finally:
        assoc.release()
    assert assoc.is_released


def test_a_peer_abort_reaches_an_idle_requestor_at_once(
        scp: tuple[AE, int, list[Association]]) -> None:
    _ae, port, accepted = scp
    assoc = _requestor(port)
    assert _until(lambda: accepted, PROMPT)
    time.sleep(0.05)  # idle: its thread waits at the checkpoint
    accepted[0].abort()
    assert _until(lambda: assoc.is_aborted, PROMPT), "the abort went unseen"
    assert _until(lambda: not assoc.is_alive(), PROMPT), "its thread did not end"


def test_a_peer_release_reaches_an_idle_requestor_at_once(
        scp: tuple[AE, int, list[Association]]) -> None:
    _ae, port, accepted = scp
    assoc = _requestor(port)
    assert _until(lambda: accepted, PROMPT)
    time.sleep(0.05)
    peer = threading.Thread(target=accepted[0].release, daemon=True)
    peer.start()  # the acceptor asks; the requestor's thread must answer it
    assert _until(lambda: not assoc.is_alive(), PROMPT), "the release went unanswered"
    peer.join(PROMPT)
    assert accepted[0].is_released
