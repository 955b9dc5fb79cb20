"""An analytic thorax phantom: every organ is an ellipse in each axial plane.

Being analytic, one CT slice, one contour or one dose plane can be computed on its
own, which is what lets the archive regenerate a single instance on demand.
Coordinates are DICOM patient coordinates in mm (HFS: +x left, +y posterior, +z head).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

AIR_HU = -1000


@dataclass(frozen=True)
class Organ:
    """An ellipsoid (or, with ``az`` = inf, an elliptic cylinder) with a CT number."""

    name: str
    interpreted_type: str  # RTROIInterpretedType
    colour: tuple[int, int, int]
    hu: int | None  # None: a contour-only structure (e.g. the PTV margin)
    cx: float
    cy: float
    cz: float
    ax: float
    ay: float
    az: float

    def section(self, z: float) -> tuple[float, float, float, float] | None:
        """The (cx, cy, a, b) of the axial cross-section at ``z``, or None."""
        if math.isinf(self.az):
            return self.cx, self.cy, self.ax, self.ay
        t = (z - self.cz) / self.az
        if abs(t) >= 1.0:
            return None
        s = math.sqrt(1.0 - t * t)
        if s * min(self.ax, self.ay) < 1.0:  # under a millimetre: nobody contours that
            return None
        return self.cx, self.cy, self.ax * s, self.ay * s


@dataclass(frozen=True)
class Anatomy:
    """One patient's body: organs in painting order (later ones overwrite)."""

    organs: tuple[Organ, ...]
    target: Organ  # the PTV: where the dose peaks

    def organ(self, name: str) -> Organ:
        return next(o for o in self.organs if o.name == name)


def make_anatomy(rng: random.Random, z_half: float) -> Anatomy:
    """A thorax scaled and shifted per patient, with a tumour in one lung."""
    bx = rng.uniform(150.0, 185.0)
    by = rng.uniform(100.0, 125.0)
    inf = math.inf
    lung_az = 0.8 * z_half
    side = rng.choice((-1.0, 1.0))
    lung_cx = side * 0.5 * bx
    gtv_r = rng.uniform(12.0, 22.0)
    gtv_cz = rng.uniform(-0.3, 0.3) * lung_az
    gtv_cx = lung_cx + rng.uniform(-0.05, 0.05) * bx
    gtv_cy = rng.uniform(-0.25, 0.1) * by
    margin = 7.0
    organs = (
        Organ("BODY", "EXTERNAL", (0, 255, 0), 40, 0.0, 0.0, 0.0, bx, by, inf),
        # Lungs span |x| in [0.25, 0.75] bx, the heart [-0.13, 0.23] bx: no organ
        # overlaps another, so each contour holds only its own tissue.
        Organ("Lung_R", "ORGAN", (0, 128, 255), -820, -0.5 * bx, -0.05 * by, 0.0,
              0.25 * bx, 0.6 * by, lung_az),
        Organ("Lung_L", "ORGAN", (0, 200, 255), -820, 0.5 * bx, -0.05 * by, 0.0,
              0.25 * bx, 0.6 * by, lung_az),
        Organ("Heart", "ORGAN", (255, 0, 128), 45, 0.05 * bx, -0.3 * by, -0.3 * lung_az,
              0.18 * bx, 0.3 * by, 0.45 * lung_az),
        Organ("Vertebra", "ORGAN", (200, 120, 255), 650, 0.0, 0.72 * by, 0.0, 18.0, 16.0, inf),
        Organ("SpinalCord", "ORGAN", (255, 255, 0), 30, 0.0, 0.72 * by, 0.0, 7.0, 7.0, inf),
        Organ("GTV", "GTV", (255, 0, 0), 25, gtv_cx, gtv_cy, gtv_cz, gtv_r, gtv_r, gtv_r),
        Organ("PTV", "PTV", (255, 128, 0), None, gtv_cx, gtv_cy, gtv_cz,
              gtv_r + margin, gtv_r + margin, gtv_r + margin),
    )
    return Anatomy(organs=organs, target=organs[-1])


def ellipse_mask(
    xs: npt.NDArray[np.float64], ys: npt.NDArray[np.float64],
    section: tuple[float, float, float, float],
) -> npt.NDArray[np.bool_]:
    """Pixels (column centres ``xs``, row centres ``ys``) inside an ellipse."""
    cx, cy, a, b = section
    dx = ((xs - cx) / a) ** 2
    dy = ((ys - cy) / b) ** 2
    return dy[:, None] + dx[None, :] <= 1.0


def hu_slice(anatomy: Anatomy, xs: npt.NDArray[np.float64], ys: npt.NDArray[np.float64],
             z: float) -> npt.NDArray[np.int16]:
    """The noiseless CT numbers of one axial plane."""
    img = np.full((ys.size, xs.size), AIR_HU, dtype=np.int16)
    for organ in anatomy.organs:
        if organ.hu is None:
            continue
        section = organ.section(z)
        if section is not None:
            img[ellipse_mask(xs, ys, section)] = organ.hu
    return img


def contour_xy(section: tuple[float, float, float, float],
               points: int = 48) -> list[tuple[float, float]]:
    """The vertices of a closed planar polygon on the ellipse."""
    cx, cy, a, b = section
    return [(cx + a * math.cos(2.0 * math.pi * i / points),
             cy + b * math.sin(2.0 * math.pi * i / points)) for i in range(points)]


def relative_dose(anatomy: Anatomy, xs: npt.NDArray[np.float64],
                  ys: npt.NDArray[np.float64], z: float) -> npt.NDArray[np.float64]:
    """Dose relative to prescription on one plane: ~1.0 in the PTV, falling off outside.

    A smooth function of the distance to the PTV surface, inside the body only,
    plus a low bath along the beams' path: plausible, not physics.
    """
    ptv = anatomy.target
    body = anatomy.organs[0]
    dx = xs[None, :] - ptv.cx
    dy = ys[:, None] - ptv.cy
    radius = np.sqrt(dx * dx + dy * dy + (z - ptv.cz) ** 2)
    outside = np.maximum(radius - ptv.ax, 0.0)
    # 103 % at the centre, 100 % on the PTV surface, then a steep fall-off into a
    # low bath; continuous at the surface.
    core = 1.0 + 0.03 * (1.0 - np.minimum(radius / ptv.ax, 1.0) ** 2)
    fall = 0.9 * np.exp(-((outside / 12.0) ** 2)) + 0.1 * np.exp(-outside / 60.0)
    dose = np.where(outside > 0.0, fall, core)
    section = body.section(z)
    inside = (np.zeros(dose.shape, dtype=bool) if section is None
              else ellipse_mask(xs, ys, section))
    return np.where(inside, dose, 0.0)
