"""The C-MOVE fast path: PDU framing, and when stored bytes are sent as they are.

Everything the fast path sends is also checked end to end by the interop tests (moves
compared byte for byte with the generator's files, character sets re-encoded); these
pin the rules themselves.
"""

from __future__ import annotations

import dataclasses
import struct
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from daemons import make_site
from hypothesis import given
from hypothesis import strategies as st

from client.site import Quirks, TrustedAE
from emulators.archive import Archive
from emulators.bulk_send import frame
from emulators.db_daemon import DBDaemon
from emulators.faults.data import DataInjector
from emulators.files import write_patient
from emulators.synthetic import SyntheticConfig, make_recipe

CONFIG = SyntheticConfig(seed=1, slices=3, rows=16, columns=16)


def _pdus(stream: bytes) -> list[tuple[int, int, int, bytes]]:
    """(PDU length, context ID, control header, data) of each P-DATA-TF PDU."""
    out, at = [], 0
    while at < len(stream):
        kind, _, length = struct.unpack(">BBI", stream[at:at + 6])
        assert kind == 0x04
        item, context, control = struct.unpack(">IBB", stream[at + 6:at + 12])
        assert item == length - 4  # one PDV per PDU
        out.append((length, context, control, stream[at + 12:at + 6 + length]))
        at += 6 + length
    return out


@given(command=st.binary(min_size=1, max_size=300), data=st.binary(max_size=5000),
       max_pdu=st.sampled_from([0, 7, 64, 1000, 16384]), context=st.integers(1, 255))
def test_frames_respect_the_maximum_and_reassemble(command: bytes, data: bytes, max_pdu: int,
                                                   context: int) -> None:
    pdus = _pdus(frame(context, command, data, max_pdu))
    assert all(length <= max_pdu for length, *_ in pdus) or not max_pdu
    assert {c for _, c, _, _ in pdus} == {context}
    commands = [p for p in pdus if p[2] & 0x01]
    datasets = [p for p in pdus if not p[2] & 0x01]
    assert b"".join(p[3] for p in commands) == command
    assert b"".join(p[3] for p in datasets) == data
    # PS3.8 E.2: only the last fragment of each part has the "last" bit
    assert [p[2] & 0x02 for p in commands] == [0] * (len(commands) - 1) + [0x02]
    if datasets:
        assert [p[2] & 0x02 for p in datasets] == [0] * (len(datasets) - 1) + [0x02]
    assert pdus.index(commands[-1]) == len(commands) - 1  # command fragments come first


@pytest.fixture(name="served")
def _served(tmp_path: Path) -> tuple[DBDaemon, list[Path]]:
    recipe = make_recipe(CONFIG, 0)
    files = write_patient(recipe, tmp_path / "files")
    archive, _ = Archive.from_folder(tmp_path / "files")
    daemon = DBDaemon(make_site(tmp_path), archive)
    return daemon, files


def _entry(charset: str) -> TrustedAE:
    return TrustedAE("DEST", "127.0.0.1", 104, export_charset=charset)


def _ct(files: list[Path]) -> tuple[str, Path]:
    path = next(p for p in files if p.name.startswith("CT."))
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID), path


def test_a_file_in_the_destination_charset_goes_as_stored(
        served: tuple[DBDaemon, list[Path]]) -> None:
    daemon, files = served
    uid, path = _ct(files)
    charset = str(pydicom.dcmread(path).SpecificCharacterSet)
    encoded = daemon.export_encoded(uid, _entry(charset))
    assert encoded is not None
    raw = path.read_bytes()
    assert raw.endswith(encoded.data) and encoded.sop_uid == uid


def test_another_charset_re_encodes_the_text_and_keeps_the_pixels(
        served: tuple[DBDaemon, list[Path]]) -> None:
    daemon, files = served
    uid, path = _ct(files)
    encoded = daemon.export_encoded(uid, _entry("ISO_IR 192"))
    slow = daemon.export(uid, _entry("ISO_IR 192"))
    assert encoded is not None
    meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
    fast = pydicom.dcmread(BytesIO(encoded.data), force=True)
    fast.file_meta = meta
    assert fast.SpecificCharacterSet == "ISO_IR 192"
    assert fast.PixelData == slow.PixelData
    assert str(fast.PatientName) == str(slow.PatientName)
    for ds in (fast, slow):
        del ds.PixelData
    assert fast == slow


def test_no_fast_path_for_a_faulted_patient_a_refusable_plan_or_a_cut_file(
        served: tuple[DBDaemon, list[Path]], tmp_path: Path) -> None:
    daemon, files = served
    uid, path = _ct(files)
    entry = _entry("ISO_IR 192")
    patient_id = str(pydicom.dcmread(path, stop_before_pixels=True).PatientID)
    daemon.data_faults = DataInjector(patient_id)  # a data fault touches this patient
    assert daemon.export_encoded(uid, entry) is None
    daemon.data_faults = DataInjector()
    plan = next(p for p in files if p.name.startswith("RTPLAN."))
    plan_uid = str(pydicom.dcmread(plan, stop_before_pixels=True).SOPInstanceUID)
    daemon.quirks = dataclasses.replace(Quirks(), refuse_plans_without_beams=True)
    assert daemon.export_encoded(plan_uid, entry) is None
    path.write_bytes(path.read_bytes()[:-100])  # pixel data cut short
    assert daemon.export_encoded(uid, entry) is None
