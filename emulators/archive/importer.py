"""Import a folder of real DICOM files into the index (recursively, never fatally)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from .from_dataset import NotIndexable, dataset_rows
from .index import ArchiveIndex


@dataclass
class ImportReport:
    imported: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why)


def _files(folder: Path) -> Iterator[Path]:
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            yield Path(root) / name


def _pixel_shortfall(ds: Dataset) -> str | None:
    """Why native Pixel Data is shorter than its header says (pydicom reads it silently)."""
    if "PixelData" not in ds or ds.file_meta.get("TransferSyntaxUID") is None:
        return None
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        return None
    try:
        expected = (int(ds.Rows) * int(ds.Columns) * int(ds.get("NumberOfFrames") or 1)
                    * int(ds.get("SamplesPerPixel") or 1) * int(ds.BitsAllocated) // 8)
    except (AttributeError, TypeError, ValueError):
        return "Pixel Data without a usable Rows/Columns/BitsAllocated"
    actual = len(ds.PixelData)
    if actual < expected:
        return f"truncated: Pixel Data holds {actual} of {expected} bytes"
    return None


def read_checked(path: Path) -> Dataset:
    """Read a Part 10 file whole, refusing truncated ones; ValueError says why."""
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError as exc:
        raise ValueError(f"not a DICOM Part 10 file ({exc})") from exc
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"unreadable: {type(exc).__name__}: {exc}") from exc
    shortfall = _pixel_shortfall(ds)
    if shortfall:
        raise ValueError(shortfall)
    return ds


def import_folder(index: ArchiveIndex, folder: Path,
                  progress: Callable[[Path], None] | None = None) -> ImportReport:
    """Index every readable DICOM file under ``folder``; report the rest and go on."""
    report = ImportReport()
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a folder")
    for path in _files(folder):
        if progress:
            progress(path)
        try:
            ds = read_checked(path)
            patient, study, series, instance = dataset_rows(ds, str(path.resolve()))
        except (ValueError, NotIndexable) as exc:
            report.skipped.append((str(path), str(exc)))
            continue
        index.add(patient, study, series, [instance])
        report.imported += 1
    return report
