"""Where and how received objects land on disk: rtmove's own Storage SCP, and the emulators.

All write ``<out>/<patient id>/<modality>.<sop uid>.dcm``. Patient IDs come from
the network or from other people's archives, so every path component is made safe
first: a hostile ID must never escape ``out``, and two different IDs must never
share a folder (which would silently mix two patients' data).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import unicodedata
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID
from pynetdicom.dsutils import encode_file_meta

from .uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

# Windows refuses these as file or folder names, with or without an extension
# (the superscript digits are reserved too).
_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{port}{n}" for port in ("COM", "LPT") for n in "123456789¹²³"}
)
# Characters that are path separators or illegal on Windows, besides control chars.
_BAD_CHARS = frozenset('/\\<>:"|?*')
# The suffix a changed name gets. Unchanged names may not look like one, else the
# changed "a/b" (-> "a_b_<hash>") and the literal ID "a_b_<hash>" would share a folder.
_HASH_CHARS = 12
_MANGLED_RE = re.compile(rf"_[0-9a-f]{{{_HASH_CHARS}}}$")
# Temporary files of atomic writes: hidden, and never named like a DICOM file.
TEMP_PREFIX, TEMP_SUFFIX = ".", ".tmp"
_PREAMBLE = b"\x00" * 128 + b"DICM"
# Keeps `<name>_<hash>` well under the 255-byte limit of common file systems.
_MAX_NAME_BYTES = 120


def _digest(original: str) -> str:
    data = original.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()[:_HASH_CHARS]


def _is_bad_char(ch: str) -> bool:
    # Cc: control characters (NUL, newline, DEL, C1); Zl/Zp: Unicode line breaks,
    # which break listings as newlines do; Cs: lone surrogates, which no file system stores.
    return ch in _BAD_CHARS or unicodedata.category(ch) in ("Cc", "Zl", "Zp", "Cs")


def _is_reserved(name: str) -> bool:
    return name.split(".", 1)[0].rstrip(" ").upper() in _RESERVED


def safe_name(original: str) -> str:
    """A single, portable path component for ``original``; injective and deterministic.

    A name that needs no change is returned as is, so ordinary patient IDs stay
    readable; anything else gets its bad characters replaced by ``_`` and the
    hash of the original appended, which keeps distinct IDs in distinct folders.
    """
    if original == "":
        return f"_empty_{_digest(original)}"
    name = "".join("_" if _is_bad_char(ch) else ch for ch in original)
    # Windows drops trailing dots and spaces ("a." is "a"); this also covers "." and "..".
    stripped = name.rstrip(". ")
    name = stripped + "_" * (len(name) - len(stripped))
    if _is_reserved(name):
        name = "_" + name
    encoded = name.encode("utf-8")
    if len(encoded) > _MAX_NAME_BYTES:
        name = encoded[:_MAX_NAME_BYTES].decode("utf-8", "ignore")
    if name == original and not _MANGLED_RE.search(name):
        return name
    return f"{name}_{_digest(original)}"


def archive_path(out: Path, patient_id: str, modality: str, sop_uid: str) -> Path:
    """``<out>/<patient id>/<modality>.<sop uid>.dcm``, every component made safe.

    The File Daemon takes all three from received datasets, so none is trusted.
    """
    return out / safe_name(patient_id) / f"{safe_name(modality)}.{safe_name(sop_uid)}.dcm"


def write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Create or replace ``path`` so that readers see the old file or the whole new one.

    Readers (and a File Daemon's peers polling the folder) must never see a
    half-written file, so the bytes go to a temporary file in the same folder,
    are fsynced, and then atomically renamed over ``path``; a crash leaves at
    most a hidden ``.*.tmp`` file. Missing folders are created.
    """
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{TEMP_PREFIX}{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}"
    # os.open with 0o666 honours the umask, unlike mkstemp's private 0o600.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_folder(folder)


class Received(StrEnum):
    """What became of a received object."""

    WRITTEN = "written"
    IDENTICAL = "identical"  # a duplicate with the same bytes: the file is left alone
    REPLACED = "replaced"  # a duplicate with other bytes: the new one wins


def write_received(path: Path, body: bytes, sop_class: str, sop_uid: str,
                   transfer_syntax: str, source_ae: str) -> Received:
    """Store a received dataset as Part 10, its bytes and transfer syntax untouched.

    The daemons never re-encode what they receive: the file is what the sender
    sent, behind a File Meta header naming this implementation and the sender.
    """
    outcome = Received.WRITTEN
    if path.exists():
        try:
            if part10_body(path.read_bytes()) == body:
                return Received.IDENTICAL
        except ValueError:
            pass  # not a Part 10 file we can compare: replace it
        outcome = Received.REPLACED
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    if source_ae:
        meta.SourceApplicationEntityTitle = source_ae
    header = _PREAMBLE + encode_file_meta(meta)

    def write(fh: BinaryIO) -> None:
        fh.write(header)
        fh.write(body)

    write_atomic(path, write)
    return outcome


def part10_body(data: bytes) -> bytes:
    """The dataset bytes of a Part 10 file: everything after the File Meta group."""
    if data[128:132] != b"DICM" or data[132:136] != b"\x02\x00\x00\x00":
        raise ValueError("not a DICOM Part 10 file starting with a File Meta group length")
    meta_length = int.from_bytes(data[140:144], "little")
    return data[144 + meta_length:]


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX only; Windows cannot open folders)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
