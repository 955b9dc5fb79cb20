"""Consecutive P-DATA-TF PDUs of one message handed to the state machine as one.

pynetdicom's DUL thread takes one PDU per turn of its loop: a look at the socket, a
read, an event queued, then the state machine's DT-2 and the DIMSE decoder, each with
their checks and event triggers. A 512x512 CT slice arrives as 34 PDUs of 16 KB, and
these turns were about a third of the File Daemon's time per slice from storescu.

Here, once a P-DATA-TF PDU is read in Sta6, the P-DATA-TF PDUs already waiting on the
socket are read too, each by pynetdicom's own read (the same checks, errors and event
triggers per PDU), and their presentation data values join the first PDU's: one Evt10,
one DT-2. PS3.8 9.3.5: a P-DATA-TF carries one or more PDVs, and DT-2 is the same
action for each, so the state machine and the DIMSE decoder see the same data in the
same order. A batch ends at the last fragment of a command or data set (pynetdicom's
decoder ignores what follows a message's end within one P-DATA), at a PDU of another
type (left queued after the batch), or at :data:`_MOST` PDUs.
"""

from __future__ import annotations

import socket
from typing import Any

from pynetdicom.events import Event
from pynetdicom.pdu import P_DATA_TF

from .tcp import plain_socket

_MOST = 64  # PDUs per batch: 1 MB of 16 KB PDUs, so the DUL still turns often
_P_DATA_TF = 0x04
_LAST_FRAGMENT = 0x02  # message control header bit (PS3.8 E.2)
_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT


def _next_is_pdata(sock: socket.socket) -> bool:
    """Whether a P-DATA-TF PDU's header is already waiting on ``sock`` (not consumed)."""
    try:
        head = sock.recv(6, _PEEK)
    except OSError:  # nothing waiting (BlockingIOError), or closed: the DUL's turn
        return False
    return len(head) == 6 and head[0] == _P_DATA_TF


def _ends_message(pdu: P_DATA_TF) -> bool:
    items = pdu.presentation_data_value_items
    return not items or not items[-1].data or bool(items[-1].data[0] & _LAST_FRAGMENT)


def batch_pdata_reads(event: Event) -> None:
    """EVT_CONN_OPEN handler (after :func:`client.tcp.bound_reads`): see the module doc."""
    dul: Any = event.assoc.dul
    sock = plain_socket(dul.socket)
    if sock is None:
        return
    read, machine = dul._read_pdu_data, dul.state_machine
    events, pdus = dul.event_queue, dul._recv_pdu

    def read_batch() -> None:
        read()
        # Batch only a lone P-DATA-TF the read just queued, in data transfer.
        if machine.current_state != "Sta6" or events.qsize() != 1 or pdus.qsize() != 1 \
                or events.queue[0] != "Evt10":
            return
        first = pdus.queue[0]
        if not isinstance(first, P_DATA_TF):
            return
        for _ in range(_MOST - 1):
            if _ends_message(first) or not _next_is_pdata(sock):
                return
            read()
            if events.qsize() != 2 or pdus.qsize() != 2 or events.queue[1] != "Evt10":
                return  # a failed read (Evt17, Evt19): its event stays after the batch
            with pdus.mutex:
                more = pdus.queue.pop()
            events.get_nowait()  # two Evt10 now stand for one P-DATA-TF
            first.presentation_data_value_items.extend(more.presentation_data_value_items)

    dul._read_pdu_data = read_batch
