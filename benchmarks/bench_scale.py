"""A 10,000-patient archive: `dbdsim serve` start-up and memory, C-FIND latency, and a
series moved from the last patient as fast as from the first.

    python benchmarks/bench_scale.py             # full: 10,000 messy patients
    python benchmarks/bench_scale.py --short     # CI: 50 patients, checks it works

The issue's goals are absolute (ready in under 30 s and 1 GB; C-FIND STUDY by Patient
ID under 20 ms median, IMAGE for one series under 50 ms); each row prints its goal.
Queries are timed on one open association (pynetdicom), as a client asks them; the
moves go to DCMTK's storescp by movescu.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
)

from client.tcp import NO_DELAY
from emulators.peers import DCMTK_ENV, LOOPBACK, free_port, running
from emulators.synthetic import Profile, SyntheticConfig, make_recipe

SLICES = 120  # the default CT: what `dbdsim serve` serves


def _serve(patients: int, profile: str, out: Path) -> tuple[subprocess.Popen[str], int, float]:
    """`dbdsim serve` started; (process, DB Daemon port, seconds until it was ready)."""
    port, fd_port = free_port(), free_port()
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "emulators.cli", "serve", "--patients", str(patients),
         "--profile", profile, "--db-port", str(port), "--fd-port", str(fd_port),
         "--fd-out", str(out), "--log-level", "warning", "--trust",
         f"STORESCP@{LOOPBACK}:{_STORESCP_PORT}", "--trust", f"BENCH@{LOOPBACK}:1"],
        stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("archive:"):
            return proc, port, time.monotonic() - start
    raise RuntimeError(f"dbdsim serve ended before it was ready ({proc.wait()})")


_STORESCP_PORT = free_port()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _median_ms(runs: list[Callable[[], object]]) -> float:
    times = []
    for run in runs:
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _finds(port: int, config: SyntheticConfig, patients: int, queries: int,
           ) -> tuple[float, float]:
    ae = AE(ae_title="BENCH")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    # TCP_NODELAY, as every real client here: else Nagle holds each query's identifier PDU
    # for the daemon's delayed ACK, 40 ms a query.
    assoc = ae.associate(LOOPBACK, port, ae_title="VMSDBD1", evt_handlers=NO_DELAY)
    assert assoc.is_established, "the DB Daemon refused the benchmark's association"
    rng = random.Random(7)
    picks = [make_recipe(config, rng.randrange(patients)) for _ in range(queries)]

    def find(**keys: str) -> Callable[[], object]:
        def run() -> object:
            ds = Dataset()
            for key, value in keys.items():
                setattr(ds, key, value)
            matches = [i for s, i in assoc.send_c_find(
                ds, StudyRootQueryRetrieveInformationModelFind) if i is not None]
            assert matches, keys
            return matches
        return run

    try:
        study = _median_ms([find(QueryRetrieveLevel="STUDY", PatientID=r.patient_id,
                                 StudyInstanceUID="") for r in picks])
        image = _median_ms([find(QueryRetrieveLevel="IMAGE",
                                 StudyInstanceUID=r.cts[0].study.uid,
                                 SeriesInstanceUID=r.cts[0].series.uid, SOPInstanceUID="")
                            for r in picks])
    finally:
        assoc.release()
        ae.shutdown()
    return study, image


def _move_seconds(port: int, config: SyntheticConfig, index: int, dest: Path,
                  runs: int) -> float:
    ct = make_recipe(config, index).cts[0]
    argv = ["movescu", "-S", "-aet", "BENCH", "-aec", "VMSDBD1", "-aem", "STORESCP",
            "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={ct.study.uid}",
            "-k", f"SeriesInstanceUID={ct.series.uid}", LOOPBACK, str(port)]
    times = []
    for _ in range(runs + 1):  # the first is a warm-up
        start = time.perf_counter()
        subprocess.run(argv, check=True, env=DCMTK_ENV, capture_output=True)
        times.append(time.perf_counter() - start)
    arrived = sum(1 for _ in dest.iterdir())
    if arrived < len(ct.slice_uids):
        raise RuntimeError(f"patient {index}: {arrived} of {len(ct.slice_uids)} slices arrived")
    return statistics.median(times[1:])


def run(patients: int, profile: str, queries: int, runs: int) -> list[dict[str, object]]:
    config = SyntheticConfig(seed=0, profile=Profile(profile), slices=SLICES)
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp_name:
        tmp = Path(tmp_name)
        dest = tmp / "storescp"
        dest.mkdir()
        with running(["storescp", "-aet", "STORESCP", "-od", str(dest),
                      str(_STORESCP_PORT)], _STORESCP_PORT, tmp / "storescp.log"):
            proc, port, ready = _serve(patients, profile, tmp / "fd")
            try:
                rss = _rss_mb(proc.pid)
                study_ms, image_ms = _finds(port, config, patients, queries)
                first = _move_seconds(port, config, 0, dest, runs)
                last = _move_seconds(port, config, patients - 1, dest, runs)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    label = f"{patients} {profile} patients"
    return [
        {"metric": f"dbdsim serve ready, {label}", "value": ready, "unit": "s", "goal": 30},
        {"metric": f"dbdsim serve RSS when ready, {label}", "value": rss, "unit": "MB",
         "goal": 1024},
        {"metric": "C-FIND STUDY by PatientID, median", "value": study_ms, "unit": "ms",
         "goal": 20},
        {"metric": "C-FIND IMAGE of one series, median", "value": image_ms, "unit": "ms",
         "goal": 50},
        {"metric": f"move {SLICES}-slice CT of the first patient", "value": first,
         "unit": "s", "goal": None},
        {"metric": f"move {SLICES}-slice CT of patient {patients - 1}", "value": last,
         "unit": "s", "goal": None, "ratio_to_first": last / first},
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--short", action="store_true", help="50 patients, for CI")
    parser.add_argument("--json", action="store_true", help="print JSON rows")
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--profile", choices=[p.value for p in Profile], default="messy")
    args = parser.parse_args(argv)
    rows = (run(50, args.profile, 20, 1) if args.short
            else run(args.patients, args.profile, 200, 3))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'metric':<55} {'value':>10} {'goal':>8}")
    for row in rows:
        goal = "-" if row["goal"] is None else f"< {row['goal']}"
        extra = f"  ({row['ratio_to_first']:.2f}x the first)" if "ratio_to_first" in row else ""
        print(f"{row['metric']:<55} {row['value']:>8.2f} {row['unit']:<2} {goal:>7}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
