"""Mračko lesion-centred crops: border shifts, padding of small images, skips, inversion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from monai.data import MetaTensor

from monai_mammo.exceptions import MammoConfigError, MammoDataError, MammoGeometryError, MammoSkip
from monai_mammo.transforms.patches import LesionCenteredCrop, LesionCenteredCropD, LesionCenteredCropd

H, W, PS = 1200, 900, 674


def _image(h: int = H, w: int = W) -> MetaTensor:
    values = torch.arange(1, h * w + 1, dtype=torch.float32).reshape(1, h, w)
    return MetaTensor(values, meta={"filename_or_obj": "/data/omi_0001.dcm"})


def _check_inside(patch: MetaTensor, img: MetaTensor, lesion: list[int]) -> tuple[int, int, int, int]:
    y0, x0, y1, x1 = patch.meta["patch_box"]
    assert (y1 - y0, x1 - x0) == (PS, PS) and tuple(patch.shape) == (1, PS, PS)
    assert 0 <= y0 and 0 <= x0 and y1 <= img.shape[1] and x1 <= img.shape[2], "patch leaves the image"
    assert y0 <= lesion[0] and x0 <= lesion[1] and lesion[2] <= y1 and lesion[3] <= x1, (
        "lesion outside the patch"
    )
    torch.testing.assert_close(patch.as_tensor(), img.as_tensor()[:, y0:y1, x0:x1])
    return y0, x0, y1, x1


# lesion boxes touching each border and each corner (all 60 x 40 px)
BORDER_CASES = {
    "top": [0, 430, 60, 470],
    "bottom": [H - 60, 430, H, 470],
    "left": [570, 0, 630, 40],
    "right": [570, W - 40, 630, W],
    "top-left": [0, 0, 60, 40],
    "top-right": [5, W - 45, 65, W - 5],
    "bottom-left": [H - 62, 3, H - 2, 43],
    "bottom-right": [H - 60, W - 40, H, W],
}


@pytest.mark.parametrize("where", sorted(BORDER_CASES))
def test_patch_shifted_inwards_at_borders_and_corners(where):
    img = _image()
    lesion = BORDER_CASES[where]
    patch = LesionCenteredCrop(PS)(img, bbox=lesion)
    assert isinstance(patch, MetaTensor)
    y0, x0, y1, x1 = _check_inside(patch, img, lesion)
    if "top" in where:
        assert y0 == 0
    if "bottom" in where:
        assert y1 == H
    if "left" in where:
        assert x0 == 0
    if "right" in where:
        assert x1 == W
    assert len(patch.applied_operations) == 1  # a crop, never a pad


def test_centre_case_is_centred_on_the_bbox():
    img = _image()
    patch = LesionCenteredCrop(PS)(img, bbox=[560, 420, 640, 480])
    y0, x0, y1, x1 = _check_inside(patch, img, [560, 420, 640, 480])
    assert ((y0 + y1) / 2, (x0 + x1) / 2) == (600, 450)


def test_mask_centroid_is_used_without_a_bbox():
    img = _image()
    mask = np.zeros((1, H, W), bool)
    mask[0, 500:520, 400:440] = True
    mask[0, 520:700, 400:402] = True  # a tail pulls the centroid off the box centre
    patch = LesionCenteredCrop(PS)(img, mask=mask)
    y0, x0, y1, x1 = _check_inside(patch, img, [500, 400, 700, 440])
    ys, xs = np.nonzero(mask[0])
    assert abs((y0 + y1) / 2 - (ys.mean() + 0.5)) <= 1 and abs((x0 + x1) / 2 - (xs.mean() + 0.5)) <= 1


def test_image_smaller_than_the_patch_is_zero_padded_and_recorded():
    img = _image(500, 900)  # shorter than 674: pad 87 rows above and below
    patch = LesionCenteredCrop(PS)(img, bbox=[100, 700, 140, 760])
    assert tuple(patch.shape) == (1, PS, PS)
    y0, x0, y1, x1 = patch.meta["patch_box"]
    assert (y0, y1) == (-87, 587) and x0 <= 700 and 760 <= x1 <= 900
    assert torch.all(patch[:, :87] == 0) and torch.all(patch[:, -87:] == 0)
    torch.testing.assert_close(patch.as_tensor()[:, 87:587], img.as_tensor()[:, :, x0:x1])
    ops = [op["extra_info"] for op in patch.applied_operations]
    assert "cropped" in ops[0] and tuple(ops[1]["padded"][1]) == (87, 87)


@pytest.mark.parametrize("bbox", [[100, 100, 800, 140], [100, 100, 140, 800]])
def test_finding_larger_than_the_patch_is_skipped(bbox):
    with pytest.raises(MammoSkip) as info:
        LesionCenteredCrop(PS)(_image(), bbox=bbox)
    assert info.value.reason == "finding_too_large"
    assert info.value.source == "/data/omi_0001.dcm"


def test_errors():
    img = _image()
    with pytest.raises(MammoSkip) as info:
        LesionCenteredCrop(PS)(img, mask=np.zeros((1, H, W), bool))
    assert info.value.reason == "empty_mask"
    with pytest.raises(MammoDataError):
        LesionCenteredCrop(PS)(img)
    with pytest.raises(MammoGeometryError):
        LesionCenteredCrop(PS)(img, bbox=[1100, 800, 1300, 1000])
    with pytest.raises(MammoConfigError):
        LesionCenteredCrop(0)


@pytest.mark.parametrize("size", [(1200, 900), (500, 900), (400, 300)])
def test_inverse_pads_back_to_the_source(size):
    img = _image(*size)
    crop = LesionCenteredCrop(PS)
    patch = crop(img, bbox=[150, 100, 190, 140])
    restored = crop.inverse(patch)
    assert tuple(restored.shape) == (1, *size)
    assert restored.applied_operations == []
    y0, x0, y1, x1 = patch.meta["patch_box"]
    inside = (slice(None), slice(max(y0, 0), min(y1, size[0])), slice(max(x0, 0), min(x1, size[1])))
    torch.testing.assert_close(restored.as_tensor()[inside], img.as_tensor()[inside])
    assert float(restored.sum()) == pytest.approx(float(img.as_tensor()[inside].sum()))


def test_dict_version_moves_findings_into_the_patch_and_inverts():
    img = _image()
    mask = np.zeros((1, H, W), bool)
    mask[0, 1150:1190, 850:890] = True
    data = {
        "image": img,
        "mask": torch.from_numpy(mask.astype(np.float32)),
        "findings": [
            {"type": "calcification", "mask": mask, "bbox": None},
            {"type": "calcification", "mask": None, "bbox": [10, 10, 30, 30]},
        ],
    }
    crop = LesionCenteredCropd(keys=["image", "mask"], spatial_size=PS)
    out = crop(data)
    assert out["patch_box"] == [H - PS, W - PS, H, W]
    assert out["image"].meta["patch_box"] == out["patch_box"]
    assert float(out["mask"].sum()) == mask.sum() == out["findings"][0]["mask"].sum()
    assert out["findings"][0]["mask"].shape == (1, PS, PS)
    assert out["findings"][1]["bbox"] == [0, 0, 0, 0]  # outside the patch: clipped to an empty box
    back = crop.inverse(out)
    assert tuple(back["image"].shape) == (1, H, W)
    assert LesionCenteredCropD is LesionCenteredCropd
    with pytest.raises(MammoDataError):
        LesionCenteredCropd(keys="image", finding_index=3)(data)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    h=st.integers(200, 1500),
    w=st.integers(200, 1500),
    fy=st.floats(0, 1),
    fx=st.floats(0, 1),
    lh=st.integers(1, 300),
    lw=st.integers(1, 300),
    size=st.integers(16, 700),
)
def test_property_patch_in_image_lesion_in_patch(h, w, fy, fx, lh, lw, size):
    lh, lw = min(lh, h, size), min(lw, w, size)
    y0, x0 = int(fy * (h - lh)), int(fx * (w - lw))
    bbox = [y0, x0, y0 + lh, x0 + lw]
    crop = LesionCenteredCrop(size)
    py0, px0, py1, px1 = crop.compute_patch_box((h, w), bbox=bbox)
    assert (py1 - py0, px1 - px0) == (size, size)
    assert py0 <= bbox[0] and px0 <= bbox[1] and bbox[2] <= py1 and bbox[3] <= px1
    # inside the image wherever the image is large enough; centred padding otherwise
    if h >= size:
        assert 0 <= py0 and py1 <= h
    else:
        assert py0 == -((size - h) // 2)
    if w >= size:
        assert 0 <= px0 and px1 <= w
    else:
        assert px0 == -((size - w) // 2)
