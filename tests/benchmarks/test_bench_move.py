"""The move benchmark runs (short mode): CI checks it works and compares, not its timings."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_move.py"


@pytest.mark.interop
def test_short_move_benchmark_compares_with_dcmqrscp(require_tool: Callable[[str], str]) -> None:
    for tool in ("dcmqrscp", "storescp", "storescu", "movescu", "echoscu"):
        require_tool(tool)
    done = subprocess.run([sys.executable, str(BENCH), "--short", "--json"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert {row["metric"].rsplit("serving ", 1)[1] for row in rows} == {"recipe", "files"}
    for row in rows:
        assert row["ours"] > 0 and row["dcmtk"] > 0
        assert row["ratio"] == pytest.approx(row["ours"] / row["dcmtk"])
