"""A collection's objects moved while the rest of it is still being resolved.

``collect`` first resolved the whole collection (C-FINDs, the RT objects' headers moved
to rtmove and read), then moved it: against dcmqrscp, 120 slices, resolving took 0.19 s
beside 0.6 s of moves, all of it added to the run. The image series is most of the
data, and it is known once the structure set is read, before its own C-FIND at IMAGE
level (120 matches: 0.12 s of those 0.19). Here each object starts moving as soon as
resolution names it, on a second association, one move at a time in the order the
transfer would have moved them (plan, structure set, images, doses: a destination
that fills up or fails after N objects fails the same ones); the transfer then takes
each result instead of moving the object again, and retries what needs it as before.

Only first moves start early: when rtmove can see the destination folder and some of
an object or series is already there, the transfer moves just what is missing, as
before (a re-run after a failure moves nothing twice). A DB Daemon that will not open a
second association (its limit reached, or one per calling AE) is asked once: the
transfer then moves everything itself, as before, with no retry spent on it.

Where rtmove can see the destination's folder, the plan and the structure set it must
read are read there once their early moves end (:meth:`EarlyMoves.arrived`), instead of
being moved to rtmove as well: those second moves ran beside the first ones and slowed
them (the plan's move took 53 ms instead of 25, the structure set's 55 instead of 40),
and the images wait for both. What is not there, or not readable, is moved to rtmove
as before.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor

from pydicom.dataset import Dataset

from .errors import DicomError
from .manifest import Item
from .session import Session
from .settings import Settings
from .statuses import MoveResult
from .verify import Folder, Found

log = logging.getLogger(__name__)

# After an early move, how long the destination's folder must stay unchanged without the
# object in it before rtmove gives up looking there (and moves it to itself), and at most.
_ARRIVAL_QUIET = 0.2
_ARRIVAL_LIMIT = 5.0


def identifier(item: Item, sop_uids: list[str] | None = None) -> Dataset:
    """The C-MOVE identifier of ``item``, or of just ``sop_uids`` of it."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "IMAGE" if sop_uids or item.level == "IMAGE" else "SERIES"
    ds.StudyInstanceUID = item.study_uid
    ds.SeriesInstanceUID = item.series_uid
    if ds.QueryRetrieveLevel == "IMAGE":
        uids = sop_uids or list(item.sop_uids)
        ds.SOPInstanceUID = uids[0] if len(uids) == 1 else uids
    return ds


class Unavailable(Exception):
    """The early moves' association could not be opened: the transfer moves the object."""


class EarlyMoves:
    """``with EarlyMoves(settings, destination, folder) as early:``; :meth:`start` each
    object (an RT object or a series) when it is known, :meth:`take` its move's result
    when its turn comes."""

    def __init__(self, settings: Settings, destination: str, folder: Folder | None) -> None:
        self.destination = destination
        self.folder = folder
        self.session = Session(settings)  # its own association: one operation at a time
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="rtmove-early-move")
        self._started: dict[tuple[str, str, tuple[str, ...]], Future[MoveResult]] = {}
        self._refused: DicomError | None = None  # why the association could not be opened
        self._finished = False
        # What the folder held when each move started: what arrives after it came with
        # it (or with the moves before it), objects not asked for included.
        self._present: dict[tuple[str, str, tuple[str, ...]], frozenset[str]] = {}
        self.asked: set[str] = set()  # the SOP Instance UIDs named by the moves started

    def __enter__(self) -> EarlyMoves:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def moves(self) -> int:
        return self.session.moves

    def start(self, item: Item) -> None:
        """Move ``item`` now (after those started before it), unless some of it is
        already where it goes."""
        if item.key in self._started or self._finished:
            return
        if self.folder is not None:
            found, _ = self.folder.read()
            if any(f.series_uid == item.series_uid if item.level == "SERIES"
                   else f.sop_uid in item.sop_uids for f in found.values()):
                return
            self._present[item.key] = frozenset(found)
        self.asked.update(item.sop_uids)
        log.info("moving %s %s to %s while the rest is resolved", item.modality,
                 item.series_uid if item.level == "SERIES" else item.sop_uids[0],
                 self.destination)
        self._started[item.key] = self._pool.submit(self._move, identifier(item))

    def prepare(self) -> None:
        """Open the association now, in the background (once the first one is open: a
        daemon allowing one association per client must refuse this one, not that)."""
        if not self._finished:
            self._pool.submit(self._connect)

    def _connect(self) -> None:
        if self._refused is None and not self.session.associated:
            try:
                self.session.connect()
            except DicomError as exc:
                log.info("no second association with the DB Daemon (%s): objects move once "
                         "the collection is resolved", exc)
                self._refused = exc

    def _move(self, keys: Dataset) -> MoveResult:
        self._connect()
        if self._refused is not None:
            raise Unavailable(str(self._refused))
        return self.session.move(keys, self.destination)

    @property
    def associated(self) -> bool:
        """Whether the early moves have their own association (the transfer then needs
        the first one only to move again what did not arrive)."""
        return self.session.associated

    def finish(self) -> None:
        """Nothing more will start: the association is released right after the last
        move ends, while the transfer still checks what arrived."""
        if not self._finished:
            self._finished = True
            self._pool.submit(self.session.close)

    def arrived(self, uid: str) -> Found | None:
        """Object ``uid`` as read in the destination's folder once the early move that
        names it has ended; None if there is no such move or folder, the move failed, or
        the object is not (readable) there."""
        started = next((f for key, f in self._started.items() if uid in key[2]), None)
        if self.folder is None or started is None:
            return None
        try:
            result = started.result()
        except (DicomError, Unavailable):
            return None
        if not (result.sent or result.uncounted_success):
            return None
        # A File Daemon may still be writing when the move returns.
        self.folder.settle({uid}, quiet=_ARRIVAL_QUIET, limit=_ARRIVAL_LIMIT)
        return self.folder.read()[0].get(uid)

    def present(self, item: Item) -> frozenset[str] | None:
        """The SOP Instance UIDs in the folder when the early move of ``item`` started
        (None: no such move, or no folder)."""
        return self._present.get(item.key)

    def take(self, item: Item) -> Future[MoveResult] | None:
        """The early move of ``item``, if one was started (its result raises the move's
        DicomError, as :meth:`Session.move` does, or :class:`Unavailable`)."""
        return self._started.pop(item.key, None)

    def close(self) -> None:
        """Wait for moves under way (an abandoned one would still be sending), then
        release the association."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        for future in self._started.values():  # started but never taken: say how they ended
            if not future.cancelled() and isinstance(future.exception(), DicomError):
                log.info("an early move ended in an error: %s", future.exception())
        self._started.clear()
        self.session.close()
