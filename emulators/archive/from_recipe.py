"""Index rows straight from a synthetic recipe, without building a single dataset.

They must equal what :mod:`.from_dataset` reads from the generated files; a test
imports a generated folder and compares the two indexes row by row.
"""

from __future__ import annotations

from collections.abc import Iterator

from pydicom.uid import CTImageStorage, RTDoseStorage, RTPlanStorage, RTStructureSetStorage

from ..synthetic.modules import da
from ..synthetic.recipe import PatientRecipe, SeriesSpec, StudySpec
from .rows import InstanceRow, PatientRow, SeriesRow, StudyRow

SeriesRows = tuple[PatientRow, StudyRow, SeriesRow, list[InstanceRow]]


def _study(recipe: PatientRecipe, study: StudySpec) -> StudyRow:
    return StudyRow(study.uid, da(study.date), study.time, study.accession, study.study_id,
                    study.description, recipe.people.physician.pn)


def _series(spec: SeriesSpec, modality: str, frame: str) -> SeriesRow:
    return SeriesRow(spec.uid, modality, spec.number, spec.description, frame)


def recipe_rows(recipe: PatientRecipe) -> Iterator[SeriesRows]:
    people = recipe.people
    patient = PatientRow(recipe.patient_id, people.patient_name.pn, da(recipe.birth_date),
                         people.sex, people.charset, recipe.index)
    for ct in recipe.cts:
        yield (patient, _study(recipe, ct.study),
               _series(ct.series, "CT", ct.frame_of_reference),
               [InstanceRow(uid, CTImageStorage, k + 1)
                for k, uid in enumerate(ct.slice_uids)])
    for ss in recipe.structure_sets:
        yield (patient, _study(recipe, ss.study),
               _series(ss.series, "RTSTRUCT", ss.ct.frame_of_reference),
               [InstanceRow(ss.uid, RTStructureSetStorage, 1, label=ss.label, name=ss.label,
                            rt_date=da(ss.date), rt_time=ss.time, approval="APPROVED",
                            referenced_uid=ss.ct.series.uid)])
    for plan in recipe.plans:
        yield (patient, _study(recipe, plan.study),
               _series(plan.series, "RTPLAN", plan.structure_set.ct.frame_of_reference),
               [InstanceRow(plan.uid, RTPlanStorage, 1, label=plan.label, name=plan.name,
                            rt_date=da(plan.date), rt_time=plan.time,
                            approval="APPROVED" if plan.approved else "UNAPPROVED",
                            referenced_uid=plan.structure_set.uid)])
    by_series: dict[str, SeriesRows] = {}
    for dose in recipe.doses:
        frame = dose.plan.structure_set.ct.frame_of_reference
        entry = by_series.setdefault(dose.series.uid, (
            patient, _study(recipe, dose.study), _series(dose.series, "RTDOSE", frame), []))
        entry[3].append(InstanceRow(dose.uid, RTDoseStorage, dose.instance_number,
                                    summation=dose.summation, referenced_uid=dose.plan.uid))
    yield from by_series.values()
