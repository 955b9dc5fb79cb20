"""Shared test helpers: writing a synthetic patient as Part 10 files, requiring a CLI tool.

Both are plain functions, also offered as session fixtures of the same names, so a
test can use them without importing ``conftest`` (which another conftest may shadow).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from emulators.files import write_patient
from emulators.synthetic import PatientRecipe

# Debian installs daemons such as Orthanc in /usr/sbin, which a user's PATH may lack.
_SBIN = os.pathsep.join(("/usr/local/sbin", "/usr/sbin", "/sbin"))


def require_tool(name: str) -> str:
    """The path of the executable ``name`` (PATH, then the sbin folders); skip the test
    without it (fail under CI)."""
    path = shutil.which(name) or shutil.which(name, path=_SBIN)
    if path is None:
        message = (f"{name!r} is not on PATH (install DCMTK / dicom3tools / Orthanc to run "
                   "this test)")
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {message}")
        pytest.skip(message)
    return path


def write_recipe(recipe: PatientRecipe, folder: Path) -> list[Path]:
    """Write every object of ``recipe`` as ``<folder>/<patient id>/<modality>.<uid>.dcm``."""
    return write_patient(recipe, folder)


@pytest.fixture(name="require_tool", scope="session")
def _require_tool_fixture() -> Callable[[str], str]:
    return require_tool


@pytest.fixture(name="write_recipe", scope="session")
def _write_recipe_fixture() -> Callable[[PatientRecipe, Path], list[Path]]:
    return write_recipe


# --- long mode -------------------------------------------------------------------------
# Hardening tests (fuzzing, SIGKILL, soak) run a short version in CI and the figures the
# issue asks for with `pytest --long` (or DBDSIM_LONG=1): 10,000 fuzz cases, 50 kills,
# 2,000 soak associations.


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False,
                     help="run hardening tests at full length (fuzz cases, kills, soak)")


def is_long(config: pytest.Config) -> bool:
    """True under ``--long`` or ``DBDSIM_LONG=1``."""
    return bool(config.getoption("--long")) or os.environ.get("DBDSIM_LONG") == "1"


@pytest.fixture(name="long_mode", scope="session")
def _long_mode_fixture(request: pytest.FixtureRequest) -> bool:
    return is_long(request.config)
