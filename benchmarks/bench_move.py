"""C-MOVE of one CT series by DCMTK's movescu: the emulated DB Daemon beside dcmqrscp.

    python benchmarks/bench_move.py            # full: a 200-slice 512x512 CT, 5 runs each
    python benchmarks/bench_move.py --short    # CI: 8 small slices, 1 run, checks it works

The same files are served by both: DCMTK's ``dcmqrscp`` (loaded with ``storescu``)
and our DB Daemon, both over the generated series (``--source recipe``, our default
way: slices rebuilt on demand) and over the imported files (``--source files``).
The destination is a DCMTK ``storescp`` (16 KB max PDU). All DCMTK tools run with
TCP_NODELAY=1, as in the tests. Reported: median seconds, and our/DCMTK ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ratios import median_after_warmup, print_rows, ratio_row

from client.site import TrustedAE, default_site
from emulators.archive import Archive
from emulators.db_daemon import DBDaemon
from emulators.files import write_patient
from emulators.peers import DCMTK_ENV, LOOPBACK, dcmqrscp, free_port, running
from emulators.synthetic import SyntheticConfig, make_recipe

CALLER = "DCMTK"  # storescu's and movescu's AE title
DEST = "STORESCP"  # the move destination's
# dcmqrscp knows the destination, and the caller (at a port never served, as it is
# a move destination too: a move to it fails).
NOBODY_PORT = 1


def _time_move(port: int, called: str, keys: list[str], dest: Path, expected: int) -> float:
    for old in dest.iterdir():
        old.unlink()
    argv = ["movescu", "-S", "-aet", CALLER, "-aec", called, "-aem", DEST,
            "-k", "QueryRetrieveLevel=SERIES", *(a for k in keys for a in ("-k", k)),
            LOOPBACK, str(port)]
    start = time.perf_counter()
    subprocess.run(argv, check=True, env=DCMTK_ENV, capture_output=True)
    seconds = time.perf_counter() - start
    arrived = sum(1 for _ in dest.iterdir())
    if arrived != expected:
        raise RuntimeError(f"{called}: {arrived} of {expected} files arrived")
    return seconds



def run(slices: int, size: int, runs: int) -> list[dict[str, object]]:
    config = SyntheticConfig(seed=1, slices=slices, rows=size, columns=size)
    recipe = make_recipe(config, 0)
    ct = recipe.cts[0]
    # dcmqrscp checks the hierarchy: a SERIES move names its study too.
    keys = [f"StudyInstanceUID={ct.study.uid}", f"SeriesInstanceUID={ct.series.uid}"]
    with tempfile.TemporaryDirectory(prefix="bench-move-") as tmp_name:
        tmp = Path(tmp_name)
        files = [p for p in write_patient(recipe, tmp / "gen") if p.name.startswith("CT.")]
        files = [p for p in files if p.name[3:-4] in set(ct.slice_uids)]
        dest = tmp / "dest"
        dest.mkdir()
        dest_port = free_port()
        results: dict[str, float] = {}
        with running(["storescp", "-aet", DEST, "-od", str(dest), str(dest_port)],
                     dest_port, tmp / "storescp.log"):
            peers = {DEST: (LOOPBACK, dest_port), CALLER: (LOOPBACK, NOBODY_PORT)}
            with dcmqrscp(tmp / "dcmqrscp", "QR", peers, CALLER) as qr:
                subprocess.run(["storescu", "-aet", CALLER, "-aec", qr.ae_title, qr.host,
                                str(qr.port), *map(str, files)], check=True, env=DCMTK_ENV)
                results["dcmqrscp"] = median_after_warmup(runs, lambda: _time_move(
                    qr.port, qr.ae_title, keys, dest, len(files)))
            site = default_site()
            site = dataclasses.replace(site, db_daemon=dataclasses.replace(site.db_daemon, port=0))
            site = site.with_trusted(TrustedAE(DEST, LOOPBACK, dest_port))
            sources = {"recipe": lambda: Archive.synthetic(config, 1),
                       "files": lambda: Archive.from_folder(tmp / "gen")[0]}
            for name, make in sources.items():
                archive = make()
                with DBDaemon(site, archive) as dbd:
                    results[name] = median_after_warmup(runs, lambda port=dbd.port: _time_move(
                        port, "VMSDBD1", keys, dest, len(files)))
                archive.close()
    label = f"movescu, {slices}-slice {size}x{size} CT series -> storescp"
    return [ratio_row(f"{label}, emulator serving {name}", results[name], results["dcmqrscp"])
            for name in ("recipe", "files")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--short", action="store_true", help="tiny sizes for CI")
    parser.add_argument("--json", action="store_true", help="print JSON rows")
    parser.add_argument("--slices", type=int, default=200, help="CT slices (default 200)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs each (median)")
    args = parser.parse_args(argv)
    rows = run(8, 64, 1) if args.short else run(args.slices, 512, args.runs)
    print_rows(rows, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
