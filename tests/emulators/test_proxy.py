"""The fault proxy over real loopback sockets: each toxic does what it says, and a proxy
leaves no thread, task or listening port behind.

Timing assertions are relative to the toxic (>= 0.8 of the added delay) with wide upper
bounds, so a loaded machine slows the tests down without failing them.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import random
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from emulators.faults.proxy import Proxy, Toxic
from emulators.peers import free_port

pytestmark = pytest.mark.timeout(60)

LOOPBACK = "127.0.0.1"
CHUNK = 65536
VERIFICATION = "1.2.840.10008.1.1"

Outcome = tuple[bytes, str]  # what a test server received, and how the connection ended
Behaviour = Callable[[socket.socket, "queue.Queue[Outcome]"], None]


class _Server(socketserver.ThreadingTCPServer):
    """A loopback server running ``behaviour`` on each connection in its own thread;
    server_close() joins those threads (block_on_close), so none outlives a test."""

    allow_reuse_address = True

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.outcomes: queue.Queue[Outcome] = queue.Queue()
        super().__init__((LOOPBACK, 0), _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def outcome(self) -> Outcome:
        return self.outcomes.get(timeout=5)


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        assert isinstance(self.server, _Server)
        self.request.settimeout(10)
        self.server.behaviour(self.request, self.server.outcomes)


def _receive(sock: socket.socket, outcomes: queue.Queue[Outcome],
             reply: Callable[[bytes], None] | None = None) -> None:
    """Read until EOF (or an error), replying to each chunk; record what came and how."""
    chunks = []
    ended = "eof"
    try:
        while data := sock.recv(CHUNK):
            chunks.append(data)
            if reply is not None:
                reply(data)
    except OSError as exc:
        ended = type(exc).__name__
    outcomes.put((b"".join(chunks), ended))


def echo(sock: socket.socket, outcomes: queue.Queue[Outcome]) -> None:
    _receive(sock, outcomes, sock.sendall)


def sink(sock: socket.socket, outcomes: queue.Queue[Outcome]) -> None:
    _receive(sock, outcomes)


def source(payload: bytes) -> Behaviour:
    """Send ``payload`` at once, half-close, then read until the client goes."""
    def behave(sock: socket.socket, outcomes: queue.Queue[Outcome]) -> None:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            outcomes.put((b"", type(exc).__name__))
            return
        _receive(sock, outcomes)
    return behave


@contextlib.contextmanager
def serving(behaviour: Behaviour) -> Iterator[_Server]:
    server = _Server(behaviour)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="test-server")
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextlib.contextmanager
def proxied(behaviour: Behaviour, *toxics: Toxic) -> Iterator[tuple[Proxy, _Server]]:
    with serving(behaviour) as server, Proxy((LOOPBACK, server.port), toxics) as proxy:
        yield proxy, server


def connect(proxy: Proxy, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection((proxy.host, proxy.port), timeout=timeout)


def recv_all(sock: socket.socket) -> bytes:
    chunks = []
    while data := sock.recv(CHUNK):
        chunks.append(data)
    return b"".join(chunks)


def round_trip(sock: socket.socket, message: bytes) -> float:
    """Seconds for ``message`` to come back from an echo server."""
    start = time.monotonic()
    sock.sendall(message)
    received = b""
    while len(received) < len(message):
        data = sock.recv(CHUNK)
        assert data, "connection closed mid round trip"
        received += data
    assert received == message
    return time.monotonic() - start


def _proxy_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("dbdsim-")]


@pytest.fixture(autouse=True)
def _no_proxy_thread_left() -> Iterator[None]:
    yield
    assert _proxy_threads() == []


def test_bytes_pass_unchanged_both_ways_and_are_counted() -> None:
    payload = random.Random(1).randbytes(1_000_000)
    with proxied(echo) as (proxy, server), connect(proxy) as client:
        def send() -> None:
            client.sendall(payload)
            client.shutdown(socket.SHUT_WR)
        sender = threading.Thread(target=send)
        sender.start()
        received = recv_all(client)
        sender.join()
        assert server.outcome() == (payload, "eof")
        assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
        assert (proxy.bytes_up, proxy.bytes_down, proxy.connections) == (
            len(payload), len(payload), 1)


def test_latency_delays_each_direction() -> None:
    with proxied(echo, Toxic("latency", latency=0.1)) as (proxy, _), connect(proxy) as client:
        assert round_trip(client, b"ping") >= 0.8 * 0.2


def test_latency_only_upstream_delays_once() -> None:
    with (proxied(echo, Toxic("latency", "upstream", latency=0.2)) as (proxy, _),
          connect(proxy) as client):
        elapsed = round_trip(client, b"ping")
    assert 0.8 * 0.2 <= elapsed < 0.4  # both ways would take >= 0.4


def test_jitter_keeps_byte_order() -> None:
    messages = [b"%05d;" % number for number in range(150)]
    with (proxied(echo, Toxic("latency", latency=0.02, jitter=0.02)) as (proxy, _),
          connect(proxy) as client):
        for message in messages:
            client.sendall(message)
            time.sleep(0.001)  # separate chunks, each with its own jitter
        client.shutdown(socket.SHUT_WR)
        assert recv_all(client) == b"".join(messages)


def test_jitter_varies_the_delay_around_the_latency() -> None:
    toxic = Toxic("latency", "upstream", latency=0.05, jitter=0.04)
    with proxied(echo, toxic) as (proxy, _), connect(proxy) as client:
        elapsed = [round_trip(client, b"ping") for _ in range(8)]
    assert min(elapsed) >= 0.8 * 0.01
    assert max(elapsed) - min(elapsed) >= 0.01  # seeded: the same 8 delays every run


def test_bandwidth_caps_throughput() -> None:
    payload = random.Random(2).randbytes(200_000)
    with (proxied(sink, Toxic("bandwidth", "upstream", rate=1_000_000)) as (proxy, server),
          connect(proxy) as client):
        start = time.monotonic()
        client.sendall(payload)
        client.shutdown(socket.SHUT_WR)
        assert recv_all(client) == b""  # the sink closes once it has read everything
        elapsed = time.monotonic() - start
        assert server.outcome() == (payload, "eof")
    assert elapsed >= 0.15


def test_slicer_delivers_many_small_reads() -> None:
    payload = random.Random(3).randbytes(10_000)
    toxic = Toxic("slicer", "downstream", average_size=100, size_variation=50, delay=0.002)
    with proxied(source(payload), toxic) as (proxy, _), connect(proxy) as client:
        reads = []
        while data := client.recv(CHUNK):
            reads.append(data)
    assert b"".join(reads) == payload
    assert len(reads) >= 40  # ~100 slices; some may merge on a busy machine


def test_limit_data_upstream_passes_exactly_the_limit() -> None:
    payload = random.Random(4).randbytes(50_000)
    toxic = Toxic("limit_data", "upstream", bytes=1000)
    with proxied(sink, toxic) as (proxy, server), connect(proxy) as client:
        with contextlib.suppress(OSError):  # the proxy may cut us mid-send
            client.sendall(payload)
        assert server.outcome() == (payload[:1000], "eof")
        assert proxy.bytes_up == 1000


def test_limit_data_downstream_passes_exactly_the_limit_then_eof() -> None:
    payload = random.Random(5).randbytes(50_000)
    toxic = Toxic("limit_data", "downstream", bytes=1000)
    with proxied(source(payload), toxic) as (proxy, _), connect(proxy) as client:
        assert recv_all(client) == payload[:1000]
        assert proxy.bytes_down == 1000


def test_timeout_zero_passes_nothing_and_stop_still_returns() -> None:
    with serving(echo) as server:
        proxy = Proxy((LOOPBACK, server.port), [Toxic("timeout")]).start()
        try:
            with connect(proxy) as client:
                client.sendall(b"ping")
                client.settimeout(0.5)
                with pytest.raises(TimeoutError):
                    client.recv(CHUNK)  # still open, yet nothing comes
                start = time.monotonic()
                proxy.stop()
                assert time.monotonic() - start < 2
                client.settimeout(5)
                assert client.recv(CHUNK) == b""  # stop() closed it
            assert server.outcome() == (b"", "eof")  # the ping never reached it
        finally:
            proxy.stop()


def test_timeout_closes_the_connection_after_its_time() -> None:
    with proxied(echo, Toxic("timeout", timeout=0.3)) as (proxy, server), \
            connect(proxy) as client:
        start = time.monotonic()
        client.sendall(b"ping")
        assert client.recv(CHUNK) == b""  # closed, and the ping was not echoed
        elapsed = time.monotonic() - start
        assert server.outcome() == (b"", "eof")
    assert 0.8 * 0.3 <= elapsed < 3


def test_reset_peer_resets_both_sides() -> None:
    with proxied(echo, Toxic("reset_peer", timeout=0.3)) as (proxy, server), \
            connect(proxy) as client:
        start = time.monotonic()
        assert round_trip(client, b"ping") < 0.3  # data flows until the reset
        with pytest.raises(ConnectionResetError):  # Linux: ECONNRESET after SO_LINGER 0
            client.recv(CHUNK)
        elapsed = time.monotonic() - start
        assert server.outcome() == (b"ping", "ConnectionResetError")
    assert 0.8 * 0.3 <= elapsed < 3


def test_toxic_limited_to_first_connection_lets_a_retry_through() -> None:
    with proxied(echo, Toxic("reset_peer", connections=1)) as (proxy, _):
        with connect(proxy) as first, pytest.raises(ConnectionResetError):
            first.sendall(b"ping")
            first.recv(CHUNK)
        with connect(proxy) as second:
            round_trip(second, b"ping")
        assert proxy.connections == 2


def test_unreachable_upstream_closes_the_client() -> None:
    with Proxy((LOOPBACK, free_port())) as proxy, connect(proxy) as client:
        assert client.recv(CHUNK) == b""
        assert proxy.connections == 1


def test_replacing_toxics_affects_the_next_chunks() -> None:
    with proxied(echo) as (proxy, _), connect(proxy) as client:
        assert round_trip(client, b"fast") < 0.25
        proxy.toxics = (Toxic("latency", latency=0.3),)
        assert round_trip(client, b"slow") >= 0.8 * 0.6
        proxy.toxics = ()
        assert round_trip(client, b"fast again") < 0.25


def test_stop_is_prompt_with_a_sleeping_toxic_and_a_peer_that_never_reads() -> None:
    payload = bytes(32_000_000)  # more than the socket buffers and the read-ahead hold
    with serving(source(payload)) as server:
        proxy = Proxy((LOOPBACK, server.port), [Toxic("latency", "upstream", latency=30)])
        with proxy, connect(proxy) as client:
            client.sendall(b"held for 30 s")
            deadline = time.monotonic() + 10
            while proxy.bytes_down < 1_000_000:  # until the proxy is blocked on us
                assert time.monotonic() < deadline
                time.sleep(0.01)
            start = time.monotonic()
            proxy.stop()
            assert time.monotonic() - start < 2
        _, ended = server.outcome()
        assert ended != "eof"  # cut off while sending


def test_stop_is_idempotent_and_leaves_no_thread_or_port() -> None:
    before = set(threading.enumerate())
    with serving(echo) as server:
        proxy = Proxy((LOOPBACK, server.port), name="leak-check").start()
        port = proxy.port
        client = connect(proxy)
        round_trip(client, b"ping")
        proxy.stop()  # with the connection still open
        proxy.stop()
        assert client.recv(CHUNK) == b""
        client.close()
    assert set(threading.enumerate()) - before == set()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((LOOPBACK, port), timeout=5).close()
    with pytest.raises(RuntimeError, match="twice"):
        proxy.start()


def test_a_taken_port_fails_start() -> None:
    with (Proxy((LOOPBACK, free_port())) as first,
          pytest.raises(RuntimeError, match="cannot listen")):
        Proxy((LOOPBACK, free_port()), listen=(LOOPBACK, first.port)).start()


def test_port_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="start"):
        _ = Proxy((LOOPBACK, 1)).port


@pytest.mark.parametrize(("fields", "message"), [
    ({"kind": "jam"}, "unknown toxic kind"),
    ({"kind": "latency", "direction": "sideways"}, "direction must be"),
    ({"kind": "latency", "latency": -0.1}, "latency must be"),
    ({"kind": "latency", "latency": float("nan")}, "finite"),
    ({"kind": "bandwidth"}, "needs rate"),
    ({"kind": "bandwidth", "rate": 1.5}, "whole number"),
    ({"kind": "slicer"}, "needs average_size"),
    ({"kind": "limit_data", "bytes": -1}, "bytes must be"),
    ({"kind": "timeout", "connections": -1}, "connections must be"),
    ({"kind": "timeout", "latency": 1.0}, "does not use latency"),
])
def test_bad_toxics_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Toxic(**fields)


def test_toxics_must_be_toxics() -> None:
    with pytest.raises(TypeError, match="Toxic"):
        Proxy((LOOPBACK, 1), ["latency"])  # type: ignore[list-item]


def test_dicom_echo_through_the_proxy_and_a_cut_association() -> None:
    from pynetdicom import AE

    port = free_port()
    scp = AE(ae_title="PROXYSCP")
    scp.add_supported_context(VERIFICATION)
    server = scp.start_server((LOOPBACK, port), block=False)
    assert server is not None
    try:
        with Proxy((LOOPBACK, port), name="dicom") as proxy:
            scu = AE(ae_title="PROXYSCU")
            scu.add_requested_context(VERIFICATION)
            scu.acse_timeout = scu.dimse_timeout = scu.network_timeout = 5
            assoc = scu.associate(proxy.host, proxy.port, ae_title="PROXYSCP")
            assert assoc.is_established
            assert assoc.send_c_echo().Status == 0
            assoc.release()
            assert proxy.bytes_up > 0 and proxy.bytes_down > 0

            proxy.toxics = (Toxic("limit_data", "upstream", bytes=100),)
            start = time.monotonic()
            cut = scu.associate(proxy.host, proxy.port, ae_title="PROXYSCP")
            assert not cut.is_established
            assert time.monotonic() - start < 4  # seen as closed, not timed out
            assert proxy.connections == 2
    finally:
        server.shutdown()
