"""Index rows read from a DICOM dataset (an imported file or a received C-STORE)."""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from .rows import InstanceRow, PatientRow, SeriesRow, StudyRow

REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


class NotIndexable(ValueError):
    """A dataset the archive cannot hold (it lacks a key the index needs)."""


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value)


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
    return (_text(ds, "FrameOfReferenceUID")
            or _first(ds, "ReferencedFrameOfReferenceSequence", "FrameOfReferenceUID") or "")


def _instance(ds: Dataset, path: str | None) -> InstanceRow:
    sop, sop_class = _text(ds, "SOPInstanceUID"), _text(ds, "SOPClassUID")
    number = _int(ds, "InstanceNumber")
    modality = _text(ds, "Modality")
    if modality == "RTPLAN":
        return InstanceRow(
            sop, sop_class, number, label=_text(ds, "RTPlanLabel"), name=_text(ds, "RTPlanName"),
            rt_date=_text(ds, "RTPlanDate"), rt_time=_text(ds, "RTPlanTime"),
            approval=ds.get("ApprovalStatus"), path=path,
            referenced_uid=_first(ds, "ReferencedStructureSetSequence",
                                  "ReferencedSOPInstanceUID"))
    if modality == "RTSTRUCT":
        return InstanceRow(
            sop, sop_class, number, label=_text(ds, "StructureSetLabel"),
            name=_text(ds, "StructureSetName"), rt_date=_text(ds, "StructureSetDate"),
            rt_time=_text(ds, "StructureSetTime"), approval=ds.get("ApprovalStatus"), path=path,
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
    missing = [k for k in REQUIRED if not _text(ds, k)]
    if missing:
        raise NotIndexable("missing " + ", ".join(missing))
    charset = ds.get("SpecificCharacterSet")
    patient = PatientRow(_text(ds, "PatientID"), _text(ds, "PatientName"),
                         _text(ds, "PatientBirthDate"), _text(ds, "PatientSex"),
                         "\\".join(charset) if isinstance(charset, MultiValue)
                         else str(charset or ""))
    study = StudyRow(_text(ds, "StudyInstanceUID"), _text(ds, "StudyDate"),
                     _text(ds, "StudyTime"), _text(ds, "AccessionNumber"), _text(ds, "StudyID"),
                     _text(ds, "StudyDescription"), _text(ds, "ReferringPhysicianName"))
    series = SeriesRow(_text(ds, "SeriesInstanceUID"), _text(ds, "Modality"),
                       _int(ds, "SeriesNumber"), _text(ds, "SeriesDescription"),
                       _frame_of_reference(ds))
    return patient, study, series, _instance(ds, path)
