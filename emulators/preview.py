"""A PNG of one synthetic patient: a CT slice with its contours and the plan dose on top.

Everything drawn is read back from the datasets the generator builds (the same
``ObjectRef.build`` calls ``dbdsim generate`` writes to disk), encoded as Part 10
and parsed again, so a wrong picture means wrong files, not a wrong preview.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite

from .synthetic import ObjectRef, PatientRecipe, object_refs
from .synthetic.modules import with_file_meta
from .synthetic.recipe import CTSpec, DoseSpec, PlanSpec, StructureSetSpec

WINDOW_CENTRE = 40.0  # HU; W400/L40 is the usual soft-tissue window
WINDOW_WIDTH = 400.0
MIN_WIDTH = 512  # px: small test CTs are upscaled to stay legible
DOSE_FLOOR = 0.10  # of prescription: below it the wash is transparent
DOSE_TOP = 1.07  # of prescription: red from here up
WASH_ALPHA = 110  # of 255
CONTOUR_WIDTH = 2
# Colour ramp stops over [DOSE_FLOOR, DOSE_TOP]: blue, cyan, green, yellow, red.
_RAMP_AT = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_RAMP_RGB = np.array([(0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0)],
                     dtype=np.float64)

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class _Plane:
    """An image plane's pixel grid in patient coordinates (PS3.3 C.7.6.2.1.1)."""

    origin: FloatArray  # centre of the first pixel
    along_row: FloatArray  # unit vector of increasing column index
    along_column: FloatArray  # unit vector of increasing row index
    row_spacing: float  # mm between rows
    column_spacing: float  # mm between columns

    @classmethod
    def of(cls, ds: Dataset) -> _Plane:
        orientation = np.array([float(v) for v in ds.ImageOrientationPatient])
        return cls(
            origin=np.array([float(v) for v in ds.ImagePositionPatient]),
            along_row=orientation[:3],
            along_column=orientation[3:],
            row_spacing=float(ds.PixelSpacing[0]),
            column_spacing=float(ds.PixelSpacing[1]),
        )

    @property
    def normal(self) -> FloatArray:
        return np.cross(self.along_row, self.along_column)

    def to_index(self, points: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Fractional (column, row) indices of patient points (shape ... x 3)."""
        rel = points - self.origin
        return rel @ self.along_row / self.column_spacing, \
            rel @ self.along_column / self.row_spacing

    def to_patient(self, columns: FloatArray, rows: FloatArray) -> FloatArray:
        """Patient points of fractional (column, row) indices."""
        return (self.origin
                + columns[..., None] * self.column_spacing * self.along_row
                + rows[..., None] * self.row_spacing * self.along_column)


def _refs(recipe: PatientRecipe) -> dict[str, ObjectRef]:
    return {ref.sop_uid: ref for ref in object_refs(recipe)}


def _as_written(ref: ObjectRef) -> Dataset:
    """The object as ``dbdsim generate`` would write and a reader would read it back."""
    buffer = io.BytesIO()
    dcmwrite(buffer, with_file_meta(ref.build()), enforce_file_format=True)
    buffer.seek(0)
    return dcmread(buffer)


def _default_slice(recipe: PatientRecipe, ct: CTSpec) -> int:
    """The slice nearest the PTV centre, where contours and dose are most telling."""
    cz = recipe.anatomy.target.cz
    return min(range(ct.geometry.slices), key=lambda k: abs(ct.geometry.z(k) - cz))


def _grey(ct: Dataset) -> npt.NDArray[np.uint8]:
    stored = ct.pixel_array.astype(np.float64)
    hu = stored * float(ct.RescaleSlope) + float(ct.RescaleIntercept)
    low = WINDOW_CENTRE - WINDOW_WIDTH / 2.0
    return np.clip((hu - low) / WINDOW_WIDTH * 255.0, 0.0, 255.0).round().astype(np.uint8)


def _display_indices(width: int, height: int, scale: int) -> tuple[FloatArray, FloatArray]:
    """Fractional CT (column, row) index at every display pixel's centre."""
    xs = (np.arange(width) + 0.5) / scale - 0.5
    ys = (np.arange(height) + 0.5) / scale - 0.5
    columns, rows = np.meshgrid(xs, ys)
    return columns, rows


def _bilinear(plane: npt.NDArray[np.float64], columns: FloatArray,
              rows: FloatArray) -> FloatArray:
    """``plane`` sampled at fractional indices; zero outside the grid."""
    h, w = plane.shape
    inside = (columns >= 0) & (columns <= w - 1) & (rows >= 0) & (rows <= h - 1)
    c = np.clip(columns, 0, w - 1)
    r = np.clip(rows, 0, h - 1)
    c0 = np.minimum(np.floor(c).astype(np.intp), max(w - 2, 0))
    r0 = np.minimum(np.floor(r).astype(np.intp), max(h - 2, 0))
    c1 = np.minimum(c0 + 1, w - 1)
    r1 = np.minimum(r0 + 1, h - 1)
    fc = c - c0
    fr = r - r0
    top = plane[r0, c0] * (1 - fc) + plane[r0, c1] * fc
    bottom = plane[r1, c0] * (1 - fc) + plane[r1, c1] * fc
    return np.where(inside, top * (1 - fr) + bottom * fr, 0.0)


def _dose_plane(dose: Dataset, ct_plane: _Plane,
                spacing_hint: float) -> tuple[FloatArray, _Plane] | None:
    """The dose frame nearest the CT slice (Gy), or None if the grid misses the slice."""
    grid = dose.pixel_array.astype(np.float64) * float(dose.DoseGridScaling)
    if grid.ndim == 2:
        grid = grid[None]
    plane = _Plane.of(dose)
    offsets = np.array([float(v) for v in dose.get("GridFrameOffsetVector", [0.0])])
    distance = np.abs(float((ct_plane.origin - plane.origin) @ plane.normal) - offsets)
    frame = int(np.argmin(distance))
    spacing = float(np.median(np.diff(offsets))) if offsets.size > 1 else spacing_hint
    if distance[frame] > abs(spacing):
        return None
    frame_plane = _Plane(plane.origin + offsets[frame] * plane.normal, plane.along_row,
                         plane.along_column, plane.row_spacing, plane.column_spacing)
    return grid[frame], frame_plane


def _wash(relative: FloatArray) -> npt.NDArray[np.uint8]:
    """RGBA colour wash of dose relative to prescription."""
    t = np.clip((relative - DOSE_FLOOR) / (DOSE_TOP - DOSE_FLOOR), 0.0, 1.0)
    rgba = np.zeros((*relative.shape, 4), dtype=np.uint8)
    for channel in range(3):
        rgba[..., channel] = np.interp(t, _RAMP_AT, _RAMP_RGB[:, channel]).round()
    rgba[..., 3] = np.where(relative >= DOSE_FLOOR, WASH_ALPHA, 0)
    return rgba


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed-size bitmap font
        return ImageFont.load_default()


def _contours(ss: Dataset, ct: Dataset) -> list[tuple[tuple[int, int, int], FloatArray]]:
    """(display colour, n x 3 points) of every contour lying on the CT slice."""
    z_tolerance = float(ct.get("SliceThickness") or 1.0) / 2.0
    normal = _Plane.of(ct).normal
    slice_level = float(_Plane.of(ct).origin @ normal)
    out = []
    for roi in ss.get("ROIContourSequence", []):
        colour = tuple(int(v) for v in roi.get("ROIDisplayColor", [255, 255, 255]))
        for contour in roi.get("ContourSequence", []):
            points = np.array([float(v) for v in contour.ContourData]).reshape(-1, 3)
            images = contour.get("ContourImageSequence")
            if images:
                on_slice = any(item.ReferencedSOPInstanceUID == ct.SOPInstanceUID
                               for item in images)
            else:
                on_slice = bool(np.all(np.abs(points @ normal - slice_level) <= z_tolerance))
            if on_slice:
                out.append(((colour[0], colour[1], colour[2]), points))
    return out


def _first_plan_dose(recipe: PatientRecipe,
                     ss: StructureSetSpec) -> tuple[PlanSpec | None, DoseSpec | None]:
    plan = next((p for p in recipe.plans if p.structure_set.uid == ss.uid), None)
    if plan is None:
        return None, None
    dose = next((d for d in recipe.doses if d.plan.uid == plan.uid and d.summation == "PLAN"),
                None)
    return plan, dose


def _prescription(plan: Dataset, spec: PlanSpec) -> float:
    for item in plan.get("DoseReferenceSequence", []):
        if item.get("TargetPrescriptionDose"):
            return float(item.TargetPrescriptionDose)
    return spec.prescription


def render_preview(recipe: PatientRecipe, out: Path, slice_index: int | None = None) -> Path:
    """Draw one slice of the patient's first CT, its contours and plan dose to a PNG at ``out``.

    ``slice_index`` defaults to the slice through the PTV centre. Meant for a human
    to check at a glance that anatomy, contours and dose line up.
    """
    ct_spec = recipe.cts[0]
    slices = ct_spec.geometry.slices
    k = _default_slice(recipe, ct_spec) if slice_index is None else slice_index
    if not 0 <= k < slices:
        raise ValueError(f"slice {k} is outside the CT's {slices} slices (0..{slices - 1})")
    refs = _refs(recipe)
    ct = _as_written(refs[ct_spec.slice_uids[k]])
    ct_plane = _Plane.of(ct)

    grey = _grey(ct)
    rows, columns = grey.shape
    scale = max(1, math.ceil(MIN_WIDTH / columns))
    width, height = columns * scale, rows * scale
    image = Image.fromarray(grey).convert("RGBA").resize((width, height), Image.Resampling.NEAREST)

    legend = [recipe.patient_id,
              f"slice {k + 1}/{slices}  z = {float(ct_plane.origin[2]):.1f} mm"]
    ss_spec = next((s for s in recipe.structure_sets
                    if s.ct.series.uid == ct_spec.series.uid), None)
    plan_spec, dose_spec = (None, None) if ss_spec is None else _first_plan_dose(recipe, ss_spec)

    if plan_spec is not None and dose_spec is not None:
        plan = _as_written(refs[plan_spec.uid])
        dose = _as_written(refs[dose_spec.uid])
        prescription = _prescription(plan, plan_spec)
        legend[0] += f"  plan {plan.RTPlanLabel}"
        found = _dose_plane(dose, ct_plane, float(ct.get("SliceThickness") or 0.0) or 1.0)
        max_gy = float(dose.pixel_array.max()) * float(dose.DoseGridScaling)
        legend.append(f"max dose {max_gy:.2f} Gy ({100 * max_gy / prescription:.0f}% of "
                      f"{prescription:g} Gy)")
        if found is not None:
            gy, dose_plane = found
            points = ct_plane.to_patient(*_display_indices(width, height, scale))
            relative = _bilinear(gy, *dose_plane.to_index(points)) / prescription
            image.alpha_composite(Image.fromarray(_wash(relative), "RGBA"))
    elif plan_spec is not None:
        legend[0] += f"  plan {plan_spec.label}"
        legend.append("no plan dose")

    draw = ImageDraw.Draw(image)
    if ss_spec is not None:
        ss = _as_written(refs[ss_spec.uid])
        for colour, points in _contours(ss, ct):
            cols, rws = ct_plane.to_index(points)
            xy = [(float((c + 0.5) * scale - 0.5), float((r + 0.5) * scale - 0.5))
                  for c, r in zip(cols, rws, strict=True)]
            draw.line([*xy, xy[0]], fill=(*colour, 255), width=CONTOUR_WIDTH, joint="curve")

    _draw_legend(image, legend)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.convert("RGB").save(out, format="PNG")
    return out


def _draw_legend(image: Image.Image, lines: list[str]) -> None:
    """Text top left and the dose colour bar bottom left, on dark translucent boxes."""
    size = max(12, image.width // 40)
    font = _font(size)
    pad = size // 2
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    text = "\n".join(lines)
    box = draw.multiline_textbbox((pad, pad), text, font=font, spacing=pad // 2)
    draw.rectangle((0, 0, box[2] + pad, box[3] + pad), fill=(0, 0, 0, 150))
    draw.multiline_text((pad, pad), text, font=font, fill=(255, 255, 255, 255),
                        spacing=pad // 2)

    bar_w, bar_h = image.width // 3, max(6, size // 2)
    x0, y0 = pad, image.height - pad - bar_h - size - pad
    draw.rectangle((0, y0 - pad, x0 + bar_w + 3 * size, image.height), fill=(0, 0, 0, 150))
    ramp = _wash(np.linspace(DOSE_FLOOR, DOSE_TOP, bar_w)[None, :].repeat(bar_h, axis=0))
    ramp[..., 3] = 255
    overlay.paste(Image.fromarray(ramp, "RGBA"), (x0, y0))
    label_y = y0 + bar_h + pad // 2
    draw.text((x0, label_y), f"{DOSE_FLOOR:.0%}", font=font, fill=(255, 255, 255, 255))
    top = f"{DOSE_TOP:.0%}"
    draw.text((x0 + bar_w - draw.textlength(top, font=font), label_y), top, font=font,
              fill=(255, 255, 255, 255))
    image.alpha_composite(overlay)
