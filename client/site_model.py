"""What a site is: the two daemons' services, their trusted AE maps, and the client.

The fields are those of the real DB Daemon's configuration wizard, so a site
engineer can copy them from the screen into a site file. The emulators and the
client read the same model: they can never disagree on what a site file means.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

LOOPBACK = "127.0.0.1"
ALLOW_ALL = "*"  # the wizard's "Allow All" implementation class UID filter
DEFAULT_CHARSET = "ISO_IR 192"


class Model(StrEnum):
    """A Query/Retrieve information model and operation a DB Daemon may serve."""

    STUDY_FIND = "study-root-find"
    STUDY_MOVE = "study-root-move"
    STUDY_GET = "study-root-get"
    PATIENT_FIND = "patient-root-find"
    PATIENT_MOVE = "patient-root-move"
    PATIENT_GET = "patient-root-get"


# What the real daemon serves in the field: Study Root FIND/MOVE (its conformance
# statement) and Patient Root MOVE (field reports). Patient Root FIND and C-GET are
# opt-in, so scripts relying on them fail here as they would at the site.
DEFAULT_MODELS: tuple[Model, ...] = (Model.STUDY_FIND, Model.STUDY_MOVE, Model.PATIENT_MOVE)


@dataclass(frozen=True)
class TrustedAE:
    """One row of a daemon's trusted AE map: who may connect, and where moves go."""

    ae_title: str
    host: str  # host name or IP address the AE connects from and listens on
    port: int  # where the AE listens (used when it is a move destination)
    implementation_uid: str = ALLOW_ALL  # its Implementation Class UID, or "*"
    import_charset: str = DEFAULT_CHARSET  # assumed for its data when overriding
    export_charset: str = DEFAULT_CHARSET  # what objects sent to it are encoded in
    charset_override: bool = False  # ignore the (0008,0005) it sends; use import_charset


@dataclass(frozen=True)
class Timeouts:
    """Seconds; the real daemon's defaults are not published, these are DCMTK-like."""

    acse: float = 30.0
    dimse: float = 60.0
    network: float = 60.0


@dataclass(frozen=True)
class Quirks:
    """Behaviours seen at real sites; all off by default."""

    # A move touching any of these modalities is answered 0xC001 with 0 sub-operations.
    c001_modalities: tuple[str, ...] = ()
    # A plan with an empty (or no) Beam Sequence fails its sub-operation.
    refuse_plans_without_beams: bool = False
    # Fraction of each multi-instance move actually sent, reported as full success.
    partial_move_fraction: float = 1.0


@dataclass(frozen=True)
class DBDaemonService:
    ae_title: str = "VMSDBD1"
    port: int = 5678
    bind: str = LOOPBACK
    permit_trusted_only: bool = True
    max_associations: int = 10
    timeouts: Timeouts = field(default_factory=Timeouts)
    models: tuple[Model, ...] = DEFAULT_MODELS
    strict_hierarchy: bool = False  # the standard's hierarchical key checks
    storage: Path | None = None  # where C-STOREd objects are kept; None: a temp folder
    trusted: tuple[TrustedAE, ...] | None = None  # None: derived from the site
    quirks: Quirks = field(default_factory=Quirks)


@dataclass(frozen=True)
class FileDaemonService:
    ae_title: str = "VMSFD"
    port: int = 5679
    bind: str = LOOPBACK
    permit_trusted_only: bool = True
    max_associations: int = 10
    timeouts: Timeouts = field(default_factory=Timeouts)
    output: Path = Path("dbdsim-out")
    patient_folders: bool = True  # <output>/<patient id>/...; off at some sites
    sync: bool = True  # fsync each file before answering success (off: as storescp, faster)
    trusted: tuple[TrustedAE, ...] | None = None  # None: derived from the site


@dataclass(frozen=True)
class ClientConfig:
    ae_title: str = "DCMTK"
    host: str = LOOPBACK  # the address the daemons see the client connect from
    port: int = 5680  # the client's own Storage SCP, when it receives moves itself


@dataclass(frozen=True)
class Site:
    db_daemon: DBDaemonService = field(default_factory=DBDaemonService)
    file_daemon: FileDaemonService = field(default_factory=FileDaemonService)
    client: ClientConfig = field(default_factory=ClientConfig)
    source: str = "<embedded default>"  # the file it came from, for messages

    def db_trusted(self) -> tuple[TrustedAE, ...]:
        """The DB Daemon's map: as written, or the client and the File Daemon."""
        if self.db_daemon.trusted is not None:
            return self.db_daemon.trusted
        fd = self.file_daemon
        return (TrustedAE(self.client.ae_title, self.client.host, self.client.port),
                TrustedAE(fd.ae_title, _reachable(fd.bind), fd.port))

    def fd_trusted(self) -> tuple[TrustedAE, ...]:
        """The File Daemon's map: as written, or the DB Daemon and the client."""
        if self.file_daemon.trusted is not None:
            return self.file_daemon.trusted
        db = self.db_daemon
        return (TrustedAE(db.ae_title, _reachable(db.bind), db.port),
                TrustedAE(self.client.ae_title, self.client.host, self.client.port))

    def with_trusted(self, extra: TrustedAE) -> Site:
        """Both daemons also trust ``extra`` (``dbdsim serve --trust``)."""
        db = dataclasses.replace(self.db_daemon, trusted=(*self.db_trusted(), extra))
        fd = dataclasses.replace(self.file_daemon, trusted=(*self.fd_trusted(), extra))
        return dataclasses.replace(self, db_daemon=db, file_daemon=fd)


def default_site() -> Site:
    """VMSDBD1 on 5678, VMSFD on 5679, client DCMTK, all on 127.0.0.1, trusting each other."""
    return Site()


def _reachable(bind: str) -> str:
    """A daemon bound to every interface is reached (and connects) over loopback here."""
    return LOOPBACK if bind in ("", "0.0.0.0", "::") else bind
