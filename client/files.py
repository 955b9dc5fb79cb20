"""Where and how received objects land on disk: rtmove's own Storage SCP, and the emulators.

All write ``<out>/<patient id>/<modality>.<sop uid>.dcm``. Patient IDs come from
the network or from other people's archives, so every path component is made safe
first: a hostile ID must never escape ``out``, and two different IDs must never
share a folder (which would silently mix two patients' data).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import secrets
import shutil
import stat
import unicodedata
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID
from pynetdicom.dsutils import encode_file_meta

from . import file_meta
from .part10_head import META_HEAD, meta_syntax
from .uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

try:  # POSIX: a writer holds a lock on its temporary file, so a cleaner can tell it is live
    import fcntl
except ImportError:  # Windows: an open file cannot be removed, which protects it as well
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

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
# Names the rules below leave as they are: no bad character, no trailing dot, short.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,118}[A-Za-z0-9_-]|[A-Za-z0-9_-]")
# Temporary files of atomic writes: hidden, and never named like a DICOM file.
TEMP_PREFIX, TEMP_SUFFIX = ".", ".tmp"
_TEMP_TOKEN_BYTES = 6
# Exactly the names write_atomic gives: ".<final name>.<12 hex digits>.tmp".
_TEMP_RE = re.compile(rf"^{re.escape(TEMP_PREFIX)}.+\.[0-9a-f]{{{2 * _TEMP_TOKEN_BYTES}}}"
                      rf"{re.escape(TEMP_SUFFIX)}$")
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
    if _PLAIN_NAME.fullmatch(original) and not _is_reserved(original) \
            and not _MANGLED_RE.search(original):
        return original  # the usual UID or ID: nothing below would change it
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


class UnsafePathError(OSError):
    """A write that would leave its output folder (through a symbolic link or ``..``)."""


# Windows junctions and other reparse points redirect a folder as a symbolic link does.
_REPARSE_POINT = getattr(stat, "FILE_ATTRIBUTE_REPARSE_POINT", 0x400)


def check_inside(root: Path, path: Path) -> None:
    """Raise :class:`UnsafePathError` unless writing ``path`` stays inside ``root``.

    ``root`` itself may be a link (a site may keep its output folder on another disk);
    below it, nothing on the way to ``path``, ``path`` included, may be a symbolic link
    or junction. Such a link was put there by someone who can write to the output
    folder: following it would write wherever it points, and deleting it could destroy
    a site's own arrangement, so the write is refused, for a person to look at. (A
    local attacker racing this check against the write is out of scope: they can write
    to the output folder anyway.)
    """
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        raise UnsafePathError(errno.EXDEV, f"{path} is not inside the output folder "
                                           f"{root}") from None
    if not parts or any(part in (".", "..") for part in parts):
        raise UnsafePathError(errno.EINVAL, f"{path} does not name a file inside the output "
                                            f"folder {root}")
    current = root
    for part in parts:
        current = current / part
        try:
            info = os.lstat(current)
        except FileNotFoundError:
            return  # the rest is created by the write, as real folders
        if stat.S_ISLNK(info.st_mode) \
                or getattr(info, "st_file_attributes", 0) & _REPARSE_POINT:
            raise UnsafePathError(errno.ELOOP, f"symbolic link in the output folder: {current} "
                                               f"-> {os.readlink(current)}; nothing is written "
                                               "through a link there: remove it, or move the "
                                               "data it points to into the folder")


def write_atomic(path: Path, write: Callable[[BinaryIO], object], *, sync: bool = True,
                 ) -> None:
    """Create or replace ``path`` so that readers see the old file or the whole new one.

    Readers (and a File Daemon's peers polling the folder) must never see a
    half-written file, so the bytes go to a temporary file in the same folder,
    and then are atomically renamed over ``path``; a crash leaves at most a hidden
    ``.*.tmp`` file, which :func:`remove_stale_temp_files` removes at the writer's next
    start. Missing folders are created. ``sync`` fsyncs the file and its folder too
    (4 ms a file on this project's machines): the rename alone survives the writer's
    death, only the fsyncs survive a power cut or an operating system crash.
    """
    staged = StagedFile(path.parent, path.name, sync=sync)
    try:
        write(staged.file)
    except BaseException:
        staged.discard()
        raise
    staged.commit(path)


class StagedFile:
    """:func:`write_atomic`'s protocol in steps, for bytes that come in pieces.

    A File Daemon writes each object's fragments as they arrive, while the sender is
    still sending, and names the file only once the whole object is there: the hidden,
    locked temporary file is made in ``folder`` (its output folder), and :meth:`commit`
    renames it to its path, in that folder or below it (one disk: a rename).
    """

    def __init__(self, folder: Path, name: str, *, sync: bool = True) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.sync = sync
        self.tmp = folder / f"{TEMP_PREFIX}{name}.{secrets.token_hex(_TEMP_TOKEN_BYTES)}" \
                            f"{TEMP_SUFFIX}"
        # os.open with 0o666 honours the umask, unlike mkstemp's private 0o600.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        fd = os.open(self.tmp, flags, 0o666)
        if fcntl is not None:  # released when the file closes or the process dies
            with contextlib.suppress(OSError):  # best effort: not every file system locks
                fcntl.flock(fd, fcntl.LOCK_EX)
        self.file: BinaryIO = os.fdopen(fd, "wb")

    def commit(self, path: Path) -> None:
        """Make the bytes written ``path`` (its folder created if missing)."""
        try:
            self.file.flush()
            if self.sync:
                os.fsync(self.file.fileno())
            self.file.close()
            if path.parent != self.tmp.parent:
                path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.tmp, path)
        except BaseException:
            self.discard()
            raise
        if self.sync:
            _fsync_folder(path.parent)

    def discard(self) -> None:
        """Leave nothing behind (what cannot be removed is a stale temporary file)."""
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(OSError):
            self.tmp.unlink()


def move_atomic(source: Path, target: Path) -> None:
    """Move a file so that ``target`` is the old file or the whole new one, never a part:
    a rename on one disk; across disks (the system's temporary folder is often another),
    a copy by :func:`write_atomic`, then the source removed. A plain copy would leave a
    cut file under its final name when the disk fills up."""
    try:
        os.replace(source, target)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    with source.open("rb") as fh:
        write_atomic(target, lambda out: shutil.copyfileobj(fh, out))
    source.unlink()


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is one :func:`write_atomic` gives its temporary files."""
    return _TEMP_RE.match(name) is not None


def remove_stale_temp_files(root: Path, logger: logging.Logger | None = None) -> list[Path]:
    """Remove the temporary files that writers killed mid-write (SIGKILL, power loss)
    left under ``root``, so that the folder holds whole files only; return them.

    Called when a writer starts on its output folder (the File Daemon, rtmove's receiver).
    Only files named as :func:`write_atomic` names them are touched, and none that a live
    writer still holds (its lock, on POSIX): another process may share the folder.
    Symbolic links are neither followed nor removed. Each removal is logged at INFO.
    """
    logger = logger or log
    removed: list[Path] = []
    for folder, _dirs, names in os.walk(root):
        for name in names:
            if not is_temp_name(name):
                continue
            path = Path(folder) / name
            try:
                if path.is_symlink() or not path.is_file() or _in_use(path):
                    continue
                size = path.stat().st_size
                path.unlink()
            except OSError as exc:  # gone meanwhile, or not ours to remove
                logger.debug("left %s in place: %s", path, exc.strerror or exc)
                continue
            logger.info("removed %s (%d bytes): the unfinished write of a process that "
                        "stopped before renaming it", path, size)
            removed.append(path)
    return removed


def _in_use(path: Path) -> bool:
    """Whether a live writer holds ``path``'s lock (never true without ``fcntl``).

    A shared lock: it conflicts with the writer's exclusive one and, unlike an exclusive
    one, needs no write access where flock is emulated by fcntl locks (NFS)."""
    if fcntl is None:
        return False
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


# Below this much free space, writes that failed were most likely refused for want of it.
LOW_SPACE = 64 * 1024 * 1024


def full_disk(folder: Path, need: int = 0) -> tuple[int, int] | None:
    """``(free, total)`` bytes of the disk holding ``folder`` when it is (nearly) full: less
    free than ``need`` or than :data:`LOW_SPACE`; None when there is room or no telling.

    A C-MOVE's failed sub-operations do not say why they failed (the destination's
    0xA700 stays between the archive and the destination), so where the destination's
    folder can be seen, its free space is the evidence.
    """
    where = folder
    while not where.exists() and where != where.parent:
        where = where.parent  # nothing arrived yet: the disk is the nearest existing folder's
    try:
        usage = shutil.disk_usage(where)
    except OSError:
        return None
    return (usage.free, usage.total) if usage.free < max(need, LOW_SPACE) else None


def size_text(size: int) -> str:
    """``1.4 MB``: a size as a site engineer reads it (decimal units, as ``df -H``)."""
    value = float(size)
    for unit in ("bytes", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


class Received(StrEnum):
    """What became of a received object."""

    WRITTEN = "written"
    IDENTICAL = "identical"  # a duplicate with the same bytes: the file is left alone
    REPLACED = "replaced"  # a duplicate with other bytes: the new one wins


def write_received(path: Path, body: bytes | bytearray, sop_class: str, sop_uid: str,
                   transfer_syntax: str, source_ae: str, root: Path | None = None, *,
                   sync: bool = True) -> Received:
    """Store a received dataset as Part 10, its bytes and transfer syntax untouched.

    The daemons never re-encode what they receive: the file is what the sender
    sent, behind a File Meta header naming this implementation and the sender.
    With ``root`` (the output folder), :func:`check_inside` must pass first.
    """
    if root is not None:
        check_inside(root, path)
    outcome = arrival(path, body)
    if outcome is Received.IDENTICAL:
        return outcome
    header = part10_header(sop_class, sop_uid, transfer_syntax, source_ae)

    def write(fh: BinaryIO) -> None:
        fh.write(header)
        fh.write(body)

    write_atomic(path, write, sync=sync)
    return outcome


def arrival(path: Path, body: bytes | bytearray) -> Received:
    """What writing ``body`` as ``path`` would be: the same bytes are there already
    (IDENTICAL: leave the file alone), other bytes (REPLACED), or nothing (WRITTEN)."""
    if not path.exists():
        return Received.WRITTEN
    try:
        if part10_body(path.read_bytes()) == body:
            return Received.IDENTICAL
    except ValueError:
        pass  # not a Part 10 file we can compare: replace it
    return Received.REPLACED


def part10_header(sop_class: str, sop_uid: str, transfer_syntax: str, source_ae: str,
                  ) -> bytes:
    """The preamble and File Meta group the daemons and rtmove write before a data set."""
    return file_meta.header(sop_class, sop_uid, transfer_syntax, source_ae) \
        or _pydicom_header(sop_class, sop_uid, transfer_syntax, source_ae)


def _pydicom_header(sop_class: str, sop_uid: str, transfer_syntax: str, source_ae: str,
                    ) -> bytes:
    """The Part 10 header of values :func:`file_meta.header` leaves to pydicom."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    if source_ae:
        meta.SourceApplicationEntityTitle = source_ae
    return file_meta.PREAMBLE + encode_file_meta(meta)


def part10_body(data: bytes) -> bytes:
    """The dataset bytes of a Part 10 file: everything after the File Meta group."""
    return data[part10_body_offset(data):]


def part10_body_offset(data: bytes) -> int:
    """Where a Part 10 file's data set starts: after its File Meta group."""
    if data[128:132] != b"DICM" or data[132:136] != b"\x02\x00\x00\x00":
        raise ValueError("not a DICOM Part 10 file starting with a File Meta group length")
    return 144 + int.from_bytes(data[140:144], "little")


def part10_transfer_syntax(path: Path) -> str | None:
    """The Transfer Syntax UID in ``path``'s File Meta group, read from the bytes when
    the group is plain (:func:`client.part10_head.meta_syntax`); None otherwise
    (pydicom's reader then reads it, and says what is wrong).

    A DB Daemon planning a 200-slice move looked up each file's syntax with pydicom's
    ``read_file_meta_info``: 63 µs a file against 12 µs here.
    """
    with path.open("rb") as fh:
        head = fh.read(META_HEAD)
        if len(head) < META_HEAD or head[128:132] != b"DICM":
            return None
        head += fh.read(int.from_bytes(head[140:144], "little"))
    meta = meta_syntax(head)
    return None if meta is None else meta[0]


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX only; Windows cannot open folders)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
