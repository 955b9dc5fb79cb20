"""rtmove collect against the emulated daemons when things go wrong: each failure has its
exit code and a sentence naming the side at fault, and a re-run after a transient
fault moves only what is missing."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pydicom
import pytest
from daemons import make_site, small_archive
from peers import free_port
from pydicom.dataset import Dataset
from pynetdicom.events import Event, EventHandlerType

from client.archive_view import PatientArchive
from client.cli import main
from client.session import Session, quiesce_reactor
from client.settings import from_site
from client.site import Model, Quirks, Site
from emulators.archive import Archive
from emulators.db_daemon import DBDaemon
from emulators.faults.model import AssociationFaults, DBDaemonFaults
from emulators.file_daemon import FileDaemon
from emulators.serve import with_ports
from emulators.synthetic import PatientRecipe

pytestmark = pytest.mark.interop

RT_DOSE = "1.2.840.10008.5.1.4.1.1.481.2"
RT_STRUCT = "1.2.840.10008.5.1.4.1.1.481.3"
Hook = Callable[[int], None]


class HookedFileDaemon(FileDaemon):
    """The File Daemon, with a test's hook run before each store (the catalog of
    injectable faults comes with the scenarios issue)."""

    def __init__(self, site: Site, refuse: tuple[str, ...] = ()) -> None:
        super().__init__(site)
        self.hook: Hook | None = None
        self.seen = 0
        for sop_class in refuse:
            self.ae.remove_supported_context(sop_class)

    def handlers(self) -> list[EventHandlerType]:
        [(event, store)] = super().handlers()

        def hooked(ev: Event) -> int | Dataset:
            self.seen += 1
            if self.hook is not None:
                self.hook(self.seen)
            return store(ev)  # type: ignore[no-any-return]

        return [(event, hooked)]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """rtmove writes ./manifest.json when told nowhere else: keep it out of the repo."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def archive() -> Iterator[Archive]:
    archive = small_archive(patients=2, seed=7, slices=8, size=32)
    yield archive
    archive.close()


@contextmanager
def daemons(tmp: Path, archive: Archive, *, fd_port: int | None = None,
            refuse: tuple[str, ...] = (), **db: object,
            ) -> Iterator[tuple[Site, DBDaemon, HookedFileDaemon]]:
    site = make_site(tmp, **db)
    with HookedFileDaemon(site, refuse) as fd, \
            DBDaemon(with_ports(site, fd_port=fd_port or fd.port), archive) as dbd:
        yield with_ports(site, dbd.port, fd.port), dbd, fd


def rtmove(site: Site, recipe: PatientRecipe, capsys: pytest.CaptureFixture[str],
           *extra: str) -> tuple[int, dict[str, object]]:
    code = main(["collect", "--patient", recipe.patient_id, "--plan", recipe.plans[0].uid,
                 "--port", str(site.db_daemon.port), "--recv-port", str(site.client.port),
                 "--backoff", "0.01", "--json", "--verify-dir",
                 str(site.file_daemon.output / recipe.patient_id), *extra])
    out = capsys.readouterr().out
    return code, json.loads(out)


def cut_the_client_at(store: int, dbd: DBDaemon, site: Site) -> Hook:
    """A File Daemon hook aborting the client's association with the DB Daemon when the
    ``store``-th object arrives: the network cut halfway through a move."""
    def cut(seen: int) -> None:
        if seen == store:
            for assoc in dbd.ae.active_associations:
                if assoc.requestor.ae_title == site.client.ae_title:
                    assoc.abort()
    return cut


def idle(*daemons: DBDaemon | FileDaemon) -> None:
    """Wait until no daemon has an association open. A cut association ends rtmove's
    run at once, while the DB Daemon may still be storing the object it was sending (its
    move stops only when it notices): what the folder holds is known only after that."""
    deadline = time.monotonic() + 10
    while any(d.ae.active_associations for d in daemons) and time.monotonic() < deadline:
        time.sleep(0.01)


def collection(recipe: PatientRecipe) -> set[str]:
    plan = recipe.plans[0]
    ss = plan.structure_set
    return {plan.uid, ss.uid, *ss.ct.slice_uids,
            *(d.uid for d in recipe.doses if d.plan.uid == plan.uid)}


def in_folder(folder: Path) -> set[str]:
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
            for p in folder.rglob("*.dcm")}


def test_the_happy_path_to_the_file_daemon(tmp_path: Path, archive: Archive,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    recipe = archive.recipe(0)
    with daemons(tmp_path, archive) as (site, _dbd, fd):
        code, report = rtmove(site, recipe, capsys, "--write-manifest", str(tmp_path / "m.json"))
        assert code == 0, report
        assert in_folder(fd.output) == collection(recipe)
        assert fd.stored == len(collection(recipe))
    saved = json.loads((tmp_path / "m.json").read_text())
    assert {i["outcome"] for c in saved["collections"] for i in c["items"]} == {"arrived"}


def test_an_untrusted_client_is_told_to_get_on_the_trusted_list(
        tmp_path: Path, archive: Archive, capsys: pytest.CaptureFixture[str]) -> None:
    with daemons(tmp_path, archive) as (site, _dbd, fd):
        code, report = rtmove(site, archive.recipe(0), capsys, "--aet", "STRANGER")
        assert code == 3
        assert "rejected this client's AE title STRANGER" in str(report["error"])
        assert "add STRANGER with this machine's address to the daemon's trusted" \
            in str(report["error"])
        assert fd.stored == 0


def test_an_unknown_destination_stops_at_once(tmp_path: Path, archive: Archive,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with daemons(tmp_path, archive) as (site, _dbd, fd):
        code, report = rtmove(site, archive.recipe(0), capsys, "--dest", "NOSUCH")
        assert code == 5
        assert "VMSDBD1 does not know the move destination NOSUCH (status 0xA801)" \
            in str(report["error"])
        assert fd.stored == 0


def test_a_destination_that_is_down_is_named(tmp_path: Path, archive: Archive,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    with daemons(tmp_path, archive, fd_port=free_port()) as (site, _dbd, _fd):
        code, report = rtmove(site, archive.recipe(0), capsys, "--retries", "1")
        assert code == 5, report
        assert "could not deliver any object to VMSFD" in str(report["error"])
        assert "check that vmsfd is running" in str(report["error"]).lower()


def test_an_abort_halfway_through_the_ct_then_a_rerun_moves_only_the_rest(
        tmp_path: Path, archive: Archive, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = archive.recipe(0)
    with daemons(tmp_path, archive) as (site, dbd, fd):
        fd.hook = cut_the_client_at(5, dbd, site)  # plan, structure set, 3 CT slices
        code, report = rtmove(site, recipe, capsys, "--retries", "0")
        # The CT moves while rtmove still resolves the doses (client.early_moves): the
        # cut ends both, and with no retries the run stops unreachable (4); a cut after
        # resolving leaves the series incomplete (8).
        assert code in (4, 8), report
        idle(dbd, fd)
        first = in_folder(fd.output)
        missing = collection(recipe) - first
        assert missing and first
        if code == 8:
            outcomes = {i["role"]: i["outcome"]
                        for c in report["manifest"]["collections"] for i in c["items"]}
            assert outcomes["image-series"] == "incomplete"

        fd.hook = None
        before = fd.stored
        code, report = rtmove(site, recipe, capsys)
        assert code == 0, report
        assert in_folder(fd.output) == collection(recipe)
        assert fd.stored - before == len(missing)  # only what was missing moved again


def test_with_retries_the_abort_is_survived_in_one_run(
        tmp_path: Path, archive: Archive, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = archive.recipe(0)
    with daemons(tmp_path, archive) as (site, dbd, fd):
        fd.hook = cut_the_client_at(5, dbd, site)
        code, report = rtmove(site, recipe, capsys)
        assert code == 0, report
        assert in_folder(fd.output) == collection(recipe)


def test_a_destination_refusing_rt_dose_leaves_the_dose_missing(
        tmp_path: Path, archive: Archive, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = archive.recipe(0)
    with daemons(tmp_path, archive, refuse=(RT_DOSE,)) as (site, _dbd, fd):
        code, report = rtmove(site, recipe, capsys, "--retries", "1")
        assert code == 8, report
        doses = {d.uid for d in recipe.doses if d.plan.uid == recipe.plans[0].uid}
        assert in_folder(fd.output) == collection(recipe) - doses
        items = [i for c in report["manifest"]["collections"] for i in c["items"]]
        assert {i["outcome"] for i in items if i["role"] == "dose"} == {"failed"}
        assert all("most likely does not accept its SOP class" in i["note"]
                   for i in items if i["role"] == "dose")
        assert {i["outcome"] for i in items if i["role"] != "dose"} == {"arrived"}


def test_success_after_a_partial_series_is_caught_and_completed(
        tmp_path: Path, archive: Archive, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = archive.recipe(0)
    with daemons(tmp_path, archive, quirks=Quirks(partial_move_fraction=0.5)) \
            as (site, _dbd, fd):
        code, report = rtmove(site, recipe, capsys)
        assert code == 0, report
        assert in_folder(fd.output) == collection(recipe)


def test_without_a_folder_to_look_in_the_counts_still_catch_a_partial_series(
        tmp_path: Path, archive: Archive, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = archive.recipe(0)
    with daemons(tmp_path, archive, quirks=Quirks(partial_move_fraction=0.5)) \
            as (site, _dbd, _fd):
        code = main(["collect", "--patient", recipe.patient_id, "--plan", recipe.plans[0].uid,
                     "--port", str(site.db_daemon.port), "--recv-port", str(site.client.port),
                     "--backoff", "0.01", "--retries", "1", "--json"])
        report = json.loads(capsys.readouterr().out)
        assert code == 8, report
        items = [i for c in report["manifest"]["collections"] for i in c["items"]]
        assert {i["outcome"] for i in items if i["role"] == "image-series"} == {"incomplete"}


def test_where_the_site_serves_c_get_objects_for_this_client_come_by_c_get(
        tmp_path: Path, archive: Archive, capsys: pytest.CaptureFixture[str]) -> None:
    """The DB Daemon's entry for the client names a port nobody listens on, so a C-MOVE
    to the client could not work; with Study Root C-GET in the site's models, headers
    and --dest self come back on the client's own association."""
    recipe = archive.recipe(1)
    models = (Model.STUDY_FIND, Model.STUDY_MOVE, Model.STUDY_GET)
    with daemons(tmp_path, archive, models=models) as (site, _dbd, _fd):
        site_file = tmp_path / "site.toml"
        site_file.write_text(
            f'[db_daemon]\nport = {site.db_daemon.port}\n'
            f'models = ["study-root-find", "study-root-move", "study-root-get"]\n'
            f'[file_daemon]\nport = {site.file_daemon.port}\n'
            f'[client]\nport = {site.client.port}\n', encoding="utf-8")
        out = tmp_path / "out"
        code = main(["collect", "--site", str(site_file), "--patient", recipe.patient_id,
                     "--plan", recipe.plans[0].uid, "--recv-port", str(free_port()),
                     "--dest", "self", "--out", str(out), "--json"])
        report = json.loads(capsys.readouterr().out)
        assert code == 0, report
        assert in_folder(out) == collection(recipe)

        # The same without C-GET in the site file: the moves to the client go nowhere.
        site_file.write_text(site_file.read_text().replace(', "study-root-get"', ""))
        code = main(["collect", "--site", str(site_file), "--patient", recipe.patient_id,
                     "--plan", recipe.plans[0].uid, "--recv-port", str(free_port()),
                     "--dest", "self", "--out", str(tmp_path / "out2"), "--json",
                     "--retries", "0"])
        report = json.loads(capsys.readouterr().out)
        assert code == 5, report


def test_on_a_terminal_progress_bars_then_a_summary_table(
        tmp_path: Path, archive: Archive, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = archive.recipe(0)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    with daemons(tmp_path, archive) as (site, _dbd, _fd):
        code = main(["collect", "--patient", recipe.patient_id, "--plan", recipe.plans[0].uid,
                     "--port", str(site.db_daemon.port), "--recv-port", str(site.client.port),
                     "--write-manifest", str(tmp_path / "m.json")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"Patient {recipe.patient_id}" in out
    assert out.count("arrived") + out.count("moved") >= 4  # plan, structure set, CT, dose
    assert f"manifest: {tmp_path / 'm.json'}" in out


def test_vv_shows_pynetdicom_log_and_default_shows_none(tmp_path: Path, archive: Archive) -> None:
    with daemons(tmp_path, archive) as (site, _dbd, _fd):
        def echo(*flags: str) -> str:
            done = subprocess.run(
                [sys.executable, "-m", "client.cli", "echo", "--port",
                 str(site.db_daemon.port), *flags], capture_output=True, text=True,
                timeout=60, check=True)
            return done.stderr

        assert "pynetdicom" not in echo()
        assert "pynetdicom" in echo("-vv")


def test_objects_move_while_the_collection_is_still_resolved(
        tmp_path: Path, archive: Archive, capsys: pytest.CaptureFixture[str]) -> None:
    """The plan starts moving to the File Daemon as soon as it is known, before the last
    header rtmove reads to resolve the rest (client.early_moves), and nothing moves
    twice."""
    recipe = archive.recipe(0)
    with daemons(tmp_path, archive) as (site, dbd, fd):
        destinations: list[str] = []
        plan_move = dbd.plan_move

        def recorded(calling: str, destination: str, *args: Any) -> Any:
            destinations.append(destination)
            return plan_move(calling, destination, *args)

        dbd.plan_move = recorded  # type: ignore[method-assign]
        code, report = rtmove(site, recipe, capsys)
        assert code == 0, report
        to_self = [i for i, d in enumerate(destinations) if d == site.client.ae_title]
        to_fd = [i for i, d in enumerate(destinations) if d == site.file_daemon.ae_title]
        assert to_self and to_fd
        assert to_fd[0] < to_self[-1], destinations
        assert in_folder(fd.output) == collection(recipe)
        assert fd.stored == len(collection(recipe))  # each object stored once


def _recording(dbd: DBDaemon) -> list[tuple[str, str]]:
    """(destination, SOP Instance UID or "") of each C-MOVE the DB Daemon plans."""
    moves: list[tuple[str, str]] = []
    plan_move = dbd.plan_move

    def recorded(calling: str, destination: str, sop_class: str,
                 identifier: Dataset) -> Any:
        moves.append((destination, str(identifier.get("SOPInstanceUID", ""))))
        return plan_move(calling, destination, sop_class, identifier)

    dbd.plan_move = recorded  # type: ignore[method-assign]
    return moves


def test_the_plan_and_structure_set_are_read_where_they_arrive(
        tmp_path: Path, archive: Archive, capsys: pytest.CaptureFixture[str]) -> None:
    """With the File Daemon's folder in view, the plan and the structure set rtmove must
    read are read there once their moves end, not moved to rtmove as well; the doses it
    must read first to know them still come to rtmove."""
    recipe = archive.recipe(0)
    plan, ss = recipe.plans[0], recipe.plans[0].structure_set
    with daemons(tmp_path, archive) as (site, dbd, fd):
        moves = _recording(dbd)
        code, report = rtmove(site, recipe, capsys)
        assert code == 0, report
        to_self = {uid for dest, uid in moves if dest == site.client.ae_title}
        assert to_self and not to_self & {plan.uid, ss.uid}, moves
        assert to_self <= {d.uid for d in recipe.doses}, moves
        assert in_folder(fd.output) == collection(recipe)
        assert fd.stored == len(collection(recipe))


def test_a_structure_set_that_does_not_reach_the_destination_is_moved_to_rtmove(
        tmp_path: Path, archive: Archive, capsys: pytest.CaptureFixture[str]) -> None:
    """The File Daemon refuses RT Structure Sets: the structure set's header comes to
    rtmove instead, so its images are still found and moved."""
    recipe = archive.recipe(0)
    ss = recipe.plans[0].structure_set
    with daemons(tmp_path, archive, refuse=(RT_STRUCT,)) as (site, dbd, fd):
        moves = _recording(dbd)
        code, report = rtmove(site, recipe, capsys, "--retries", "0")
        assert code == 8, report
        assert (site.client.ae_title, ss.uid) in moves, moves
        assert in_folder(fd.output) == collection(recipe) - {ss.uid}
        outcomes = {i["role"]: i["outcome"]
                    for c in report["manifest"]["collections"] for i in c["items"]}
        assert outcomes["structure-set"] == "failed", outcomes
        assert outcomes["image-series"] == "arrived", outcomes


def test_a_daemon_refusing_a_second_association_gets_each_object_moved_once(
        tmp_path: Path, archive: Archive, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    """One association per client at a time (local limit exceeded beyond it): the early
    moves' association is asked for once, and the transfer moves everything itself, at
    once, with no retry spent."""
    recipe = archive.recipe(0)
    with daemons(tmp_path, archive) as (site, dbd, fd):
        dbd.inject(DBDaemonFaults(association=AssociationFaults(max_concurrent=1)))
        with caplog.at_level(logging.WARNING, logger="dbdsim"):
            code, report = rtmove(site, recipe, capsys, "--retries", "0")
        assert code == 0, report
        assert in_folder(fd.output) == collection(recipe)
        assert fd.stored == len(collection(recipe))
        rejected = [r for r in caplog.records if "live associations, more than" in r.message]
        assert len(rejected) == 1, [r.message for r in rejected]


def test_a_session_released_in_the_background_associates_again_when_used(
        tmp_path: Path, archive: Archive) -> None:
    """collect releases its first association once the collection is resolved, while the
    objects move; a retry that needs it waits for that release and associates anew."""
    recipe = archive.recipe(0)
    with daemons(tmp_path, archive) as (site, _dbd, _fd):
        with Session(from_site(site)) as session:
            session.connect()
            first = session._assoc
            assert first is not None
            session.release_in_background()
            assert PatientArchive(session, recipe.patient_id).studies()
            assert first.is_released and not first.dul.is_alive()
            assert session.associated and session._assoc is not first
            second = session._assoc
        assert not session.associated
        assert second is not None and second.is_released and not second.dul.is_alive()


def test_before_a_request_the_association_reactor_is_blocked(
        tmp_path: Path, archive: Archive) -> None:
    """quiesce_reactor returns only once pynetdicom's reactor waits on its checkpoint:
    until that is set again it cannot take a response meant for the request."""
    with daemons(tmp_path, archive) as (site, _dbd, _fd), Session(from_site(site)) as session:
        session.connect()
        assoc = session._assoc
        assert assoc is not None
        checkpoint = assoc._reactor_checkpoint
        for _ in range(20):
            quiesce_reactor(assoc)
            assert checkpoint._cond._waiters  # type: ignore[attr-defined]
            checkpoint.set()
            time.sleep(0.002)  # the reactor runs a loop or two
