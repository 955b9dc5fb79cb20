"""An in-process TCP proxy that puts Toxiproxy-style network faults ("toxics") between
two DICOM peers: a client and a server, or a server and its C-STORE destination.

Why in-process: tests and scenarios need faults on loopback without installing
Toxiproxy, and seeded, so a run that failed replays with the same jitter and slices.
The proxy runs its own asyncio loop in one background thread, so blocking callers
(pynetdicom, plain sockets) use it from any thread.

Each accepted connection gets its own connection to the upstream address and two
pumps: upstream (client to server bytes) and downstream (server to client). A pump's
reader turns each chunk into timed pieces by passing it through the toxics active for
its direction, in list order; its writer releases the pieces in order at their times.
Release times are computed when a chunk is read, not by sleeping in the reader, so
latency delays the bytes without also throttling throughput.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import socket
import struct
import threading
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Self, get_args

__all__ = ["Direction", "Proxy", "Toxic"]

log = logging.getLogger("dbdsim.proxy")

Direction = Literal["upstream", "downstream", "both"]
_Stream = Literal["upstream", "downstream"]
_DIRECTIONS: tuple[str, ...] = get_args(Direction)

CHUNK = 64 * 1024  # bytes read at once from either side
_READ_AHEAD = 64  # chunks a direction may hold (latency) before its reader waits
_CLOSE_GRACE = 5.0  # seconds a closing side may take to accept our last bytes
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0
_BANDWIDTH_STEPS = 50  # a bandwidth toxic releases rate/50 bytes at a time: smooth pacing
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a TCP RST

# The fields each kind reads, besides direction and connections; any other non-zero
# field is a mistake (Toxic("timeout", latency=1) would silently do something else).
_USES: dict[str, frozenset[str]] = {
    "latency": frozenset({"latency", "jitter"}),
    "bandwidth": frozenset({"rate"}),
    "slicer": frozenset({"average_size", "size_variation", "delay"}),
    "limit_data": frozenset({"bytes"}),
    "timeout": frozenset({"timeout"}),
    "reset_peer": frozenset({"timeout"}),
}
_INTEGERS = ("rate", "average_size", "size_variation", "bytes", "connections")
_SECONDS = ("latency", "jitter", "delay", "timeout")


@dataclass(frozen=True)
class Toxic:
    """One network fault, applied to the bytes of one or both directions.

    ``timeout`` serves two kinds: for ``timeout`` it is when the silenced connection
    is closed (0: held open until the proxy stops); for ``reset_peer`` it is how long
    after the connection opened both sides are reset. A ``reset_peer`` toxic resets the
    whole connection whatever its direction. ``limit_data`` with ``bytes=0`` closes the
    connection when the first bytes arrive in its direction.
    """

    kind: str
    direction: Direction = "both"
    latency: float = 0.0
    jitter: float = 0.0
    rate: int = 0
    average_size: int = 0
    size_variation: int = 0
    delay: float = 0.0
    bytes: int = 0
    timeout: float = 0.0
    connections: int = 0

    def __post_init__(self) -> None:
        """Refuse a toxic that would do something other than what it says, at once
        rather than mid-run."""
        if self.kind not in _USES:
            raise ValueError(f"unknown toxic kind {self.kind!r}; expected one of "
                             f"{', '.join(_USES)}")
        if self.direction not in _DIRECTIONS:
            raise ValueError(f"{self.kind} toxic: direction must be one of "
                             f"{', '.join(_DIRECTIONS)}, not {self.direction!r}")
        for name in _INTEGERS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{self.kind} toxic: {name} must be a whole number >= 0, "
                                 f"not {value!r}")
        for name in _SECONDS:
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, int | float)
                    or not math.isfinite(value) or value < 0):
                raise ValueError(f"{self.kind} toxic: {name} must be a finite number of "
                                 f"seconds >= 0, not {value!r}")
        unused = [name for name in (*_INTEGERS, *_SECONDS)
                  if name != "connections" and name not in _USES[self.kind]
                  and getattr(self, name)]
        if unused:
            raise ValueError(f"a {self.kind} toxic does not use {', '.join(unused)}; "
                             f"it reads {', '.join(sorted(_USES[self.kind]))}")
        if self.kind == "bandwidth" and self.rate == 0:
            raise ValueError("a bandwidth toxic needs rate > 0 (bytes per second)")
        if self.kind == "slicer" and self.average_size == 0:
            raise ValueError("a slicer toxic needs average_size > 0 (bytes per slice)")

    def applies(self, stream: _Stream, connection: int) -> bool:
        """Whether this toxic acts on ``stream`` of the ``connection``-th connection."""
        return (self.direction in (stream, "both")
                and (self.connections == 0 or connection <= self.connections))


class _Piece(NamedTuple):
    """Bytes to deliver at a loop time; ``close`` ends the connection right after."""

    at: float
    data: bytes
    close: bool = False


_Key = tuple[int, Toxic]  # a toxic and its place in the list: two equal toxics both act
_State = dict[_Key, float]
_Stage = Callable[[Toxic, list[_Piece], _State, _Key, random.Random], list[_Piece]]


def _latency(toxic: Toxic, pieces: list[_Piece], state: _State, key: _Key,
             rng: random.Random) -> list[_Piece]:
    """Delay each piece; never before the previous one, so jitter keeps byte order."""
    last = state.get(key, -math.inf)
    out = []
    for piece in pieces:
        delay = toxic.latency + (rng.uniform(-toxic.jitter, toxic.jitter) if toxic.jitter
                                 else 0.0)
        last = max(last, piece.at + max(0.0, delay))
        out.append(piece._replace(at=last))
    state[key] = last
    return out


def _bandwidth(toxic: Toxic, pieces: list[_Piece], state: _State, key: _Key,
               rng: random.Random) -> list[_Piece]:
    """Release each small part when the link, busy since ``state``, would have sent it."""
    step = max(1, toxic.rate // _BANDWIDTH_STEPS)
    free = state.get(key, -math.inf)
    out = []
    for piece in pieces:
        parts = [piece.data[i:i + step] for i in range(0, len(piece.data), step)] or [b""]
        for number, part in enumerate(parts, 1):
            free = max(free, piece.at) + len(part) / toxic.rate
            out.append(_Piece(free, part, piece.close and number == len(parts)))
    state[key] = free
    return out


def _slicer(toxic: Toxic, pieces: list[_Piece], state: _State, key: _Key,
            rng: random.Random) -> list[_Piece]:
    """Cut pieces into slices of about average_size, ``delay`` apart (across chunks too)."""
    slot = state.get(key, -math.inf)
    out = []
    for piece in pieces:
        offset = 0
        while True:
            variation = toxic.size_variation
            size = max(1, toxic.average_size + (rng.randint(-variation, variation)
                                                if variation else 0))
            part = piece.data[offset:offset + size]
            offset += len(part)
            slot = max(slot, piece.at)
            last = offset >= len(piece.data)
            out.append(_Piece(slot, part, piece.close and last))
            slot += toxic.delay
            if last:
                break
    state[key] = slot
    return out


def _limit_data(toxic: Toxic, pieces: list[_Piece], state: _State, key: _Key,
                rng: random.Random) -> list[_Piece]:
    """Pass bytes up to the limit, mark the piece that reaches it to close, drop the rest."""
    passed = state.get(key, 0.0)  # math.inf once the closing piece has gone out
    out = []
    for piece in pieces:
        if passed == math.inf:
            break
        part = piece.data[:toxic.bytes - int(passed)]
        passed += len(part)
        if passed >= toxic.bytes:
            out.append(_Piece(piece.at, part, True))
            passed = math.inf
        else:
            out.append(piece._replace(data=part))
    state[key] = passed
    return out


def _timeout(toxic: Toxic, pieces: list[_Piece], state: _State, key: _Key,
             rng: random.Random) -> list[_Piece]:
    """Swallow the data (the link's timer closes it later, if ever); keep any close."""
    return [piece._replace(data=b"") for piece in pieces if piece.close]


def _reset_peer(toxic: Toxic, pieces: list[_Piece], state: _State, key: _Key,
                rng: random.Random) -> list[_Piece]:
    """Data passes until the link's timer resets the connection."""
    return pieces


_STAGES: dict[str, _Stage] = {
    "latency": _latency,
    "bandwidth": _bandwidth,
    "slicer": _slicer,
    "limit_data": _limit_data,
    "timeout": _timeout,
    "reset_peer": _reset_peer,
}


def _set_option(writer: asyncio.StreamWriter, level: int, option: int,
                value: int | bytes) -> None:
    """Set a socket option on a transport's socket; a socket already gone is no error."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(level, option, value)
    except OSError as exc:
        log.debug("setsockopt(%d, %d) failed: %s", level, option, exc)


class _Pump:
    """One direction of one connection: its source, its sink and its toxics' state."""

    def __init__(self, stream: _Stream, source: asyncio.StreamReader,
                 sink: asyncio.StreamWriter, rng: random.Random) -> None:
        self.stream = stream
        self.source = source
        self.sink = sink
        self.rng = rng  # its own generator: the pieces do not depend on thread timing
        self.queue: asyncio.Queue[list[_Piece] | None] = asyncio.Queue(_READ_AHEAD)
        self.state: _State = {}
        self.done = False  # EOF passed on to the sink


class _Link:
    """One accepted connection, from accept to both sockets closed."""

    def __init__(self, proxy: Proxy, index: int, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.index = index
        self.client_reader = reader
        self.client_writer = writer
        self.server_writer: asyncio.StreamWriter | None = None
        self.loop = asyncio.get_running_loop()
        self.opened = self.loop.time()
        self.label = f"{proxy.name} #{index}"
        self.pumps: list[_Pump] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.armed: set[Toxic] = set()
        self.ended = asyncio.Event()
        self.reason = ""
        self.reset = False

    def writers(self) -> list[asyncio.StreamWriter]:
        return [w for w in (self.client_writer, self.server_writer) if w is not None]

    def active(self, stream: _Stream) -> list[_Key]:
        return [(i, t) for i, t in enumerate(self.proxy.toxics) if t.applies(stream, self.index)]

    def end(self, reason: str, *, reset: bool = False) -> None:
        """Ask run() to close the connection; the first reason wins."""
        if not self.ended.is_set():
            self.reason, self.reset = reason, reset
            self.ended.set()

    async def run(self) -> None:
        try:
            try:
                reader, writer = await asyncio.open_connection(*self.proxy.upstream)
            except OSError as exc:
                log.info("%s: upstream %s:%d unreachable (%s); closing the client",
                         self.label, *self.proxy.upstream, exc)
                self.end("upstream unreachable")
            else:
                self.server_writer = writer
                _set_option(writer, socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._start(reader, writer)
            await self.ended.wait()
            await self._stop_tasks()
            await self._close()
        finally:
            for task in self.tasks:
                task.cancel()
            for writer in self.writers():
                writer.transport.abort()  # no-op once closed; else stop() is cutting it

    def _start(self, server_reader: asyncio.StreamReader,
               server_writer: asyncio.StreamWriter) -> None:
        seed = f"{self.proxy.seed}:{self.index}"
        self.pumps = [
            _Pump("upstream", self.client_reader, server_writer,
                  random.Random(f"{seed}:upstream")),
            _Pump("downstream", server_reader, self.client_writer,
                  random.Random(f"{seed}:downstream")),
        ]
        for pump in self.pumps:
            self._spawn(self._read(pump), f"reading {pump.stream}")
            self._spawn(self._write(pump), f"writing {pump.stream}")
        for stream in ("upstream", "downstream"):
            for _, toxic in self.active(stream):
                self._arm(toxic)

    def _spawn(self, work: Coroutine[Any, Any, None], what: str) -> None:
        task = self.loop.create_task(work, name=f"{self.label} {what}")
        self.tasks.add(task)
        task.add_done_callback(lambda done: self._finished(done, what))

    def _finished(self, task: asyncio.Task[None], what: str) -> None:
        """Turn a task's failure into the end of this connection, never of the proxy."""
        self.tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, OSError):  # a peer reset or vanished: routine for a fault proxy
            log.debug("%s: %s failed: %r", self.label, what, exc)
            self.end(f"{what} failed")
        elif exc is not None:
            log.info("%s: %s raised; closing the connection", self.label, what,
                     exc_info=exc)
            self.end(f"{what} raised")

    def _arm(self, toxic: Toxic) -> None:
        """Start a timeout or reset_peer toxic's clock once per connection."""
        if toxic in self.armed or self.ended.is_set():
            return
        if toxic.kind == "reset_peer":
            self.armed.add(toxic)
            wait = max(0.0, self.opened + toxic.timeout - self.loop.time())
            self._spawn(self._later(wait, "reset_peer", reset=True), "reset_peer timer")
        elif toxic.kind == "timeout" and toxic.timeout > 0:
            self.armed.add(toxic)
            self._spawn(self._later(toxic.timeout, "timeout", reset=False), "timeout timer")

    async def _later(self, wait: float, reason: str, *, reset: bool) -> None:
        await asyncio.sleep(wait)
        self.end(reason, reset=reset)

    def _shape(self, pump: _Pump, data: bytes) -> list[_Piece]:
        pieces = [_Piece(self.loop.time(), data)]
        for key in self.active(pump.stream):
            toxic = key[1]
            self._arm(toxic)
            pieces = _STAGES[toxic.kind](toxic, pieces, pump.state, key, pump.rng)
            if not pieces:
                break
        return pieces

    async def _read(self, pump: _Pump) -> None:
        while data := await pump.source.read(CHUNK):
            pieces = self._shape(pump, data)
            if pieces:
                await pump.queue.put(pieces)
        if any(toxic.kind == "timeout" for _, toxic in self.active(pump.stream)):
            log.debug("%s: %s EOF held by a timeout toxic", self.label, pump.stream)
            return
        await pump.queue.put(None)

    async def _write(self, pump: _Pump) -> None:
        while (pieces := await pump.queue.get()) is not None:
            for piece in pieces:
                wait = piece.at - self.loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if piece.data:
                    pump.sink.write(piece.data)
                    self.proxy._delivered(pump.stream, len(piece.data))
                    await pump.sink.drain()
                if piece.close:
                    self.end(f"limit_data reached {pump.stream}")
                    return
        if pump.sink.can_write_eof():
            pump.sink.write_eof()  # half-close: the peer sees EOF, the other way still flows
        pump.done = True
        if all(p.done for p in self.pumps):
            self.end("both sides closed")

    async def _stop_tasks(self) -> None:
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _close(self) -> None:
        writers = self.writers()
        log.debug("%s: closing (%s)", self.label, self.reason)
        if self.reset:
            for writer in writers:
                _set_option(writer, socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                writer.transport.abort()
            return
        for writer in writers:
            writer.close()  # FIN once the bytes already written have gone
        try:
            async with asyncio.timeout(_CLOSE_GRACE):
                results = await asyncio.gather(*(w.wait_closed() for w in writers),
                                               return_exceptions=True)
        except TimeoutError:
            log.debug("%s: a peer did not take our last bytes; aborting", self.label)
            return  # run() aborts the transports
        for result in results:
            if isinstance(result, BaseException):
                log.debug("%s: closed with %r", self.label, result)


class Proxy:
    """A TCP proxy with toxics, listening on its own loop in one background thread.

    Use as ``with Proxy((host, port), [Toxic("latency", latency=0.1)]) as proxy:`` and
    connect to ``proxy.host``/``proxy.port``. ``toxics`` may be replaced while it runs:
    new chunks and new connections see the new list. A stopped proxy cannot restart.
    """

    def __init__(self, upstream: tuple[str, int], toxics: Sequence[Toxic] = (), *,
                 listen: tuple[str, int] = ("127.0.0.1", 0), seed: int = 0,
                 name: str = "proxy") -> None:
        self.upstream = (upstream[0], int(upstream[1]))
        self.listen = (listen[0], int(listen[1]))
        self.seed = seed
        self.name = name
        self.toxics = toxics
        self._lock = threading.Lock()
        self._accepted = 0
        self._up = 0
        self._down = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: Exception | None = None
        self._address: tuple[str, int] | None = None
        self._links: set[asyncio.Task[None]] = set()

    @property
    def toxics(self) -> tuple[Toxic, ...]:
        return self._toxics

    @toxics.setter
    def toxics(self, toxics: Sequence[Toxic]) -> None:
        toxics = tuple(toxics)
        for toxic in toxics:
            if not isinstance(toxic, Toxic):
                raise TypeError(f"toxics must be Toxic instances, not {toxic!r}")
        self._toxics = toxics  # one reference swap: the loop thread sees old or new list

    @property
    def host(self) -> str:
        return self._bound()[0]

    @property
    def port(self) -> int:
        return self._bound()[1]

    @property
    def connections(self) -> int:
        with self._lock:
            return self._accepted

    @property
    def bytes_up(self) -> int:
        with self._lock:
            return self._up

    @property
    def bytes_down(self) -> int:
        with self._lock:
            return self._down

    def start(self) -> Self:
        """Listen, and return once connections are accepted (raises if it cannot)."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError(f"{self.name}: start() called twice (a proxy runs once)")
            thread = self._thread = threading.Thread(
                target=self._serve, name=f"dbdsim-{self.name}", daemon=True)
        thread.start()
        if not self._ready.wait(_START_TIMEOUT):
            self.stop()
            raise TimeoutError(f"{self.name}: not listening after {_START_TIMEOUT} s")
        if self._error is not None:
            thread.join()
            raise RuntimeError(f"{self.name}: cannot listen on {self.listen[0]}:"
                               f"{self.listen[1]}: {self._error}") from self._error
        return self

    def stop(self) -> None:
        """Close the listener and every connection, and join the thread (idempotent)."""
        thread = self._thread
        if thread is None:
            return
        if thread is threading.current_thread():
            raise RuntimeError(f"{self.name}: stop() called from the proxy's own thread")
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and thread.is_alive():
            try:
                loop.call_soon_threadsafe(stopping.set)
            except RuntimeError:  # the loop closed meanwhile: the thread is ending anyway
                log.debug("%s: loop already closed", self.name)
        thread.join(_STOP_TIMEOUT)
        if thread.is_alive():
            log.warning("%s: thread still running %s s after stop()", self.name, _STOP_TIMEOUT)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f"{self._address[0]}:{self._address[1]}" if self._address else "not started"
        return (f"Proxy({self.name!r}, {where} -> {self.upstream[0]}:{self.upstream[1]}, "
                f"{len(self.toxics)} toxics)")

    def _bound(self) -> tuple[str, int]:
        if self._address is None:
            raise RuntimeError(f"{self.name}: not listening (call start() first)")
        return self._address

    def _delivered(self, stream: _Stream, count: int) -> None:
        with self._lock:
            if stream == "upstream":
                self._up += count
            else:
                self._down += count

    def _serve(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as exc:
            if self._ready.is_set():
                log.info("%s: loop ended with an error", self.name, exc_info=True)
            else:
                self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(self._on_loop_error)
        self._loop = loop
        stopping = self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._accept, *self.listen)
        host, port = server.sockets[0].getsockname()[:2]
        self._address = (str(host), int(port))
        log.debug("%s: listening on %s:%d for %s:%d", self.name, host, port, *self.upstream)
        self._ready.set()
        try:
            await stopping.wait()
        finally:
            stopping.set()  # also when cancelled: _accept refuses late connections
            server.close()
            links = list(self._links)
            for task in links:
                task.cancel()
            await asyncio.gather(*links, return_exceptions=True)
            await server.wait_closed()
            log.debug("%s: stopped after %d connections", self.name, self.connections)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Called in the loop for each new client; a plain function, so a connection
        accepted while stopping is closed here rather than in a task never started."""
        with self._lock:
            self._accepted += 1
            index = self._accepted
        if self._stopping is None or self._stopping.is_set():
            writer.transport.abort()
            return
        _set_option(writer, socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        log.debug("%s: connection #%d from %s", self.name, index,
                  writer.get_extra_info("peername"))
        link = _Link(self, index, reader, writer)
        task = asyncio.get_running_loop().create_task(link.run(), name=link.label)
        self._links.add(task)
        task.add_done_callback(self._links.discard)

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Asyncio's complaints (a transport error after close) go to our log, not stderr."""
        log.debug("%s: %s", self.name, context.get("message"), exc_info=context.get("exception"))
