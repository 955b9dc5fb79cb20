"""pytest fixtures that run dbdsim's emulated DB Daemon and File Daemon for one test.

Installed with dbdsim (entry point ``pytest11: dbdsim``), so a project that has dbdsim
in its test environment can test its own export tool, in any language, against the
emulated daemons: no Aria, no conftest. Every fixture is function-scoped and shares one
stage: requesting any of them starts both daemons on free loopback ports (over a seeded
synthetic archive) and the test's end stops them::

    import subprocess

    import pytest

    @pytest.mark.dbd_archive(seed=3, patients=2)
    def test_my_export(dbd_site, synthetic_archive):
        plan = synthetic_archive.collection(patient=1)
        subprocess.run(["my-export", "--site", str(dbd_site.path), plan.plan_uid],
                       env=dbd_site.env, check=True)
        assert dbd_site.files(plan.patient_id) == plan.files_by_modality()

Markers: ``dbd_archive(**ArchiveSpec fields)`` (alias ``synthetic_archive``) chooses the
archive; ``dbd_scenario("name-or-path.toml")`` serves a catalog scenario's site, archive
and faults. The ``dbd_faults`` fixture breaks the running daemons mid-test.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

# dbdsim itself is imported when a fixture is set up, not here: this module is loaded by
# every pytest run in an environment that has dbdsim installed.
if TYPE_CHECKING:
    from client.site import Site

    from .archive import Archive
    from .db_daemon import DBDaemon
    from .faults import Faults
    from .file_daemon import FileDaemon
    from .scenarios import ArchiveSpec, Scenario, Stage
    from .synthetic import PatientRecipe, SyntheticConfig

__all__ = ["ApplyFaults", "DBDSite", "PlanCollection", "SyntheticArchive"]

ApplyFaults = Callable[["Faults"], None]
"""The ``dbd_faults`` fixture: inject these faults into the running daemons."""

ARCHIVE_MARKERS = ("dbd_archive", "synthetic_archive")
SCENARIO_MARKER = "dbd_scenario"


@dataclass(frozen=True)
class PlanCollection:
    """One plan's collection: what a correct export of that plan must deliver."""

    patient_id: str
    plan_uid: str
    plan_label: str
    structure_set_uid: str
    image_uids: tuple[str, ...]  # the CT series the structure set was drawn on
    dose_uids: tuple[str, ...]  # every RT Dose computed for the plan

    @property
    def uids(self) -> frozenset[str]:
        """Every SOP Instance UID of the collection."""
        return frozenset((self.plan_uid, self.structure_set_uid, *self.image_uids,
                          *self.dose_uids))

    def files_by_modality(self) -> dict[str, int]:
        """Objects per modality, as :meth:`DBDSite.files` counts them (no zero counts)."""
        counts = {"RTPLAN": 1, "RTSTRUCT": 1, "CT": len(self.image_uids),
                  "RTDOSE": len(self.dose_uids)}
        return {modality: n for modality, n in sorted(counts.items()) if n}


@dataclass(frozen=True)
class SyntheticArchive:
    """The seeded archive the DB Daemon serves, and its ground truth."""

    archive: Archive
    config: SyntheticConfig
    patients: list[PatientRecipe]  # by synthetic index

    @property
    def patient_ids(self) -> list[str]:
        return [recipe.patient_id for recipe in self.patients]

    def collection(self, patient: int = 0, plan: int = 0) -> PlanCollection:
        """The collection of plan ``plan`` (0-based) of patient ``patient`` (0-based)."""
        if not 0 <= patient < len(self.patients):
            raise IndexError(f"patient {patient}: the archive has {len(self.patients)} "
                             f"patients (0 to {len(self.patients) - 1})")
        recipe = self.patients[patient]
        if not 0 <= plan < len(recipe.plans):
            raise IndexError(f"plan {plan}: patient {recipe.patient_id} has "
                             f"{len(recipe.plans)} plans")
        chosen = recipe.plans[plan]
        structure_set = chosen.structure_set
        return PlanCollection(
            patient_id=recipe.patient_id, plan_uid=chosen.uid, plan_label=chosen.label,
            structure_set_uid=structure_set.uid, image_uids=structure_set.ct.slice_uids,
            dose_uids=tuple(d.uid for d in recipe.doses if d.plan.uid == chosen.uid))


@dataclass(frozen=True)
class DBDSite:
    """The running daemons as a client (your tool) addresses them."""

    site: Site  # the site model, client view (ports are the live ones)
    path: Path  # the same as a site file (TOML), for tools that read one
    db_host: str
    db_port: int
    db_aet: str
    fd_host: str
    fd_port: int
    fd_aet: str
    client_aet: str  # the AE title the daemons trust as the client
    client_port: int  # where the client's own Storage SCP would listen
    fd_out: Path  # the File Daemon writes <fd_out>/<patient id>/<MODALITY>.<uid>.dcm
    env: dict[str, str]  # os.environ plus TCP_NODELAY=1 (DCMTK is slow on loopback without)

    def files(self, patient_id: str | None = None) -> dict[str, int]:
        """Files the File Daemon wrote, per modality (from the ``<MODALITY>.`` file-name
        prefix): of one patient, or of all; files still being written are not counted."""
        from client.files import TEMP_PREFIX, safe_name

        folder = self.fd_out if patient_id is None else self.fd_out / safe_name(patient_id)
        if not folder.is_dir():
            return {}
        counts = Counter(path.name.split(".", 1)[0] for path in folder.rglob("*.dcm")
                         if path.is_file() and not path.name.startswith(TEMP_PREFIX))
        return dict(sorted(counts.items()))


# -- fixtures -------------------------------------------------------------------------------

@pytest.fixture(name="_dbdsim_stage")
def _stage_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stage]:
    """The one stage every fixture below shares: both daemons, stopped after the test."""
    from .scenarios import ScenarioError, staged

    scenario = _scenario_of(request.node, request.path)
    work = tmp_path / "dbdsim"
    work.mkdir()
    with ExitStack() as stack:
        try:
            stage = stack.enter_context(staged(scenario, work))
        except ScenarioError as exc:  # staged() wraps fault and start-up errors in it
            problem = f"dbdsim cannot set up scenario {scenario.name!r}: {exc}"
        else:
            yield stage
            return
    pytest.fail(problem, pytrace=False)


@pytest.fixture
def synthetic_archive(_dbdsim_stage: Stage) -> SyntheticArchive:
    """The archive the DB Daemon serves (``dbd_archive`` marker), with its ground truth.

    Like every fixture here, requesting it starts both daemons."""
    archive = _dbdsim_stage.archive
    config = archive.config
    if config is None:  # staged() always builds a synthetic archive
        raise RuntimeError("the DB Daemon's archive is not synthetic")
    count = archive.index.counts().patients
    return SyntheticArchive(archive, config, [archive.recipe(i) for i in range(count)])


@pytest.fixture
def dbd_site(_dbdsim_stage: Stage) -> DBDSite:
    """Where the running daemons are, as your tool must address them; requesting it
    starts both daemons (stopped when the test ends)."""
    stage = _dbdsim_stage
    site = stage.site
    from client.check_site import daemon_host

    return DBDSite(
        site=site, path=stage.site_path,
        db_host=stage.db_host, db_port=site.db_daemon.port, db_aet=site.db_daemon.ae_title,
        fd_host=daemon_host(site.file_daemon.bind), fd_port=site.file_daemon.port,
        fd_aet=site.file_daemon.ae_title,
        client_aet=site.client.ae_title, client_port=site.client.port,
        fd_out=stage.fd_out, env={**os.environ, "TCP_NODELAY": "1"})


@pytest.fixture
def db_daemon(_dbdsim_stage: Stage) -> DBDaemon:
    """The running emulated DB Daemon (Query/Retrieve SCP)."""
    return _dbdsim_stage.db_daemon


@pytest.fixture
def file_daemon(_dbdsim_stage: Stage) -> FileDaemon:
    """The running emulated File Daemon (Storage SCP)."""
    return _dbdsim_stage.file_daemon


@pytest.fixture
def dbd_faults(_dbdsim_stage: Stage) -> ApplyFaults:
    """``dbd_faults(Faults(...))`` breaks the running daemons from their next request on.

    Each call replaces the faults before it (the scenario's too) and resets their
    counters; data faults edit the archive, so apply them before moving. Proxies need a
    ``dbd_scenario``: they sit between the daemons from the start.
    """
    from .faults import FaultError, inject

    stage = _dbdsim_stage

    def apply(faults: Faults) -> None:
        if faults.proxy:
            raise FaultError("dbd_faults cannot add a proxy to running daemons; name one in "
                             "a scenario and use @pytest.mark.dbd_scenario")
        inject(faults, db_daemon=stage.db_daemon, file_daemon=stage.file_daemon)

    return apply


# -- markers --------------------------------------------------------------------------------

def pytest_configure(config: pytest.Config) -> None:
    archive_args = "seed=0, patients=1, profile='clean', slices=8, rows=32, columns=32"
    config.addinivalue_line(
        "markers", f"dbd_archive({archive_args}): the synthetic archive dbdsim's emulated "
        "DB Daemon serves (keywords: any of these; with dbd_scenario, they replace the "
        "scenario's)")
    config.addinivalue_line(
        "markers", f"synthetic_archive({archive_args}): the same as dbd_archive")
    config.addinivalue_line(
        "markers", "dbd_scenario(name_or_path): dbdsim's fixtures serve this catalog "
        "scenario's site, archive and faults (a .toml path: relative to the test file)")


def _scenario_of(node: pytest.Item, test_file: Path) -> Scenario:
    """The scenario a test's markers ask for (the default site and archive without)."""
    from .scenarios import Scenario

    marker = node.get_closest_marker(SCENARIO_MARKER)
    if marker is None:
        scenario = Scenario("dbdsim-default", "the default site and a seeded archive", None)
    else:
        scenario = _catalog_scenario(marker, test_file)
    archive_marker = next((m for m in node.iter_markers() if m.name in ARCHIVE_MARKERS), None)
    if archive_marker is not None:
        scenario = dataclasses.replace(
            scenario, archive=_archive_spec(archive_marker, scenario.archive))
    return scenario


def _catalog_scenario(marker: pytest.Mark, test_file: Path) -> Scenario:
    from .scenarios import ScenarioError, find

    values = [*marker.args, *marker.kwargs.values()]
    if len(values) != 1 or set(marker.kwargs) - {"name"} or not isinstance(values[0], str | Path):
        _bad(marker, "takes one argument: a catalog scenario's name or a .toml file's path "
             f"(got {_call(marker)})")
    name = str(values[0])
    beside = test_file.parent / name
    if name.endswith(".toml") and beside.is_file():
        name = str(beside)
    try:
        return find(name)
    except ScenarioError as exc:
        problem = str(exc)
    _bad(marker, problem)  # outside the except block: no chained traceback


def _archive_spec(marker: pytest.Mark, base: ArchiveSpec) -> ArchiveSpec:
    from .synthetic import Profile

    if marker.args:
        _bad(marker, f"takes keyword arguments only (got {_call(marker)})")
    fields = {f.name: f for f in dataclasses.fields(base)}
    for key, value in marker.kwargs.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            _bad(marker, f"unknown argument {key!r}{hint}; known: {', '.join(fields)}")
        wanted = int if fields[key].type in (int, "int") else str
        if isinstance(value, bool) or not isinstance(value, wanted):
            kind = "an integer" if wanted is int else "a string"
            _bad(marker, f"{key}={value!r}: expected {kind}")
    spec = dataclasses.replace(base, **marker.kwargs)
    profiles = [str(p) for p in Profile]
    if spec.profile not in profiles:
        _bad(marker, f"profile={spec.profile!r}: one of {', '.join(map(repr, profiles))}")
    if spec.patients < 1 or spec.seed < 0:
        _bad(marker, "patients must be at least 1 and seed at least 0 "
             f"(got patients={spec.patients}, seed={spec.seed})")
    try:
        spec.config()
    except ValueError as exc:
        problem = str(exc)
    else:
        return spec
    _bad(marker, problem)


def _call(marker: pytest.Mark) -> str:
    args = [repr(a) for a in marker.args] + [f"{k}={v!r}" for k, v in marker.kwargs.items()]
    return f"{marker.name}({', '.join(args)})"


def _bad(marker: pytest.Mark, problem: str) -> NoReturn:
    """Fail the test's setup with a message naming the marker (no traceback)."""
    pytest.fail(f"@pytest.mark.{marker.name}: {problem}", pytrace=False)
