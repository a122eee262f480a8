"""Property tests of the geometric transforms on small generated images (hypothesis, deterministic)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from monai.data import MetaTensor

from monai_mammo.data.schema import PatchClass
from monai_mammo.exceptions import MammoDataError, MammoSkip
from monai_mammo.transforms.breast import CropBreast, OrientBreast
from monai_mammo.transforms.channels import StackHeatmaps
from monai_mammo.transforms.patches import LesionCenteredCrop, SamplePatches

PROPS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

SIZES = st.integers(48, 128)
FINDING_CLASSES = st.sampled_from([int(c) for c in PatchClass if c != PatchClass.BACKGROUND])


@st.composite
def breast_images(draw: st.DrawFn) -> MetaTensor:
    """A (1, H, W) image: noisy textured breast block against one side, zero background."""
    h, w = draw(SIZES), draw(SIZES)
    top = draw(st.integers(0, h // 4))
    bottom = draw(st.integers(3 * h // 4, h))
    width = draw(st.integers(w // 3, w - 4))
    right_side = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    img = np.zeros((1, h, w), np.float32)
    block = np.random.default_rng(seed).uniform(100.0, 4000.0, (bottom - top, width)).astype(np.float32)
    if right_side:
        img[0, top:bottom, w - width :] = block
    else:
        img[0, top:bottom, :width] = block
    return MetaTensor(torch.from_numpy(img), meta={"laterality": "R" if right_side else "L"})


@PROPS
@given(img=breast_images(), buffer=st.integers(0, 8))
def test_crop_breast_inverse_restores_shape_and_crop(img: MetaTensor, buffer: int) -> None:
    crop = CropBreast(side="pixels", radius=2, buffer=buffer)
    out = crop(img.clone())
    top, bottom, left, right = out.meta["window_location"]
    assert 0 <= top < bottom <= img.shape[1] and 0 <= left < right <= img.shape[2]
    assert tuple(out.shape) == (1, bottom - top, right - left)
    torch.testing.assert_close(out.as_tensor(), img.as_tensor()[:, top:bottom, left:right])
    assert (img.as_tensor()[:, top:bottom, left:right] > 0).any()
    restored = crop.inverse(out)
    assert tuple(restored.shape) == tuple(img.shape)
    torch.testing.assert_close(restored.as_tensor()[:, top:bottom, left:right], out.as_tensor())


@PROPS
@given(
    img=breast_images(),
    chest_wall=st.sampled_from(["left", "right"]),
    side=st.sampled_from(["metadata", "pixels"]),
)
def test_orient_breast_inverse_is_identity(img: MetaTensor, chest_wall: str, side: str) -> None:
    orient = OrientBreast(chest_wall=chest_wall, side=side)  # type: ignore[arg-type]
    out = orient(img.clone())
    original = img.as_tensor()
    flipped = bool(out.meta["flipped_lr"])
    expected = torch.flip(original, dims=[-1]) if flipped else original
    torch.testing.assert_close(out.as_tensor(), expected)
    foreground_cols = (out.as_tensor()[0] > 0).any(0).nonzero()
    touches = 0 if chest_wall == "left" else out.shape[-1] - 1
    assert touches in foreground_cols.flatten().tolist()  # the breast sits against the chest-wall side
    torch.testing.assert_close(orient.inverse(out).as_tensor(), original)


@st.composite
def findings(draw: st.DrawFn) -> tuple[np.ndarray, list[np.ndarray], list[int]]:
    """A 96 x 80 all-breast image with 1-2 rectangular findings of known classes."""
    h, w = 96, 80
    img = np.random.default_rng(draw(st.integers(0, 999))).uniform(1.0, 2.0, (1, h, w)).astype(np.float32)
    masks, classes = [], []
    for _ in range(draw(st.integers(1, 2))):
        y0, x0 = draw(st.integers(10, h - 30)), draw(st.integers(10, w - 30))
        mask = np.zeros((1, h, w), np.uint8)
        mask[0, y0 : y0 + draw(st.integers(6, 16)), x0 : x0 + draw(st.integers(6, 16))] = 1
        masks.append(mask)
        classes.append(draw(FINDING_CLASSES))
    return img, masks, classes


@PROPS
@given(case=findings(), patch_size=st.sampled_from([8, 16]), seed=st.integers(0, 99))
def test_sample_patches_shapes_and_labels(case, patch_size: int, seed: int) -> None:
    img, masks, classes = case
    sampler = SamplePatches(patch_size=patch_size, patch_set="S10", n_roi=3, n_background=2)
    sampler.set_random_state(seed=seed)
    samples = sampler(img, masks=masks, classes=classes, source="prop")
    assert samples
    for sample in samples:
        assert tuple(sample["image"].shape) == (1, patch_size, patch_size)
        index = int(sample["finding_index"])
        expected = int(PatchClass.BACKGROUND) if index < 0 else classes[index]
        assert int(sample["label"]) == expected
        y0, x0, y1, x1 = (int(v) for v in sample["patch_box"])
        assert (y1 - y0, x1 - x0) == (patch_size, patch_size)
        if index >= 0:
            cy, cx = (int(v) for v in sample["patch_center"])
            assert masks[index][0, cy, cx] == 1  # S10 centres are drawn inside the ROI box (a rectangle here)
        else:
            assert not any(m[0, max(y0, 0) : y1, max(x0, 0) : x1].any() for m in masks)
    assert {int(s["label"]) for s in samples if int(s["finding_index"]) >= 0} <= set(classes)


@PROPS
@given(
    h=SIZES,
    w=SIZES,
    size=st.tuples(st.integers(8, 64), st.integers(8, 64)),
    data=st.data(),
)
def test_lesion_centered_crop_keeps_lesion_and_exact_size(h: int, w: int, size, data: st.DataObject) -> None:
    ph, pw = size
    y0 = data.draw(st.integers(0, h - 1))
    x0 = data.draw(st.integers(0, w - 1))
    y1 = data.draw(st.integers(y0 + 1, min(h, y0 + 70)))
    x1 = data.draw(st.integers(x0 + 1, min(w, x0 + 70)))
    img = MetaTensor(torch.arange(h * w, dtype=torch.float32).reshape(1, h, w))
    crop = LesionCenteredCrop((ph, pw))
    try:
        out = crop(img, bbox=[y0, x0, y1, x1])
    except MammoSkip as skip:
        assert skip.reason == "finding_too_large" and (y1 - y0 > ph or x1 - x0 > pw)
        return
    assert tuple(out.shape) == (1, ph, pw)
    by0, bx0, by1, bx1 = out.meta["patch_box"]
    assert (by1 - by0, bx1 - bx0) == (ph, pw)
    assert by0 <= y0 and y1 <= by1 and bx0 <= x0 and x1 <= bx1  # the lesion is inside the patch
    if h >= ph:
        assert 0 <= by0 and by1 <= h  # no padding where the image is large enough
    if w >= pw:
        assert 0 <= bx0 and bx1 <= w
    inside = out.as_tensor()[0, y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0]
    torch.testing.assert_close(inside, img.as_tensor()[0, y0:y1, x0:x1])
    restored = crop.inverse(out)
    assert tuple(restored.shape) == (1, h, w)


@PROPS
@given(h=SIZES, w=SIZES, as_numpy=st.booleans(), seed=st.integers(0, 999))
def test_stack_heatmaps_channel_count(h: int, w: int, as_numpy: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    image = rng.uniform(0, 1, (1, h, w)).astype(np.float32)
    benign, malignant = rng.uniform(0, 1, (2, h, w)).astype(np.float32)
    img = image if as_numpy else MetaTensor(torch.from_numpy(image), meta={"filename_or_obj": "x.png"})
    out = StackHeatmaps()(img, benign=benign, malignant=malignant)
    assert tuple(out.shape) == (3, h, w) and isinstance(out, type(img))
    stacked = np.asarray(out)
    np.testing.assert_array_equal(stacked[0], image[0])
    np.testing.assert_array_equal(stacked[1], benign)
    np.testing.assert_array_equal(stacked[2], malignant)
    if h != w:  # a transposed heatmap has the right size but the wrong shape
        with pytest.raises(MammoDataError, match="does not match"):
            StackHeatmaps()(img, benign=benign.T, malignant=malignant)
