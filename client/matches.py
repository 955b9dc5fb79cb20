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

# The key each Query/Retrieve level is unique by (PS3.4 C.6.2.1).
UNIQUE_KEY = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID",
              "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}
_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
_UID_RE = re.compile(r"[0-9]+(\.[0-9]+)*")


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None:
        return None
    return str(value).strip(" \0")


def _values(ds: Dataset, keyword: str) -> set[str]:
    """Every value of a (possibly multi-valued) key, e.g. a UID list."""
    value = ds.get(keyword)
    if value is None or value == "":
        return set()
    items = list(value) if isinstance(value, MultiValue | list | tuple) \
        else str(value).split("\\")
    return {str(v).strip(" \0") for v in items} - {""}


def unique_value(query: Dataset, match: Dataset) -> str | None:
    """The match's value of its level's unique key, when the query asked for it."""
    keyword = UNIQUE_KEY.get(str(query.get("QueryRetrieveLevel", "")).strip().upper())
    if keyword is None or keyword not in query:
        return None
    return _text(match, keyword)


def match_problem(query: Dataset, match: Dataset) -> str | None:
    """Why ``match`` cannot answer ``query`` (in words), or None when it can.

    UIDs must be one of the asked values (single value or UID list matching); a
    Patient ID only has to agree ignoring case, since some archives match it so.
    Keys the query asked for with a wildcard or left empty are not checked.
    """
    level = str(query.get("QueryRetrieveLevel", "")).strip().upper()
    unique = UNIQUE_KEY.get(level)
    if unique is not None and unique in query and not _text(match, unique):
        return f"a {level} match without its {unique}"
    for keyword in _UIDS:
        got = _text(match, keyword)
        if got is None:
            continue
        if got and (len(got) > 64 or not _UID_RE.fullmatch(got)):
            return f"a match whose {keyword} {got!r} is not a valid UID"
        asked = _values(query, keyword)
        if asked and not any("*" in u or "?" in u for u in asked) and got not in asked:
            return (f"a match with {keyword} {got} for a query asking for "
                    f"{', '.join(sorted(asked))}")
    asked_id, got_id = _text(query, "PatientID") or "", _text(match, "PatientID")
    if asked_id and got_id is not None and "*" not in asked_id and "?" not in asked_id \
            and got_id.casefold() != asked_id.casefold():
        return f"a match for patient {got_id!r} to a query for patient {asked_id!r}"
    return None
