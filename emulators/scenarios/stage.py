"""Setting a scenario's stage: free ports, the archive, proxies and both daemons.

Ports in a scenario are symbols: each distinct number becomes its own free port, so
a trusted row naming a port nobody uses (a "wrong port" scenario) still names one
where nothing listens, and two scenarios never collide.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from client.check_site import daemon_host
from client.site import Site, TrustedAE
from client.site_dump import dump_site

from ..archive import Archive
from ..db_daemon import DBDaemon
from ..faults import FaultError, Proxy
from ..file_daemon import FileDaemon
from ..peers import free_port
from ..serve import serving_faults
from ..service import DaemonError
from .model import Scenario, ScenarioError

LOG = logging.getLogger("dbdsim.scenario")


@dataclass
class Stage:
    """What a scenario runs against, and the names its command may use."""

    site: Site  # as the client sees it (through the client-leg proxy, if any)
    site_path: Path
    work: Path
    fd_out: Path
    out: Path
    archive: Archive
    db_daemon: DBDaemon
    file_daemon: FileDaemon
    proxies: dict[str, Proxy] = field(default_factory=dict)
    patient: int = 0  # the synthetic patient the command's {patient} names

    @property
    def db_host(self) -> str:
        """Where a client calls the DB Daemon (the client-leg proxy listens on loopback)."""
        return "127.0.0.1" if "client" in self.proxies else daemon_host(self.site.db_daemon.bind)

    def placeholders(self) -> dict[str, str]:
        db, fd, client = self.site.db_daemon, self.site.file_daemon, self.site.client
        recipe = self.archive.recipe(self.patient)
        plan = recipe.plans[0] if recipe.plans else None
        return {
            "site": str(self.site_path), "work": str(self.work), "fd_out": str(self.fd_out),
            "out": str(self.out), "patient": recipe.patient_id,
            "plan": plan.uid if plan else "", "plan_label": plan.label if plan else "",
            "db_host": self.db_host, "db_port": str(db.port), "db_aet": db.ae_title,
            "fd_port": str(fd.port), "fd_aet": fd.ae_title,
            "client_aet": client.ae_title, "client_port": str(client.port),
        }


def _ports(site: Site) -> list[int]:
    ports = [site.db_daemon.port, site.file_daemon.port, site.client.port]
    for trusted in (site.db_daemon.trusted, site.file_daemon.trusted):
        ports += [t.port for t in trusted or ()]
    return ports


def with_free_ports(site: Site) -> Site:
    """``site`` with each distinct port number replaced by its own free port."""
    mapping: dict[int, int] = {}
    for port in _ports(site):
        if port not in mapping:
            new = free_port()
            while new in mapping.values():
                new = free_port()
            mapping[port] = new
    return _remap(site, mapping)


def _remap(site: Site, mapping: dict[int, int]) -> Site:
    def rows(trusted: tuple[TrustedAE, ...] | None) -> tuple[TrustedAE, ...] | None:
        if trusted is None:
            return None
        return tuple(dataclasses.replace(t, port=mapping.get(t.port, t.port)) for t in trusted)

    db, fd, client = site.db_daemon, site.file_daemon, site.client
    return dataclasses.replace(
        site,
        db_daemon=dataclasses.replace(db, port=mapping[db.port], trusted=rows(db.trusted)),
        file_daemon=dataclasses.replace(fd, port=mapping[fd.port], trusted=rows(fd.trusted)),
        client=dataclasses.replace(client, port=mapping[client.port]))


def _patient(scenario: Scenario, archive: Archive) -> int:
    wanted = scenario.client.patient
    count = archive.index.counts().patients
    if wanted == "non-ascii":
        for i in range(count):
            if not str(archive.recipe(i).people.patient_name.pn).isascii():
                return i
        raise ScenarioError(f"{scenario.name}: no patient of the archive has a non-ASCII name; "
                            "add patients or change the seed")
    index = int(wanted)
    if index >= count:
        raise ScenarioError(f"{scenario.name}: client.patient {index}: the archive has "
                            f"{count} patients")
    return index


@contextmanager
def staged(scenario: Scenario, work: Path) -> Iterator[Stage]:
    """Everything the scenario needs, running inside the block; all stopped after it."""
    fd_out, out = work / "fd", work / "out"
    site = with_free_ports(scenario.site)
    site = dataclasses.replace(
        site, file_daemon=dataclasses.replace(site.file_daemon, output=fd_out))
    archive = Archive.synthetic(scenario.archive.config(), scenario.archive.patients)
    with ExitStack() as stack:
        stack.callback(archive.close)
        patient = _patient(scenario, archive)
        try:
            served = stack.enter_context(serving_faults(site, archive, scenario.faults))
        except (FaultError, DaemonError) as exc:  # a data fault naming no patient, a port taken
            raise ScenarioError(f"{scenario.name}: {exc}") from exc
        client_site = dataclasses.replace(
            site, db_daemon=dataclasses.replace(site.db_daemon, port=served.db_port))
        site_path = work / "site.toml"
        site_path.write_text(dump_site(client_site), encoding="utf-8")
        LOG.info("scenario %s: DB Daemon :%d, File Daemon :%d, %s", scenario.name,
                 served.db_daemon.port, served.file_daemon.port,
                 ", ".join(f"{leg} proxy :{p.port}" for leg, p in served.proxies.items())
                 or "no proxy")
        yield Stage(client_site, site_path, work, fd_out, out, archive, served.db_daemon,
                    served.file_daemon, served.proxies, patient)
