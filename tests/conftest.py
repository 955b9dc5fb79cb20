"""Shared test helpers: writing a synthetic patient as Part 10 files, requiring a CLI tool.

Both are plain functions, also offered as session fixtures of the same names, so a
test can use them without importing ``conftest`` (which another conftest may shadow).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from emulators.synthetic import PatientRecipe, object_refs
from emulators.synthetic.modules import with_file_meta


def require_tool(name: str) -> str:
    """The path of the executable ``name``; skip the test without it (fail under CI)."""
    path = shutil.which(name)
    if path is None:
        message = f"{name!r} is not on PATH (install DCMTK / dicom3tools to run this test)"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {message}")
        pytest.skip(message)
    return path


def write_recipe(recipe: PatientRecipe, folder: Path) -> list[Path]:
    """Write every object of ``recipe`` as ``<folder>/<patient id>/<modality>.<uid>.dcm``."""
    patient_dir = folder / recipe.patient_id
    patient_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for obj in object_refs(recipe):
        path = patient_dir / f"{obj.modality}.{obj.sop_uid}.dcm"
        pydicom.dcmwrite(path, with_file_meta(obj.build()), enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.fixture(name="require_tool", scope="session")
def _require_tool_fixture() -> Callable[[str], str]:
    return require_tool


@pytest.fixture(name="write_recipe", scope="session")
def _write_recipe_fixture() -> Callable[[PatientRecipe, Path], list[Path]]:
    return write_recipe
