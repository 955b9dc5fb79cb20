"""rtmove's own overhead: ``collect`` of one plan beside the bare movescu calls it replaces.

    python benchmarks/bench_collect.py              # full: 120-slice 512x512 CT, median of 3
    python benchmarks/bench_collect.py --short      # CI: 12 slices of 64x64, checks it works
    python benchmarks/bench_collect.py --profile    # + cProfile of one collect if over the goal
    python benchmarks/bench_collect.py --source dcmqrscp   # one source only (default: both)

A site script moves a plan's collection with one SERIES-level movescu for the CT and
one IMAGE-level movescu per RT object, and nothing else. rtmove must first find the
objects (C-FINDs, and the RT objects' headers moved to itself and read) and then
checks what arrived (every file read back, references checked). The project's goal:
that work costs under 10% of the move itself. Both move the same objects to the
emulated File Daemon (the default site layout, on free ports); rtmove also once to
itself (``--dest self``).

The objects come from one of two Q/R sources, each measured in its own section:

* ``emulator``: the emulated DB Daemon (with the File Daemon beside it);
* ``dcmqrscp``: DCMTK's dcmqrscp, loaded (``storescu +sd +r``) with the same objects
  written as files by :func:`emulators.files.write_patient`, and the emulated File
  Daemon alone as the destination (trusting dcmqrscp's AE). dcmqrscp is started by
  :func:`emulators.peers.dcmqrscp` (forking mode, readiness read from /proc and
  proved with ``echoscu``, stopped workers first when its section ends); its HostTable
  names the two move destinations (the File Daemon, and rtmove's own AE at its
  receive port). A real server sends large objects
  (the structure set's header moves above all, and the CT) much faster than the
  emulator: this section shows rtmove's overhead against such a server.

The destination is the emulated File Daemon for both sources, so that the sections
differ in the source only (and rtmove's checks read the File Daemon's folder layout).
It takes objects in more slowly than, say, DCMTK's storescp, which lengthens the
moves of rtmove and movescu alike: rtmove's overhead in seconds hardly depends on
it, but as a fraction of the move it would be larger with a faster destination.

The daemons run in a child process by default, as the real ones run on another
machine: in the benchmark's own process they would share its GIL with the client,
which slows both and charges the daemons' work to rtmove but not to movescu
(``--in-process`` shows that arrangement). DCMTK tools run with TCP_NODELAY=1.

rtmove's figures: ``resolve`` and the moves are the client's own timings (the run's
``manifest.extra``); ``verify`` (reading the arrived files, checking references) is
timed by wrapping :mod:`client.verify` and taken out of the phase it ran in (mostly the
moves; while resolving, the plan and structure set are read in the destination's
folder);
``other`` is the rest of the call (starting and stopping its Storage SCP, releasing
the association). ``CPU`` is the client process's CPU time, all threads (with the
daemons elsewhere), beside the movescu processes'. Each figure is the median of
``--repeat`` runs, after one warm-up run (``1st run``).

``--emulator-archive files`` makes the emulated DB Daemon serve stored files instead
of rebuilding each object from its recipe for every request, as the real DB Daemon
(and dcmqrscp) do: the emulator's generation cost (the structure set's contours,
above all) then no longer weighs on every move.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import functools
import io
import json
import multiprocessing
import os
import pstats
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

import client.collect
import client.verify
from client.collect import RunResult, collect
from client.files import archive_path
from client.manifest import Item, Outcome
from client.resolve import PlanChoice
from client.session import Progress, Session
from client.settings import SELF, Settings, from_site
from client.site import Site, TrustedAE, default_site
from client.statuses import MoveResult
from emulators.archive import Archive
from emulators.file_daemon import FileDaemon
from emulators.files import write_patient
from emulators.peers import DCMTK_ENV, LOOPBACK, Dcmqrscp, dcmqrscp, free_port
from emulators.serve import serving, with_ports
from emulators.synthetic import PatientRecipe, SyntheticConfig, make_recipe

GOAL = 0.10  # the client's own overhead, as a fraction of the move time (issue 6)
PROFILE_TOP = 25
SOURCES = ("emulator", "dcmqrscp")  # the Q/R SCPs the objects are moved from
QR_AE = "DCMQRSCP"  # dcmqrscp's called AE title
LOADER_AE = "LOADER"  # storescu's, when loading dcmqrscp
# The loader must be in dcmqrscp's HostTable to store, which makes it a move
# destination too: at this port, never served, a move to it fails.
NOBODY_PORT = 1
LOG_TAIL = 30  # lines of a server's log in an error message


# -- the sources --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Source:
    """A running Q/R SCP the objects are moved from, and the site as run beside it."""

    kind: str  # one of SOURCES
    server: str  # what it is, e.g. "dcmqrscp v3.6.7"
    ae_title: str
    port: int
    archive: str  # what it serves: "recipe" (rebuilt per request) or "files"
    site: Site  # the File Daemon's trusted map lets this source in

    def settings(self, **overrides: object) -> Settings:
        """rtmove's settings against this source (``overrides`` as :func:`from_site`)."""
        return from_site(self.site, host=LOOPBACK, port=self.port, aec=self.ae_title,
                         recv_port=self.site.client.port, **overrides)


def _make_site(fd_out: Path, recv_port: int) -> Site:
    """The embedded default site on free ports; the client entry carries rtmove's receive
    port, so the DB Daemon's derived trusted map lets moves to rtmove itself through."""
    site = with_ports(default_site(), db_port=0, fd_port=0)
    return dataclasses.replace(
        site, file_daemon=dataclasses.replace(site.file_daemon, output=fd_out),
        client=dataclasses.replace(site.client, port=recv_port))


def _archive(config: SyntheticConfig, archive: str, folder: Path) -> Archive:
    """The one-patient archive: rebuilt from the recipe on each request (``recipe``, the
    default), or the same objects written to ``folder`` first and read back (``files``,
    as a real archive serves stored files)."""
    if archive == "recipe":
        return Archive.synthetic(config, 1)
    write_patient(make_recipe(config, 0), folder)
    return Archive.from_folder(folder)[0]


@contextmanager
def _emulated(site: Site, config: SyntheticConfig | None, archive: str, folder: Path,
              ) -> Iterator[tuple[int | None, int]]:
    """Both daemons over a one-patient synthetic archive, or the File Daemon alone when
    ``config`` is None; yields their ports (the DB Daemon's: None when alone)."""
    if config is None:
        with FileDaemon(site) as fd:
            yield None, fd.port
        return
    served = _archive(config, archive, folder)
    try:
        with serving(site, served) as (dbd, fd):
            yield dbd.port, fd.port
    finally:
        served.close()


def _serve_child(site: Site, config: SyntheticConfig | None, archive: str, folder: Path,
                 conn: Connection) -> None:
    """Child process: the daemons until the parent says stop (or goes away)."""
    with _emulated(site, config, archive, folder) as ports:
        conn.send(ports)
        with suppress(EOFError):  # the parent went away: stop as well
            conn.recv()


@contextmanager
def _daemons(site: Site, config: SyntheticConfig | None, archive: str, folder: Path,
             in_process: bool) -> Iterator[tuple[int | None, int]]:
    """:func:`_emulated` in a child process (or in this one); yields the ports."""
    if in_process:
        with _emulated(site, config, archive, folder) as running:
            yield running
        return
    ctx = multiprocessing.get_context("spawn")  # no threads or sockets inherited
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve_child, args=(site, config, archive, folder, child),
                       daemon=True)
    proc.start()
    try:
        ports: tuple[int | None, int] | None = None
        with suppress(EOFError):  # the child failed; its traceback is on stderr
            if parent.poll(60):
                ports = parent.recv()
        if ports is None:
            raise RuntimeError("the daemons did not start (see the child's error above)")
        yield ports
    finally:
        with suppress(OSError):  # the child may be gone already
            parent.send("stop")
        proc.join(30)
        if proc.is_alive():
            proc.terminate()


@contextmanager
def _emulator_source(site: Site, config: SyntheticConfig, archive: str, folder: Path,
                     in_process: bool) -> Iterator[Source]:
    """The emulated DB Daemon (and File Daemon) as the source."""
    with _daemons(site, config, archive, folder / "archive", in_process) as (db_port, _fd):
        assert db_port is not None
        yield Source("emulator", "emulated DB Daemon", site.db_daemon.ae_title, db_port,
                     archive, site)


@contextmanager
def _dcmqrscp_source(site: Site, recipe: PatientRecipe, folder: Path,
                     in_process: bool) -> Iterator[Source]:
    """dcmqrscp loaded with the recipe's objects as files, the File Daemon alone (trusting
    dcmqrscp) as the destination."""
    executable = _tool("dcmqrscp")
    files = write_patient(recipe, folder / "files")
    port = free_port()
    site = dataclasses.replace(site, file_daemon=dataclasses.replace(
        site.file_daemon, trusted=(*site.fd_trusted(), TrustedAE(QR_AE, LOOPBACK, port))))
    with _daemons(site, None, "", folder, in_process) as (_db, fd_port):
        peers = {site.file_daemon.ae_title: (LOOPBACK, fd_port),
                 site.client.ae_title: (LOOPBACK, site.client.port),
                 LOADER_AE: (LOOPBACK, NOBODY_PORT)}
        # A quota of 10 studies: one patient's, well under dcmqrscp's limit of 500.
        with dcmqrscp(folder / "dcmqrscp", QR_AE, peers, LOADER_AE, port=port,
                      executable=executable, max_studies=10) as server:
            _load(server, folder / "files", len(files))
            yield Source("dcmqrscp", f"dcmqrscp {_version(executable)}", QR_AE, port,
                         "files", site)


@contextmanager
def _source(kind: str, site: Site, config: SyntheticConfig, archive: str, folder: Path,
            in_process: bool) -> Iterator[Source]:
    if kind == "emulator":
        with _emulator_source(site, config, archive, folder, in_process) as source:
            yield source
    else:
        with _dcmqrscp_source(site, make_recipe(config, 0), folder, in_process) as source:
            yield source


# -- dcmqrscp -----------------------------------------------------------------------------

def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name!r} is not on PATH (DCMTK is needed for --source dcmqrscp)")
    return path


def _version(executable: str) -> str:
    """``v3.6.7`` from ``dcmqrscp --version``, or ``?``."""
    done = subprocess.run([executable, "--version"], capture_output=True, text=True,
                          check=False)
    found = re.search(r"\bv\d+(?:\.\d+)+", done.stdout)
    return found.group(0) if found else "?"


def _load(server: Dcmqrscp, folder: Path, expected: int) -> None:
    """Send every file under ``folder`` in one association, then count what dcmqrscp
    holds (it can drop instances while storescu still reports success)."""
    done = subprocess.run([_tool("storescu"), "-aet", LOADER_AE, "-aec", server.ae_title,
                           "+sd", "+r", server.host, str(server.port), str(folder)],
                          capture_output=True, text=True, env=DCMTK_ENV,
                          timeout=120 + 0.2 * expected, check=False)
    problem = f"storescu exited with {done.returncode}" if done.returncode else ""
    if not problem and (held := server.stored()) != expected:
        problem = f"dcmqrscp holds {held} instances, {expected} were sent"
    if problem:
        output = "\n".join((done.stdout + done.stderr).splitlines()[-LOG_TAIL:])
        raise RuntimeError(f"loading dcmqrscp failed: {problem}\n--- storescu ---\n{output}\n"
                           f"--- {server.log} ---\n{server.log_tail(LOG_TAIL)}")


# -- rtmove -------------------------------------------------------------------------------

class _VerifyClock:
    """Seconds spent in :mod:`client.verify` (reading arrived files, checking references)
    during one run, counted once however the calls nest: in all (``seconds``), and once
    the moves began (``moving``, the rest ran while resolving)."""

    TIMED = ((client.verify.Folder, "settle"), (client.verify.Folder, "read"),
             (client.collect, "reference_problems"))

    def __init__(self) -> None:
        self.seconds = self.moving = 0.0
        self._depth = 0
        self._in_moves = False
        self._saved: list[tuple[object, str, Any]] = []

    def __enter__(self) -> _VerifyClock:
        for owner, name in self.TIMED:
            original = getattr(owner, name)
            self._saved.append((owner, name, original))
            setattr(owner, name, self._timed(original))
        move = client.collect._move
        self._saved.append((client.collect, "_move", move))

        @functools.wraps(move)
        def moves(*args: Any, **kwargs: Any) -> Any:
            self._in_moves = True
            return move(*args, **kwargs)

        setattr(client.collect, "_move", moves)  # noqa: B010
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved.clear()

    def _timed(self, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._depth += 1
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self._depth -= 1
                if self._depth == 0:
                    seconds = time.perf_counter() - start
                    self.seconds += seconds
                    self.moving += seconds if self._in_moves else 0.0
        return timed


@dataclasses.dataclass(frozen=True)
class Target:
    """What one benchmark moves, and where it lands."""

    patient_id: str
    plan_uid: str
    expected: frozenset[str]  # the collection's SOP Instance UIDs, from the recipe
    names: dict[str, str]  # SOP Instance or Series UID -> what it is, for the profile
    fd_folder: Path  # the File Daemon's folder for the patient
    self_out: Path  # rtmove's output for --dest self


def _clear(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def _collect_once(target: Target, source: Source, dest: str,
                  ) -> tuple[dict[str, float], RunResult]:
    """One ``collect`` to ``dest`` (the File Daemon, or SELF), its figures and result."""
    _clear(target.fd_folder)
    _clear(target.self_out)
    to_self = dest == SELF
    settings = source.settings(dest=SELF if to_self else None,
                               out=target.self_out if to_self else None)
    with _VerifyClock() as clock:
        start, cpu = time.perf_counter(), time.process_time()
        result = collect(settings, target.patient_id, PlanChoice(uid=target.plan_uid),
                         verify_dir=None if to_self else target.fd_folder)
        total, cpu = time.perf_counter() - start, time.process_time() - cpu
    _check(result, target, dest)
    extra = result.manifest.extra
    resolve, moves = float(extra["resolve_seconds"]), float(extra["move_seconds"])
    return {"total": total, "resolve": resolve - (clock.seconds - clock.moving),
            "move": moves - clock.moving, "verify": clock.seconds,
            "other": total - resolve - moves, "cpu": cpu,
            "finds": extra["finds"], "header_moves": extra["header_moves"],
            "moves": extra["moves"]}, result


def _check(result: RunResult, target: Target, dest: str) -> None:
    """A benchmark of a run that did not move everything would measure nothing."""
    items = result.manifest.items()
    uids = {u for item in items for u in item.sop_uids}
    if result.error is not None or result.problems or uids != target.expected \
            or any(item.outcome is not Outcome.ARRIVED for item in items):
        raise RuntimeError(f"rtmove collect to {dest} failed: error={result.error}, "
                           f"problems={result.problems}, "
                           f"outcomes={[i.outcome.value for i in items]}, "
                           f"{len(uids & target.expected)} of {len(target.expected)} objects")


# -- bare movescu ---------------------------------------------------------------------------

def _movescu_argv(source: Source, item: Item) -> list[str]:
    """What a site script runs: a SERIES move for the images, an IMAGE move per RT object
    (with the study and series keys above it, which dcmqrscp requires)."""
    keys = [f"0008,0052={item.level}", f"0020,000D={item.study_uid}",
            f"0020,000E={item.series_uid}"]
    if item.level == "IMAGE":
        keys.append(f"0008,0018={item.sop_uids[0]}")
    site = source.site
    return ["movescu", "-S", "-aet", site.client.ae_title, "-aec", source.ae_title,
            "-aem", site.file_daemon.ae_title, *(a for k in keys for a in ("-k", k)),
            LOOPBACK, str(source.port)]


def _movescu_once(target: Target, calls: list[list[str]],
                  times: list[float] | None = None) -> dict[str, float]:
    """The sum of the movescu processes' wall times (each appended to ``times`` if given);
    every object must have arrived."""
    _clear(target.fd_folder)
    total, cpu = 0.0, _children_cpu()
    for argv in calls:
        start = time.perf_counter()
        done = subprocess.run(argv, env=DCMTK_ENV, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - start
        if done.returncode:
            raise RuntimeError(f"{' '.join(argv)} exited with {done.returncode}:\n"
                               f"{done.stdout}{done.stderr}")
        total += seconds
        if times is not None:
            times.append(seconds)
    arrived = sum(1 for _ in target.fd_folder.glob("*.dcm"))
    if arrived != len(target.expected):
        raise RuntimeError(f"movescu: {arrived} of {len(target.expected)} files arrived")
    return {"total": total, "cpu": _children_cpu() - cpu}


def _children_cpu() -> float:
    """CPU seconds of the waited-for child processes (the movescu runs) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# -- the run ------------------------------------------------------------------------------

def _medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def _repeat(repeat: int, once: Callable[[], dict[str, float]]) -> dict[str, Any]:
    first = once()  # warm-up: imports, contexts built once, the daemons' first association
    runs = [once() for _ in range(repeat)]
    figures: dict[str, Any] = _medians(runs)
    figures["first_run"] = first["total"]
    figures["runs"] = [run["total"] for run in runs]  # outliers (e.g. a retried move) show
    return figures


def _ratios(row: dict[str, Any], movescu: float) -> None:
    row["overhead"] = (row["total"] - movescu) / movescu
    row["client_share"] = (row["resolve"] + row["verify"]) / row["move"]


class _OperationLog:
    """Each DICOM operation of one run, timed: where rtmove waits, which cProfile (seeing
    only lock waits) cannot tell apart."""

    def __init__(self, names: dict[str, str]) -> None:
        self.names = names  # SOP Instance or Series UID -> what it is
        self.rows: list[tuple[str, float, float]] = []  # label, start, seconds
        self._saved: dict[str, Any] = {}
        self._zero = time.perf_counter()

    def __enter__(self) -> _OperationLog:
        self._saved = {"find": Session.find, "move": Session.move}
        self._zero = time.perf_counter()
        log = self

        def find(session: Session, identifier: Dataset) -> list[Dataset]:
            start = time.perf_counter()
            matches: list[Dataset] = log._saved["find"](session, identifier)
            log.rows.append((f"C-FIND {identifier.QueryRetrieveLevel}: {len(matches)} "
                             "match(es)", start - log._zero, time.perf_counter() - start))
            return matches

        def move(session: Session, identifier: Dataset, destination: str,
                 progress: Progress | None = None) -> MoveResult:
            start = time.perf_counter()
            result: MoveResult = log._saved["move"](session, identifier, destination, progress)
            what = log.names.get(str(identifier.get("SOPInstanceUID", "")),
                                 log.names.get(str(identifier.SeriesInstanceUID), "?"))
            log.rows.append((f"C-MOVE {identifier.QueryRetrieveLevel} {what} -> "
                             f"{destination}", start - log._zero, time.perf_counter() - start))
            return result

        setattr(Session, "find", find)  # noqa: B010 (mypy refuses a method assignment)
        setattr(Session, "move", move)  # noqa: B010
        return self

    def __exit__(self, *exc: object) -> None:
        for name, original in self._saved.items():
            setattr(Session, name, original)

    def text(self) -> str:
        """One line per operation, by start: when it started (from the run's start, s),
        how long it took, what it was; several at once overlap."""
        return "\n".join(f"  at {start:6.3f}  {seconds:7.3f} s  {label}"
                         for label, start, seconds in sorted(self.rows, key=lambda r: r[1]))


def profile_collect(target: Target, source: Source, movescu: list[tuple[str, list[str]]],
                    ) -> str:
    """One collect to the File Daemon: its DICOM operations timed, then the bare movescu
    calls' (one run, for comparison), then cProfile's top entries by cumulative time.
    cProfile sees this (main) thread only: rtmove's Storage SCP and pynetdicom's reader
    threads, and the servers, appear as waits."""
    _clear(target.fd_folder)
    settings = source.settings()
    profiler = cProfile.Profile()
    with _OperationLog(target.names) as operations:
        profiler.enable()
        result = collect(settings, target.patient_id, PlanChoice(uid=target.plan_uid),
                         verify_dir=target.fd_folder)
        profiler.disable()
    _check(result, target, "the File Daemon (profiled)")
    times: list[float] = []
    _movescu_once(target, [argv for _label, argv in movescu], times)
    bare = "\n".join(f"  {seconds:7.3f} s  {label}"
                     for (label, _argv), seconds in zip(movescu, times, strict=True))
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(PROFILE_TOP)
    return (f"rtmove's DICOM operations, by start:\n{operations.text()}\n\n"
            f"The bare movescu calls (each a process: association, move, release):\n{bare}\n\n"
            f"cProfile (top {PROFILE_TOP} by cumulative time):\n{out.getvalue()}")


def _measure(target: Target, source: Source, repeat: int, *, in_process: bool,
             profile: bool) -> dict[str, Any]:
    """One source's section: rtmove to the File Daemon and to itself, the bare movescu
    calls, their ratios (and ``profile`` text when asked for and over the goal)."""
    rows: dict[str, Any] = {}
    results: list[RunResult] = []

    def rtmove(dest: str) -> dict[str, float]:
        figures, result = _collect_once(target, source, dest)
        results.append(result)
        return figures

    rows["rtmove"] = _repeat(repeat, lambda: rtmove(source.site.file_daemon.ae_title))
    rows["rtmove_self"] = _repeat(repeat, lambda: rtmove(SELF))
    items = results[0].manifest.items()
    calls = [_movescu_argv(source, item) for item in items]
    rows["movescu"] = _repeat(repeat, lambda: _movescu_once(target, calls))
    movescu = rows["movescu"]["total"]
    for name in ("rtmove", "rtmove_self"):
        _ratios(rows[name], movescu)
        if in_process:  # this process's CPU time is the daemons' too
            rows[name]["cpu"] = None
    section: dict[str, Any] = {
        "server": source.server, "ae_title": source.ae_title, "archive": source.archive,
        "objects": sum(len(i.sop_uids) for i in items if i.outcome is Outcome.ARRIVED),
        "expected_objects": len(target.expected), "movescu_calls": len(calls),
        **rows, "overhead": rows["rtmove"]["overhead"],
        "client_share": rows["rtmove"]["client_share"]}
    section["over_goal"] = section["overhead"] > GOAL
    if profile and section["over_goal"]:
        dest = source.site.file_daemon.ae_title
        labelled = [(_move_label(item, target.names, dest), argv)
                    for item, argv in zip(items, calls, strict=True)]
        section["profile"] = profile_collect(target, source, labelled)
    return section


def _move_label(item: Item, names: dict[str, str], dest: str) -> str:
    uid = item.sop_uids[0] if item.level == "IMAGE" else item.series_uid
    return f"C-MOVE {item.level} {names.get(uid, '?')} -> {dest}"


def run(slices: int, size: int, repeat: int, *, sources: tuple[str, ...] = SOURCES,
        archive: str = "recipe", in_process: bool = False, profile: bool = False,
        where: Path | None = None) -> dict[str, Any]:
    """Every measurement, one section per source in ``sources``; the figures as one
    JSON-ready dict (a section has ``profile`` text when asked for and over the goal).
    ``archive``: what the emulated DB Daemon serves (dcmqrscp always serves files)."""
    config = SyntheticConfig(seed=0, slices=slices, rows=size, columns=size)
    recipe = make_recipe(config, 0)
    plan = recipe.plans[0]
    ss = plan.structure_set
    doses = [d for d in recipe.doses if d.plan.uid == plan.uid]
    names = {plan.uid: "RTPLAN", ss.uid: "RTSTRUCT", ss.ct.series.uid: "CT series",
             **{d.uid: "RTDOSE" for d in doses}}
    expected = frozenset({plan.uid, ss.uid, *ss.ct.slice_uids, *(d.uid for d in doses)})
    report: dict[str, Any] = {
        "slices": slices, "size": size, "repeat": repeat, "goal": GOAL,
        "daemons": "in process" if in_process else "child process", "sources": {}}
    with tempfile.TemporaryDirectory(prefix="bench-collect-", dir=where) as tmp_name:
        for kind in sources:
            folder = Path(tmp_name) / kind
            site = _make_site(folder / "fd", free_port())
            target = Target(recipe.patient_id, plan.uid, expected, names,
                            archive_path(folder / "fd", recipe.patient_id, "CT", "x").parent,
                            folder / "self")
            with _source(kind, site, config, archive, folder, in_process) as source:
                report["sources"][kind] = _measure(target, source, repeat,
                                                   in_process=in_process, profile=profile)
    return report


# -- output -------------------------------------------------------------------------------

def _seconds(value: float | None, width: int) -> str:
    return f"{'-' if value is None else f'{value:.3f}':>{width}}"


def _served(kind: str, section: dict[str, Any], daemons: str) -> str:
    """What one section's source is, in words."""
    if kind == "emulator":
        what = ("each object rebuilt from its recipe per request" if section["archive"] == "recipe"
                else "stored files")
        return (f"{section['server']} {section['ae_title']} serving {what}; both daemons in "
                f"a {daemons}")
    return (f"{section['server']} {section['ae_title']} serving the same objects as files; "
            f"the File Daemon alone emulated, in a {daemons}")


def _section(kind: str, section: dict[str, Any], daemons: str) -> list[str]:
    lines = [f"source: {_served(kind, section, daemons)}",
             f"{'':<28}{'total':>7}{'resolve':>8}{'moves':>7}{'verify':>7}{'other':>7}"
             f"{'CPU':>7}{'overhead':>9}{'client':>8}{'1st run':>8}"]
    for key, label in (("rtmove", "rtmove collect -> VMSFD"),
                       ("rtmove_self", "rtmove collect --dest self")):
        row = section[key]
        lines.append(f"{label:<28}{row['total']:>7.3f}{row['resolve']:>8.3f}"
                     f"{row['move']:>7.3f}{row['verify']:>7.3f}{row['other']:>7.3f}"
                     f"{_seconds(row['cpu'], 7)}{row['overhead']:>9.1%}"
                     f"{row['client_share']:>8.1%}{row['first_run']:>8.3f}")
    row = section["movescu"]
    label = f"movescu x{section['movescu_calls']} -> VMSFD"
    lines.append(f"{label:<28}{row['total']:>7.3f}{'':>29}{row['cpu']:>7.3f}{'':>17}"
                 f"{row['first_run']:>8.3f}")
    r, rs = section["rtmove"], section["rtmove_self"]
    lines.append(
        f"rtmove: {r['finds']:g} C-FINDs, {r['header_moves']:g} header moves to itself, then "
        f"{r['moves']:g} moves to VMSFD ({rs['moves']:g} with --dest self: the RT objects "
        "read while resolving are kept).")
    if section["over_goal"]:
        lines.append(f"NOTE: rtmove's overhead {section['overhead']:.1%} is above the "
                     f"{GOAL:.0%} goal (--profile shows where its time goes).")
    return lines


def _table(report: dict[str, Any]) -> str:
    size = report["size"]
    sections = report["sources"]
    objects = next(iter(sections.values()))["expected_objects"]
    lines = [f"rtmove collect vs bare movescu: one plan, {report['slices']}-slice {size}x{size} "
             f"CT + structure set + plan + dose(s) = {objects} objects, moved to the emulated "
             "File Daemon (VMSFD)",
             f"median of {report['repeat']} run(s); seconds"]
    for kind, section in sections.items():
        lines += ["", *_section(kind, section, report["daemons"])]
    lines += [
        "",
        "overhead = (rtmove total - movescu total) / movescu total (for --dest self too, "
        "though its moves end in rtmove); client = (resolve + verify) / moves; CPU: the "
        "client's process (all its threads), or the movescu processes."]
    return "\n".join(lines)


def _ram_folder() -> Path | None:
    """/dev/shm where it is a writable folder (Linux), else None: the system's temp."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--short", action="store_true", help="tiny sizes for CI")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--repeat", type=int, default=3, metavar="N",
                        help="measured runs of each (median reported; default: %(default)s)")
    parser.add_argument("--profile", action="store_true",
                        help=f"profile one collect when the overhead is above {GOAL * 100:.0f}%%")
    parser.add_argument("--source", choices=SOURCES,
                        help="the Q/R SCP the objects are moved from: the emulated DB Daemon, "
                             "or DCMTK's dcmqrscp loaded with the same objects "
                             "(default: both, one section each)")
    parser.add_argument("--emulator-archive", choices=("recipe", "files"), default="recipe",
                        help="the emulated DB Daemon rebuilds each object from its recipe, or "
                             "serves files written beforehand (default: %(default)s)")
    parser.add_argument("--dir", type=Path, default=_ram_folder(),
                        help="where the File Daemon writes (default: %(default)s, in memory "
                             "where there is one: both sides write the same files, and a "
                             "disk's own timing varied more than rtmove's overhead)")
    parser.add_argument("--in-process", action="store_true",
                        help="run the emulated daemons in this process (sharing its GIL with "
                             "rtmove)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    slices, size = (12, 64) if args.short else (120, 512)
    sources = SOURCES if args.source is None else (args.source,)
    report = run(slices, size, args.repeat, sources=sources, archive=args.emulator_archive,
                 in_process=args.in_process, profile=args.profile, where=args.dir)
    profiles = {kind: section.pop("profile", None)
                for kind, section in report["sources"].items()}
    print(json.dumps(report, indent=2) if args.json else _table(report))
    side = sys.stderr if args.json else sys.stdout  # --json: stdout is the JSON alone
    for kind, profile in profiles.items():
        if profile is not None:
            print(f"\nProfile of one rtmove collect -> VMSFD, source {kind}\n{profile}",
                  file=side)
        elif args.profile:
            print(f"\nno profile for source {kind}: the overhead is within the {GOAL:.0%} goal",
                  file=side)
    return 0


if __name__ == "__main__":
    sys.exit(main())
