"""The DB Daemon's matching engine: C-FIND and C-MOVE identifiers as SQL over the index.

PS3.4 C.2.2.2 matching (universal, single value, wildcard, range, UID list) becomes
bound-parameter SQL, so a 10,000-patient index answers in milliseconds. Two
dialects: the default is as lenient as the real DB Daemon, which accepts
identifiers carrying only the key of the level asked for; ``strict=True`` applies
the standard's hierarchical checks.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import sqlite3
import unicodedata
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum, IntEnum, StrEnum
from typing import Final

from pydicom.dataelem import DataElement, empty_value_for_VR
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from ..archive.index import ArchiveIndex

IDENTIFIER_DOES_NOT_MATCH: Final = 0xA900
UNABLE_TO_PROCESS: Final = 0xC000

__all__ = [
    "IDENTIFIER_DOES_NOT_MATCH",
    "KEYS",
    "UNABLE_TO_PROCESS",
    "Key",
    "Kind",
    "Level",
    "MatchedInstance",
    "QueryError",
    "Root",
    "find",
    "move_matches",
]


class QueryError(Exception):
    """A request the daemon refuses; ``status``/``comment`` go into the response."""

    def __init__(self, status: int, comment: str, sentence: str) -> None:
        super().__init__(sentence)
        self.status = status
        self.comment = comment[:64]


def _mismatch(comment: str, sentence: str) -> QueryError:
    return QueryError(IDENTIFIER_DOES_NOT_MATCH, comment, sentence)


def _unprocessable(comment: str, sentence: str) -> QueryError:
    return QueryError(UNABLE_TO_PROCESS, comment, sentence)


class Root(StrEnum):
    """The information model of the association's presentation context."""

    PATIENT = "patient"
    STUDY = "study"


class Level(IntEnum):
    """Query/Retrieve levels, top down; the order is the hierarchy."""

    PATIENT = 0
    STUDY = 1
    SERIES = 2
    IMAGE = 3


ROOT_LEVELS: Final[dict[Root, tuple[Level, ...]]] = {
    Root.PATIENT: (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE),
    Root.STUDY: (Level.STUDY, Level.SERIES, Level.IMAGE),
}
_ROOT_NAME: Final = {Root.PATIENT: "Patient Root", Root.STUDY: "Study Root"}
UNIQUE: Final[dict[Level, str]] = {
    Level.PATIENT: "PatientID",
    Level.STUDY: "StudyInstanceUID",
    Level.SERIES: "SeriesInstanceUID",
    Level.IMAGE: "SOPInstanceUID",
}


class Kind(Enum):
    MATCH = "match"  # matched and returned
    COUNT = "count"  # return-only: a number of related entities
    MODALITIES = "modalities"  # ModalitiesInStudy: matched against the study's series


@dataclass(frozen=True)
class Key:
    """A supported key; ``sql`` is over aliases p, st, se, i (patient/study/series/instance_v)."""

    level: Level  # its Patient Root level; Study Root folds PATIENT into STUDY
    vr: str
    sql: str
    unique: bool = False
    kind: Kind = Kind.MATCH


def _only(modalities: tuple[str, ...], column: str) -> str:
    """An instance column that means something only for some modalities (else NULL)."""
    listed = ", ".join(f"'{m}'" for m in modalities)
    return f"CASE WHEN se.modality IN ({listed}) THEN {column} END"


_PLAN, _STRUCT, _DOSE = ("RTPLAN",), ("RTSTRUCT",), ("RTDOSE",)
_P, _ST, _SE, _I = Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE

KEYS: Final[dict[str, Key]] = {
    "PatientID": Key(_P, "LO", "p.patient_id", unique=True),
    "PatientName": Key(_P, "PN", "p.patient_name"),
    "PatientBirthDate": Key(_P, "DA", "p.birth_date"),
    "PatientSex": Key(_P, "CS", "p.sex"),
    "NumberOfPatientRelatedStudies": Key(
        _P, "IS", "(SELECT count(*) FROM study x WHERE x.patient_pk = p.pk)", kind=Kind.COUNT),
    "NumberOfPatientRelatedSeries": Key(
        _P, "IS", "(SELECT count(*) FROM series x JOIN study y ON y.pk = x.study_pk"
        " WHERE y.patient_pk = p.pk)", kind=Kind.COUNT),
    "NumberOfPatientRelatedInstances": Key(
        _P, "IS", "(SELECT count(*) FROM instance x JOIN series y ON y.pk = x.series_pk"
        " JOIN study z ON z.pk = y.study_pk WHERE z.patient_pk = p.pk)", kind=Kind.COUNT),
    "StudyInstanceUID": Key(_ST, "UI", "st.study_uid", unique=True),
    "StudyDate": Key(_ST, "DA", "st.study_date"),
    "StudyTime": Key(_ST, "TM", "st.study_time"),
    "AccessionNumber": Key(_ST, "SH", "st.accession"),
    "StudyID": Key(_ST, "SH", "st.study_id"),
    "StudyDescription": Key(_ST, "LO", "st.description"),
    "ReferringPhysicianName": Key(_ST, "PN", "st.referring_physician"),
    "ModalitiesInStudy": Key(
        _ST, "CS", "(SELECT group_concat(DISTINCT x.modality) FROM series x"
        " WHERE x.study_pk = st.pk)", kind=Kind.MODALITIES),
    "NumberOfStudyRelatedSeries": Key(
        _ST, "IS", "(SELECT count(*) FROM series x WHERE x.study_pk = st.pk)", kind=Kind.COUNT),
    "NumberOfStudyRelatedInstances": Key(
        _ST, "IS", "(SELECT count(*) FROM instance x JOIN series y ON y.pk = x.series_pk"
        " WHERE y.study_pk = st.pk)", kind=Kind.COUNT),
    "SeriesInstanceUID": Key(_SE, "UI", "se.series_uid", unique=True),
    "Modality": Key(_SE, "CS", "se.modality"),
    "SeriesNumber": Key(_SE, "IS", "se.series_number"),
    "SeriesDescription": Key(_SE, "LO", "se.description"),
    "NumberOfSeriesRelatedInstances": Key(
        _SE, "IS", "(SELECT count(*) FROM instance x WHERE x.series_pk = se.pk)",
        kind=Kind.COUNT),
    "SOPInstanceUID": Key(_I, "UI", "i.sop_uid", unique=True),
    "SOPClassUID": Key(_I, "UI", "i.sop_class"),
    "InstanceNumber": Key(_I, "IS", "i.instance_number"),
    "RTPlanLabel": Key(_I, "SH", _only(_PLAN, "i.label")),
    "RTPlanName": Key(_I, "LO", _only(_PLAN, "i.name")),
    "RTPlanDate": Key(_I, "DA", _only(_PLAN, "i.rt_date")),
    "RTPlanTime": Key(_I, "TM", _only(_PLAN, "i.rt_time")),
    "StructureSetLabel": Key(_I, "SH", _only(_STRUCT, "i.label")),
    "StructureSetName": Key(_I, "LO", _only(_STRUCT, "i.name")),
    "StructureSetDate": Key(_I, "DA", _only(_STRUCT, "i.rt_date")),
    "StructureSetTime": Key(_I, "TM", _only(_STRUCT, "i.rt_time")),
    "ApprovalStatus": Key(_I, "CS", _only(_PLAN + _STRUCT, "i.approval")),
    "DoseSummationType": Key(_I, "CS", _only(_DOSE, "i.summation")),
}
WILDCARD_VRS: Final = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"})
_NOT_KEYS: Final = frozenset({"SpecificCharacterSet", "QueryRetrieveLevel"})

_FROM: Final = {
    Level.PATIENT: "patient p",
    Level.STUDY: "patient p JOIN study st ON st.patient_pk = p.pk",
    Level.SERIES: "patient p JOIN study st ON st.patient_pk = p.pk"
                  " JOIN series se ON se.study_pk = st.pk",
    Level.IMAGE: "patient p JOIN study st ON st.patient_pk = p.pk"
                 " JOIN series se ON se.study_pk = st.pk JOIN instance_v i ON i.series_pk = se.pk",
}
_ORDER: Final = {
    Level.PATIENT: "p.patient_id",
    Level.STUDY: "p.patient_id, st.study_date, st.study_time, st.study_uid",
    Level.SERIES: "p.patient_id, st.study_date, st.study_time, st.study_uid,"
                  " se.series_number, se.series_uid",
    Level.IMAGE: "p.patient_id, st.study_date, st.study_time, st.study_uid,"
                 " se.series_number, se.series_uid, i.instance_number, i.sop_uid",
}

Values = tuple[str, ...]


@dataclass(frozen=True)
class MatchedInstance:
    """One instance a C-MOVE sends."""

    patient_id: str
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class: str
    modality: str


# -- the request ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Request:
    root: Root
    level: Level
    elements: tuple[DataElement, ...]  # what the response echoes, in tag order
    values: dict[str, Values]  # every supported key present, with its non-empty values

    def key_level(self, keyword: str) -> Level:
        return max(KEYS[keyword].level, ROOT_LEVELS[self.root][0])

    def at_or_above(self) -> list[str]:
        return [k for k in self.values if self.key_level(k) <= self.level]


def _values(elem: DataElement) -> Values:
    value = elem.value
    items = value if isinstance(value, MultiValue | list | tuple) else [value]
    texts = ("" if item is None else str(item).strip() for item in items)
    return tuple(text for text in texts if text)


def _query_level(identifier: Dataset, root: Root) -> Level:
    raw = identifier.get("QueryRetrieveLevel")
    text = "" if raw is None else str(raw).strip()
    allowed = ROOT_LEVELS[root]
    names = ", ".join(level.name for level in allowed)
    model = _ROOT_NAME[root]
    if not text:
        raise _mismatch("Missing QueryRetrieveLevel",
                        f"The identifier has no QueryRetrieveLevel; {model} takes {names}.")
    level = Level.__members__.get(text)
    if level is None or level not in allowed:
        raise _mismatch(f"QueryRetrieveLevel {text[:16]} not in {model}",
                        f"QueryRetrieveLevel {text!r} is not a level of {model} ({names}).")
    return level


def _parse(identifier: Dataset, root: Root) -> _Request:
    try:
        level = _query_level(identifier, root)
        elements = tuple(elem for elem in identifier
                         if elem.tag.element != 0 and elem.keyword not in _NOT_KEYS)
        values = {elem.keyword: _values(elem) for elem in elements if elem.keyword in KEYS}
    except (ValueError, TypeError, UnicodeError) as exc:
        raise _unprocessable("Undecodable identifier",
                             f"The identifier could not be decoded: {exc}.") from exc
    return _Request(root, level, elements, values)


# -- validation ----------------------------------------------------------------------


def _require_single(request: _Request, keyword: str, why: str) -> None:
    values = request.values.get(keyword, ())
    wild = KEYS[keyword].vr != "UI" and any(c in v for v in values for c in "*?")
    if len(values) != 1 or wild:
        raise _mismatch(f"{keyword} needs a single value",
                        f"{why} needs a single {keyword} (no wildcard, no list); "
                        f"the identifier has {list(values) or 'none'}.")


def _require_above(request: _Request) -> None:
    for level in ROOT_LEVELS[request.root]:
        if level < request.level:
            _require_single(request, UNIQUE[level],
                            f"A {request.level.name} level request in {_ROOT_NAME[request.root]}")


def _check_find_strict(request: _Request) -> None:
    """Hierarchical search (PS3.4 C.4.1.2.1): unique keys above, nothing below."""
    for keyword in request.values:
        if request.key_level(keyword) > request.level:
            raise _mismatch(f"{keyword} is below the {request.level.name} level",
                            f"{keyword} is a key of a level below {request.level.name}; a "
                            "hierarchical query may not carry it.")
    _require_above(request)


def _check_move_lenient(request: _Request) -> None:
    if not any(request.values.get(keyword) for keyword in UNIQUE.values()):
        raise _mismatch("No patient, study, series or instance named",
                        "The C-MOVE identifier names no patient, study, series or instance: "
                        "give a PatientID, StudyInstanceUID, SeriesInstanceUID or "
                        "SOPInstanceUID.")


def _check_move_strict(request: _Request) -> None:
    """Hierarchical retrieve (PS3.4 C.4.2.2.1): unique keys only, the level's may list."""
    own = UNIQUE[request.level]
    if not request.values.get(own):
        raise _mismatch(f"{own} missing for {request.level.name} move",
                        f"A {request.level.name} level C-MOVE needs {own} (one or a list).")
    _require_above(request)
    allowed = {UNIQUE[level] for level in ROOT_LEVELS[request.root] if level <= request.level}
    for elem in request.elements:
        if elem.keyword not in allowed and not elem.tag.is_private_creator and not elem.is_empty:
            name = elem.keyword or str(elem.tag)
            raise _mismatch(f"{name} not allowed in a C-MOVE identifier",
                            f"{name} has a value, but a hierarchical C-MOVE identifier carries "
                            f"only unique keys ({', '.join(sorted(allowed))}).")


# -- matching as SQL -----------------------------------------------------------------


@dataclass
class _Where:
    clauses: list[str] = field(default_factory=list)
    params: list[object] = field(default_factory=list)

    def add(self, clause: tuple[str, list[object]] | None) -> None:
        if clause is not None:
            self.clauses.append(clause[0])
            self.params.extend(clause[1])


Clause = tuple[str, list[object]]
_TIME = re.compile(r"(?:[01]\d|2[0-3])(?:[0-5]\d(?:(?:[0-5]\d|60)(?:\.\d{1,6})?)?)?")


def _valid_date(text: str) -> bool:
    if not (len(text) == 8 and text.isascii() and text.isdigit()):
        return False
    try:
        dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return False
    return True


def _valid_time(text: str) -> bool:
    return text.isascii() and _TIME.fullmatch(text) is not None


def _date_time(keyword: str, vr: str, expr: str, value: str) -> Clause:
    """DA/TM single value or range; a partial TM upper bound covers all its finer times."""
    valid = _valid_date if vr == "DA" else _valid_time
    low, dash, high = value.partition("-")
    if (not dash and not valid(value)) or (dash and (
            "-" in high or not (low or high)
            or (low and not valid(low)) or (high and not valid(high)))):
        kind = "date" if vr == "DA" else "time"
        raise _unprocessable(f"Malformed {kind} in {keyword}",
                             f"{keyword} {value!r} is not a {vr} value or range "
                             f"({'YYYYMMDD' if vr == 'DA' else 'HHMMSS.FFFFFF'}, a-b, -b, a-).")
    if not dash:
        return f"{expr} = ?", [value]
    clauses, params = [f"{expr} <> ''"], list[object]()
    if low:
        clauses.append(f"{expr} >= ?")
        params.append(low)
    if high:
        clauses.append(f"{expr} <= ?")
        # '~' sorts after digits and '.', so '1200~' is above every 12:00:xx.
        params.append(high + "~" if vr == "TM" else high)
    return "(" + " AND ".join(clauses) + ")", params


def _integer(keyword: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise _unprocessable(f"Malformed number in {keyword}",
                             f"{keyword} {value!r} is not an integer string (IS).") from None


def _single(keyword: str, vr: str, expr: str, value: str, *, literal: bool) -> Clause | None:
    """One value: universal (None), equality, wildcard or range, by VR."""
    if vr in ("DA", "TM"):
        return _date_time(keyword, vr, expr, value)
    if vr == "IS":
        return f"{expr} = ?", [_integer(keyword, value)]
    if literal or vr not in WILDCARD_VRS:
        return f"{expr} = ?", [value]
    if value == "*":
        return None
    if vr == "PN":
        return f"{_PN_FUNCTION}(?, {expr})", [value]
    if "*" in value or "?" in value:
        return f"({expr} <> '' AND {expr} GLOB ?)", [value.replace("[", "[[]")]
    return f"{expr} = ?", [value]


def _modalities(values: Values) -> Clause | None:
    """ModalitiesInStudy: the study has a series of any of the listed modalities."""
    clauses, params = [], list[object]()
    for value in values:
        clause = _single("ModalitiesInStudy", "CS", "m.modality", value, literal=False)
        if clause is None:
            return None
        clauses.append(clause[0])
        params.extend(clause[1])
    return ("EXISTS (SELECT 1 FROM series m WHERE m.study_pk = st.pk AND ("
            + " OR ".join(clauses) + "))", params)


def _condition(keyword: str, values: Values, *, literal_unique: bool) -> Clause | None:
    key = KEYS[keyword]
    if not values or key.kind is Kind.COUNT:
        return None
    if key.kind is Kind.MODALITIES:
        return _modalities(values)
    if len(values) > 1 and key.vr == "UI":
        # List of UID matching (PS3.4 C.2.2.2.2), the only list matching there is.
        # One JSON parameter, whatever the list's length (SQLite caps bound parameters).
        return f"{key.sql} IN (SELECT value FROM json_each(?))", [json.dumps(values)]
    if len(values) > 1:
        # Any other key with a backslash is one value as the index stores it ("A\\B"
        # joined), so that a multi-valued ID sent to the archive can be found again.
        values = ("\\".join(values),)
    return _single(keyword, key.vr, key.sql, values[0],
                   literal=literal_unique and key.unique)


def _where(request: _Request, keywords: Iterable[str], *, literal_unique: bool) -> _Where:
    where = _Where()
    for keyword in keywords:
        where.add(_condition(keyword, request.values[keyword], literal_unique=literal_unique))
    return where


def _select(columns: Sequence[str], depth: Level, where: _Where) -> str:
    sql = f"SELECT {', '.join(columns) or '1'} FROM {_FROM[depth]}"
    if where.clauses:
        sql += " WHERE " + " AND ".join(where.clauses)
    return sql + f" ORDER BY {_ORDER[depth]}"


# -- person names ----------------------------------------------------------------------

_PN_FUNCTION: Final = "dbd_pn_match"
_REGISTERED: weakref.WeakSet[ArchiveIndex] = weakref.WeakSet()


def _pn_fold(text: str) -> str:
    """Caseless form; trailing empty components and groups are not significant (PS3.5 6.2)."""
    groups = unicodedata.normalize("NFC", text).casefold().split("=")
    return "=".join(group.rstrip("^") for group in groups).rstrip("=")


@functools.lru_cache(maxsize=1024)
def _pn_pattern(pattern: str) -> re.Pattern[str]:
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in _pn_fold(pattern))
    return re.compile("".join(parts), re.DOTALL)


def _pn_match(pattern: str, value: str | None) -> bool:
    """Case-insensitive PN match; a one-group pattern may also match any one group.

    So ``Yamada^Taro`` finds ``Yamada^Taro=山田^太郎=やまだ^たろう``.
    """
    if not value:
        return False
    regex = _pn_pattern(pattern)
    folded = _pn_fold(value)
    candidates = [folded] if "=" in pattern else [folded, *folded.split("=")]
    return any(regex.fullmatch(candidate) for candidate in candidates)


def _register_functions(index: ArchiveIndex) -> None:
    """Teach the index's connection the PN matcher, once per index."""
    if index in _REGISTERED:
        return
    index.create_function(_PN_FUNCTION, 2, _pn_match)
    _REGISTERED.add(index)


def _run(index: ArchiveIndex, sql: str, params: list[object]) -> list[sqlite3.Row]:
    _register_functions(index)
    try:
        return index.query(sql, params)
    except sqlite3.Error as exc:
        raise _unprocessable("Archive index query failed",
                             f"The archive index could not run the query: {exc}.") from exc


# -- responses -------------------------------------------------------------------------


def _cell(key: Key, raw: object) -> object:
    if raw is None or raw == "":
        return ""
    if key.kind is Kind.COUNT:
        return int(str(raw))
    if key.kind is Kind.MODALITIES:
        modalities = sorted(str(raw).split(","))
        return modalities[0] if len(modalities) == 1 else modalities
    return str(raw)


def _answer(elem: DataElement, row: sqlite3.Row, columns: dict[str, int],
            retrieve_ae: str | None) -> DataElement:
    column = columns.get(elem.keyword)
    if column is not None:
        key = KEYS[elem.keyword]
        return DataElement(elem.tag, key.vr, _cell(key, row[column]))
    if elem.keyword in KEYS:  # a key below the query level
        return DataElement(elem.tag, KEYS[elem.keyword].vr, "")
    if elem.keyword == "RetrieveAETitle":
        return DataElement(elem.tag, "AE", retrieve_ae or "")
    if elem.tag.is_private_creator:  # keeps the private block its keys belong to
        return DataElement(elem.tag, elem.VR, elem.value)
    return DataElement(elem.tag, elem.VR, empty_value_for_VR(elem.VR))


def _responses(request: _Request, rows: list[sqlite3.Row], returned: list[str],
               retrieve_ae: str | None) -> Iterator[Dataset]:
    columns = {keyword: n for n, keyword in enumerate(returned)}
    for row in rows:
        ds = Dataset()
        ds.QueryRetrieveLevel = request.level.name
        for elem in request.elements:
            ds.add(_answer(elem, row, columns, retrieve_ae))
        yield ds


# -- the public API ----------------------------------------------------------------------


def find(index: ArchiveIndex, identifier: Dataset, root: Root, *, strict: bool = False,
         retrieve_ae: str | None = None) -> Iterator[Dataset]:
    """The C-FIND responses for ``identifier``; raises :class:`QueryError` before any.

    Each response holds exactly the requested keys (SpecificCharacterSet aside,
    which the daemon sets) plus QueryRetrieveLevel; keys below the level are empty.
    """
    request = _parse(identifier, root)
    if strict:
        _check_find_strict(request)
    returned = request.at_or_above()
    where = _where(request, returned, literal_unique=False)
    sql = _select([KEYS[keyword].sql for keyword in returned], request.level, where)
    rows = _run(index, sql, where.params)
    return _responses(request, rows, returned, retrieve_ae)


def move_matches(index: ArchiveIndex, identifier: Dataset, root: Root, *,
                 strict: bool = False) -> list[MatchedInstance]:
    """The instances a C-MOVE of ``identifier`` sends, in archive order.

    Unique keys match literally (single value or list, never a wildcard), so a
    stray ``*`` cannot send the whole archive; in lenient mode every other key
    with a value, at any level, narrows the selection.
    """
    request = _parse(identifier, root)
    if strict:
        _check_move_strict(request)
    else:
        _check_move_lenient(request)
    where = _where(request, request.values, literal_unique=True)
    columns = ["p.patient_id", "st.study_uid", "se.series_uid", "i.sop_uid", "i.sop_class",
               "se.modality"]
    rows = _run(index, _select(columns, Level.IMAGE, where), where.params)
    return [MatchedInstance(*(str(value) for value in row)) for row in rows]
