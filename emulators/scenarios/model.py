"""A scenario, as its TOML file says: a site, an archive, faults, a command, an outcome.

One file per scenario (``scenarios/<name>.toml``); everything but ``description`` and
``[expect]`` has a default, so a scenario names only what it changes. A mistake in a
file is reported with the file and the dotted key, before anything starts.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client.errors import Kind
from client.site import Site, SiteError
from client.site_toml import parse_site_data

from ..faults import FaultError, Faults, from_mapping
from ..synthetic import Profile, SyntheticConfig

TOP_KEYS = ("description", "tags", "catches", "site", "archive", "faults", "client", "expect")
KINDS = {kind.name.lower(): kind for kind in Kind}


class ScenarioError(ValueError):
    """A scenario file that cannot be run; ``str()`` names the file and the key."""


@dataclass(frozen=True)
class ArchiveSpec:
    """The synthetic archive the DB Daemon serves (small by default: scenarios are many)."""

    seed: int = 0
    patients: int = 1
    profile: str = "clean"
    slices: int = 8
    rows: int = 32
    columns: int = 32

    def config(self) -> SyntheticConfig:
        return SyntheticConfig(seed=self.seed, profile=Profile(self.profile),
                               slices=self.slices, rows=self.rows, columns=self.columns)


@dataclass(frozen=True)
class ClientSpec:
    """The command under test; ``{site}``, ``{patient}`` and friends are filled in."""

    run: tuple[str, ...] = ()
    patient: str = "0"  # the synthetic patient {patient} names: an index, or "non-ascii"
    timeout: float = 120.0
    setup: tuple[tuple[str, ...], ...] = ()  # commands run first (e.g. storescu data in)


@dataclass(frozen=True)
class Expect:
    """The outcome the command must show; what is not given is not checked."""

    exit: int | None = None
    kind: str = ""  # an rtmove error kind (its exit code, and "kind" in --json output)
    output: tuple[str, ...] = ()  # phrases the output holds (any case)
    not_output: tuple[str, ...] = ()  # phrases it must not hold
    files: Mapping[str, int] | None = None  # File Daemon folder: files per modality, exactly
    out_files: Mapping[str, int] | None = None  # the same for the client's --out folder
    complete: bool = True  # every file there is whole and readable, no temporary file left


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    path: Path | None
    tags: tuple[str, ...] = ()
    catches: tuple[str, ...] = ()  # the client defects this scenario is known to catch
    site_data: Mapping[str, Any] = field(default_factory=dict)
    site: Site = field(default_factory=Site)
    archive: ArchiveSpec = field(default_factory=ArchiveSpec)
    faults: Faults = field(default_factory=Faults)
    client: ClientSpec = field(default_factory=ClientSpec)
    expect: Expect = field(default_factory=Expect)


def load_scenario(path: Path) -> Scenario:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read the scenario ({exc})") from exc
    return parse_scenario(text, path.stem, path)


def parse_scenario(text: str, name: str, path: Path | None = None) -> Scenario:
    where = str(path) if path is not None else name
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{where}: not valid TOML ({exc})") from exc
    try:
        return _scenario(data, name, path, where)
    except (FaultError, SiteError) as exc:
        raise ScenarioError(f"{where}: {exc}") from exc


def _scenario(data: dict[str, Any], name: str, path: Path | None, where: str) -> Scenario:
    _known(data, TOP_KEYS, where, "")
    description = data.get("description")
    if not isinstance(description, str) or not description.strip():
        raise ScenarioError(f"{where}: description: say in a sentence what the scenario shows")
    site_data = _table(data.get("site", {}), where, "site")
    site = parse_site_data(site_data, f"{where} [site]", path.parent if path else None)
    faults = from_mapping(Faults, data.get("faults", {}), "faults")
    archive = from_mapping(ArchiveSpec, data.get("archive", {}), "archive")
    try:
        archive.config()
    except ValueError as exc:
        raise ScenarioError(f"{where}: archive: {exc}") from exc
    client = _client(_table(data.get("client", {}), where, "client"), where)
    expect = _expect(_table(data.get("expect", {}), where, "expect"), where)
    return Scenario(name, description.strip(), path, _strings(data, "tags", where),
                    _strings(data, "catches", where), site_data, site, archive, faults,
                    client, expect)


def _client(data: dict[str, Any], where: str) -> ClientSpec:
    _known(data, ("run", "patient", "timeout", "setup"), where, "client.")
    run = _command(data.get("run"), where, "client.run")
    setup = data.get("setup", [])
    if not isinstance(setup, list):
        raise ScenarioError(f"{where}: client.setup: a list of commands")
    steps = tuple(_command(c, where, f"client.setup[{i}]") for i, c in enumerate(setup))
    patient = str(data.get("patient", "0"))
    if patient != "non-ascii" and not patient.isdigit():
        raise ScenarioError(f"{where}: client.patient: a patient index or \"non-ascii\"")
    timeout = data.get("timeout", 120.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ScenarioError(f"{where}: client.timeout: seconds, more than 0")
    return ClientSpec(run, patient, float(timeout), steps)


def _command(value: object, where: str, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(a, str) for a in value):
        raise ScenarioError(f"{where}: {key}: a command, as a list of strings")
    return tuple(value)


def _expect(data: dict[str, Any], where: str) -> Expect:
    keys = ("exit", "kind", "output", "not_output", "files", "out_files", "complete")
    _known(data, keys, where, "expect.")
    if not data:
        raise ScenarioError(f"{where}: [expect]: a scenario must say what outcome it expects")
    exit_code = data.get("exit")
    if exit_code is not None and (isinstance(exit_code, bool) or not isinstance(exit_code, int)):
        raise ScenarioError(f"{where}: expect.exit: an exit code")
    kind = data.get("kind", "")
    if kind and kind not in KINDS:
        raise ScenarioError(f"{where}: expect.kind {kind!r}: one of {', '.join(KINDS)}")
    if kind and exit_code is not None and KINDS[kind] != exit_code:
        raise ScenarioError(f"{where}: expect.kind {kind!r} means exit {int(KINDS[kind])}, "
                            f"not {exit_code}")
    complete = data.get("complete", True)
    if not isinstance(complete, bool):
        raise ScenarioError(f"{where}: expect.complete: true or false")
    return Expect(exit_code, kind, _strings(data, "output", where, "expect."),
                  _strings(data, "not_output", where, "expect."),
                  _counts(data.get("files"), where, "files"),
                  _counts(data.get("out_files"), where, "out_files"), complete)


def _counts(value: object, where: str, key: str) -> Mapping[str, int] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value.values()):
        raise ScenarioError(f"{where}: expect.{key}: a table of modality = file count")
    return {str(k).upper(): int(v) for k, v in value.items()}


def _strings(data: Mapping[str, Any], key: str, where: str, prefix: str = "",
             ) -> tuple[str, ...]:
    value = data.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ScenarioError(f"{where}: {prefix}{key}: a string or a list of strings")
    return tuple(value)


def _table(value: object, where: str, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ScenarioError(f"{where}: {key}: expected a table")
    return value


def _known(data: Mapping[str, Any], keys: tuple[str, ...], where: str, prefix: str) -> None:
    for key in data:
        if key not in keys:
            close = difflib.get_close_matches(key, keys, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            raise ScenarioError(f"{where}: {prefix}{key}: unknown key{hint}")
