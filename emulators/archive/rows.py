"""The rows of the archive index: what a C-FIND may match or return, per level."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PatientRow:
    patient_id: str
    name: str
    birth_date: str
    sex: str
    charset: str
    synthetic_index: int | None = None  # set when the patient comes from the generator


@dataclass(frozen=True)
class StudyRow:
    uid: str
    date: str
    time: str
    accession: str
    study_id: str
    description: str
    referring_physician: str


@dataclass(frozen=True)
class SeriesRow:
    uid: str
    modality: str
    number: int | None
    description: str
    frame_of_reference: str


@dataclass(frozen=True)
class InstanceRow:
    """One instance; the RT columns hold the RT-relevant IMAGE-level keys.

    ``label``/``name``/``rt_date``/``rt_time`` are RTPlan* or StructureSet* values;
    ``referenced_uid`` is what the object points at (plan: its structure set; dose:
    its plan; structure set: its CT series), so collections resolve in SQL.
    """

    sop_uid: str
    sop_class: str
    number: int | None
    label: str | None = None
    name: str | None = None
    rt_date: str | None = None
    rt_time: str | None = None
    approval: str | None = None
    summation: str | None = None
    referenced_uid: str | None = None
    path: str | None = None  # the file it was imported from; None: regenerated on demand
