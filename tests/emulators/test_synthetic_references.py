"""The synthetic archive's cross-object references and anatomy, read back from Part 10 files."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from emulators.synthetic import Mess, PatientRecipe, Profile, SyntheticConfig, make_recipe
from emulators.synthetic.objects import object_refs

CLEAN = SyntheticConfig(seed=5, profile=Profile.CLEAN, slices=12, rows=64, columns=64)
MESSY = SyntheticConfig(seed=11, profile=Profile.MESSY, slices=12, rows=64, columns=64)
BEAM_DOSE_INDEX = next(i for i in range(1000) if Mess.BEAM_DOSES in make_recipe(MESSY, i).mess)
CASES = sorted({(CLEAN, 0), (CLEAN, 1), (CLEAN, 2), *((MESSY, i) for i in range(5)),
                (MESSY, BEAM_DOSE_INDEX)}, key=lambda c: (c[0].profile, c[1]))
PATIENT_KEYS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                "SpecificCharacterSet")
STUDY_KEYS = ("StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
              "StudyDescription")


@dataclass(frozen=True)
class Patient:
    recipe: PatientRecipe
    objects: list[Dataset]

    def of(self, modality: str) -> list[Dataset]:
        return [ds for ds in self.objects if ds.Modality == modality]

    def by_uid(self) -> dict[str, Dataset]:
        return {ds.SOPInstanceUID: ds for ds in self.objects}


def load(config: SyntheticConfig, index: int, folder: Path,
         write: Callable[[PatientRecipe, Path], list[Path]]) -> Patient:
    recipe = make_recipe(config, index)
    return Patient(recipe, [pydicom.dcmread(p) for p in write(recipe, folder)])


@pytest.fixture(scope="module")
def loaded() -> dict[tuple[SyntheticConfig, int], Patient]:
    return {}  # each patient is written and read once per worker, whatever the test order


@pytest.fixture(params=CASES, ids=lambda c: f"{c[0].profile}-{c[1]}")
def patient(request: pytest.FixtureRequest, loaded: dict[tuple[SyntheticConfig, int], Patient],
            tmp_path_factory: pytest.TempPathFactory,
            write_recipe: Callable[[PatientRecipe, Path], list[Path]]) -> Patient:
    if request.param not in loaded:
        folder = tmp_path_factory.mktemp("archive")
        loaded[request.param] = load(*request.param, folder, write_recipe)
    return loaded[request.param]


def referenced_series(ss: Dataset) -> tuple[Dataset, Dataset, Dataset]:
    frame = ss.ReferencedFrameOfReferenceSequence[0]
    study = frame.RTReferencedStudySequence[0]
    return frame, study, study.RTReferencedSeriesSequence[0]


def first_ref(ds: Dataset, what: str) -> str:
    """The first ReferencedSOPInstanceUID of ``Referenced<what>Sequence``."""
    return str(ds[f"Referenced{what}Sequence"][0].ReferencedSOPInstanceUID)


def roi_contours(ss: Dataset, name: str) -> list[Dataset]:
    number = next(r.ROINumber for r in ss.StructureSetROISequence if r.ROIName == name)
    roi = next(c for c in ss.ROIContourSequence if c.ReferencedROINumber == number)
    return list(roi.ContourSequence)


def points(contour: Dataset) -> np.ndarray:
    return np.array([float(v) for v in contour.ContourData]).reshape(-1, 3)


def inside(polygon: np.ndarray, x: float, y: float) -> bool:
    """Even-odd ray casting on a closed planar polygon's (x, y)."""
    xs, ys = polygon[:, 0], polygon[:, 1]
    xj, yj = np.roll(xs, 1), np.roll(ys, 1)
    crosses = ((ys > y) != (yj > y)) & (x < (xj - xs) * (y - ys) / (yj - ys + 1e-12) + xs)
    return bool(np.count_nonzero(crosses) % 2)


def all_contours(ss: Dataset) -> list[Dataset]:
    return [c for roi in ss.ROIContourSequence for c in roi.ContourSequence]


def contour_z_mismatches(patient: Patient) -> list[tuple[float, float]]:
    """(slice z, worst point z) of each contour off the slice it references."""
    objects, bad = patient.by_uid(), []
    for contour in (c for ss in patient.of("RTSTRUCT") for c in all_contours(ss)):
        uid = contour.ContourImageSequence[0].ReferencedSOPInstanceUID
        z, zs = float(objects[uid].ImagePositionPatient[2]), points(contour)[:, 2]
        worst = float(zs[np.argmax(np.abs(zs - z))])
        if abs(worst - z) > 1e-3:
            bad.append((z, worst))
    return bad


def test_contours_reference_ct_of_the_named_series(patient: Patient) -> None:
    cts = {ds.SOPInstanceUID: ds for ds in patient.of("CT")}
    for ss in patient.of("RTSTRUCT"):
        _, study, series = referenced_series(ss)
        listed = {item.ReferencedSOPInstanceUID for item in series.ContourImageSequence}
        in_series = {u for u, ct in cts.items() if ct.SeriesInstanceUID == series.SeriesInstanceUID}
        assert listed == in_series and listed
        assert {cts[u].StudyInstanceUID for u in listed} == {study.ReferencedSOPInstanceUID}
        used = {item.ReferencedSOPInstanceUID for c in all_contours(ss)
                for item in c.ContourImageSequence}
        assert used and used <= in_series


def test_contour_points_lie_on_the_referenced_slice(patient: Patient) -> None:
    contours = [c for ss in patient.of("RTSTRUCT") for c in all_contours(ss)]
    assert contours
    assert all(c.NumberOfContourPoints * 3 == len(c.ContourData) for c in contours)
    assert contour_z_mismatches(patient) == []


def test_contour_points_lie_on_thin_slices(
        tmp_path: Path, write_recipe: Callable[[PatientRecipe, Path], list[Path]]) -> None:
    thin = SyntheticConfig(seed=1, slices=12, rows=64, columns=64, slice_thickness=1.25)
    assert contour_z_mismatches(load(thin, 0, tmp_path, write_recipe)) == []


def test_plans_reference_the_recipes_structure_set(patient: Patient) -> None:
    structure_sets = {ds.SOPInstanceUID for ds in patient.of("RTSTRUCT")}
    plans = patient.by_uid()
    assert len(patient.of("RTPLAN")) == len(patient.recipe.plans)
    for spec in patient.recipe.plans:
        assert len(plans[spec.uid].ReferencedStructureSetSequence) == 1
        assert first_ref(plans[spec.uid], "StructureSet") == spec.structure_set.uid
        assert spec.structure_set.uid in structure_sets


def test_doses_reference_their_plan(patient: Patient) -> None:
    objects = patient.by_uid()
    assert len(patient.of("RTDOSE")) == len(patient.recipe.doses)
    for spec in patient.recipe.doses:
        assert len(objects[spec.uid].ReferencedRTPlanSequence) == 1
        assert first_ref(objects[spec.uid], "RTPlan") == spec.plan.uid
        assert objects[spec.plan.uid].Modality == "RTPLAN"


def test_one_frame_of_reference_from_ct_to_dose(patient: Patient) -> None:
    objects = patient.by_uid()
    ct_frames = {(ct.SeriesInstanceUID, ct.FrameOfReferenceUID) for ct in patient.of("CT")}
    for ss in patient.of("RTSTRUCT"):
        frame, _, series = referenced_series(ss)
        frames = {f for s, f in ct_frames if s == series.SeriesInstanceUID}
        rois = {r.ReferencedFrameOfReferenceUID for r in ss.StructureSetROISequence}
        assert frames == rois == {ss.FrameOfReferenceUID} == {frame.FrameOfReferenceUID}
    for obj in patient.of("RTPLAN") + patient.of("RTDOSE"):
        plan = obj if obj.Modality == "RTPLAN" else objects[first_ref(obj, "RTPlan")]
        ss = objects[first_ref(plan, "StructureSet")]
        assert obj.FrameOfReferenceUID == ss.FrameOfReferenceUID


def differing(objects: list[Dataset], keys: tuple[str, ...]) -> dict[str, set[str]]:
    """The attributes of ``keys`` missing from, or not the same on, all ``objects``."""
    values = {key: {str(ds.get(key)) for ds in objects} for key in keys}
    return {key: v for key, v in values.items() if len(v) != 1 or "None" in v}


def test_patient_attributes_identical_on_every_object(patient: Patient) -> None:
    assert differing(patient.objects, PATIENT_KEYS) == {}


def test_study_attributes_identical_within_a_study(patient: Patient) -> None:
    studies: dict[str, list[Dataset]] = defaultdict(list)
    for ds in patient.objects:
        studies[ds.StudyInstanceUID].append(ds)
    assert len(studies) == len(patient.recipe.studies)
    assert [differing(members, STUDY_KEYS) for members in studies.values()] == [{}] * len(studies)


def test_beam_doses_reference_beams_of_their_plan(
        tmp_path: Path, write_recipe: Callable[[PatientRecipe, Path], list[Path]]) -> None:
    patient = load(MESSY, BEAM_DOSE_INDEX, tmp_path, write_recipe)
    objects = patient.by_uid()
    beam_doses = [d for d in patient.of("RTDOSE") if d.DoseSummationType == "BEAM"]
    assert beam_doses
    for dose in beam_doses:
        plan_ref = dose.ReferencedRTPlanSequence[0]
        plan = objects[plan_ref.ReferencedSOPInstanceUID]
        group = plan_ref.ReferencedFractionGroupSequence[0]
        assert group.ReferencedFractionGroupNumber in {
            g.FractionGroupNumber for g in plan.FractionGroupSequence}
        (beam,) = group.ReferencedBeamSequence
        assert beam.ReferencedBeamNumber in {b.BeamNumber for b in plan.BeamSequence}


def pixel(image: Dataset, x: float, y: float) -> tuple[int, int]:
    """(row, column) of the pixel nearest (x, y) in an axial image."""
    x0, y0, _ = (float(v) for v in image.ImagePositionPatient)
    dy, dx = (float(v) for v in image.PixelSpacing)
    return round((y - y0) / dy), round((x - x0) / dx)


def dose_at(dose: Dataset, x: float, y: float, z: float) -> float:
    """Dose in Gy of the grid voxel nearest (x, y, z)."""
    offsets = np.array([float(v) for v in dose.GridFrameOffsetVector])
    frame = int(np.argmin(np.abs(float(dose.ImagePositionPatient[2]) + offsets - z)))
    return float(dose.pixel_array[frame][pixel(dose, x, y)]) * float(dose.DoseGridScaling)


def test_plan_dose_maximum_near_prescription(patient: Patient) -> None:
    objects = patient.by_uid()
    for dose in (d for d in patient.of("RTDOSE") if d.DoseSummationType == "PLAN"):
        plan = objects[first_ref(dose, "RTPlan")]
        prescribed = float(plan.DoseReferenceSequence[0].TargetPrescriptionDose)
        group = plan.FractionGroupSequence[0]
        per_fraction = sum(float(b.BeamDose) for b in group.ReferencedBeamSequence)
        assert prescribed == pytest.approx(group.NumberOfFractionsPlanned * per_fraction, 1e-2)
        maximum = float(dose.pixel_array.max()) * float(dose.DoseGridScaling)
        assert maximum == pytest.approx(prescribed, rel=0.15)


def test_ptv_centre_dose_exceeds_dose_far_outside(patient: Patient) -> None:
    objects = patient.by_uid()
    for dose in patient.of("RTDOSE"):
        plan = objects[first_ref(dose, "RTPlan")]
        ss = objects[first_ref(plan, "StructureSet")]
        target = plan.DoseReferenceSequence[0].ReferencedROINumber
        assert [r.ROIName for r in ss.StructureSetROISequence if r.ROINumber == target] == ["PTV"]
        widest = max((points(c) for c in roi_contours(ss, "PTV")), key=lambda p: np.ptp(p[:, 0]))
        cx, cy, cz = widest.mean(axis=0)
        radius = float(np.ptp(widest[:, 0])) / 2
        far_x = -cx  # mirrored into the other lung, still inside the body
        assert abs(far_x - cx) > radius + 20.0
        centre, far = dose_at(dose, cx, cy, cz), dose_at(dose, far_x, cy, cz)
        assert centre > 2.0 * far, (dose.SOPInstanceUID, centre, far)


def hu_at(ct: Dataset, x: float, y: float) -> float:
    stored = float(ct.pixel_array[pixel(ct, x, y)])
    return stored * float(ct.RescaleSlope) + float(ct.RescaleIntercept)


def test_ct_numbers_match_lung_and_soft_tissue(patient: Patient) -> None:
    objects = patient.by_uid()
    ss = patient.of("RTSTRUCT")[0]
    slice_of = {c.ContourImageSequence[0].ReferencedSOPInstanceUID: points(c)
                for c in roi_contours(ss, "PTV")}
    checked = 0
    for lung in ("Lung_L", "Lung_R"):
        contour = max(roi_contours(ss, lung), key=lambda c: float(np.ptp(points(c)[:, 0])))
        uid = contour.ContourImageSequence[0].ReferencedSOPInstanceUID
        lx, ly, _ = points(contour).mean(axis=0)
        if uid in slice_of and inside(slice_of[uid], lx, ly):
            continue  # the tumour sits at this lung's centre
        assert hu_at(objects[uid], lx, ly) < -500
        body = next(c for c in roi_contours(ss, "BODY")
                    if c.ContourImageSequence[0].ReferencedSOPInstanceUID == uid)
        bx, by, _ = points(body).mean(axis=0)
        assert not inside(points(contour)[:, :2], bx, by)
        assert -100 <= hu_at(objects[uid], bx, by) <= 100
        checked += 1
    assert checked >= 1


def test_static_and_vmat_plans_both_appear() -> None:
    config = SyntheticConfig(seed=3, profile=Profile.CLEAN)
    beam_types: set[tuple[str, bool]] = set()
    for index in range(20):
        for obj in (o for o in object_refs(make_recipe(config, index)) if o.modality == "RTPLAN"):
            plan = obj.build()
            assert plan.FractionGroupSequence[0].NumberOfBeams == len(plan.BeamSequence)
            for beam in plan.BeamSequence:
                assert beam.NumberOfControlPoints == len(beam.ControlPointSequence)
                beam_types.add((beam.BeamType, beam.NumberOfControlPoints > 20))
    assert beam_types == {("STATIC", False), ("DYNAMIC", True)}
