"""The modules every synthetic object shares (patient, study, series, equipment, SOP).

Writing them in one place is what makes every object of a patient carry identical
patient attributes and every object of a study identical study attributes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian

from client.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

from .recipe import PatientRecipe, SeriesSpec, StudySpec

MANUFACTURER = "dbdsim"
SOFTWARE_VERSION = "dbdsim 0.1"


def da(date: dt.date) -> str:
    return date.strftime("%Y%m%d")


def ds_str(value: float, digits: int = 4) -> str:
    """A DS string of at most 16 characters with no trailing noise."""
    text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def seq(items: Iterable[Dataset]) -> Sequence:
    return Sequence(list(items))


def ref(sop_class: str, sop_instance: str) -> Dataset:
    """A (ReferencedSOPClassUID, ReferencedSOPInstanceUID) item."""
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    return item


def new_object(recipe: PatientRecipe, study: StudySpec, series: SeriesSpec,
               modality: str, sop_class: str, sop_instance: str,
               created: dt.date, created_time: str) -> Dataset:
    """A dataset with SOP Common, Patient, General Study, series and equipment filled in."""
    people = recipe.people
    ds = Dataset()
    ds.SpecificCharacterSet = people.charset
    ds.InstanceCreationDate = da(created)
    ds.InstanceCreationTime = created_time
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.StudyDate = da(study.date)
    ds.StudyTime = study.time
    ds.AccessionNumber = study.accession
    ds.Modality = modality
    ds.Manufacturer = MANUFACTURER
    ds.InstitutionName = people.institution
    ds.ReferringPhysicianName = people.physician.pn
    ds.StationName = "DBDSIM1"
    ds.StudyDescription = study.description
    ds.SeriesDescription = series.description
    ds.OperatorsName = people.operator.pn
    ds.ManufacturerModelName = "Synthetic RT archive"
    ds.PatientName = people.patient_name.pn
    ds.PatientID = recipe.patient_id
    ds.PatientBirthDate = da(recipe.birth_date)
    ds.PatientSex = people.sex
    ds.DeviceSerialNumber = recipe.equipment_serial
    ds.SoftwareVersions = SOFTWARE_VERSION
    ds.StudyInstanceUID = study.uid
    ds.SeriesInstanceUID = series.uid
    ds.StudyID = study.study_id
    ds.SeriesNumber = series.number
    return ds


def with_file_meta(ds: Dataset) -> Dataset:
    """Attach a Part 10 File Meta header (Explicit VR Little Endian) to ``ds``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    ds.file_meta = meta
    return ds
