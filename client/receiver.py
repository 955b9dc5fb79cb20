"""rtmove's own Storage SCP: where the headers it must read, and ``--dest self`` moves, arrive.

Objects are written as the File Daemon writes them (``<folder>/<patient id>/<modality>.<uid>.dcm``,
received bytes untouched, atomically), so a folder filled by either can be verified alike.
"""

from __future__ import annotations

import errno
import functools
import logging
import threading
from io import BytesIO
from pathlib import Path
from typing import cast

from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext, build_context

from .errors import LocalError
from .files import (
    UnsafePathError,
    archive_path,
    check_inside,
    full_disk,
    move_atomic,
    remove_stale_temp_files,
    size_text,
    write_received,
)
from .scp import RunningServer, serve
from .statuses import failure_status
from .tcp import NO_DELAY

log = logging.getLogger(__name__)

SUCCESS, OUT_OF_RESOURCES, CANNOT_UNDERSTAND, PROCESSING_FAILURE = 0x0000, 0xA700, 0xC000, 0x0110


class Receiver:
    """``with Receiver(aet, port, folder) as r:`` listens until the block ends."""

    def __init__(self, ae_title: str, port: int, folder: Path, bind: str = "") -> None:
        self.ae_title, self.port, self.folder, self.bind = ae_title, port, folder, bind
        self._lock = threading.Lock()
        self._arrived: dict[str, Path] = {}  # SOP Instance UID -> file, this run
        self.refused: dict[str, str] = {}  # SOP Instance UID -> why we answered a failure
        self._ae = AE(ae_title=ae_title)
        self._ae.require_called_aet = True  # a move meant for another AE must not land here
        self._server: RunningServer | None = None

    def __enter__(self) -> Receiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LocalError(f"Cannot create the output folder {self.folder}: "
                             f"{exc.strerror or exc}.") from exc
        remove_stale_temp_files(self.folder, log)  # a run killed mid-write left them
        try:
            server = serve(self._ae, (self.bind, self.port),
                           [*NO_DELAY, (evt.EVT_C_STORE, self.on_store)], _contexts())
        except OSError as exc:
            self._ae.shutdown()
            raise LocalError(
                f"This client cannot listen on port {self.port} for the objects the server "
                f"sends ({exc.strerror or exc}): another program (a storescp?) may hold it. "
                "Stop it, or pick another port with --recv-port and tell the site, since the "
                "DB Daemon's trusted AE entry for this client names the port.") from exc
        self._server = server
        self.port = server.port
        log.info("receiving as %s on port %d into %s", self.ae_title, self.port, self.folder)

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            for thread in server.stop():
                thread.join(5.0)

    def redirect(self, folder: Path, keep: set[str]) -> None:
        """From now on write into ``folder``; the ``keep`` objects already received move
        there too (headers read while resolving that belong to the collection), the rest
        stay behind, so ``folder`` holds the collection and nothing else."""
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(folder, log)
        with self._lock:
            old, self.folder = self.folder, folder
            for uid, path in list(self._arrived.items()):
                if uid not in keep or not path.is_relative_to(old):
                    continue
                target = folder / path.relative_to(old)
                try:
                    check_inside(folder, target)
                except UnsafePathError as exc:
                    raise LocalError(f"Cannot write into {folder}: {exc.strerror}.") from exc
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    move_atomic(path, target)
                except OSError as exc:
                    raise LocalError(_cannot_write(folder, path, target, exc)) from exc
                self._arrived[uid] = target

    def arrived(self) -> dict[str, Path]:
        with self._lock:
            return dict(self._arrived)

    def path(self, sop_uid: str) -> Path | None:
        with self._lock:
            return self._arrived.get(sop_uid)

    def on_store(self, event: Event) -> int | Dataset:
        """EVT_C_STORE: of our own server, or of a C-GET association (see ``Session``)."""
        request = cast(C_STORE, event.request)
        body = cast(BytesIO, request.DataSet).getvalue()
        sop_uid = str(request.AffectedSOPInstanceUID)
        try:
            ds = event.dataset
            patient_id, modality = str(ds.get("PatientID", "")), str(ds.get("Modality") or "OT")
            if str(ds.SOPInstanceUID) != sop_uid:
                raise ValueError(f"the dataset's SOP Instance UID is {ds.SOPInstanceUID}")
        except Exception as exc:  # whatever the peer sent that pydicom cannot read
            log.warning("cannot read the object %s the server sent: %s", sop_uid, exc)
            self.refused[sop_uid] = f"unreadable: {exc}"
            return failure_status(CANNOT_UNDERSTAND, f"cannot decode the dataset: {exc}")
        folder = self.folder  # once: redirect() may change it meanwhile
        path = archive_path(folder, patient_id, modality, sop_uid)
        try:
            write_received(path, body, str(request.AffectedSOPClassUID), sop_uid,
                           str(event.context.transfer_syntax),
                           str(event.assoc.requestor.ae_title).strip(), root=folder)
        except OSError as exc:
            log.error("cannot write %s: %s", path, exc)
            self.refused[sop_uid] = f"cannot write: {exc.strerror or exc}"
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            return failure_status(OUT_OF_RESOURCES if full else PROCESSING_FAILURE,
                           f"cannot write the file: {exc.strerror or exc}")
        with self._lock:
            self._arrived[sop_uid] = path
        return SUCCESS


def _cannot_write(folder: Path, source: Path, target: Path, exc: OSError) -> str:
    """What to do when ``source`` cannot be moved to ``target`` in the output ``folder``."""
    full = None
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        try:
            full = full_disk(folder, source.stat().st_size + 1)
        except OSError:
            full = full_disk(folder)
    if full is not None:
        return (f"The disk holding {folder} is full ({size_text(full[0])} free of "
                f"{size_text(full[1])}): rtmove could not write {target.name} there. Free "
                "space on it, or choose an --out folder on a bigger disk, then run the same "
                "command again: what already arrived is not moved again.")
    return f"Cannot write {target} into the output folder: {exc.strerror or exc}."


# What a radiotherapy collection can hold. Not every storage class in every transfer
# syntax: pynetdicom deep-copies the supported contexts for each association, and 170
# classes x 35 syntaxes cost 33 ms per association, i.e. per header read (measured).
_KINDS = ("CT", "MR", "PositronEmission", "RT", "SecondaryCapture", "SpatialRegistration",
          "Segmentation", "ComputedRadiography", "DigitalXRay")
_SYNTAXES = (ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian,
             DeflatedExplicitVRLittleEndian, JPEGBaseline8Bit, JPEGExtended12Bit,
             JPEGLosslessSV1, JPEGLossless, JPEGLSLossless, JPEGLSNearLossless,
             JPEG2000Lossless, JPEG2000, RLELossless)


@functools.cache
def _contexts() -> list[PresentationContext]:
    """The storage classes of RT and imaging, in the usual transfer syntaxes; built once."""
    return [build_context(str(cx.abstract_syntax), list(_SYNTAXES))
            for cx in AllStoragePresentationContexts
            if any(kind in UID(str(cx.abstract_syntax)).keyword for kind in _KINDS)]

