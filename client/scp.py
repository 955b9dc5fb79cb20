"""Running a pynetdicom SCP in a thread that stops at once.

``AE.start_server`` polls its socket every 0.5 s, so every stop waited up to half a
second; a client that receives for a few seconds, and tests that start hundreds of
daemons, paid it each time. This runs the same server with a short poll.

Without pynetdicom's forced full garbage collection: its server runs ``gc.collect()``
every 60 polls (here every 1.2 s), for association threads old Pythons did not free.
A full collection holds the GIL for the whole heap (the archive index included): 9 %
of the DB Daemon's Python time while it moved a CT series. Python's own collector
still frees cycles (the soak benchmark checks memory stays flat).
"""

from __future__ import annotations

import socketserver
import threading
from dataclasses import dataclass
from typing import Any, cast

from pynetdicom import AE
from pynetdicom.events import EventHandlerType
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import ThreadedAssociationServer

POLL_SECONDS = 0.02
# PS3.8 9.2: states where an A-ABORT request is no event (pynetdicom raises
# InvalidEventError in its reactor): idle, transport open before the A-ASSOCIATE-RQ, and
# awaiting the peer's close after a rejection or release.
_NO_ABORT_STATES = frozenset({"Sta1", "Sta2", "Sta13"})


@dataclass
class RunningServer:
    ae: AE
    server: ThreadedAssociationServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def stop(self, join_timeout: float = 10.0) -> list[threading.Thread]:
        """Stop accepting, abort live associations; returns their threads to join."""
        live: list[threading.Thread] = list(self.ae.active_associations)
        for assoc in self.ae.active_associations:
            # Only an established association is A-ABORTed: one still negotiating can
            # move on (to Sta13 after a rejection) between a look at its state and the
            # abort, which pynetdicom then finds invalid in its reactor.
            if not assoc.is_established \
                    or assoc.dul.state_machine.current_state in _NO_ABORT_STATES:
                # Nothing to abort there: closing the connection is the standard's way.
                socket = assoc.dul.socket
                if socket is not None:
                    socket.close()
                # An acceptor still waiting for its A-ASSOCIATE-RQ (up to the ACSE timeout)
                # takes "nothing came" and ends, as when that timeout expires.
                cast(Any, assoc.dul.to_user_queue).put(None)  # None: not a primitive's type
            else:
                assoc.abort()
        # pynetdicom's own shutdown() also unregisters the server from AE.start_server's
        # list, where this one never was: stop the socketserver loop directly.
        socketserver.BaseServer.shutdown(self.server)
        self.server.server_close()
        self.thread.join(join_timeout)
        return live


class _Server(ThreadedAssociationServer):
    def service_actions(self) -> None:
        """No forced collection (module doc)."""


def serve(ae: AE, address: tuple[str, int], handlers: list[EventHandlerType],
          contexts: list[PresentationContext] | None = None) -> RunningServer:
    """Listen on ``address`` (OSError if it cannot) and serve in a daemon thread."""
    server = ae.make_server(address, evt_handlers=handlers, contexts=contexts,
                            server_class=_Server)
    thread = threading.Thread(target=server.serve_forever,
                              kwargs={"poll_interval": POLL_SECONDS},
                              name=f"SCP {ae.ae_title} :{server.server_address[1]}", daemon=True)
    thread.start()
    return RunningServer(ae, server, thread)
