"""S1 / S10 patch sampling (Shen et al.): overlap rule, background rules, reproducibility, skips."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import torch
from monai.data import MetaTensor, list_data_collate

from monai_mammo.data.schema import PatchClass
from monai_mammo.exceptions import MammoConfigError, MammoDataError, MammoGeometryError, MammoSkip
from monai_mammo.transforms.patches import SamplePatches, SamplePatchesD, SamplePatchesd, breast_region

H, W, PS = 1152, 896, 224
# (centre y, centre x, semi-axis y, semi-axis x): a small ROI, a medium one (< 224), a long one (> 224)
ELLIPSES = ((330, 260, 40, 40), (560, 420, 60, 90), (840, 330, 45, 260))
CLASSES = (PatchClass.MASS_MALIGNANT, PatchClass.CALC_BENIGN, PatchClass.MASS_BENIGN)


def _ellipse_mask(cy: int, cx: int, ay: int, ax: int, shape: tuple[int, int] = (H, W)) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.ellipse(mask, (cx, cy), (ax, ay), 0, 0, 360, 1, thickness=-1)
    return mask[None].astype(bool)


def _breast_image(seed: int = 0) -> np.ndarray:
    """A smooth breast blob against the left edge of a 1152 x 896 image, values in [0, 1]."""
    rng = np.random.default_rng(seed)
    blob = np.zeros((H, W), np.float32)
    cv2.ellipse(blob, (0, H // 2), (760, 540), 0, -90, 90, 1.0, thickness=-1)
    smooth = cv2.GaussianBlur(blob, (0, 0), 12)
    texture = cv2.GaussianBlur(rng.normal(0, 0.1, (H, W)).astype(np.float32), (0, 0), 3)
    return np.clip(smooth * (0.7 + texture), 0, 1)[None] * (smooth > 0.02)


@pytest.fixture(scope="module")
def image() -> MetaTensor:
    return MetaTensor(torch.from_numpy(_breast_image()), meta={"filename_or_obj": "/data/synthetic_0.dcm"})


@pytest.fixture(scope="module")
def masks() -> list[np.ndarray]:
    return [_ellipse_mask(*e) for e in ELLIPSES]


@pytest.fixture(scope="module")
def s10(image, masks) -> list[dict]:
    sampler = SamplePatches(patch_size=PS, patch_set="S10")
    sampler.set_random_state(seed=7)
    return sampler(image, masks, list(CLASSES))


def _count_inside(mask: np.ndarray, box: np.ndarray) -> int:
    y0, x0, y1, x1 = (int(v) for v in box)
    plane = mask[0]
    return int(plane[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)].sum())


def _roi_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    contours, _ = cv2.findContours(mask[0].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    x, y, w, h = cv2.boundingRect(max(contours, key=cv2.contourArea))
    return y, x, y + h, x + w


def test_s10_counts_labels_and_shapes(s10):
    labels = [s["label"] for s in s10]
    assert labels == [int(c) for c in CLASSES for _ in range(10)] + [int(PatchClass.BACKGROUND)] * 10
    assert [s["finding_index"] for s in s10] == [i for i in range(3) for _ in range(10)] + [-1] * 10
    for s in s10:
        assert tuple(s["image"].shape) == (1, PS, PS)
        box, centre = s["patch_box"], s["patch_center"]
        np.testing.assert_array_equal(
            box, [centre[0] - 112, centre[1] - 112, centre[0] + 112, centre[1] + 112]
        )
        assert s["image"].meta["patch_box"] == box.tolist()
        assert s["image"].meta["filename_or_obj"] == "/data/synthetic_0.dcm"


def test_patch_pixels_come_from_the_source_with_zero_padding(image, s10):
    src = np.pad(image.numpy()[0], PS)
    for s in s10:
        y0, x0, y1, x1 = (int(v) + PS for v in s["patch_box"])
        np.testing.assert_array_equal(s["image"].numpy()[0], src[y0:y1, x0:x1])
        # the affine is translated to the patch origin
        np.testing.assert_allclose(s["image"].affine[:2, -1].numpy(), s["patch_box"][:2])


def test_every_roi_patch_meets_the_overlap_rule_at_its_recorded_cutoff(s10, masks):
    for s in s10:
        if s["finding_index"] < 0:
            assert math.isnan(s["roi_cutoff_used"])
            continue
        mask = masks[s["finding_index"]]
        inside = _count_inside(mask, s["patch_box"])
        cut = s["roi_cutoff_used"]
        assert inside / mask.sum() > cut or inside / PS**2 > cut
        by0, bx0, by1, bx1 = _roi_box(mask)
        assert by0 <= s["patch_center"][0] < by1 and bx0 <= s["patch_center"][1] < bx1


def test_small_rois_keep_the_cutoff_and_cover_90_percent(s10, masks):
    for s in s10:
        if s["finding_index"] in (0, 1):
            assert s["roi_cutoff_used"] == pytest.approx(0.9)
            mask = masks[s["finding_index"]]
            assert _count_inside(mask, s["patch_box"]) / mask.sum() > 0.9


def test_roi_larger_than_the_patch_relaxes_and_records_it(s10):
    long_roi = [s["roi_cutoff_used"] for s in s10 if s["finding_index"] == 2]
    assert len(long_roi) == 10
    assert min(long_roi) < 0.9 and min(long_roi) >= 0.05
    report = json.loads(s10[0]["sampling_report"])
    assert [e["status"] for e in report] == ["ok", "ok", "relaxed", "ok"]
    assert report[2]["min_cutoff"] == pytest.approx(min(long_roi))
    assert report[3]["finding_index"] == -1 and report[3]["n_patches"] == 10


def test_background_inside_breast_and_free_of_any_roi(image, masks, s10):
    breast = breast_region(image)
    union = np.logical_or.reduce(masks)
    for s in s10:
        if s["finding_index"] == -1:
            cy, cx = s["patch_center"]
            assert breast[cy, cx]
            assert _count_inside(union, s["patch_box"]) == 0


def test_no_duplicate_centres_within_each_set(s10):
    for index in (-1, 0, 1, 2):
        centres = {tuple(s["patch_center"]) for s in s10 if s["finding_index"] == index}
        assert len(centres) == 10


def test_same_seed_same_patches_other_seed_other_patches(image, masks, s10):
    again = SamplePatches(patch_set="S10").set_random_state(seed=7)(image, masks, list(CLASSES))
    assert [tuple(s["patch_center"]) for s in again] == [tuple(s["patch_center"]) for s in s10]
    other = SamplePatches(patch_set="S10").set_random_state(seed=8)(image, masks, list(CLASSES))
    assert [tuple(s["patch_center"]) for s in other] != [tuple(s["patch_center"]) for s in s10]


def test_successive_calls_draw_new_patches(image, masks):
    sampler = SamplePatches(patch_set="S10", n_background=0).set_random_state(seed=3)
    first = [tuple(s["patch_center"]) for s in sampler(image, masks[:1], [4])]
    second = [tuple(s["patch_center"]) for s in sampler(image, masks[:1], [4])]
    assert first != second


def test_adding_a_finding_leaves_the_other_findings_patches_unchanged(image, masks):
    one = SamplePatches(patch_set="S10").set_random_state(seed=11)(image, masks[:1], [4])
    two = SamplePatches(patch_set="S10").set_random_state(seed=11)(image, masks[:2], [4, 1])
    assert [tuple(s["patch_center"]) for s in one if s["finding_index"] == 0] == [
        tuple(s["patch_center"]) for s in two if s["finding_index"] == 0
    ]


def test_breast_mask_given_restricts_background(image, masks):
    breast = np.zeros((1, H, W), bool)
    breast[0, 100:300, 500:700] = True
    out = SamplePatches(patch_set="S10").set_random_state(seed=1)(
        image, masks, list(CLASSES), breast_mask=breast
    )
    for s in out:
        if s["finding_index"] == -1:
            assert 100 <= s["patch_center"][0] < 300 and 500 <= s["patch_center"][1] < 700


def test_s1_one_centroid_patch_per_finding_and_one_background(image, masks):
    out = SamplePatches(patch_set="S1").set_random_state(seed=0)(image, masks, list(CLASSES))
    assert [s["finding_index"] for s in out] == [0, 1, 2, -1]
    for s, (cy, cx, _, _) in zip(out[:3], ELLIPSES):
        assert abs(s["patch_center"][0] - cy) <= 1 and abs(s["patch_center"][1] - cx) <= 1
        assert math.isnan(s["roi_cutoff_used"])


def test_reference_mode_reseeds_identical_draws_for_identical_rois(image):
    first = _ellipse_mask(300, 250, 50, 70)
    second = _ellipse_mask(700, 450, 50, 70)  # same shape, translated by (400, 200)
    out = SamplePatches(patch_set="S10", mode="reference", reference_seed=5)(image, [first, second], [4, 3])
    a = np.array([s["patch_center"] for s in out if s["finding_index"] == 0])
    b = np.array([s["patch_center"] for s in out if s["finding_index"] == 1])
    np.testing.assert_array_equal(b - a, np.tile([400, 200], (10, 1)))


def test_reference_background_checks_only_the_first_roi(image):
    small = _ellipse_mask(200, 200, 30, 30)
    huge = np.zeros((1, H, W), bool)
    huge[0, 300:1100, 100:800] = True  # covers most of the image
    hits = 0
    for seed in range(3):
        out = SamplePatches(patch_set="S10", mode="reference", reference_seed=seed)(
            image, [small, huge], [4, 3]
        )
        for s in out:
            if s["finding_index"] == -1:
                assert _count_inside(small, s["patch_box"]) / small.sum() <= 0.35
                hits += _count_inside(huge, s["patch_box"]) > 0
    assert hits > 0
    improved = SamplePatches(patch_set="S10").set_random_state(seed=0)(image, [small, huge], [4, 3])
    assert all(_count_inside(huge, s["patch_box"]) == 0 for s in improved if s["finding_index"] == -1)


def test_relaxation_down_to_zero_is_reported_not_raised():
    img = np.ones((1, 800, 800), np.float32)
    line = np.zeros((1, 800, 800), np.uint8)
    # a 791 px diagonal: a 32 px patch holds at most 32 of its pixels, 32/791 and 32/32**2 are < 0.05
    cv2.line(line[0], (5, 5), (795, 795), 1, 1)
    sampler = SamplePatches(patch_size=32, patch_set="S10", max_rejections=20, n_background=2)
    out = sampler.set_random_state(seed=0)(img, [line], [PatchClass.CALC_MALIGNANT], breast_mask=img > 0)
    report = json.loads(out[0]["sampling_report"])
    assert report[0]["status"] == "skipped" and report[0]["reason"] == "cutoff_exhausted"
    assert "relaxed to zero" in report[0]["message"]
    assert [s["finding_index"] for s in out] == [-1, -1]


def test_empty_and_missing_masks_are_counted_skips(image, masks):
    empty = np.zeros((1, H, W), bool)
    out = SamplePatches(patch_set="S10").set_random_state(seed=0)(image, [empty, masks[0], None], [4, 3, 1])
    report = json.loads(out[0]["sampling_report"])
    assert [(e["status"], e["reason"]) for e in report] == [
        ("skipped", "empty_mask"),
        ("ok", ""),
        ("skipped", "empty_mask"),
        ("ok", ""),
    ]
    assert {s["finding_index"] for s in out} == {1, -1}


def test_nothing_to_sample_raises_a_no_patches_skip(image):
    sampler = SamplePatches(patch_set="S10", n_background=0)
    with pytest.raises(MammoSkip) as info:
        sampler(image, [np.zeros((1, H, W), bool)], [4])
    assert info.value.reason == "no_patches"
    assert info.value.source == "/data/synthetic_0.dcm"


def test_input_errors():
    img = np.ones((1, 64, 64), np.float32)
    with pytest.raises(MammoDataError):
        SamplePatches(patch_size=8)(img, [np.ones((1, 32, 32), bool)], [4])
    with pytest.raises(MammoDataError):
        SamplePatches(patch_size=8)(img, [np.ones((1, 64, 64), bool)], [0])
    with pytest.raises(MammoDataError):
        SamplePatches(patch_size=8)(img, [np.ones((1, 64, 64), bool)], [4, 3])
    with pytest.raises(MammoGeometryError):
        SamplePatches(patch_size=8)(np.zeros((1, 64, 64), np.float32), [], [])
    for kwargs in (
        {"mode": "paper"},
        {"patch_set": "S5"},
        {"patch_set": "S1", "n_roi": 10},
        {"roi_cutoff": 0},
    ):
        with pytest.raises(MammoConfigError):
            SamplePatches(**kwargs)


def test_dict_version_over_the_findings_schema(image, masks):
    data = {
        "image": image,
        "patient_id": "P_1",
        "findings": [
            # as LoadFindingMasksd yields them: float (1, H, W) tensors
            {"type": "mass", "pathology": "MALIGNANT", "label": 1, "mask": torch.from_numpy(masks[0] * 1.0)},
            {
                "type": "calcification",
                "pathology": "BENIGN_WITHOUT_CALLBACK",
                "mask": None,
                "bbox": [520, 380, 600, 460],
            },
            {"type": "mass", "pathology": None, "mask": masks[2], "bbox": None},
        ],
    }
    sampler = SamplePatchesd(keys="image", patch_set="S10").set_random_state(seed=2)
    out = sampler(data)
    assert [s["label"] for s in out] == [4] * 10 + [1] * 10 + [0] * 10
    report = json.loads(out[0]["sampling_report"])
    assert report[2]["reason"] == "unknown_class"
    assert "findings" not in out[0] and out[0]["patient_id"] == "P_1"
    # the bbox-only finding's patches lie around its box
    for s in out[10:20]:
        assert 520 <= s["patch_center"][0] < 600 and 380 <= s["patch_center"][1] < 460
    # the unknown-class mass is still kept out of background patches
    assert all(_count_inside(masks[2], s["patch_box"]) == 0 for s in out[20:])
    batch = list_data_collate(out[:4])
    assert tuple(batch["image"].shape) == (4, 1, PS, PS)
    assert SamplePatchesD is SamplePatchesd


def test_dict_version_crops_several_keys_alike(image, masks):
    data = {
        "image": image,
        "seg": np.asarray(masks[0], np.float32),
        "findings": [{"class_id": 4, "mask": masks[0]}],
    }
    out = SamplePatchesd(keys=["image", "seg"], patch_set="S1").set_random_state(seed=0)(data)
    assert len(out) == 2
    assert out[0]["seg"].shape == out[0]["image"].shape
    assert out[0]["seg"].sum() > 0 and out[1]["seg"].sum() == 0


def test_dict_version_rejects_unloaded_mask_paths(image):
    data = {"image": image, "findings": [{"type": "mass", "label": 1, "mask": "/data/mask.dcm"}]}
    with pytest.raises(MammoDataError, match="load it first"):
        SamplePatchesd(keys="image")(data)


def test_same_pixels_same_patches_wherever_the_file_lives(image, masks):
    """Reproducibility: the per-image stream depends on the pixels, not on the path (a dataset
    copied to another folder gives the same patch set); another image gives other draws."""

    def centres(img: MetaTensor) -> list[list[int]]:
        sampler = SamplePatches(patch_size=PS, patch_set="S10")
        sampler.set_random_state(seed=7)
        return [s["patch_center"].tolist() for s in sampler(img, masks, list(CLASSES))]

    moved = MetaTensor(image.as_tensor().clone(), meta={"filename_or_obj": "/elsewhere/copy/synthetic_0.dcm"})
    assert centres(moved) == centres(image)
    other = MetaTensor(image.as_tensor() * 0.9, meta={"filename_or_obj": "/data/synthetic_0.dcm"})
    assert centres(other) != centres(image)
