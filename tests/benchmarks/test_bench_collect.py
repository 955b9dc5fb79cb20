"""The collect benchmark runs (short mode), from both sources (the emulated DB Daemon and
DCMTK's dcmqrscp): CI checks it works and moves everything, not its timings (the overhead
goal is reported, never enforced)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_collect.py"
ROWS = ("rtmove", "rtmove_self", "movescu")
SOURCES = ("emulator", "dcmqrscp")


@pytest.mark.interop
def test_short_collect_benchmark_compares_with_bare_movescu(
        require_tool: Callable[[str], str]) -> None:
    for tool in ("movescu", "dcmqrscp", "storescu", "echoscu"):
        require_tool(tool)
    done = subprocess.run([sys.executable, str(BENCH), "--short", "--json", "--repeat", "1"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["slices"] == 12 and report["repeat"] == 1
    # With no --source, both sources are measured, each in its own section.
    assert tuple(report["sources"]) == SOURCES
    for source, section in report["sources"].items():
        _check_section(source, section, report)
    assert report["sources"]["emulator"]["ae_title"] == "VMSDBD1"
    assert report["sources"]["dcmqrscp"]["server"].startswith("dcmqrscp")
    assert report["sources"]["dcmqrscp"]["archive"] == "files"


def _check_section(source: str, section: dict[str, Any], report: dict[str, Any]) -> None:
    # Every object of the plan's collection arrived, by rtmove and by the movescu calls
    # (the benchmark checks those before it reports): 12 CT slices and the RT objects.
    objects = section["objects"]
    assert objects == section["expected_objects"] > 12, source
    assert section["movescu_calls"] == 1 + objects - 12, source
    for name in ROWS:
        row = section[name]
        assert row["total"] > 0 and row["first_run"] > 0 and row["cpu"] > 0, (source, name)
        assert len(row["runs"]) == 1, (source, name)
    for name in ("rtmove", "rtmove_self"):
        row = section[name]
        for part in ("resolve", "move", "verify"):
            assert row[part] > 0, (source, name, part)
        # the client rounds its own timings to milliseconds
        assert row["resolve"] + row["move"] + row["verify"] <= row["total"] + 0.002, source
        assert row["finds"] > 0 and row["header_moves"] > 0 and row["moves"] > 0, source
        movescu = section["movescu"]["total"]
        assert row["overhead"] == pytest.approx((row["total"] - movescu) / movescu)
        assert row["client_share"] == pytest.approx(
            (row["resolve"] + row["verify"]) / row["move"])
    assert section["overhead"] == section["rtmove"]["overhead"], source
    assert section["over_goal"] == (section["overhead"] > report["goal"]), source
