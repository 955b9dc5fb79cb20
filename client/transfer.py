"""Moving a manifest's objects: series-level for images, instance-level for RT objects,
counts and (where it can look) arrivals checked, only the missing re-moved.

Transient failures (rejected-transient, 0xA7xx, timeouts, aborts) are retried with
capped exponential back-off; permanent ones (untrusted AE, unknown destination,
0xA900/0xC000) stop at once: retrying cannot fix a site's configuration.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, wait
from dataclasses import dataclass, field, replace

from pydicom.dataset import Dataset

from .early_moves import EarlyMoves, Unavailable, identifier
from .errors import AssociationFailed, DicomError, Kind
from .manifest import Item, Manifest, Outcome
from .session import Progress, Session
from .settings import Settings
from .statuses import MoveResult, aborted_before_sending, move_failure
from .verify import Folder, Found, identity_problems

log = logging.getLogger(__name__)

UID_LIST_CHUNK = 100  # SOP Instance UIDs per move: ~6.5 KB of identifier
_READ_WHILE_MOVING = 0.05  # seconds between looks at the folder while a series arrives


class ProgressSink:
    """Where a move's progress goes; the default shows nothing (rich bars in the CLI)."""

    def start(self, item: Item, total: int) -> None:
        """A move of ``total`` instances of ``item`` begins."""

    def update(self, item: Item, done: int) -> None:
        """``done`` of them are through (completed or failed)."""

    def finish(self, item: Item) -> None:
        """The item's outcome is known."""


@dataclass
class Transfer:
    """Moves items to ``destination``; ``folder`` is where they can be seen arriving, if any
    (our own output for ``--dest self``, or ``--verify-dir``)."""

    session: Session
    destination: str
    folder: Folder | None = None
    progress: ProgressSink = field(default_factory=ProgressSink)
    sleep: Callable[[float], None] = time.sleep
    done: dict[tuple[str, str, tuple[str, ...]], Item] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # wrong, but the files say all is well
    found: dict[str, Found] = field(default_factory=dict)
    delivered: int = 0  # objects the destination took in this run
    uid_lists: bool = True  # whether the server takes a list of SOP Instance UIDs in a move
    early: EarlyMoves | None = None  # moves started while the collection was resolved

    @property
    def settings(self) -> Settings:
        return self.session.settings

    def run(self, manifest: Manifest) -> Manifest:
        """The manifest with each object's outcome; raises on a permanent failure (the
        outcomes so far are in :attr:`done` for the caller to save)."""
        for item in manifest.items():
            self.done[item.key] = self._move_item(item, manifest.patient_id)
        return manifest.with_outcomes(self.done)

    # -- one item ---------------------------------------------------------------------

    def _arrived(self, expected: set[str], patient_id: str, item: Item, *,
                 settle: bool = True) -> set[str]:
        """What is there now; after a move (``settle``), once the folder stops changing."""
        if self.folder is None:
            return set()
        if settle:
            self.folder.settle(expected)
        found, _ = self.folder.read()
        self.found = found
        wrong = identity_problems(item, found, patient_id)
        for problem in wrong.values():
            if problem not in self.problems:
                self.problems.append(problem)
        return {u for u in expected if u in found and u not in wrong}

    def _move_item(self, item: Item, patient_id: str) -> Item:
        s = self.settings
        if not item.sop_uids:  # a hand-written series: learn its instances first
            item = replace(item, sop_uids=self._instances(item))
        expected = set(item.sop_uids)
        if not expected:
            return replace(item, outcome=Outcome.FAILED, note=(
                f"{s.aec} lists no instance in series {item.series_uid} of study "
                f"{item.study_uid} (C-FIND at IMAGE level): nothing to move"))
        self.progress.start(item, len(expected))
        watch = self.folder is not None
        # ``known``: exactly which instances are missing, when we can tell (None: unknown).
        known = (expected - self._arrived(expected, patient_id, item, settle=False)
                 if watch else None)
        before = set(self.found)
        missing = known if known is not None else expected
        attempts = aborts = sent = asked = 0
        error: DicomError | None = None
        refused = 0  # attempts whose sub-operations the server itself reported failed
        # A move started while resolving counts as the first attempt, even when what it
        # brought is all there by now; what it brought is what came after it started.
        started = self.early.take(item) if self.early is not None else None
        present = self.early.present(item) if started is not None and self.early else None
        if present is not None:
            before = set(present)
        while missing or started is not None:
            if attempts > s.retries:
                break
            if attempts:
                delay = min(s.backoff * 2 ** (attempts - 1), s.backoff_cap)
                log.info("re-moving %d of %d %s instance(s) of series %s in %.1f s (%s)",
                         len(missing), len(expected), item.modality, item.series_uid, delay,
                         error or "counts short")
                self.sleep(delay)
            attempts += 1
            result: MoveResult | None = None
            try:
                early, started = started, None
                if early is not None:  # moved while resolving: its result, as if now
                    result = self._finish_early(early)
                if result is not None:
                    asked = len(expected)
                    self.progress.update(item, result.completed + result.failed)
                else:
                    result, asked = self._move(item, known, expected)
            except DicomError as exc:
                if not exc.transient:
                    raise
                error, aborts = exc, aborts + isinstance(exc, AssociationFailed)
            if result is not None:
                self._check_counts(item, result, asked)
                sent = max(sent, result.sent)
                self.delivered += result.sent
                refused += bool(result.failed)
                error = move_failure(s, self.destination, result)
                if error is not None and error.kind is Kind.REFUSED:
                    # The server will not move this object (0xC001 for doses or CTs at
                    # some sites, 0xA900, ...): the others may still move.
                    break
                if error is not None and not error.transient:
                    raise error
            if watch:
                known = missing = expected - self._arrived(expected, patient_id, item)
            elif result is not None and error is None and not result.failed \
                    and (result.sent >= asked or result.uncounted_success):
                missing = set()
            elif result is not None and result.failed_uids:
                known = missing = set(result.failed_uids)
            else:
                known, missing = None, expected
                if result is not None and error is None and not result.failed:
                    log.warning("%s reported success for series %s but sent %d of %d",
                                s.aec, item.series_uid, result.sent, asked)
        self.progress.finish(item)
        strays = self._strays(item, expected, before) if watch else []
        if not missing:
            return replace(item, outcome=Outcome.ARRIVED if watch else Outcome.MOVED,
                           missing=())
        nothing = len(missing) == len(expected) and not sent
        if nothing and aborts == attempts and not self.delivered:
            raise aborted_before_sending(s, self.destination, attempts)
        if nothing and error is not None and error.kind is Kind.DESTINATION:
            if not self.delivered:
                raise error
            # The destination took other objects in this run, so it is up and reachable:
            # what it refuses is this object, most likely its SOP class.
            note = (f"{self.destination} accepted other objects in this run but not this "
                    f"{item.modality or 'object'}: it most likely does not accept its SOP "
                    f"class {item.sop_class_uid or '(unknown)'}; configure {self.destination} "
                    f"to accept it. {s.aec} said: {error}")
        elif strays:
            note = (f"{s.aec} sent {len(strays)} object(s) of this series with SOP Instance "
                    f"UIDs that were not asked for (e.g. {strays[0]}) instead of these: it "
                    "mixes up its objects' UIDs. Report it to the archive's vendor.")
        else:
            note = str(error) if error is not None else (
                _refusal_note(s.aec, item, refused) if refused == attempts
                else f"{s.aec} reported success but sent {sent} of {len(expected)}"
                if sent < len(expected) else "")
        return replace(item, outcome=Outcome.FAILED if nothing else Outcome.INCOMPLETE,
                       missing=tuple(sorted(missing)) if known is not None else (),
                       note=note)

    def _check_counts(self, item: Item, result: MoveResult, asked: int) -> None:
        """Counts adding up to more than was asked for cannot be believed (nor, then,
        a success they report): say so, so only the files decide."""
        reported = result.completed + result.failed + result.warning
        if result.counted and reported > asked:
            problem = (f"{self.settings.aec} reported {reported} sub-operations for the "
                       f"{asked} object(s) of series {item.series_uid} it was asked to move: "
                       "its counts are wrong, so rtmove cannot rely on them")
            # Where the files can be seen they decide, and this is only a warning.
            into = self.warnings if self.folder is not None else self.problems
            if problem not in into:
                into.append(problem)

    def _strays(self, item: Item, expected: set[str], before: set[str]) -> list[str]:
        """Objects of this series that arrived during its moves but were not asked for."""
        # The early moves of other objects of this series (doses of one series) may
        # have brought them meanwhile: those were asked for.
        asked = self.early.asked if self.early is not None else set()
        strays = sorted(u for u, f in self.found.items()
                        if u not in expected and u not in before and u not in asked
                        and f.series_uid == item.series_uid)
        if strays:
            problem = (f"{self.settings.aec} sent {len(strays)} object(s) of series "
                       f"{item.series_uid} that were not asked for (e.g. {strays[0]})")
            if problem not in self.problems:
                self.problems.append(problem)
        return strays

    def _finish_early(self, started: Future[MoveResult]) -> MoveResult | None:
        """The early move's result (None: it could not be made, move it now); what
        arrives meanwhile is read (once: the folder keeps what it read), so checking the
        series afterwards reads no file again."""
        while self.folder is not None and not started.done():
            self.folder.read()
            wait([started], timeout=_READ_WHILE_MOVING)
        try:
            return started.result()
        except Unavailable:
            return None

    def _instances(self, item: Item) -> tuple[str, ...]:
        ds = Dataset()
        ds.QueryRetrieveLevel = "IMAGE"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = item.study_uid, item.series_uid
        ds.SOPInstanceUID = ""
        return tuple(dict.fromkeys(str(m.SOPInstanceUID) for m in self.session.find(ds)
                                   if m.get("SOPInstanceUID")))

    def _move(self, item: Item, missing: set[str] | None,
              expected: set[str]) -> tuple[MoveResult, int]:
        """One move of the whole object or series, or of just the ``missing`` instances;
        returns the result and how many instances were asked for."""
        done = [0]

        def progress(completed: int, failed: int, remaining: int) -> None:
            self.progress.update(item, done[0] + completed + failed)

        if missing is None or item.level == "IMAGE" or missing >= expected:
            return self._retrieve(identifier(item), progress), len(expected)
        uids = sorted(missing)
        if self.uid_lists and len(uids) > 1:
            # One move naming the missing instances (a UID list, PS3.4 C.4.2.2.1); servers
            # that refuse lists get one move per instance from then on.
            results = []
            for start in range(0, len(uids), UID_LIST_CHUNK):
                chunk = uids[start:start + UID_LIST_CHUNK]
                r = self._retrieve(identifier(item, chunk), progress)
                refusal = move_failure(self.settings, self.destination, r)
                # A transient failure (the destination unreachable, 0xA702) says nothing
                # about lists: taking it for a refusal cost one move per instance.
                if refusal is not None and not refusal.transient and not r.sent:
                    log.info("%s refused a move naming %d instances (0x%04X): moving them "
                             "one by one", self.settings.aec, len(chunk), r.status)
                    self.uid_lists = False
                    break
                done[0] += r.completed + r.failed + r.warning
                results.append(r)
            else:
                return _sum(results), len(uids)
        results = []
        for uid in uids:
            r = self._retrieve(identifier(item, [uid]), progress)
            done[0] += r.completed + r.failed + r.warning
            results.append(r)
        return _sum(results), len(uids)


    def _retrieve(self, keys: Dataset, progress: Progress) -> MoveResult:
        if self.destination == self.settings.aet:
            return self.session.fetch(keys, progress)  # C-GET where the site allows
        return self.session.move(keys, self.destination, progress)


def _refusal_note(aec: str, item: Item, attempts: int) -> str:
    """Failed sub-operations on every attempt: the archive will not export the object."""
    known = (" Real DB Daemons refuse to export an RT Plan with an empty Beam Sequence this "
             "way." if item.modality == "RTPLAN" else "")
    return (f"{aec} reported its C-STORE sub-operation(s) failed on all {attempts} attempt(s): "
            f"the archive will not export this object, or the destination would not store "
            f"it.{known} Check the daemon's log, and the destination's, for it.")


def _sum(results: list[MoveResult]) -> MoveResult:
    """Several moves as one: the counts added, the first non-success status kept."""
    status = next((r.status for r in results if r.status != 0x0000), 0x0000)
    return MoveResult(status, sum(r.completed for r in results),
                      sum(r.failed for r in results), sum(r.warning for r in results), 0,
                      tuple(u for r in results for u in r.failed_uids),
                      next((r.comment for r in results if r.comment), ""))
