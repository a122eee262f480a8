"""BestCenterCrop / RandCropNoise: NYU optimal centre parity, padding rules, noise, inversion."""

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
from monai.transforms import Compose

from monai_mammo.exceptions import MammoConfigError, MammoGeometryError
from monai_mammo.transforms.breast import CropBreast, CropBreastd, OrientBreast, OrientBreastd
from monai_mammo.transforms.nyu_window import (
    BestCenterCrop,
    BestCenterCropD,
    BestCenterCropd,
    RandCropNoise,
    RandCropNoised,
    RandCropNoiseDict,
    optimal_center,
    place_window,
    view_kind,
)

NAMES = ("1_L_CC", "1_R_CC")
SMALL_CC = (120, 90)


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
    meta = {"laterality": reference["side"], "view": reference["view"], "filename_or_obj": name}
    pixels = _png(str(folder / f"{name}.png")).astype(np.float32)
    return MetaTensor(torch.from_numpy(pixels)[None], meta=meta), reference


def window_input(
    pixels: np.ndarray, view: str = "CC", rightmost_x: int | None = None, bottommost_y: int | None = None
) -> MetaTensor:
    """A right-facing crop with the metadata CropBreast would have written."""
    height, width = pixels.shape[-2:]
    meta = {
        "view": view,
        "laterality": "R",
        "flipped_lr": True,
        "filename_or_obj": "crop.png",
        "rightmost_points": ((0, 0), width - 11 if rightmost_x is None else rightmost_x),
        "bottommost_points": (height - 1 if bottommost_y is None else bottommost_y, (0, 0)),
    }
    data = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))
    return MetaTensor(data if data.ndim == 3 else data[None], meta=meta)


# --- NYU parity on the real sample images -------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_best_center_reproduces_nyu_reference(nyu_sample_dir: Path, name: str) -> None:
    img, ref = real_image(nyu_sample_dir, name)
    pipeline = Compose([CropBreast(), OrientBreast(), BestCenterCrop()])
    oriented = mt(Compose([CropBreast(), OrientBreast()])(img))
    out = mt(pipeline(img))
    assert list(out.meta["best_center"]) == ref["best_center_y_x"]
    assert out.shape == (1, 2677, 1942)
    height, width = ref["cropped_shape"]
    pad_top = (2677 - height) // 2  # CC: the crop is shorter than the window, padded on both sides
    assert out.meta["input_window"] == (-pad_top, 2677 - pad_top, 0, 1942)
    assert torch.equal(out[0, pad_top : pad_top + height, :width], oriented[0])
    assert not out[0, :pad_top].any() and not out[0, pad_top + height :].any() and not out[0, :, width:].any()
    back = mt(pipeline.inverse(out))
    top, bottom, left, right = ref["window_location_top_bottom_left_right"]
    assert back.shape == img.shape
    assert torch.equal(back[:, top:bottom, left:right], img[:, top:bottom, left:right])
    assert torch.equal(back.affine, img.affine)


def test_dict_pipeline_on_real_image_moves_mask_with_image(nyu_sample_dir: Path) -> None:
    img, ref = real_image(nyu_sample_dir, "1_R_CC")
    mask = (img > 40000).float()
    keys = ["image", "mask"]
    pipeline = Compose([CropBreastd(keys), OrientBreastd(keys), BestCenterCropd(keys)])
    out = pipeline({"image": img, "mask": mask})
    assert list(out["mask"].meta["best_center"]) == ref["best_center_y_x"]
    assert torch.equal(out["mask"].as_tensor(), (out["image"] > 40000).float().as_tensor())
    back = pipeline.inverse(out)
    top, bottom, left, right = ref["window_location_top_bottom_left_right"]
    assert torch.equal(back["mask"][:, top:bottom, left:right], mask[:, top:bottom, left:right])


# --- optimal centre ---------------------------------------------------------------------------


def _brute_force_cc(image: np.ndarray, rightmost_x: int, size: tuple[int, int]) -> tuple[int, int]:
    height, width = image.shape
    win_h, win_w = size
    center_x = rightmost_x - win_w // 2 - 1
    left, right = max(center_x - win_w // 2, 0), max(min(center_x - win_w // 2 + win_w, width), 0)
    best: tuple[int, int] | None = None
    for center_y in range(win_h // 2, height - win_h + win_h // 2 + 1):
        top = center_y - win_h // 2
        count = int((image[top : top + win_h, left:right] > 0).sum())
        key = (-count, abs(center_y - height // 2))
        if best is None or key < best:
            best, chosen = key, center_y
    return chosen, center_x


@pytest.mark.parametrize("seed", range(8))
def test_cc_center_search_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    height, width = int(rng.integers(40, 90)), 40
    image = np.zeros((height, width))
    for _ in range(int(rng.integers(0, 4))):  # tissue blobs; none at all gives a tie everywhere
        y, x = int(rng.integers(0, height)), int(rng.integers(0, width))
        image[y : y + int(rng.integers(1, 15)), x : x + int(rng.integers(1, 15))] = 1
    rightmost_x = int(rng.integers(5, width))
    assert optimal_center(image, "CC", rightmost_x, height - 1, (40, 30)) == _brute_force_cc(
        image, rightmost_x, (40, 30)
    )


def test_cc_center_of_short_image_is_image_centre() -> None:
    image = np.ones((31, 20))
    assert optimal_center(image, "CC", 19, 30, (40, 30)) == (15, 3)


def test_mlo_center() -> None:
    image = np.zeros((200, 120))
    image[:151, :60] = 1  # tissue low on the chest-wall side
    image[:120, 60:] = 1  # within the rightmost 50 columns the tissue ends at row 119
    assert optimal_center(image, "MLO", 110, 150, (80, 50)) == (119 - 40 - 1, 110 - 25 - 1)
    assert optimal_center(image, "MLO", 110, 100, (80, 50)) == (100 - 40 - 1, 84)
    image[:, 60:] = 0  # nothing in the rightmost columns: bottommost_y alone
    assert optimal_center(image, "MLO", 110, 150, (80, 50)) == (150 - 40 - 1, 84)


def test_view_kind() -> None:
    assert view_kind("cc") == "CC" and view_kind("XCCL") == "CC"
    assert view_kind("MLO") == "MLO" and view_kind(" ml ") == "MLO"
    with pytest.raises(MammoGeometryError, match="view"):
        view_kind("AT", "x.png")


# --- padding rules, inversion -----------------------------------------------------------------


def test_padding_rules_cc_both_sides_mlo_bottom_x_right() -> None:
    ones = np.ones((30, 20))
    cc = mt(BestCenterCrop(cc_size=(40, 30))(window_input(ones, "CC", rightmost_x=19)))
    assert cc.meta["input_window"] == (-5, 35, 0, 30)
    assert not cc[0, :5].any() and cc[0, 5:35, :20].all() and not cc[0, 35:].any() and not cc[0, :, 20:].any()
    mlo = mt(BestCenterCrop(mlo_size=(40, 30))(window_input(ones, "MLO", rightmost_x=19, bottommost_y=29)))
    assert mlo.meta["input_window"] == (0, 40, 0, 30)
    assert mlo[0, :30, :20].all() and not mlo[0, 30:].any() and not mlo[0, :, 20:].any()
    assert place_window((30, 20), (8, 0), (40, 30), "MLO") == ((0, 0), 0, (40, 30))


@pytest.mark.parametrize("view", ["CC", "MLO"])
def test_best_center_crop_inverse_round_trip(rng: np.random.Generator, view: str) -> None:
    pixels = rng.random((200, 150)) + 0.5
    img = window_input(pixels, view)
    cropper = BestCenterCrop(cc_size=SMALL_CC, mlo_size=(130, 80))
    out = mt(cropper(img))
    top, bottom, left, right = out.meta["input_window"]
    assert torch.equal(out, img[:, top:bottom, left:right])
    back = mt(cropper.inverse(out))
    assert back.shape == img.shape and torch.equal(back.affine, img.affine)
    assert torch.equal(back[:, top:bottom, left:right], img[:, top:bottom, left:right])
    assert int((back != 0).sum()) == (bottom - top) * (right - left)
    assert not back.applied_operations


def test_best_center_cropd_joint_keys_and_inverse(rng: np.random.Generator) -> None:
    img = window_input(rng.random((200, 150)) + 0.5)
    heatmaps = torch.from_numpy(rng.random((2, 200, 150)).astype(np.float32))
    assert BestCenterCropD is BestCenterCropd
    cropper = BestCenterCropd(["image", "heatmaps"], cc_size=SMALL_CC)
    out = cropper({"image": img, "heatmaps": heatmaps})
    top, bottom, left, right = out["image"].meta["input_window"]
    assert torch.equal(out["heatmaps"].as_tensor(), heatmaps[:, top:bottom, left:right])
    back = cropper.inverse(out)
    assert torch.equal(
        back["heatmaps"][:, top:bottom, left:right].as_tensor(), heatmaps[:, top:bottom, left:right]
    )


def test_best_center_crop_errors() -> None:
    img = window_input(np.ones((60, 50)))
    plain = MetaTensor(torch.ones(1, 60, 50), meta={"view": "CC", "filename_or_obj": "raw.png"})
    with pytest.raises(MammoGeometryError, match="CropBreast") as info:
        BestCenterCrop(cc_size=(40, 30))(plain)
    assert info.value.source == "raw.png"
    facing_left = MetaTensor(img.as_tensor(), meta={**img.meta, "flipped_lr": False})
    with pytest.raises(MammoGeometryError, match="OrientBreast"):
        BestCenterCrop(cc_size=(40, 30))(facing_left)
    with pytest.raises(MammoGeometryError, match="view"):
        BestCenterCrop(view="AT", cc_size=(40, 30))(img)
    with pytest.raises(MammoConfigError):
        BestCenterCrop(cc_size=(0, 30))
    with pytest.raises(MammoConfigError):
        RandCropNoise(max_crop_noise=(-1, 0))


# --- crop noise -------------------------------------------------------------------------------


def _noisy(seed: int, img: MetaTensor, **kwargs) -> MetaTensor:
    return mt(RandCropNoise(cc_size=SMALL_CC, **kwargs).set_random_state(seed)(img))


def test_rand_crop_noise_deterministic_with_seed(rng: np.random.Generator) -> None:
    img = window_input(rng.random((300, 200)))
    first = _noisy(3, img, max_crop_noise=(10, 10), max_crop_size_noise=10)
    again = _noisy(3, img, max_crop_noise=(10, 10), max_crop_size_noise=10)
    assert first.shape == (1, *SMALL_CC) and first.dtype == torch.float32
    assert torch.equal(first, again) and first.meta["input_window"] == again.meta["input_window"]
    windows = {
        _noisy(seed, img, max_crop_noise=(10, 10), max_crop_size_noise=10).meta["input_window"]
        for seed in range(5)
    }
    assert len(windows) > 1


def test_rand_crop_noise_stays_within_noise_bounds(rng: np.random.Generator) -> None:
    img = window_input(rng.random((300, 200)))
    (top0, bottom0, left0, right0) = mt(BestCenterCrop(cc_size=SMALL_CC)(img)).meta["input_window"]
    for seed in range(20):
        top, bottom, left, right = _noisy(seed, img, max_crop_noise=(10, 10), max_crop_size_noise=10).meta[
            "input_window"
        ]
        assert 0 <= top and bottom <= 300 and 0 <= left and right <= 200
        assert abs(top - top0) <= 20 and abs(bottom - bottom0) <= 20
        assert abs(left - left0) <= 10 + 8 and abs(right - right0) <= 10 + 8  # size noise scaled by 90/120


def test_location_noise_sign_forced_at_border() -> None:
    pixels = np.zeros((300, 200))
    pixels[:100] = 1  # tissue at the top: the best window touches the top border
    img = window_input(pixels)
    assert mt(BestCenterCrop(cc_size=SMALL_CC)(img)).meta["input_window"][0] == 0
    tops = [
        _noisy(seed, img, max_crop_noise=(30, 0), max_crop_size_noise=0).meta["input_window"][0]
        for seed in range(8)
    ]
    assert all(top > 0 for top in tops)


def test_zero_noise_equals_best_center_crop(rng: np.random.Generator) -> None:
    img = window_input(rng.random((100, 70)))  # smaller than the window: padded
    expected = mt(BestCenterCrop(cc_size=SMALL_CC)(img))
    got = _noisy(0, img, max_crop_noise=(0, 0), max_crop_size_noise=0)
    assert torch.equal(got.as_tensor(), expected.as_tensor())
    assert got.meta["input_window"] == expected.meta["input_window"]


def test_heatmap_channels_move_with_the_image(rng: np.random.Generator) -> None:
    pixels = rng.random((300, 200)).astype(np.float32)
    img = window_input(np.stack([pixels, 0.5 * pixels, 2 * pixels]))
    out = _noisy(1, img, max_crop_noise=(10, 10), max_crop_size_noise=10)
    assert out.shape == (3, *SMALL_CC)
    torch.testing.assert_close(out[1], 0.5 * out[0])
    torch.testing.assert_close(out[2], 2 * out[0])


def test_rand_crop_noised_joint_keys_seed_and_inverse() -> None:
    pixels = np.add.outer(np.linspace(0, 1, 300), np.sin(np.linspace(0, 3, 200))).astype(np.float32)  # smooth
    data = {"image": window_input(pixels), "heatmaps": torch.from_numpy(np.stack([pixels, pixels]))}
    assert RandCropNoiseDict is RandCropNoised

    def run(seed: int) -> tuple[dict, RandCropNoised]:
        crop = RandCropNoised(
            ["image", "heatmaps"], max_crop_noise=(10, 10), max_crop_size_noise=10, cc_size=SMALL_CC
        )
        return crop.set_random_state(seed)(data), crop

    out, crop = run(5)
    assert torch.equal(out["heatmaps"][0].as_tensor(), out["image"][0].as_tensor())
    assert torch.equal(out["heatmaps"][1].as_tensor(), out["image"][0].as_tensor())
    assert out["heatmaps"].meta["input_window"] == out["image"].meta["input_window"]
    assert torch.equal(run(5)[0]["image"], out["image"])
    back = crop.inverse(out)
    assert back["image"].shape == (1, 300, 200) and back["heatmaps"].shape == (2, 300, 200)
    top, bottom, left, right = out["image"].meta["input_window"]
    inside = back["image"][0, top + 2 : bottom - 2, left + 2 : right - 2]
    torch.testing.assert_close(
        inside, data["image"][0, top + 2 : bottom - 2, left + 2 : right - 2], atol=0.01, rtol=0
    )
