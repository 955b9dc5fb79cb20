"""The store benchmark runs (short mode): CI checks it works and compares, not its timings."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_store.py"


@pytest.mark.interop
def test_short_store_benchmark_compares_with_storescp(require_tool: Callable[[str], str],
                                                      tmp_path: Path) -> None:
    for tool in ("storescp", "storescu"):
        require_tool(tool)
    done = subprocess.run([sys.executable, str(BENCH), "--short", "--json", "--dir",
                           str(tmp_path)], capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr
    synced, unsynced = json.loads(done.stdout)
    assert "File Daemon (sync) / storescp" in synced["metric"]
    assert "File Daemon (sync = false) / storescp" in unsynced["metric"]
    for row in (synced, unsynced):
        assert row["ours"] > 0 and row["dcmtk"] > 0
        assert row["ratio"] == pytest.approx(row["ours"] / row["dcmtk"])
    assert not list(tmp_path.iterdir())  # its temporary folder is gone
