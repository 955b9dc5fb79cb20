"""Running a scenario: stage it, run its command in a subprocess, compare the outcome."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .model import Scenario, ScenarioError
from .outcome import Observed, differences, parse_json, survey
from .stage import Stage, staged

_SBIN = os.pathsep.join(("/usr/local/sbin", "/usr/sbin", "/sbin"))
_LOG_LINES = 40

# How each program a scenario names is started: the client and the emulators from this
# very installation, anything else (DCMTK's movescu, a user's tool) from PATH.
DEFAULT_PROGRAMS: dict[str, tuple[str, ...]] = {
    "rtmove": (sys.executable, "-m", "client.cli"),
    "dbdsim": (sys.executable, "-m", "emulators.cli"),
}


@dataclass
class Result:
    scenario: Scenario
    observed: Observed
    differences: list[str]

    @property
    def passed(self) -> bool:
        return not self.differences

    def to_json(self) -> dict[str, object]:
        seen = self.observed
        return {"name": self.scenario.name, "passed": self.passed,
                "differences": self.differences, "exit_code": seen.exit,
                "seconds": round(seen.duration, 2), "command": seen.command,
                "files": seen.files, "out_files": seen.out_files}


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextmanager
def _daemon_log() -> Iterator[_Lines]:
    """The daemons' decisions during one scenario, to show when it fails."""
    logger = logging.getLogger("dbdsim")
    handler, level = _Lines(), logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def command_line(scenario: Scenario, stage: Stage, programs: Mapping[str, Sequence[str]],
                 command: Sequence[str] | None = None) -> list[str]:
    """``command`` (default: the scenario's ``run``) with its placeholders filled in."""
    values = stage.placeholders()
    try:
        argv = [arg.format(**values) for arg in command or scenario.client.run]
    except (KeyError, IndexError, ValueError) as exc:
        raise ScenarioError(f"{scenario.name}: client: unknown placeholder {exc}; known: "
                            + ", ".join("{" + k + "}" for k in values)) from exc
    program, *rest = argv
    if program in programs:
        return [*programs[program], *rest]
    found = shutil.which(program) or shutil.which(program, path=_SBIN)
    if found is None:
        raise ScenarioError(f"{scenario.name}: {program!r} is not on PATH")
    return [found, *rest]


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"TCP_NODELAY": "1",  # DCMTK on loopback (Nagle costs ~40 ms per object)
                "COLUMNS": "400",  # rich tables unwrapped, so phrases stay on one line
                "PYTHONIOENCODING": "utf-8", "NO_COLOR": "1"})
    return env


def run_scenario(scenario: Scenario, *, programs: Mapping[str, Sequence[str]] | None = None,
                 work: Path | None = None) -> Result:
    """Run ``scenario`` once; ``work`` keeps its files (site, folders) for a look after."""
    programs = {**DEFAULT_PROGRAMS, **(programs or {})}
    with tempfile.TemporaryDirectory(prefix="dbdsim-scenario-") as tmp:
        folder = work if work is not None else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        with _daemon_log() as log:
            with staged(scenario, folder.absolute()) as stage:
                failures = _setup(scenario, stage)
                argv = command_line(scenario, stage, programs)
                observed = _run(argv, stage.work, scenario.client.timeout)
                observed.setup_failures = failures
            # The daemons have stopped (late writes landed): the folders are final.
            observed.files, bad = survey(stage.fd_out)
            observed.out_files, bad_out = survey(stage.out)
            observed.bad_files = bad + bad_out
            observed.log = log.lines[-_LOG_LINES:]
    return Result(scenario, observed, differences(scenario.expect, observed))


def _setup(scenario: Scenario, stage: Stage) -> list[str]:
    """Run the setup commands (never a deliberately broken client: they prepare the site);
    each one that fails is a difference of the scenario."""
    failures = []
    for step in scenario.client.setup:
        argv = command_line(scenario, stage, DEFAULT_PROGRAMS, step)
        seen = _run(argv, stage.work, scenario.client.timeout)
        if seen.exit != 0:
            failures.append(f"setup command {' '.join(step)!r} exited {seen.exit}: "
                            + seen.output.strip()[-300:])
    return failures


def _run(argv: list[str], cwd: Path, timeout: float) -> Observed:
    started = time.monotonic()
    try:
        done = subprocess.run(argv, cwd=cwd, env=_environment(), capture_output=True,
                              timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        output = _text(exc.stdout) + _text(exc.stderr)
        return Observed(argv, None, output, time.monotonic() - started)
    stdout = _text(done.stdout)
    return Observed(argv, done.returncode, stdout + _text(done.stderr),
                    time.monotonic() - started, parse_json(stdout))


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode("utf-8", "replace")
