"""Index rows read from a DICOM dataset (an imported file or a received C-STORE)."""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from .rows import InstanceRow, PatientRow, SeriesRow, StudyRow

REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


class NotIndexable(ValueError):
    """A dataset the archive cannot hold (it lacks a key the index needs)."""


def text_value(ds: Dataset, keyword: str) -> str:
    """The value as DICOM writes it: several values joined by backslash, not a list's repr.

    A patient ID ``a\\b`` arrives as two values; ``str()`` of those would give
    ``['a', 'b']``, a different (and valid) ID, and the two would share a folder.
    """
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    return str(value)



def _int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    try:
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


def _first(ds: Dataset, *path: str) -> str | None:
    """The value at a path of first sequence items, e.g. (Seq, Seq, Keyword)."""
    node: object = ds
    for keyword in path[:-1]:
        seq = getattr(node, keyword, None) if isinstance(node, Dataset) else None
        if not seq:
            return None
        node = seq[0]
    value = node.get(path[-1]) if isinstance(node, Dataset) else None
    return None if value is None else str(value)


def _frame_of_reference(ds: Dataset) -> str:
    return (text_value(ds, "FrameOfReferenceUID")
            or _first(ds, "ReferencedFrameOfReferenceSequence", "FrameOfReferenceUID") or "")


def _instance(ds: Dataset, path: str | None) -> InstanceRow:
    def text(keyword: str) -> str:
        return text_value(ds, keyword)

    sop, sop_class = text("SOPInstanceUID"), text("SOPClassUID")
    number = _int(ds, "InstanceNumber")
    modality = text("Modality")
    if modality == "RTPLAN":
        return InstanceRow(
            sop, sop_class, number, label=text("RTPlanLabel"), name=text("RTPlanName"),
            rt_date=text("RTPlanDate"), rt_time=text("RTPlanTime"),
            approval=ds.get("ApprovalStatus"), path=path,
            referenced_uid=_first(ds, "ReferencedStructureSetSequence",
                                  "ReferencedSOPInstanceUID"))
    if modality == "RTSTRUCT":
        return InstanceRow(
            sop, sop_class, number, label=text("StructureSetLabel"),
            name=text("StructureSetName"), rt_date=text("StructureSetDate"),
            rt_time=text("StructureSetTime"), approval=ds.get("ApprovalStatus"), path=path,
            referenced_uid=_first(ds, "ReferencedFrameOfReferenceSequence",
                                  "RTReferencedStudySequence", "RTReferencedSeriesSequence",
                                  "SeriesInstanceUID"))
    if modality == "RTDOSE":
        return InstanceRow(
            sop, sop_class, number, summation=ds.get("DoseSummationType"), path=path,
            referenced_uid=_first(ds, "ReferencedRTPlanSequence", "ReferencedSOPInstanceUID"))
    return InstanceRow(sop, sop_class, number, path=path)


def dataset_rows(ds: Dataset, path: str | None = None,
                 ) -> tuple[PatientRow, StudyRow, SeriesRow, InstanceRow]:
    """The four rows one dataset contributes; :class:`NotIndexable` if keys are missing."""
    def text(keyword: str) -> str:
        return text_value(ds, keyword)

    missing = [k for k in REQUIRED if not text(k)]
    if missing:
        raise NotIndexable("missing " + ", ".join(missing))
    patient = PatientRow(text("PatientID"), text("PatientName"), text("PatientBirthDate"),
                         text("PatientSex"), text("SpecificCharacterSet"))
    study = StudyRow(text("StudyInstanceUID"), text("StudyDate"), text("StudyTime"),
                     text("AccessionNumber"), text("StudyID"), text("StudyDescription"),
                     text("ReferringPhysicianName"))
    series = SeriesRow(text("SeriesInstanceUID"), text("Modality"), _int(ds, "SeriesNumber"),
                       text("SeriesDescription"), _frame_of_reference(ds))
    return patient, study, series, _instance(ds, path)
