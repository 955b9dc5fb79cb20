"""16 movescu at once, each moving another patient's CT series: the emulated DB Daemon
beside dcmqrscp serving the same files, in the same run.

    python benchmarks/bench_concurrency.py           # full: 16 clients, 60 slices of 512x512
    python benchmarks/bench_concurrency.py --short   # CI: 4 clients, 4 small slices

Checked: every slice arrives (nothing lost) and every movescu succeeds (no association
refused below the configured maximum, 40 on both servers). The destination is one
forking storescp. Reported: wall seconds for all clients, and our/DCMTK ratio.
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

from ratios import print_rows, ratio_row

from client.site import TrustedAE, default_site
from emulators.archive import Archive
from emulators.db_daemon import DBDaemon
from emulators.files import write_patient
from emulators.peers import DCMTK_ENV, LOOPBACK, dcmqrscp, free_port, running
from emulators.synthetic import SyntheticConfig, make_recipe

CALLER, DEST = "DCMTK", "STORESCP"
MAX_ASSOCIATIONS = 40


def _all_at_once(port: int, called: str, series: list[tuple[str, str]], dest: Path,
                 expected: int) -> float:
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir()
    start = time.perf_counter()
    procs = [subprocess.Popen(
        ["movescu", "-S", "-aet", CALLER, "-aec", called, "-aem", DEST,
         "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={study}",
         "-k", f"SeriesInstanceUID={uid}", LOOPBACK, str(port)],
        env=DCMTK_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for study, uid in series]
    outputs = [proc.communicate(timeout=600)[0] for proc in procs]
    seconds = time.perf_counter() - start
    failed = [out for proc, out in zip(procs, outputs, strict=True) if proc.returncode]
    if failed:
        raise RuntimeError(f"{called}: {len(failed)} movescu failed, e.g.:\n{failed[0][-2000:]}")
    arrived = sum(1 for p in dest.rglob("*") if p.is_file())
    if arrived != expected:
        raise RuntimeError(f"{called}: {arrived} of {expected} files arrived")
    return seconds


def run(clients: int, slices: int, size: int) -> list[dict[str, object]]:
    config = SyntheticConfig(seed=3, slices=slices, rows=size, columns=size)
    recipes = [make_recipe(config, i) for i in range(clients)]
    series = [(r.cts[0].study.uid, r.cts[0].series.uid) for r in recipes]
    expected = clients * slices
    with tempfile.TemporaryDirectory(prefix="bench-concurrency-") as tmp_name:
        tmp = Path(tmp_name)
        files = [p for r in recipes for p in write_patient(r, tmp / "gen")
                 if p.name.startswith("CT.")]
        dest, port = tmp / "dest", free_port()
        dest.mkdir()
        with running(["storescp", "--fork", "-aet", DEST, "-od", str(dest), str(port)],
                     port, tmp / "storescp.log"):
            peers = {DEST: (LOOPBACK, port), CALLER: (LOOPBACK, 1)}
            with dcmqrscp(tmp / "dcmqrscp", "QR", peers, CALLER,
                          max_associations=MAX_ASSOCIATIONS) as qr:
                subprocess.run(["storescu", "-aet", CALLER, "-aec", qr.ae_title, qr.host,
                                str(qr.port), *map(str, files)], check=True, env=DCMTK_ENV,
                               capture_output=True)
                dcmtk = _all_at_once(qr.port, qr.ae_title, series, dest, expected)
            site = default_site()
            site = dataclasses.replace(site, db_daemon=dataclasses.replace(
                site.db_daemon, port=0, max_associations=MAX_ASSOCIATIONS))
            site = site.with_trusted(TrustedAE(DEST, LOOPBACK, port))
            archive, _ = Archive.from_folder(tmp / "gen")
            try:
                with DBDaemon(site, archive) as dbd:
                    ours = _all_at_once(dbd.port, "VMSDBD1", series, dest, expected)
            finally:
                archive.close()
    label = f"{clients} movescu at once, {slices}-slice {size}x{size} CT each"
    return [ratio_row(label, ours, dcmtk)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--short", action="store_true", help="4 small clients, for CI")
    parser.add_argument("--json", action="store_true", help="print JSON rows")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--slices", type=int, default=60)
    args = parser.parse_args(argv)
    rows = run(4, 4, 64) if args.short else run(args.clients, args.slices, 512)
    print_rows(rows, args.json, width=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
