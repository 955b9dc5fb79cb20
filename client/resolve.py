"""From a patient and a plan to the plan's whole collection, by DICOM alone.

plan --ReferencedStructureSetSequence--> structure set --RTReferencedSeriesSequence-->
image series; doses are the RT Doses whose ReferencedRTPlanSequence names the plan.
Real archives are messy, so every gap is a warning in the manifest, never a crash.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from pydicom.dataset import Dataset

from .archive_view import Headers, Instance, PatientArchive, Series
from .errors import DicomError, Kind
from .frame_references import FrameRef, frame_references
from .manifest import Collection, Item, Manifest, Role
from .uids import is_valid_uid

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlanChoice:
    """Which plans: one by UID, those with a label, all, or the approved ones."""

    uid: str = ""
    label: str = ""
    approved_only: bool = False

    @classmethod
    def parse(cls, text: str) -> PlanChoice:
        """``--plan``: a SOP Instance UID, ``all``, ``approved``, or an RT Plan Label."""
        word = text.strip()
        if not word:
            raise ValueError("--plan needs a UID, a label, 'all' or 'approved'")
        if word.lower() == "all":
            return cls()
        if word.lower() == "approved":
            return cls(approved_only=True)
        # A SOP Instance UID has many components; "2.0" is more likely a plan's label.
        if is_valid_uid(word) and word.count(".") >= 2:
            return cls(uid=word)
        return cls(label=word)

    def describe(self) -> str:
        if self.uid:
            return f"plan {self.uid}"
        if self.label:
            return f"plans labelled {self.label!r}"
        return "approved plans" if self.approved_only else "all plans"


@dataclass(frozen=True)
class PlanInfo:
    """What ``rtmove find`` shows for a plan."""

    instance: Instance
    label: str
    name: str
    date: str
    approval: str
    structure_set_uids: tuple[str, ...]
    readable: bool


def _seq_uids(ds: Dataset | None, sequence: str, key: str = "ReferencedSOPInstanceUID",
              ) -> list[str]:
    if ds is None:
        return []
    return [str(item.get(key)) for item in ds.get(sequence, []) if item.get(key)]


def _text(ds: Dataset | None, keyword: str) -> str:
    return "" if ds is None or ds.get(keyword) is None else str(ds.get(keyword)).strip()


class Resolver:
    """Resolves plans of one patient; C-FIND results and headers are shared between plans."""

    def __init__(self, archive: PatientArchive, headers: Headers,
                 on_item: Callable[[Item], None] | None = None) -> None:
        self.archive, self.headers = archive, headers
        # Told of each object to move as soon as it is known, in the collection's order:
        # the plan chosen by UID and a structure set before their headers are read, an
        # image series before its C-FIND at IMAGE level lists its instances.
        self.on_item = on_item
        self._announced: set[tuple[str, str, tuple[str, ...]]] = set()
        self._dose_plans: dict[str, list[str]] | None = None

    # -- plans ------------------------------------------------------------------------

    def plan_info(self, instance: Instance) -> PlanInfo:
        ds = self.headers.get(instance)
        return PlanInfo(instance, _text(ds, "RTPlanLabel"), _text(ds, "RTPlanName"),
                        _text(ds, "RTPlanDate"), _text(ds, "ApprovalStatus"),
                        tuple(_seq_uids(ds, "ReferencedStructureSetSequence")), ds is not None)

    def plans(self) -> list[PlanInfo]:
        return sorted((self.plan_info(i) for i in self.archive.of_modality("RTPLAN")),
                      key=lambda p: (p.date, p.label, p.instance.uid))

    def choose(self, choice: PlanChoice) -> list[PlanInfo]:
        if choice.uid:
            instance = self.archive.find_instance(choice.uid, "RTPLAN")
            if instance is None:
                raise self._not_found(choice, "no RT Plan with this SOP Instance UID")
            # It moves while its header comes to us (or to the destination, see
            # client.early_moves); meanwhile the instances its structure set and doses
            # will be looked up among are listed, as they will be anyway.
            self._found(_plan_item(instance, ""))
            if self.on_item is not None:
                for modality in ("RTSTRUCT", "RTDOSE"):
                    self.archive.of_modality(modality)
            return [self.plan_info(instance)]
        plans = self.plans()
        chosen = [p for p in plans
                  if (not choice.label or p.label == choice.label)
                  and (not choice.approved_only or p.approval == "APPROVED")]
        if not chosen:
            listing = "; ".join(f"{p.label or '?'} ({p.approval or 'no approval status'})"
                                for p in plans) or "none"
            raise self._not_found(choice, f"the patient's plans are: {listing}")
        return chosen

    def _not_found(self, choice: PlanChoice, detail: str) -> DicomError:
        return DicomError(
            f"Patient {self.archive.patient_id!r} has no {choice.describe()} in "
            f"{self.archive.session.settings.aec}'s archive: {detail}.", Kind.NOT_FOUND)

    # -- doses ------------------------------------------------------------------------

    def dose_plans(self) -> dict[str, list[str]]:
        """Each RT Dose's SOP Instance UID -> the plan UIDs it references (headers read once)."""
        if self._dose_plans is None:
            self._dose_plans = {
                i.uid: _seq_uids(self.headers.get(i), "ReferencedRTPlanSequence")
                for i in self.archive.of_modality("RTDOSE")}
        return self._dose_plans

    def doses_of(self, plan_uid: str) -> list[Instance]:
        wanted = {uid for uid, plans in self.dose_plans().items() if plan_uid in plans}
        return [i for i in self.archive.of_modality("RTDOSE") if i.uid in wanted]

    # -- one collection ----------------------------------------------------------------

    def collection(self, plan: PlanInfo) -> Collection:
        warnings: list[str] = []
        name = plan.label or plan.instance.uid
        items = [_plan_item(plan.instance, plan.label)]
        self._found(items[0])
        if not plan.readable:
            why = self.headers.problems.get(plan.instance.uid, "it did not arrive")
            warnings.append(f"Plan {name} could not be read ({why}): its structure set and "
                            "images are unknown; only the plan and its doses are listed.")
        elif not plan.structure_set_uids:
            warnings.append(f"Plan {name} references no structure set: the collection has no "
                            "structure set and no images.")
        if len(plan.structure_set_uids) > 1:
            warnings.append(f"Plan {name} references {len(plan.structure_set_uids)} structure "
                            "sets; all are included.")
        frames: set[str] = set()
        for ss_uid in plan.structure_set_uids:
            self._announce_structure_set(ss_uid, name)
        # When the structure sets move while being resolved, the doses' headers come to
        # us meanwhile (read once the images moved, they slowed that move by a fifth).
        # Otherwise the headers come in the collection's order: a disk that fills up
        # stops at the same object whatever the order of resolution.
        doses = self.doses_of(plan.instance.uid) if self.on_item is not None else None
        for ss_uid in plan.structure_set_uids:
            items += self._structure_set(ss_uid, name, warnings, frames)
        if doses is None:
            doses = self.doses_of(plan.instance.uid)
        study = plan.instance.series.study_uid
        # A dose the daemon would not hand over cannot be matched to its plan; one in the
        # plan's study may well be this plan's, so it is listed rather than silently lost.
        unreadable = [i for i in self.archive.of_modality("RTDOSE")
                      if i.uid in self.headers.problems]
        nearby = [i for i in unreadable if i.series.study_uid == study]
        if not doses and not nearby:
            extra = (f" ({len(unreadable)} RT Dose object(s) of the patient could not be read)"
                     if unreadable else "")
            warnings.append(f"Plan {name} has no dose in the archive: no RT Dose references "
                            f"it{extra}.")
        for dose in nearby:
            warnings.append(f"RT Dose {dose.uid} in the plan's study could not be read "
                            f"({self.headers.problems[dose.uid]}): listed in case it is this "
                            "plan's dose.")
        for dose in [*doses, *nearby]:
            ds = self.headers.get(dose)
            summation = _text(ds, "DoseSummationType")
            found_by = (f"RT Dose in study {dose.series.study_uid} whose "
                        "ReferencedRTPlanSequence names the plan" if ds is not None else
                        f"RT Dose in the plan's study {study}; unreadable, so not checked")
            items.append(Item(Role.DOSE, dose.series.study_uid, dose.series.uid, (dose.uid,),
                              dose.sop_class_uid or _text(ds, "SOPClassUID"), "RTDOSE",
                              summation, found_by))
            self._found(items[-1])
            frame = _text(ds, "FrameOfReferenceUID")
            if frame and frames and frame not in frames:
                warnings.append(f"RT Dose {dose.uid} lies on frame of reference {frame}, not "
                                f"on the one its plan's images use ({', '.join(sorted(frames))}"
                                "): it was computed on another image set.")
        items = [_with_class(item, self.headers, self.archive) for item in items]
        return Collection(plan.instance.uid, plan.label, plan.approval, plan.date,
                          tuple(items), tuple(warnings))

    def _found(self, item: Item) -> None:
        """Tell :attr:`on_item` of ``item``, once (it may be known before its header)."""
        if self.on_item is not None and item.key not in self._announced:
            self._announced.add(item.key)
            self.on_item(item)

    def _announce_structure_set(self, ss_uid: str, plan_name: str) -> None:
        """Tell :attr:`on_item` of the structure set before its header is read: it moves
        while its header comes to us (the images follow once that is read)."""
        instance = self.archive.find_instance(ss_uid, "RTSTRUCT")
        if instance is not None:
            self._found(Item(Role.STRUCTURE_SET, instance.series.study_uid,
                             instance.series.uid, (ss_uid,), instance.sop_class_uid,
                             "RTSTRUCT", "", _found_by_plan(plan_name)))

    def _structure_set(self, ss_uid: str, plan_name: str, warnings: list[str],
                       frames: set[str]) -> list[Item]:
        instance = self.archive.find_instance(ss_uid, "RTSTRUCT")
        if instance is None:
            warnings.append(f"Plan {plan_name} references structure set {ss_uid}, which the "
                            "archive does not have: no structure set and no images.")
            return []
        found_by = _found_by_plan(plan_name)
        self._announce_structure_set(ss_uid, plan_name)
        ds = self.headers.get(instance)
        label = _text(ds, "StructureSetLabel")
        items = [Item(Role.STRUCTURE_SET, instance.series.study_uid, instance.series.uid,
                      (ss_uid,), instance.sop_class_uid, "RTSTRUCT", label, found_by)]
        if ds is None:
            why = self.headers.problems.get(ss_uid, "it did not arrive")
            warnings.append(f"Structure set {ss_uid} could not be read ({why}): its images "
                            "are unknown.")
            return items
        name = label or ss_uid
        references = frame_references(ds)
        frames.update(f.uid for f in references if f.uid)
        for series_uid, contour_uids in _referenced_series(references).items():
            items += self._images(series_uid, contour_uids, name, ss_uid, warnings)
        if len(items) == 1:
            warnings.append(f"Structure set {name} references no image series.")
        return items

    def _images(self, series_uid: str, contour_uids: list[str], ss_name: str, ss_uid: str,
                warnings: list[str]) -> list[Item]:
        series = self.archive.series().get(series_uid)
        if series is None:
            warnings.append(f"Structure set {ss_name} was drawn on image series {series_uid}, "
                            "which the archive does not have: the collection has no images.")
            return []
        self._found(Item(Role.IMAGES, series.study_uid, series.uid, (), "", series.modality))
        instances = self.archive.instances(series)
        have = {i.uid for i in instances}
        missing = [u for u in dict.fromkeys(contour_uids) if u not in have]
        if missing:
            warnings.append(
                f"{series.modality} series {series_uid} is incomplete: {len(missing)} of the "
                f"{len(set(contour_uids))} images structure set {ss_name} references are not in "
                f"the archive (it holds {len(instances)} images of that series).")
        others = self._other_structure_sets(series_uid, ss_uid)
        if others:
            warnings.append(f"The {series.modality} series also has structure set(s) "
                            f"{', '.join(others)} not used by this plan; not included.")
        sop_class = next((i.sop_class_uid for i in instances if i.sop_class_uid), "")
        return [Item(Role.IMAGES, series.study_uid, series.uid,
                     tuple(sorted(have, key=_instance_order(instances))), sop_class,
                     series.modality, series.description,
                     f"RTReferencedSeriesSequence of structure set {ss_name}; C-FIND IMAGE "
                     f"found {len(instances)} instances")]

    def _other_structure_sets(self, series_uid: str, ss_uid: str) -> list[str]:
        """Other structure sets drawn on the series; only those in its study are read, where
        planning systems put them, so a patient's other courses cost no moves."""
        names = []
        study = self.archive.series()[series_uid].study_uid
        for instance in self.archive.of_modality("RTSTRUCT"):
            if instance.uid == ss_uid or instance.series.study_uid != study:
                continue
            ds = self.headers.get(instance)
            if ds is not None and series_uid in _referenced_series(frame_references(ds)):
                names.append(_text(ds, "StructureSetLabel") or instance.uid)
        return names

    def manifest(self, plans: Iterable[PlanInfo]) -> Manifest:
        s = self.archive.session.settings
        return Manifest(self.archive.patient_id, self.archive.patient_name,
                        tuple(self.collection(p) for p in plans), source=s.peer)


def _plan_item(instance: Instance, label: str) -> Item:
    return Item(Role.PLAN, instance.series.study_uid, instance.series.uid, (instance.uid,),
                instance.sop_class_uid, "RTPLAN", label,
                f"C-FIND RTPLAN in study {instance.series.study_uid}")


def _found_by_plan(plan_name: str) -> str:
    return f"ReferencedStructureSetSequence of plan {plan_name}"


def _referenced_series(frames: tuple[FrameRef, ...]) -> dict[str, list[str]]:
    """Series UID -> the contour images' SOP Instance UIDs, in the structure set's order."""
    out: dict[str, list[str]] = {}
    for frame in frames:
        for series in frame.series:
            if series.uid:
                out.setdefault(series.uid, []).extend(uid for uid in series.images if uid)
    return out


def _instance_order(instances: list[Instance]) -> Callable[[str], tuple[int, str]]:
    numbers = {i.uid: int(i.number) if i.number.lstrip("-").isdigit() else 0
               for i in instances}
    return lambda uid: (numbers.get(uid, 0), uid)


def _with_class(item: Item, headers: Headers, archive: PatientArchive) -> Item:
    """Fill a missing SOP Class UID from the header read (C-FIND may leave it empty)."""
    if item.sop_class_uid or item.role is Role.IMAGES:
        return item
    instance = archive.find_instance(item.sop_uids[0], item.modality)
    ds = headers.get(instance) if instance is not None else None
    uid = _text(ds, "SOPClassUID")
    return replace(item, sop_class_uid=uid) if uid else item


__all__ = ["PlanChoice", "PlanInfo", "Resolver", "Series"]
