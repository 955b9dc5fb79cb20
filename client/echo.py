"""C-ECHO: the first thing to try against a site's daemon."""

from __future__ import annotations

import time

from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from .association import associate
from .errors import AssociationFailed, DicomError, Kind


def echo(host: str, port: int, calling: str, called: str, timeout: float = 10.0) -> float:
    """Round-trip seconds of one C-ECHO; raises a :class:`DicomError` that says why not."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    peer = f"{called} at {host}:{port}"
    start = time.monotonic()
    try:
        assoc = associate(ae, host, port, called, timeout)
    except DicomError:
        ae.shutdown()
        raise
    try:
        status = assoc.send_c_echo()
        if not status or "Status" not in status:
            raise AssociationFailed(f"{peer} sent no C-ECHO response within {timeout:g} s.")
        if int(status.Status) != 0:
            raise DicomError(f"{peer} answered C-ECHO with status 0x{int(status.Status):04X}.",
                             Kind.REFUSED)
        return time.monotonic() - start
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()
