"""One association with the Q/R server, reopened when it is lost, for C-FIND and C-MOVE.

Every failure becomes a :class:`DicomError` that names the side at fault: the
association (trust, AE titles, network) here, statuses in :mod:`client.statuses`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    EnhancedCTImageStorage,
    MRImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    PositronEmissionTomographyImageStorage,
    RTDoseStorage,
    RTIonPlanStorage,
    RTPlanStorage,
    RTStructureSetStorage,
    SpatialRegistrationStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from .association import associate
from .errors import AssociationFailed, DicomError, Kind
from .matches import QueryKeys, match_problem, unique_value
from .settings import Settings
from .site import Model
from .statuses import MoveResult, find_failure, move_result

log = logging.getLogger(__name__)

_CONTEXTS: dict[Model, str] = {
    Model.STUDY_FIND: StudyRootQueryRetrieveInformationModelFind,
    Model.STUDY_MOVE: StudyRootQueryRetrieveInformationModelMove,
    Model.PATIENT_FIND: PatientRootQueryRetrieveInformationModelFind,
    Model.PATIENT_MOVE: PatientRootQueryRetrieveInformationModelMove,
    Model.STUDY_GET: StudyRootQueryRetrieveInformationModelGet,
    Model.PATIENT_GET: PatientRootQueryRetrieveInformationModelGet,
}
# What a C-GET of a plan's collection brings back on the same association (SCP role).
_GET_STORAGE = (CTImageStorage, EnhancedCTImageStorage, MRImageStorage,
                PositronEmissionTomographyImageStorage, RTPlanStorage, RTIonPlanStorage,
                RTStructureSetStorage, RTDoseStorage, SpatialRegistrationStorage)
# Study Root is all the real DB Daemon's conformance statement lists: use it.
FIND, MOVE, GET = Model.STUDY_FIND, Model.STUDY_MOVE, Model.STUDY_GET
StoreHandler = Callable[[Event], "int | Dataset"]

Progress = Callable[[int, int, int], None]  # completed, failed, remaining
_PENDING = (0xFF00, 0xFF01)
_FIND_ATTEMPTS = 3
_CANCEL_GRACE = 2.0  # seconds a server gets to end an operation rtmove cancelled
Responses = Iterator[tuple[Dataset, "Dataset | None"]]


@dataclass
class _Stall:
    """Pending responses that bring nothing new: a server may send them for ever, and
    each one restarts pynetdicom's DIMSE timeout, so only this notices."""

    limit: float
    state: object = None
    since: float = field(default_factory=time.monotonic)

    def stuck(self, state: object) -> bool:
        """Whether ``state`` has stayed the same for longer than ``limit`` seconds."""
        now = time.monotonic()
        if state != self.state:
            self.state, self.since = state, now
            return False
        return now - self.since > self.limit


def quiesce_reactor(assoc: Association) -> None:
    """Make sure pynetdicom's reactor thread is really paused before a request.

    pynetdicom 3.0 pauses its association reactor before each ``send_c_*`` by clearing
    an event and then trusting a flag the reactor sets *before* it waits; a reactor
    that read the event just before it was cleared runs one more loop and can take a
    response off the queue, which pynetdicom then drops ("Received unexpected C-FIND
    service message"): a C-FIND silently loses a match, a C-MOVE its final response.
    Seen against dcmqrscp and Orthanc under load. Here the event is cleared and the
    request waits until the reactor is blocked on it: then it is one of the event's
    waiters, which it stays until the event is set again. (A fixed 3 ms sleep for the
    stale loop to end cost 3 ms per operation, 13 of them per collect.) Lost matches
    are also counted (as they are queued) and the query repeated, in case of another race.
    """
    checkpoint = getattr(assoc, "_reactor_checkpoint", None)
    if checkpoint is None:  # another pynetdicom: nothing to do
        return
    checkpoint.clear()
    deadline = time.monotonic() + 1.0
    waiters = getattr(getattr(checkpoint, "_cond", None), "_waiters", None)
    if waiters is None:  # another threading.Event: let a stale loop (1 ms sleep) finish
        time.sleep(0.003)
        while not getattr(assoc, "_is_paused", True) and time.monotonic() < deadline:
            time.sleep(0.0005)
        return
    while not waiters and assoc.is_alive() and time.monotonic() < deadline:
        time.sleep(0.0001)


def prompt_kill(assoc: Association) -> None:
    """Let ``assoc`` end as soon as its release is done, not up to 10 ms later.

    Once the A-RELEASE-RP is in, pynetdicom's ``kill`` asks the DUL to stop and, if it
    has not reached Sta1 yet (it gets there ~0.1 ms after handing the reply over), sleeps
    10 ms before asking again: a release took 1.2 ms or 11 ms, by chance (measured). The
    DUL's state is watched closely first; pynetdicom's own loop then ends at once.
    """
    kill = assoc.kill

    def watched_kill() -> None:
        deadline = time.monotonic() + 1.0
        while assoc.dul.is_alive() and assoc.dul.state_machine.current_state != "Sta1" \
                and time.monotonic() < deadline:
            time.sleep(0.0002)
        kill()

    setattr(assoc, "kill", watched_kill)  # noqa: B010 (mypy refuses a method assignment)


@dataclass
class Session:
    """Lazily associated; :meth:`close` releases. Not thread-safe: one operation at a time.

    With ``store`` (our Storage SCP's handler) and a site whose DB Daemon serves Study
    Root C-GET, objects for this client come by C-GET on this association, so the server
    need not know this client as a move destination; else by C-MOVE to our own AE.
    """

    settings: Settings
    store: StoreHandler | None = None
    _ae: AE | None = field(default=None, init=False)
    _assoc: Association | None = field(default=None, init=False)
    finds: int = field(default=0, init=False)
    moves: int = field(default=0, init=False)
    _pending_seen: int = field(default=0, init=False)  # C-FIND matches that reached us
    _message_id: int = field(default=0, init=False)
    _releasing: threading.Thread | None = field(default=None, init=False)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._wait_released()
        self._release()

    def release_in_background(self) -> None:
        """Release the association in a thread while this client does other work: a
        release waits 10-20 ms on the peer and on pynetdicom's threads (measured). The
        next operation, or :meth:`close`, waits for it to end (then associates anew)."""
        self._wait_released()
        if self._assoc is not None or self._ae is not None:
            self._releasing = threading.Thread(target=self._release, daemon=True,
                                               name="rtmove-release")
            self._releasing.start()

    @property
    def associated(self) -> bool:
        """Whether the association is open now."""
        assoc = self._assoc
        return assoc is not None and assoc.is_established

    def _wait_released(self) -> None:
        releasing, self._releasing = self._releasing, None
        if releasing is not None:
            releasing.join()

    def _release(self) -> None:
        if self._assoc is not None:
            if self._assoc.is_established:
                prompt_kill(self._assoc)
                self._assoc.release()
            self._assoc = None
        if self._ae is not None:
            self._ae.shutdown()
            self._ae = None

    # -- association ------------------------------------------------------------------

    def connect(self) -> None:
        """Open the association now (a DicomError if it cannot be), not at the first use."""
        self._association()

    def _association(self) -> Association:
        self._wait_released()
        if self._assoc is not None and self._assoc.is_established:
            return self._assoc
        s = self.settings
        if self._ae is None:
            ae = AE(ae_title=s.aet)
            for model in (FIND, MOVE):
                ae.add_requested_context(_CONTEXTS[model])
            if self._wants_get:
                ae.add_requested_context(_CONTEXTS[GET])
                for uid in _GET_STORAGE:
                    ae.add_requested_context(uid)
            ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = s.timeout
            ae.connection_timeout = min(s.timeout, 15.0)
            self._ae = ae
        handlers: list[EventHandlerType] = [(evt.EVT_CONN_OPEN, self._count_matches)]
        roles: list[Any] = []  # pynetdicom's union of negotiation items
        if self._wants_get and self.store is not None:
            handlers.append((evt.EVT_C_STORE, self.store))
            for uid in _GET_STORAGE:
                role = SCP_SCU_RoleSelectionNegotiation()
                role.sop_class_uid, role.scu_role, role.scp_role = uid, False, True
                roles.append(role)
        assoc = associate(self._ae, s.host, s.port, s.aec, s.timeout, handlers=handlers,
                          ext_neg=roles or None)
        accepted = {cx.abstract_syntax for cx in assoc.accepted_contexts}
        missing = [m for m in (FIND, MOVE) if _CONTEXTS[m] not in accepted]
        if missing:
            assoc.release()
            raise DicomError(
                f"{s.peer} accepted the association but not "
                f"{' and '.join(m.value for m in missing)}: it does not serve the Study Root "
                "Query/Retrieve model rtmove uses. Check that this is the DB Daemon's port, "
                "not the File Daemon's (which only stores).", Kind.REFUSED)
        self._assoc = assoc
        return assoc

    @property
    def _wants_get(self) -> bool:
        return self.store is not None and self.settings.serves(GET)

    @property
    def uses_get(self) -> bool:
        """Objects for this client come by C-GET (the server accepted it)."""
        assoc = self._association()
        return self._wants_get and any(cx.abstract_syntax == _CONTEXTS[GET]
                                       for cx in assoc.accepted_contexts)

    def fetch(self, identifier: Dataset, progress: Progress | None = None) -> MoveResult:
        """Bring objects to this client: C-GET where the site allows it, else C-MOVE."""
        if not self.uses_get:
            return self.move(identifier, self.settings.aet, progress)
        assoc = self._association()
        self.moves += 1
        msg_id = self._next_message_id()
        quiesce_reactor(assoc)
        responses = assoc.send_c_get(identifier, _CONTEXTS[GET], msg_id=msg_id)
        return self._retrieved(assoc, responses, msg_id, GET, "C-GET", progress)

    def _next_message_id(self) -> int:
        self._message_id = self._message_id % 0xFFFF + 1
        return self._message_id

    def _retrieved(self, assoc: Association, responses: Responses, msg_id: int, model: Model,
                   what: str, progress: Progress | None) -> MoveResult:
        """The final result of a C-MOVE or C-GET; one whose counts stop moving while
        pending responses keep coming is cancelled after ``timeout`` seconds."""
        last: Dataset | None = None
        stall = _Stall(self.settings.timeout)
        for status, _ in responses:
            if status is None or "Status" not in status:
                raise self._lost(what)
            last = status
            if int(status.Status) not in _PENDING:
                continue
            counts = _counts(status)
            if progress is not None:
                progress(*counts)
            if stall.stuck(counts):
                s = self.settings
                raise self._give_up(assoc, responses, msg_id, model, AssociationFailed(
                    f"{s.peer} kept sending pending responses to the {what} without progress "
                    f"for {s.timeout:g} s (completed {counts[0]}, failed {counts[1]}, "
                    f"remaining {counts[2]}): rtmove cancelled it. The daemon may be stuck; "
                    "check its log."))
        if last is None:
            raise self._lost(what)
        return move_result(last)

    def _give_up(self, assoc: Association, responses: Responses, msg_id: int, model: Model,
                 error: DicomError) -> DicomError:
        """C-CANCEL an operation that will not end, give the server a moment to end it,
        and abort if it does not: its association cannot carry another request."""
        log.warning("%s", error)
        ended = False
        try:
            assoc.send_c_cancel(msg_id, query_model=_CONTEXTS[model])
            deadline = time.monotonic() + min(_CANCEL_GRACE, self.settings.timeout)
            for status, _ in responses:
                if status is None or "Status" not in status \
                        or int(status.Status) not in _PENDING:
                    ended = status is not None and "Status" in status
                    break
                if time.monotonic() > deadline:
                    break
        finally:
            if not ended:
                current, self._assoc = self._assoc, None
                if current is not None and current.is_established:
                    current.abort()
        return error

    def _lost(self, what: str) -> AssociationFailed:
        assoc, self._assoc = self._assoc, None
        if assoc is not None and assoc.is_established:
            assoc.abort()
        s = self.settings
        return AssociationFailed(
            f"{s.peer} did not complete the {what}: the association was aborted or no answer "
            f"came within {s.timeout:g} s.")

    # -- operations -------------------------------------------------------------------

    def _count_matches(self, event: Event) -> None:
        """EVT_CONN_OPEN handler: count C-FIND matches as they are queued for the
        requesting thread, before pynetdicom's reactor can lose one; whichever decoded
        them (pynetdicom, or :mod:`client.response_lane`, which an EVT_DIMSE_RECV
        listener would turn off)."""
        queue = event.assoc.dimse.msg_queue
        put = queue.put

        def counted(item: Any, block: bool = True, timeout: float | None = None) -> None:
            primitive = item[1] if isinstance(item, tuple) and len(item) == 2 else None
            if isinstance(primitive, C_FIND) and primitive.MessageIDBeingRespondedTo \
                    is not None and primitive.Status in _PENDING:
                self._pending_seen += 1
            put(item, block, timeout)

        queue.put = counted  # type: ignore[method-assign]

    def find(self, identifier: Dataset) -> list[Dataset]:
        """Every match of a Study Root C-FIND; a failure status raises."""
        for attempt in range(1, _FIND_ATTEMPTS + 1):
            self._pending_seen = 0
            matches, received = self._find_once(identifier)
            if self._pending_seen <= received:
                return matches
            log.warning("C-FIND lost %d of %d matches inside pynetdicom (attempt %d); "
                        "asking again", self._pending_seen - len(matches), self._pending_seen,
                        attempt)
        raise self._lost("C-FIND (matches kept getting lost)")

    def _find_once(self, identifier: Dataset) -> tuple[list[Dataset], int]:
        """The distinct matches of one C-FIND, and how many pending responses came.

        A match repeated (by its level's unique key) is kept once; a server that only
        repeats itself for ``timeout`` seconds, sends more than ``max_matches``, or
        sends a match that cannot answer the query is given up on (Kind.PROTOCOL).
        """
        assoc = self._association()
        self.finds += 1
        s = self.settings
        matches: list[Dataset] = []
        seen: set[str] = set()
        received = 0
        level = identifier.get("QueryRetrieveLevel", "?")
        msg_id = self._next_message_id()
        stall = _Stall(s.timeout)
        keys = QueryKeys(identifier)
        quiesce_reactor(assoc)
        responses = assoc.send_c_find(identifier, _CONTEXTS[FIND], msg_id=msg_id)
        for status, ds in responses:
            if status is None or "Status" not in status:
                raise self._lost(f"C-FIND at {level} level")
            code = int(status.Status)
            if code not in _PENDING:
                if code != 0x0000:
                    raise find_failure(s, code, status, level)
                continue
            received += 1
            problem = "a match that cannot be decoded" if ds is None \
                else match_problem(keys, ds)
            if problem is not None:
                raise self._give_up(assoc, responses, msg_id, FIND, DicomError(
                    f"{s.peer} answered a C-FIND at {level} level with {problem}: its "
                    "answers cannot be trusted to choose what to move. Report it to the "
                    "archive's vendor with rtmove's -vv log.", Kind.PROTOCOL))
            assert ds is not None
            key = unique_value(keys, ds)
            if key is None or key not in seen:
                matches.append(ds)
                if key is not None:
                    seen.add(key)
            why = (f"kept sending matches it had already sent for {s.timeout:g} s"
                   if stall.stuck(len(matches)) else
                   f"sent more than {s.max_matches} matches"
                   if len(matches) > s.max_matches else None)
            if why is not None:
                raise self._give_up(assoc, responses, msg_id, FIND, DicomError(
                    f"{s.peer} {why} to one C-FIND at {level} level: rtmove cancelled it. "
                    "The daemon may be stuck; check its log.", Kind.PROTOCOL))
        log.debug("C-FIND %s %s: %d matches", level, _summary(identifier), len(matches))
        return matches, received

    def move(self, identifier: Dataset, destination: str,
             progress: Progress | None = None) -> MoveResult:
        """One C-MOVE to ``destination``; the final status and counts, interpreted."""
        assoc = self._association()
        self.moves += 1
        msg_id = self._next_message_id()
        quiesce_reactor(assoc)
        responses = assoc.send_c_move(identifier, destination, _CONTEXTS[MOVE], msg_id=msg_id)
        return self._retrieved(assoc, responses, msg_id, MOVE, f"C-MOVE to {destination}",
                               progress)


def _counts(status: Dataset) -> tuple[int, int, int]:
    return (int(status.get("NumberOfCompletedSuboperations") or 0),
            int(status.get("NumberOfFailedSuboperations") or 0),
            int(status.get("NumberOfRemainingSuboperations") or 0))


def _summary(ds: Dataset) -> str:
    return " ".join(f"{e.keyword}={e.value}" for e in ds if e.value not in ("", None))

