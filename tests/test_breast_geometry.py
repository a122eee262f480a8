"""CropBreast / OrientBreast: NYU parity on real images, robust mode, errors, inversion."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy import ndimage

from monai_mammo.exceptions import MammoConfigError, MammoGeometryError
from monai_mammo.transforms.breast import (
    CropBreast,
    CropBreastD,
    CropBreastd,
    CropBreastDict,
    OrientBreast,
    OrientBreastd,
    chest_wall_side_from_meta,
    find_breast,
    foreground_threshold,
    open_largest_component,
)

NAMES = ("1_L_CC", "1_R_CC")


def mt(value: Any) -> MetaTensor:
    """The transform output as a MetaTensor (metadata is tracked in these tests)."""
    assert isinstance(value, MetaTensor)
    return value


@cache
def _png(path: str) -> np.ndarray:
    pixels = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    assert pixels is not None, path
    return pixels


def real_image(folder: Path, name: str) -> tuple[MetaTensor, dict]:
    """A real NYU sample as a (1, H, W) float32 MetaTensor with its reference entry."""
    reference = json.loads((folder / "reference.json").read_text())[name]
    pixels = _png(str(folder / f"{name}.png"))
    meta = {
        "laterality": reference["side"],
        "view": reference["view"],
        "horizontal_flip": reference["horizontal_flip"],
        "filename_or_obj": str(folder / f"{name}.png"),
    }
    return MetaTensor(torch.from_numpy(pixels.astype(np.float32))[None], meta=meta), reference


def synthetic_breast(
    rng: np.random.Generator,
    shape: tuple[int, int] = (640, 512),
    chest_wall: str = "left",
    background: float = 0.0,
    noise: float = 0.0,
    marker: bool = False,
    frame: bool = False,
) -> np.ndarray:
    """A half-ellipse breast on the chest-wall edge, optionally with noise, a text marker and a frame."""
    height, width = shape
    yy, xx = np.mgrid[:height, :width]
    depth = xx if chest_wall == "left" else width - 1 - xx
    breast = ((yy - height / 2) / (0.35 * height)) ** 2 + (depth / (0.55 * width)) ** 2 <= 1
    img = background + noise * rng.standard_normal(shape)
    img[breast] = 9000 + 800 * rng.standard_normal(int(breast.sum()))
    if marker:  # burned-in text: a bright blob on the nipple side, away from the breast
        x0 = width - 130 if chest_wall == "left" else 40
        img[30:60, x0 : x0 + 90] = 30000
    if frame:  # film-scan edge: a saturated 12-pixel band all around
        img[:12], img[-12:], img[:, :12], img[:, -12:] = 60000, 60000, 60000, 60000
    return np.clip(img, 0, 65535).astype(np.float32)


def as_meta(img: np.ndarray, laterality: str | None = "L", name: str = "synthetic.png") -> MetaTensor:
    meta = {"filename_or_obj": name}
    if laterality is not None:
        meta["laterality"] = laterality
    return MetaTensor(torch.from_numpy(img)[None], meta=meta)


# --- NYU parity on the real sample images -------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_crop_breast_reproduces_nyu_reference(nyu_sample_dir: Path, name: str) -> None:
    img, ref = real_image(nyu_sample_dir, name)
    out = mt(CropBreast()(img))
    assert list(out.meta["window_location"]) == ref["window_location_top_bottom_left_right"]
    assert list(out.shape[1:]) == ref["cropped_shape"]
    (y_first, y_last), x = out.meta["rightmost_points"]
    assert [[y_first, y_last], x] == ref["rightmost_points"]
    y, (x_first, x_last) = out.meta["bottommost_points"]
    assert [y, [x_first, x_last]] == ref["bottommost_points"]
    assert out.meta["distance_from_starting_side"] == ref["distance_from_starting_side"]
    top, bottom, left, right = out.meta["window_location"]
    assert torch.equal(out[0], img[0, top:bottom, left:right])  # raw, unmasked pixels


def test_exact_mirror_matches_crop_of_flipped_image(nyu_sample_dir: Path) -> None:
    """nyu_mirror=False gives the true columns of the flipped crop (NYU's are one pixel further)."""
    img, ref = real_image(nyu_sample_dir, "1_R_CC")
    exact = mt(CropBreast(nyu_mirror=False)(img))
    flipped_first = mt(CropBreast()(OrientBreast()(img)))
    assert flipped_first.meta["flipped_lr"] is True
    for key in ("rightmost_points", "bottommost_points", "distance_from_starting_side"):
        assert flipped_first.meta[key] == exact.meta[key]
    assert exact.meta["rightmost_points"][1] == ref["rightmost_points"][1] - 1
    assert torch.equal(flipped_first, torch.flip(exact, dims=(-1,)))


@pytest.mark.parametrize("name", NAMES)
def test_pixel_orientation_agrees_with_metadata(nyu_sample_dir: Path, name: str) -> None:
    img, ref = real_image(nyu_sample_dir, name)
    expected = "left" if ref["side"] == "L" else "right"
    assert chest_wall_side_from_meta(img.meta) == expected
    assert OrientBreast(side="pixels").chest_wall_side(img) == expected
    assert OrientBreast(side="pixels", foreground="nyu").chest_wall_side(img) == expected
    by_pixels = CropBreast(side="pixels").compute_geometry(img)
    assert by_pixels == CropBreast(side="metadata").compute_geometry(img)
    assert by_pixels.chest_wall == expected


@pytest.mark.parametrize("name", NAMES)
def test_otsu_mode_close_to_nyu_on_zero_background(nyu_sample_dir: Path, name: str) -> None:
    img, ref = real_image(nyu_sample_dir, name)
    robust = CropBreast(mode="otsu").compute_geometry(img)
    assert robust.threshold > 0
    diffs = np.abs(np.subtract(robust.window_location, ref["window_location_top_bottom_left_right"]))
    assert diffs.max() <= 25


# --- morphology -------------------------------------------------------------------------------


def _scipy_reference(mask: np.ndarray, radius: int) -> np.ndarray | None:
    eroded = ndimage.binary_erosion(mask, iterations=radius, border_value=0)
    labels, count = ndimage.label(eroded)
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    if (sizes == sizes.max()).sum() > 1:
        pytest.skip("tie between components")
    return ndimage.binary_dilation(labels == 1 + int(np.argmax(sizes)), iterations=radius)


@pytest.mark.parametrize("seed", range(12))
def test_distance_transform_morphology_equals_iterated_cross(seed: int) -> None:
    rng = np.random.default_rng(seed)
    mask = np.zeros((70, 60), dtype=bool)
    for _ in range(4):  # overlapping rectangles plus speckle
        y, x = rng.integers(0, 55), rng.integers(0, 45)
        mask[y : y + rng.integers(5, 30), x : x + rng.integers(5, 30)] = True
    mask |= rng.random(mask.shape) < 0.05
    radius = int(rng.integers(1, 5))
    expected = _scipy_reference(mask, radius)
    opened = open_largest_component(mask, radius)
    if expected is None:
        assert opened is None
        return
    assert opened is not None
    (y0, x0), region = opened
    got = np.zeros_like(mask)
    got[y0 : y0 + region.shape[0], x0 : x0 + region.shape[1]] = region
    np.testing.assert_array_equal(got, expected)
    rows, cols = np.flatnonzero(got.any(1)), np.flatnonzero(got.any(0))
    assert (rows[0], cols[0], rows[-1] + 1, cols[-1] + 1) == (
        y0,
        x0,
        y0 + region.shape[0],
        x0 + region.shape[1],
    )


# --- robust foreground ------------------------------------------------------------------------


@pytest.mark.parametrize("chest_wall", ["left", "right"])
def test_otsu_mode_handles_noise_marker_and_frame(rng: np.random.Generator, chest_wall: Any) -> None:
    clean = synthetic_breast(rng, chest_wall=chest_wall)
    dirty = synthetic_breast(rng, chest_wall=chest_wall, background=400, noise=60, marker=True, frame=True)
    laterality = "L" if chest_wall == "left" else "R"
    truth = find_breast(clean, chest_wall)
    robust = CropBreast(mode="otsu").compute_geometry(as_meta(dirty, laterality))
    assert 400 < robust.threshold < 9000
    assert np.abs(np.subtract(robust.window_location, truth.window_location)).max() <= 2
    top, bottom, left, right = robust.window_location
    marker_cols = (512 - 130, 512 - 40) if chest_wall == "left" else (40, 130)
    assert top > 60 or right <= marker_cols[0] or left >= marker_cols[1]  # marker not in the crop
    # NYU's rule keeps the noisy background: the crop is the whole image
    assert find_breast(dirty, chest_wall).window_location == (0, 640, 0, 512)
    assert OrientBreast(side="pixels").chest_wall_side(as_meta(dirty, None)) == chest_wall
    assert CropBreast(mode="otsu", side="pixels").compute_geometry(as_meta(dirty, None)) == robust


def test_foreground_threshold_modes(rng: np.random.Generator) -> None:
    img = synthetic_breast(rng, background=400, noise=60)
    assert foreground_threshold(img, "nyu") == 0.0
    assert 400 + 3 * 60 < foreground_threshold(img, "otsu") < 9000 - 3 * 800
    assert foreground_threshold(np.full((10, 10), 7.0), "otsu") == 7.0
    with pytest.raises(MammoConfigError):
        foreground_threshold(img, "bogus")  # type: ignore[arg-type]


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pixels", "problem"),
    [
        (np.zeros((300, 200), np.float32), "no pixel above"),
        (np.ones((1, 1), np.float32), "erosion"),
        (np.pad(np.ones((300, 150), np.float32), ((50, 50), (0, 300))), "erosion"),  # thinner than 201 px
    ],
)
@pytest.mark.parametrize("mode", ["nyu", "otsu"])
def test_no_breast_raises_typed_error_naming_the_image(pixels: np.ndarray, problem: str, mode: Any) -> None:
    with pytest.raises(MammoGeometryError) as info:
        CropBreast(mode=mode)(as_meta(pixels, "L", "case_7/L_CC.png"))
    assert info.value.source == "case_7/L_CC.png"
    assert "no breast found" in str(info.value)
    assert "argmax" not in str(info.value)
    if mode == "nyu":  # in otsu mode a constant image has nothing above its threshold either
        assert problem in str(info.value)


def test_invalid_inputs_and_arguments(rng: np.random.Generator) -> None:
    img = synthetic_breast(rng)
    with pytest.raises(MammoGeometryError, match="laterality"):
        CropBreast(side="metadata")(as_meta(img, None))
    with pytest.raises(MammoGeometryError, match="channel-first"):
        CropBreast()(torch.from_numpy(img))
    with pytest.raises(MammoGeometryError, match="horizontal_flip"):
        chest_wall_side_from_meta({"laterality": "L", "horizontal_flip": "maybe"})
    with pytest.raises(MammoGeometryError, match="blank"):
        OrientBreast(side="pixels")(as_meta(np.zeros((20, 20), np.float32), None))
    centred = np.zeros((20, 20), np.float32)
    centred[5:15, 5:15] = 1.0
    with pytest.raises(MammoGeometryError, match="balanced"):
        OrientBreast(side="pixels")(as_meta(centred, None))
    for bad in ({"mode": "zero"}, {"side": "top"}, {"radius": -1}):
        with pytest.raises(MammoConfigError):
            CropBreast(**bad)  # type: ignore[arg-type]
    with pytest.raises(MammoConfigError):
        OrientBreast(chest_wall="top")  # type: ignore[arg-type]


# --- inversion and dict versions --------------------------------------------------------------


def test_crop_breast_inverse_round_trip(rng: np.random.Generator) -> None:
    img = as_meta(synthetic_breast(rng, chest_wall="right", background=400, noise=60), "R")
    cropper = CropBreast(mode="otsu")
    out = mt(cropper(img))
    top, bottom, left, right = out.meta["window_location"]
    assert torch.equal(out, img[:, top:bottom, left:right])
    assert torch.allclose(out.affine[:2, 3], torch.tensor([float(top), float(left)], dtype=torch.float64))
    back = mt(cropper.inverse(out))
    assert back.shape == img.shape
    assert torch.equal(back[:, top:bottom, left:right], img[:, top:bottom, left:right])
    outside = torch.ones_like(back, dtype=torch.bool)
    outside[:, top:bottom, left:right] = False
    assert not back[outside].any()
    assert torch.equal(back.affine, img.affine)
    assert len(back.applied_operations) == 0


def test_crop_breastd_joint_keys_item_metadata_and_inverse(rng: np.random.Generator) -> None:
    pixels = synthetic_breast(rng, chest_wall="right")
    image = MetaTensor(torch.from_numpy(pixels)[None], meta={"filename_or_obj": "x.png"})
    mask = torch.from_numpy(np.stack([pixels > 0, pixels > 9000]).astype(np.float32))
    data = {"image": image, "mask": mask, "laterality": "R"}  # laterality at item level only
    assert CropBreastD is CropBreastd and CropBreastDict is CropBreastd
    cropper = CropBreastd(["image", "mask"])
    out = cropper(data)
    top, bottom, left, right = out["image"].meta["window_location"]
    assert right == 512 and left > 0  # chest wall on the right: no buffer there, buffer at the nipple side
    assert out["mask"].shape == (2, bottom - top, right - left)
    assert torch.equal(out["mask"].as_tensor(), mask[:, top:bottom, left:right])
    assert out["mask"].meta["window_location"] == (top, bottom, left, right)
    back = cropper.inverse(out)
    assert torch.equal(back["mask"][:, top:bottom, left:right].as_tensor(), mask[:, top:bottom, left:right])
    assert back["image"].shape == image.shape
    with pytest.raises(MammoGeometryError, match="spatial size"):
        cropper({"image": image, "mask": mask[:, :-1], "laterality": "R"})


# --- orientation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("laterality", "horizontal_flip", "chest_wall", "flips"),
    [
        ("L", "NO", "left", False),
        ("R", "NO", "left", True),
        ("L", "YES", "left", True),
        ("R", "YES", "left", False),
        ("L", "NO", "right", True),
        ("RIGHT", "NO", "right", False),
    ],
)
def test_orient_breast_from_metadata(
    laterality: str, horizontal_flip: str, chest_wall: str, flips: bool
) -> None:
    img = MetaTensor(
        torch.arange(12.0).reshape(1, 3, 4),
        meta={"laterality": laterality, "horizontal_flip": horizontal_flip},
    )
    orienter = OrientBreast(chest_wall=chest_wall)  # type: ignore[arg-type]
    out = mt(orienter(img))
    assert out.meta["flipped_lr"] is flips
    expected = torch.flip(img.as_tensor(), dims=(-1,)) if flips else img.as_tensor()
    assert torch.equal(out.as_tensor(), expected)
    assert "flipped_lr" not in img.meta and not img.applied_operations  # the input is not modified
    again = mt(orienter(out))
    assert torch.equal(again.as_tensor(), out.as_tensor())  # already oriented: no second flip
    assert again.meta["flipped_lr"] is flips
    back = mt(orienter.inverse(orienter.inverse(again)))
    assert torch.equal(back.as_tensor(), img.as_tensor())
    assert back.meta["flipped_lr"] is False
    assert torch.equal(back.affine, img.affine)
    assert len(back.applied_operations) == 0


def test_orient_breastd_flips_all_keys_together(rng: np.random.Generator) -> None:
    pixels = synthetic_breast(rng, chest_wall="right", background=400, noise=60)
    heatmaps = torch.from_numpy(rng.random((2, 640, 512)).astype(np.float32))
    data: dict[str, Any] = {"image": as_meta(pixels, None), "heatmaps": heatmaps}
    orienter = OrientBreastd(["image", "heatmaps"], side="pixels")
    out = orienter(data)
    assert out["image"].meta["flipped_lr"] is True and out["heatmaps"].meta["flipped_lr"] is True
    assert torch.equal(out["heatmaps"].as_tensor(), torch.flip(heatmaps, dims=(-1,)))
    back = orienter.inverse(out)
    assert torch.equal(back["heatmaps"].as_tensor(), heatmaps)
    assert torch.equal(back["image"].as_tensor(), data["image"].as_tensor())


def test_orient_breast_uint16_image() -> None:
    img = MetaTensor(
        torch.arange(12, dtype=torch.int32).reshape(1, 3, 4).to(torch.uint16), meta={"laterality": "R"}
    )
    out = mt(OrientBreast()(img))
    assert out.dtype == torch.uint16
    assert out[0, 0].tolist() == [3, 2, 1, 0]
