"""TCP behaviour pynetdicom lacks, set on every DICOM connection when it opens.

* Nagle's algorithm off. A C-STORE is a command PDU then data PDUs; with Nagle on, a
  small object's last segment waits for the peer's delayed ACK (~40 ms on Linux),
  which made moving 20 small slices take 1 s instead of 0.1 s. DCMTK does the same
  with TCP_NODELAY=1.
* Reads bounded in time. pynetdicom's DUL thread reads a PDU with blocking calls
  until it is whole, and an abort (its own on an ACSE or DIMSE timeout included)
  waits for that thread: a peer trickling a PDU a few bytes a second (a slow loris)
  held a timed-out association, and whoever waited on it, until the PDU ended, for
  ever if it never does. Here each read must be done within the network timeout; if
  not, pynetdicom sees the connection as closed (Evt17) and the association ends.
* Writes bounded in time (:func:`bound_sends`): a peer that stops reading ends the
  connection within the network timeout instead of holding the writer for ever.
* The DUL waits on its socket instead of sleeping. pynetdicom's DUL thread sleeps 1 ms
  whenever it finds nothing to do, so each message that arrived while it slept waited
  for the rest of that sleep (and, on 2 cores, for the GIL after it): half of the
  File Daemon's time per CT slice from storescu went on such waits. Here it sleeps in
  ``select`` on the socket for as long, so arriving data wakes it at once. What other
  threads queue for it is still looked at after each wait, as before. An idle DUL
  in data transfer waits longer each time, up to 10 ms: sixteen C-MOVEs at once kept 32
  DUL threads waking 1,000 times a second each, for nothing, and the GIL they took cost
  the moves a core (their requests are written by the sending threads themselves, and a
  reply from the peer still ends the wait at once). Outside data transfer it stays at
  1 ms: an ending association holds its slot until its DUL sees it is told to stop.
* A requestor's plain DIMSE-C responses are decoded without pydicom
  (:mod:`client.response_lane`).
* An idle requestor's association thread waits for news instead of polling every
  millisecond (:mod:`client.idle_reactor`).
* A request of ours that the association's end overtook is dropped, not raised out of
  the DUL thread (:mod:`client.dul_guards`).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import time
import weakref
from typing import Any

from pynetdicom import _config, evt
from pynetdicom._handlers import (
    standard_dimse_recv_handler,
    standard_dimse_sent_handler,
    standard_pdu_recv_handler,
    standard_pdu_sent_handler,
)
from pynetdicom.events import Event, EventHandlerType

_LOG = logging.getLogger(__name__)
_CHUNK = 65536  # bytes per socket read (pynetdicom reads 4 KB at a time)
# The maximum length negotiated bounds P-DATA-TF PDUs only (PS3.8 D.1); an association
# request with many contexts or a user identity may be longer, but not this long.
_LONGEST_OTHER_PDU = 1 << 20
_LONGEST_IDLE_WAIT = 0.01  # seconds: an idle DUL's longest wait on its socket


def plain_socket(transport: object) -> socket.socket | None:
    """The connection's TCP socket, or None for anything else (TLS keeps data of its own
    that ``select`` does not see, and takes no receive flags)."""
    sock = getattr(transport, "socket", None)
    if not isinstance(sock, socket.socket) or isinstance(sock, ssl.SSLSocket):
        return None
    return sock


def disable_nagle(event: Event) -> None:
    """EVT_CONN_OPEN handler: fires for accepted and for requested connections alike."""
    transport = event.assoc.dul.socket
    sock = getattr(transport, "socket", None)
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def bound_reads(event: Event) -> None:
    """EVT_CONN_OPEN handler: each read the DUL makes (a PDU header, then its body)
    must end within the association's network timeout, however the bytes trickle, and
    no PDU may be longer than this end accepts (a lying length field would otherwise
    be buffered until the peer stops streaming)."""
    assoc = event.assoc
    transport = assoc.dul.socket
    limit = assoc.network_timeout
    sock = plain_socket(transport)
    if limit is None or sock is None:
        return

    def recv(nr_bytes: int) -> bytearray:
        # pynetdicom's contract: up to nr_bytes, fewer only when the peer closed.
        longest = longest_pdu(assoc)
        if longest is not None and nr_bytes > longest:
            raise ConnectionError(f"a PDU of {nr_bytes} bytes, longer than the {longest} "
                                  "this end accepts")
        data = bytearray()
        deadline: float | None = None
        while len(data) < nr_bytes:
            # What has arrived is taken at once (one system call); only a read that
            # would block waits, and all the waits of one read share one deadline.
            # (Switching the socket's timeout on and off for each read cost four system
            # calls a PDU: 20 of the 29 µs each 16 KB PDU took.)
            try:
                chunk = sock.recv(min(nr_bytes - len(data), _CHUNK), socket.MSG_DONTWAIT)
            except BlockingIOError:
                now = time.monotonic()
                deadline = now + limit if deadline is None else deadline
                if now >= deadline:
                    raise TimeoutError(f"a PDU read took over {limit:g} s (network "
                                       "timeout)") from None
                select.select([sock], [], [], deadline - now)
                continue
            if not chunk:
                break
            data += chunk
        return data

    cast_transport: Any = transport
    cast_transport.recv = recv


def bound_sends(event: Event) -> None:
    """EVT_CONN_OPEN handler: a write to the peer must make progress within the
    association's network timeout, or the connection counts as closed (Evt17), as
    pynetdicom counts a failed send.

    pynetdicom writes with blocking sends and no timeout: a peer that stops reading
    (its receive window full: a C-GET's requestor gone to sleep, a stuck destination of
    a C-MOVE) held the writing thread for as long as the kernel kept the connection,
    hours, and with it the association, its slot, and whoever waited for it (a daemon's
    stop included). Each send here takes what the socket buffer takes at once and waits
    in ``select`` only while it is full.
    """
    assoc = event.assoc
    transport: Any = assoc.dul.socket
    limit = assoc.network_timeout
    sock = plain_socket(transport)
    if limit is None or sock is None:
        return

    def send(bytestream: bytes) -> None:
        view = memoryview(bytestream)
        sent, stalled = 0, None  # stalled: when the buffer was last found full
        try:
            while sent < len(view):
                try:
                    sent += sock.send(view[sent:], socket.MSG_DONTWAIT)
                    stalled = None
                except BlockingIOError:
                    now = time.monotonic()
                    stalled = now if stalled is None else stalled
                    if now - stalled >= limit:
                        raise TimeoutError(f"the peer took nothing for {limit:g} s "
                                           "(network timeout)") from None
                    select.select([], [sock], [], stalled + limit - now)
            if assoc.get_handlers(evt.EVT_DATA_SENT):
                evt.trigger(assoc, evt.EVT_DATA_SENT, {"data": bytestream})
        except Exception as exc:  # as pynetdicom's send: the connection is over
            _LOG.warning("sending to %s failed: %s; closing the connection",
                         assoc.requestor.address if assoc.is_acceptor
                         else assoc.acceptor.address, exc)
            transport.event_queue.put("Evt17")

    transport.send = send


def longest_pdu(assoc: Any) -> int | None:
    """The longest PDU body this end of ``assoc`` reads (None: no limit), as
    :func:`bound_reads` enforces it."""
    local = assoc.acceptor if assoc.is_acceptor else assoc.requestor
    ours = local.maximum_length  # None until set, 0: no limit
    if ours is None:
        return _LONGEST_OTHER_PDU
    return max(ours, _LONGEST_OTHER_PDU) if ours else None


def wait_on_socket(event: Event) -> None:
    """EVT_CONN_OPEN handler: the DUL's idle waits end when data arrives (module doc).

    The first wait after activity is ``dul.dbdsim_wait`` seconds (pynetdicom's own loop
    delay, 1 ms), each further idle one twice the last, up to :data:`_LONGEST_IDLE_WAIT`
    (or ``dbdsim_wait`` if longer); a wait is taken only when nothing is queued either
    way. What another thread queues for the DUL (a request, a release, an abort) ends
    the wait at once too: the queueing writes a byte to a socket pair the wait watches.
    (Without it, rtmove's requests after a pause waited up to 10 ms each.)
    """
    assoc = event.assoc
    dul: Any = assoc.dul
    sock = plain_socket(dul.socket)
    if sock is None:
        return
    dul.dbdsim_wait = dul._run_loop_delay
    dul._run_loop_delay = 0  # the loop's own sleep: the wait below replaces it
    is_transport_event, process = dul._is_transport_event, dul._process_recv_primitive
    events, requests, machine = dul.event_queue, dul.to_provider_queue, dul.state_machine
    wait = [dul.dbdsim_wait]  # the next idle wait
    woken, waker = socket.socketpair()
    for end in (woken, waker):
        end.setblocking(False)
    put, kill = requests.put, dul.kill_dul

    def wake() -> None:
        with contextlib.suppress(OSError):  # already awake (pair full), or closed
            waker.send(b"\0")

    def put_and_wake(item: Any, block: bool = True, timeout: float | None = None) -> None:
        put(item, block, timeout)
        wake()

    def kill_and_wake() -> None:
        kill()
        wake()

    def close_pair(_event: Event | None = None) -> None:
        woken.close()
        waker.close()

    requests.put, dul.kill_dul = put_and_wake, kill_and_wake
    assoc.bind(evt.EVT_CONN_CLOSE, close_pair)
    weakref.finalize(dul, close_pair)  # a DUL that ends without closing its connection

    def transport_event() -> bool:
        if events.empty() and not requests.queue and sock.fileno() >= 0:
            # Closed meanwhile (OSError, ValueError): pynetdicom's own look says so.
            with contextlib.suppress(OSError, ValueError):
                ready = select.select([sock, woken], [], [], wait[0])[0]
                if woken in ready:
                    woken.recv(4096)
                if ready or machine.current_state != "Sta6":
                    # Outside data transfer (releasing, closing, closed) the association's
                    # thread waits for this DUL to end, and holds a slot until it does.
                    wait[0] = dul.dbdsim_wait
                else:
                    wait[0] = min(wait[0] * 2, max(_LONGEST_IDLE_WAIT, dul.dbdsim_wait))
        return bool(is_transport_event())

    def process_recv_primitive() -> bool:
        if process():
            wait[0] = dul.dbdsim_wait
            return True
        return False

    dul._is_transport_event = transport_event
    dul._process_recv_primitive = process_recv_primitive


def quiet_pynetdicom(event: Event) -> None:
    """EVT_CONN_OPEN handler: see the module doc (the levels are read at each connection,
    so ``-vv`` and ``--log-level debug`` still get every line).

    pynetdicom formats each C-FIND, C-GET and C-MOVE response identifier for its INFO log
    whatever the log's level (``_config.LOG_RESPONSE_IDENTIFIERS``): 90 µs of each
    match's 110 µs went on text nobody logged (11 ms of a 120-image C-FIND). The flag is
    process-wide, and follows the level as the handlers do.
    """
    informing = logging.getLogger("pynetdicom").isEnabledFor(logging.INFO)
    _config.LOG_RESPONSE_IDENTIFIERS = informing
    if informing:
        return
    assoc = event.assoc
    for bound, handler in ((evt.EVT_DIMSE_RECV, standard_dimse_recv_handler),
                           (evt.EVT_DIMSE_SENT, standard_dimse_sent_handler),
                           (evt.EVT_PDU_RECV, standard_pdu_recv_handler),
                           (evt.EVT_PDU_SENT, standard_pdu_sent_handler)):
        assoc.unbind(bound, handler)


def _batch_pdata_reads(event: Event) -> None:
    from .pdata_batches import batch_pdata_reads  # it builds on this module

    batch_pdata_reads(event)


def _wait_for_news(event: Event) -> None:
    from .idle_reactor import wait_for_news

    wait_for_news(event)


def _guard_dul(event: Event) -> None:
    from .dul_guards import guard_dul

    guard_dul(event)


def _take_plain_responses(event: Event) -> None:
    from .response_lane import take_plain_responses

    take_plain_responses(event)


NO_DELAY: list[EventHandlerType] = [(evt.EVT_CONN_OPEN, disable_nagle),
                                    (evt.EVT_CONN_OPEN, bound_reads),
                                    (evt.EVT_CONN_OPEN, bound_sends),
                                    (evt.EVT_CONN_OPEN, wait_on_socket),
                                    (evt.EVT_CONN_OPEN, _batch_pdata_reads),
                                    (evt.EVT_CONN_OPEN, _take_plain_responses),
                                    (evt.EVT_CONN_OPEN, _wait_for_news),
                                    (evt.EVT_CONN_OPEN, _guard_dul),
                                    (evt.EVT_CONN_OPEN, quiet_pynetdicom)]
