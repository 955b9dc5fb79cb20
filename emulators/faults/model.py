"""What can go wrong, as data: the faults a scenario (or a test, in Python) injects.

Every fault is a frozen dataclass with "nothing wrong" as its default, so a scenario
names only what it breaks. :func:`from_mapping` reads them from a scenario's TOML
tables with the dotted key of any mistake, since whoever writes a scenario fixes it
in an editor, not in this code.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args, get_origin

from .proxy import Toxic

# PS3.8 9.3.4: the (source, reason) pairs an A-ASSOCIATE-RJ may carry.
REJECT_REASONS: dict[int, frozenset[int]] = {
    1: frozenset({1, 2, 3, 7}),  # service-user: no reason, app context, calling AE, called AE
    2: frozenset({1, 2}),  # service-provider (ACSE): no reason, protocol version
    3: frozenset({1, 2}),  # service-provider (presentation): congestion, local limit
}
DANGLING = ("structure-set", "image-series", "plan")
CHARSET_FAULTS = ("missing", "wrong")
Leg = Literal["client", "store"]


class FaultError(ValueError):
    """A fault description that cannot be applied; ``str()`` names the key."""


@dataclass(frozen=True)
class AssociationFaults:
    """How a daemon treats association requests before (or instead of) its trust rules."""

    reject: tuple[int, int, int] | None = None  # A-ASSOCIATE-RJ (result, source, reason)
    accept_delay: float = 0.0  # seconds before the answer to A-ASSOCIATE-RQ
    abort_after_pdus: int | None = None  # A-ABORT once this many PDUs came in
    max_concurrent: int | None = None  # beyond K live associations: rejected (2, 3, 2);
    #                                     0: others hold them all
    times: int = 0  # only the first N associations (0: every one)

    def __post_init__(self) -> None:
        if self.reject is not None:
            result, source, reason = self.reject
            if result not in (1, 2):
                raise FaultError(f"reject result {result}: PS3.8 allows 1 (permanent) or "
                                 "2 (transient)")
            if reason not in REJECT_REASONS.get(source, frozenset()):
                allowed = "; ".join(f"source {s}: reasons {sorted(r)}"
                                    for s, r in REJECT_REASONS.items())
                raise FaultError(f"reject source {source} with reason {reason} is not in "
                                 f"PS3.8 9.3.4 ({allowed})")
        _non_negative(self, "accept_delay", "max_concurrent", "times")
        _positive(self, "abort_after_pdus")

    @property
    def active(self) -> bool:
        return self != AssociationFaults()


@dataclass(frozen=True)
class FindFaults:
    """The DB Daemon's C-FIND answers."""

    status: int | None = None  # answer with this failure status instead of matches
    comment: str = ""  # its Error Comment
    delay: float = 0.0  # seconds before the first response
    drop: bool = False  # never answer: the requester's DIMSE timeout must fire
    level: str = ""  # only queries at this Query/Retrieve Level (empty: every level)
    garble: bool = False  # each match's identifier is bytes no decoder makes sense of
    wrong_match: bool = False  # each match names other keys (IDs, UIDs) than the query's
    endless: bool = False  # the matches are sent again and again, never a final response
    times: int = 0  # only the first N matching queries (0: every one)

    def __post_init__(self) -> None:
        _status(self, "status")
        _non_negative(self, "delay", "times")

    @property
    def active(self) -> bool:
        return self != FindFaults()


@dataclass(frozen=True)
class MoveFaults:
    """The DB Daemon's C-MOVE (and C-GET): final status, sub-operations, cancel."""

    status: int | None = None  # final status with no sub-operations (e.g. 0xC001, 0xA701)
    comment: str = ""  # its Error Comment
    delay: float = 0.0  # seconds before the first sub-operation
    drop_final: bool = False  # send the sub-operations, never the final response
    fail_suboperations: tuple[int, ...] = ()  # these (1-based) sub-operations fail
    fail_fraction: float = 0.0  # this share of sub-operations fails, drawn with ``seed``
    seed: int = 0
    abort_after: int | None = None  # A-ABORT the requester after N sub-operations
    ignore_cancel: bool = False  # keep sending after a C-CANCEL
    endless_pending: bool = False  # after the sub-operations, pending responses for ever
    inflate_counts: int = 0  # add this to every Number of Completed Sub-operations
    wrong_instance: bool = False  # each object is sent under a SOP Instance UID not asked for
    modalities: tuple[str, ...] = ()  # only moves touching these modalities (empty: all)
    times: int = 0  # only the first N matching moves (0: every one)

    def __post_init__(self) -> None:
        _status(self, "status")
        _non_negative(self, "delay", "seed", "times", "inflate_counts")
        _positive(self, "abort_after")
        if not 0.0 <= self.fail_fraction <= 1.0:
            raise FaultError(f"fail_fraction {self.fail_fraction} is not between 0 and 1")
        if any(k < 1 for k in self.fail_suboperations):
            raise FaultError("fail_suboperations counts from 1")

    @property
    def active(self) -> bool:
        return self != MoveFaults()


@dataclass(frozen=True)
class StoreFaults:
    """The File Daemon's side of each C-STORE."""

    refuse_sop_classes: tuple[str, ...] = ()  # UIDs or keywords, refused at negotiation
    out_of_resources_after: int | None = None  # 0xA700 for every object after N
    disk_full_after: int | None = None  # the write after N objects finds the disk full
    write_delay: float = 0.0  # seconds per object before the answer (a slow disk)
    finish_after: float = 0.0  # answer at once; the file lands this many seconds later

    def __post_init__(self) -> None:
        _non_negative(self, "out_of_resources_after", "disk_full_after", "write_delay",
                      "finish_after")

    @property
    def active(self) -> bool:
        return self != StoreFaults()


@dataclass(frozen=True)
class DataFaults:
    """What is wrong with one synthetic patient's data in the archive."""

    patient: int = 0  # the synthetic patient (index) the faults below apply to
    missing_slices: tuple[int, ...] = ()  # 0-based slices of its first CT the archive lacks
    dangling: str = ""  # the archive lacks its first plan's: structure-set | image-series;
    #                     plan: a dose whose plan the archive lacks
    duplicate_uid_of: int | None = None  # its first CT slice has that patient's slice UID
    charset: str = ""  # missing | wrong: Specific Character Set on the wire
    dose_on_other_grid: bool = False  # its first plan's doses lie on another frame/grid
    empty_beams: bool = False  # its first plan has an empty Beam Sequence

    def __post_init__(self) -> None:
        _non_negative(self, "patient")
        if self.dangling and self.dangling not in DANGLING:
            raise FaultError(f"dangling {self.dangling!r}: one of {', '.join(DANGLING)}")
        if self.charset and self.charset not in CHARSET_FAULTS:
            raise FaultError(f"charset {self.charset!r}: one of {', '.join(CHARSET_FAULTS)}")
        if any(k < 0 for k in self.missing_slices):
            raise FaultError("missing_slices are 0-based slice numbers")
        if self.duplicate_uid_of == self.patient:
            raise FaultError("duplicate_uid_of must name another patient")

    @property
    def active(self) -> bool:
        return self != DataFaults()


@dataclass(frozen=True)
class ProxySpec:
    """A TCP proxy on one leg: ``client`` (client to DB Daemon) or ``store`` (the DB
    Daemon's C-STORE sub-associations to the File Daemon)."""

    leg: Leg = "client"
    toxics: tuple[Toxic, ...] = ()

    def __post_init__(self) -> None:
        if self.leg not in ("client", "store"):
            raise FaultError(f"proxy leg {self.leg!r}: client or store")


@dataclass(frozen=True)
class DBDaemonFaults:
    association: AssociationFaults = field(default_factory=AssociationFaults)
    find: FindFaults = field(default_factory=FindFaults)
    move: MoveFaults = field(default_factory=MoveFaults)


@dataclass(frozen=True)
class FileDaemonFaults:
    association: AssociationFaults = field(default_factory=AssociationFaults)
    store: StoreFaults = field(default_factory=StoreFaults)


@dataclass(frozen=True)
class Faults:
    """Everything a scenario breaks; ``Faults()`` breaks nothing."""

    db_daemon: DBDaemonFaults = field(default_factory=DBDaemonFaults)
    file_daemon: FileDaemonFaults = field(default_factory=FileDaemonFaults)
    data: DataFaults = field(default_factory=DataFaults)
    proxy: tuple[ProxySpec, ...] = ()

    def __post_init__(self) -> None:
        legs = [p.leg for p in self.proxy]
        if len(set(legs)) != len(legs):
            raise FaultError("at most one proxy per leg")

    def proxy_on(self, leg: Leg) -> ProxySpec | None:
        return next((p for p in self.proxy if p.leg == leg), None)


# --- checks ------------------------------------------------------------------------------

def _non_negative(obj: object, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is not None and value < 0:
            raise FaultError(f"{name} {value} is negative")


def _positive(obj: object, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is not None and value < 1:
            raise FaultError(f"{name} {value}: must be at least 1")


def _status(obj: object, name: str) -> None:
    value = getattr(obj, name)
    if value is not None and not 0 <= value <= 0xFFFF:
        raise FaultError(f"{name} 0x{value:X} is not a 16-bit DIMSE status")


# --- reading from TOML -------------------------------------------------------------------

T = TypeVar("T")


def from_mapping(cls: type[T], data: object, where: str = "faults") -> T:
    """``cls`` (a fault dataclass) from a scenario's table; FaultError names the key.

    Statuses may be written as numbers or as "0xC001" strings.
    """
    if not isinstance(data, Mapping):
        raise FaultError(f"{where}: expected a table, got {type(data).__name__}")
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise FaultError(f"{where}.{key}: unknown key{hint}; known: {', '.join(names)}")
        values[key] = _convert(hints[key], value, f"{where}.{key}")
    try:
        return cls(**values)
    except (FaultError, ValueError) as exc:
        raise FaultError(f"{where}: {exc}") from exc


def _convert(hint: Any, value: object, where: str) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None:
            return None
        return _convert(next(a for a in args if a is not type(None)), value, where)
    if dataclasses.is_dataclass(hint):
        return from_mapping(typing.cast(type[Any], hint), value, where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise FaultError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise FaultError(f"{where}: expected {len(args)} values, got {len(value)}")
        pairs = enumerate(zip(args, value, strict=True))
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in pairs)
    if origin is Literal:
        if value not in args:
            raise FaultError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise FaultError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        return _integer(value, where)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FaultError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise FaultError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"{where}: no conversion for {hint!r}")


def _integer(value: object, where: str) -> int:
    if isinstance(value, bool):
        raise FaultError(f"{where}: expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            pass
    raise FaultError(f"{where}: expected an integer (or a string like \"0xC001\"), got "
                     f"{value!r}")
