"""Generation and indexing speed of the synthetic archive, beside DCMTK's indexer.

    python benchmarks/bench_generate.py            # full: default patients, 10,000-patient index
    python benchmarks/bench_generate.py --short    # CI: tiny sizes, checks the script works

Goals (issue 2): one default patient (120-slice CT + structure set + plan + dose) built
in under 1.5 s; an index of 10,000 seeded patients in under 60 s and 500 MB peak RSS.
The import row compares our folder import with DCMTK's ``dcmqridx`` on the same files.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pydicom

from emulators.archive import ArchiveIndex, import_folder
from emulators.files import write_patient
from emulators.synthetic import SyntheticConfig, make_recipe, object_refs
from emulators.synthetic.modules import with_file_meta

_INDEX_CHILD = """
import json, resource, sys, time
from emulators.archive import Archive
from emulators.synthetic import Profile, SyntheticConfig
n, profile = int(sys.argv[1]), sys.argv[2]
start = time.perf_counter()
archive = Archive.synthetic(SyntheticConfig(seed=1, profile=Profile(profile)), n)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "rss_mb": resource.getrusage(
    resource.RUSAGE_SELF).ru_maxrss / 1024, "instances": archive.index.counts().instances}))
"""


def _patient_seconds(config: SyntheticConfig, index: int, encode: bool) -> float:
    start = time.perf_counter()
    for obj in object_refs(make_recipe(config, index)):
        ds = obj.build()
        if encode:
            pydicom.dcmwrite(io.BytesIO(), with_file_meta(ds), enforce_file_format=True)
    return time.perf_counter() - start


def _index_child(patients: int, profile: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", _INDEX_CHILD, str(patients), profile],
                         check=True, capture_output=True, text=True).stdout
    result: dict[str, float] = json.loads(out)
    return result


def _write(config: SyntheticConfig, patients: int, folder: Path) -> list[Path]:
    return [path for i in range(patients)
            for path in write_patient(make_recipe(config, i), folder)]


def _import_vs_dcmqridx(config: SyntheticConfig, patients: int) -> tuple[float, float, int]:
    dcmqridx = shutil.which("dcmqridx")
    if dcmqridx is None:
        raise SystemExit("dcmqridx (DCMTK) is needed: apt-get install dcmtk")
    with tempfile.TemporaryDirectory() as tmp:
        files = _write(config, patients, Path(tmp) / "files")
        start = time.perf_counter()
        with ArchiveIndex() as index:
            report = import_folder(index, Path(tmp) / "files")
        ours = time.perf_counter() - start
        assert report.imported == len(files) and not report.skipped
        (Path(tmp) / "qr").mkdir()
        start = time.perf_counter()
        # dcmqridx takes the files on its command line; feed them in chunks.
        for k in range(0, len(files), 500):
            subprocess.run([dcmqridx, "-q", str(Path(tmp) / "qr"),
                            *map(str, files[k:k + 500])], check=True)
        theirs = time.perf_counter() - start
    return ours, theirs, len(files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--short", action="store_true", help="tiny sizes (CI smoke run)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    default = SyntheticConfig(seed=1)
    config = (SyntheticConfig(seed=1, slices=8, rows=64, columns=64) if args.short
              else default)
    runs = 1 if args.short else 3
    build = [_patient_seconds(config, i, encode=False) for i in range(runs)]
    encode = [_patient_seconds(config, i, encode=True) for i in range(runs)]
    n_index = 200 if args.short else 10_000
    clean = _index_child(n_index, "clean")
    messy = _index_child(n_index, "messy")
    ours, theirs, files = _import_vs_dcmqridx(
        config if args.short else SyntheticConfig(seed=1, slices=120),
        1 if args.short else 5)

    rows = [
        ("one patient, build datasets (s, median)", statistics.median(build), None, 1.5),
        ("one patient, build + encode Part 10 (s, median)", statistics.median(encode), None,
         None),
        (f"index {n_index} clean patients (s)", clean["seconds"], None, 60.0),
        (f"index {n_index} clean patients (peak RSS MB)", clean["rss_mb"], None, 500.0),
        (f"index {n_index} messy patients (s)", messy["seconds"], None, 60.0),
        (f"index {n_index} messy patients (peak RSS MB)", messy["rss_mb"], None, 500.0),
        (f"index {files} files: import_folder vs dcmqridx (s)", ours, theirs, None),
    ]
    if args.json:
        print(json.dumps([{"metric": m, "ours": o, "dcmtk": d, "goal": g}
                          for m, o, d, g in rows], indent=2))
        return 0
    print(f"{'metric':52} {'ours':>9} {'DCMTK':>9} {'ratio':>7} {'goal':>7}")
    for metric, value, dcmtk, goal in rows:
        theirs_text = f"{dcmtk:9.2f}" if dcmtk else f"{'-':>9}"
        ratio = f"{value / dcmtk:7.2f}" if dcmtk else f"{'-':>7}"
        goal_text = f"{goal:7g}" if goal is not None else f"{'-':>7}"
        print(f"{metric:52} {value:9.2f} {theirs_text} {ratio} {goal_text}")
    if args.short:
        print("(short mode: sizes are tiny; the figures say nothing about the goals)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
