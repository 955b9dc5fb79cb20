"""The mess real archives hold, against all three servers: each case ends in its warning,
the rest of the collection still moves, and nothing crashes.

One archive of four patients, each with something taken out of its files before the
server is loaded: CT slices the structure set references, the whole CT, the structure
set, the dose.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from archive_servers import archive_server
from daemons import running_daemons
from peers import free_port

from client.collect import collect
from client.resolve import PlanChoice
from client.settings import from_site
from client.site import TrustedAE, default_site
from emulators.archive import Archive
from emulators.files import write_patient
from emulators.synthetic import PatientRecipe, Profile, SyntheticConfig, make_recipe

pytestmark = pytest.mark.interop

CONFIG = SyntheticConfig(seed=5, profile=Profile.CLEAN, slices=8, rows=32, columns=32)
CLIENT_AE = "RTMOVE"


def _collection(recipe: PatientRecipe) -> set[str]:
    plan = recipe.plans[0]
    ss = plan.structure_set
    return {plan.uid, ss.uid, *ss.ct.slice_uids,
            *(d.uid for d in recipe.doses if d.plan.uid == plan.uid)}


def _removed(index: int, recipe: PatientRecipe) -> tuple[set[str], str]:
    """What patient ``index`` loses, and the words of the warning that must say so."""
    plan = recipe.plans[0]
    ss = plan.structure_set
    if index == 0:
        return set(ss.ct.slice_uids[2:4]), "is incomplete: 2 of the 8 images"
    if index == 1:
        return set(ss.ct.slice_uids), "does not have: the collection has no images"
    if index == 2:
        return {ss.uid}, f"references structure set {ss.uid}, which the archive does not have"
    return {d.uid for d in recipe.doses}, "has no dose in the archive"


RECIPES = [make_recipe(CONFIG, i) for i in range(4)]


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    aec: str
    recv_port: int


@pytest.fixture(scope="module", params=("emulator", "dcmqrscp", "orthanc"))
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           require_tool: Callable[[str], str]) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("mess")
    files = []
    for index, recipe in enumerate(RECIPES):
        gone, _ = _removed(index, recipe)
        for path in write_patient(recipe, tmp / "files"):
            if path.name.split(".", 1)[1][:-4] in gone:
                path.unlink()
            else:
                files.append(path)
    recv_port = free_port()
    kind = str(request.param)
    if kind == "emulator":
        archive, report = Archive.from_folder(tmp / "files")
        assert not report.skipped
        with running_daemons(tmp, archive, extra=(TrustedAE(CLIENT_AE, "127.0.0.1", recv_port),)
                             ) as (site, dbd, _fd):
            yield Server("127.0.0.1", dbd.port, site.db_daemon.ae_title, recv_port)
        archive.close()
        return
    require_tool("storescu")
    require_tool("dcmqrscp" if kind == "dcmqrscp" else "Orthanc")
    with archive_server(kind, tmp / "server", files,
                        {CLIENT_AE: ("127.0.0.1", recv_port)}) as s:
        yield Server(s.host, s.port, s.ae_title, recv_port)


@pytest.mark.parametrize("index", range(4), ids=["ct-incomplete", "ct-missing",
                                                 "structure-set-missing", "no-dose"])
def test_each_mess_ends_in_its_warning_and_the_rest_moves(server: Server, index: int,
                                                         tmp_path: Path) -> None:
    recipe = RECIPES[index]
    gone, words = _removed(index, recipe)
    settings = from_site(default_site(), host=server.host, port=server.port, aec=server.aec,
                         aet=CLIENT_AE, recv_port=server.recv_port, dest="self",
                         out=tmp_path, backoff=0.05)
    result = collect(settings, recipe.patient_id, PlanChoice(uid=recipe.plans[0].uid))
    assert result.error is None, result.error
    assert int(result.kind) == 0, (result.kind, result.problems)
    [collection] = result.manifest.collections
    assert any(words in w for w in collection.warnings), collection.warnings
    arrived = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
               for p in tmp_path.rglob("*.dcm")}
    want = _collection(recipe) - gone
    if index == 2:  # no structure set: nothing says which images belong to the plan
        want -= set(recipe.plans[0].structure_set.ct.slice_uids)
    assert arrived == want
