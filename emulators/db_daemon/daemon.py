"""The emulated DB Daemon: C-ECHO, C-FIND, C-MOVE (and opt-in C-GET) over an archive,
plus a Storage SCP that imports into it, behind the real daemon's trust rules."""

from __future__ import annotations

import functools
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from io import BytesIO
from pathlib import Path
from typing import cast

import pydicom
from pydicom.dataset import Dataset
from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import evt
from pynetdicom.dsutils import encode
from pynetdicom.events import Event, EventHandlerType

from client.files import part10_transfer_syntax
from client.part10_head import read_head
from client.site import DEFAULT_CHARSET, Model, Site, TrustedAE
from client.statuses import failure_status as failure
from client.verify import pixel_problem

from .. import bulk_send
from ..archive import Archive, ArchiveError
from ..archive.from_dataset import NotIndexable, dataset_rows, text_value
from ..bulk_send import Encoded
from ..dataset_length import cut_short
from ..faults.data import DataInjector
from ..faults.dimse import FindInjector, MoveInjector, garbled, other_keys
from ..faults.model import DBDaemonFaults
from ..files import (
    Received,
    archive_path,
    part10_body,
    part10_body_offset,
    write_part10,
    write_received,
)
from ..service import Daemon, calling_ae, store_request
from ..sop_classes import (
    MODEL_OF_UID,
    QUERY_RETRIEVE,
    STORAGE,
    STORAGE_TRANSFER_SYNTAXES,
    VERIFICATION,
    register_private_classes,
)
from ..synthetic.modules import with_file_meta
from . import move
from .charset_swap import redeclared
from .export import charset_of, encode_as, export_refusal, read_as
from .move import MovePlan, MoveRefused, MovingAE, SubOperation, contexts_for
from .query import QueryError, Root, find, move_matches

_UNCOMPRESSED = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                           UID("1.2.840.10008.1.2.2")})
_NATIVE = (str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian))
UNABLE_TO_PROCESS = 0xC000
C001 = 0xC001  # what real daemons answer for moves they cannot serve
CANCELLED, PENDING = 0xFE00, 0xFF00
_PLAN_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.481.5", "1.2.840.10008.5.1.4.1.1.481.8"})
_SOP_CLASS, _SOP_INSTANCE = 0x00080016, 0x00080018


def _root(model: Model) -> Root:
    return Root.PATIENT if model.value.startswith("patient") else Root.STUDY


class DBDaemon(Daemon):
    """``with DBDaemon(site, archive) as dbd:`` serves ``archive`` until the block ends."""

    name = "DB Daemon"
    ae_class = MovingAE

    def __init__(self, site: Site, archive: Archive, storage: Path | None = None) -> None:
        service = site.db_daemon
        super().__init__(service.ae_title, service.bind, service.port, site.db_trusted(),
                         service.permit_trusted_only, service.max_associations,
                         service.timeouts)
        self.archive = archive
        self.models = frozenset(service.models)
        self.strict = service.strict_hierarchy
        self.quirks = service.quirks
        configured = storage or service.storage
        self._own_storage = configured is None
        # A temporary folder is made at start and removed at stop, never before or after.
        self.storage = Path(configured) if configured is not None else Path()
        move.install()
        cast(MovingAE, self.ae).mover = cast(move.Mover, self)
        register_private_classes()
        self.find_faults = FindInjector(self.log)
        self.move_faults = MoveInjector(self.log)
        self.data_faults = DataInjector()  # what is wrong with the objects on their way out
        self.ae.add_supported_context(VERIFICATION)
        for model in sorted(self.models):
            self.ae.add_supported_context(QUERY_RETRIEVE[model])
        get_enabled = bool(self.models & {Model.STUDY_GET, Model.PATIENT_GET})
        for uid in STORAGE.values():
            # C-GET sends on the requester's association: accept its SCP role.
            self.ae.add_supported_context(uid, STORAGE_TRANSFER_SYNTAXES,
                                          scu_role=get_enabled or None,
                                          scp_role=get_enabled or None)

    def handlers(self) -> list[EventHandlerType]:
        return [(evt.EVT_C_FIND, self._on_find), (evt.EVT_C_STORE, self._on_store)]

    def inject(self, faults: DBDaemonFaults) -> None:
        """Break the daemon as ``faults`` say, from the next request on (counters reset)."""
        self.association_faults.faults = faults.association
        self.find_faults.faults = faults.find
        self.move_faults.faults = faults.move

    def on_start(self) -> None:
        if self._own_storage:
            self.storage = Path(tempfile.mkdtemp(prefix="dbdsim-dbd-storage-"))

    def on_stop(self) -> None:
        if self._own_storage and self.storage != Path():
            shutil.rmtree(self.storage, ignore_errors=True)
            self.storage = Path()

    def _export_charset(self, ae_title: str) -> str:
        entry = self.policy.entry(ae_title)
        return entry.export_charset if entry is not None else DEFAULT_CHARSET

    # -- C-FIND ---------------------------------------------------------------------------
    def _undecodable(self, calling: str, exc: Exception) -> Dataset:
        self.log.warning("C-FIND from %r: cannot decode the identifier: %s", calling, exc)
        return failure(UNABLE_TO_PROCESS, f"cannot decode the identifier: {exc}")

    def _on_find(self, event: Event) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        calling = calling_ae(event)
        model = MODEL_OF_UID[str(event.request.AffectedSOPClassUID)]
        try:
            identifier = event.identifier
            level = str(identifier.get("QueryRetrieveLevel", ""))
        except Exception as exc:  # the peer's bytes: any decoding failure is a bad request
            yield self._undecodable(calling, exc), None
            return
        injected = self.find_faults.before(level, self.stopping,
                                           lambda: not event.assoc.is_established)
        if injected is not None and injected.status is not None:
            yield failure(injected.status, injected.comment), None
            return
        try:
            results = find(self.archive.index, identifier, _root(model), strict=self.strict,
                           retrieve_ae=self.ae_title)
        except QueryError as exc:
            self.log.warning("C-FIND from %r refused with 0x%04X: %s", calling, exc.status, exc)
            yield failure(exc.status, exc.comment), None
            return
        except Exception as exc:  # the peer's bytes: any decoding failure is a bad request
            yield self._undecodable(calling, exc), None
            return
        charset = self._export_charset(calling)
        if injected is None:
            yield from self._matches(event, calling, level, results, charset)
            return
        if injected.garble:
            ts = event.context.transfer_syntax
            bulk_send.rewrite_identifiers(
                event.assoc, functools.partial(garbled, implicit_vr=ts.is_implicit_VR))
        try:
            matches = list(self._matches(event, calling, level, results, charset,
                                         identifier if injected.wrong_match else None))
            yield from matches
            while injected.endless and matches and matches[-1][1] is not None:
                yield from self._again(event, [m for m in matches if m[1] is not None])
                if event.is_cancelled or self.stopping.is_set() \
                        or not event.assoc.is_established:
                    return
        finally:
            bulk_send.rewrite_identifiers(event.assoc, None)

    def _matches(self, event: Event, calling: str, level: str, results: Iterable[Dataset],
                 charset: str, wrong_for: Dataset | None = None,
                 ) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        count = 0
        for ds in results:
            if event.is_cancelled:
                self.log.info("C-FIND from %r cancelled after %d matches", calling, count)
                yield CANCELLED, None
                return
            ds.SpecificCharacterSet = charset
            if wrong_for is not None:
                other_keys(ds, wrong_for)
            count += 1
            yield PENDING, ds
        self.log.info("C-FIND from %r at %s: %d matches", calling, level or "?", count)

    def _again(self, event: Event, matches: list[tuple[int | Dataset, Dataset | None]],
               ) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        """The endless fault: the same matches once more, unless the requester cancels,
        goes away, or the daemon stops."""
        for match in matches:
            self.stopping.wait(0.01)
            if event.is_cancelled:
                self.log.info("C-FIND endless fault: cancelled")
                yield CANCELLED, None
                return
            if self.stopping.is_set() or not event.assoc.is_established:
                return
            yield match

    # -- C-MOVE and C-GET (served by move.serve_retrieve through MovingAE) -------------
    def plan_move(self, calling: str, destination: str, sop_class: str,
                  identifier: Dataset) -> MovePlan:
        entry = self.policy.destination(destination)
        if entry is None:
            raise MoveRefused(move.MOVE_DESTINATION_UNKNOWN,
                              f"Move destination {destination!r} unknown (not trusted)")
        return self._plan(calling, entry, sop_class, identifier)

    def plan_get(self, calling: str, sop_class: str, identifier: Dataset) -> MovePlan:
        # Sent back on the caller's association, in its export set (an untrusted caller,
        # let in with "permit trusted only" off, gets the default).
        entry = self.policy.entry(calling) or TrustedAE(calling, "", 1)
        return self._plan(calling, entry, sop_class, identifier)

    def _plan(self, calling: str, entry: TrustedAE, sop_class: str,
              identifier: Dataset) -> MovePlan:
        model = MODEL_OF_UID[sop_class]
        try:
            matches = move_matches(self.archive.index, identifier, _root(model),
                                   strict=self.strict)
        except QueryError as exc:
            raise MoveRefused(exc.status, exc.comment) from exc
        plan = MovePlan(entry.ae_title, entry.host, entry.port, [],
                        dataset=lambda op: self.export(op.sop_uid, entry),
                        stopping=self.stopping,
                        encoded=lambda op: self.export_encoded(op.sop_uid, entry))
        refused = set(self.quirks.c001_modalities)
        if refused and any(m.modality in refused for m in matches):
            self.log.warning("retrieve by %r touches %s: answering 0xC001 with no "
                             "sub-operations (quirk)", calling, sorted(refused))
            plan.zero_status = C001
            return plan
        fraction = self.quirks.partial_move_fraction
        if fraction < 1.0 and len(matches) > 1:
            kept = max(1, int(len(matches) * fraction))
            self.log.warning("retrieve by %r: sending %d of %d instances and reporting "
                             "success (quirk)", calling, kept, len(matches))
            matches = matches[:kept]
        plan.operations = [SubOperation(m.sop_uid, m.sop_class, self._syntaxes(m.sop_uid))
                           for m in matches]
        plan.faults = self.move_faults.plan({m.modality for m in matches}, len(matches))
        plan.contexts = contexts_for(plan)
        self.log.info("retrieve by %r for %s at %s:%d: %d instances", calling,
                      entry.ae_title, entry.host, entry.port, len(matches))
        return plan

    def _syntaxes(self, sop_uid: str) -> tuple[str, ...]:
        """Native objects go as either native syntax; compressed ones as stored."""
        location = self.archive.index.locate(sop_uid)
        if location is None or location.path is None:
            return _NATIVE
        try:
            path = Path(location.path)
            stored = part10_transfer_syntax(path) or read_file_meta_info(path).TransferSyntaxUID
        except (OSError, AttributeError, ValueError):
            return _NATIVE
        return _NATIVE if stored in _UNCOMPRESSED else (str(stored),)

    def export(self, sop_uid: str, destination: TrustedAE) -> Dataset:
        """The dataset sent to ``destination``, or MoveRefused (a failed sub-operation)."""
        try:
            ds = self.archive.dataset(sop_uid)
        except ArchiveError as exc:
            raise MoveRefused(move.UNABLE_TO_PROCESS, str(exc)) from exc
        ds = self.data_faults.content(ds)
        refusal = export_refusal(ds, self.quirks)
        if refusal is not None:
            raise MoveRefused(move.UNABLE_TO_PROCESS, refusal)
        if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
            with_file_meta(ds)
        return self.data_faults.wire(encode_as(ds, destination.export_charset))

    def export_encoded(self, sop_uid: str, destination: TrustedAE) -> Encoded | None:
        """The stored file's data set bytes, when :meth:`export` would send them unchanged:
        read once, no pixel data decoded or re-encoded (None: use :meth:`export`).

        That is a file-backed object already in the destination's export character set,
        whole, of a patient no data fault touches, and not an RT Plan an export rule
        may refuse.
        """
        location = self.archive.index.locate(sop_uid)
        if location is None or location.path is None \
                or self.data_faults.touches(location.patient_id) \
                or (self.quirks.refuse_plans_without_beams
                    and location.sop_class in _PLAN_CLASSES):
            return None
        try:
            raw = Path(location.path).read_bytes()
            as_stored = _as_stored(raw, sop_uid, destination.export_charset)
            if as_stored is not None:
                return as_stored
            fh = BytesIO(raw)
            ds = pydicom.dcmread(fh, stop_before_pixels=True)
            pixels_at = fh.tell()
            syntax = ds.file_meta.TransferSyntaxUID
            if pixel_problem(ds, fh, len(raw)) or syntax.is_deflated \
                    or str(ds.get("SOPInstanceUID", "")) != sop_uid:
                return None
            stored = charset_of(ds)
            if stored == (destination.export_charset,):
                body = part10_body(raw)
            else:  # only the text is re-declared or re-encoded; pixels go as stored
                head = redeclared(raw[part10_body_offset(raw):pixels_at],
                                  syntax.is_implicit_VR, syntax.is_little_endian,
                                  stored, destination.export_charset) \
                    or encode(encode_as(ds, destination.export_charset),
                              syntax.is_implicit_VR, syntax.is_little_endian)
                if head is None:
                    return None
                body = head + raw[pixels_at:]
        except Exception:  # whatever is wrong, export() reads it again and says what
            return None
        return Encoded(str(ds.SOPClassUID), sop_uid, str(syntax), body)

    # -- C-STORE into the archive -------------------------------------------------------
    def _on_store(self, event: Event) -> int | Dataset:
        calling = calling_ae(event)
        entry = self.policy.entry(calling)
        request, body = store_request(event)
        problem = cut_short(body, event.context.transfer_syntax)
        if problem is not None:  # pydicom reads it "fine": it would be imported partial
            self.log.warning("DB Daemon refuses an object from %r: the data set is cut "
                             "short or malformed: %s", calling, problem)
            return failure(UNABLE_TO_PROCESS,
                           f"the data set is cut short or malformed: {problem}")
        override = entry is not None and entry.charset_override
        try:
            ds = event.dataset
            if entry is not None and override:  # before any text is read
                read_as(ds, entry.import_charset)
            if str(ds.SOPInstanceUID) != str(request.AffectedSOPInstanceUID) \
                    or str(ds.SOPClassUID) != str(request.AffectedSOPClassUID):
                # Imported under the data set's UID, it was not what the sender stored.
                self.log.warning("DB Daemon refuses %s from %r: the data set says %s/%s",
                                 request.AffectedSOPInstanceUID, calling, ds.SOPClassUID,
                                 ds.SOPInstanceUID)
                return failure(0xA900, "SOP Class/Instance UID differ from the C-STORE "
                                       "request")
            modality = text_value(ds, "Modality") or "OT"
            path = archive_path(self.storage, text_value(ds, "PatientID"), modality,
                                str(ds.SOPInstanceUID))
            # Rows first: an object the index cannot hold is refused before any file
            # is written (or an earlier good one replaced).
            patient, study, series, instance = dataset_rows(ds, str(path))
            if override:  # re-encoded, in the syntax it came in (pixel data untouched)
                write_part10(ds, path, str(event.context.transfer_syntax))
                outcome = Received.WRITTEN
            else:
                outcome = write_received(path, body,
                                         str(ds.SOPClassUID), str(ds.SOPInstanceUID),
                                         str(event.context.transfer_syntax), calling)
            self.archive.index.add(patient, study, series, [instance])
        except NotIndexable as exc:
            self.log.warning("DB Daemon refuses an object from %r: %s", calling, exc)
            return failure(UNABLE_TO_PROCESS, f"cannot import: {exc}")
        except OSError as exc:
            self.log.error("DB Daemon cannot store an object from %r: %s", calling, exc)
            return failure(0xA700, f"cannot store: {exc.strerror or exc}")
        except Exception as exc:  # the peer's bytes: any decoding failure is a bad object
            self.log.warning("DB Daemon cannot read an object from %r: %s", calling, exc)
            return failure(UNABLE_TO_PROCESS, f"cannot decode the dataset: {exc}")
        self.log.info("DB Daemon imported %s from %r (%s)", path.name, calling, outcome.value)
        return 0x0000


def _as_stored(raw: bytes, sop_uid: str, charset: str) -> Encoded | None:
    """:meth:`DBDaemon.export_encoded`'s answer for the common case, from the file's raw
    head (:mod:`client.part10_head`): plain, whole, its text ASCII if it is re-declared
    in ``charset``. None: read it with pydicom (which took 0.2 ms of each CT slice's
    export)."""
    head = read_head(raw, whole=True)
    if head is None or head.uid(_SOP_INSTANCE) != sop_uid:
        return None
    sop_class, stored = head.uid(_SOP_CLASS), head.charset()
    try:
        if not sop_class or stored is None \
                or head.pixel_problem(BytesIO(raw), len(raw)) is not None:
            return None
    except ValueError:  # pixel module values not plain
        return None
    if stored == (charset,):
        return Encoded(sop_class, sop_uid, str(head.syntax), raw[head.body_at:])
    syntax = head.syntax
    swapped = redeclared(raw[head.body_at:head.end_at], syntax.is_implicit_VR,
                         syntax.is_little_endian, stored, charset, head.elements.values())
    if swapped is None:
        return None
    return Encoded(sop_class, sop_uid, str(syntax), swapped + raw[head.end_at:])
