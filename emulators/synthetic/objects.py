"""Every object of a recipe, addressable by SOP Instance UID, built on demand."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, RTDoseStorage, RTPlanStorage, RTStructureSetStorage

from .ct import ct_slice
from .recipe import PatientRecipe, SeriesSpec, StudySpec
from .rtdose import rt_dose
from .rtplan import rt_plan
from .rtstruct import structure_set


@dataclass(frozen=True)
class ObjectRef:
    """One instance of a recipe: where it sits and how to build it."""

    sop_uid: str
    sop_class: str
    modality: str
    study: StudySpec
    series: SeriesSpec
    instance_number: int
    build: Callable[[], Dataset]


def object_refs(recipe: PatientRecipe) -> Iterator[ObjectRef]:
    """The recipe's instances in a stable order: CTs, structure sets, plans, doses."""
    for ct in recipe.cts:
        for k, uid in enumerate(ct.slice_uids):
            yield ObjectRef(uid, CTImageStorage, "CT", ct.study, ct.series, k + 1,
                            lambda ct=ct, k=k: ct_slice(recipe, ct, k))  # type: ignore[misc]
    for ss in recipe.structure_sets:
        yield ObjectRef(ss.uid, RTStructureSetStorage, "RTSTRUCT", ss.study, ss.series, 1,
                        lambda ss=ss: structure_set(recipe, ss))  # type: ignore[misc]
    for plan in recipe.plans:
        yield ObjectRef(plan.uid, RTPlanStorage, "RTPLAN", plan.study, plan.series, 1,
                        lambda plan=plan: rt_plan(recipe, plan))  # type: ignore[misc]
    for dose in recipe.doses:
        yield ObjectRef(dose.uid, RTDoseStorage, "RTDOSE", dose.study, dose.series,
                        dose.instance_number,
                        lambda dose=dose: rt_dose(recipe, dose))  # type: ignore[misc]


def build_instance(recipe: PatientRecipe, sop_uid: str) -> Dataset:
    """The full dataset of one instance; KeyError when the recipe has no such UID."""
    for obj in object_refs(recipe):
        if obj.sop_uid == sop_uid:
            return obj.build()
    raise KeyError(sop_uid)

