"""Memory while moving a 600-slice CT (300 MB): the emulator streams objects, and the
File Daemon's RSS does not grow with the series length.

    python benchmarks/bench_memory.py            # full: 600 slices of 512x512
    python benchmarks/bench_memory.py --short    # CI: 20 small slices, checks it works

`dbdsim serve` runs in its own process, sampled from /proc every 20 ms: its peak RSS
while the DB Daemon moves the series to DCMTK's storescp (goal: under 250 MB), and
while DCMTK's storescu sends the same files to its File Daemon, after a fifth of them
and at the end (goal: no growth). storescp's own peak is printed beside, for scale.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from emulators.files import write_patient
from emulators.peers import DCMTK_ENV, LOOPBACK, free_port, running
from emulators.synthetic import SyntheticConfig, make_recipe


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class _Sampler:
    """Peak RSS of a process while the block runs."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss_mb(self.pid))

    def __enter__(self) -> _Sampler:
        self.peak = _rss_mb(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run(slices: int, size: int) -> list[dict[str, object]]:
    config = SyntheticConfig(seed=2, slices=slices, rows=size, columns=size)
    recipe = make_recipe(config, 0)
    ct = recipe.cts[0]
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp_name:
        tmp = Path(tmp_name)
        files = sorted(p for p in write_patient(recipe, tmp / "gen") if p.name.startswith("CT."))
        dest, dest_port, db_port, fd_port = tmp / "dest", free_port(), free_port(), free_port()
        dest.mkdir()
        serve = [sys.executable, "-m", "emulators.cli", "serve", "--archive", str(tmp / "gen"),
                 "--db-port", str(db_port), "--fd-port", str(fd_port), "--fd-out",
                 str(tmp / "fd"), "--log-level", "warning",
                 "--trust", f"STORESCP@{LOOPBACK}:{dest_port}"]
        with running(["storescp", "-aet", "STORESCP", "-od", str(dest), str(dest_port)],
                     dest_port, tmp / "storescp.log") as storescp, \
                running(serve, db_port, tmp / "serve.log") as daemon:
            time.sleep(0.5)
            before = _rss_mb(daemon.pid)
            with _Sampler(daemon.pid) as ours, _Sampler(storescp.pid) as theirs:
                subprocess.run(["movescu", "-S", "-aet", "DCMTK", "-aec", "VMSDBD1",
                                "-aem", "STORESCP", "-k", "QueryRetrieveLevel=SERIES",
                                "-k", f"StudyInstanceUID={ct.study.uid}",
                                "-k", f"SeriesInstanceUID={ct.series.uid}", LOOPBACK,
                                str(db_port)], check=True, env=DCMTK_ENV, capture_output=True)
            arrived = sum(1 for _ in dest.iterdir())
            if arrived != slices:
                raise RuntimeError(f"{arrived} of {slices} slices arrived at storescp")
            rows.append({"metric": f"DB Daemon moving a {slices}-slice {size}x{size} CT: "
                                   "peak RSS", "ours": ours.peak, "dcmtk": theirs.peak,
                         "before": before, "unit": "MB", "goal": 250})
            fifth = len(files) // 5
            with _Sampler(daemon.pid) as first:
                subprocess.run(["storescu", "-aet", "STORESCP", "-aec", "VMSFD", LOOPBACK,
                                str(fd_port), *map(str, files[:fifth])], check=True,
                               env=DCMTK_ENV, capture_output=True)
            with _Sampler(daemon.pid) as rest:
                subprocess.run(["storescu", "-aet", "STORESCP", "-aec", "VMSFD", LOOPBACK,
                                str(fd_port), *map(str, files[fifth:])], check=True,
                               env=DCMTK_ENV, capture_output=True)
            rows.append({"metric": f"File Daemon receiving {slices} slices: peak RSS, first "
                                   f"{fifth} / all", "ours": rest.peak, "dcmtk": first.peak,
                         "before": before, "unit": "MB", "goal": None,
                         "growth": rest.peak - first.peak})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--short", action="store_true", help="20 small slices, for CI")
    parser.add_argument("--json", action="store_true", help="print JSON rows")
    parser.add_argument("--slices", type=int, default=600)
    args = parser.parse_args(argv)
    rows = run(20, 64, ) if args.short else run(args.slices, 512)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        extra = (f"storescp {row['dcmtk']:.0f} MB" if row["goal"] else
                 f"after a fifth {row['dcmtk']:.0f} MB, growth {row['growth']:+.0f} MB")
        print(f"{row['metric']:<70} {row['ours']:>7.0f} MB (before {row['before']:.0f} MB; "
              f"{extra})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
