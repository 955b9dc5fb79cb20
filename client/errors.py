"""Errors with a DICOM meaning and a sentence a site engineer can act on."""

from __future__ import annotations

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


class DicomError(Exception):
    """Base of the client's errors: ``str()`` is the sentence for the site engineer."""

    transient = False


class AssociationRejected(DicomError):
    def __init__(self, result: int, source: int, reason: int, calling: str, called: str,
                 peer: str) -> None:
        self.result, self.source, self.reason = result, source, reason
        self.transient = result == 2
        super().__init__(explain_rejection(result, source, reason, calling, called, peer))


class AssociationFailed(DicomError):
    """No association: connection refused or timed out, or the peer aborted."""

    transient = True


def explain_rejection(result: int, source: int, reason: int, calling: str, called: str,
                      peer: str) -> str:
    kind = "permanently" if result == 1 else "for now (transient)"
    words = _REASONS.get((source, reason), f"reason {reason}")
    head = (f"{peer} rejected the association {kind}: {words} "
            f"(result {result}, source {source} {_SOURCES.get(source, '?')}, reason {reason}).")
    if (source, reason) == (1, 3):
        return (f"{head} Ask the site to add calling AE '{calling}' with this machine's "
                "host/IP to the daemon's trusted AE list, or use an AE title already on it.")
    if (source, reason) == (1, 7):
        return (f"{head} The server does not answer to AE title '{called}': check the called "
                "AE title (the DB Daemon is often VMSDBD or VMSDBD1, the File Daemon VMSFD).")
    if result == 2:
        return f"{head} Retry later; the server is busy or at its association limit."
    return head
