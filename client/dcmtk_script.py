"""DCMTK ``movescu`` scripts for a manifest: the form sites already run, from what rtmove found.

Many sites export plans with a Windows ``.cmd`` file of ``movescu`` lines, as written
by Varian's ESAPI sample (``GetDicomCollection.cs``): ``@set PATH``, then a ``rem``
line and a ``movescu -v -aet … -aec … -aem … -S -k 0008,0052=LEVEL -k KEY=UID host
port`` line per object, in ``move-<last name>(<patient id>)-<plan id>.cmd``. Writing
the same from a manifest lets a site compare rtmove's choice of objects with the
scripts it trusts, or fall back to them; the ``.sh`` twin runs where DCMTK runs on
Linux or macOS (and in the interop tests).
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from client.errors import DicomError, Kind
from client.manifest import Collection, Item, Manifest, Role
from client.settings import SELF, Settings
from client.site import ae_title_problem

DEFAULT_DCMTK_BIN_WINDOWS = r"C:\dcmtk\bin"

LEVEL_KEY = "0008,0052"  # QueryRetrieveLevel
STUDY_KEY = "0020,000D"  # StudyInstanceUID
SERIES_KEY = "0020,000E"  # SeriesInstanceUID
SOP_KEY = "0008,0018"  # SOPInstanceUID

# Plans first: the object a site checks first when a move half fails.
_ORDER = {Role.PLAN: 0, Role.STRUCTURE_SET: 1, Role.IMAGES: 2, Role.DOSE: 3, Role.OTHER: 4}
_KIND = {Role.PLAN: "RT Plan", Role.STRUCTURE_SET: "RT Structure Set", Role.DOSE: "RT Dose"}

# 255 bytes is the usual file-name limit; stay well under so a suffix, a "-2", the
# sample's "<script>-log.txt" and a deep %TEMP% still fit Windows' 260-character paths.
_STEM_MAX_BYTES = 140
_FORBIDDEN_IN_NAMES = set('<>:"/\\|?*')
# Arguments cmd.exe and the C runtime's argv splitting both pass through unquoted.
_CMD_PLAIN = re.compile(r"[A-Za-z0-9_.,=:/\\@+-]+")


class ScriptError(DicomError):
    """A value the scripts cannot carry safely (an AE title, host or DCMTK folder)."""

    kind = Kind.USAGE


@dataclass(frozen=True)
class Command:
    """One ``movescu`` run, and the line a person reads above it in the script."""

    remark: str
    argv: list[str]


def move_destination(settings: Settings) -> str:
    """The ``-aem`` AE title: ``self`` means this client's own AE (a storescp there)."""
    return settings.aet if settings.dest == SELF else settings.dest


def movescu_commands(manifest: Manifest, settings: Settings, *,
                     hierarchical: bool = False) -> list[Command]:
    """One ``movescu`` per series (SERIES level) or per RT instance (IMAGE level).

    The unique key alone is what the sample sends and the DB Daemon accepts;
    ``hierarchical`` adds the higher levels' UIDs that strict Q/R SCPs (dcmqrscp)
    require. Objects shared by several plans are moved once.
    """
    destination = move_destination(settings)
    _check_connection(settings, destination)
    head = ["movescu", "-v", "-aet", settings.aet, "-aec", settings.aec,
            "-aem", destination, "-S"]
    tail = [settings.host, str(settings.port)]
    items = sorted(manifest.items(), key=lambda item: _ORDER[item.role])
    return [Command(remark, [*head, *(arg for key in keys for arg in ("-k", key)), *tail])
            for item in items for remark, keys in _moves(item, hierarchical)]


def _check_connection(settings: Settings, destination: str) -> None:
    for what, title in (("calling AE title", settings.aet), ("called AE title", settings.aec),
                        ("move destination", destination)):
        problem = ae_title_problem(title)
        if problem is not None:
            raise ScriptError(f"{what} {title!r} {problem}")
    if not settings.host or _has_control(settings.host) or settings.host.strip() != settings.host:
        raise ScriptError(f"host {settings.host!r} is no host name or address")
    if not 0 < settings.port < 65536:
        raise ScriptError(f"port {settings.port} is not in 1-65535")


def _moves(item: Item, hierarchical: bool) -> Iterator[tuple[str, list[str]]]:
    study = [f"{STUDY_KEY}={item.study_uid}"] if hierarchical else []
    series = f"{SERIES_KEY}={item.series_uid}"
    if item.level == "SERIES":
        yield _series_remark(item), [f"{LEVEL_KEY}=SERIES", *study, series]
        return
    upper = [*study, series] if hierarchical else []
    count = len(item.sop_uids)
    for number, sop in enumerate(item.sop_uids, 1):
        remark = _instance_remark(item, sop)
        if count > 1:
            remark += f" ({number} of {count})"
        yield remark, [f"{LEVEL_KEY}=IMAGE", *upper, f"{SOP_KEY}={sop}"]


def _series_remark(item: Item) -> str:
    if item.role is Role.IMAGES:
        what, unit = item.modality or "image", "images"
    else:
        what, unit = _KIND.get(item.role) or item.modality or "object", "instances"
    count = f"{len(item.sop_uids)} {unit}" if item.sop_uids else "whole series"
    label = f" - {item.label}" if item.label else ""
    return f"{what} series {count}{label}"


def _instance_remark(item: Item, sop: str) -> str:
    what = _KIND.get(item.role) or item.modality or "object"
    return f"{what} {item.label or sop}"


# -- file names -----------------------------------------------------------------------

def script_name(manifest: Manifest, collection: Collection, suffix: str) -> str:
    """The sample's ``move-<last name>(<patient id>)-<plan>`` name, safe on any file system.

    Forbidden and control characters become ``_`` (as the sample's ``MakeFilenameValid``
    does) while other letters stay: a site finds its scripts by the patient's name.
    """
    if suffix and not suffix.startswith("."):
        suffix = "." + suffix
    plan = collection.plan_label or collection.plan_uid or "plan"
    stem = f"move-{_last_name(manifest.patient_name)}({manifest.patient_id})-{plan}"
    return _safe_stem(stem, _STEM_MAX_BYTES) + suffix


def _last_name(patient_name: str) -> str:
    """The family name of the first non-empty PN component group (alphabetic first)."""
    for group in patient_name.split("="):
        family = group.split("^", 1)[0].strip()
        if family:
            return family
    return "patient"


def _safe_stem(text: str, max_bytes: int) -> str:
    text = unicodedata.normalize("NFC", text)
    chars = ["_" if ch in _FORBIDDEN_IN_NAMES or unicodedata.category(ch).startswith("C")
             else ch for ch in text]
    stem = "".join(chars)
    while len(stem.encode("utf-8")) > max_bytes:
        stem = stem[:-1]
    # Windows drops trailing dots and spaces, which would make "A." and "A" one file.
    kept = stem.rstrip(". ")
    return kept + "_" * (len(stem) - len(kept))


# -- the scripts ------------------------------------------------------------------------

def _header(manifest: Manifest, settings: Settings, commands: list[Command],
            join: Callable[[list[str]], str]) -> list[str]:
    """Who and what the script moves; ``join`` quotes the storescp example for its shell."""
    destination = move_destination(settings)
    name = f" {manifest.patient_name}" if manifest.patient_name else ""
    lines = [f"written by rtmove dcmtk-script for patient {manifest.patient_id}{name}"]
    lines += [f"plan {c.plan_label or '(no label)'} {c.plan_uid}".rstrip()
              for c in manifest.collections]
    lines.append(f"{len(commands)} C-MOVE (Study Root) from {settings.peer} to {destination}")
    if settings.to_self:
        example = join(["storescp", "-aet", settings.aet, "-od", "received",
                        str(settings.recv_port)])
        lines.append(f"destination self: a storescp must listen as {settings.aet} on this "
                     f"machine, port {settings.recv_port}, and {settings.aec} must know that "
                     f"AE, e.g.: {example}")
    return lines


def windows_cmd(manifest: Manifest, settings: Settings, *,
                dcmtk_bin: str = DEFAULT_DCMTK_BIN_WINDOWS, hierarchical: bool = False) -> str:
    """The ``.cmd`` as the sample writes it (no ``@echo off``: cmd.exe shows each line
    it runs, which is the log a site looks at), with CRLF line ends.

    ``dcmtk_bin`` goes before ``%PATH%`` (the sample appends it) so another DCMTK on
    the PATH cannot win; empty leaves PATH alone. Like the sample, a failed move does
    not stop the following ones.
    """
    commands = movescu_commands(manifest, settings, hierarchical=hierarchical)
    lines = [f"@set PATH={_cmd_path(dcmtk_bin)};%PATH%"] if dcmtk_bin else []
    lines += [_cmd_remark(text) for text in _header(manifest, settings, commands, _cmd_join)]
    for command in commands:
        lines.append(_cmd_remark(command.remark))
        lines.append(_cmd_join(command.argv))
    return "\r\n".join(lines) + "\r\n"


def posix_sh(manifest: Manifest, settings: Settings, *, dcmtk_bin: str = "",
             hierarchical: bool = False) -> str:
    """The ``.cmd``'s twin for ``sh``; stops at the first failed ``movescu`` (``set -e``).

    ``TCP_NODELAY=1``: current DCMTK keeps Nagle's algorithm on unless told (older
    releases turned it off), and small DIMSE messages then wait on delayed ACKs.
    """
    commands = movescu_commands(manifest, settings, hierarchical=hierarchical)
    header = _header(manifest, settings, commands, shlex.join)
    lines = ["#!/bin/sh", *(_sh_comment(text) for text in header), "set -e"]
    if dcmtk_bin:
        lines.append(f'export PATH={_sh_path(dcmtk_bin)}:"$PATH"')
    lines.append("export TCP_NODELAY=1")
    for command in commands:
        lines.append(_sh_comment(command.remark))
        lines.append(shlex.join(command.argv))
    return "\n".join(lines) + "\n"


def write_scripts(manifest: Manifest, settings: Settings, out_dir: Path, *,
                  dcmtk_bin_windows: str = DEFAULT_DCMTK_BIN_WINDOWS,
                  dcmtk_bin_posix: str = "", hierarchical: bool = False) -> list[Path]:
    """One ``.cmd`` and one ``.sh`` per collection, each complete on its own (a CT
    shared by two plans is in both), as the sample writes one script per plan.

    Every script is rendered before any is written, so a bad value writes nothing.
    Two plans with the same label get ``-2``, ``-3`` … rather than one overwriting
    the other (compared without case, as Windows does).
    """
    rendered: list[tuple[Path, bytes, bool]] = []
    used: set[str] = set()
    for collection in manifest.collections:
        single = dataclasses.replace(manifest, collections=(collection,))
        stem = script_name(manifest, collection, "")
        unique, number = stem, 1
        while unique.casefold() in used:
            number += 1
            unique = f"{stem}-{number}"
        used.add(unique.casefold())
        cmd = windows_cmd(single, settings, dcmtk_bin=dcmtk_bin_windows,
                          hierarchical=hierarchical)
        sh = posix_sh(single, settings, dcmtk_bin=dcmtk_bin_posix, hierarchical=hierarchical)
        rendered.append((out_dir / f"{unique}.cmd", cmd.encode("utf-8"), False))
        rendered.append((out_dir / f"{unique}.sh", sh.encode("utf-8"), True))
    out_dir.mkdir(parents=True, exist_ok=True)
    for path, data, executable in rendered:
        path.write_bytes(data)  # bytes: no newline translation of the CRLF or LF
        if executable:
            path.chmod(0o755)
    return [path for path, _data, _executable in rendered]


# -- quoting ----------------------------------------------------------------------------

def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" for ch in text)


def _one_line(text: str) -> str:
    return "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text).strip()


def _cmd_remark(text: str) -> str:
    """A ``rem`` line cmd.exe cannot trip on: ``%`` is expanded even in comments (a
    stray ``%~`` aborts the whole script) and a final ``^`` would swallow the next line."""
    text = _one_line(text).replace("%", "%%").rstrip("^ ")
    return f"rem {text}" if text else "rem"


def _sh_comment(text: str) -> str:
    text = _one_line(text)
    return f"# {text}" if text else "#"


def _cmd_join(argv: list[str]) -> str:
    return " ".join(_cmd_arg(arg) for arg in argv)


def _cmd_arg(arg: str) -> str:
    """``arg`` as cmd.exe passes it on and the C runtime splits it back.

    Quoted unless plain; ``%`` doubled (batch files expand it inside quotes too);
    backslashes before the closing quote doubled (the runtime's rule). A ``"`` or
    a control character cannot be carried through both parsers reliably.
    """
    if '"' in arg or _has_control(arg):
        raise ScriptError(f"{arg!r} cannot be written into a .cmd file (quote or control "
                          "character)")
    if _CMD_PLAIN.fullmatch(arg):
        return arg
    escaped = arg.replace("%", "%%")
    doubled = escaped + escaped[len(escaped.rstrip("\\")):]
    return f'"{doubled}"'


def _cmd_path(folder: str) -> str:
    """``folder`` in an unquoted ``@set PATH=`` (quoting would break on a quoted
    entry already in %PATH%): cmd's special characters escaped with ``^``."""
    if any(ch in folder for ch in '";') or _has_control(folder):
        raise ScriptError(f"DCMTK folder {folder!r} must not contain a quote, ';' or a "
                          "control character")
    out = folder.replace("%", "%%")
    return "".join(f"^{ch}" if ch in "^&|<>" else ch for ch in out)


def _sh_path(folder: str) -> str:
    if ":" in folder or _has_control(folder):
        raise ScriptError(f"DCMTK folder {folder!r} must not contain ':' or a control "
                          "character (it goes into $PATH)")
    return shlex.quote(folder)
