"""C-STORE requests served on the DUL thread that completed them.

pynetdicom hands each received message from its DUL thread to the association's
reactor thread, which looks for one once a millisecond (a hard-coded sleep), and the
response goes back through the DUL's queue. For a storage SCU that waits for each
response before sending the next object (storescu, every C-MOVE's sub-operations),
each object paid both hand-offs, plus the GIL changing hands on 2 cores: about a
millisecond of a File Daemon's 2.5-5 ms per 512x512 CT slice.

Here the DUL thread that decodes a C-STORE request serves it at once, with the same
handler and the same checks, and its response is the next thing it sends. Only when
nothing else is being served or queued: a request the reactor is still serving, or one
waiting for it, keeps its turn, so responses stay in order (PS3.7 allows overlap only
when negotiated, and the daemons negotiate none). While a handler runs, the DUL reads
nothing: a peer's A-ABORT waits for the handler, so handlers that may take long (a
fault that delays or stalls the answer) are left to the reactor (``allowed``), and so
are requests whose serving aborts the association (pynetdicom's abort waits for the DUL
thread: on that thread it would wait for ever).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, cast

from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE


class Turns:
    """Whose turn it is to serve a request on one association: the reactor's, the DUL
    thread's (this module), or :mod:`emulators.store_lane`'s. One at a time, in the
    order requests arrived."""

    def __init__(self, dimse: Any) -> None:
        self.lock = threading.Lock()  # the reactor's taking of a message, and ours
        self.busy = False  # a request is being served (by any of them)
        self._waiting = dimse.msg_queue

    def idle(self) -> bool:
        """Nothing is being served, and nothing waits to be: the next request may be
        served at once, on the thread that has it."""
        return not self.busy and not self._waiting.qsize()


def serve_stores_inline(assoc: Association, allowed: Callable[[Any, int], bool]) -> Turns:
    """Serve ``assoc``'s C-STORE requests on its DUL thread when ``allowed(request,
    context ID)``: never for one whose serving may block or abort.

    Install after every other wrapper of ``_serve_request`` and ``receive_primitive``
    (request checks, guards): both paths then go through them.
    """
    dimse = cast(Any, assoc.dimse)
    state = cast(Any, assoc)
    turns = Turns(dimse)
    take, receive, serve = dimse.get_msg, dimse.receive_primitive, state._serve_request

    def get_msg(block: bool = False) -> tuple[int | None, Any]:
        with turns.lock:
            context_id, msg = take(block)
            if msg is not None:
                turns.busy = True
        return context_id, msg

    def served(msg: Any, context_id: int) -> None:
        try:
            serve(msg, context_id)
        finally:
            turns.busy = False

    def received(primitive: Any) -> None:
        receive(primitive)
        waiting = dimse.msg_queue
        with turns.lock:
            # Not before the acceptor's thread has marked the association established (it
            # does so just after the A-ASSOCIATE-AC goes out, and a quick peer's request can
            # come first): pynetdicom's services answer nothing until then. The reactor
            # serves it once it runs.
            if turns.busy or waiting.qsize() != 1 or not assoc.is_established:
                return
            context_id, msg = waiting.queue[0]
            if not isinstance(msg, C_STORE) or msg.MessageIDBeingRespondedTo is not None \
                    or not allowed(msg, context_id):
                return
            waiting.get_nowait()
            turns.busy = True
        served(msg, context_id)

    dimse.get_msg = get_msg
    state._serve_request = served
    dimse.receive_primitive = received
    return turns
