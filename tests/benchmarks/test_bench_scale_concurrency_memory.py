"""The scale, concurrency and memory benchmarks run (short mode): CI checks that they work
and report what they say they report, not their figures."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"

pytestmark = [pytest.mark.interop, pytest.mark.slow]


def _rows(name: str) -> list[dict[str, object]]:
    done = subprocess.run([sys.executable, str(BENCHMARKS / name), "--short", "--json"],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = json.loads(done.stdout)
    assert isinstance(rows, list) and rows
    return rows


def test_scale_benchmark_reports_each_goal(require_tool: Callable[[str], str]) -> None:
    for tool in ("storescp", "movescu"):
        require_tool(tool)
    rows = {str(row["metric"]).split(",")[0]: row for row in _rows("bench_scale.py")}
    assert rows["dbdsim serve ready"]["goal"] == 30
    assert rows["C-FIND STUDY by PatientID"]["unit"] == "ms"
    assert all(float(row["value"]) > 0 for row in rows.values())  # type: ignore[arg-type]


def test_concurrency_benchmark_compares_with_dcmqrscp(require_tool: Callable[[str], str],
                                                      ) -> None:
    for tool in ("dcmqrscp", "storescp", "storescu", "movescu", "echoscu"):
        require_tool(tool)
    [row] = _rows("bench_concurrency.py")
    assert "movescu at once" in str(row["metric"])
    assert row["ratio"] == pytest.approx(float(row["ours"]) / float(row["dcmtk"]))  # type: ignore[arg-type]


def test_memory_benchmark_samples_both_daemons(require_tool: Callable[[str], str]) -> None:
    for tool in ("storescp", "storescu", "movescu"):
        require_tool(tool)
    moving, receiving = _rows("bench_memory.py")
    assert float(moving["ours"]) >= float(moving["before"]) > 0  # type: ignore[arg-type]
    assert receiving["growth"] == pytest.approx(
        float(receiving["ours"]) - float(receiving["dcmtk"]))  # type: ignore[arg-type]
