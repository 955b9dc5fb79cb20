"""The plugin works where users have it: a fresh project outside this repository, with
dbdsim installed by pip (not editable, not on PYTHONPATH), one test file, no conftest.

The test file is the README's example (docs/example_test_export.py), so the documented
code is what runs here. pip fetches dbdsim's dependencies (its cache makes later runs
fast); dbdsim itself is built from a copy of this repository's sources, so the build
writes nothing into the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "docs" / "example_test_export.py"
SOURCES = ("pyproject.toml", "README.md", "client", "emulators", "scenarios")
PIP_TIMEOUT = 900.0  # seconds; a cold cache downloads numpy, pydicom, pynetdicom, faker...

pytestmark = [pytest.mark.slow, pytest.mark.interop]


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float,
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False)


def _clean_env() -> dict[str, str]:
    """This machine's environment without what would leak this repository or this pytest
    run into the fresh project (PYTHONPATH, PYTEST_* such as xdist's worker ids)."""
    return {k: v for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
            and not k.startswith("PYTEST_")}


def test_a_fresh_project_runs_the_readme_example(tmp_path: Path,
                                                 require_tool: Callable[[str], str]) -> None:
    for tool in ("echoscu", "movescu"):
        require_tool(tool)
    assert REPO not in tmp_path.parents
    start = time.monotonic()
    env = _clean_env()
    source = tmp_path / "dbdsim-src"
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(REPO / name, source / name)

    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)], tmp_path, env, 120)
    assert made.returncode == 0, made.stdout
    python = venv / "bin" / "python"
    installed = _run([str(python), "-m", "pip", "install", "--quiet", str(source), "pytest"],
                     tmp_path, env, PIP_TIMEOUT)
    assert installed.returncode == 0, installed.stdout
    pip_done = time.monotonic()

    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(EXAMPLE, project / "test_export.py")
    where = _run([str(python), "-c", "import emulators.pytest_plugin as p; print(p.__file__)"],
                 project, env, 60)
    assert where.returncode == 0, where.stdout
    assert str(venv) in where.stdout and str(REPO) not in where.stdout, where.stdout

    ran = _run([str(python), "-m", "pytest", "-p", "no:cacheprovider"], project, env, 300)
    print(f"pip install: {pip_done - start:.1f} s; pytest: {time.monotonic() - pip_done:.1f} s")
    assert ran.returncode == 0, ran.stdout
    assert "3 passed" in ran.stdout, ran.stdout
