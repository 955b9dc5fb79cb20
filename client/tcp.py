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
"""

from __future__ import annotations

import socket
import time
from typing import Any

from pynetdicom import evt
from pynetdicom.events import Event, EventHandlerType

_CHUNK = 65536  # bytes per socket read (pynetdicom reads 4 KB at a time)
# The maximum length negotiated bounds P-DATA-TF PDUs only (PS3.8 D.1); an association
# request with many contexts or a user identity may be longer, but not this long.
_LONGEST_OTHER_PDU = 1 << 20


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
    sock = getattr(transport, "socket", None)
    if limit is None or not isinstance(sock, socket.socket):
        return
    local = assoc.acceptor if assoc.is_acceptor else assoc.requestor

    def recv(nr_bytes: int) -> bytearray:
        # pynetdicom's contract: up to nr_bytes, fewer only when the peer closed.
        ours = local.maximum_length  # None until set, 0: no limit
        longest = _LONGEST_OTHER_PDU if ours is None else max(ours, _LONGEST_OTHER_PDU) \
            if ours else None
        if longest is not None and nr_bytes > longest:
            raise ConnectionError(f"a PDU of {nr_bytes} bytes, longer than the {longest} "
                                  "this end accepts")
        data = bytearray()
        deadline = time.monotonic() + limit
        previous = sock.gettimeout()
        try:
            while len(data) < nr_bytes:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"a PDU read took over {limit:g} s (network timeout)")
                sock.settimeout(left)
                chunk = sock.recv(min(nr_bytes - len(data), _CHUNK))
                if not chunk:
                    break
                data += chunk
        finally:
            sock.settimeout(previous)
        return data

    cast_transport: Any = transport
    cast_transport.recv = recv


NO_DELAY: list[EventHandlerType] = [(evt.EVT_CONN_OPEN, disable_nagle),
                                    (evt.EVT_CONN_OPEN, bound_reads)]
