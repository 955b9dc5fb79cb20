"""Eight movescu processes at once against one DB Daemon: nothing lost, nothing twice."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from daemons import DCMTK_ENV, assert_same_object, running_daemons, small_archive

from emulators.files import write_patient

pytestmark = pytest.mark.interop

PATIENTS, PROCESSES = 10, 8


def test_ten_ct_series_by_eight_concurrent_movescu(
        tmp_path: Path, require_tool: Callable[[str], str]) -> None:
    require_tool("movescu")
    archive = small_archive(patients=PATIENTS, seed=11, slices=12, size=64)
    recipes = [archive.recipe(i) for i in range(PATIENTS)]
    cts = [recipe.cts[0] for recipe in recipes]
    wanted = {(r.patient_id, uid) for r, ct in zip(recipes, cts, strict=True)
              for uid in ct.slice_uids}
    expected = {}
    for recipe in recipes:
        for path in write_patient(recipe, tmp_path / "generated"):
            name = path.relative_to(tmp_path / "generated")
            if (name.parts[0], name.name[3:-4]) in wanted:
                expected[name] = path
    # Series are dealt round-robin: processes 0 and 1 move two series on one association.
    batches = [cts[i::PROCESSES] for i in range(PROCESSES)]
    try:
        with running_daemons(tmp_path, archive) as (_site, dbd, fd):
            procs = []
            for i, batch in enumerate(batches):
                queries = []
                for j, ct in enumerate(batch):
                    query = tmp_path / f"q{i}-{j}.txt"
                    query.write_text(f"(0008,0052) CS [SERIES]\n(0020,000e) UI [{ct.series.uid}]\n")
                    dcm = query.with_suffix(".dcm")
                    subprocess.run(["dump2dcm", "-q", str(query), str(dcm)], check=True)
                    queries.append(str(dcm))
                log = (tmp_path / f"movescu{i}.log").open("w")
                procs.append((subprocess.Popen(
                    ["movescu", "-S", "-aet", "DCMTK", "-aec", "VMSDBD1", "-aem", "VMSFD",
                     "127.0.0.1", str(dbd.port), *queries],
                    stdout=log, stderr=subprocess.STDOUT, env=DCMTK_ENV), log))
            for proc, log in procs:
                assert proc.wait(timeout=300) == 0, Path(log.name).read_text()
                log.close()
            assert fd.stored == len(wanted)  # each object written once, none twice
    finally:
        archive.close()
    arrived = {path.relative_to(fd.output): path for path in fd.output.rglob("*")
               if path.is_file()}
    assert set(arrived) == set(expected)
    assert {(p.parts[0], p.name[3:-4]) for p in arrived} == wanted
    for name, path in arrived.items():
        assert_same_object(path, expected[name])
