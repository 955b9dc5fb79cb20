"""RT Plan Storage: a static multi-beam or a VMAT photon plan aimed at the PTV."""

from __future__ import annotations

import itertools
import math

from pydicom.dataset import Dataset
from pydicom.uid import RTPlanStorage, RTStructureSetStorage

from client.uids import derive_uid

from .modules import da, ds_str, new_object, ref, seq
from .recipe import BeamSpec, PatientRecipe, PlanSpec

# A Millennium-120-like MLC: 10 outer pairs of 10 mm, 40 inner of 5 mm, 10 outer.
LEAF_BOUNDARIES: tuple[float, ...] = tuple(
    [-200.0 + 10 * i for i in range(10)]
    + [-100.0 + 5 * i for i in range(40)]
    + [100.0 + 10 * i for i in range(11)]
)
LEAF_PAIRS = len(LEAF_BOUNDARIES) - 1
VMAT_STEP_DEGREES = 4.0


def ptv_roi_number(recipe: PatientRecipe) -> int:
    return recipe.anatomy.organs.index(recipe.anatomy.target) + 1


def _leaves(radius: float, modulation: float) -> list[str]:
    """Bank A then bank B, shaped to the PTV's projection (a disc of ``radius``)."""
    bank_a: list[str] = []
    bank_b: list[str] = []
    for lo, hi in itertools.pairwise(LEAF_BOUNDARIES):
        y = (lo + hi) / 2.0
        if abs(y) < radius:
            half = math.sqrt(radius * radius - y * y) + 3.0
            bank_a.append(ds_str(-half * (1.0 - modulation), 2))
            bank_b.append(ds_str(half * (1.0 + modulation), 2))
        else:
            bank_a.append("-1")  # closed pairs parked with a 2 mm gap
            bank_b.append("1")
    return bank_a + bank_b


def _device_positions(radius: float, modulation: float) -> list[Dataset]:
    jaw = ds_str(radius + 8.0, 2)
    out = []
    for kind, positions in (("ASYMX", ["-" + jaw, jaw]), ("ASYMY", ["-" + jaw, jaw]),
                            ("MLCX", _leaves(radius, modulation))):
        item = Dataset()
        item.RTBeamLimitingDeviceType = kind
        item.LeafJawPositions = positions
        out.append(item)
    return out


def _control_points(plan: PlanSpec, beam: BeamSpec, recipe: PatientRecipe) -> list[Dataset]:
    ptv = recipe.anatomy.target
    isocentre = [ds_str(ptv.cx, 2), ds_str(ptv.cy, 2), ds_str(ptv.cz, 2)]
    direction = beam.rotation
    if beam.is_arc:
        sign = 1.0 if direction == "CW" else -1.0
        span = (sign * (beam.gantry_stop - beam.gantry_start)) % 360
        steps = max(2, math.ceil(span / VMAT_STEP_DEGREES))
        angles = [(beam.gantry_start + sign * span * i / steps) % 360 for i in range(steps + 1)]
    else:
        angles = [beam.gantry_start, beam.gantry_start]
    last = len(angles) - 1
    points = []
    for i, angle in enumerate(angles):
        cp = Dataset()
        cp.ControlPointIndex = i
        cp.CumulativeMetersetWeight = ds_str(i / last, 6)
        modulation = 0.15 * math.sin(i / 3.0) if beam.is_arc else 0.0
        if i == 0 or beam.is_arc:
            cp.BeamLimitingDevicePositionSequence = seq(_device_positions(ptv.ax, modulation))
            cp.GantryAngle = ds_str(angle, 1)
            cp.GantryRotationDirection = direction if i < last else "NONE"
        if i == 0:
            cp.NominalBeamEnergy = ds_str(plan.energy)
            cp.DoseRateSet = "600"
            cp.BeamLimitingDeviceAngle = "30" if beam.is_arc else "0"
            cp.BeamLimitingDeviceRotationDirection = "NONE"
            cp.PatientSupportAngle = "0"
            cp.PatientSupportRotationDirection = "NONE"
            cp.TableTopEccentricAngle = "0"
            cp.TableTopEccentricRotationDirection = "NONE"
            cp.TableTopPitchAngle = 0.0
            cp.TableTopPitchRotationDirection = "NONE"
            cp.TableTopRollAngle = 0.0
            cp.TableTopRollRotationDirection = "NONE"
            cp.TableTopVerticalPosition = ""
            cp.TableTopLongitudinalPosition = ""
            cp.TableTopLateralPosition = ""
            cp.IsocenterPosition = isocentre
        points.append(cp)
    return points


def _beam(plan: PlanSpec, beam: BeamSpec, recipe: PatientRecipe) -> Dataset:
    item = Dataset()
    item.Manufacturer = "Varian Medical Systems"
    item.TreatmentMachineName = plan.machine
    item.PrimaryDosimeterUnit = "MU"
    item.SourceAxisDistance = "1000"
    devices = []
    for kind, pairs in (("ASYMX", 1), ("ASYMY", 1), ("MLCX", LEAF_PAIRS)):
        device = Dataset()
        device.RTBeamLimitingDeviceType = kind
        device.NumberOfLeafJawPairs = pairs
        if kind == "MLCX":
            device.LeafPositionBoundaries = [ds_str(b) for b in LEAF_BOUNDARIES]
        devices.append(device)
    item.BeamLimitingDeviceSequence = seq(devices)
    item.BeamNumber = beam.number
    item.BeamName = beam.name
    item.BeamType = "DYNAMIC" if beam.is_arc else "STATIC"
    item.RadiationType = "PHOTON"
    item.TreatmentDeliveryType = "TREATMENT"
    item.NumberOfWedges = 0
    item.NumberOfCompensators = 0
    item.NumberOfBoli = 0
    item.NumberOfBlocks = 0
    points = _control_points(plan, beam, recipe)
    item.FinalCumulativeMetersetWeight = "1"
    item.NumberOfControlPoints = len(points)
    item.ControlPointSequence = seq(points)
    item.ReferencedPatientSetupNumber = 1
    return item


def rt_plan(recipe: PatientRecipe, plan: PlanSpec) -> Dataset:
    ds = new_object(recipe, plan.study, plan.series, "RTPLAN", RTPlanStorage, plan.uid,
                    plan.date, plan.time)
    ds.SeriesDate = da(plan.date)
    ds.SeriesTime = plan.time
    ds.InstanceNumber = 1
    ds.FrameOfReferenceUID = plan.structure_set.ct.frame_of_reference
    ds.PositionReferenceIndicator = ""
    ds.RTPlanLabel = plan.label
    ds.RTPlanName = plan.name
    ds.RTPlanDate = da(plan.date)
    ds.RTPlanTime = plan.time
    ds.PlanIntent = "CURATIVE"
    ds.RTPlanGeometry = "PATIENT"
    ds.ReferencedStructureSetSequence = seq([ref(RTStructureSetStorage,
                                                 plan.structure_set.uid)])
    ds.PrescriptionDescription = (
        f"{ds_str(plan.prescription, 2)} Gy in {plan.fractions} fractions to PTV")
    target = Dataset()
    target.ReferencedROINumber = ptv_roi_number(recipe)
    target.DoseReferenceNumber = 1
    target.DoseReferenceUID = derive_uid("dose-reference", plan.uid)
    target.DoseReferenceStructureType = "VOLUME"
    target.DoseReferenceDescription = "PTV"
    target.DoseReferenceType = "TARGET"
    target.TargetPrescriptionDose = ds_str(plan.prescription, 2)
    ds.DoseReferenceSequence = seq([target])

    total_mu = sum(b.meterset for b in plan.beams)
    group = Dataset()
    group.FractionGroupNumber = 1
    group.NumberOfFractionsPlanned = plan.fractions
    group.NumberOfBeams = len(plan.beams)
    group.NumberOfBrachyApplicationSetups = 0
    referenced = []
    for beam in plan.beams:
        item = Dataset()
        item.BeamDose = ds_str(plan.dose_per_fraction * beam.meterset / total_mu, 4)
        item.BeamMeterset = ds_str(beam.meterset, 2)
        item.ReferencedBeamNumber = beam.number
        referenced.append(item)
    group.ReferencedBeamSequence = seq(referenced)
    ds.FractionGroupSequence = seq([group])
    ds.BeamSequence = seq([_beam(plan, beam, recipe) for beam in plan.beams])
    setup = Dataset()
    setup.PatientPosition = "HFS"
    setup.PatientSetupNumber = 1
    setup.SetupTechnique = "ISOCENTRIC"
    ds.PatientSetupSequence = seq([setup])
    ds.ApprovalStatus = "APPROVED" if plan.approved else "UNAPPROVED"
    if plan.approved:
        ds.ReviewDate = da(plan.date)
        ds.ReviewTime = plan.time
        ds.ReviewerName = recipe.people.reviewer.pn
    return ds

