"""The DB Daemon's error paths, driven over real sockets by a pynetdicom peer."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pynetdicom.association
import pytest
from daemons import make_site, running_daemons, small_archive
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    MRImageStorage,
    RTPlanStorage,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from client.site import Model, Quirks, TrustedAE
from emulators.archive import Archive, read_checked
from emulators.db_daemon import DBDaemon
from emulators.service import DaemonError
from emulators.synthetic import object_refs
from emulators.synthetic.modules import with_file_meta


@pytest.fixture
def archive() -> Iterator[Archive]:
    archive = small_archive(patients=2, slices=4, size=16)
    yield archive
    archive.close()


@contextmanager
def associated(port: int, *contexts: str, calling: str = "DCMTK",
               roles: tuple[str, ...] = ()) -> Iterator[Association]:
    ae = AE(ae_title=calling)
    for uid in contexts:
        ae.add_requested_context(uid)
    for uid in roles:
        ae.add_requested_context(uid, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="VMSDBD1",
                         ext_neg=[build_role(uid, scp_role=True) for uid in roles])
    try:
        assert assoc.is_established
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()
        ae.shutdown()


def _statuses(responses: Iterator[tuple[Dataset, Dataset | None]],
              ) -> list[tuple[Dataset, Dataset | None]]:
    return [(status, identifier) for status, identifier in responses if status]


def test_a_malformed_move_identifier_is_answered_0xC000(
        archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pydicom decodes lazily: a US element of 3 bytes fails late, and must still get a
    DICOM answer (0xC000), not an A-ABORT; the association carries on."""
    bad = Dataset()
    bad.QueryRetrieveLevel = "SERIES"
    bad.SeriesInstanceUID = archive.recipe(0).cts[0].series.uid
    real_encode = pynetdicom.association.encode

    def with_a_broken_element(ds: Dataset, implicit: bool, little: bool,
                              deflated: bool = False) -> bytes | None:
        """pydicom will not write a broken element, so the test appends one on the wire."""
        data = real_encode(ds, implicit, little, deflated)
        if data is None or ds.get("QueryRetrieveLevel") != "SERIES":
            return data
        length = (3).to_bytes(4, "little") if implicit else b"US" + (3).to_bytes(2, "little")
        return data + b"\x28\x00\x10\x00" + length + b"\x01\x02\x03"

    monkeypatch.setattr(pynetdicom.association, "encode", with_a_broken_element)
    with running_daemons(tmp_path, archive) as (_site, dbd, _fd), \
            associated(dbd.port, StudyRootQueryRetrieveInformationModelMove) as assoc:
        (status, _), = _statuses(assoc.send_c_move(bad, "VMSFD",
                                                   StudyRootQueryRetrieveInformationModelMove))
        assert int(status.Status) == 0xC000
        assert "cannot process the identifier" in str(status.ErrorComment)
        assert assoc.is_established
        good = Dataset()
        good.QueryRetrieveLevel = "IMAGE"
        good.SOPInstanceUID = archive.recipe(0).plans[0].uid
        final, _ = _statuses(assoc.send_c_move(good, "VMSFD",
                                               StudyRootQueryRetrieveInformationModelMove))[-1]
        assert int(final.Status) == 0x0000


def _plan_without_beams(archive: Archive) -> Dataset:
    plan = next(o for o in object_refs(archive.recipe(0)) if o.modality == "RTPLAN").build()
    plan.BeamSequence = []
    plan.SOPInstanceUID = plan.SOPInstanceUID + ".9"
    return with_file_meta(plan)


def test_get_counts_a_refused_export_as_one_failed_suboperation(archive: Archive,
                                                                tmp_path: Path) -> None:
    """C-GET (opt-in) fails a plan refused for export like a move does: counts and list."""
    models = (Model.STUDY_FIND, Model.STUDY_MOVE, Model.STUDY_GET)
    quirks = Quirks(refuse_plans_without_beams=True)
    plan = _plan_without_beams(archive)
    good = archive.recipe(0).plans[0].uid
    received: list[str] = []

    def on_store(event: object) -> int:
        received.append(str(event.dataset.SOPInstanceUID))  # type: ignore[attr-defined]
        return 0

    with running_daemons(tmp_path, archive, models=models, quirks=quirks) as (_site, dbd, _fd):
        with associated(dbd.port, RTPlanStorage) as sender:
            assert int(sender.send_c_store(plan).Status) == 0
        ae = AE(ae_title="DCMTK")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        ae.add_requested_context(RTPlanStorage, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", dbd.port, ae_title="VMSDBD1",
                             ext_neg=[build_role(RTPlanStorage, scp_role=True)],
                             evt_handlers=[(evt.EVT_C_STORE, on_store)])
        try:
            query = Dataset()
            query.QueryRetrieveLevel = "IMAGE"
            query.SOPInstanceUID = [plan.SOPInstanceUID, good]
            responses = _statuses(assoc.send_c_get(query,
                                                   StudyRootQueryRetrieveInformationModelGet))
        finally:
            assoc.release()
            ae.shutdown()
    final, identifier = responses[-1]
    assert int(final.Status) == 0xB000
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (1, 1)
    assert "NumberOfRemainingSuboperations" not in final
    assert identifier is not None and identifier.FailedSOPInstanceUIDList == plan.SOPInstanceUID
    assert received == [good]


def test_override_import_keeps_a_compressed_object_whole(archive: Archive,
                                                         tmp_path: Path) -> None:
    """Re-read in the import character set, an encapsulated image keeps its syntax."""
    source = pydicom.dcmread(pydicom.data.get_testdata_file("MR_small_jp2klossless.dcm"))
    assert source.file_meta.TransferSyntaxUID == JPEG2000Lossless
    sender = TrustedAE("SENDER", "127.0.0.1", 104, import_charset="ISO_IR 100",
                       charset_override=True)
    threads = threading.active_count()
    with running_daemons(tmp_path, archive, extra=(sender,)) as (_site, dbd, _fd):
        ae = AE(ae_title="SENDER")
        ae.add_requested_context(MRImageStorage, JPEG2000Lossless)
        assoc = ae.associate("127.0.0.1", dbd.port, ae_title="VMSDBD1")
        try:
            assert int(assoc.send_c_store(source).Status) == 0
        finally:
            assoc.release()
            ae.shutdown()
        location = archive.index.locate(str(source.SOPInstanceUID))
        assert location is not None and location.path is not None
        stored = read_checked(Path(location.path))  # refuses a truncated file
        assert stored.file_meta.TransferSyntaxUID == JPEG2000Lossless
        assert stored.PixelData == source.PixelData
        assert stored.SpecificCharacterSet == "ISO_IR 100"
    assert threading.active_count() == threads


def test_storage_folder_lives_exactly_as_long_as_the_daemon(archive: Archive,
                                                             tmp_path: Path) -> None:
    """The temporary storage is made at start and removed at stop: none leaks, even
    when the daemon cannot start."""
    site = make_site(tmp_path)
    daemon = DBDaemon(site, archive)
    assert daemon.storage == Path()
    with daemon:
        storage = daemon.storage
        assert storage.is_dir()
    assert not storage.exists()
    with DBDaemon(site, archive) as running:
        taken = dataclasses.replace(site, db_daemon=dataclasses.replace(
            site.db_daemon, port=running.port))
        blocked = DBDaemon(taken, archive)
        with pytest.raises(DaemonError, match="cannot listen"):
            blocked.start()
        assert blocked.storage == Path()


def test_an_object_the_index_cannot_hold_is_refused_before_any_file(
        archive: Archive, tmp_path: Path) -> None:
    """No StudyInstanceUID: 0xC000 naming it, no file in storage, nothing indexed."""
    plan = _plan_without_beams(archive)
    del plan.StudyInstanceUID
    with running_daemons(tmp_path, archive) as (_site, dbd, _fd), \
            associated(dbd.port, RTPlanStorage) as assoc:
        status = assoc.send_c_store(plan)
        assert int(status.Status) == 0xC000
        assert "StudyInstanceUID" in str(status.ErrorComment)
        assert list(dbd.storage.rglob("*")) == []
        assert archive.index.locate(str(plan.SOPInstanceUID)) is None
