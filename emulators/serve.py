"""``dbdsim serve`` and ``dbdsim patients``: both daemons over one archive, from a site file."""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from client.site import Site, SiteError, TrustedAE, ae_title_problem, load_site_or_default
from client.site_model import LOOPBACK

from .archive import Archive
from .cli_common import (
    MAX_PATIENTS,
    CommandError,
    SubParsers,
    add_archive_options,
    int_at_least,
    synthetic_config,
)
from .db_daemon import DBDaemon
from .faults import Faults, Proxy, inject
from .file_daemon import FileDaemon
from .service import DaemonError
from .trust import normalise_ae

_TRUST_RE = re.compile(r"^(?P<ae>[^@]+)@(?P<host>[^:@\s]+):(?P<port>\d{1,5})$")


def parse_trust(text: str) -> TrustedAE:
    """``AE@HOST:PORT`` as a trusted AE row (``--trust``), held to the site file's rules."""
    match = _TRUST_RE.match(text)
    if match is None or not 0 < int(match["port"]) < 65536:
        raise argparse.ArgumentTypeError(
            f"expected AE@HOST:PORT with a port 1-65535, got {text!r}")
    title = match["ae"].strip(" ")
    problem = ae_title_problem(title)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"AE title in {text!r} {problem}")
    return TrustedAE(title, match["host"], int(match["port"]))


def with_ports(site: Site, db_port: int | None = None, fd_port: int | None = None) -> Site:
    """The site with its daemons moved to other ports (0: any free one, at start).

    Each daemon's written trusted map follows: a row naming the other daemon's AE
    title at its old port now names the new port, so moves to the File Daemon
    still reach it.
    """
    db, fd = site.db_daemon, site.file_daemon
    new_db = db.port if db_port is None else db_port
    new_fd = fd.port if fd_port is None else fd_port
    db_map = _moved(db.trusted, fd.ae_title, fd.port, new_fd)
    fd_map = _moved(fd.trusted, db.ae_title, db.port, new_db)
    return dataclasses.replace(
        site, db_daemon=dataclasses.replace(db, port=new_db, trusted=db_map),
        file_daemon=dataclasses.replace(fd, port=new_fd, trusted=fd_map))


def _moved(trusted: tuple[TrustedAE, ...] | None, ae_title: str, old: int, new: int,
           ) -> tuple[TrustedAE, ...] | None:
    if trusted is None or old == new:
        return trusted
    return tuple(dataclasses.replace(t, port=new) if t.ae_title == ae_title and t.port == old
                 else t for t in trusted)


@contextmanager
def serving(site: Site, archive: Archive) -> Iterator[tuple[DBDaemon, FileDaemon]]:
    """Both daemons running inside the block; stopped, threads joined, after it.

    The File Daemon starts first: when its port is 0, the DB Daemon's map then names
    the port it really got (no free port is guessed ahead, so none can be taken).
    """
    with serving_faults(site, archive, Faults()) as served:
        yield served.db_daemon, served.file_daemon


@dataclass
class Served:
    """The running daemons, and the proxies a scenario's network faults put in front."""

    db_daemon: DBDaemon
    file_daemon: FileDaemon
    proxies: dict[str, Proxy]

    @property
    def db_port(self) -> int:
        """Where a client calls the DB Daemon: through the client-leg proxy, if any."""
        proxy = self.proxies.get("client")
        return proxy.port if proxy is not None else self.db_daemon.port


@contextmanager
def serving_faults(site: Site, archive: Archive, faults: Faults) -> Iterator[Served]:
    """:func:`serving` with ``faults`` injected: a store-leg proxy sits between the DB
    Daemon and the File Daemon (the DB Daemon's row for it names the proxy), a
    client-leg proxy in front of the DB Daemon (see :attr:`Served.db_port`)."""
    with ExitStack() as stack:
        fd = FileDaemon(site)
        inject(faults, file_daemon=fd)
        stack.enter_context(fd)
        proxies: dict[str, Proxy] = {}
        db_site = with_ports(site, fd_port=fd.port)
        store = faults.proxy_on("store")
        if store is not None:
            proxies["store"] = stack.enter_context(
                Proxy(("127.0.0.1", fd.port), store.toxics, name="store-leg"))
            db_site = _redirected(db_site, site.file_daemon.ae_title, proxies["store"].port)
        dbd = DBDaemon(db_site, archive)
        inject(faults, db_daemon=dbd)
        stack.enter_context(dbd)
        leg = faults.proxy_on("client")
        if leg is not None:
            proxies["client"] = stack.enter_context(
                Proxy(("127.0.0.1", dbd.port), leg.toxics, name="client-leg"))
        yield Served(dbd, fd, proxies)


def _redirected(site: Site, ae_title: str, port: int) -> Site:
    """The DB Daemon's map sends moves for ``ae_title`` to ``port`` (a proxy) instead."""
    rows = tuple(dataclasses.replace(t, host=LOOPBACK, port=port)
                 if normalise_ae(t.ae_title) == normalise_ae(ae_title) else t
                 for t in site.db_trusted())
    return dataclasses.replace(site, db_daemon=dataclasses.replace(site.db_daemon,
                                                                   trusted=rows))


def _site_from_args(args: argparse.Namespace) -> Site:
    try:
        site = load_site_or_default(args.site)
    except SiteError as exc:
        raise CommandError(str(exc)) from exc
    if args.fd_out is not None:
        site = dataclasses.replace(
            site, file_daemon=dataclasses.replace(site.file_daemon, output=args.fd_out))
    site = with_ports(site, args.db_port, args.fd_port)
    for extra in args.trust:
        site = site.with_trusted(extra)
    return site


def _archive_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Archive:
    if args.archive is not None:
        if not args.archive.is_dir():
            raise CommandError(f"--archive {args.archive}: not a folder")
        archive, report = Archive.from_folder(args.archive)
        for path, why in report.skipped:
            print(f"skipped {path}: {why}", file=sys.stderr)
        if not report.imported:
            raise CommandError(f"--archive {args.archive}: no DICOM object could be imported")
        return archive
    if args.patients > MAX_PATIENTS:
        parser.error(f"--patients: at most {MAX_PATIENTS} patients per seed")
    return Archive.synthetic(synthetic_config(args, parser), args.patients)


def _faults_from_args(args: argparse.Namespace) -> Faults:
    """The faults of ``--scenario`` (its site and archive are not used: --site and the
    archive options say what is served)."""
    if args.scenario is None:
        return Faults()
    from .scenarios import ScenarioError, find  # the scenarios stage imports this module

    try:
        return find(args.scenario).faults
    except ScenarioError as exc:
        raise CommandError(str(exc)) from exc


def configure_logging(level: str) -> None:
    """Daemon decisions (trust, moves, writes) on stderr; pynetdicom's chatter only when
    debugging, since it logs every PDU at INFO. Every line passes the log policy of
    :mod:`emulators.log_policy`: below debug no patient name, birth date or raw patient
    ID; at any level no pixel data and no binary value beyond a few bytes."""
    from . import log_policy

    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    logging.getLogger("pynetdicom").setLevel(
        logging.DEBUG if level == "debug" else logging.WARNING)
    for handler in logging.getLogger().handlers:
        log_policy.install(handler, level)
    log_policy.protect_daemons()


@contextmanager
def _signals() -> Iterator[threading.Event]:
    """An event Ctrl-C or SIGTERM sets, for the block; the previous handlers come back
    after. A daemon that cannot start is a command error (its sentence, no traceback)."""
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    except DaemonError as exc:
        raise CommandError(str(exc)) from exc
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _serve_until(stop: threading.Event) -> None:
    while not stop.wait(0.5):
        pass
    print("stopping", flush=True)


def _print_archive(archive: Archive) -> None:
    counts = archive.index.counts()
    print(f"archive: {counts.patients} patients, {counts.studies} studies, "
          f"{counts.series} series, {counts.instances} instances", flush=True)


_M_ARENA_MAX = -8  # glibc's mallopt parameter


def cap_malloc_arenas(arenas: int = 2) -> bool:
    """Fewer glibc malloc arenas for a long-running ``dbdsim serve``; True if set.

    glibc gives threads that allocate at once arenas of their own (up to 8 per core),
    and each association is a thread: in the 2,000-association soak, RSS after warm-up
    grew 11.5 % in memory freed but kept per arena (``malloc_trim`` gave it back), and
    0.2 % with two arenas, at the same speed. An explicit MALLOC_ARENA_MAX wins.
    """
    if sys.platform != "linux" or "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    return bool(mallopt(_M_ARENA_MAX, arenas))


def _run_serve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    cap_malloc_arenas()
    configure_logging(args.log_level)
    site = _site_from_args(args)
    faults = _faults_from_args(args)
    if args.only is not None:
        return _run_one(args, parser, site, faults)
    archive = _archive_from_args(args, parser)
    try:
        with _signals() as stop, serving_faults(site, archive, faults) as served:
            dbd, fd = served.db_daemon, served.file_daemon
            print(dbd.ready_line(), flush=True)
            print(f"{fd.ready_line()}, writing to {fd.output}", flush=True)
            for leg, proxy in served.proxies.items():
                print(f"{leg}-leg proxy with the scenario's network faults on "
                      f"{proxy.host}:{proxy.port}"
                      + (" (call the DB Daemon here)" if leg == "client" else ""), flush=True)
            _print_archive(archive)
            _serve_until(stop)
    finally:
        archive.close()
    return 0


ONLY = ("db-daemon", "file-daemon")


def _run_one(args: argparse.Namespace, parser: argparse.ArgumentParser, site: Site,
             faults: Faults) -> int:
    """``serve --only``: one daemon in this process, so it alone can be stopped, killed or
    restarted (a crash rehearsal); the other runs elsewhere, where the site says."""
    if faults.proxy:
        raise CommandError("--only runs one daemon, but the scenario puts network-fault "
                           "proxies between both: run it without --only")
    if args.only == "db-daemon" and site.file_daemon.port == 0:
        raise CommandError("--only db-daemon: the File Daemon's port is 0 (any free port), so "
                           "moves to it cannot reach it; give its real port with --fd-port")
    archive = _archive_from_args(args, parser) if args.only == "db-daemon" else None
    try:
        daemon: DBDaemon | FileDaemon
        if archive is not None:
            daemon = DBDaemon(site, archive)
            inject(faults, db_daemon=daemon)
        else:
            daemon = FileDaemon(site)
            inject(faults, file_daemon=daemon)
        with _signals() as stop, daemon:
            if isinstance(daemon, FileDaemon):
                print(f"{daemon.ready_line()}, writing to {daemon.output}", flush=True)
            else:
                print(daemon.ready_line(), flush=True)
                _print_archive(daemon.archive)
            _serve_until(stop)
    finally:
        if archive is not None:
            archive.close()
    return 0


def _add_source_options(parser: argparse.ArgumentParser) -> None:
    group = add_archive_options(parser, seed_default=0)
    group.add_argument("--patients", type=int_at_least(1), default=10, metavar="N",
                       help="number of synthetic patients (default: %(default)s)")
    group.add_argument("--archive", type=Path, metavar="DIR",
                       help="serve the DICOM files of DIR instead of a synthetic archive")


def add_serve(commands: SubParsers[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "serve", help="run the DB Daemon and the File Daemon",
        description="Start both daemons (or one, with --only) as the site file (or the "
                    "embedded default) describes, over a seeded synthetic archive or an "
                    "imported folder; stop with Ctrl-C or SIGTERM.")
    parser.add_argument("--site", type=Path, metavar="SITE.toml",
                        help="site file (default: the embedded default site)")
    parser.add_argument("--db-port", type=int_at_least(0), metavar="PORT",
                        help="DB Daemon port (0: any free port)")
    parser.add_argument("--fd-port", type=int_at_least(0), metavar="PORT",
                        help="File Daemon port (0: any free port)")
    parser.add_argument("--fd-out", type=Path, metavar="DIR", help="File Daemon output folder")
    parser.add_argument("--only", choices=ONLY,
                        help="run one daemon only, so it can be stopped or killed alone (e.g. "
                             "to rehearse a File Daemon crash mid-move); the other one is "
                             "expected where the site file, --db-port or --fd-port say "
                             "(--only db-daemon needs the File Daemon's real port)")
    parser.add_argument("--trust", type=parse_trust, action="append", default=[],
                        metavar="AE@HOST:PORT",
                        help="also trust this AE on both daemons (repeatable)")
    parser.add_argument("--scenario", metavar="NAME|FILE.toml",
                        help="inject this catalog scenario's faults (daemon, data and network "
                             "faults; not its site or archive) to rehearse a client against "
                             "them")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                        default="info",
                        help="what the daemons log on stderr: info shows every association "
                             "decision, move and write; debug adds pynetdicom's PDUs "
                             "(default: %(default)s). Below debug, patient names and birth "
                             "dates are never shown and patient IDs only as a pseudonym "
                             "(patient-3f2a9c1e; set DBDSIM_LOG_KEY to keep it stable "
                             "across runs); debug shows identifiers in full. No level "
                             "shows pixel data or more than 16 bytes of a binary value")
    _add_source_options(parser)
    parser.set_defaults(run=_run_serve, command_parser=parser)


# --- patients ------------------------------------------------------------------------

_PLANS_SQL = """
SELECT p.patient_id, p.patient_name, i.sop_uid, i.label, i.name, i.rt_date, i.approval,
       (SELECT count(*) FROM instance d WHERE d.referenced_uid = i.sop_uid) AS doses
FROM patient p
LEFT JOIN study st ON st.patient_pk = p.pk
LEFT JOIN series se ON se.study_pk = st.pk AND se.modality = 'RTPLAN'
LEFT JOIN instance i ON i.series_pk = se.pk
ORDER BY p.patient_id, i.rt_date, i.label, i.sop_uid
"""


def patient_plans(archive: Archive) -> list[dict[str, Any]]:
    """Each patient with its plans (label, UID, approval, date, dose count)."""
    patients: dict[str, dict[str, Any]] = {}
    for row in archive.index.query(_PLANS_SQL):
        entry = patients.setdefault(row["patient_id"], {
            "patient_id": row["patient_id"], "name": row["patient_name"], "plans": []})
        if row["sop_uid"] is not None:
            entry["plans"].append({"label": row["label"], "name": row["name"],
                                   "sop_instance_uid": row["sop_uid"], "date": row["rt_date"],
                                   "approval": row["approval"], "doses": row["doses"]})
    return list(patients.values())


def _run_patients(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    archive = _archive_from_args(args, parser)
    try:
        rows = patient_plans(archive)
    finally:
        archive.close()
    if args.json:
        sys.stdout.write(json.dumps({"patients": rows}, indent=2, ensure_ascii=False) + "\n")
        return 0
    table = Table(title="Archive patients and plans", title_justify="left")
    for header in ("Patient ID", "Name", "Plan label", "Approval", "Date", "Doses",
                   "RT Plan SOP Instance UID"):
        table.add_column(header, no_wrap=header in ("Patient ID", "RT Plan SOP Instance UID"))
    for patient in rows:
        plans = patient["plans"] or [{}]
        for i, plan in enumerate(plans):
            first = i == 0
            table.add_row(escape(patient["patient_id"]) if first else "",
                          escape(patient["name"]) if first else "",
                          escape(plan.get("label") or "-"), plan.get("approval") or "-",
                          plan.get("date") or "-", str(plan.get("doses", "-")),
                          plan.get("sop_instance_uid", "-"), end_section=i == len(plans) - 1)
    Console(highlight=False, width=None if sys.stdout.isatty() else 200).print(table)
    return 0


def add_patients(commands: SubParsers[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "patients", help="list the archive's patients and their plans",
        description="List what `dbdsim serve` with the same options would serve: each "
                    "patient and its RT Plans (label, approval, date, doses, UID).")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_source_options(parser)
    parser.set_defaults(run=_run_patients, command_parser=parser)
