"""Reading a site file (TOML) into a :class:`~client.site_model.Site`.

Whoever fixes a site file has it open in an editor, not this code: every problem is one
sentence naming the file, the line and the dotted key (``db_daemon.trusted[1].port``).
The first problem found stops the load, so a half-understood site never starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import re
import tomllib
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import date, time
from pathlib import Path
from typing import Any

from pydicom.charset import python_encoding

from client.site_model import (
    ALLOW_ALL,
    ClientConfig,
    DBDaemonService,
    FileDaemonService,
    Model,
    Quirks,
    Site,
    Timeouts,
    TrustedAE,
)
from client.uids import is_valid_uid

KeyPath = tuple[str | int, ...]
Check = Callable[["_Context", object, KeyPath], Any]

_AE_TITLE_MAX = 16
_PORT_MAX = 65535
_CHARSETS = sorted(term for term in python_encoding if term)
_MODELS = [model.value for model in Model]


class SiteError(ValueError):
    """A site file problem: ``str()`` is the sentence to show; the attributes are for tools."""

    def __init__(self, source: str, problem: str, key: str | None = None,
                 line: int | None = None) -> None:
        # All four in args, in __init__ order, so the error survives pickling (xdist, logging).
        super().__init__(source, problem, key, line)
        self.source = source
        self.problem = problem
        self.key = key
        self.line = line

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source} line {self.line}"
        if self.key is not None:
            where = f"{where}, {self.key}"
        return f"{where}: {self.problem}"


def load_site(path: Path) -> Site:
    """Read ``path``; relative ``storage`` / ``output`` are taken from the file's folder."""
    source = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SiteError(source, f"cannot read the site file ({exc.strerror or exc})") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise SiteError(source, f"is not UTF-8 text (byte 0x{raw[exc.start]:02X}); save it as "
                                "UTF-8", line=line) from exc
    # Windows editors (where the real daemons live) like to start UTF-8 files with a BOM.
    return parse_site(text.removeprefix("\ufeff"), source, path.absolute().parent)


def parse_site(text: str, source: str = "<string>", base_dir: Path | None = None) -> Site:
    """The site ``text`` describes; missing keys keep the model's defaults."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(source, text, exc) from exc
    return _site(_Context(source, text, base_dir), data)


def parse_site_data(data: Mapping[str, object], source: str, base_dir: Path | None = None,
                    ) -> Site:
    """The site an already-read TOML table describes (a scenario's ``[site]``): the same
    rules and errors as a site file, without line numbers."""
    return _site(_Context(source, "", base_dir), data)


def _site(context: _Context, data: Mapping[str, object]) -> Site:
    site: Site = _SITE(context, data, ())
    _check_listening_addresses(context, data, site)
    return dataclasses.replace(site, source=context.source)


# --- where a key is written ------------------------------------------------------------

_BARE_KEY = r"[A-Za-z0-9_-]+"
_KEY = rf"""(?:{_BARE_KEY}|"(?:[^"\\]|\\.)*"|'[^']*')"""
_DOTTED_KEY = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
_ARRAY_HEADER = re.compile(rf"\s*\[\[\s*({_DOTTED_KEY})\s*\]\]\s*(?:#.*)?$")
_TABLE_HEADER = re.compile(rf"\s*\[\s*({_DOTTED_KEY})\s*\]\s*(?:#.*)?$")
_KEY_VALUE = re.compile(rf"\s*({_DOTTED_KEY})\s*=(.*)$")


def format_key(path: Sequence[str | int]) -> str:
    """``("db_daemon", "trusted", 1, "port")`` as ``db_daemon.trusted[1].port``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            name = part if re.fullmatch(_BARE_KEY, part) else '"' + part.replace('"', '\\"') + '"'
            text += f".{name}" if text else name
    return text


def find_key_line(text: str, path: Sequence[str | int]) -> int | None:
    """The 1-based line writing ``path``: its ``key =`` line, or its table header.

    Failing that, the first line written inside ``path`` (``[a.b]`` for ``a``); None when
    the file does not write it (a default, or a key inside an inline table).
    """
    target = tuple(path)
    if not target:
        return None
    inside: int | None = None
    for number, written in _written_paths(text):
        if written == target:
            return number
        if inside is None and written[:len(target)] == target:
            inside = number
    return inside


def _written_paths(text: str) -> Iterator[tuple[int, KeyPath]]:
    """Each header and ``key =`` line with the full path it writes, indices included."""
    table: KeyPath = ()
    counts: dict[KeyPath, int] = {}  # items seen so far of each array of tables
    depth, quote = 0, None  # an array / inline table or multi-line string left open
    for number, line in enumerate(text.splitlines(), 1):
        if depth > 0 or quote is not None:
            depth, quote = _scan_value(line, depth, quote)
        elif match := _ARRAY_HEADER.match(line):
            *parents, last = _key_parts(match[1])
            array = (*_resolve(parents, counts), last)
            counts[array] = counts.get(array, 0) + 1
            table = (*array, counts[array] - 1)
            yield number, table
        elif match := _TABLE_HEADER.match(line):
            table = _resolve(_key_parts(match[1]), counts)
            yield number, table
        elif match := _KEY_VALUE.match(line):
            yield number, (*table, *_key_parts(match[1]))
            depth, quote = _scan_value(match[2], 0, None)


def _key_parts(dotted: str) -> list[str]:
    return [part[1:-1] if part[0] in "\"'" else part for part in re.findall(_KEY, dotted)]


def _resolve(parts: Sequence[str], counts: Mapping[KeyPath, int]) -> KeyPath:
    """A header's path, through the latest item of every array of tables it names."""
    resolved: KeyPath = ()
    for part in parts:
        resolved = (*resolved, part)
        if resolved in counts:
            resolved = (*resolved, counts[resolved] - 1)
    return resolved


def _scan_value(fragment: str, depth: int, quote: str | None) -> tuple[int, str | None]:
    """Bracket depth and the multi-line string delimiter still open after ``fragment``."""
    i, end = 0, len(fragment)
    while i < end:
        if quote is not None:
            if quote == '"""' and fragment[i] == "\\":
                i += 2
            elif fragment.startswith(quote, i):
                i, quote = i + 3, None
            else:
                i += 1
            continue
        char = fragment[i]
        if char == "#":
            break
        if fragment.startswith(('"""', "'''"), i):
            quote = fragment[i:i + 3]
            i += 3
            continue
        if char == '"':
            i += 1
            while i < end and fragment[i] != '"':
                i += 2 if fragment[i] == "\\" else 1
        elif char == "'":
            closing = fragment.find("'", i + 1)
            i = end if closing < 0 else closing
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        i += 1
    return depth, quote


def _locate(text: str, path: KeyPath) -> int | None:
    """The line of ``path`` or, when not written as such, of its nearest written parent."""
    for length in range(len(path), 0, -1):
        line = find_key_line(text, path[:length])
        if line is not None:
            return line
    return None


_AT_LINE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_AT_END = re.compile(r"\s*\(at end of document\)$")


def _syntax_error(source: str, text: str, exc: tomllib.TOMLDecodeError) -> SiteError:
    message = str(exc)
    line: int | None = getattr(exc, "lineno", None)  # Python 3.14 has the attributes
    column: int | None = getattr(exc, "colno", None)
    if line is not None:
        message = str(getattr(exc, "msg", message))
    elif match := _AT_LINE.search(message):
        line, column = int(match[1]), int(match[2])
        message = message[:match.start()]
    elif match := _AT_END.search(message):
        line = max(1, len(text.splitlines()))
        message = message[:match.start()] + " at the end of the file"
    where = "" if column is None else f" (column {column})"
    return SiteError(source, f"is not valid TOML{where}: {message}", line=line)


# --- checking values ------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Context:
    source: str
    text: str
    base_dir: Path | None

    def error(self, path: KeyPath, problem: str) -> SiteError:
        key = format_key(path) if path else None
        return SiteError(self.source, problem, key, _locate(self.text, path))


def _show(value: object) -> str:
    """A value as the site engineer wrote it, short enough for one line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, date | time):
        return value.isoformat()
    text = repr(value)
    return text if len(text) <= 50 else text[:47] + "..."


def _suggest(word: str, choices: Collection[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (expected one of: {', '.join(sorted(choices))})"


def _string(context: _Context, value: object, path: KeyPath) -> str:
    if not isinstance(value, str):
        raise context.error(path, f"must be a string, got {_show(value)}")
    return value


def _bool(context: _Context, value: object, path: KeyPath) -> bool:
    if not isinstance(value, bool):
        raise context.error(path, f"must be true or false, got {_show(value)}")
    return value


def _integer(low: int, high: int | None = None) -> Check:
    wanted = f"an integer of at least {low}" if high is None else f"an integer from {low} to {high}"

    def check(context: _Context, value: object, path: KeyPath) -> int:
        # bool is an int to Python, but `port = true` is a mistake, not 1.
        if (isinstance(value, bool) or not isinstance(value, int) or value < low
                or (high is not None and value > high)):
            raise context.error(path, f"must be {wanted}, got {_show(value)}")
        return value
    return check


def _number(context: _Context, value: object, path: KeyPath, wanted: str,
            accept: Callable[[float], bool]) -> float:
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not accept(float(value))):
        raise context.error(path, f"must be {wanted}, got {_show(value)}")
    return float(value)


def _seconds(context: _Context, value: object, path: KeyPath) -> float:
    return _number(context, value, path, "a number of seconds greater than 0",
                   lambda x: math.isfinite(x) and x > 0)


def _fraction(context: _Context, value: object, path: KeyPath) -> float:
    return _number(context, value, path, "a number greater than 0 and at most 1",
                   lambda x: 0 < x <= 1)


def ae_title_problem(title: str) -> str | None:
    """What makes ``title`` (spaces around it removed) no valid AE title, or None.

    PS3.5 AE VR: spaces around are padding, the rest must fit the daemons' wizard.
    Shared by every place a person types an AE title, so all refuse the same ones.
    """
    if not title.isascii():
        return "must be ASCII"
    if any(ord(char) < 32 or ord(char) == 127 for char in title):
        return "must not contain control characters"
    if "\\" in title:
        return "must not contain a backslash"
    if not 1 <= len(title) <= _AE_TITLE_MAX:
        return f"must be 1 to {_AE_TITLE_MAX} characters, not counting spaces around it"
    return None


def _ae_title(context: _Context, value: object, path: KeyPath) -> str:
    title = _string(context, value, path).strip(" ")
    problem = ae_title_problem(title)
    if problem is not None:
        raise context.error(path, f"{problem}, got {_show(value)}")
    return title


def _bind(context: _Context, value: object, path: KeyPath) -> str:
    """A literal, not a name: a name resolving to several addresses would be ambiguous."""
    text = _string(context, value, path)
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise context.error(path, "must be an IP address such as 127.0.0.1, 0.0.0.0 or ::1 "
                                  f"(not a host name), got {_show(value)}") from None
    return text


def _host(context: _Context, value: object, path: KeyPath) -> str:
    text = _string(context, value, path)
    if not text or any(char.isspace() or not char.isprintable() for char in text):
        raise context.error(path, "must be a host name or IP address, without spaces or "
                                  f"control characters, got {_show(value)}")
    return text


def _implementation_uid(context: _Context, value: object, path: KeyPath) -> str:
    text = _string(context, value, path)
    if text != ALLOW_ALL and not is_valid_uid(text):
        raise context.error(path, f"must be {ALLOW_ALL!r} (allow all) or a UID (digits and dots, "
                                  f"at most 64 characters), got {_show(value)}")
    return text


def _charset(context: _Context, value: object, path: KeyPath) -> str:
    text = _string(context, value, path)
    if text.startswith("ISO 2022"):
        # A code extension is never a whole (0008,0005): it needs a default set before
        # it ("\\ISO 2022 IR 87"), which one value here cannot say.
        raise context.error(path, f"code extensions such as {_show(value)} cannot stand "
                                  "alone; use a single-byte set (e.g. 'ISO_IR 100') or "
                                  "'ISO_IR 192' (UTF-8)")
    if text not in _CHARSETS:
        raise context.error(path, "must be a DICOM Specific Character Set defined term such as "
                                  f"'ISO_IR 192' or 'ISO_IR 100', got {_show(value)}"
                                  + _suggest(text, _CHARSETS))
    return text


def _array(context: _Context, value: object, path: KeyPath, wanted: str) -> list[object]:
    if not isinstance(value, list):
        raise context.error(path, f"must be {wanted}, got {_show(value)}")
    return value


def _models(context: _Context, value: object, path: KeyPath) -> tuple[Model, ...]:
    items = _array(context, value, path, "an array of model names")
    if not items:
        raise context.error(path, f'must name at least one model, e.g. ["{Model.STUDY_FIND}"]')
    models: list[Model] = []
    for index, item in enumerate(items):
        if not isinstance(item, str) or item not in _MODELS:
            hint = _suggest(item, _MODELS) if isinstance(item, str) else ""
            raise context.error((*path, index), f"must be one of {', '.join(_MODELS)}, got "
                                                f"{_show(item)}{hint}")
        model = Model(item)
        if model in models:
            raise context.error((*path, index), f"repeats {item!r}, already "
                                                f"{format_key((*path, models.index(model)))}")
        models.append(model)
    return tuple(models)


def _modalities(context: _Context, value: object, path: KeyPath) -> tuple[str, ...]:
    items = _array(context, value, path, "an array of modalities such as [\"RTDOSE\"]")
    for index, item in enumerate(items):
        if not isinstance(item, str) or not item or item != item.upper():
            raise context.error((*path, index), "must be a modality in capitals such as "
                                                f"'RTDOSE', got {_show(item)}")
    return tuple(str(item) for item in items)


def _path(context: _Context, value: object, path: KeyPath) -> Path:
    """Relative to the site file's folder, so the file means the same from any cwd."""
    text = _string(context, value, path)
    if not text:
        raise context.error(path, "must be a folder path, got ''")
    folder = Path(text)
    if context.base_dir is not None and not folder.is_absolute():
        folder = context.base_dir / folder
    return folder


def _as_table(context: _Context, value: object, path: KeyPath) -> dict[str, object]:
    if not isinstance(value, dict):
        raise context.error(path, f"must be a table, got {_show(value)}")
    return value


def _table(fields: Mapping[str, Check], build: Callable[..., Any],
           required: Sequence[str] = ()) -> Check:
    """A check for a table whose keys are ``fields``, giving ``build(**checked)``."""
    def check(context: _Context, value: object, path: KeyPath) -> Any:
        table = _as_table(context, value, path)
        checked: dict[str, Any] = {}
        for key, item in table.items():
            field_check = fields.get(key)
            if field_check is None:
                kind = "table" if isinstance(item, dict) else "key"
                raise context.error((*path, key), f"unknown {kind} {key!r}" + _suggest(key, fields))
            checked[key] = field_check(context, item, (*path, key))
        missing = [key for key in required if key not in table]
        if missing:
            names = ", ".join(repr(key) for key in missing)
            raise context.error(path, f"is missing the required key{'s' * (len(missing) > 1)} "
                                      f"{names}")
        return build(**checked)
    return check


_TIMEOUTS = _table({"acse": _seconds, "dimse": _seconds, "network": _seconds}, Timeouts)
_QUIRKS = _table({"c001_modalities": _modalities, "refuse_plans_without_beams": _bool,
                  "partial_move_fraction": _fraction}, Quirks)
_TRUSTED_AE = _table({"ae_title": _ae_title, "host": _host, "port": _integer(1, _PORT_MAX),
                      "implementation_uid": _implementation_uid, "import_charset": _charset,
                      "export_charset": _charset, "charset_override": _bool},
                     TrustedAE, required=("ae_title", "host", "port"))


def _trusted(context: _Context, value: object, path: KeyPath) -> tuple[TrustedAE, ...]:
    """A trusted AE map; the daemon looks rows up by AE title, so a title may appear once."""
    items = _array(context, value, path, "an array of tables ([[...trusted]] sections)")
    rows: list[TrustedAE] = []
    for index, item in enumerate(items):
        row: TrustedAE = _TRUSTED_AE(context, item, (*path, index))
        for earlier, other in enumerate(rows):
            if other.ae_title == row.ae_title:
                raise context.error((*path, index, "ae_title"),
                                    f"{row.ae_title!r} is already the AE title of "
                                    f"{format_key((*path, earlier))}; each AE title may appear "
                                    "only once in a trusted map")
        rows.append(row)
    return tuple(rows)


_DAEMON_FIELDS: dict[str, Check] = {
    "ae_title": _ae_title, "port": _integer(0, _PORT_MAX), "bind": _bind,
    "permit_trusted_only": _bool, "max_associations": _integer(1), "timeouts": _TIMEOUTS,
    "trusted": _trusted,
}
_DB_DAEMON = _table({**_DAEMON_FIELDS, "models": _models, "strict_hierarchy": _bool,
                     "storage": _path, "quirks": _QUIRKS}, DBDaemonService)
_FILE_DAEMON = _table({**_DAEMON_FIELDS, "output": _path, "patient_folders": _bool,
                      "sync": _bool},
                      FileDaemonService)
_CLIENT = _table({"ae_title": _ae_title, "host": _host, "port": _integer(0, _PORT_MAX)},
                 ClientConfig)
_SITE = _table({"db_daemon": _DB_DAEMON, "file_daemon": _FILE_DAEMON, "client": _CLIENT}, Site)


def _check_listening_addresses(context: _Context, data: Mapping[str, object], site: Site) -> None:
    """Both daemons on one address and port: the second would fail to start, later and vaguer."""
    db, fd = site.db_daemon, site.file_daemon
    if db.port == 0 or db.port != fd.port:
        return
    db_address, fd_address = ipaddress.ip_address(db.bind), ipaddress.ip_address(fd.bind)
    # A wildcard bind takes the port on every address, so it clashes with any other bind.
    if db_address != fd_address and not (db_address.is_unspecified or fd_address.is_unspecified):
        return
    written = [(name, key) for name in ("file_daemon", "db_daemon") for key in ("port", "bind")
               if isinstance(table := data.get(name), dict) and key in table]
    path: KeyPath = written[0] if written else ("file_daemon", "port")
    raise context.error(path, f"the File Daemon ({fd.bind} port {fd.port}) and the DB Daemon "
                              f"({db.bind} port {db.port}) cannot both listen there; give them "
                              "different ports (0 picks a free one)")
