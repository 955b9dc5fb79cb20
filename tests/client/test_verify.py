"""Verification of what arrived: a success status is not proof, so files are read whole.

The folder is one a File Daemon may still be writing to; whatever state a file is in,
``Folder.read`` must classify it (readable, or unreadable with why) and never raise.
"""

from __future__ import annotations

import io
import os
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    RTPlanStorage,
    RTStructureSetStorage,
)

from client.manifest import Collection, Item, Manifest, Outcome, Role
from client.verify import Folder, Found, charset_problem, identity_problems, reference_problems

PATIENT = "PAT-001"
STUDY = "1.2.826.0.1.3680043.8.498.7"
CT_SERIES, RT_SERIES = f"{STUDY}.1", f"{STUDY}.2"
CT_UID = f"{CT_SERIES}.1"
PLAN_UID, SS_UID = f"{RT_SERIES}.1", f"{RT_SERIES}.2"
PIXELS = np.arange(16 * 16, dtype=np.uint16).tobytes()  # 512 bytes


def _dataset(sop_class: str, sop_uid: str, series: str, *, study: str = STUDY,
             patient: str = PATIENT) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = UID(sop_class), UID(sop_uid)
    ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = patient, study, series
    return ds


def _ct(sop_uid: str = CT_UID, **where: str) -> Dataset:
    ds = _dataset(CTImageStorage, sop_uid, where.pop("series", CT_SERIES), **where)
    ds.Modality = "CT"
    ds.Rows, ds.Columns = 16, 16
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = PIXELS
    return ds


def _write(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def _pixel_value_offset(data: bytes) -> int:
    """Where the pixel bytes start: the image is the last element, its value last."""
    assert data.endswith(PIXELS)
    return len(data) - len(PIXELS)


# --- Folder.read -----------------------------------------------------------------------------

def test_read_sorts_good_bad_and_ignored_files(tmp_path: Path) -> None:
    """A good CT is found by its own header; truncated, non-DICOM and empty files are
    'bad' with a reason; temp files of atomic writes and other suffixes are skipped."""
    good = _write(_ct(), tmp_path / "CT.good.dcm")
    data = good.read_bytes()
    cut = _pixel_value_offset(data) + len(PIXELS) // 2
    truncated = tmp_path / "CT.truncated.dcm"
    truncated.write_bytes(data[:cut])
    not_dicom = tmp_path / "notes.dcm"
    not_dicom.write_text("this is not a DICOM file\n" * 20, encoding="utf-8")
    empty = tmp_path / "empty"  # no suffix: read too (File Daemons name files by UID)
    empty.write_bytes(b"")
    (tmp_path / ".x.dcm.abc.tmp").write_bytes(data[:cut])  # a write in progress
    (tmp_path / "report.txt").write_text("ignored", encoding="utf-8")
    sub = tmp_path / "PAT-001"
    sub.mkdir()
    nested = _write(_ct(f"{CT_SERIES}.2"), sub / "CT.nested.dcm")

    found, bad = Folder(tmp_path).read()

    assert found == {
        CT_UID: Found(good, CT_UID, CT_SERIES, STUDY, PATIENT),
        f"{CT_SERIES}.2": Found(nested, f"{CT_SERIES}.2", CT_SERIES, STUDY, PATIENT),
    }
    assert set(bad) == {truncated, not_dicom, empty}
    assert bad[truncated] == f"pixel data has {len(PIXELS) // 2} of {len(PIXELS)} bytes"
    assert bad[not_dicom].startswith("unreadable: ")
    assert bad[empty].startswith("unreadable: ")


def test_missing_folder_reads_as_empty(tmp_path: Path) -> None:
    """Before the File Daemon made the patient's folder: nothing yet, not an error."""
    folder = Folder(tmp_path / "not-yet")
    assert folder.read() == ({}, {})
    assert folder.signature() == (0, 0)


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5, 0.99])
def test_any_cut_inside_the_pixel_values_is_bad(tmp_path: Path, fraction: float) -> None:
    """A file still being written (or cut by a broken association) is never 'found'."""
    data = _write(_ct(), tmp_path / "full.dcm").read_bytes()
    (tmp_path / "full.dcm").unlink()
    cut = _pixel_value_offset(data) + int(len(PIXELS) * fraction)
    (tmp_path / "part.dcm").write_bytes(data[:cut])
    found, bad = Folder(tmp_path).read()
    assert found == {}
    assert bad[tmp_path / "part.dcm"].startswith("pixel data has ")


@pytest.mark.parametrize("into_length", [1, 2, 3])
def test_cut_inside_the_pixel_data_header_is_bad_not_a_crash(tmp_path: Path,
                                                             into_length: int) -> None:
    """Explicit VR OW header: tag(4) VR(2) reserved(2) length(4); a prefix ending inside
    the length field is what a reader sees while the writer is there."""
    data = _write(_ct(), tmp_path / "full.dcm").read_bytes()
    (tmp_path / "full.dcm").unlink()
    cut = _pixel_value_offset(data) - 4 + into_length
    (tmp_path / "part.dcm").write_bytes(data[:cut])
    found, bad = Folder(tmp_path).read()
    assert found == {}
    assert tmp_path / "part.dcm" in bad


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on UIDs cut mid-value
def test_no_prefix_of_a_good_file_makes_read_raise(tmp_path: Path) -> None:
    """Whatever byte a writer has reached, read classifies the file instead of raising."""
    data = _write(_ct(), tmp_path / "full.dcm").read_bytes()
    (tmp_path / "full.dcm").unlink()
    part = tmp_path / "part.dcm"
    crashes: list[tuple[int, str]] = []
    for n in range(len(data)):
        part.write_bytes(data[:n])
        try:
            Folder(tmp_path).read()
        except Exception as exc:
            crashes.append((n, type(exc).__name__))
    assert crashes == []


def test_image_cut_before_its_pixel_data_is_bad(tmp_path: Path) -> None:
    """Rows/Columns say there is an image; a file ending before it did not arrive whole."""
    data = _write(_ct(), tmp_path / "full.dcm").read_bytes()
    (tmp_path / "full.dcm").unlink()
    (tmp_path / "part.dcm").write_bytes(data[:_pixel_value_offset(data) - 12])
    found, _ = Folder(tmp_path).read()
    assert found == {}


def test_a_file_rewritten_whole_is_read_again(tmp_path: Path) -> None:
    """Reads are cached by name, size and mtime: a file that was partial then completed
    must not stay 'bad' from the first look."""
    data = _write(_ct(), tmp_path / "full.dcm").read_bytes()
    (tmp_path / "full.dcm").unlink()
    path = tmp_path / "CT.dcm"
    path.write_bytes(data[:-100])
    folder = Folder(tmp_path)
    assert path in folder.read()[1]
    path.write_bytes(data)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    found, bad = folder.read()
    assert bad == {}
    assert set(found) == {CT_UID}


def test_non_image_objects_need_no_pixel_data(tmp_path: Path) -> None:
    """An RT Plan has no image: it is whole without Pixel Data."""
    _write(_dataset(RTPlanStorage, PLAN_UID, RT_SERIES), tmp_path / "RP.dcm")
    found, bad = Folder(tmp_path).read()
    assert set(found) == {PLAN_UID}
    assert bad == {}


# --- Folder.settle ---------------------------------------------------------------------------

def test_settle_returns_at_once_when_everything_is_there(tmp_path: Path) -> None:
    _write(_ct(), tmp_path / "CT.dcm")
    start = time.monotonic()
    Folder(tmp_path).settle({CT_UID}, quiet=5.0, limit=10.0)
    assert time.monotonic() - start < 1.0


def test_settle_returns_after_quiet_when_the_folder_stops_changing(tmp_path: Path) -> None:
    """An object that never comes: wait about ``quiet`` seconds, not the whole limit."""
    _write(_ct(), tmp_path / "CT.dcm")
    start = time.monotonic()
    Folder(tmp_path).settle({CT_UID, "1.2.3.999"}, quiet=0.4, limit=10.0)
    elapsed = time.monotonic() - start
    assert 0.4 <= elapsed < 2.0


def test_settle_waits_for_an_object_still_arriving(tmp_path: Path) -> None:
    """The folder keeps changing: settle neither stops at ``quiet`` nor misses the end."""
    datasets = [_ct(f"{CT_SERIES}.{n}") for n in range(4)]
    _write(datasets[0], tmp_path / "CT.0.dcm")

    def arrive() -> None:  # as a File Daemon does: a hidden temp file, then a rename
        for n, ds in enumerate(datasets[1:], 1):
            time.sleep(0.2)
            tmp = _write(ds, tmp_path / f".CT.{n}.dcm.0a1b.tmp")
            os.replace(tmp, tmp_path / f"CT.{n}.dcm")

    writer = threading.Thread(target=arrive)
    start = time.monotonic()
    writer.start()
    try:
        Folder(tmp_path).settle({str(ds.SOPInstanceUID) for ds in datasets},
                                quiet=0.35, limit=10.0)
        elapsed = time.monotonic() - start
        arrived = len(Folder(tmp_path).read()[0])
    finally:
        writer.join()
    assert arrived == 4
    assert elapsed < 2.0


def test_settle_gives_up_at_the_limit(tmp_path: Path) -> None:
    """A folder that keeps changing without the expected object: stop at ``limit``."""
    stop = threading.Event()

    def churn() -> None:
        n = 0
        while not stop.is_set():
            (tmp_path / f"f{n}.dcm").write_bytes(b"x" * (n + 1))
            n += 1
            time.sleep(0.05)

    writer = threading.Thread(target=churn)
    writer.start()
    start = time.monotonic()
    try:
        Folder(tmp_path).settle({"1.2.3.999"}, quiet=0.3, limit=1.0)
    finally:
        stop.set()
        writer.join()
    assert 1.0 <= time.monotonic() - start < 2.0


# --- identity and references ------------------------------------------------------------------

def _found(path: str, uid: str, series: str = CT_SERIES, study: str = STUDY,
           patient: str = PATIENT) -> Found:
    return Found(Path(path), uid, series, study, patient)


def test_identity_problems_flag_series_study_and_patient() -> None:
    item = Item(Role.IMAGES, STUDY, CT_SERIES, ("1.1", "1.2", "1.3", "1.4", "1.5"))
    found = {
        "1.1": _found("/a/ok.dcm", "1.1"),
        "1.2": _found("/a/series.dcm", "1.2", series="9.9"),
        "1.3": _found("/a/study.dcm", "1.3", study="8.8"),
        "1.4": _found("/a/patient.dcm", "1.4", patient="OTHER"),
        # 1.5 did not arrive: counted elsewhere, not an identity problem
    }
    problems = identity_problems(item, found, PATIENT)
    assert set(problems) == {"1.2", "1.3", "1.4"}  # by UID: paths may hold anything
    assert problems["1.2"].startswith("/a/series.dcm (1.2) is in series 9.9 of study")
    assert f"not in series {CT_SERIES} of study {STUDY}" in problems["1.2"]
    assert problems["1.3"].startswith("/a/study.dcm (1.3) is in series")
    assert "of study 8.8" in problems["1.3"]
    assert problems["1.4"] == (f"/a/patient.dcm (1.4) belongs to patient 'OTHER', not "
                               f"'{PATIENT}': two objects share this SOP Instance UID")


def test_another_patients_object_is_named_as_such_before_its_series() -> None:
    """UIDs duplicated across patients: the object is in another series too, but the
    patient is what a researcher must hear about first."""
    item = Item(Role.IMAGES, STUDY, CT_SERIES, ("1.1",))
    found = {"1.1": _found("/a/x.dcm", "1.1", series="9.9", study="8.8", patient="OTHER")}
    assert "belongs to patient 'OTHER'" in identity_problems(item, found, PATIENT)["1.1"]


def test_identity_problems_none_when_all_match() -> None:
    item = Item(Role.PLAN, STUDY, CT_SERIES, ("1.1",))
    assert identity_problems(item, {"1.1": _found("/a/p.dcm", "1.1")}, PATIENT) == {}


def _plan_file(folder: Path, ss_uid: str) -> Path:
    plan = _dataset(RTPlanStorage, PLAN_UID, RT_SERIES)
    plan.Modality = "RTPLAN"
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = RTStructureSetStorage, ss_uid
    plan.ReferencedStructureSetSequence = [ref]
    return _write(plan, folder / "RP.dcm")


def _manifest(plan_outcome: Outcome = Outcome.ARRIVED) -> Manifest:
    plan = Item(Role.PLAN, STUDY, RT_SERIES, (PLAN_UID,), outcome=plan_outcome)
    ss = Item(Role.STRUCTURE_SET, STUDY, RT_SERIES, (SS_UID,), outcome=Outcome.FAILED)
    return Manifest(PATIENT, collections=(Collection(PLAN_UID, items=(plan, ss)),))


def test_reference_problems_flag_a_listed_structure_set_that_did_not_arrive(
        tmp_path: Path) -> None:
    _plan_file(tmp_path, SS_UID)
    found, _ = Folder(tmp_path).read()
    problems = reference_problems(_manifest(), found)
    assert problems == [f"plan {PLAN_UID} references 1 listed object(s) that did not arrive, "
                        f"e.g. {SS_UID}"]


def test_reference_problems_none_when_the_structure_set_arrived(tmp_path: Path) -> None:
    _plan_file(tmp_path, SS_UID)
    _write(_dataset(RTStructureSetStorage, SS_UID, RT_SERIES), tmp_path / "RS.dcm")
    found, _ = Folder(tmp_path).read()
    assert set(found) == {PLAN_UID, SS_UID}
    assert reference_problems(_manifest(), found) == []


def test_reference_problems_ignore_objects_the_manifest_does_not_list(tmp_path: Path) -> None:
    """A reference to an unlisted object is not this run's business (resolve warned)."""
    _plan_file(tmp_path, f"{RT_SERIES}.77")
    found, _ = Folder(tmp_path).read()
    assert reference_problems(_manifest(), found) == []


def test_reference_problems_skip_a_plan_not_arrived(tmp_path: Path) -> None:
    """Only objects verified as arrived are opened to check their references."""
    _plan_file(tmp_path, SS_UID)
    found, _ = Folder(tmp_path).read()
    assert reference_problems(_manifest(Outcome.INCOMPLETE), found) == []


# --- other encodings: the pixel check reads element headers, not pixels -------------------

def _implicit(ds: Dataset) -> Dataset:
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return ds


def test_implicit_vr_images_are_checked_too(tmp_path: Path) -> None:
    data = _write(_implicit(_ct()), tmp_path / "full.dcm").read_bytes()
    assert Folder(tmp_path).read()[0].keys() == {CT_UID}
    (tmp_path / "full.dcm").write_bytes(data[:-100])
    found, bad = Folder(tmp_path).read()
    assert found == {}
    assert bad[tmp_path / "full.dcm"] == "pixel data has 412 of 512 bytes"


def test_compressed_pixel_data_must_end_with_its_delimiter(tmp_path: Path) -> None:
    """Encapsulated pixel data has no length to compare: its sequence must be closed."""
    ds = _ct()
    ds.PixelData = encapsulate([b"\x00\x01" * 64])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = RLELossless
    data = _write(ds, tmp_path / "rle.dcm").read_bytes()
    assert Folder(tmp_path).read()[0].keys() == {CT_UID}
    (tmp_path / "rle.dcm").write_bytes(data[:-20])
    found, bad = Folder(tmp_path).read()
    assert found == {}
    assert bad[tmp_path / "rle.dcm"] == "compressed pixel data cut short"



def _element(group: int, element: int, value: bytes) -> bytes:
    """One Implicit VR Little Endian element, padded to an even length."""
    if len(value) % 2:
        value += b" "
    return struct.pack("<HHI", group, element, len(value)) + value


def _with_name(raw: bytes, charset: str | None) -> Dataset:
    """A header as received: its PatientName still raw bytes, as pydicom reads it."""
    data = (_element(0x0008, 0x0005, charset.encode()) if charset else b"") \
        + _element(0x0010, 0x0010, raw)
    return pydicom.filereader.read_dataset(io.BytesIO(data), is_implicit_VR=True,
                                           is_little_endian=True)

@pytest.mark.parametrize(("charset", "raw", "problem"), [
    (None, "Müller^Jo".encode() + b" ", "declares no Specific Character Set"),
    ("ISO_IR 100", "Müller^Jo".encode() + b" ", "looks like UTF-8"),
    ("ISO_IR 100", "Müller^Jo".encode("latin-1"), None),  # Latin-1, as declared
    ("ISO_IR 192", "Müller^Jo".encode() + b" ", None),
    (None, b"Smith^Jo", None),  # plain ASCII needs no declaration
])
def test_charset_problem_is_judged_from_the_raw_bytes(charset: str | None, raw: bytes,
                                                      problem: str | None) -> None:
    found = charset_problem(_with_name(raw, charset))
    assert (found is None) if problem is None else (problem in (found or ""))


def test_reference_problems_read_the_file_when_its_references_were_not_taken(
        tmp_path: Path) -> None:
    """A Found made elsewhere (no references taken at reading) is read again to check."""
    path = _plan_file(tmp_path, SS_UID)
    found = {PLAN_UID: Found(path, PLAN_UID, RT_SERIES, STUDY, PATIENT)}
    assert found[PLAN_UID].references is None
    assert reference_problems(_manifest(), found) == [
        f"plan {PLAN_UID} references 1 listed object(s) that did not arrive, e.g. {SS_UID}"]


def test_the_references_are_taken_when_a_file_is_read(tmp_path: Path) -> None:
    """Checking references after the moves then reads no file again."""
    path = _plan_file(tmp_path, SS_UID)
    found, _ = Folder(tmp_path).read()
    assert dict(found[PLAN_UID].references or ())[Role.PLAN] == (SS_UID,)
    path.unlink()  # the check must not need the file any more
    assert reference_problems(_manifest(), found) == [
        f"plan {PLAN_UID} references 1 listed object(s) that did not arrive, e.g. {SS_UID}"]
