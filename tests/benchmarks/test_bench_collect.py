"""The collect benchmark runs (short mode): CI checks it works and moves everything, not its
timings (the overhead goal is reported, never enforced)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_collect.py"
ROWS = ("rtmove", "rtmove_self", "movescu")


@pytest.mark.interop
def test_short_collect_benchmark_compares_with_bare_movescu(
        require_tool: Callable[[str], str]) -> None:
    require_tool("movescu")
    done = subprocess.run([sys.executable, str(BENCH), "--short", "--json", "--repeat", "1"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    # Every object of the plan's collection arrived, by rtmove and by the movescu calls
    # (the benchmark checks those before it reports): 12 CT slices and the RT objects.
    assert report["objects"] == report["expected_objects"] > report["slices"] == 12
    assert report["movescu_calls"] == 1 + report["objects"] - report["slices"]
    for name in ROWS:
        row = report[name]
        assert row["total"] > 0 and row["first_run"] > 0 and row["cpu"] > 0, name
        assert len(row["runs"]) == 1, name
    for name in ("rtmove", "rtmove_self"):
        row = report[name]
        for part in ("resolve", "move", "verify"):
            assert row[part] > 0, (name, part)
        # the client rounds its own timings to milliseconds
        assert row["resolve"] + row["move"] + row["verify"] <= row["total"] + 0.002
        assert row["finds"] > 0 and row["header_moves"] > 0 and row["moves"] > 0
        movescu = report["movescu"]["total"]
        assert row["overhead"] == pytest.approx((row["total"] - movescu) / movescu)
        assert row["client_share"] == pytest.approx(
            (row["resolve"] + row["verify"]) / row["move"])
    assert report["overhead"] == report["rtmove"]["overhead"]
    assert report["over_goal"] == (report["overhead"] > report["goal"])
