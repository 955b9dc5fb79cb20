"""Did the objects really arrive? A C-MOVE's success status is not proof.

Real daemons have reported success after sending part of a series, and a File Daemon
may still be writing when the move returns; so a folder is read until it settles,
each file is read whole, and the references between what arrived are checked.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from .files import TEMP_PREFIX
from .frame_references import frame_references
from .manifest import Item, Manifest, Outcome, Role
from .part10_head import NeedMore, Part10Head, pixel_data_problem, read_head
from .raw_elements import dictionary_vr


@dataclass(frozen=True)
class Found:
    """One readable file: what it is, by its own header."""

    path: Path
    sop_uid: str
    series_uid: str
    study_uid: str
    patient_id: str
    charset_problem: str | None = None  # text that will show wrongly, and why
    # What the file references, by the role it would play (None: not taken at reading,
    # :func:`reference_problems` reads the file again).
    references: tuple[tuple[Role, tuple[str, ...]], ...] | None = field(default=None,
                                                                        compare=False)


# Text elements whose bytes depend on the Specific Character Set.
_TEXT_VRS = frozenset({"PN", "LO", "SH", "ST", "LT", "UT", "UC"})
_LATIN1 = frozenset({"ISO_IR 100", "ISO 2022 IR 100"})


def charset_problem(ds: Dataset) -> str | None:
    """Why the names in ``ds`` will show wrongly, judged from the raw bytes of its
    top-level text: non-ASCII without (0008,0005), or UTF-8 declared as Latin-1."""
    declared = ds.get("SpecificCharacterSet")
    terms = [str(t) for t in declared] if isinstance(declared, list | tuple) \
        else [str(declared or "")]
    return _text_problem(terms, ((elem.tag, _vr(elem), raw) for elem in ds.elements()
                                 if isinstance(raw := getattr(elem, "value", None), bytes)))


def _text_problem(terms: list[str], texts: Iterable[tuple[int, str | None, bytes]],
                  ) -> str | None:
    """:func:`charset_problem` from the declared terms and the top-level raw values,
    as (tag, VR, bytes) in tag order."""
    for tag, vr, raw in texts:
        if raw.isascii() or vr not in _TEXT_VRS:
            continue
        name = pydicom.datadict.keyword_for_tag(tag) or str(Tag(tag))
        if not any(terms):
            return (f"{name} holds non-ASCII text but the object declares no Specific "
                    "Character Set (0008,0005)")
        if terms[-1] in _LATIN1 and _is_utf8(raw):
            return (f"{name} looks like UTF-8 text but the object declares {terms[-1]} "
                    "(Latin-1)")
    return None


def _vr(elem: object) -> str | None:
    """An element's VR; Implicit VR files leave it to the data dictionary."""
    vr = getattr(elem, "VR", None)
    return str(vr) if vr is not None else dictionary_vr(int(getattr(elem, "tag", 0)))


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _expected_pixel_bytes(ds: Dataset) -> int:
    rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    bits, samples = int(ds.get("BitsAllocated") or 0), int(ds.get("SamplesPerPixel") or 1)
    frames = int(ds.get("NumberOfFrames") or 1)
    return rows * columns * samples * frames * bits // 8


def pixel_problem(ds: Dataset, fh: BinaryIO, size: int) -> str | None:
    """Whether the pixel data that follows the header (``fh`` is at it) is all there;
    None if ``ds`` is not an image (plan, structure set): nothing more to check."""
    if "Rows" not in ds or "Columns" not in ds:
        return None
    return pixel_data_problem(ds.file_meta.TransferSyntaxUID,
                              lambda: _expected_pixel_bytes(ds), fh, size)


class Folder:
    """A folder objects arrive in; files are read once each (by name, size and mtime)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._seen: dict[tuple[str, int, int], Found | str] = {}

    def _files(self) -> list[tuple[str, os.stat_result]]:
        """The candidate files' paths, as ``root.rglob("*")`` lists them (symlinked
        folders not entered), by ``os.scandir``: the folder is listed every 50 ms while
        objects arrive, and rglob's listing (Path objects, two ``stat`` calls a file) took
        1.1 ms for 123 files, this one 0.3."""
        out: list[tuple[str, os.stat_result]] = []
        if self.root.is_dir():
            _list(self.root, out)
        return out

    def signature(self) -> tuple[int, int]:
        files = self._files()
        return len(files), sum(st.st_size for _, st in files)

    def read(self) -> tuple[dict[str, Found], dict[Path, str]]:
        """Readable objects by SOP Instance UID, and the unreadable files with why."""
        found: dict[str, Found] = {}
        bad: dict[Path, str] = {}
        seen = self._seen
        for path, st in self._files():
            key = (path, st.st_size, st.st_mtime_ns)
            result = seen.get(key)
            if result is None:
                result = seen[key] = _read(Path(path))
            if isinstance(result, Found):
                found[result.sop_uid] = result
            else:
                bad[Path(path)] = result
        return found, bad

    def settle(self, expected: set[str], *, quiet: float = 1.0, limit: float = 60.0) -> None:
        """Wait until every expected object is there, or the folder stops changing."""
        deadline = time.monotonic() + limit
        last, since = self.signature(), time.monotonic()
        while time.monotonic() < deadline:
            if expected <= set(self.read()[0]):
                return
            time.sleep(0.1)
            now = self.signature()
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return


def _list(folder: str | Path, out: list[tuple[str, os.stat_result]]) -> None:
    """The files of ``folder``, then of its subfolders, depth first (as rglob)."""
    subfolders: list[str] = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                name = entry.name
                try:
                    if entry.is_dir() and not entry.is_symlink():
                        subfolders.append(entry.path)
                        continue
                    if name.startswith(TEMP_PREFIX) or name == "DICOMDIR" \
                            or os.path.splitext(name)[1].lower() not in (".dcm", "") \
                            or not entry.is_file():
                        continue
                    st = entry.stat()
                except OSError:
                    continue  # renamed or removed while we looked
                out.append((entry.path, st))
    except OSError:
        return  # removed while we looked
    for subfolder in subfolders:
        _list(subfolder, out)


def _read(path: Path) -> Found | str:
    try:
        with path.open("rb") as fh:
            plain = _read_plain(path, fh, os.fstat(fh.fileno()).st_size)
        if plain is not None:
            return plain
    except OSError as exc:
        return f"unreadable: {type(exc).__name__}: {exc}"
    return _read_with_pydicom(path)


# Where each role's references are: a file holding none of them references nothing.
_REFERENCE_SEQUENCES = frozenset({0x300C0060, 0x300C0002, 0x30060010})
_FIRST_READ = 16384  # bytes: a CT slice's head is 1-4 kB


def _read_plain(path: Path, fh: BinaryIO, size: int) -> Found | str | None:
    """:func:`_read`'s answer (what the file is, or what is wrong with it) from the
    raw head (:mod:`client.part10_head`), as pydicom's reading would give it; None when
    pydicom must read the file: anything not plain, non-ASCII text, references."""
    data = fh.read(_FIRST_READ)
    try:
        head = read_head(data, whole=len(data) >= size, unless=_REFERENCE_SEQUENCES)
    except NeedMore:
        data += fh.read()
        head = read_head(data, whole=True, unless=_REFERENCE_SEQUENCES)
    if head is None:
        return None
    sop_uid, series_uid = head.uid(0x00080018), head.uid(0x0020000E)
    study_uid, patient_id = head.uid(0x0020000D), head.text(0x00100020)
    charset = head.text(0x00080005)
    texts = _raw_texts(head)
    if not sop_uid or series_uid is None or study_uid is None or patient_id is None \
            or charset is None or texts is None:
        return None
    try:
        problem = head.pixel_problem(fh, size)
    except ValueError:  # pixel module values not plain
        return None
    return problem or Found(path, sop_uid, series_uid, study_uid, patient_id,
                            _text_problem([charset], texts), _NO_REFERENCES)


def _raw_texts(head: Part10Head) -> list[tuple[int, str | None, bytes]] | None:
    """The top-level values :func:`_text_problem` may judge (text VRs, not ASCII), in tag
    order; None at non-ASCII UN (pydicom may read it as its dictionary VR). Only text and
    UN values are looked at: a CT slice's other 60 elements cost 15 µs of its 80."""
    out: list[tuple[int, str | None, bytes]] = []
    for tag, element in head.elements.items():
        vr = element.vr.decode() if element.vr is not None else dictionary_vr(tag)
        if vr not in _TEXT_VRS and vr != "UN":
            continue
        value = head.raw(tag)
        if value is None or value.isascii():
            continue  # a sequence, or nothing to judge
        if vr == "UN":
            return None
        out.append((tag, vr, value))
    return sorted(out) if len(out) > 1 else out


def _read_with_pydicom(path: Path) -> Found | str:
    try:
        with path.open("rb") as fh:
            ds = pydicom.dcmread(fh, stop_before_pixels=True)
            problem = pixel_problem(ds, fh, os.fstat(fh.fileno()).st_size)
        if problem:
            return problem
        return Found(path, str(ds.SOPInstanceUID), str(ds.get("SeriesInstanceUID", "")),
                     str(ds.get("StudyInstanceUID", "")), str(ds.get("PatientID", "")),
                     charset_problem(ds), _all_references(ds))
    except Exception as exc:  # whatever a half-written or hostile file makes pydicom raise
        return f"unreadable: {type(exc).__name__}: {exc}"


def _all_references(ds: Dataset) -> tuple[tuple[Role, tuple[str, ...]], ...] | None:
    """The references taken from the dataset read anyway: checking them once the moves
    end then reads no file again (the structure set's contours took 3 ms to read twice).
    None if they cannot be taken: the check reads the file, and fails, as before."""
    try:
        return tuple((role, tuple(_references(ds, role))) for role in _REFERRING)
    except Exception:  # a malformed sequence: let reference_problems meet it
        return None


def identity_problems(item: Item, found: dict[str, Found], patient_id: str,
                      ) -> dict[str, str]:
    """Objects that arrived under the asked UID but are not what the manifest says:
    SOP Instance UID -> what is wrong."""
    out: dict[str, str] = {}
    for uid in item.sop_uids:
        f = found.get(uid)
        if f is None:
            continue
        if f.patient_id != patient_id:
            # The worst mix-up first: another patient's object under the asked UID (UIDs
            # duplicated across patients, and a daemon looking objects up by UID alone).
            out[uid] = (f"{f.path} ({uid}) belongs to patient {f.patient_id!r}, "
                        f"not {patient_id!r}: two objects share this SOP Instance UID")
        elif f.series_uid != item.series_uid or f.study_uid != item.study_uid:
            out[uid] = (f"{f.path} ({uid}) is in series {f.series_uid} of study "
                        f"{f.study_uid}, not in series {item.series_uid} of study "
                        f"{item.study_uid}")
    return out


def charset_warnings(manifest: Manifest, found: dict[str, Found]) -> list[str]:
    """One warning per kind of character set trouble among the manifest's arrived objects."""
    by_problem: dict[str, list[str]] = {}
    for item in manifest.items():
        for uid in item.sop_uids:
            f = found.get(uid)
            if f is not None and f.charset_problem:
                by_problem.setdefault(f.charset_problem, []).append(uid)
    return [f"{len(uids)} object(s) that arrived, e.g. {uids[0]}: {problem}; names will show "
            "wrongly. Set the character set the daemon exports to this destination "
            "(its trusted AE row), or correct the archive." for problem, uids in
            by_problem.items()]


def reference_problems(manifest: Manifest, found: dict[str, Found]) -> list[str]:
    """References among the objects that arrived that no longer hold (plan -> structure
    set -> images, dose -> plan), checked only toward objects the manifest lists."""
    out: list[str] = []
    for collection in manifest.collections:
        listed = {u for i in collection.items for u in i.sop_uids}
        for item in collection.items:
            if item.role is Role.IMAGES or item.outcome is not Outcome.ARRIVED:
                continue
            f = found.get(item.sop_uids[0]) if item.sop_uids else None
            if f is None:
                continue
            refs = dict(f.references).get(item.role) if f.references is not None else None
            if refs is None:
                refs = tuple(_references(pydicom.dcmread(f.path, stop_before_pixels=True),
                                         item.role))
            broken = [r for r in refs if r in listed and r not in found]
            if broken:
                out.append(f"{item.role.value} {item.sop_uids[0]} references "
                           f"{len(broken)} listed object(s) that did not arrive, e.g. "
                           f"{broken[0]}")
    return out


_REFERRING = (Role.PLAN, Role.DOSE, Role.STRUCTURE_SET)  # roles whose references are checked
_NO_REFERENCES = tuple((role, ()) for role in _REFERRING)


def _references(ds: Dataset, role: Role) -> list[str]:
    if role is Role.PLAN:
        return [str(i.ReferencedSOPInstanceUID)
                for i in ds.get("ReferencedStructureSetSequence", [])
                if "ReferencedSOPInstanceUID" in i]
    if role is Role.DOSE:
        return [str(i.ReferencedSOPInstanceUID) for i in ds.get("ReferencedRTPlanSequence", [])
                if "ReferencedSOPInstanceUID" in i]
    if role is Role.STRUCTURE_SET:
        return [uid for frame in frame_references(ds) for series in frame.series
                for uid in series.images if uid is not None]
    return []
