"""Scenarios: a site, an archive and faults, a command to run, the outcome it must show."""

from __future__ import annotations

from .catalog import catalog_dir, find, load_all, names
from .model import ArchiveSpec, ClientSpec, Expect, Scenario, ScenarioError, load_scenario
from .outcome import Observed, differences, flipped
from .runner import Result, run_scenario
from .stage import Stage, staged, with_free_ports

__all__ = [
    "ArchiveSpec",
    "ClientSpec",
    "Expect",
    "Observed",
    "Result",
    "Scenario",
    "ScenarioError",
    "Stage",
    "catalog_dir",
    "differences",
    "find",
    "flipped",
    "load_all",
    "load_scenario",
    "names",
    "run_scenario",
    "staged",
    "with_free_ports",
]
