"""render_preview draws the CT slice, the contours and the dose where the files put them."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from PIL import Image

from emulators.preview import render_preview
from emulators.synthetic import PatientRecipe, Profile, SyntheticConfig, make_recipe

PTV_COLOUR = (255, 128, 0)


def _recipe(index: int = 0, *, slices: int = 8, rows: int = 64, columns: int = 64,
            profile: Profile = Profile.CLEAN) -> PatientRecipe:
    return make_recipe(SyntheticConfig(seed=21, profile=profile, slices=slices, rows=rows,
                                       columns=columns), index)


def _to_display(recipe: PatientRecipe, x: float, y: float, scale: int) -> tuple[int, int]:
    g = recipe.cts[0].geometry
    return (round(((x - g.origin_x) / g.spacing + 0.5) * scale - 0.5),
            round(((y - g.origin_y) / g.spacing + 0.5) * scale - 0.5))


def _is_grey(pixel: tuple[int, ...]) -> bool:
    return pixel[0] == pixel[1] == pixel[2]


def _nearest_slice(recipe: PatientRecipe) -> int:
    g = recipe.cts[0].geometry
    return min(range(g.slices), key=lambda k: abs(g.z(k) - recipe.anatomy.target.cz))


@pytest.mark.parametrize(("rows", "columns", "size"), [
    (64, 64, (512, 512)),
    (48, 100, (600, 288)),  # upscaled by ceil(512 / 100) = 6
    (600, 520, (520, 600)),  # already wide enough: not scaled
])
def test_size(tmp_path: Path, rows: int, columns: int, size: tuple[int, int]) -> None:
    out = render_preview(_recipe(slices=4, rows=rows, columns=columns), tmp_path / "p.png")
    assert out == tmp_path / "p.png"
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.size == size


def test_dose_and_ptv_contour_are_coloured_on_the_ptv(tmp_path: Path) -> None:
    recipe = _recipe()
    with Image.open(render_preview(recipe, tmp_path / "p.png")) as opened:
        image = opened.convert("RGB")
    scale = 512 // 64
    ptv = recipe.anatomy.target
    k = _nearest_slice(recipe)
    z = recipe.cts[0].geometry.z(k)
    section = ptv.section(z)
    assert section is not None
    cx, cy, a, _ = section

    # The dose wash at the PTV centre is hot: red dominates.
    r, g, b = image.getpixel(_to_display(recipe, cx, cy, scale))  # type: ignore[misc]
    assert r > 150 and r > g + 60 and r > b + 60

    # The PTV contour crosses the lateral edge of the section in its display colour.
    ex, ey = _to_display(recipe, cx + a, cy, scale)
    near = [image.getpixel((ex + dx, ey + dy)) for dx in range(-3, 4) for dy in range(-3, 4)]
    assert PTV_COLOUR in near

    # Air well outside the body (and away from the legend) stays plain grey.
    g_ = recipe.cts[0].geometry
    air = image.getpixel(_to_display(recipe, g_.origin_x + (g_.columns - 3) * g_.spacing,
                                     0.0, scale))
    assert isinstance(air, tuple) and _is_grey(air)


def test_dose_wash_is_centred_on_the_ptv(tmp_path: Path) -> None:
    recipe = _recipe(3, slices=40, rows=128, columns=128)
    with Image.open(render_preview(recipe, tmp_path / "p.png")) as opened:
        image = opened.convert("RGB")
    scale = math.ceil(512 / 128)
    ptv = recipe.anatomy.target
    cx, cy = _to_display(recipe, ptv.cx, ptv.cy, scale)
    # Reddish (high dose) pixels, excluding the contour and legend colours by position.
    hot = [(x, y) for x in range(0, image.width, 2) for y in range(60, image.height - 80, 2)
           if _hot(image.getpixel((x, y)))]
    assert hot
    mx = sum(x for x, _ in hot) / len(hot)
    my = sum(y for _, y in hot) / len(hot)
    assert abs(mx - cx) < 3 * scale and abs(my - cy) < 3 * scale


def _hot(pixel: object) -> bool:
    assert isinstance(pixel, tuple)
    r, g, b = pixel[:3]
    return bool(r > 150 and g < 90 and b < 90)


def test_default_slice_is_the_one_through_the_ptv_centre(tmp_path: Path) -> None:
    recipe = _recipe(slices=16)
    default = render_preview(recipe, tmp_path / "default.png").read_bytes()
    explicit = render_preview(recipe, tmp_path / "k.png", _nearest_slice(recipe)).read_bytes()
    other = render_preview(recipe, tmp_path / "o.png", 0).read_bytes()
    assert default == explicit != other


def test_slice_far_from_the_ptv_has_no_hot_dose(tmp_path: Path) -> None:
    recipe = _recipe(slices=120, rows=64, columns=64)
    with Image.open(render_preview(recipe, tmp_path / "p.png", 0)) as opened:
        image = opened.convert("RGB")
    assert not any(_hot(image.getpixel((x, y)))
                   for x in range(0, image.width, 4) for y in range(60, image.height - 80, 4))


def test_messy_patients_render(tmp_path: Path) -> None:
    for index in range(5):  # every mess kind, including a second CT study
        out = render_preview(_recipe(index, slices=4, profile=Profile.MESSY),
                             tmp_path / f"{index}.png")
        assert out.stat().st_size > 0


def test_out_of_range_slice(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="outside"):
        render_preview(_recipe(), tmp_path / "p.png", 8)
    with pytest.raises(ValueError, match="outside"):
        render_preview(_recipe(), tmp_path / "p.png", -1)
