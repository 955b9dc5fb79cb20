"""The emulated File Daemon: a Storage SCP writing what it receives under `<output>/<id>/`.

Files keep the bytes and transfer syntax the sender used (the dataset is never
re-encoded), behind a File Meta header naming this daemon and the sender. Names
come from the received data, so each component is made safe by
:func:`emulators.files.archive_path`; nothing is written outside the output folder.

Plain C-STORE requests are read and served by :mod:`emulators.store_lane`, which
writes each file while its fragments arrive (:class:`_Staging`: a hidden temporary
file in the output folder, renamed into place once the data set is whole); everything
else takes pynetdicom's path (:meth:`FileDaemon._on_store`). Both end in
:meth:`FileDaemon._keep`, with the same checks, faults and logs.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.presentation import PresentationContext

from client.dimse_commands import StoreRequest
from client.files import StagedFile, arrival, check_inside, part10_header, remove_stale_temp_files
from client.site import Site
from client.statuses import failure_status as failure

from . import store_lane
from .archive.from_dataset import text_value
from .dataset_head import CHARSET, StoreValues, plain_text, plain_values, whole_head
from .dataset_length import cut_short
from .faults.model import FileDaemonFaults
from .faults.storage import StoreInjector
from .files import TEMP_PREFIX, Received, archive_path, safe_name, write_received
from .inline_store import serve_stores_inline
from .log_policy import HANDLERS as LOG_POLICY_HANDLERS
from .log_policy import note_output_folder, note_raw
from .pynetdicom_guards import misdirected
from .service import Daemon, calling_ae, calling_ae_from, store_request
from .sop_classes import STORAGE, STORAGE_TRANSFER_SYNTAXES, VERIFICATION, register_private_classes

# C-STORE statuses (PS3.4 B.2.3).
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110  # PS3.7 C.4: the general failure, for other I/O errors


class FileDaemon(Daemon):
    """``with FileDaemon(site) as fd:`` serves until the block ends; ``fd.port`` is live."""

    name = "File Daemon"

    def __init__(self, site: Site, output: Path | None = None) -> None:
        service = site.file_daemon
        super().__init__(service.ae_title, service.bind, service.port, site.fd_trusted(),
                         service.permit_trusted_only, service.max_associations,
                         service.timeouts)
        self.output = Path(output if output is not None else service.output)
        self.patient_folders = service.patient_folders
        self.sync = service.sync
        if self.patient_folders:  # its subfolders are named after patients: not in logs
            note_output_folder(self.output)
        self.stored = 0  # objects written (or found identical) since start
        self._files_lock = threading.Lock()  # guards ``stored`` and ``_files``
        # Where each SOP Instance is, by its file-name form: one file per instance, even
        # when it comes again under another patient ID or modality (another path).
        self._files: dict[str, Path] = {}
        self.store_faults = StoreInjector(self.log)
        # EVT_DIMSE_RECV handlers the lane stands in for: the log policy's (it notes the
        # identifiers itself) and the trust policy's (C-MOVE destinations only).
        self._own_dimse_recv = [bound[1] for bound in
                                (*LOG_POLICY_HANDLERS, *self.policy.handlers())
                                if bound[0] is evt.EVT_DIMSE_RECV]
        register_private_classes()
        for uid in STORAGE.values():
            self.ae.add_supported_context(uid, STORAGE_TRANSFER_SYNTAXES)
        self.ae.add_supported_context(VERIFICATION)

    def handlers(self) -> list[EventHandlerType]:
        return [(evt.EVT_C_STORE, self._on_store)]

    def inject(self, faults: FileDaemonFaults) -> None:
        """Break the daemon as ``faults`` say, from the next request on (counters reset)."""
        self.association_faults.faults = faults.association
        self.store_faults.faults = faults.store

    def on_accepted(self, event: Event) -> None:
        assoc = event.assoc
        assoc.acceptor.supported_contexts = self.store_faults.negotiable(
            assoc.acceptor.supported_contexts)
        turns = serve_stores_inline(assoc, lambda request, context_id: not (
            self.store_faults.faults.write_delay or misdirected(assoc, request, context_id)))
        store_lane.install(assoc, turns, self._stage, lambda: self._lane_may_serve(assoc))

    def _lane_may_serve(self, assoc: Association) -> bool:
        """Whether what the lane leaves out would change nothing: no fault that delays
        the answer, and no handler but the daemon's own on the events it bypasses."""
        if self.store_faults.faults.write_delay:
            return False
        store = assoc.get_handlers(evt.EVT_C_STORE)
        return isinstance(store, tuple) and store[0] == self._on_store and all(
            handler in self._own_dimse_recv for handler, _args in
            cast(list[Any], assoc.get_handlers(evt.EVT_DIMSE_RECV)))

    def on_stop(self) -> None:
        self.store_faults.join()

    def on_start(self) -> None:
        """Learn what earlier runs left in the output folder, once the temporary files of
        writes a crash cut short are gone: peers polling the folder then see whole files
        only, and a re-sent object is written again."""
        self._files = {}
        if not self.output.is_dir():
            return
        remove_stale_temp_files(self.output, self.log)
        for path in sorted(self.output.rglob("*.dcm"), key=_modified):
            if path.name.startswith(TEMP_PREFIX) or path.name.count(".") < 2 \
                    or not path.is_file():
                continue
            key = path.name[:-4].split(".", 1)[1]
            if key in self._files:
                # A crash between writing an instance's new file (another patient ID or
                # modality) and removing its old one: the newer one is the current file.
                self.log.warning("File Daemon: %s and %s hold the same SOP instance (a "
                                 "replacement cut short?); %s is the current one",
                                 self._files[key], path, path)
            self._files[key] = path

    def path_for(self, patient_id: str, modality: str, sop_uid: str) -> Path:
        """Where an object lands: ``<output>/<patient id>/<modality>.<uid>.dcm``."""
        if self.patient_folders:
            return archive_path(self.output, patient_id, modality, sop_uid)
        return self.output / f"{safe_name(modality)}.{safe_name(sop_uid)}.dcm"

    def _on_store(self, event: Event) -> int | Dataset:
        request, body = store_request(event)
        calling = calling_ae(event)
        try:
            ds = event.dataset
            values = _values(ds)
        except Exception as exc:  # any decoding failure of peer data is the peer's fault
            self.log.warning("File Daemon cannot read the dataset %s from %r: %s",
                             request.AffectedSOPInstanceUID, calling, exc)
            return failure(CANNOT_UNDERSTAND, f"cannot decode the dataset: {exc}")
        if (values.sop_uid, values.sop_class) != (str(request.AffectedSOPInstanceUID),
                                                  str(request.AffectedSOPClassUID)):
            self.log.warning("File Daemon refuses %s from %r: the dataset says %s/%s",
                             request.AffectedSOPInstanceUID, calling, values.sop_class,
                             values.sop_uid)
            return failure(DATASET_DOES_NOT_MATCH_SOP_CLASS,
                            "SOP Class/Instance UID differ from the C-STORE request")
        problem = cut_short(body, event.context.transfer_syntax)
        if problem is not None:  # pydicom read it "fine": it would be stored partial
            self.log.warning("File Daemon refuses %s from %r: the data set is cut short or "
                             "malformed: %s", values.sop_uid, calling, problem)
            return failure(CANNOT_UNDERSTAND,
                           f"the data set is cut short or malformed: {problem}")
        return self._keep(event.assoc, values, body, str(event.context.transfer_syntax),
                          calling)

    def _stage(self, assoc: Association, context: PresentationContext,
               request: StoreRequest) -> _Staging:
        """:mod:`emulators.store_lane`'s way in: a plain C-STORE request's file, written
        as its fragments arrive."""
        return _Staging(self, assoc, str(context.transfer_syntax[0]), request)

    def _keep(self, assoc: Association, values: StoreValues, body: bytes | bytearray,
              transfer_syntax: str, calling: str, staging: _Staging | None = None,
              ) -> int | Dataset:
        """Write a data set that is whole and matches its request (faults permitting),
        or commit what ``staging`` wrote of it."""
        seen, refusal = self.store_faults.before(self.stopping,
                                                 lambda: not assoc.is_established)
        if refusal is not None:
            if staging is not None:
                staging.abandon()
            return failure(*refusal)
        sop_uid = values.sop_uid
        path = self.path_for(values.patient_id, values.modality, sop_uid)

        def write() -> Received:
            if staging is None:
                outcome = write_received(path, body, values.sop_class, sop_uid,
                                         transfer_syntax, calling, root=self.output,
                                         sync=self.sync)
            else:
                outcome = staging.commit(path)
            self._written(outcome, path, sop_uid, calling)
            return outcome

        try:
            self.store_faults.write(seen, path, write)
        except OSError as exc:
            if staging is not None:
                staging.abandon()
            self.log.error("File Daemon cannot write %s: %s", path, exc)
            status = OUT_OF_RESOURCES if exc.errno in (errno.ENOSPC, errno.EDQUOT) \
                else PROCESSING_FAILURE
            return failure(status, f"cannot write the file: {exc.strerror or exc}")
        return SUCCESS

    def _written(self, outcome: Received, path: Path, sop_uid: str, calling: str) -> None:
        if outcome is Received.REPLACED:
            self.log.warning("File Daemon: %s received again from %r with other content; "
                             "replaced %s", sop_uid, calling, path)
        else:
            self.log.info("File Daemon %s %s from %r", outcome.value, path, calling)
        with self._files_lock:
            self.stored += 1
            key = safe_name(sop_uid)
            previous, self._files[key] = self._files.get(key), path
            if previous is not None and previous != path:
                self.log.warning("File Daemon: %s came before as %s (another patient ID or "
                                 "modality); that file is replaced by %s", sop_uid,
                                 previous, path)
                previous.unlink(missing_ok=True)


class _Staging:
    """One plain C-STORE's file (a :class:`emulators.store_lane.Sink`): its header and
    fragments are written to a hidden temporary file in the output folder while the
    sender is still sending (writing a 512x512 slice took 0.17-0.3 ms once the whole
    of it was there, with the sender waiting); it is named once the whole data set has
    come and been read, as :meth:`FileDaemon._on_store` would store it, or removed."""

    def __init__(self, daemon: FileDaemon, assoc: Association, transfer_syntax: str,
                 request: StoreRequest) -> None:
        self.daemon, self.assoc, self.request = daemon, assoc, request
        self.transfer_syntax = transfer_syntax
        self.calling = calling_ae_from(assoc)
        self.error: OSError | None = None  # a staged write failed: see commit()
        self.staged: StagedFile | None = None
        self.body = bytearray()
        try:
            self.staged = StagedFile(daemon.output, f"{safe_name(request.sop_uid)}.dcm",
                                     sync=daemon.sync)
            self.staged.file.write(part10_header(request.sop_class, request.sop_uid,
                                                 transfer_syntax, self.calling))
        except OSError as exc:
            self._fail(exc)

    def feed(self, fragment: memoryview) -> None:
        if self.staged is not None and self.error is None:
            try:
                self.staged.file.write(fragment)
            except OSError as exc:
                self._fail(exc)

    def finish(self, body: bytearray) -> Callable[[], int | Dataset] | None:
        """The store of a data set that is whole, plain
        (:func:`emulators.dataset_head.plain_values`) and matches its request; None for
        anything else (:meth:`FileDaemon._on_store` then says what is wrong)."""
        self.body = body
        syntax = UID(self.transfer_syntax)
        head = whole_head(body, syntax)
        values = None if head is None else plain_values(head)
        if head is None or values is None or (values.sop_uid, values.sop_class) \
                != (self.request.sop_uid, self.request.sop_class):
            return None
        note_raw(head, plain_text(head.get(CHARSET, b"")) or "")  # as log_policy's handler
        return lambda: self.daemon._keep(self.assoc, values, body, self.transfer_syntax,
                                         self.calling, self)

    def commit(self, path: Path) -> Received:
        """Name the file ``path`` (as :func:`client.files.write_received` would write it)."""
        if self.error is not None or self.staged is None:
            # The staged write failed: often a disk full only for the moment, while other
            # objects were being written (their staged files held the space). Write the
            # whole data set now, as the other path does, and let that say.
            return write_received(path, self.body, self.request.sop_class,
                                  self.request.sop_uid, self.transfer_syntax, self.calling,
                                  root=self.daemon.output, sync=self.daemon.sync)
        try:
            check_inside(self.daemon.output, path)
            outcome = arrival(path, self.body)
            if outcome is Received.IDENTICAL:
                self.staged.discard()
            else:
                self.staged.commit(path)
        except BaseException:
            self.staged.discard()
            raise
        return outcome

    def abandon(self) -> None:
        if self.staged is not None:
            self.staged.discard()

    def _fail(self, exc: OSError) -> None:
        self.error = exc
        self.abandon()


def _values(ds: Dataset) -> StoreValues:
    return StoreValues(str(ds.SOPInstanceUID), str(ds.SOPClassUID), text_value(ds, "PatientID"),
                   text_value(ds, "Modality") or "OT")


def _modified(path: Path) -> int:
    """When ``path`` was last written (0 if it is gone): the older of two files of one
    instance is indexed first, so the newer one wins."""
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0
