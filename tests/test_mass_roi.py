"""Falconi mass ROI pipeline: output contract, aspect filter, interpolation choice, CLAHE, denoising."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from monai_mammo.exceptions import MammoConfigError, MammoDataError, MammoSkip
from monai_mammo.transforms.roi import (
    CLAHE,
    AspectRatioFilter,
    BoundingBoxROI,
    BoundingBoxROId,
    MinMaxToUint8,
    NLMeansDenoise,
    ResizeAreaCubic,
    ResizeAreaCubicd,
    SkipAwareCompose,
    mass_roi_pipeline,
)


def _mammogram(h: int = 700, w: int = 500, seed: int = 0) -> MetaTensor:
    rng = np.random.default_rng(seed)
    img = rng.normal(20000, 3000, (1, h, w)).astype(np.float32)
    return MetaTensor(torch.from_numpy(img), meta={"filename_or_obj": "/data/Mass-Training_P_00001.dcm"})


def _mask(box: tuple[int, int, int, int], h: int = 700, w: int = 500) -> np.ndarray:
    mask = np.zeros((1, h, w), bool)
    y0, x0, y1, x1 = box
    mask[0, y0:y1, x0:x1] = True
    return mask


def test_pipeline_output_contract():
    out = mass_roi_pipeline(mask_key="mask")({"image": _mammogram(), "mask": _mask((100, 50, 300, 250))})
    img = out["image"]
    assert tuple(img.shape) == (1, 320, 320) and img.dtype == torch.float32
    assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0 and float(img.max()) > 0.5
    assert img.meta["roi_box"] == [100, 50, 300, 250]
    assert img.meta["aspect_ratio"] == pytest.approx(1.0)
    assert img.meta["filename_or_obj"] == "/data/Mass-Training_P_00001.dcm"


def test_pipeline_uint8_option_and_findings_bbox():
    data = {"image": _mammogram(), "findings": [{"type": "mass", "mask": None, "bbox": [0, 0, 600, 450]}]}
    img = mass_roi_pipeline(output_uint8=True)(data)["image"]
    assert tuple(img.shape) == (1, 320, 320) and img.dtype == torch.uint8
    assert img.meta["interpolation"] == "area"
    assert int(img.max()) > 128


@pytest.mark.parametrize(("box", "ratio"), [((0, 0, 500, 100), 0.2), ((0, 0, 100, 200), 2.0)])
def test_aspect_ratio_outside_range_is_skipped(box, ratio):
    with pytest.raises(MammoSkip) as info:
        mass_roi_pipeline(mask_key="mask")({"image": _mammogram(), "mask": _mask(box)})
    assert info.value.reason == "aspect_ratio"
    assert info.value.source == "/data/Mass-Training_P_00001.dcm"
    assert f"{ratio:.3f}" in str(info.value)


def test_aspect_ratio_bounds_are_inclusive():
    for h, w in ((100, 40), (100, 150)):
        out = AspectRatioFilter(0.4, 1.5)(MetaTensor(torch.zeros(1, h, w)))
        assert out.meta["aspect_ratio"] == pytest.approx(w / h)
    with pytest.raises(MammoConfigError):
        AspectRatioFilter(1.5, 0.4)


@pytest.mark.parametrize(("size", "expected"), [((60, 50), "cubic"), ((400, 500), "area")])
def test_interpolation_cubic_when_upsampling_area_when_downsampling(size, expected):
    rng = np.random.default_rng(1)
    roi = rng.integers(0, 256, (1, *size), dtype=np.uint8)
    out = ResizeAreaCubic(328)(MetaTensor(torch.from_numpy(roi)))
    assert out.meta["interpolation"] == expected
    flag = cv2.INTER_CUBIC if expected == "cubic" else cv2.INTER_AREA
    np.testing.assert_array_equal(out.numpy()[0], cv2.resize(roi[0], (328, 328), interpolation=flag))
    # the affine scales pixel spacing like MONAI's Resize
    assert float(out.affine[0, 0]) == pytest.approx(size[0] / 328)
    plain = ResizeAreaCubicd("image", 328)({"image": roi})["image"]
    assert tuple(plain.shape) == (1, 328, 328)


def test_pipeline_exercises_both_interpolations():
    small = mass_roi_pipeline(mask_key="mask")({"image": _mammogram(), "mask": _mask((10, 10, 110, 110))})
    large = mass_roi_pipeline(mask_key="mask")({"image": _mammogram(), "mask": _mask((0, 0, 600, 480))})
    assert small["image"].meta["interpolation"] == "cubic"
    assert large["image"].meta["interpolation"] == "area"


def _local_std(img: np.ndarray, tile: int = 16) -> float:
    h, w = img.shape
    blocks = img[: h // tile * tile, : w // tile * tile].reshape(h // tile, tile, w // tile, tile)
    return float(blocks.std(axis=(1, 3)).mean())


def test_clahe_increases_local_contrast():
    yy, xx = np.mgrid[0:256, 0:256]
    low = (120 + 6 * np.sin(xx / 3.0) * np.cos(yy / 5.0) + 30 * (xx > 128)).astype(np.uint8)[None]
    out = CLAHE(clip_limit=2.0, tile_grid_size=(8, 8))(low)
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == low.shape
    assert _local_std(out[0].astype(float)) > 1.5 * _local_std(low[0].astype(float))
    meta_in = MetaTensor(torch.from_numpy(low), meta={"filename_or_obj": "x.dcm"})
    meta_out = CLAHE()(meta_in)
    assert isinstance(meta_out, MetaTensor) and meta_out.meta["filename_or_obj"] == "x.dcm"
    with pytest.raises(MammoDataError):
        CLAHE()(low.astype(np.float32))


def test_nl_means_reduces_noise_on_a_flat_roi():
    rng = np.random.default_rng(2)
    noisy = np.clip(128 + rng.normal(0, 12, (1, 96, 96)), 0, 255).astype(np.uint8)
    out = NLMeansDenoise(h=15)(noisy)
    assert out.dtype == np.uint8
    assert out.std() < 0.5 * noisy.std()
    assert abs(float(out.mean()) - float(noisy.mean())) < 2
    with pytest.raises(MammoDataError):
        NLMeansDenoise()(noisy.astype(np.float32))


def test_min_max_to_uint8():
    out = MinMaxToUint8()(MetaTensor(torch.tensor([[[10.0, 15.0, 20.0]]]), meta={"filename_or_obj": "a"}))
    assert out.dtype == torch.uint8 and out.tolist() == [[[0, 128, 255]]]
    assert out.meta["filename_or_obj"] == "a"
    assert MinMaxToUint8()(np.full((1, 4, 4), 7.0)).sum() == 0


def test_bounding_box_roi_crop_and_inverse():
    img = _mammogram(80, 60)
    crop = BoundingBoxROI()
    roi = crop(img, _mask((10, 20, 30, 50), 80, 60))
    assert tuple(roi.shape) == (1, 20, 30) and roi.meta["roi_box"] == [10, 20, 30, 50]
    back = crop.inverse(roi)
    assert tuple(back.shape) == (1, 80, 60)
    torch.testing.assert_close(back.as_tensor()[:, 10:30, 20:50], img.as_tensor()[:, 10:30, 20:50])
    with pytest.raises(MammoSkip) as info:
        crop(img, np.zeros((1, 80, 60), bool))
    assert info.value.reason == "empty_mask"
    with pytest.raises(MammoDataError):
        crop(img, np.ones((1, 40, 60), bool))
    d = BoundingBoxROId(["image", "mask"], mask_key="mask")(
        {"image": img, "mask": _mask((5, 5, 15, 25), 80, 60)}
    )
    assert tuple(d["image"].shape) == tuple(d["mask"].shape) == (1, 10, 20)


def test_skip_aware_compose_reraises_project_errors_only():
    def explode(_):
        raise ValueError("not ours")

    with pytest.raises(MammoSkip):
        SkipAwareCompose([AspectRatioFilter()], log_stats=False)(np.zeros((1, 100, 10)))
    with pytest.raises(RuntimeError):
        SkipAwareCompose([explode], log_stats=False)(np.zeros((1, 4, 4)))
    with pytest.raises(RuntimeError):  # plain MONAI Compose wraps the skip
        Compose([AspectRatioFilter()], log_stats=False)(np.zeros((1, 100, 10)))
