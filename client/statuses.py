"""What a Q/R server's status codes mean for the site engineer, and which are worth a retry.

Servers disagree on how to say "I do not know that destination": the standard and
DCMTK answer 0xA801, Orthanc 0xC000, some just abort. Each is explained as what it
most likely is, with the fix.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

from .errors import DicomError, Kind
from .settings import Settings

SUCCESS, WARNING_SUBOPS_FAILED, CANCELLED = 0x0000, 0xB000, 0xFE00
UNKNOWN_DESTINATION = 0xA801
IDENTIFIER_MISMATCH = 0xA900


@dataclass(frozen=True)
class MoveResult:
    status: int
    completed: int
    failed: int
    warning: int
    remaining: int
    failed_uids: tuple[str, ...] = ()
    comment: str = ""
    counted: bool = True  # the final response carried sub-operation counts

    @property
    def uncounted_success(self) -> bool:
        """Success without counts (they are optional on a final Success, PS3.4 C.4.2.1.6):
        only a folder we can read could say more."""
        return self.status == SUCCESS and not self.counted

    @property
    def sent(self) -> int:
        """Sub-operations the server says reached the destination (warnings arrived too)."""
        return self.completed + self.warning


def failure_status(code: int, comment: str) -> Dataset:
    """A response status with an Error Comment (LO: at most 64 characters), for an SCP
    that refuses something and says why (rtmove's receiver, the emulated daemons)."""
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:64]
    return ds


def move_result(status: Dataset) -> MoveResult:
    failed_uids = status.get("FailedSOPInstanceUIDList") or ()
    if isinstance(failed_uids, str):
        failed_uids = (failed_uids,) if failed_uids else ()
    return MoveResult(
        status=int(status.Status),
        completed=int(status.get("NumberOfCompletedSuboperations") or 0),
        failed=int(status.get("NumberOfFailedSuboperations") or 0),
        warning=int(status.get("NumberOfWarningSuboperations") or 0),
        remaining=int(status.get("NumberOfRemainingSuboperations") or 0),
        failed_uids=tuple(str(u) for u in failed_uids),
        comment=str(status.get("ErrorComment") or ""),
        counted=status.get("NumberOfCompletedSuboperations") not in (None, ""))


def _comment(status: Dataset | MoveResult) -> str:
    text = status.comment if isinstance(status, MoveResult) else status.get("ErrorComment", "")
    return f' (the server says: "{text}")' if text else ""


def find_failure(settings: Settings, code: int, status: Dataset, level: str) -> DicomError:
    peer, hex_ = settings.peer, f"0x{code:04X}"
    said = _comment(status)
    if code == IDENTIFIER_MISMATCH or 0xC000 <= code <= 0xCFFF:
        return DicomError(
            f"{peer} refused the C-FIND at {level} level (status {hex_}){said}: the server "
            "does not accept this query. If it needs the full hierarchy of keys, report it "
            "with the -vv log; rtmove sends the Study Root keys the standard requires.",
            Kind.REFUSED)
    if code == 0xA700:
        return DicomError(f"{peer} is out of resources for the C-FIND (status {hex_}){said}: "
                          "try again later.", Kind.UNREACHABLE, transient=True)
    if code == CANCELLED:
        return DicomError(f"{peer} cancelled the C-FIND (status {hex_}).", Kind.UNREACHABLE,
                          transient=True)
    return DicomError(f"{peer} failed the C-FIND at {level} level with status {hex_}{said}.",
                      Kind.REFUSED)


def move_failure(settings: Settings, destination: str, result: MoveResult) -> DicomError | None:
    """The error a final C-MOVE status stands for; None when the status is success/warning.

    Counts are judged by the caller, which knows how many instances it asked for.
    """
    code, peer, said = result.status, settings.peer, _comment(result)
    hex_ = f"0x{code:04X}"
    dest = "this client" if destination == settings.aet else destination
    if code in (SUCCESS, WARNING_SUBOPS_FAILED) or 0xB000 <= code <= 0xBFFF:
        return None
    if code == UNKNOWN_DESTINATION:
        return DicomError(
            f"{settings.aec} does not know the move destination {destination} (status {hex_})"
            f"{said}: add {destination} with its host and port to {settings.aec}'s trusted "
            f"application entities (the move destinations it knows), or choose a destination "
            "it knows with --dest.", Kind.DESTINATION)
    if code == 0xA702 or (0xA700 <= code <= 0xA7FF and result.failed and not result.sent):
        return DicomError(
            f"{peer} could not deliver any object to {dest} (status {hex_}){said}: it failed "
            f"to open the C-STORE association to {destination}. Check that {destination} is "
            f"running and that its host and port in {settings.aec}'s trusted application "
            "entities are where it listens"
            + (f" (this client listens on port {settings.recv_port})."
               if destination == settings.aet else "."),
            Kind.DESTINATION, transient=True)
    if 0xA700 <= code <= 0xA7FF:
        return DicomError(f"{peer} is out of resources for the move (status {hex_}){said}: "
                          "retrying later may work.", Kind.UNREACHABLE, transient=True)
    if code == IDENTIFIER_MISMATCH:
        return DicomError(
            f"{peer} refused the move's identifier (status {hex_}, identifier does not match "
            f"the SOP class){said}.", Kind.REFUSED)
    if code == 0xC001 and not result.sent and not result.failed:
        return DicomError(
            f"{peer} answered the move with 0xC001 and sent nothing (0 sub-operations){said}. "
            "Real DB Daemons have been seen to do this for dose or CT objects while plans "
            "move fine: the site should check the daemon's log for that object.",
            Kind.REFUSED)
    if 0xC000 <= code <= 0xCFFF:
        return DicomError(
            f"{peer} refused the move to {destination} (status {hex_}, unable to process)"
            f"{said}. Servers such as Orthanc answer this way when they do not know the move "
            f"destination: check that {destination} is configured on the server as a move "
            "destination with its host and port.", Kind.DESTINATION)
    if code == CANCELLED:
        return DicomError(f"{peer} cancelled the move (status {hex_}){said}.",
                          Kind.UNREACHABLE, transient=True)
    return DicomError(f"{peer} failed the move with status {hex_}{said}.", Kind.REFUSED)


def aborted_before_sending(settings: Settings, destination: str, attempts: int) -> DicomError:
    """Every attempt was aborted before one object was sent: most likely the destination."""
    return DicomError(
        f"{settings.peer} aborted the association {attempts} time(s) before sending any object "
        f"to {destination}. Some servers abort instead of answering 0xA801 when they do not "
        f"know the move destination: check that {destination} is on {settings.aec}'s list of "
        "move destinations with its host and port; if it is, the server or network is failing "
        "(see its log).", Kind.DESTINATION, transient=True)
