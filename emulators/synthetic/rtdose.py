"""RT Dose Storage: a 3-D dose grid over the body peaking in the PTV."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.uid import RTDoseStorage, RTPlanStorage

from .modules import da, ds_str, new_object, ref, seq
from .phantom import Anatomy, relative_dose
from .recipe import CTGeometry, DoseSpec, PatientRecipe

GRID_SPACING = 3.0  # mm, in-plane
FRAME_FACTOR = 2  # one dose plane every second CT slice


@dataclass(frozen=True)
class DoseGrid:
    origin_x: float
    origin_y: float
    z0: float
    spacing: float
    frame_spacing: float
    rows: int
    columns: int
    frames: int

    def axes(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        xs = self.origin_x + np.arange(self.columns, dtype=np.float64) * self.spacing
        ys = self.origin_y + np.arange(self.rows, dtype=np.float64) * self.spacing
        return xs, ys


def dose_grid(anatomy: Anatomy, ct: CTGeometry) -> DoseGrid:
    """The body's bounding box plus a margin, over the CT's whole z range."""
    body = anatomy.organs[0]
    half_x = math.ceil((body.ax + 6.0) / GRID_SPACING) * GRID_SPACING
    half_y = math.ceil((body.ay + 6.0) / GRID_SPACING) * GRID_SPACING
    frame_spacing = ct.thickness * FRAME_FACTOR
    frames = int((ct.slices - 1) * ct.thickness // frame_spacing) + 1
    return DoseGrid(
        origin_x=-half_x, origin_y=-half_y, z0=ct.z(0), spacing=GRID_SPACING,
        frame_spacing=frame_spacing,
        rows=int(2 * half_y / GRID_SPACING) + 1,
        columns=int(2 * half_x / GRID_SPACING) + 1,
        frames=frames,
    )


def dose_volume(recipe: PatientRecipe, dose: DoseSpec,
                grid: DoseGrid) -> npt.NDArray[np.float64]:
    """Absolute dose in Gy, frames x rows x columns."""
    plan = dose.plan
    xs, ys = grid.axes()
    volume = np.stack([relative_dose(recipe.anatomy, xs, ys, grid.z0 + f * grid.frame_spacing)
                       for f in range(grid.frames)])
    scale = plan.prescription
    if dose.beam is not None:
        scale *= dose.beam.meterset / sum(b.meterset for b in plan.beams)
    return volume * scale


def rt_dose(recipe: PatientRecipe, dose: DoseSpec) -> Dataset:
    plan = dose.plan
    ct = plan.structure_set.ct
    grid = dose_grid(recipe.anatomy, ct.geometry)
    gy = dose_volume(recipe, dose, grid)
    # 16-bit values, the maximum near 60000 units. (32-bit grids, as Eclipse
    # writes, crash the Debian build of dciodvfy, so the archive avoids them.)
    scaling = f"{max(float(gy.max()), 1e-3) / 60000.0:.6e}"
    stored = np.rint(gy / float(scaling)).astype(np.uint16)

    ds = new_object(recipe, dose.study, dose.series, "RTDOSE", RTDoseStorage, dose.uid,
                    plan.date, plan.time)
    ds.SeriesDate = da(plan.date)
    ds.SeriesTime = plan.time
    ds.ContentDate = da(plan.date)
    ds.ContentTime = plan.time
    ds.SliceThickness = ""
    ds.InstanceNumber = dose.instance_number
    ds.ImagePositionPatient = [ds_str(grid.origin_x), ds_str(grid.origin_y), ds_str(grid.z0)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = ct.frame_of_reference
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = grid.frames
    ds.FrameIncrementPointer = (0x3004, 0x000C)
    ds.Rows = grid.rows
    ds.Columns = grid.columns
    ds.PixelSpacing = [ds_str(grid.spacing), ds_str(grid.spacing)]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.DoseUnits = "GY"
    ds.DoseType = "PHYSICAL"
    ds.DoseComment = "Beam dose" if dose.beam else "Plan dose"
    ds.DoseSummationType = dose.summation
    plan_ref = ref(RTPlanStorage, plan.uid)
    if dose.beam is not None:
        beam = Dataset()
        beam.ReferencedBeamNumber = dose.beam.number
        group = Dataset()
        group.ReferencedBeamSequence = seq([beam])
        group.ReferencedFractionGroupNumber = 1
        plan_ref.ReferencedFractionGroupSequence = seq([group])
    ds.ReferencedRTPlanSequence = seq([plan_ref])
    ds.GridFrameOffsetVector = [ds_str(f * grid.frame_spacing) for f in range(grid.frames)]
    ds.DoseGridScaling = scaling
    ds.TissueHeterogeneityCorrection = "IMAGE"
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OW"
    return ds
