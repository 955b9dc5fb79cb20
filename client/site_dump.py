"""Writing a :class:`~client.site_model.Site` back as a site file (TOML).

The emulators write the effective site (with the ports they really listen on) for the
client or a user's tool to read, and a rehearsal writes complete files a site engineer can
read and edit: every key is written, in the layout :mod:`client.site_toml` reads, and
``parse_site(dump_site(site)) == site`` (``source`` aside) is the contract. The standard
library reads TOML but does not write it, hence this small writer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import PurePath

from client.site_model import (
    ClientConfig,
    DBDaemonService,
    FileDaemonService,
    Quirks,
    Site,
    Timeouts,
    TrustedAE,
)

Scalar = bool | int | float | str | PurePath  # str includes the Model enum (a StrEnum)
Value = Scalar | tuple[Scalar, ...]
Item = tuple[str, Value]

# What TOML basic strings must (or by custom do) escape; other control characters as \uXXXX.
_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n",
                  "\f": "\\f", "\r": "\\r"}


def dump_site(site: Site) -> str:
    """The site file (TOML text) that parse_site reads back as ``site`` (source aside)."""
    db, fd = site.db_daemon, site.file_daemon
    source = site.source.encode("utf-8", "replace").decode("utf-8")  # only a comment: "?" will do
    header = [f"# Written by dbdsim from {_string(source, 'source')}.",
              "# Every key is written out; comments say what is left to the emulators."]
    sections = [
        header,
        _table("db_daemon", _db_daemon(db), notes=_storage_note(db)),
        _table("db_daemon.timeouts", _timeouts(db.timeouts)),
        _table("db_daemon.quirks", _quirks(db.quirks)),
        *_trusted_rows("db_daemon.trusted", db.trusted),
        _table("file_daemon", _file_daemon(fd)),
        _table("file_daemon.timeouts", _timeouts(fd.timeouts)),
        *_trusted_rows("file_daemon.trusted", fd.trusted),
        _table("client", _client(site.client)),
    ]
    return "\n\n".join("\n".join(lines) for lines in sections) + "\n"


# --- the sections, field by field: every field of the model ------------------------------

def _daemon(service: DBDaemonService | FileDaemonService) -> list[Item]:
    return [("ae_title", service.ae_title), ("port", service.port), ("bind", service.bind),
            ("permit_trusted_only", service.permit_trusted_only),
            ("max_associations", service.max_associations)]


def _trusted_key(trusted: tuple[TrustedAE, ...] | None) -> list[Item]:
    """``trusted = []`` trusts no one; rows are [[...trusted]] sections; None writes nothing."""
    return [("trusted", ())] if trusted == () else []


def _db_daemon(db: DBDaemonService) -> list[Item]:
    storage: list[Item] = [] if db.storage is None else [("storage", db.storage)]
    return [*_daemon(db), ("models", db.models), ("strict_hierarchy", db.strict_hierarchy),
            *storage, *_trusted_key(db.trusted)]


def _storage_note(db: DBDaemonService) -> list[str]:
    if db.storage is not None:
        return []
    return ["# No storage key: objects C-STOREd to it go to a temporary folder."]


def _file_daemon(fd: FileDaemonService) -> list[Item]:
    return [*_daemon(fd), ("output", fd.output), ("patient_folders", fd.patient_folders),
            ("sync", fd.sync),
            *_trusted_key(fd.trusted)]


def _timeouts(timeouts: Timeouts) -> list[Item]:
    return [("acse", timeouts.acse), ("dimse", timeouts.dimse), ("network", timeouts.network)]


def _quirks(quirks: Quirks) -> list[Item]:
    return [("c001_modalities", quirks.c001_modalities),
            ("refuse_plans_without_beams", quirks.refuse_plans_without_beams),
            ("partial_move_fraction", quirks.partial_move_fraction)]


def _trusted_ae(row: TrustedAE) -> list[Item]:
    return [("ae_title", row.ae_title), ("host", row.host), ("port", row.port),
            ("implementation_uid", row.implementation_uid),
            ("import_charset", row.import_charset), ("export_charset", row.export_charset),
            ("charset_override", row.charset_override)]


def _client(client: ClientConfig) -> list[Item]:
    return [("ae_title", client.ae_title), ("host", client.host), ("port", client.port)]


def _trusted_rows(name: str, trusted: tuple[TrustedAE, ...] | None) -> Iterator[list[str]]:
    if trusted is None:
        peers = ("the client and the File Daemon" if name.startswith("db_")
                 else "the DB Daemon and the client")
        yield [f"# No [[{name}]] sections: the map is derived ({peers})."]
        return
    for row in trusted:
        yield _table(name, _trusted_ae(row), array=True)


# --- TOML -----------------------------------------------------------------------------

def _table(name: str, items: Iterable[Item], *, array: bool = False,
           notes: Iterable[str] = ()) -> list[str]:
    lines = [f"[[{name}]]" if array else f"[{name}]"]
    for key, value in items:
        line = f"{key} = {_value(value, f'{name}.{key}')}"
        if isinstance(value, PurePath) and not value.is_absolute():
            line += "  # relative: load_site takes it from this file's folder"
        lines.append(line)
    return [*lines, *notes]


def _value(value: Value, key: str) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_value(item, f"{key}[{index}]")
                               for index, item in enumerate(value)) + "]"
    if isinstance(value, bool):  # before int: bool is an int to Python
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # always has a "." or an exponent: a TOML float, read back exactly
    if isinstance(value, PurePath):
        return _string(value.as_posix(), key)
    return _string(str(value), key)


def _string(text: str, key: str) -> str:
    """``text`` as a TOML basic string: UTF-8 kept, quotes, backslashes, controls escaped."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[char])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        elif 0xD800 <= code <= 0xDFFF:
            # A lone surrogate (an undecodable file name byte): no UTF-8, no TOML escape.
            raise ValueError(f"{key}: {text!r} has the lone surrogate U+{code:04X}, which a "
                             "TOML (UTF-8) file cannot hold")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)
