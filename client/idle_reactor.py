"""An idle requestor association's thread waits for something to do, instead of
polling every millisecond.

pynetdicom 3.0's association thread loops: sleep 1 ms, wait on a checkpoint event (set,
except while this side sends a request and takes its responses itself), then look for
a received message, a release or an abort. Idle, that is 1,000 wake-ups a second, each
taking the GIL: two open associations cost rtmove 55 ms of CPU a second (measured),
on the cores the moves it waits for run on. And each request first waited for that
thread to come round to the checkpoint (:func:`client.session.quiesce_reactor`), up to
a loop: about 1 ms per C-FIND and C-MOVE.

Here, while the checkpoint is set, its wait also lasts until the DUL queues something
for the association (a message, a release, an abort: that wakes it at once), or 50 ms
pass (the thread's other checks, such as the network timeout, then run late by as much);
cleared, it blocks as before. A request then finds the thread already at the checkpoint.
Only requestors get it: an acceptor's thread is what serves the requests it receives.
"""

from __future__ import annotations

import threading
from typing import Any

from pynetdicom.events import Event

_IDLE = 0.05  # seconds: the longest an idle association's thread waits without news


class IdleCheckpoint(threading.Event):
    """pynetdicom's ``_reactor_checkpoint``, whose wait while set lasts until :meth:`poke`
    or :data:`_IDLE`; :meth:`set` and :meth:`clear` as an Event's."""

    def __init__(self) -> None:
        super().__init__()
        self._poked = False  # news came while the thread was not waiting
        self.set()

    def wait(self, timeout: float | None = None) -> bool:
        if timeout is not None:
            return super().wait(timeout)
        cond: Any = self._cond  # type: ignore[attr-defined]
        with cond:
            if self.is_set() and not self._poked:
                cond.wait(_IDLE)
            self._poked = False
            while not self.is_set():  # a request is under way: wait for it to end
                cond.wait()
            return True

    def poke(self) -> None:
        """Something was queued for the association: its thread should look now."""
        cond: Any = self._cond  # type: ignore[attr-defined]
        with cond:
            self._poked = True
            cond.notify_all()


def wait_for_news(event: Event) -> None:
    """EVT_CONN_OPEN handler: a requestor's checkpoint becomes an :class:`IdleCheckpoint`,
    poked by whatever the DUL or the DIMSE provider queues for the association."""
    assoc = event.assoc
    if not assoc.is_requestor:
        return
    checkpoint = IdleCheckpoint()
    for owner in (assoc.dul.to_user_queue, assoc.dimse.msg_queue):
        put = owner.put

        def put_and_poke(item: Any, block: bool = True, timeout: float | None = None,
                         put: Any = put) -> None:
            put(item, block, timeout)
            checkpoint.poke()

        owner.put = put_and_poke  # type: ignore[method-assign]
    assoc._reactor_checkpoint = checkpoint
