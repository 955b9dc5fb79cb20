"""DCMTK's storescu sending one CT series: to the emulated File Daemon beside storescp.

    python benchmarks/bench_store.py            # full: a 200-slice 512x512 CT, 5 runs each
    python benchmarks/bench_store.py --short    # CI: 8 small slices, 1 run, checks it works

Both write to the same disk (a folder beside this run's files). The File Daemon writes
each object atomically and durably (temporary file, fsync, rename, folder fsync);
storescp writes in place without fsync. Reported: median seconds and our/DCMTK ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ratios import median_after_warmup, print_rows, ratio_row

from client.site import TrustedAE, default_site
from emulators.file_daemon import FileDaemon
from emulators.files import write_patient
from emulators.peers import DCMTK_ENV, LOOPBACK, free_port, running
from emulators.synthetic import SyntheticConfig, make_recipe

CALLER = "STORESCU"


def _time_store(port: int, called: str, files: list[Path], dest: Path) -> float:
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir()
    argv = ["storescu", "-aet", CALLER, "-aec", called, LOOPBACK, str(port), *map(str, files)]
    start = time.perf_counter()
    subprocess.run(argv, check=True, env=DCMTK_ENV, capture_output=True)
    seconds = time.perf_counter() - start
    arrived = sum(1 for p in dest.rglob("*") if p.is_file() and not p.name.startswith("."))
    if arrived != len(files):
        raise RuntimeError(f"{called}: {arrived} of {len(files)} files arrived")
    return seconds



def run(slices: int, size: int, runs: int, where: Path | None) -> list[dict[str, object]]:
    recipe = make_recipe(SyntheticConfig(seed=1, slices=slices, rows=size, columns=size), 0)
    with tempfile.TemporaryDirectory(prefix="bench-store-", dir=where) as tmp_name:
        tmp = Path(tmp_name)
        files = sorted(p for p in write_patient(recipe, tmp / "gen") if p.name.startswith("CT."))
        port = free_port()
        dest = tmp / "storescp"
        dest.mkdir()
        with running(["storescp", "-aet", "STORESCP", "-od", str(dest), str(port)], port,
                     tmp / "storescp.log"):
            dcmtk = median_after_warmup(runs, lambda: _time_store(port, "STORESCP", files, dest))
        rows = []
        # storescp does not fsync; the File Daemon does by default (Orthanc's default too):
        # both rows, so the like-for-like one (sync = false) is there beside the default.
        for sync in (True, False):
            site = default_site()
            out = tmp / f"fd-{sync}"
            site = dataclasses.replace(site, file_daemon=dataclasses.replace(
                site.file_daemon, port=0, output=out, sync=sync))
            site = site.with_trusted(TrustedAE(CALLER, LOOPBACK, 1))
            with FileDaemon(site) as fd:
                ours = median_after_warmup(
                    runs, lambda port=fd.port, out=out: _time_store(port, "VMSFD", files, out))
            label = (f"storescu, {len(files)} CT slices {size}x{size} -> File Daemon "
                     f"({'sync' if sync else 'sync = false'}) / storescp")
            rows.append(ratio_row(label, ours, dcmtk))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--short", action="store_true", help="tiny sizes for CI")
    parser.add_argument("--json", action="store_true", help="print JSON rows")
    parser.add_argument("--slices", type=int, default=200, help="CT slices (default 200)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs each (median)")
    parser.add_argument("--dir", type=Path, help="where both write (default: the temp dir)")
    args = parser.parse_args(argv)
    rows = run(8, 64, 1, args.dir) if args.short else run(args.slices, 512, args.runs, args.dir)
    print_rows(rows, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
