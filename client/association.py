"""Opening an association, with every way it can fail turned into a site-engineer sentence."""

from __future__ import annotations

from typing import Any

from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.events import EventHandlerType

from .errors import AssociationFailed, AssociationRejected
from .tcp import NO_DELAY


def associate(ae: AE, host: str, port: int, called: str, timeout: float, *,
              handlers: list[EventHandlerType] | None = None,
              ext_neg: list[Any] | None = None) -> Association:
    """An established association with ``called`` at ``host:port`` (Nagle off), or a
    :class:`DicomError`: rejected (with the standard's reason, explained) or not at all."""
    peer = f"{called} at {host}:{port}"
    assoc = ae.associate(host, port, ae_title=called, evt_handlers=[*NO_DELAY, *(handlers or [])],
                         ext_neg=ext_neg)
    rsp = assoc.acceptor.primitive
    if assoc.is_rejected and rsp is not None:
        raise AssociationRejected(int(rsp.result or 0), int(rsp.result_source or 0),
                                  int(rsp.diagnostic or 0), str(ae.ae_title), called, peer)
    if not assoc.is_established:
        raise AssociationFailed(
            f"No association with {peer}: the connection was refused, timed out after "
            f"{timeout:g} s, or was aborted. Check the host, the port and that the "
            "daemon is running; a firewall may drop the connection.")
    return assoc
