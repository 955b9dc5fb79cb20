"""Injectable faults: break the emulated daemons, their data and the network between
them as real sites break, from a scenario or from Python, never by editing daemon code.

``Faults`` says what is wrong; :func:`inject` applies it to running (or about to run)
daemons; :class:`~emulators.faults.proxy.Proxy` puts toxics on a TCP leg.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .data import apply_data_faults
from .model import (
    AssociationFaults,
    DataFaults,
    DBDaemonFaults,
    FaultError,
    Faults,
    FileDaemonFaults,
    FindFaults,
    MoveFaults,
    ProxySpec,
    StoreFaults,
    from_mapping,
)
from .proxy import Proxy, Toxic

if TYPE_CHECKING:
    from ..db_daemon import DBDaemon
    from ..file_daemon import FileDaemon

__all__ = [
    "AssociationFaults",
    "DBDaemonFaults",
    "DataFaults",
    "FaultError",
    "Faults",
    "FileDaemonFaults",
    "FindFaults",
    "MoveFaults",
    "Proxy",
    "ProxySpec",
    "StoreFaults",
    "Toxic",
    "apply_data_faults",
    "from_mapping",
    "inject",
]


def inject(faults: Faults, db_daemon: DBDaemon | None = None,
           file_daemon: FileDaemon | None = None) -> None:
    """Give each daemon its faults (data faults too: they edit the DB Daemon's archive).

    Proxies are not started here: they need the daemons' ports (see the scenario runner).
    """
    if db_daemon is not None:
        db_daemon.inject(faults.db_daemon)
        db_daemon.data_faults = apply_data_faults(db_daemon.archive, faults.data)
    if file_daemon is not None:
        file_daemon.inject(faults.file_daemon)
