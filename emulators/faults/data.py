"""Data faults: what is wrong with one synthetic patient's objects in the archive.

Some are gaps in the archive (slices or a structure set it lacks, a UID two patients
share), made by editing the index; the others change objects on their way out of
the DB Daemon: a plan without beams, a dose on another grid (content, before the
export rules see it), text in one character set labelled as another (on the wire,
after the daemon has encoded it).
"""

from __future__ import annotations

from collections.abc import Callable

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from client.uids import derive_uid

from ..archive import Archive, ArchiveError
from ..synthetic import PatientRecipe
from .model import DataFaults, FaultError

_TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "PN", "UC"})
_OTHER_GRID_SHIFT = 150.0  # mm: far enough that the dose misses the patient's CT


class DataInjector:
    """The DB Daemon's view of the data faults: two transforms of outgoing objects."""

    def __init__(self, patient_id: str = "", content: Callable[[Dataset], None] | None = None,
                 wire: Callable[[Dataset], None] | None = None) -> None:
        self.patient_id = patient_id
        self._content, self._wire = content, wire

    def touches(self, patient_id: str) -> bool:
        """Whether this patient's objects may be changed on their way out."""
        return bool(self.patient_id) and patient_id == self.patient_id

    def _applies(self, ds: Dataset) -> bool:
        return self.touches(str(ds.get("PatientID", "")))

    def content(self, ds: Dataset) -> Dataset:
        """``ds`` as the faulty archive holds it (before the export rules look at it)."""
        if self._content is not None and self._applies(ds):
            self._content(ds)
        return ds

    def wire(self, ds: Dataset) -> Dataset:
        """``ds`` as it leaves, after the daemon encoded it for the destination."""
        if self._wire is not None and self._applies(ds):
            self._wire(ds)
        return ds


def apply_data_faults(archive: Archive, faults: DataFaults) -> DataInjector:
    """Edit ``archive``'s index as ``faults`` say; the injector does the rest per object."""
    if not faults.active:
        return DataInjector()
    recipe = _recipe(archive, faults.patient, "patient")
    plan = recipe.plans[0]
    ss = plan.structure_set
    ct = ss.ct
    missing: list[str] = []
    for k in faults.missing_slices:
        if k >= len(ct.slice_uids):
            raise FaultError(f"missing_slices: slice {k} is beyond the CT's "
                             f"{len(ct.slice_uids)} slices")
        missing.append(ct.slice_uids[k])
    if faults.dangling == "structure-set":
        missing.append(ss.uid)
    elif faults.dangling == "image-series":
        missing.extend(ct.slice_uids)
    elif faults.dangling == "plan":
        missing.append(plan.uid)
    if missing:
        archive.index.remove_instances(missing)
    if faults.duplicate_uid_of is not None:
        other = _recipe(archive, faults.duplicate_uid_of, "duplicate_uid_of")
        archive.index.duplicate_uid(ct.slice_uids[0], other.cts[0].slice_uids[0])
    return DataInjector(recipe.patient_id, _content_fault(recipe, faults),
                        _wire_fault(faults.charset))


def _recipe(archive: Archive, index: int, key: str) -> PatientRecipe:
    count = archive.index.counts().patients
    if index >= count:
        raise FaultError(f"{key} {index}: the archive has {count} patients (0 to {count - 1})")
    try:
        return archive.recipe(index)
    except ArchiveError as exc:
        raise FaultError(f"{key}: data faults need a synthetic archive ({exc})") from exc


def _content_fault(recipe: PatientRecipe, faults: DataFaults) -> Callable[[Dataset], None] | None:
    if not (faults.empty_beams or faults.dose_on_other_grid):
        return None
    plan_uid = recipe.plans[0].uid
    other_frame = derive_uid("dbdsim-fault-other-grid", recipe.config.seed, recipe.index)

    def change(ds: Dataset) -> None:
        uid = str(ds.get("SOPInstanceUID", ""))
        if faults.empty_beams and uid == plan_uid:
            ds.BeamSequence = []
            for group in ds.get("FractionGroupSequence", []):
                group.NumberOfBeams = 0
                group.ReferencedBeamSequence = []
        if faults.dose_on_other_grid and ds.get("Modality") == "RTDOSE" and any(
                str(r.get("ReferencedSOPInstanceUID", "")) == plan_uid
                for r in ds.get("ReferencedRTPlanSequence", [])):
            ds.FrameOfReferenceUID = other_frame
            x, y, z = (float(v) for v in ds.ImagePositionPatient)
            ds.ImagePositionPatient = [x + _OTHER_GRID_SHIFT, y, z]

    return change


def _wire_fault(charset: str) -> Callable[[Dataset], None] | None:
    """UTF-8 text sent without (0008,0005), or labelled ISO_IR 100 (Latin-1)."""
    if not charset:
        return None

    def relabel(ds: Dataset) -> None:
        for elem in ds.iterall():
            if elem.VR in _TEXT_VRS and elem.value is not None:
                elem.value = _as_latin1_of_utf8(elem.value)
        if charset == "missing":
            del ds.SpecificCharacterSet
        else:
            ds.SpecificCharacterSet = "ISO_IR 100"

    return relabel


def _as_latin1_of_utf8(value: object) -> object:
    """A value whose Latin-1 encoding is the UTF-8 encoding of ``value``'s text."""
    if isinstance(value, MultiValue | list):
        return [_as_latin1_of_utf8(v) for v in value]
    if isinstance(value, PersonName):
        return PersonName(str(value).encode("utf-8").decode("latin-1"))
    if isinstance(value, str):
        return value.encode("utf-8").decode("latin-1")
    return value
