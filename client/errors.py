"""Errors with a DICOM meaning and a sentence a site engineer can act on.

Each error has a :class:`Kind`, and each kind one exit code (the README's table), so a
script wrapping ``rtmove`` can tell "fix the site's trust list" from "try again later".
"""

from __future__ import annotations

from enum import IntEnum

# PS3.8 9.3.4: A-ASSOCIATE-RJ result / source / reason.
_REASONS: dict[tuple[int, int], str] = {
    (1, 1): "no reason given",
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title not recognized",
    (1, 7): "called AE title not recognized",
    (2, 1): "no reason given",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded",
}
_SOURCES = {1: "service user", 2: "service provider (ACSE)", 3: "service provider (presentation)"}


class Kind(IntEnum):
    """What went wrong, as the process exit code."""

    OK = 0
    INTERNAL = 1  # a bug in rtmove: please report it with the -vv log
    USAGE = 2  # bad arguments, site file or manifest
    REJECTED = 3  # the server refused the association (trust list, AE titles)
    UNREACHABLE = 4  # no connection, a timeout or an abort
    DESTINATION = 5  # the server does not know (or cannot reach) the move destination
    REFUSED = 6  # the server refused the query or move itself (0xA900, 0xC000, ...)
    NOT_FOUND = 7  # no such patient or plan in the archive
    INCOMPLETE = 8  # objects still missing after the retries
    VERIFY = 9  # objects arrived but are unreadable or their references do not hold
    LOCAL = 10  # this machine: receive port in use, output folder not writable, disk full
    PROTOCOL = 11  # the server's answers make no sense: undecodable, inconsistent, endless


class DicomError(Exception):
    """Base of the client's errors: ``str()`` is the sentence for the site engineer."""

    transient = False
    kind = Kind.INTERNAL

    def __init__(self, message: str, kind: Kind | None = None, *,
                 transient: bool | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind
        if transient is not None:
            self.transient = transient


class AssociationRejected(DicomError):
    kind = Kind.REJECTED

    def __init__(self, result: int, source: int, reason: int, calling: str, called: str,
                 peer: str) -> None:
        self.result, self.source, self.reason = result, source, reason
        super().__init__(explain_rejection(result, source, reason, calling, called, peer),
                         Kind.UNREACHABLE if result == 2 else Kind.REJECTED,
                         transient=result == 2)


class AssociationFailed(DicomError):
    """No association: connection refused or timed out, or the peer aborted."""

    transient = True
    kind = Kind.UNREACHABLE


class LocalError(DicomError):
    """This machine's side: our receive port, our output folder."""

    kind = Kind.LOCAL


def explain_rejection(result: int, source: int, reason: int, calling: str, called: str,
                      peer: str) -> str:
    kind = "permanently" if result == 1 else "for now (transient)"
    words = _REASONS.get((source, reason), f"reason {reason}")
    code = f"result {result}, source {source} {_SOURCES.get(source, '?')}, reason {reason}"
    if (source, reason) == (1, 3):
        return (f"{peer} rejected this client's AE title {calling} (calling AE title not "
                f"recognized; {code}): add {calling} with this machine's address to the "
                "daemon's trusted application entities, or run with an AE title already on "
                "that list (--aet).")
    if (source, reason) == (1, 7):
        address = peer.rpartition(" at ")[2]
        return (f"The server at {address} does not answer to the AE title {called} (called AE "
                f"title not recognized; {code}): check the daemon's AE title in the site file "
                "or --aec (the DB Daemon is often VMSDBD or VMSDBD1, the File Daemon VMSFD). "
                f"If {called} is right, the server may not know this client: some servers "
                f"(DCMTK's dcmqrscp) give this reason for an unknown calling AE title, so ask "
                f"for {calling} with this machine's address to be added to its trusted "
                "application entities.")
    head = f"{peer} rejected the association {kind}: {words} ({code})."
    if result == 2:
        return f"{head} Retry later; the server is busy or at its association limit."
    return (f"{head} Ask the site's DICOM administrator what the daemon expects from "
            f"AE title {calling} at this machine's address.")
