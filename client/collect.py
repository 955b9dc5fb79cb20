"""The main job: resolve a plan's collection, move it, verify it; also a given manifest.

This is the public Python API behind ``rtmove collect`` and ``rtmove move``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from .archive_view import Headers, Instance, PatientArchive
from .early_moves import EarlyMoves
from .errors import DicomError, Kind, LocalError
from .files import full_disk, size_text
from .manifest import Manifest, Outcome
from .receiver import Receiver
from .resolve import PlanChoice, Resolver
from .session import Session
from .settings import Settings
from .transfer import ProgressSink, Transfer
from .verify import Folder, Found, charset_warnings, reference_problems

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class RunResult:
    """What a run produced: the manifest with outcomes, and what still is wrong."""

    manifest: Manifest
    problems: list[str] = field(default_factory=list)
    error: DicomError | None = None  # the failure that stopped the run, if any
    warnings: list[str] = field(default_factory=list)  # what arrived but will mislead

    @property
    def kind(self) -> Kind:
        if self.error is not None:
            return self.error.kind
        items = self.manifest.items()
        if any(i.outcome in (Outcome.FAILED, Outcome.INCOMPLETE, Outcome.PENDING)
               for i in items):
            return Kind.INCOMPLETE
        return Kind.VERIFY if self.problems else Kind.OK


def retrying(settings: Settings, step: Callable[[], T], what: str) -> T:
    """``step()``, retried on transient failures with capped exponential back-off."""
    attempt = 0
    while True:
        try:
            return step()
        except DicomError as exc:
            if not exc.transient or attempt >= settings.retries:
                raise
            delay = min(settings.backoff * 2 ** attempt, settings.backoff_cap)
            attempt += 1
            log.warning("%s failed (%s); retry %d in %.1f s", what, exc, attempt, delay)
            time.sleep(delay)


def close_together(*closers: Callable[[], None]) -> None:
    """Call every closer at once, each in its own thread; the first error is raised.

    Releasing an association waits for the peer's reply and for pynetdicom's threads to
    end (10-20 ms, measured), stopping our Storage SCP for its poll (up to 20 ms): one
    after the other they were 40 ms of every run's end, spent waiting, not computing.
    """
    with ThreadPoolExecutor(len(closers), thread_name_prefix="rtmove-close") as pool:
        futures = [pool.submit(closer) for closer in closers]
    for future in futures:
        future.result()


def _output(settings: Settings) -> Path | None:
    """Where objects moved to this client go; None when they go elsewhere."""
    if not settings.to_self:
        return None
    if settings.out is None:
        raise DicomError("--dest self needs --out DIR: where this client writes what it "
                         "receives.", Kind.USAGE)
    return settings.out


def collect(settings: Settings, patient_id: str, choice: PlanChoice, *,
            verify_dir: Path | None = None, progress: ProgressSink | None = None,
            ) -> RunResult:
    """Resolve ``choice`` for ``patient_id`` and move it to ``settings.dest``."""
    out = _output(settings)
    with ExitStack() as stack:
        # Headers read while resolving go to a temporary folder: the output must hold the
        # collection only, not every plan and dose of the patient that had to be read.
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rtmove-")))
        receiver = stack.enter_context(Receiver(settings.aet, settings.recv_port, folder,
                                                settings.receive_bind))
        session = stack.enter_context(Session(settings, receiver.on_store))
        # Objects start moving as soon as they are known (not to rtmove itself: what it
        # receives goes to its output only once the collection is resolved).
        dest_folder = Folder(verify_dir) if verify_dir is not None else None
        early = None if settings.to_self else stack.enter_context(EarlyMoves(
            settings, settings.dest, dest_folder))
        closers = [session.close, receiver.stop, *([early.close] if early is not None else [])]
        stack.callback(close_together, *closers)  # first; the exits above find all closed
        started = time.monotonic()
        archive = PatientArchive(session, patient_id)
        headers = Headers(session, receiver, None if early is None
                          else functools.partial(_in_destination, early, patient_id))
        resolver = Resolver(archive, headers,
                            on_item=early.start if early is not None else None)

        def resolve() -> Manifest:
            if early is not None:  # its association opens while the first one queries
                session.connect()
                early.prepare()
            return resolver.manifest(resolver.choose(choice))

        manifest = retrying(settings, resolve, "resolving the collection")
        manifest = replace(manifest, destination=settings.dest, extra={
            "resolve_seconds": round(time.monotonic() - started, 3),
            "finds": session.finds, "header_moves": session.moves})
        if out is not None:
            receiver.redirect(out, {u for i in manifest.items() for u in i.sop_uids})
        else:  # nothing comes to us any more: stop our Storage SCP while the objects move
            stopping = stack.enter_context(ThreadPoolExecutor(1, "rtmove-stop-scp"))
            stack.callback(stopping.submit(receiver.stop).result)
        if early is not None:
            early.finish()
            if early.associated:  # the first association is needed again only to retry
                session.release_in_background()
        return _move(session, settings, manifest, verify_dir, progress, early,
                     dest_folder if early is not None else None)
    raise AssertionError("unreachable")  # ExitStack does not swallow exceptions


def _in_destination(early: EarlyMoves, patient_id: str, instance: Instance) -> Path | None:
    """The file of ``instance`` the early moves brought to the destination's folder, if
    it is the object asked for (the patient's, in the instance's study and series)."""
    found = early.arrived(instance.uid)
    if found is None or (found.patient_id, found.study_uid, found.series_uid) \
            != (patient_id, instance.series.study_uid, instance.series.uid):
        return None
    return found.path


def move(settings: Settings, manifest: Manifest, *, verify_dir: Path | None = None,
         progress: ProgressSink | None = None) -> RunResult:
    """Move a given manifest (e.g. UIDs exported from a scripting API) to ``settings.dest``."""
    out = _output(settings)
    with ExitStack() as stack:
        if out is not None:
            receiver = stack.enter_context(Receiver(settings.aet, settings.recv_port, out,
                                                    settings.receive_bind))
            session = stack.enter_context(Session(settings, receiver.on_store))
        else:
            session = stack.enter_context(Session(settings))
        manifest = replace(manifest, destination=settings.dest, source=settings.peer)
        return _move(session, settings, manifest, verify_dir, progress)
    raise AssertionError("unreachable")


def _move(session: Session, settings: Settings, manifest: Manifest, verify_dir: Path | None,
          progress: ProgressSink | None, early: EarlyMoves | None = None,
          folder: Folder | None = None) -> RunResult:
    """``folder``: the destination's, if already being read (its files are read once)."""
    watch = _output(settings) or verify_dir
    destination = settings.aet if settings.to_self else settings.dest
    if folder is None and watch is not None:
        folder = Folder(watch)
    transfer = Transfer(session, destination, folder, progress or ProgressSink(), early=early)
    started = time.monotonic()
    moves_before = session.moves
    try:
        moved = transfer.run(manifest)
    except DicomError as exc:
        return RunResult(manifest.with_outcomes(transfer.done), list(transfer.problems), exc)
    problems = list(transfer.problems)
    warnings = list(transfer.warnings)
    if watch is not None:
        problems += reference_problems(moved, transfer.found)
        warnings += charset_warnings(moved, transfer.found)
    moves = session.moves + (early.moves if early is not None else 0)
    extra = {**moved.extra, "move_seconds": round(time.monotonic() - started, 3),
             "moves": moves - moves_before}
    moved, full = _full_disk(settings, replace(moved, extra=extra), watch, transfer.found)
    return RunResult(moved, problems, full, warnings=warnings)


def _full_disk(settings: Settings, moved: Manifest, watch: Path | None,
               found: dict[str, Found]) -> tuple[Manifest, DicomError | None]:
    """Objects missing while the disk they go to is full: that is the likely cause, though
    the archive's statuses cannot say so (the destination's 0xA700 reaches the archive,
    which reports only failed sub-operations); each such object's note says so too."""
    failed = [i for i in moved.items() if i.outcome in (Outcome.FAILED, Outcome.INCOMPLETE)]
    missing = sum(len(i.missing) or len(i.sop_uids) for i in failed)
    if watch is None or not missing:
        return moved, None
    sizes = []
    for f in found.values():
        with contextlib.suppress(OSError):
            sizes.append(f.path.stat().st_size)
    full = full_disk(watch, missing * max(sizes, default=0))
    if full is None:
        return moved, None
    space = f"{size_text(full[0])} free of {size_text(full[1])}"
    dest = "this client" if settings.to_self else settings.dest
    moved = moved.with_outcomes({i.key: replace(i, note=(
        f"{dest}'s disk is full ({space}), the likely cause. {i.note}").strip()) for i in failed})
    again = "then run the same command again: what already arrived is not moved again."
    if settings.to_self:
        return moved, LocalError(
            f"The disk holding {watch} is full ({space}): rtmove could not write {missing} "
            f"object(s) there. Free space on it, or choose an --out folder on a bigger disk, "
            f"{again}")
    return moved, DicomError(
        f"{missing} object(s) did not arrive: the disk holding {watch}, {dest}'s folder, is "
        f"full ({space}), so {dest} could not write them (a File Daemon answers 0xA700, out "
        f"of resources; {settings.aec} passes on only that sub-operations failed). Free space "
        f"on that disk, or point {dest}'s output folder at a bigger one, {again}",
        Kind.INCOMPLETE)
