"""Where and how archive objects land on disk, shared by ``dbdsim generate`` and the File Daemon.

The path rules and atomic writes live in :mod:`client.files` (rtmove's own Storage
SCP writes the same way); this module adds writing generated objects.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import UID, ExplicitVRLittleEndian

from client.files import (
    TEMP_PREFIX,
    TEMP_SUFFIX,
    Received,
    archive_path,
    part10_body,
    part10_body_offset,
    safe_name,
    write_atomic,
    write_received,
)

from .synthetic import PatientRecipe, object_refs
from .synthetic.modules import with_file_meta

__all__ = [
    "TEMP_PREFIX",
    "TEMP_SUFFIX",
    "Received",
    "archive_path",
    "part10_body",
    "part10_body_offset",
    "safe_name",
    "write_atomic",
    "write_part10",
    "write_patient",
    "write_received",
]


def write_part10(ds: Dataset, path: Path, transfer_syntax: str = ExplicitVRLittleEndian,
                 ) -> None:
    """Write ``ds`` as a DICOM Part 10 file that is either absent or complete.

    ``ds`` gets its File Meta Information replaced; ``transfer_syntax`` must be the one
    its pixel data is in (an encapsulated image stays in its compressed syntax).
    """
    with_file_meta(ds)
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    write_atomic(path, lambda fh: dcmwrite(fh, ds, enforce_file_format=True))


def write_patient(recipe: PatientRecipe, out: Path,
                  after_each: Callable[[Path], None] | None = None) -> list[Path]:
    """Write every object of a synthetic patient where ``dbdsim generate`` puts it."""
    paths = []
    for obj in object_refs(recipe):
        path = archive_path(out, recipe.patient_id, obj.modality, obj.sop_uid)
        write_part10(obj.build(), path)
        paths.append(path)
        if after_each is not None:
            after_each(path)
    return paths
