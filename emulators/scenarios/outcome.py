"""What a scenario's command did, and how that differs from what the scenario expects."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from client.files import TEMP_PREFIX
from client.verify import Folder

from .model import KINDS, Expect

_SPACE = re.compile(r"\s+")


@dataclass
class Observed:
    command: list[str]
    exit: int | None  # None: it ran past its timeout and was killed
    output: str  # stdout then stderr
    duration: float
    document: Any = None  # stdout as JSON, when it is
    files: dict[str, int] = field(default_factory=dict)  # File Daemon folder, per modality
    out_files: dict[str, int] = field(default_factory=dict)  # the client's --out folder
    bad_files: list[str] = field(default_factory=list)  # incomplete, unreadable, temporary
    log: list[str] = field(default_factory=list)  # the daemons' log lines
    setup_failures: list[str] = field(default_factory=list)  # setup commands that failed


def parse_json(stdout: str) -> Any:
    try:
        return json.loads(stdout)
    except ValueError:
        return None


def survey(folder: Path) -> tuple[dict[str, int], list[str]]:
    """Files per modality (from the daemons' ``<MODALITY>.<uid>.dcm`` names), and every
    file that is not a whole, readable object."""
    found, bad = Folder(folder).read()
    counts = Counter(f.path.name.split(".", 1)[0].upper() for f in found.values())
    problems = [f"{path.relative_to(folder)}: {why}" for path, why in sorted(bad.items())]
    if folder.is_dir():
        problems += [f"{p.relative_to(folder)}: temporary file left behind"
                     for p in sorted(folder.rglob(f"{TEMP_PREFIX}*")) if p.is_file()]
    return dict(counts), problems


def _normal(text: str) -> str:
    return _SPACE.sub(" ", text).casefold()


def differences(expect: Expect, seen: Observed) -> list[str]:
    """Each way ``seen`` is not what ``expect`` says, as one line; empty when it passes."""
    out: list[str] = list(seen.setup_failures)
    if seen.exit is None:
        out.append("the command did not finish within its timeout")
    wanted_exit = int(KINDS[expect.kind]) if expect.kind else expect.exit
    if wanted_exit is not None and seen.exit is not None and seen.exit != wanted_exit:
        name = next((k for k, v in KINDS.items() if v == seen.exit), "?")
        out.append(f"exit code {seen.exit} ({name}), expected {wanted_exit}"
                   + (f" ({expect.kind})" if expect.kind else ""))
    if expect.kind and isinstance(seen.document, dict) and "kind" in seen.document \
            and seen.document["kind"] != expect.kind:
        out.append(f"JSON kind {seen.document['kind']!r}, expected {expect.kind!r}")
    text = _normal(seen.output)
    out += [f"output lacks {phrase!r}" for phrase in expect.output
            if _normal(phrase) not in text]
    out += [f"output holds {phrase!r}" for phrase in expect.not_output
            if _normal(phrase) in text]
    for label, wanted, got in (("File Daemon folder", expect.files, seen.files),
                               ("--out folder", expect.out_files, seen.out_files)):
        if wanted is None:
            continue
        for modality in sorted(set(wanted) | set(got)):
            if wanted.get(modality, 0) != got.get(modality, 0):
                out.append(f"{label}: {got.get(modality, 0)} {modality} file(s), expected "
                           f"{wanted.get(modality, 0)}")
    if expect.complete and seen.bad_files:
        out.append(f"{len(seen.bad_files)} bad file(s): " + "; ".join(seen.bad_files[:3]))
    return out


def flipped(expect: Expect) -> Expect:
    """The opposite expectation (another exit code, no file where files were): a
    scenario's check must fail against it, or the scenario cannot fail at all."""
    exit_code = int(KINDS[expect.kind]) if expect.kind else expect.exit
    other = 0 if exit_code not in (None, 0) else 8
    files = {m: n + 1 for m, n in (expect.files or {"CT": 0}).items()}
    return replace(expect, exit=other, kind="", files=files)
