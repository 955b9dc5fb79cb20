"""The soak (benchmarks/soak.py): `dbdsim serve` answers many associations from parallel
clients with no error, flat memory, and its threads and open files back to idle.

CI runs 200 associations; ``pytest --long`` (or DBDSIM_LONG=1) the issue's 2,000.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from daemons import LOOPBACK, make_site, small_archive
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelMove,
)

from benchmarks.soak import (
    FULL,
    KINDS,
    SHORT,
    Operation,
    SoakConfig,
    catalog,
    next_operation,
    run_soak,
)
from client.site import Timeouts
from client.tcp import NO_DELAY
from emulators.faults import Faults, FileDaemonFaults, StoreFaults
from emulators.serve import serving_faults


def test_the_mix_is_seeded_and_each_client_moves_only_its_own_patients() -> None:
    config = SoakConfig(clients=2, seed=3)
    patients = catalog(config)
    own = patients[0::2]

    def ops(seed: str) -> list[Operation]:
        rng = random.Random(seed)
        return [next_operation(rng, patients, own, 0.25) for _ in range(400)]

    first = ops("3-0")
    assert first == ops("3-0") and first != ops("3-1")
    kinds = Counter(op.kind for op in first)
    assert set(kinds) == set(KINDS)
    assert 0.3 < kinds["echo"] / len(first) < 0.5
    own_ids = {p.patient_id for p in own}
    for op in first:
        assert op.expected or op.kind == "echo"
        if op.kind.startswith("move"):
            assert op.patient_id in own_ids
            assert len(op.files) == len(op.expected)


@pytest.mark.interop
@pytest.mark.slow
def test_soak(long_mode: bool, require_tool: Callable[[str], str], tmp_path: Path) -> None:
    for tool in ("echoscu", "findscu", "movescu"):
        require_tool(tool)
    config = FULL if long_mode else SHORT  # SHORT's memory bound: see benchmarks/soak.py
    report = run_soak(config, tmp_path)
    summary = report.to_dict()
    assert report.errors == [], summary
    assert report.daemon_log_errors == [], summary
    assert report.total == config.associations
    assert all(report.done[kind] for kind in KINDS), report.done
    assert report.by_tool["dcmtk"] and report.by_tool["pynetdicom"]
    assert any((tmp_path / "fd").rglob("*.dcm"))  # each move's files were checked there
    assert report.idle is not None and report.end is not None
    assert report.end.threads == report.idle.threads, summary
    assert report.end.sockets <= report.idle.sockets, summary
    assert report.end.fds <= report.idle.fds, summary
    assert report.growth < config.max_growth, summary
    assert report.exit_code == 0
    assert report.client_threads[1] <= report.client_threads[0]
    assert report.failures() == []


def test_a_move_longer_than_the_network_timeout_ends_in_a_release(tmp_path: Path) -> None:
    # Found by a soak run slowed down by tracemalloc: pynetdicom's network timeout only
    # counts what the peer sends, so the daemon aborted the association of a caller that
    # had waited for a long move, when that caller then asked to release it.
    site = make_site(tmp_path, timeouts=Timeouts(network=0.5))
    slow = Faults(file_daemon=FileDaemonFaults(store=StoreFaults(write_delay=0.2)))
    archive = small_archive(patients=1, slices=6)
    ct = archive.recipe(0).cts[0]
    try:
        with serving_faults(site, archive, slow) as served:
            ae = AE(ae_title=site.client.ae_title)
            ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
            assoc = ae.associate(LOOPBACK, served.db_port, ae_title=site.db_daemon.ae_title,
                                 evt_handlers=NO_DELAY)
            assert assoc.is_established
            ds = Dataset()
            ds.QueryRetrieveLevel = "SERIES"
            ds.StudyInstanceUID = ct.study.uid
            ds.SeriesInstanceUID = ct.series.uid
            statuses = [s for s, _ in assoc.send_c_move(
                ds, site.file_daemon.ae_title, StudyRootQueryRetrieveInformationModelMove)]
            assoc.release()
            ae.shutdown()
    finally:
        archive.close()
    final = statuses[-1]
    assert final.Status == 0 and final.NumberOfCompletedSuboperations == 6  # 1.2 s
    assert assoc.is_released and not assoc.is_aborted
