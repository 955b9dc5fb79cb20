"""The generation benchmark runs (short mode): CI checks it works, not its timings."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_generate.py"


@pytest.mark.interop
def test_short_benchmark_reports_every_metric(require_tool: Callable[[str], str]) -> None:
    require_tool("dcmqridx")
    done = subprocess.run([sys.executable, str(BENCH), "--short", "--json"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    metrics = {row["metric"]: row for row in rows}
    assert any(m.startswith("one patient, build datasets") for m in metrics)
    assert any("peak RSS" in m for m in metrics)
    compared = [row for row in rows if row["dcmtk"] is not None]
    assert compared, "the import row must be measured beside dcmqridx"
    assert all(row["ours"] > 0 for row in rows)
