"""C-MOVE of one CT series by DCMTK's movescu: the emulated DB Daemon beside dcmqrscp.

    python benchmarks/bench_move.py            # full: a 120-slice 512x512 CT, 5 runs each
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
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from client.site import TrustedAE, default_site
from emulators.archive import Archive
from emulators.db_daemon import DBDaemon
from emulators.files import write_patient
from emulators.synthetic import SyntheticConfig, make_recipe

ENV = {**os.environ, "TCP_NODELAY": "1"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_echo(port: int, called: str, timeout: float = 15.0) -> None:
    """Ready when a C-ECHO succeeds. A bare TCP probe is not harmless: dcmqrscp 3.6.7
    fails to reject the empty connection and its next move sub-association then fails."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        echo = subprocess.run(["echoscu", "-aec", called, "127.0.0.1", str(port)],
                              capture_output=True, env=ENV, check=False)
        if echo.returncode == 0:
            return
        time.sleep(0.1)
    raise TimeoutError(f"no C-ECHO answer from {called} on {port}")


@contextmanager
def _process(argv: list[str], port: int, called: str, log: Path) -> Iterator[None]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=ENV)
        try:
            _wait_echo(port, called)
            yield
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def _dcmqrscp_config(folder: Path, port: int, dest_port: int) -> Path:
    storage = folder / "qr"
    storage.mkdir()
    config = folder / "dcmqrscp.cfg"
    config.write_text(f"""NetworkTCPPort = {port}
MaxPDUSize = 16384
MaxAssociations = 16
HostTable BEGIN
storescp = (STORESCP, 127.0.0.1, {dest_port})
HostTable END
VendorTable BEGIN
VendorTable END
AETable BEGIN
QR {storage} RW (200, 1024mb) ANY
AETable END
""")
    return config


def _time_move(port: int, called: str, keys: list[str], dest: Path, expected: int) -> float:
    for old in dest.iterdir():
        old.unlink()
    argv = ["movescu", "-S", "-aet", "DCMTK", "-aec", called, "-aem", "STORESCP",
            "-k", "QueryRetrieveLevel=SERIES", *(a for k in keys for a in ("-k", k)),
            "127.0.0.1", str(port)]
    start = time.perf_counter()
    subprocess.run(argv, check=True, env=ENV, capture_output=True)
    seconds = time.perf_counter() - start
    arrived = sum(1 for _ in dest.iterdir())
    if arrived != expected:
        raise RuntimeError(f"{called}: {arrived} of {expected} files arrived")
    return seconds


def _median(runs: int, once: Callable[[], float]) -> float:
    once()  # warm-up: caches, first-association costs
    return statistics.median(once() for _ in range(runs))


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
        dest_port, qr_port = _free_port(), _free_port()
        results: dict[str, float] = {}
        with _process(["storescp", "-aet", "STORESCP", "-od", str(dest), str(dest_port)],
                      dest_port, "STORESCP", tmp / "storescp.log"):
            cfg = _dcmqrscp_config(tmp, qr_port, dest_port)
            # Forking mode: 3.6.7 with --single-process stops listening after one association.
            with _process(["dcmqrscp", "-c", str(cfg), str(qr_port)],
                          qr_port, "QR", tmp / "dcmqrscp.log"):
                subprocess.run(["storescu", "-aet", "DCMTK", "-aec", "QR", "127.0.0.1",
                                str(qr_port), *map(str, files)], check=True, env=ENV)
                results["dcmqrscp"] = _median(runs, lambda: _time_move(
                    qr_port, "QR", keys, dest, len(files)))
            site = default_site()
            site = dataclasses.replace(site, db_daemon=dataclasses.replace(site.db_daemon, port=0))
            site = site.with_trusted(TrustedAE("STORESCP", "127.0.0.1", dest_port))
            sources = {"recipe": lambda: Archive.synthetic(config, 1),
                       "files": lambda: Archive.from_folder(tmp / "gen")[0]}
            for name, make in sources.items():
                archive = make()
                with DBDaemon(site, archive) as dbd:
                    results[name] = _median(runs, lambda port=dbd.port: _time_move(
                        port, "VMSDBD1", keys, dest, len(files)))
                archive.close()
    label = f"movescu, {slices}-slice {size}x{size} CT series -> storescp"
    return [{"metric": f"{label}, emulator serving {name}", "ours": results[name],
             "dcmtk": results["dcmqrscp"], "ratio": results[name] / results["dcmqrscp"]}
            for name in ("recipe", "files")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--short", action="store_true", help="tiny sizes for CI")
    parser.add_argument("--json", action="store_true", help="print JSON rows")
    args = parser.parse_args(argv)
    rows = run(8, 64, 1) if args.short else run(120, 512, 5)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'metric':<75} {'ours s':>8} {'DCMTK s':>8} {'ratio':>6}")
    for row in rows:
        print(f"{row['metric']:<75} {row['ours']:>8.2f} {row['dcmtk']:>8.2f} "
              f"{row['ratio']:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
