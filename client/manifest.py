"""The manifest: what a plan's collection is, how each object was found, and what arrived.

It is the contract between resolving, moving and verifying, and a file a user can
write by hand from UIDs exported elsewhere (a scripting API, a spreadsheet): only
``patient_id`` and, per object, ``study_uid`` plus ``series_uid`` (a series) or
``sop_uids`` (instances) are required.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from .uids import is_valid_uid

FORMAT = "rtmove-manifest/1"


class Role(StrEnum):
    PLAN = "plan"
    STRUCTURE_SET = "structure-set"
    IMAGES = "image-series"
    DOSE = "dose"
    OTHER = "other"


class Outcome(StrEnum):
    PENDING = "pending"  # not moved yet
    MOVED = "moved"  # the server reported every sub-operation done; nothing to look at
    ARRIVED = "arrived"  # every instance seen where it was sent, readable
    INCOMPLETE = "incomplete"  # some instances missing or unreadable after the retries
    FAILED = "failed"  # nothing arrived


class ManifestError(ValueError):
    """A manifest file that cannot be used: says which file, which entry and why."""


@dataclass(frozen=True)
class Item:
    """One object of the collection: an RT object (one instance) or an image series."""

    role: Role
    study_uid: str
    series_uid: str
    sop_uids: tuple[str, ...] = ()  # every instance; empty: "the whole series, count unknown"
    sop_class_uid: str = ""
    modality: str = ""
    label: str = ""  # plan label, structure set label, series description
    found_by: str = ""  # how resolution reached it, for the site engineer reading the file
    outcome: Outcome = Outcome.PENDING
    missing: tuple[str, ...] = ()  # SOP Instance UIDs that did not arrive (or unreadable)
    note: str = ""  # why it is not complete, in words

    @property
    def level(self) -> str:
        """The C-MOVE level: series for images, instance for RT objects."""
        return "SERIES" if self.role is Role.IMAGES or not self.sop_uids else "IMAGE"

    @property
    def key(self) -> tuple[str, str, tuple[str, ...]]:
        return self.study_uid, self.series_uid, self.sop_uids if self.level == "IMAGE" else ()


@dataclass(frozen=True)
class Collection:
    """A plan and what it needs: its structure set, the images, its doses."""

    plan_uid: str
    plan_label: str = ""
    approval: str = ""
    plan_date: str = ""
    items: tuple[Item, ...] = ()
    warnings: tuple[str, ...] = ()

    def with_items(self, items: tuple[Item, ...]) -> Collection:
        return replace(self, items=items)


@dataclass(frozen=True)
class Manifest:
    patient_id: str
    patient_name: str = ""
    collections: tuple[Collection, ...] = ()
    source: str = ""  # "AE at host:port" the objects come from
    destination: str = ""  # AE title they were moved to (or "self")
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. timings, counts; kept as is

    def items(self) -> list[Item]:
        """Every distinct object once, in collection order (a CT shared by two plans once)."""
        seen: dict[tuple[str, str, tuple[str, ...]], Item] = {}
        for collection in self.collections:
            for item in collection.items:
                seen.setdefault(item.key, item)
        return list(seen.values())

    def warnings(self) -> list[str]:
        return [w for c in self.collections for w in c.warnings]

    def with_outcomes(self, outcomes: dict[tuple[str, str, tuple[str, ...]], Item]) -> Manifest:
        """The manifest with each item replaced by its moved/verified version (by key)."""
        return replace(self, collections=tuple(
            c.with_items(tuple(outcomes.get(i.key, i) for i in c.items))
            for c in self.collections))

    # -- file form --------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "patient_id": self.patient_id,
            "patient_name": self.patient_name,
            "source": self.source,
            "destination": self.destination,
            "collections": [_collection_json(c) for c in self.collections],
            **({"extra": self.extra} if self.extra else {}),
        }

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n",
                       encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def from_json(cls, data: object, source: str = "manifest") -> Manifest:
        if not isinstance(data, dict):
            raise ManifestError(f"{source}: expected a JSON object at the top")
        fmt = data.get("format", FORMAT)
        if fmt != FORMAT:
            raise ManifestError(f"{source}: format {fmt!r} is not {FORMAT!r}")
        pid = _text(data, "patient_id", source, required=True)
        raw = data.get("collections")
        if raw is None and "items" in data:  # hand-written: one flat list of objects
            raw = [{"plan_uid": data.get("plan_uid", ""), "items": data["items"]}]
        if not isinstance(raw, list) or not raw:
            raise ManifestError(f"{source}: 'collections' (or 'items') must be a non-empty list")
        collections = tuple(_collection(c, f"{source}: collections[{n}]")
                            for n, c in enumerate(raw))
        extra = data.get("extra", {})
        return cls(pid, _text(data, "patient_name", source), collections,
                   _text(data, "source", source), _text(data, "destination", source),
                   extra if isinstance(extra, dict) else {})

    @classmethod
    def load(cls, path: Path) -> Manifest:
        try:
            # utf-8-sig: Windows editors save JSON with a byte order mark.
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except OSError as exc:
            raise ManifestError(f"{path}: cannot read ({exc.strerror or exc})") from exc
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{path}: not JSON ({exc})") from exc
        return cls.from_json(data, str(path))


def _collection_json(c: Collection) -> dict[str, Any]:
    return {
        "plan_uid": c.plan_uid, "plan_label": c.plan_label, "approval": c.approval,
        "plan_date": c.plan_date, "warnings": list(c.warnings),
        "items": [_item_json(i) for i in c.items],
    }


def _item_json(item: Item) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(Item):
        value = getattr(item, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else str(value)
    out["level"] = item.level
    out["count"] = len(item.sop_uids)
    return out


def _text(data: dict[str, Any], key: str, where: str, *, required: bool = False) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise ManifestError(f"{where}: '{key}' must be a string, not {type(value).__name__}")
    if required and not value.strip():
        raise ManifestError(f"{where}: '{key}' is required")
    return value.strip()


def _uid(data: dict[str, Any], key: str, where: str, *, required: bool) -> str:
    value = _text(data, key, where, required=required)
    if value and not is_valid_uid(value):
        raise ManifestError(f"{where}: '{key}' {value!r} is not a DICOM UID")
    return value


def _collection(data: object, where: str) -> Collection:
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: expected an object")
    raw = data.get("items")
    if not isinstance(raw, list) or not raw:
        raise ManifestError(f"{where}: 'items' must be a non-empty list")
    warnings = data.get("warnings", [])
    if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
        raise ManifestError(f"{where}: 'warnings' must be a list of strings")
    return Collection(
        plan_uid=_uid(data, "plan_uid", where, required=False),
        plan_label=_text(data, "plan_label", where),
        approval=_text(data, "approval", where),
        plan_date=_text(data, "plan_date", where),
        items=tuple(_item(i, f"{where}.items[{n}]") for n, i in enumerate(raw)),
        warnings=tuple(warnings))


def _item(data: object, where: str) -> Item:
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: expected an object")
    sops = data.get("sop_uids", [])
    if isinstance(sops, str):
        sops = [sops]
    if not isinstance(sops, list) or not all(isinstance(s, str) and is_valid_uid(s) for s in sops):
        raise ManifestError(f"{where}: 'sop_uids' must be a list of DICOM UIDs")
    role_text = _text(data, "role", where) or (Role.IMAGES if not sops else Role.OTHER)
    try:
        role = Role(role_text)
    except ValueError:
        raise ManifestError(f"{where}: role {role_text!r} is not one of "
                            f"{', '.join(r.value for r in Role)}") from None
    outcome_text = _text(data, "outcome", where) or Outcome.PENDING
    try:
        outcome = Outcome(outcome_text)
    except ValueError:
        raise ManifestError(f"{where}: outcome {outcome_text!r} is not one of "
                            f"{', '.join(o.value for o in Outcome)}") from None
    missing = data.get("missing", [])
    if not isinstance(missing, list) or not all(isinstance(s, str) for s in missing):
        raise ManifestError(f"{where}: 'missing' must be a list of UIDs")
    return Item(
        role=role,
        study_uid=_uid(data, "study_uid", where, required=True),
        series_uid=_uid(data, "series_uid", where, required=True),
        sop_uids=tuple(sops),
        sop_class_uid=_uid(data, "sop_class_uid", where, required=False),
        modality=_text(data, "modality", where),
        label=_text(data, "label", where),
        found_by=_text(data, "found_by", where),
        outcome=outcome,
        missing=tuple(missing),
        note=_text(data, "note", where))
