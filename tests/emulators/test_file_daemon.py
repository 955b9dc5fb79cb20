"""The File Daemon over a real socket: where objects land, what the files hold, and failures.

pynetdicom is the sending peer here (a real DICOM SCU on a real association); the
DCMTK-driven checks live in tests/interop.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest
from daemons import LOOPBACK, associated, make_site
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RTPlanStorage,
    generate_uid,
)
from pynetdicom import AE, _config
from pynetdicom.association import Association
from pynetdicom.dsutils import encode, encode_file_meta

from client.site import Site
from emulators.file_daemon import (
    CANNOT_UNDERSTAND,
    DATASET_DOES_NOT_MATCH_SOP_CLASS,
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    FileDaemon,
)
from emulators.files import (
    TEMP_PREFIX,
    TEMP_SUFFIX,
    archive_path,
    part10_body,
    safe_name,
    write_patient,
)
from emulators.sop_classes import VERIFICATION
from emulators.synthetic import PatientRecipe, SyntheticConfig, make_recipe, object_refs
from emulators.synthetic.modules import with_file_meta

CONFIG = SyntheticConfig(seed=1, slices=4, rows=16, columns=16)
CLIENT_AE = "DCMTK"  # trusted by the default site's File Daemon (from 127.0.0.1)
FD_AE = "VMSFD"
WRITE_FAILURES = (OUT_OF_RESOURCES, PROCESSING_FAILURE)
Contexts = Sequence[tuple[str, str]]  # (abstract syntax, its single transfer syntax)
_PREAMBLE = b"\x00" * 128 + b"DICM"
BOTH_IMPLICIT: Contexts = ((CTImageStorage, ImplicitVRLittleEndian),
                           (RTPlanStorage, ImplicitVRLittleEndian))


@pytest.fixture(scope="module")
def recipe() -> PatientRecipe:
    return make_recipe(CONFIG, 0)


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return make_site(tmp_path)


def _build(recipe: PatientRecipe, modality: str,
           transfer_syntax: str = ImplicitVRLittleEndian) -> Dataset:
    """The recipe's first object of ``modality``, with File Meta naming ``transfer_syntax``
    (pynetdicom picks the presentation context from it)."""
    obj = next(o for o in object_refs(recipe) if o.modality == modality)
    ds = with_file_meta(obj.build())
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    return ds


def _wire_bytes(ds: Dataset, transfer_syntax: str) -> bytes:
    """The dataset as pynetdicom encodes it on the wire for ``transfer_syntax``."""
    ts = UID(transfer_syntax)
    data = encode(ds, ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated)
    assert data is not None
    return data


@contextmanager
def _associate(port: int, contexts: Contexts = BOTH_IMPLICIT, calling: str = CLIENT_AE,
               ) -> Iterator[Association]:
    """An association (maybe rejected) from ``calling``; released and shut down after."""
    ae = AE(ae_title=calling)
    for abstract, transfer_syntax in contexts:
        ae.add_requested_context(abstract, [transfer_syntax])
    ae.add_requested_context(VERIFICATION)
    with associated(ae, LOOPBACK, port, FD_AE) as assoc:
        yield assoc


def _store(assoc: Association, ds: Dataset | Path) -> Dataset:
    assert assoc.is_established
    status = assoc.send_c_store(ds)
    assert "Status" in status, "no C-STORE response"
    return status


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()} if folder.exists() else set()


def _temp_files(folder: Path) -> list[Path]:
    return list(folder.rglob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}")) if folder.exists() else []


def _echo_succeeds(port: int) -> bool:
    with _associate(port) as assoc:
        return assoc.is_established and int(assoc.send_c_echo().Status) == 0


# --- where objects land and what the files hold ------------------------------------------

@pytest.mark.parametrize("transfer_syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian],
                         ids=["implicit", "explicit"])
def test_objects_land_with_the_bytes_and_transfer_syntax_sent(
        site: Site, recipe: PatientRecipe, transfer_syntax: str) -> None:
    sent = {modality: _build(recipe, modality, transfer_syntax) for modality in ("CT", "RTPLAN")}
    contexts = [(CTImageStorage, transfer_syntax), (RTPlanStorage, transfer_syntax)]
    threads_before = threading.active_count()
    with FileDaemon(site) as fd:
        output = fd.output
        with _associate(fd.port, contexts) as assoc:
            statuses = [int(_store(assoc, ds).Status) for ds in sent.values()]
            assert assoc.accepted_contexts[0].transfer_syntax == [transfer_syntax]
        assert fd.stored == 2
    assert threading.active_count() == threads_before, threading.enumerate()

    assert statuses == [0, 0]
    expected = {archive_path(output, recipe.patient_id, modality, str(ds.SOPInstanceUID)): ds
                for modality, ds in sent.items()}
    assert _files(output) == set(expected)
    assert _temp_files(output) == []
    for path, ds in expected.items():
        data = path.read_bytes()
        assert part10_body(data) == _wire_bytes(ds, transfer_syntax)
        stored = pydicom.dcmread(path)
        meta = stored.file_meta
        assert meta.TransferSyntaxUID == transfer_syntax
        assert meta.SourceApplicationEntityTitle == CLIENT_AE
        assert meta.MediaStorageSOPClassUID == ds.SOPClassUID
        assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert stored.SOPInstanceUID == ds.SOPInstanceUID
        assert stored.PatientID == recipe.patient_id


def test_without_patient_folders_files_go_directly_into_the_output(
        site: Site, recipe: PatientRecipe) -> None:
    site = dataclasses.replace(
        site, file_daemon=dataclasses.replace(site.file_daemon, patient_folders=False))
    sent = [_build(recipe, "CT"), _build(recipe, "RTPLAN")]
    with FileDaemon(site) as fd, _associate(fd.port) as assoc:
        output = fd.output
        assert [int(_store(assoc, ds).Status) for ds in sent] == [0, 0]
    expected = {output / f"{ds.Modality}.{ds.SOPInstanceUID}.dcm" for ds in sent}
    assert _files(output) == expected
    assert [p for p in output.iterdir() if p.is_dir()] == []
    assert not (output / safe_name(recipe.patient_id)).exists()


HOSTILE_IDS = ["", "../../etc", "a/b", "..\\x", "CON", "nul.txt", "x\ny", "P" * 64, "Müller",
               "ü" * 64]


def test_hostile_patient_ids_stay_inside_the_output_in_distinct_folders(
        tmp_path: Path, recipe: PatientRecipe) -> None:
    # Deep enough that "../../etc" would still land inside tmp_path, where the walk sees it.
    output = tmp_path / "jail" / "cell" / "fd"
    site = make_site(tmp_path)
    site = dataclasses.replace(site,
                               file_daemon=dataclasses.replace(site.file_daemon, output=output))
    before = _files(tmp_path)
    sent: dict[str, str] = {}  # SOP instance UID -> patient ID
    with FileDaemon(site) as fd, _associate(fd.port) as assoc:
        for patient_id in HOSTILE_IDS:
            ds = _build(recipe, "CT")
            ds.SpecificCharacterSet = "ISO_IR 192"
            ds.PatientID = patient_id
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            assert int(_store(assoc, ds).Status) == 0, repr(patient_id)
            sent[str(ds.SOPInstanceUID)] = patient_id

    new = _files(tmp_path) - before
    root = output.resolve()
    assert {p for p in new if not p.resolve().is_relative_to(root)} == set()
    assert len(new) == len(HOSTILE_IDS)
    folders: dict[Path, str] = {}
    for uid, patient_id in sent.items():
        (path,) = [p for p in new if p.name == f"CT.{uid}.dcm"]
        assert path.resolve().parent.parent == root, (patient_id, path)
        assert path.parent not in folders, f"{patient_id!r} shares {path.parent} with " \
                                           f"{folders.get(path.parent)!r}"
        folders[path.parent] = patient_id
        if "\\" not in patient_id:  # a backslash makes PatientID multi-valued on the wire
            assert path == archive_path(output, patient_id, "CT", uid)
            assert pydicom.dcmread(path).PatientID == patient_id
    assert _temp_files(tmp_path) == []


def test_a_backslash_patient_id_gets_its_own_folder(site: Site, recipe: PatientRecipe) -> None:
    ids = ["..\\x", "['..', 'x']"]  # multi-valued on the wire / a valid single LO value
    uids: list[str] = []
    with FileDaemon(site) as fd, _associate(fd.port) as assoc:
        output = fd.output
        for patient_id in ids:
            ds = _build(recipe, "CT")
            ds.PatientID = patient_id
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            assert int(_store(assoc, ds).Status) == 0
            uids.append(str(ds.SOPInstanceUID))
    folders = {next(output.rglob(f"CT.{uid}.dcm")).parent for uid in uids}
    assert len(folders) == 2, folders
    assert archive_path(output, ids[0], "CT", uids[0]).is_file()


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")
def test_a_hostile_modality_stays_inside_the_output(site: Site, recipe: PatientRecipe) -> None:
    ds = _build(recipe, "CT")
    ds.Modality = "../../../evil"
    with FileDaemon(site) as fd, _associate(fd.port) as assoc:
        output = fd.output
        assert int(_store(assoc, ds).Status) == 0
    (path,) = _files(site.file_daemon.output.parent)
    assert path == archive_path(output, recipe.patient_id, "../../../evil", ds.SOPInstanceUID)
    assert path.resolve().parent.parent == output.resolve()


# --- duplicates ---------------------------------------------------------------------------

def _records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "dbdsim.file_daemon" and r.levelno == level]


def test_a_duplicate_with_the_same_bytes_leaves_the_file_alone(
        site: Site, recipe: PatientRecipe, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dbdsim.file_daemon")
    ds = _build(recipe, "RTPLAN")
    with FileDaemon(site) as fd, _associate(fd.port) as assoc:
        path = archive_path(fd.output, recipe.patient_id, "RTPLAN", ds.SOPInstanceUID)
        assert int(_store(assoc, ds).Status) == 0
        past = 1_500_000_000_123_456_789  # a distinctive mtime a rewrite could not keep
        os.utime(path, ns=(past, past))
        first = path.stat()
        data = path.read_bytes()
        caplog.clear()
        assert int(_store(assoc, ds).Status) == 0
        assert fd.stored == 2
    again = path.stat()
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, past)
    assert path.read_bytes() == data
    infos = [m for m in _records(caplog, logging.INFO) if str(ds.SOPInstanceUID) in m]
    assert len(infos) == 1 and "identical" in infos[0], infos
    assert _records(caplog, logging.WARNING) == []
    assert _files(path.parent) == {path}


def test_a_duplicate_with_other_bytes_replaces_the_file_with_a_warning(
        site: Site, recipe: PatientRecipe, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dbdsim.file_daemon")
    first, second = _build(recipe, "RTPLAN"), _build(recipe, "RTPLAN")
    second.RTPlanName = "edited after sending"
    with FileDaemon(site) as fd, _associate(fd.port) as assoc:
        path = archive_path(fd.output, recipe.patient_id, "RTPLAN", first.SOPInstanceUID)
        assert int(_store(assoc, first).Status) == 0
        inode = path.stat().st_ino
        caplog.clear()
        assert int(_store(assoc, second).Status) == 0
    assert part10_body(path.read_bytes()) == _wire_bytes(second, ImplicitVRLittleEndian)
    assert pydicom.dcmread(path).RTPlanName == "edited after sending"
    assert path.stat().st_ino != inode
    warnings = _records(caplog, logging.WARNING)
    assert len(warnings) == 1, warnings
    assert "replaced" in warnings[0] and str(first.SOPInstanceUID) in warnings[0]
    assert _files(path.parent) == {path}


def test_a_file_that_is_not_part10_is_replaced(site: Site, recipe: PatientRecipe,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dbdsim.file_daemon")
    ds = _build(recipe, "RTPLAN")
    path = archive_path(site.file_daemon.output, recipe.patient_id, "RTPLAN", ds.SOPInstanceUID)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"half a file")
    with FileDaemon(site) as fd, _associate(fd.port) as assoc:
        assert int(_store(assoc, ds).Status) == 0
    assert part10_body(path.read_bytes()) == _wire_bytes(ds, ImplicitVRLittleEndian)
    assert any("replaced" in m for m in _records(caplog, logging.WARNING))


# --- refused objects --------------------------------------------------------------------------

def _part10_lying_about(tmp_path: Path, recipe: PatientRecipe, what: str) -> Path:
    """A file whose File Meta (which chunked sending puts in the C-STORE request) disagrees
    with its dataset on ``what``."""
    ds = _build(recipe, "CT")
    if what == "instance":
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    else:  # the request says CT Image Storage, the dataset says RT Plan
        ds.SOPClassUID = RTPlanStorage
    path = tmp_path / "send" / "lying.dcm"
    path.parent.mkdir()
    # Written by hand: dcmwrite would "fix" the File Meta from the dataset.
    path.write_bytes(_PREAMBLE + encode_file_meta(ds.file_meta)
                     + _wire_bytes(ds, ImplicitVRLittleEndian))
    return path


@pytest.mark.parametrize("what", ["instance", "class"])
def test_a_dataset_disagreeing_with_its_request_is_refused(
        tmp_path: Path, site: Site, recipe: PatientRecipe, monkeypatch: pytest.MonkeyPatch,
        what: str) -> None:
    # Chunked sending takes the request's UIDs from the File Meta, not from the dataset:
    # the public way to make pynetdicom send a request and a dataset that disagree.
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    path = _part10_lying_about(tmp_path, recipe, what)
    with FileDaemon(site) as fd, _associate(fd.port) as assoc:
        status = _store(assoc, path)
        assert fd.stored == 0
    assert int(status.Status) == DATASET_DOES_NOT_MATCH_SOP_CLASS
    assert "differ" in str(status.get("ErrorComment", ""))
    assert _files(site.file_daemon.output) == set()


def test_an_undecodable_dataset_is_refused(tmp_path: Path, site: Site, recipe: PatientRecipe,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    ds = _build(recipe, "CT")
    # (0008,0016) UI claiming 4000 bytes, of which only a few follow.
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(_PREAMBLE + encode_file_meta(ds.file_meta)
                       + b"\x08\x00\x16\x00\xa0\x0f\x00\x001.2.3")
    with FileDaemon(site) as fd, _associate(fd.port) as assoc:
        status = _store(assoc, broken)
        assert _echo_succeeds(fd.port)
    assert int(status.Status) == CANNOT_UNDERSTAND
    assert "cannot decode" in str(status.get("ErrorComment", ""))
    assert _files(site.file_daemon.output) == set()


def test_an_untrusted_calling_ae_is_rejected_and_nothing_is_written(
        site: Site, recipe: PatientRecipe) -> None:
    threads_before = threading.active_count()
    with FileDaemon(site) as fd:
        with _associate(fd.port, calling="INTRUDER") as assoc:
            assert assoc.is_rejected
            assert not assoc.is_established
            rejection = assoc.acceptor.primitive
            assert rejection is not None
            assert (rejection.result, rejection.result_source, rejection.diagnostic) == (1, 1, 3)
            with pytest.raises(RuntimeError):
                assoc.send_c_store(_build(recipe, "CT"))
        assert fd.stored == 0
        assert _echo_succeeds(fd.port)  # the trusted client is still served
    assert threading.active_count() == threads_before, threading.enumerate()
    assert _files(site.file_daemon.output) == set()


# --- write failures ----------------------------------------------------------------------------

def _send_then_echo(site: Site, ds: Dataset) -> tuple[Dataset, bool, bool]:
    """C-STORE ``ds``, then C-ECHO on the same and on a new association."""
    threads_before = threading.active_count()
    with FileDaemon(site) as fd:
        with _associate(fd.port) as assoc:
            status = _store(assoc, ds)
            same = int(assoc.send_c_echo().Status) == 0
        fresh = _echo_succeeds(fd.port)
        assert fd.stored == 0
    assert threading.active_count() == threads_before, threading.enumerate()
    return status, same, fresh


@pytest.mark.parametrize("obstacle", ["patient folder is a file", "object path is a folder"])
def test_an_unwritable_path_fails_the_store_and_the_daemon_keeps_serving(
        site: Site, recipe: PatientRecipe, obstacle: str) -> None:
    ds = _build(recipe, "CT")
    output = site.file_daemon.output
    path = archive_path(output, recipe.patient_id, "CT", ds.SOPInstanceUID)
    if obstacle == "patient folder is a file":
        output.mkdir(parents=True)
        path.parent.write_bytes(b"in the way")
    else:
        path.mkdir(parents=True)
    before = {p: p.read_bytes() for p in _files(output)}
    status, same, fresh = _send_then_echo(site, ds)
    assert int(status.Status) in WRITE_FAILURES
    assert "cannot write" in str(status.get("ErrorComment", ""))
    assert (same, fresh) == (True, True)
    assert {p: p.read_bytes() for p in _files(output)} == before
    assert _temp_files(output) == []


# --- one file per SOP Instance UID, whatever patient ID or modality it comes under ---------

def _replacements(caplog: pytest.LogCaptureFixture, uid: str) -> list[str]:
    return [m for m in _records(caplog, logging.WARNING) if uid in m]


def test_an_instance_sent_again_under_another_id_or_modality_leaves_only_the_last_file(
        site: Site, recipe: PatientRecipe, caplog: pytest.LogCaptureFixture) -> None:
    # Debug: the log policy shows patient IDs (the folders in these paths) only there.
    caplog.set_level(logging.DEBUG, logger="dbdsim.file_daemon")
    ds = _build(recipe, "CT")
    uid = str(ds.SOPInstanceUID)
    sends = [("FIRST-ID", "CT"), ("SECOND-ID", "CT"), ("SECOND-ID", "MR")]
    output = site.file_daemon.output
    with FileDaemon(site) as fd, _associate(fd.port) as assoc:
        previous: Path | None = None
        for patient_id, modality in sends:
            ds.PatientID, ds.Modality = patient_id, modality
            caplog.clear()
            assert int(_store(assoc, ds).Status) == 0, (patient_id, modality)
            path = archive_path(output, patient_id, modality, uid)
            assert _files(output) == {path}, (patient_id, modality)
            assert part10_body(path.read_bytes()) == _wire_bytes(ds, ImplicitVRLittleEndian)
            stored = pydicom.dcmread(path)
            assert (stored.PatientID, stored.Modality) == (patient_id, modality)
            warnings = _replacements(caplog, uid)
            if previous is None:
                assert warnings == []
            else:
                assert len(warnings) == 1, warnings
                assert str(previous) in warnings[0] and str(path) in warnings[0], warnings
                assert not previous.exists()
            previous = path
        assert fd.stored == len(sends)
    assert _temp_files(output) == []


def test_a_file_from_an_earlier_run_is_replaced_when_its_uid_comes_under_another_id(
        tmp_path: Path, site: Site, recipe: PatientRecipe,
        caplog: pytest.LogCaptureFixture) -> None:
    # Debug: the log policy shows patient IDs (the folders in these paths) only there.
    caplog.set_level(logging.DEBUG, logger="dbdsim.file_daemon")
    ds = _build(recipe, "CT")
    uid = str(ds.SOPInstanceUID)
    written = write_patient(recipe, tmp_path / "generated")
    ct = archive_path(tmp_path / "generated", recipe.patient_id, "CT", uid)
    plan = next(p for p in written if p.name.startswith("RTPLAN."))
    assert ct in written
    output = site.file_daemon.output
    old, bystander = output / "OLDID" / ct.name, output / "OLDID" / plan.name
    old.parent.mkdir(parents=True)
    shutil.copyfile(ct, old)
    shutil.copyfile(plan, bystander)
    assert ds.PatientID == recipe.patient_id != "OLDID"
    with FileDaemon(site) as fd, _associate(fd.port) as assoc:
        assert int(_store(assoc, ds).Status) == 0
        assert fd.stored == 1
    path = archive_path(output, recipe.patient_id, "CT", uid)
    assert _files(output) == {path, bystander}
    assert part10_body(path.read_bytes()) == _wire_bytes(ds, ImplicitVRLittleEndian)
    assert bystander.read_bytes() == plan.read_bytes()
    warnings = _replacements(caplog, uid)
    assert len(warnings) == 1, warnings
    assert str(old) in warnings[0] and str(path) in warnings[0], warnings


def test_the_same_object_sent_twice_leaves_one_file_and_counts_both(
        site: Site, recipe: PatientRecipe, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dbdsim.file_daemon")
    ds = _build(recipe, "CT")
    output = site.file_daemon.output
    path = archive_path(output, recipe.patient_id, "CT", str(ds.SOPInstanceUID))
    with FileDaemon(site) as fd:
        for attempt in range(2):  # a new association each time, as a retried move does
            with _associate(fd.port) as assoc:
                assert int(_store(assoc, ds).Status) == 0, attempt
            assert fd.stored == attempt + 1
            assert _files(output) == {path}, attempt
    assert part10_body(path.read_bytes()) == _wire_bytes(ds, ImplicitVRLittleEndian)
    assert _records(caplog, logging.WARNING) == []
    assert _temp_files(output) == []
