"""A peer that stops reading: the daemons' writes to it give up within the network timeout.

pynetdicom writes with blocking sends and no timeout, so a C-MOVE destination that stops
taking data (its receive window full) held the DB Daemon's sub-operation, the move and
its requestor for as long as the kernel kept the connection. Here the destination is a
pynetdicom Storage SCP whose reading thread is held once the first data arrives.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from daemons import dcmtk, running_daemons, small_archive
from pynetdicom import AE, evt
from pynetdicom.events import Event
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import CTImageStorage

from client.site import Timeouts, TrustedAE
from emulators.peers import LOOPBACK, free_port

pytestmark = pytest.mark.interop

Tool = Callable[[str], str]
NETWORK = 1.5  # the DB Daemon's network timeout here, seconds
DIMSE = 30.0  # far longer: what ends the move must be the stalled send


@contextmanager
def stuck_destination(port: int) -> Iterator[threading.Event]:
    """A Storage SCP ``STUCK`` whose DUL stops reading at the first P-DATA-TF, until the
    event yielded is set (at the end of the block, before the SCP stops)."""
    release = threading.Event()

    def hold(event: Event) -> None:
        if isinstance(event.pdu, P_DATA_TF):
            release.wait(60)

    ae = AE(ae_title="STUCK")
    ae.add_supported_context(CTImageStorage)
    server = ae.start_server((LOOPBACK, port), block=False, evt_handlers=[
        (evt.EVT_PDU_RECV, hold), (evt.EVT_C_STORE, lambda _event: 0x0000)])
    try:
        yield release
    finally:
        release.set()
        server.shutdown()


def test_a_destination_that_stops_reading_ends_its_sub_operations(
        tmp_path: Path, require_tool: Tool) -> None:
    """movescu to a destination that takes the first 16 KB and then nothing: the move
    ends (sub-operations failed) within a few network timeouts, not when the kernel
    gives up (nor after the DIMSE timeout), and the DB Daemon still answers."""
    # 18 MB a slice: more than the socket buffers take (4 MB to send, 6 MB to receive),
    # so a slice's send stalls (one that fits in them waits for its response instead,
    # bound by the DIMSE timeout).
    archive = small_archive(patients=1, slices=2, size=3072)
    port = free_port()
    try:
        study = archive.index.query("SELECT study_uid FROM study")[0][0]
        with stuck_destination(port), running_daemons(
                tmp_path, archive, extra=(TrustedAE("STUCK", LOOPBACK, port),),
                timeouts=Timeouts(acse=10.0, dimse=DIMSE, network=NETWORK)) as (_s, dbd, _fd):
            start = time.monotonic()
            moved = dcmtk(require_tool("movescu"), "-S", "-v", "-aet", "DCMTK",
                          "-aec", "VMSDBD1", "-aem", "STUCK", "-k", "QueryRetrieveLevel=STUDY",
                          "-k", f"StudyInstanceUID={study}", LOOPBACK, str(dbd.port),
                          timeout=DIMSE)
            took = time.monotonic() - start
            assert "Final Move Response" in moved.stdout, moved.stdout
            assert "Success" not in moved.stdout.split("Final Move Response")[1], moved.stdout
            assert took < 6 * NETWORK + 5, f"the move took {took:.1f} s"
            echo = dcmtk(require_tool("echoscu"), "-aet", "DCMTK", "-aec", "VMSDBD1",
                         LOOPBACK, str(dbd.port), timeout=10)
            assert echo.returncode == 0, echo.stdout
    finally:
        archive.close()
