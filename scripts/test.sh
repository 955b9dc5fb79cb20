#!/usr/bin/env bash
# Everything the tests need, from nothing (Debian): DCMTK, dicom3tools, Orthanc, a venv
# with .[test]; then lint, type checks and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
SYSTEM_TOOLS=1 EXTRAS=test bash scripts/setup.sh
export TCP_NODELAY=1  # DCMTK on loopback: without it Nagle costs ~40 ms per object
echo "== ruff"
.venv/bin/ruff check .
echo "== mypy --strict"
.venv/bin/mypy
echo "== pytest"
.venv/bin/python -m pytest -n "${JOBS:-2}" "$@"
