"""Stopping a daemon with connections in every state a peer can leave them in.

pynetdicom raises InvalidEventError in its reactor thread when an association is sent an
A-ABORT in a state where PS3.8 has none: a connection that never sent its
A-ASSOCIATE-RQ (Sta2), or one rejected whose peer keeps it open (Sta13). Seen first
behind a black-holed network proxy and after a rejected findscu.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from daemons import make_site
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import build_context

from emulators.file_daemon import FileDaemon

pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")


def _request(calling: str, called: str) -> bytes:
    """An A-ASSOCIATE-RQ PDU asking for Verification."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = calling
    primitive.called_ae_title = called
    context = build_context("1.2.840.10008.1.1")
    context.context_id = 1
    primitive.presentation_context_definition_list = [context]
    length, implementation = MaximumLengthNotification(), ImplementationClassUIDNotification()
    length.maximum_length_received = 16384
    implementation.implementation_class_uid = "1.2.826.0.1.3680043.9.7433.1"
    primitive.user_information = [length, implementation]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


def _wait_for_state(daemon: FileDaemon, state: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if any(a.dul.state_machine.current_state == state
               for a in daemon.ae.active_associations):
            return
        time.sleep(0.01)
    pytest.fail(f"no association reached {state}")


@pytest.mark.parametrize("peer_state", ["silent", "rejected"])
def test_stop_closes_connections_with_nothing_to_abort(tmp_path: Path,
                                                       peer_state: str) -> None:
    daemon = FileDaemon(make_site(tmp_path))
    with daemon, socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as peer:
        if peer_state == "rejected":  # an untrusted caller that keeps the connection open
            peer.sendall(_request("INTRUDER", daemon.ae_title))
            assert peer.recv(1)[:1] == b"\x03"  # A-ASSOCIATE-RJ (then Sta13, for a while)
        else:  # connected, never sends its A-ASSOCIATE-RQ
            _wait_for_state(daemon, "Sta2")
        started = time.monotonic()
        daemon.stop()
        assert time.monotonic() - started < 5
        assert not daemon.ae.active_associations
        peer.settimeout(5)
        while data := peer.recv(4096):  # the rest of the A-ASSOCIATE-RJ, if any, then EOF
            assert len(data) < 64
