"""CT Image Storage instances: one axial slice of the phantom, with seeded noise."""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage

from .modules import da, ds_str, new_object
from .phantom import hu_slice
from .recipe import CTGeometry, CTSpec, PatientRecipe

RESCALE_INTERCEPT = -1024
NOISE_HU = 12


@functools.cache
def pixel_centres(geometry: CTGeometry) -> tuple[npt.NDArray[np.float64],
                                                 npt.NDArray[np.float64]]:
    """x of each column centre and y of each row centre, in mm."""
    xs = geometry.origin_x + np.arange(geometry.columns, dtype=np.float64) * geometry.spacing
    ys = geometry.origin_y + np.arange(geometry.rows, dtype=np.float64) * geometry.spacing
    return xs, ys


def slice_pixels(recipe: PatientRecipe, ct: CTSpec, k: int) -> npt.NDArray[np.uint16]:
    """Stored values of slice ``k``; its noise depends only on the slice's UID."""
    xs, ys = pixel_centres(ct.geometry)
    hu = hu_slice(recipe.anatomy, xs, ys, ct.geometry.z(k))
    rng = np.random.default_rng(int(ct.slice_uids[k][5:]))
    noise = rng.integers(-NOISE_HU, NOISE_HU + 1, size=hu.shape, dtype=np.int16)
    stored = hu + noise - RESCALE_INTERCEPT
    np.clip(stored, 0, 4095, out=stored)
    return stored.astype(np.uint16)


def ct_slice(recipe: PatientRecipe, ct: CTSpec, k: int) -> Dataset:
    g = ct.geometry
    study = ct.study
    ds = new_object(recipe, study, ct.series, "CT", CTImageStorage, ct.slice_uids[k],
                    study.date, study.time)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SeriesDate = da(study.date)
    ds.AcquisitionDate = da(study.date)
    ds.ContentDate = da(study.date)
    ds.SeriesTime = study.time
    ds.AcquisitionTime = study.time
    ds.ContentTime = study.time
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = ds_str(g.thickness)
    ds.KVP = "120"
    ds.DataCollectionDiameter = "500"
    ds.ReconstructionDiameter = ds_str(g.spacing * g.columns)
    ds.PatientPosition = "HFS"
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = [ds_str(g.origin_x), ds_str(g.origin_y), ds_str(g.z(k))]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = ct.frame_of_reference
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = ds_str(g.z(k))
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = g.rows
    ds.Columns = g.columns
    ds.PixelSpacing = [ds_str(g.spacing, 6), ds_str(g.spacing, 6)]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.RescaleIntercept = str(RESCALE_INTERCEPT)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.PixelData = slice_pixels(recipe, ct, k).tobytes()
    ds["PixelData"].VR = "OW"
    return ds
