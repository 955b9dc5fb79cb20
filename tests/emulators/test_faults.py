"""Every injectable fault, seen as a DICOM peer sees it, on daemons run by the pytest plugin.

The daemons come from dbdsim's own fixtures (``db_daemon``, ``file_daemon``, ``dbd_site``,
``dbd_faults``); pynetdicom (and DCMTK's movescu where it is the natural requester) plays
the client, so each assertion is about what goes over the wire: association results,
DIMSE statuses, counts, timeouts, and the files that land.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from daemons import associated
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from emulators.db_daemon import DBDaemon
from emulators.faults import (
    AssociationFaults,
    DataFaults,
    DBDaemonFaults,
    FaultError,
    Faults,
    FileDaemonFaults,
    FindFaults,
    MoveFaults,
    StoreFaults,
    from_mapping,
)
from emulators.file_daemon import FileDaemon
from emulators.pytest_plugin import DBDSite, PlanCollection, SyntheticArchive
from emulators.synthetic.modules import with_file_meta

SUCCESS, WARNING_FAILURES, CANCELLED = 0x0000, 0xB000, 0xFE00
OUT_OF_RESOURCES, SUBOPS_OUT_OF_RESOURCES = 0xA700, 0xA702


# -- the client side ---------------------------------------------------------------------

@dataclass
class Answer:
    """All responses to one C-FIND or C-MOVE, and what happened to the association."""

    responses: list[tuple[Dataset, Dataset | None]]
    first_after: float  # seconds from the request to the first response
    aborted: bool

    @property
    def final(self) -> Dataset:
        return self.responses[-1][0]

    @property
    def status(self) -> int | None:
        return int(self.final.Status) if "Status" in self.final else None

    @property
    def matches(self) -> list[Dataset]:
        return [ds for status, ds in self.responses
                if int(status.get("Status", -1)) in (0xFF00, 0xFF01) and ds is not None]

    @property
    def failed_uids(self) -> list[str]:
        identifier = self.responses[-1][1]
        if identifier is None or "FailedSOPInstanceUIDList" not in identifier:
            return []
        value = identifier.FailedSOPInstanceUIDList
        return [value] if isinstance(value, str) else [str(v) for v in value]


@contextmanager
def associate(site: DBDSite, *, fd: bool = False, dimse_timeout: float = 30.0,
              contexts: tuple[str, ...] = (), calling: str | None = None,
              ) -> Iterator[Association]:
    """An association (maybe rejected) with the DB Daemon (``fd``: the File Daemon);
    released, or aborted, and its AE shut down after."""
    ae = AE(ae_title=calling or site.client_aet)
    ae.acse_timeout = ae.network_timeout = 15
    ae.dimse_timeout = dimse_timeout
    for abstract in (Verification, StudyRootQueryRetrieveInformationModelFind,
                     StudyRootQueryRetrieveInformationModelMove, *contexts):
        ae.add_requested_context(abstract, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    host, port, called = ((site.fd_host, site.fd_port, site.fd_aet) if fd
                          else (site.db_host, site.db_port, site.db_aet))
    with associated(ae, host, port, called) as assoc:
        yield assoc


def _answer(responses: Iterator[tuple[Dataset, Dataset | None]], assoc: Association,
            ) -> Answer:
    start = time.monotonic()
    collected, first_after = [], None
    for status, identifier in responses:
        if first_after is None:
            first_after = time.monotonic() - start
        collected.append((status, identifier))
    if collected and "Status" not in collected[-1][0]:  # no final response: see why
        deadline = time.monotonic() + 5
        while assoc.is_established and time.monotonic() < deadline:
            time.sleep(0.02)
    return Answer(collected, first_after or 0.0, assoc.is_aborted)


def find(site: DBDSite, level: str, dimse_timeout: float = 30.0, **keys: str) -> Answer:
    query = Dataset()
    query.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    with associate(site, dimse_timeout=dimse_timeout) as assoc:
        assert assoc.is_established
        return _answer(assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind),
                       assoc)


def move(site: DBDSite, uids: list[str] | tuple[str, ...] | frozenset[str],
         dimse_timeout: float = 30.0, **keys: str) -> Answer:
    """One IMAGE-level C-MOVE of ``uids`` to the File Daemon."""
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.SOPInstanceUID = sorted(uids)
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    with associate(site, dimse_timeout=dimse_timeout) as assoc:
        assert assoc.is_established
        return _answer(assoc.send_c_move(query, site.fd_aet,
                                         StudyRootQueryRetrieveInformationModelMove), assoc)


def counts(status: Dataset) -> tuple[int, int, int]:
    """(completed, failed, warning) sub-operations of a C-MOVE response."""
    return (int(status.get("NumberOfCompletedSuboperations", -1)),
            int(status.get("NumberOfFailedSuboperations", -1)),
            int(status.get("NumberOfWarningSuboperations", -1)))


def movescu(tool: str, site: DBDSite, uids: frozenset[str], *flags: str,
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool, "-v", "-S", *flags, "-aet", site.client_aet, "-aec", site.db_aet,
         "-aem", site.fd_aet, "-k", "QueryRetrieveLevel=IMAGE",
         "-k", "SOPInstanceUID=" + "\\".join(sorted(uids)), site.db_host, str(site.db_port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=site.env, timeout=60,
        check=False)


def rejection(assoc: Association) -> tuple[int, int, int]:
    assert assoc.is_rejected, "the association was not rejected"
    rsp: Any = assoc.acceptor.primitive
    return int(rsp.result), int(rsp.result_source), int(rsp.diagnostic)


def every_file(folder: Path) -> list[Path]:
    """Every file under ``folder``, hidden (temporary) ones included."""
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def ct_slices(archive: SyntheticArchive, patient: int = 0) -> list[Dataset]:
    """Patient ``patient``'s CT slices, ready for C-STORE."""
    recipe = archive.patients[patient]
    return [with_file_meta(archive.archive.dataset(uid)) for uid in recipe.cts[0].slice_uids]


def store(site: DBDSite, datasets: list[Dataset]) -> list[tuple[Dataset, float]]:
    """C-STORE each dataset to the File Daemon: (response, seconds it took)."""
    answers = []
    with associate(site, fd=True, contexts=(CTImageStorage,)) as assoc:
        assert assoc.is_established
        for ds in datasets:
            start = time.monotonic()
            status = assoc.send_c_store(ds)
            answers.append((status, time.monotonic() - start))
    return answers


def db(**faults: Any) -> Faults:
    """Faults of the DB Daemon only: ``db(move=MoveFaults(...))``."""
    return Faults(db_daemon=DBDaemonFaults(**faults))


def fdf(**faults: Any) -> Faults:
    """Faults of the File Daemon only."""
    return Faults(file_daemon=FileDaemonFaults(**faults))


@pytest.fixture
def plan(synthetic_archive: SyntheticArchive) -> PlanCollection:
    return synthetic_archive.collection()


# -- association --------------------------------------------------------------------------

@pytest.mark.parametrize("triple", [(1, 1, 3), (1, 1, 7), (2, 3, 1), (1, 2, 2)])
def test_reject_is_seen_by_the_requester_as_given(dbd_site: DBDSite, dbd_faults: Any,
                                                  triple: tuple[int, int, int]) -> None:
    dbd_faults(db(association=AssociationFaults(reject=triple)))
    with associate(dbd_site) as assoc:
        assert rejection(assoc) == triple


def test_accept_delay_holds_the_association_answer(dbd_site: DBDSite, dbd_faults: Any) -> None:
    dbd_faults(db(association=AssociationFaults(accept_delay=0.5)))
    start = time.monotonic()
    with associate(dbd_site) as assoc:
        took = time.monotonic() - start
        assert assoc.is_established
        assert int(assoc.send_c_echo().Status) == SUCCESS
    assert took >= 0.5


def test_abort_after_pdus_aborts_the_association(dbd_site: DBDSite, dbd_faults: Any) -> None:
    # The A-ASSOCIATE-RQ is PDU 1; the C-ECHO request's P-DATA-TF is PDU 2.
    dbd_faults(db(association=AssociationFaults(abort_after_pdus=2)))
    with associate(dbd_site, dimse_timeout=10) as assoc:
        assert assoc.is_established
        status = assoc.send_c_echo()
        deadline = time.monotonic() + 5
        while not assoc.is_aborted and time.monotonic() < deadline:
            time.sleep(0.02)
        assert assoc.is_aborted
        assert "Status" not in status


def test_abort_after_one_pdu_aborts_at_the_request(dbd_site: DBDSite, dbd_faults: Any) -> None:
    dbd_faults(db(association=AssociationFaults(abort_after_pdus=1)))
    with associate(dbd_site) as assoc:
        assert not assoc.is_established
        assert assoc.is_aborted


def test_max_concurrent_rejects_the_association_beyond_it(dbd_site: DBDSite,
                                                          db_daemon: DBDaemon,
                                                          dbd_faults: Any) -> None:
    dbd_faults(db(association=AssociationFaults(max_concurrent=1)))
    with associate(dbd_site) as first:
        assert first.is_established
        with associate(dbd_site) as second:
            assert rejection(second) == (2, 3, 2)
        assert int(first.send_c_echo().Status) == SUCCESS
    # A released association counts until the daemon's thread for it has ended.
    deadline = time.monotonic() + 10
    while db_daemon.ae.active_associations and time.monotonic() < deadline:
        time.sleep(0.02)
    with associate(dbd_site) as third:  # the first one is gone: room again
        assert third.is_established


def test_times_limits_association_faults_to_the_first_requests(dbd_site: DBDSite,
                                                               dbd_faults: Any) -> None:
    dbd_faults(db(association=AssociationFaults(reject=(2, 3, 1), times=1)))
    with associate(dbd_site) as first:
        assert rejection(first) == (2, 3, 1)
    with associate(dbd_site) as second:
        assert second.is_established


def test_a_file_daemon_rejecting_the_sub_association_fails_the_move_with_a702(
        dbd_site: DBDSite, dbd_faults: Any, plan: PlanCollection) -> None:
    dbd_faults(fdf(association=AssociationFaults(reject=(1, 1, 3))))
    answer = move(dbd_site, plan.uids)
    assert answer.status == SUBOPS_OUT_OF_RESOURCES
    assert counts(answer.final) == (0, len(plan.uids), 0)
    assert "rejected" in str(answer.final.get("ErrorComment", ""))
    assert dbd_site.files() == {}


def test_dbd_faults_replace_the_earlier_ones(dbd_site: DBDSite, dbd_faults: Any) -> None:
    dbd_faults(db(association=AssociationFaults(reject=(1, 1, 3))))
    dbd_faults(Faults())
    with associate(dbd_site) as assoc:
        assert assoc.is_established


# -- C-FIND -------------------------------------------------------------------------------

def test_find_status_and_comment_replace_the_matches(dbd_site: DBDSite, dbd_faults: Any,
                                                     plan: PlanCollection) -> None:
    dbd_faults(db(find=FindFaults(status=0xC000, comment="index offline")))
    answer = find(dbd_site, "STUDY", PatientID=plan.patient_id, StudyInstanceUID="")
    assert answer.status == 0xC000
    assert answer.final.ErrorComment == "index offline"
    assert answer.matches == []


def test_find_delay_holds_the_first_response(dbd_site: DBDSite, dbd_faults: Any,
                                             plan: PlanCollection) -> None:
    dbd_faults(db(find=FindFaults(delay=0.5)))
    answer = find(dbd_site, "STUDY", PatientID=plan.patient_id, StudyInstanceUID="")
    assert answer.first_after >= 0.5
    assert answer.status == SUCCESS and len(answer.matches) == 1


def test_find_drop_lets_the_requesters_dimse_timeout_fire(dbd_site: DBDSite, dbd_faults: Any,
                                                          plan: PlanCollection) -> None:
    dbd_faults(db(find=FindFaults(drop=True)))
    start = time.monotonic()
    answer = find(dbd_site, "STUDY", dimse_timeout=0.5, PatientID=plan.patient_id,
                  StudyInstanceUID="")
    assert answer.aborted  # pynetdicom aborts when its DIMSE timeout fires
    assert answer.status is None and answer.matches == []
    assert 0.5 <= time.monotonic() - start < 10


def test_find_level_limits_the_fault_to_that_level(dbd_site: DBDSite, dbd_faults: Any,
                                                   synthetic_archive: SyntheticArchive) -> None:
    dbd_faults(db(find=FindFaults(status=0xC000, level="IMAGE")))
    recipe = synthetic_archive.patients[0]
    study = find(dbd_site, "STUDY", PatientID=recipe.patient_id, StudyInstanceUID="")
    image = find(dbd_site, "IMAGE", SeriesInstanceUID=recipe.cts[0].series.uid,
                 SOPInstanceUID="")
    assert study.status == SUCCESS and len(study.matches) == 1
    assert image.status == 0xC000 and image.matches == []


def test_find_times_limits_the_fault_to_the_first_queries(dbd_site: DBDSite, dbd_faults: Any,
                                                          plan: PlanCollection) -> None:
    dbd_faults(db(find=FindFaults(status=0xA700, times=1)))
    first = find(dbd_site, "STUDY", PatientID=plan.patient_id, StudyInstanceUID="")
    second = find(dbd_site, "STUDY", PatientID=plan.patient_id, StudyInstanceUID="")
    assert first.status == 0xA700
    assert second.status == SUCCESS and len(second.matches) == 1


# -- C-MOVE -------------------------------------------------------------------------------

def test_move_status_is_final_with_no_sub_operations(dbd_site: DBDSite, dbd_faults: Any,
                                                     plan: PlanCollection) -> None:
    dbd_faults(db(move=MoveFaults(status=0xC001, comment="busy")))
    answer = move(dbd_site, plan.uids)
    assert [int(s.Status) for s, _ in answer.responses] == [0xC001]
    assert counts(answer.final) == (0, 0, 0)
    assert answer.final.ErrorComment == "busy"
    assert dbd_site.files() == {}


def test_fail_suboperations_fail_those_and_list_them(dbd_site: DBDSite, dbd_faults: Any,
                                                     plan: PlanCollection) -> None:
    dbd_faults(db(move=MoveFaults(fail_suboperations=(1, 3))))
    answer = move(dbd_site, plan.uids)
    assert answer.status == WARNING_FAILURES
    assert counts(answer.final) == (len(plan.uids) - 2, 2, 0)
    failed = answer.failed_uids
    assert len(failed) == 2 and set(failed) <= plan.uids
    arrived = {p.name.split(".", 1)[1][:-4] for p in dbd_site.fd_out.rglob("*.dcm")}
    assert arrived == plan.uids - set(failed)


def test_fail_fraction_fails_the_same_sub_operations_for_the_same_seed(
        dbd_site: DBDSite, dbd_faults: Any, plan: PlanCollection) -> None:
    def failed_with(seed: int) -> list[str]:
        dbd_faults(db(move=MoveFaults(fail_fraction=0.5, seed=seed)))  # counters reset
        answer = move(dbd_site, plan.uids)
        assert answer.status == WARNING_FAILURES
        assert counts(answer.final)[1] == round(len(plan.uids) * 0.5)
        return answer.failed_uids

    first, again = failed_with(3), failed_with(3)
    assert first == again
    others = [failed_with(seed) for seed in (4, 5, 6)]
    assert any(set(other) != set(first) for other in others)


def test_abort_after_aborts_the_requester_after_n_sub_operations(
        dbd_site: DBDSite, dbd_faults: Any, plan: PlanCollection) -> None:
    dbd_faults(db(move=MoveFaults(abort_after=3)))
    answer = move(dbd_site, plan.uids)
    assert answer.aborted
    pending = [s for s, _ in answer.responses if int(s.get("Status", -1)) == 0xFF00]
    assert pending  # at most one each 20 ms: their number depends on the machine's speed
    assert all(int(s.NumberOfCompletedSuboperations) <= 3 for s in pending)
    assert sum(dbd_site.files().values()) == 3


def test_drop_final_sends_everything_but_the_final_response(
        dbd_site: DBDSite, dbd_faults: Any, plan: PlanCollection) -> None:
    dbd_faults(db(move=MoveFaults(drop_final=True)))
    answer = move(dbd_site, plan.uids, dimse_timeout=0.5)
    assert answer.aborted
    assert {int(s.get("Status", -1)) for s, _ in answer.responses} <= {0xFF00, -1}
    assert dbd_site.files(plan.patient_id) == plan.files_by_modality()


@pytest.mark.interop
@pytest.mark.parametrize("ignored", [False, True], ids=["honoured", "ignored"])
def test_ignore_cancel_keeps_sending_after_c_cancel(
        dbd_site: DBDSite, dbd_faults: Any, plan: PlanCollection, ignored: bool,
        require_tool: Callable[[str], str]) -> None:
    # A slow File Daemon, so the C-CANCEL is in before the sub-operations are over.
    dbd_faults(Faults(db_daemon=DBDaemonFaults(move=MoveFaults(ignore_cancel=ignored)),
                      file_daemon=FileDaemonFaults(store=StoreFaults(write_delay=0.1))))
    done = movescu(require_tool("movescu"), dbd_site, plan.uids, "--cancel", "1")
    arrived = sum(dbd_site.files().values())
    assert "Sending Cancel Request" in done.stdout, done.stdout
    if ignored:
        assert arrived == len(plan.uids), done.stdout
        assert "Received Final Move Response (Success)" in done.stdout, done.stdout
    else:
        assert arrived < len(plan.uids), done.stdout
        assert "Received Final Move Response (Cancel" in done.stdout, done.stdout


def test_modalities_limit_move_faults_to_moves_touching_them(
        dbd_site: DBDSite, dbd_faults: Any, plan: PlanCollection) -> None:
    dbd_faults(db(move=MoveFaults(status=0xC001, modalities=("RTDOSE",))))
    images = move(dbd_site, plan.image_uids)
    doses = move(dbd_site, plan.dose_uids)
    assert images.status == SUCCESS
    assert counts(images.final) == (len(plan.image_uids), 0, 0)
    assert doses.status == 0xC001


def test_move_delay_holds_the_first_sub_operation(dbd_site: DBDSite, dbd_faults: Any,
                                                  plan: PlanCollection) -> None:
    dbd_faults(db(move=MoveFaults(delay=0.5)))
    answer = move(dbd_site, plan.uids)
    assert answer.first_after >= 0.5
    assert answer.status == SUCCESS


def test_move_times_limits_the_fault_to_the_first_moves(dbd_site: DBDSite, dbd_faults: Any,
                                                        plan: PlanCollection) -> None:
    dbd_faults(db(move=MoveFaults(status=0xA701, times=1)))
    assert move(dbd_site, plan.uids).status == 0xA701
    assert move(dbd_site, plan.uids).status == SUCCESS


# -- the File Daemon ------------------------------------------------------------------------

def test_a_refused_sop_class_fails_only_its_sub_operations(
        dbd_site: DBDSite, dbd_faults: Any, plan: PlanCollection) -> None:
    dbd_faults(fdf(store=StoreFaults(refuse_sop_classes=("RTDoseStorage",))))
    answer = move(dbd_site, plan.uids)
    assert answer.status == WARNING_FAILURES
    assert sorted(answer.failed_uids) == sorted(plan.dose_uids)
    assert dbd_site.files(plan.patient_id) == {
        m: n for m, n in plan.files_by_modality().items() if m != "RTDOSE"}


def test_out_of_resources_after_n_objects(dbd_site: DBDSite, dbd_faults: Any,
                                          synthetic_archive: SyntheticArchive) -> None:
    dbd_faults(fdf(store=StoreFaults(out_of_resources_after=3)))
    slices = ct_slices(synthetic_archive)
    statuses = [int(status.Status) for status, _ in store(dbd_site, slices)]
    assert statuses == [SUCCESS] * 3 + [OUT_OF_RESOURCES] * (len(slices) - 3)
    assert dbd_site.files() == {"CT": 3}


def test_a_full_disk_answers_a700_and_leaves_no_partial_file(
        dbd_site: DBDSite, dbd_faults: Any, synthetic_archive: SyntheticArchive) -> None:
    dbd_faults(fdf(store=StoreFaults(disk_full_after=2)))
    slices = ct_slices(synthetic_archive)[:4]
    answers = [status for status, _ in store(dbd_site, slices)]
    assert [int(s.Status) for s in answers] == [SUCCESS, SUCCESS, OUT_OF_RESOURCES,
                                                OUT_OF_RESOURCES]
    assert "No space left" in str(answers[2].ErrorComment)
    stored = {str(ds.SOPInstanceUID) for ds in slices[:2]}
    names = [p.name for p in every_file(dbd_site.fd_out)]
    assert sorted(names) == sorted(f"CT.{uid}.dcm" for uid in stored), names


def test_write_delay_slows_every_answer(dbd_site: DBDSite, dbd_faults: Any,
                                        synthetic_archive: SyntheticArchive) -> None:
    dbd_faults(fdf(store=StoreFaults(write_delay=0.3)))
    answers = store(dbd_site, ct_slices(synthetic_archive)[:2])
    assert all(int(status.Status) == SUCCESS and took >= 0.3 for status, took in answers)


def test_finish_after_answers_first_and_writes_later_even_past_stop(
        dbd_site: DBDSite, dbd_faults: Any, file_daemon: FileDaemon,
        synthetic_archive: SyntheticArchive) -> None:
    dbd_faults(fdf(store=StoreFaults(finish_after=1.0)))
    [(status, took)] = store(dbd_site, ct_slices(synthetic_archive)[:1])
    assert int(status.Status) == SUCCESS and took < 1.0
    assert dbd_site.files() == {}  # answered, not yet on disk
    file_daemon.stop()  # waits for the late write: the file is not lost
    assert dbd_site.files() == {"CT": 1}
    [path] = every_file(dbd_site.fd_out)
    assert pydicom.dcmread(path).SOPInstanceUID == synthetic_archive.patients[0].cts[0] \
        .slice_uids[0]


# -- data -----------------------------------------------------------------------------------

def _image_uids(site: DBDSite, series_uid: str) -> list[str]:
    answer = find(site, "IMAGE", SeriesInstanceUID=series_uid, SOPInstanceUID="")
    assert answer.status == SUCCESS
    return [str(ds.SOPInstanceUID) for ds in answer.matches]


def _modalities(site: DBDSite, patient_id: str) -> list[str]:
    answer = find(site, "SERIES", PatientID=patient_id, Modality="", SeriesInstanceUID="")
    assert answer.status == SUCCESS
    return sorted(str(ds.Modality) for ds in answer.matches)


def test_missing_slices_are_not_in_the_archive(dbd_site: DBDSite, dbd_faults: Any,
                                               synthetic_archive: SyntheticArchive) -> None:
    ct = synthetic_archive.patients[0].cts[0]
    dbd_faults(Faults(data=DataFaults(missing_slices=(0, 2))))
    found = _image_uids(dbd_site, ct.series.uid)
    assert len(found) == len(ct.slice_uids) - 2
    assert set(found) == set(ct.slice_uids) - {ct.slice_uids[0], ct.slice_uids[2]}


@pytest.mark.parametrize(("dangling", "gone"), [
    ("structure-set", "RTSTRUCT"),
    ("image-series", "CT"),
    ("plan", "RTPLAN"),
])
def test_dangling_references_lack_their_target(dbd_site: DBDSite, dbd_faults: Any,
                                               plan: PlanCollection, dangling: str,
                                               gone: str) -> None:
    before = _modalities(dbd_site, plan.patient_id)
    dbd_faults(Faults(data=DataFaults(dangling=dangling)))
    after = _modalities(dbd_site, plan.patient_id)
    assert gone in before and gone not in after
    assert sorted([*after, gone]) == before  # nothing else is gone


@pytest.mark.dbd_archive(patients=2)
def test_duplicate_uid_moves_the_other_patients_object(dbd_site: DBDSite, dbd_faults: Any,
                                                       synthetic_archive: SyntheticArchive,
                                                       ) -> None:
    p0, p1 = synthetic_archive.patients
    dbd_faults(Faults(data=DataFaults(patient=1, duplicate_uid_of=0)))
    shared = p0.cts[0].slice_uids[0]
    listed = _image_uids(dbd_site, p1.cts[0].series.uid)
    assert shared in listed and p1.cts[0].slice_uids[0] not in listed
    # Patient 1's first slice, as its own series lists it...
    answer = move(dbd_site, [shared], SeriesInstanceUID=p1.cts[0].series.uid)
    assert answer.status == SUCCESS
    # ...arrives as patient 0's object.
    assert dbd_site.files(p1.patient_id) == {}
    [path] = every_file(dbd_site.fd_out)
    assert str(pydicom.dcmread(path).PatientID) == p0.patient_id


def _non_ascii_patient(archive: SyntheticArchive) -> tuple[int, str]:
    """The first patient with a non-ASCII name: (index, name)."""
    return next((i, str(r.people.patient_name.pn)) for i, r in enumerate(archive.patients)
                if not str(r.people.patient_name.pn).isascii())


def _charset_case(alphabet: str, seed: int, patients: int) -> Any:
    return pytest.param(alphabet, marks=pytest.mark.dbd_archive(seed=seed, patients=patients),
                        id=alphabet)


@pytest.mark.parametrize("charset", ["missing", "wrong"])
@pytest.mark.parametrize("alphabet", [
    _charset_case("latin", 0, 3),  # seed 0, patient 2: a German name (fits Latin-1)
    _charset_case("cyrillic", 2, 1),  # seed 2, patient 0: a Russian name
])
def test_charset_faults_send_utf8_bytes_mislabelled(dbd_site: DBDSite, dbd_faults: Any,
                                                    synthetic_archive: SyntheticArchive,
                                                    charset: str, alphabet: str) -> None:
    ds = _moved_plan_of_non_ascii_patient(dbd_site, dbd_faults, synthetic_archive, charset,
                                          alphabet)
    _, name = _non_ascii_patient(synthetic_archive)
    assert ds.get_item("PatientName").value.rstrip(b" ") == name.encode("utf-8")
    if charset == "missing":
        assert "SpecificCharacterSet" not in ds
    else:
        assert ds.SpecificCharacterSet == "ISO_IR 100"


def _moved_plan_of_non_ascii_patient(site: DBDSite, apply: Any, archive: SyntheticArchive,
                                     charset: str, alphabet: str) -> Dataset:
    """With the charset fault on the first patient with a non-ASCII name: their plan as
    it arrived at the File Daemon."""
    patient, name = _non_ascii_patient(archive)
    assert _fits_latin1(name) == (alphabet == "latin"), name
    apply(Faults(data=DataFaults(patient=patient, charset=charset)))
    assert move(site, [archive.collection(patient).plan_uid]).status == SUCCESS
    [path] = every_file(site.fd_out)
    return pydicom.dcmread(path)


def _fits_latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


@pytest.mark.dbd_archive(seed=2, patients=1)
def test_without_a_charset_fault_the_name_arrives_as_labelled(
        dbd_site: DBDSite, synthetic_archive: SyntheticArchive, plan: PlanCollection) -> None:
    assert move(dbd_site, [plan.plan_uid]).status == SUCCESS
    [path] = every_file(dbd_site.fd_out)
    ds = pydicom.dcmread(path)
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert str(ds.PatientName) == str(synthetic_archive.patients[0].people.patient_name.pn)


def test_dose_on_other_grid_has_another_frame_of_reference(
        dbd_site: DBDSite, dbd_faults: Any, plan: PlanCollection) -> None:
    dbd_faults(Faults(data=DataFaults(dose_on_other_grid=True)))
    assert move(dbd_site, plan.uids).status == SUCCESS
    folder = dbd_site.fd_out / plan.patient_id
    [dose] = (pydicom.dcmread(p) for p in folder.glob("RTDOSE.*.dcm"))
    ct = pydicom.dcmread(next(folder.glob("CT.*.dcm")))
    assert dose.FrameOfReferenceUID != ct.FrameOfReferenceUID


def test_empty_beams_sends_a_plan_without_beams(dbd_site: DBDSite, dbd_faults: Any,
                                                plan: PlanCollection) -> None:
    dbd_faults(Faults(data=DataFaults(empty_beams=True)))
    assert move(dbd_site, [plan.plan_uid]).status == SUCCESS
    [path] = every_file(dbd_site.fd_out)
    ds = pydicom.dcmread(path)
    assert len(ds.BeamSequence) == 0
    assert all(int(g.NumberOfBeams) == 0 for g in ds.FractionGroupSequence)


def test_a_data_fault_for_a_patient_beyond_the_archive_names_it(dbd_faults: Any) -> None:
    with pytest.raises(FaultError, match="patient 3: the archive has 1 patients"):
        dbd_faults(Faults(data=DataFaults(patient=3, empty_beams=True)))


# -- reading faults from a mapping (a scenario's TOML) ----------------------------------------

def test_from_mapping_names_an_unknown_key_and_suggests_one() -> None:
    with pytest.raises(FaultError) as caught:
        from_mapping(Faults, {"db_daemon": {"find": {"stauts": 0xC000}}})
    message = str(caught.value)
    assert message.startswith("faults.db_daemon.find.stauts: unknown key")
    assert "did you mean 'status'?" in message


@pytest.mark.parametrize(("table", "where", "says"), [
    ({"db_daemon": {"move": {"drop_final": "yes"}}}, "faults.db_daemon.move.drop_final",
     "expected true or false"),
    ({"db_daemon": {"find": {"delay": "1s"}}}, "faults.db_daemon.find.delay",
     "expected a number"),
    ({"db_daemon": {"move": {"status": "C001"}}}, "faults.db_daemon.move.status",
     "expected an integer"),
    ({"db_daemon": {"association": {"reject": [1, 1]}}},
     "faults.db_daemon.association.reject", "expected 3 values"),
    ({"file_daemon": "full"}, "faults.file_daemon", "expected a table"),
])
def test_from_mapping_names_the_key_of_a_bad_value(table: dict[str, Any], where: str,
                                                   says: str) -> None:
    with pytest.raises(FaultError) as caught:
        from_mapping(Faults, table)
    assert str(caught.value).startswith(where)
    assert says in str(caught.value)


@pytest.mark.parametrize(("triple", "says"), [
    ([3, 1, 1], "reject result 3"),
    ([1, 1, 5], "source 1 with reason 5 is not in PS3.8"),
    ([2, 3, 3], "source 3 with reason 3"),
])
def test_from_mapping_refuses_a_reject_triple_ps3_8_does_not_allow(triple: list[int],
                                                                    says: str) -> None:
    with pytest.raises(FaultError) as caught:
        from_mapping(Faults, {"db_daemon": {"association": {"reject": triple}}})
    assert str(caught.value).startswith("faults.db_daemon.association")
    assert says in str(caught.value)


def test_from_mapping_reads_statuses_written_as_hex_strings() -> None:
    faults = from_mapping(Faults, {"db_daemon": {"move": {"status": "0xC001"},
                                                 "find": {"status": 0xA700}}})
    assert faults.db_daemon.move.status == 0xC001
    assert faults.db_daemon.find.status == 0xA700
    with pytest.raises(FaultError, match="not a 16-bit DIMSE status"):
        from_mapping(Faults, {"db_daemon": {"move": {"status": "0x1C001"}}})
