"""``find`` and ``move_matches`` agree with a plain-Python matcher on random archives.

The reference below knows nothing of SQL: it flattens the generator's rows into one
dict per instance and applies PS3.4 C.2.2.2 (and the daemon's dialects) in Python.
"""

from __future__ import annotations

import re
import unicodedata
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from emulators.archive import Archive
from emulators.archive.from_recipe import recipe_rows
from emulators.db_daemon.query import QueryError, Root, find, move_matches
from emulators.synthetic import Profile, SyntheticConfig, make_recipe

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
ROOT_LEVELS = {Root.PATIENT: LEVELS, Root.STUDY: LEVELS[1:]}
UNIQUE = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID",
          "IMAGE": "SOPInstanceUID"}
UNIQUE_KEYS = frozenset(UNIQUE.values())
WILDCARD_VRS = frozenset({"CS", "LO", "PN", "SH"})

# keyword -> (Patient Root level, VR); return-only counts have VR "#".
KEYS: dict[str, tuple[str, str]] = {
    "PatientID": ("PATIENT", "LO"), "PatientName": ("PATIENT", "PN"),
    "PatientBirthDate": ("PATIENT", "DA"), "PatientSex": ("PATIENT", "CS"),
    "NumberOfPatientRelatedStudies": ("PATIENT", "#"),
    "NumberOfPatientRelatedSeries": ("PATIENT", "#"),
    "NumberOfPatientRelatedInstances": ("PATIENT", "#"),
    "StudyInstanceUID": ("STUDY", "UI"), "StudyDate": ("STUDY", "DA"),
    "StudyTime": ("STUDY", "TM"), "AccessionNumber": ("STUDY", "SH"), "StudyID": ("STUDY", "SH"),
    "StudyDescription": ("STUDY", "LO"), "ReferringPhysicianName": ("STUDY", "PN"),
    "ModalitiesInStudy": ("STUDY", "CS"),
    "NumberOfStudyRelatedSeries": ("STUDY", "#"), "NumberOfStudyRelatedInstances": ("STUDY", "#"),
    "SeriesInstanceUID": ("SERIES", "UI"), "Modality": ("SERIES", "CS"),
    "SeriesNumber": ("SERIES", "IS"), "SeriesDescription": ("SERIES", "LO"),
    "NumberOfSeriesRelatedInstances": ("SERIES", "#"),
    "SOPInstanceUID": ("IMAGE", "UI"), "SOPClassUID": ("IMAGE", "UI"),
    "InstanceNumber": ("IMAGE", "IS"),
    "RTPlanLabel": ("IMAGE", "SH"), "RTPlanName": ("IMAGE", "LO"),
    "RTPlanDate": ("IMAGE", "DA"), "RTPlanTime": ("IMAGE", "TM"),
    "StructureSetLabel": ("IMAGE", "SH"), "StructureSetName": ("IMAGE", "LO"),
    "StructureSetDate": ("IMAGE", "DA"), "StructureSetTime": ("IMAGE", "TM"),
    "ApprovalStatus": ("IMAGE", "CS"), "DoseSummationType": ("IMAGE", "CS"),
}
OTHER_KEYS = ("PatientAge", "InstitutionName")  # real keywords the daemon does not support
COUNTS = {"NumberOfPatientRelatedStudies": ("PATIENT", "STUDY"),
          "NumberOfPatientRelatedSeries": ("PATIENT", "SERIES"),
          "NumberOfPatientRelatedInstances": ("PATIENT", "IMAGE"),
          "NumberOfStudyRelatedSeries": ("STUDY", "SERIES"),
          "NumberOfStudyRelatedInstances": ("STUDY", "IMAGE"),
          "NumberOfSeriesRelatedInstances": ("SERIES", "IMAGE")}

Record = dict[str, str | None]
Spec = dict[str, str | list[str]]  # keyword -> value ("" empty, list: multi-valued)


class Refused(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(hex(status))
        self.status = status


# -- the archive as plain records ---------------------------------------------------------


def records(config: SyntheticConfig, patients: int) -> list[Record]:
    """One flat record per instance, straight from the generator's rows (no SQL)."""
    out: list[Record] = []
    for n in range(patients):
        for patient, study, series, instances in recipe_rows(make_recipe(config, n)):
            for inst in instances:
                modality = series.modality
                plan, struct = modality == "RTPLAN", modality == "RTSTRUCT"
                out.append({
                    "PatientID": patient.patient_id, "PatientName": patient.name,
                    "PatientBirthDate": patient.birth_date, "PatientSex": patient.sex,
                    "StudyInstanceUID": study.uid, "StudyDate": study.date,
                    "StudyTime": study.time, "AccessionNumber": study.accession,
                    "StudyID": study.study_id, "StudyDescription": study.description,
                    "ReferringPhysicianName": study.referring_physician,
                    "SeriesInstanceUID": series.uid, "Modality": modality,
                    "SeriesNumber": _text(series.number),
                    "SeriesDescription": series.description,
                    "SOPInstanceUID": inst.sop_uid, "SOPClassUID": inst.sop_class,
                    "InstanceNumber": _text(inst.number),
                    "RTPlanLabel": inst.label if plan else None,
                    "RTPlanName": inst.name if plan else None,
                    "RTPlanDate": inst.rt_date if plan else None,
                    "RTPlanTime": inst.rt_time if plan else None,
                    "StructureSetLabel": inst.label if struct else None,
                    "StructureSetName": inst.name if struct else None,
                    "StructureSetDate": inst.rt_date if struct else None,
                    "StructureSetTime": inst.rt_time if struct else None,
                    "ApprovalStatus": inst.approval if plan or struct else None,
                    "DoseSummationType": inst.summation if modality == "RTDOSE" else None,
                })
    return out


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def order(record: Record) -> tuple[Any, ...]:
    def number(key: str) -> tuple[bool, int]:
        value = record[key]
        return (value is not None, int(value or 0))

    return (record["PatientID"], record["StudyDate"], record["StudyTime"],
            record["StudyInstanceUID"], number("SeriesNumber"), record["SeriesInstanceUID"],
            number("InstanceNumber"), record["SOPInstanceUID"])


# -- the reference matcher ------------------------------------------------------------------


def level_of(keyword: str, root: Root) -> int:
    level = LEVELS.index(KEYS[keyword][0])
    return max(level, 1) if root is Root.STUDY else level


def values_of(value: str | list[str]) -> list[str]:
    items = value if isinstance(value, list) else [value]
    return [v.strip() for v in items if v.strip()]


def glob(pattern: str, *, fold: Callable[[str], str] = str) -> re.Pattern[str]:
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in fold(pattern))
    return re.compile("".join(parts), re.DOTALL)


def pn_fold(text: str) -> str:
    groups = unicodedata.normalize("NFC", text).casefold().split("=")
    return "=".join(g.rstrip("^") for g in groups).rstrip("=")


def pn_matches(pattern: str, actual: str) -> bool:
    regex = glob(pattern, fold=pn_fold)
    whole = pn_fold(actual)
    groups = [] if "=" in pattern else whole.split("=")
    return any(regex.fullmatch(g) for g in [whole, *groups])


DATE = re.compile(r"\d{8}")
TIME = re.compile(r"([01]\d|2[0-3])([0-5]\d(([0-5]\d|60)(\.\d{1,6})?)?)?")


def valid(vr: str, text: str) -> bool:
    if vr == "TM":
        return TIME.fullmatch(text) is not None
    if DATE.fullmatch(text) is None:
        return False
    month, day = int(text[4:6]), int(text[6:])
    return 1 <= month <= 12 and 1 <= day <= 31  # the generator writes no 30 February


def range_matches(vr: str, value: str, actual: str | None) -> bool:
    parts = value.split("-")
    if len(parts) > 2 or not any(parts) or any(p and not valid(vr, p) for p in parts):
        raise Refused(0xC000)
    if len(parts) == 1:
        return actual == value
    low, high = parts
    if not actual:
        return False
    above = not low or actual >= low
    below = not high or actual <= high or (vr == "TM" and actual.startswith(high))
    return above and below


def single_matches(vr: str, value: str, actual: str | None, *, literal: bool) -> bool:
    if vr in ("DA", "TM"):
        return range_matches(vr, value, actual)
    if vr == "IS":
        if not re.fullmatch(r"[+-]?\d+", value):
            raise Refused(0xC000)
        return actual is not None and int(actual) == int(value)
    if literal or vr not in WILDCARD_VRS:
        return actual == value
    if value == "*":
        return True
    if not actual:
        return False
    if vr == "PN":
        return pn_matches(value, actual)
    return glob(value).fullmatch(actual) is not None


def key_matches(keyword: str, value: str | list[str], record: Record, modalities: set[str],
                *, literal_unique: bool) -> bool:
    vr = KEYS[keyword][1]
    values = values_of(value)
    if not values or vr == "#":
        return True
    if keyword == "ModalitiesInStudy":
        if "*" in values:
            return True
        return any(single_matches("CS", v, m, literal=False) for v in values for m in modalities)
    if len(values) > 1 and vr == "UI":
        return record[keyword] in values
    if len(values) > 1:  # not a list: one value with a backslash in it, as stored
        values = ["\\".join(values)]
    literal = literal_unique and keyword in UNIQUE_KEYS
    return single_matches(vr, values[0], record[keyword], literal=literal)


def check_level(root: Root, level: str) -> int:
    if level not in ROOT_LEVELS[root]:
        raise Refused(0xA900)
    return LEVELS.index(level)


def require_single(spec: Spec, keyword: str) -> None:
    values = values_of(spec.get(keyword, ""))
    if len(values) != 1 or (KEYS[keyword][1] != "UI" and any(c in values[0] for c in "*?")):
        raise Refused(0xA900)


def above(root: Root, depth: int) -> Iterable[str]:
    return (UNIQUE[lv] for lv in ROOT_LEVELS[root] if LEVELS.index(lv) < depth)


@dataclass(frozen=True)
class Model:
    rows: list[Record]

    def modalities(self, study: str | None) -> set[str]:
        return {str(r["Modality"]) for r in self.rows if r["StudyInstanceUID"] == study}

    def count(self, keyword: str, record: Record) -> str:
        parent, child = COUNTS[keyword]
        unique, below = UNIQUE[parent], UNIQUE[child]
        return str(len({r[below] for r in self.rows if r[unique] == record[unique]}))

    def answer(self, keyword: str, record: Record, depth: int, root: Root) -> list[str]:
        if keyword not in KEYS or level_of(keyword, root) > depth:
            return []
        if keyword in COUNTS:
            return [self.count(keyword, record)]
        if keyword == "ModalitiesInStudy":
            return sorted(self.modalities(record["StudyInstanceUID"]))
        value = record[keyword]
        return [value] if value else []

    def find(self, spec: Spec, root: Root, level: str, strict: bool) -> list[dict[str, list[str]]]:
        depth = check_level(root, level)
        known = [k for k in spec if k in KEYS]
        if strict:
            if any(level_of(k, root) > depth for k in known):
                raise Refused(0xA900)
            for keyword in above(root, depth):
                require_single(spec, keyword)
        filters = [k for k in known if level_of(k, root) <= depth]
        entities: dict[str | None, Record] = {}
        for record in sorted(self.rows, key=order):
            entities.setdefault(record[UNIQUE[level]], record)
        out = []
        for record in entities.values():
            study = self.modalities(record["StudyInstanceUID"]) if depth >= 1 else set()
            # Every key is checked (and may refuse) even after one has failed to match.
            hits = [key_matches(k, spec[k], record, study, literal_unique=False)
                    for k in filters]
            if all(hits):
                answer = {k: self.answer(k, record, depth, root) for k in spec}
                out.append({**answer, "QueryRetrieveLevel": [level]})
        return out

    def move(self, spec: Spec, root: Root, level: str, strict: bool) -> list[str]:
        depth = check_level(root, level)
        named = {k for k in spec if values_of(spec[k])}
        if strict:
            if not values_of(spec.get(UNIQUE[level], "")):
                raise Refused(0xA900)
            for keyword in above(root, depth):
                require_single(spec, keyword)
            allowed = {UNIQUE[lv] for lv in ROOT_LEVELS[root] if LEVELS.index(lv) <= depth}
            if named - allowed:
                raise Refused(0xA900)
        elif not named & UNIQUE_KEYS:
            raise Refused(0xA900)
        known = [k for k in spec if k in KEYS]
        out = []
        for record in sorted(self.rows, key=order):
            study = self.modalities(record["StudyInstanceUID"])
            hits = [key_matches(k, spec[k], record, study, literal_unique=True) for k in known]
            if all(hits):
                out.append(str(record["SOPInstanceUID"]))
        return out


# -- random identifiers ----------------------------------------------------------------------


def mangle(data: st.DataObject, text: str) -> str:
    """Put ``?`` and ``*`` into a value so that it should still match it."""
    if not text:
        return "*"
    chars = list(text)
    for _ in range(data.draw(st.integers(0, 2))):
        chars[data.draw(st.integers(0, len(chars) - 1))] = "?"
    start = data.draw(st.integers(0, len(chars)))
    stop = data.draw(st.integers(start, len(chars)))
    if data.draw(st.booleans()):
        chars[start:stop] = ["*"]
    return "".join(chars)


def time_bound(data: st.DataObject, text: str) -> str:
    return text[:data.draw(st.sampled_from((2, 4, 6)))] if len(text) >= 6 else text


def draw_range(data: st.DataObject, vr: str, present: list[str]) -> str:
    low, high = sorted(data.draw(st.sampled_from(present)) for _ in range(2))
    if vr == "TM":
        low, high = time_bound(data, low), time_bound(data, high)
    if data.draw(st.booleans()):
        low, high = high, low  # an empty range now and then
    shape = data.draw(st.sampled_from(("a-b", "-b", "a-")))
    return {"a-b": f"{low}-{high}", "-b": f"-{high}", "a-": f"{low}-"}[shape]


def draw_value(data: st.DataObject, keyword: str, rows: list[Record]) -> str | list[str]:
    vr = KEYS[keyword][1] if keyword in KEYS else "LO"
    present = sorted({str(r[keyword]) for r in rows if r.get(keyword)}) or ["NOPE"]
    kind = data.draw(st.sampled_from(("empty", "exact", "exact", "mangled", "odd")))
    if kind == "empty" or vr == "#" or keyword in OTHER_KEYS:
        return data.draw(st.sampled_from(("", "", "7")))
    if keyword == "ModalitiesInStudy":
        return data.draw(st.lists(st.sampled_from(("CT", "RTPLAN", "RTDOSE", "RTSTRUCT", "MR",
                                                   "RT*", "R?DOSE")), min_size=1, max_size=3))
    value = data.draw(st.sampled_from(present))
    if kind == "exact":
        return value
    if vr == "UI":
        extra = data.draw(st.lists(st.sampled_from([*present, "1.2.3.999"]), max_size=3))
        return one_of(data, [value, *extra], "1.2.3.999", "*", value + "*")
    if vr in ("DA", "TM"):
        return one_of(data, *(draw_range(data, vr, present),) * 4, "*", value[:-1])
    if vr == "IS":
        return str(data.draw(st.integers(0, 9)))
    if kind == "mangled":
        return mangle(data, value)
    cased = data.draw(st.sampled_from((value.upper(), value.lower(), value.swapcase())))
    group = data.draw(st.sampled_from(value.split("=")))
    return one_of(data, cased, "*", "**", [value, "x"], group, "[" + value)


def one_of(data: st.DataObject, *choices: str | list[str]) -> str | list[str]:
    return data.draw(st.sampled_from(choices))


def hierarchy(data: st.DataObject, rows: list[Record], root: Root, level: str, *,
              move: bool) -> Spec:
    """The unique keys a hierarchical request carries, taken from one instance."""
    if level not in ROOT_LEVELS[root]:
        return {}
    record = data.draw(st.sampled_from(rows))
    depth = LEVELS.index(level)
    spec: Spec = {}
    for keyword in above(root, depth):  # mostly single values, as the standard wants
        value = str(record[keyword])
        spec[keyword] = one_of(data, value, value, [value, "1.2.3"], mangle(data, value))
    own = str(record[UNIQUE[level]])
    others = sorted({str(r[UNIQUE[level]]) for r in rows} - {own})[:2]
    spec[UNIQUE[level]] = one_of(data, own, [own, *others], "") if move else \
        one_of(data, "", own, [own, *others])
    return spec


def draw_spec(data: st.DataObject, rows: list[Record], root: Root, level: str, *,
              move: bool) -> Spec:
    """Half the time a well-formed hierarchical request, then random keys on top."""
    spec = hierarchy(data, rows, root, level, move=move) if data.draw(st.booleans()) else {}
    pool = [*KEYS, *OTHER_KEYS]
    if move:
        pool = [*pool, *UNIQUE_KEYS, *UNIQUE_KEYS]  # a move names something unique, mostly
    keywords = data.draw(st.lists(st.sampled_from(pool), max_size=4, unique=True))
    extra = {k: draw_value(data, k, rows) for k in keywords if k not in spec}
    return {**spec, **extra}


def identifier(spec: Spec, level: str) -> Dataset:
    ds = Dataset()
    with warnings.catch_warnings():  # odd values on purpose
        warnings.simplefilter("ignore")
        ds.QueryRetrieveLevel = level
        for keyword, value in spec.items():
            setattr(ds, keyword, value)
    return ds


def normal(ds: Dataset) -> dict[str, list[str]]:
    out = {}
    for elem in ds:
        value = elem.value
        items = list(value) if isinstance(value, MultiValue) else [value]
        out[elem.keyword] = [str(v) for v in items if v not in (None, "")]
    return out


archives = st.tuples(st.integers(0, 2**32 - 1), st.sampled_from(list(Profile)),
                     st.integers(1, 6))
levels = st.sampled_from((*LEVELS, *LEVELS, "FRAME"))
strictness = st.sampled_from((False, False, True))


def build(seed: int, profile: Profile, patients: int) -> tuple[Archive, Model]:
    config = SyntheticConfig(seed=seed, profile=profile, slices=2, rows=16, columns=16)
    return Archive.synthetic(config, patients), Model(records(config, patients))


def outcome(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except (QueryError, Refused) as exc:
        return ("refused", exc.status)


def label(result: Any) -> str:
    """What an example ended in, for ``--hypothesis-show-statistics``."""
    if isinstance(result, tuple):
        return f"refused 0x{result[1]:04X}"
    return "no match" if not result else "some matched" if len(result) > 1 else "one matched"


SETTINGS = settings(max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(archives, st.sampled_from(list(Root)), levels, strictness, st.data())
def test_find_agrees_with_the_reference(archive_args: tuple[int, Profile, int], root: Root,
                                        level: str, strict: bool, data: st.DataObject) -> None:
    archive, model = build(*archive_args)
    spec = draw_spec(data, model.rows, root, level, move=False)
    try:
        got = outcome(lambda: [normal(ds) for ds in
                               find(archive.index, identifier(spec, level), root, strict=strict)])
        expected = outcome(lambda: model.find(spec, root, level, strict))
        event(label(expected))
        assert got == expected, spec
    finally:
        archive.close()


@SETTINGS
@given(archives, st.sampled_from(list(Root)), levels, strictness, st.data())
def test_move_agrees_with_the_reference(archive_args: tuple[int, Profile, int], root: Root,
                                        level: str, strict: bool, data: st.DataObject) -> None:
    archive, model = build(*archive_args)
    spec = draw_spec(data, model.rows, root, level, move=True)
    try:
        got = outcome(lambda: [m.sop_uid for m in
                               move_matches(archive.index, identifier(spec, level), root,
                                            strict=strict)])
        expected = outcome(lambda: model.move(spec, root, level, strict))
        event(label(expected))
        assert got == expected, spec
    finally:
        archive.close()


@SETTINGS
@given(archives, st.sampled_from(list(Root)), st.data())
def test_one_key_at_its_own_level_agrees(archive_args: tuple[int, Profile, int], root: Root,
                                         data: st.DataObject) -> None:
    """Dense in what the mixed requests above rarely reach: ranges, names, wildcards."""
    archive, model = build(*archive_args)
    keyword = data.draw(st.sampled_from([k for k, (_, vr) in KEYS.items() if vr != "#"]))
    level = LEVELS[level_of(keyword, root)]
    spec: Spec = {UNIQUE[level]: "", keyword: draw_value(data, keyword, model.rows)}
    try:
        got = outcome(lambda: [normal(ds) for ds in
                               find(archive.index, identifier(spec, level), root)])
        expected = outcome(lambda: model.find(spec, root, level, strict=False))
        event(label(expected))
        assert got == expected, spec
    finally:
        archive.close()


@pytest.mark.parametrize("profile", list(Profile))
def test_the_reference_sees_the_whole_archive(profile: Profile) -> None:
    archive, model = build(3, profile, 4)
    assert len(model.rows) == archive.index.counts().instances
    every = model.find({"SOPInstanceUID": ""}, Root.STUDY, "IMAGE", strict=False)
    found = [normal(ds) for ds in find(archive.index, identifier({"SOPInstanceUID": ""},
                                                                   "IMAGE"), Root.STUDY)]
    assert found == every
    archive.close()
