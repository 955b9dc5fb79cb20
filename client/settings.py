"""What one rtmove run talks to: the site file's values, each overridable by a flag."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from client.site import Model, Site, load_site_or_default

SELF = "self"  # --dest self: this client receives the objects on its own Storage SCP


@dataclass(frozen=True)
class Settings:
    host: str  # the DB Daemon (any Q/R SCP)
    port: int
    aec: str  # its AE title
    aet: str  # ours
    recv_port: int  # where our own Storage SCP listens (moves to "self", headers)
    dest: str  # the move destination AE title, or SELF
    models: tuple[Model, ...]  # what the server serves (the site file's models)
    timeout: float = 30.0  # seconds for association, DIMSE and network
    retries: int = 4  # attempts after the first, for transient failures
    backoff: float = 1.0  # seconds before the first retry; doubles, capped at backoff_cap
    backoff_cap: float = 30.0
    max_matches: int = 100_000  # one C-FIND with more matches is a server gone astray
    out: Path | None = None  # where objects moved to "self" are written
    site: Site | None = None

    @property
    def peer(self) -> str:
        return f"{self.aec} at {self.host}:{self.port}"

    @property
    def receive_bind(self) -> str:
        """Where this client's own Storage SCP listens: loopback when the DB Daemon (whose
        C-STOREs it takes) is reached over loopback, else every interface, so that a DB
        Daemon on another machine can reach it."""
        try:
            if ipaddress.ip_address(self.host).is_loopback:
                return "::1" if ":" in self.host else "127.0.0.1"
        except ValueError:
            pass  # a host name: whatever it resolves to must reach us
        return ""

    @property
    def to_self(self) -> bool:
        return self.dest == SELF or self.dest == self.aet

    def serves(self, model: Model) -> bool:
        return model in self.models


def from_site(site: Site, **overrides: object) -> Settings:
    """The settings a site file gives; ``overrides`` (from flags) win when not None."""
    db = site.db_daemon
    values: dict[str, object] = {
        "host": "127.0.0.1" if db.bind in ("", "0.0.0.0", "::") else db.bind,
        "port": db.port,
        "aec": db.ae_title,
        "aet": site.client.ae_title,
        "recv_port": site.client.port,
        "dest": site.file_daemon.ae_title,
        "models": db.models,
        "timeout": db.timeouts.dimse,
        "site": site,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)  # type: ignore[arg-type]


def load(site_file: Path | None, **overrides: object) -> Settings:
    return from_site(load_site_or_default(site_file), **overrides)
