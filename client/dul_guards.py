"""A local request that the end of the association overtook is dropped, not raised.

pynetdicom 3.0 turns what another thread queues for the DUL (an A-ASSOCIATE answer,
P-DATA, an A-RELEASE request or response, an A-ABORT) into an event only when the DUL
comes to it; if the association ended meanwhile, PS3.8 has no transition for that event
in the state reached (Sta13, awaiting the close, mostly), and pynetdicom raises
InvalidEventError out of the DUL thread, which dies with a traceback (under pytest, a
PytestUnhandledThreadExceptionWarning). Two threads end one association at once:

* rtmove's Receiver stopped (its server aborts live associations) as its association
  thread answers a peer's A-RELEASE-RQ: Evt14, or Evt15, in Sta13 (seen with Orthanc,
  which releases its move sub-association after the final C-MOVE response);
* a requestor's release or abort queued as the DUL aborts on the peer's invalid PDU:
  Evt11, Evt15 in Sta13;
* an acceptor's A-ASSOCIATE answer after its DUL aborted on an invalid PDU (the
  emulators' fuzz harness): Evt7, Evt8 in Sta13.

The association is over either way: nothing is left to send, so the request is dropped.
"""

from __future__ import annotations

import contextlib
import queue
from typing import Any

from pynetdicom.dul import DULServiceProvider
from pynetdicom.events import Event
from pynetdicom.fsm import TRANSITION_TABLE

# Events raised by our own requests (PS3.8 9.2.1): A-ASSOCIATE request, accept, reject,
# P-DATA, A-RELEASE request and response, A-ABORT.
LOCAL_EVENTS = frozenset({"Evt1", "Evt7", "Evt8", "Evt9", "Evt11", "Evt14", "Evt15"})


def drop_overtaken_requests(dul: DULServiceProvider) -> None:
    """Make ``dul``'s state machine drop a local request it has no transition for."""
    machine: Any = dul.state_machine
    act = machine.do_action
    if getattr(act, "drops_overtaken", False):  # installed already
        return

    def do_action(event: str) -> None:
        if event in LOCAL_EVENTS and (event, machine.current_state) not in TRANSITION_TABLE:
            with contextlib.suppress(queue.Empty):  # its primitive, or the DUL takes it again
                dul.to_provider_queue.get(False)
            return
        act(event)

    do_action.drops_overtaken = True  # type: ignore[attr-defined]
    machine.do_action = do_action


def guard_dul(event: Event) -> None:
    """EVT_CONN_OPEN handler: :func:`drop_overtaken_requests` on the association's DUL."""
    drop_overtaken_requests(event.assoc.dul)
