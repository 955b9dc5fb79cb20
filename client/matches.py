"""Whether a C-FIND match can be what was asked for, before anything acts on it.

A match is the DB Daemon's word on which object to move next; one that names another
patient or series, lacks the key of its level, or cannot be decoded would send a
move for the wrong objects. pydicom decodes a garbled identifier leniently (an element
whose length runs past the end just ends early), so these checks are what notices.
"""

from __future__ import annotations

import re

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from .dimse_commands import plain_uid

# The key each Query/Retrieve level is unique by (PS3.4 C.6.2.1).
UNIQUE_KEY = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID",
              "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}
_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
_UID_RE = re.compile(r"[0-9]+(\.[0-9]+)*")
_UID_TAGS = {"StudyInstanceUID": 0x0020000D, "SeriesInstanceUID": 0x0020000E,
             "SOPInstanceUID": 0x00080018}


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None:
        return None
    return str(value).strip(" \0")


def raw_uid(ds: Dataset, tag: int) -> str | None:
    """The UID at ``tag`` read from its raw bytes, when still raw and plain: pydicom
    then decodes the same string (decoding three UIDs was most of checking a match).
    None otherwise: read it with pydicom."""
    elem = ds.get_item(tag)
    raw = getattr(elem, "value", None) if elem is not None else None
    if isinstance(raw, bytes) and getattr(elem, "VR", None) in (None, "UI"):
        return plain_uid(raw)
    return None


def _uid(ds: Dataset, keyword: str) -> str | None:
    """:func:`_text` of a UID key, by :func:`raw_uid` where it can."""
    uid = raw_uid(ds, _UID_TAGS[keyword])
    return uid if uid is not None else _text(ds, keyword)


def _values(ds: Dataset, keyword: str) -> set[str]:
    """Every value of a (possibly multi-valued) key, e.g. a UID list."""
    value = ds.get(keyword)
    if value is None or value == "":
        return set()
    items = list(value) if isinstance(value, MultiValue | list | tuple) \
        else str(value).split("\\")
    return {str(v).strip(" \0") for v in items} - {""}


class QueryKeys:
    """What a C-FIND query asks, read once: its matches are then checked one by one
    against it (reading the query again for each of 120 matches cost 70 µs a match)."""

    def __init__(self, query: Dataset) -> None:
        self.level = str(query.get("QueryRetrieveLevel", "")).strip().upper()
        unique = UNIQUE_KEY.get(self.level)
        self.unique = unique if unique is not None and unique in query else None
        # UID keys asked for literally (a wildcard or no value: not checked).
        self.uids = {keyword: asked for keyword in _UIDS
                     if (asked := _values(query, keyword))
                     and not any("*" in u or "?" in u for u in asked)}
        self.patient_id = _text(query, "PatientID") or ""


def _keys(query: Dataset | QueryKeys) -> QueryKeys:
    return query if isinstance(query, QueryKeys) else QueryKeys(query)


def unique_value(query: Dataset | QueryKeys, match: Dataset) -> str | None:
    """The match's value of its level's unique key, when the query asked for it."""
    keys = _keys(query)
    if keys.unique is None:
        return None
    return _uid(match, keys.unique) if keys.unique in _UIDS else _text(match, keys.unique)


def match_problem(query: Dataset | QueryKeys, match: Dataset) -> str | None:
    """Why ``match`` cannot answer ``query`` (in words), or None when it can.

    UIDs must be one of the asked values (single value or UID list matching); a
    Patient ID only has to agree ignoring case, since some archives match it so.
    Keys the query asked for with a wildcard or left empty are not checked.
    """
    keys = _keys(query)
    if keys.unique is not None and not (_uid(match, keys.unique) if keys.unique in _UIDS
                                        else _text(match, keys.unique)):
        return f"a {keys.level} match without its {keys.unique}"
    for keyword in _UIDS:
        got = _uid(match, keyword)
        if got is None:
            continue
        if got and (len(got) > 64 or not _UID_RE.fullmatch(got)):
            return f"a match whose {keyword} {got!r} is not a valid UID"
        asked = keys.uids.get(keyword)
        if asked is not None and got not in asked:
            return (f"a match with {keyword} {got} for a query asking for "
                    f"{', '.join(sorted(asked))}")
    asked_id, got_id = keys.patient_id, _text(match, "PatientID")
    if asked_id and got_id is not None and "*" not in asked_id and "?" not in asked_id \
            and got_id.casefold() != asked_id.casefold():
        return f"a match for patient {got_id!r} to a query for patient {asked_id!r}"
    return None
