"""Where the catalog's scenarios are: the ``scenarios`` package's TOML files, installed
with dbdsim, so ``dbdsim scenario`` and the pytest plugin find them anywhere."""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path

from .model import Scenario, ScenarioError, load_scenario


def catalog_dir() -> Path:
    return Path(str(resources.files("scenarios")))


def names() -> list[str]:
    return sorted(p.stem for p in catalog_dir().glob("*.toml"))


def find(name: str) -> Scenario:
    """A catalog scenario by name, or a scenario file by path."""
    candidate = Path(name)
    if candidate.suffix == ".toml" and candidate.is_file():
        return load_scenario(candidate)
    path = catalog_dir() / f"{name}.toml"
    if not path.is_file():
        close = difflib.get_close_matches(name, names(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ScenarioError(f"no scenario {name!r} in the catalog{hint} (dbdsim scenario "
                            "list shows them all)")
    return load_scenario(path)


def load_all() -> list[Scenario]:
    return [load_scenario(catalog_dir() / f"{name}.toml") for name in names()]
