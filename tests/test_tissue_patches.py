"""Wu et al.'s 4-class patch sampling: each class lands where its rule says, deterministically."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_mammo.exceptions import MammoConfigError, MammoDataError, MammoSkip
from monai_mammo.transforms.tissue_patches import NYU_PATCH_CLASSES, SampleTissuePatches, SampleTissuePatchesd

PS = 64
SHAPE = (300, 260)


def _disk(centre: tuple[int, int], radius: int) -> np.ndarray:
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


@pytest.fixture(scope="module")
def case() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    breast = _disk((150, 0), 140)  # a half disc on the left edge; the right part is background
    image = np.where(breast, 1.0 + 0.1 * rng.random(SHAPE), 0.0).astype(np.float32)[None]
    return {
        "image": image,
        "breast": breast,
        "malignant": _disk((100, 60), 10),
        "benign": _disk((210, 70), 8),
    }


def _window(plane: np.ndarray, box: np.ndarray) -> np.ndarray:
    y0, x0, y1, x1 = box.tolist()
    return plane[y0:y1, x0:x1]


def test_each_class_follows_its_rule(case: dict[str, np.ndarray]) -> None:
    counts = {"malignant": 3, "benign": 2, "outside": 2, "negative": 3}
    sampler = SampleTissuePatches(PS, counts=counts, jitter=8)
    sampler.set_random_state(seed=1)
    samples = sampler(case["image"], [case["malignant"], case["benign"]], [1, 0])
    assert [s["label"] for s in samples] == [0, 0, 0, 1, 1, 2, 2, 3, 3, 3]
    lesion = case["malignant"] | case["benign"]
    boxes = set()
    for sample in samples:
        box = sample["patch_box"]
        assert sample["image"].shape == (1, PS, PS) and box[2] - box[0] == PS and box[3] - box[1] == PS
        assert 0 <= box[0] and box[2] <= SHAPE[0] and 0 <= box[1] and box[3] <= SHAPE[1]
        np.testing.assert_array_equal(np.asarray(sample["image"][0]), _window(case["image"][0], box))
        name = NYU_PATCH_CLASSES[sample["label"]]
        breast_fraction = _window(case["breast"], box).mean()
        if name == "malignant":
            assert _window(case["malignant"], box).any()
        elif name == "benign":
            assert _window(case["benign"], box).any() and not _window(case["malignant"], box).any()
        elif name == "outside":
            assert breast_fraction <= 0.5 and not _window(lesion, box).any()
        else:
            assert breast_fraction >= 0.75 and not _window(lesion, box).any()
        boxes.add((sample["label"], *box.tolist()))
    assert len(boxes) == len(samples)  # distinct within a class
    report = json.loads(samples[0]["sampling_report"])
    assert [(e["class"], e["status"], e["n_patches"]) for e in report] == [
        ("malignant", "ok", 3),
        ("benign", "ok", 2),
        ("outside", "ok", 2),
        ("negative", "ok", 3),
    ]
    again = SampleTissuePatches(PS, counts=counts, jitter=8)
    again.set_random_state(seed=1)
    same = again(case["image"], [case["malignant"], case["benign"]], [1, 0])
    assert [s["patch_box"].tolist() for s in same] == [s["patch_box"].tolist() for s in samples]
    other = sampler(case["image"], [case["malignant"], case["benign"]], [1, 0])  # next call: new draws
    assert [s["patch_box"].tolist() for s in other] != [s["patch_box"].tolist() for s in samples]


def test_lesion_patches_are_jittered_around_lesions(case: dict[str, np.ndarray]) -> None:
    sampler = SampleTissuePatches(PS, counts={"malignant": 40}, jitter=20).set_random_state(seed=0)
    boxes = np.stack([s["patch_box"] for s in sampler(case["image"], [case["malignant"]], [1])])
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    # lesion pixels lie within 10 px of (100, 60): centres within 10 + 20 (+ 1 for the half pixel)
    assert np.abs(centres - [100, 60]).max() <= 31 and len({tuple(b) for b in boxes.tolist()}) == 40


def test_absent_exhausted_and_strict(case: dict[str, np.ndarray]) -> None:
    sampler = SampleTissuePatches(PS).set_random_state(seed=0)
    normal = sampler(case["image"], [], [])
    assert [s["label"] for s in normal] == [2, 3]
    report = {e["class"]: e for e in json.loads(normal[0]["sampling_report"])}
    assert (
        report["malignant"]["status"] == "absent" and report["malignant"]["reason"] == "no_malignant_lesion"
    )
    full = np.ones((1, *SHAPE), np.float32)  # the breast fills the image: nothing is outside
    filled = sampler(full, [], [], breast_mask=np.ones(SHAPE, bool))
    assert [s["label"] for s in filled] == [3]
    outside = json.loads(filled[0]["sampling_report"])[2]
    assert outside["status"] == "exhausted" and outside["reason"] == "outside_exhausted"
    strict = SampleTissuePatches(PS, strict=True).set_random_state(seed=0)
    with pytest.raises(MammoSkip, match="only 0 of 1 outside patches") as raised:
        strict(full, [], [], breast_mask=np.ones(SHAPE, bool))
    assert raised.value.reason == "outside_exhausted"
    assert len(strict(case["image"], [], [])) == 2  # absent lesion classes are not a shortfall
    with pytest.raises(MammoSkip) as none:
        SampleTissuePatches(PS, counts={"benign": 2})(case["image"], [case["malignant"]], [1])
    assert none.value.reason == "no_patches" and "no_benign_lesion" in str(none.value)


def test_unusable_findings_and_errors(case: dict[str, np.ndarray]) -> None:
    sampler = SampleTissuePatches(PS)
    with pytest.raises(MammoSkip) as missing:
        sampler(case["image"], [None], [1])
    assert missing.value.reason == "missing_mask"
    with pytest.raises(MammoSkip) as empty:
        sampler(case["image"], [np.zeros(SHAPE, bool)], [0])
    assert empty.value.reason == "missing_mask"
    with pytest.raises(MammoSkip) as unknown:
        sampler(case["image"], [case["benign"]], [None])
    assert unknown.value.reason == "unknown_pathology"
    with pytest.raises(MammoDataError, match="has shape"):
        sampler(case["image"], [np.ones((10, 10), bool)], [1])
    with pytest.raises(MammoDataError, match="1 lesion masks but 0 labels"):
        sampler(case["image"], [case["benign"]], [])
    for bad in (
        {"counts": {"cyst": 1}},
        {"counts": {"benign": -1}},
        {"jitter": PS // 2},
        {"outside_max_breast": 1.5},
        {"max_candidates": 0},
    ):
        with pytest.raises(MammoConfigError):
            SampleTissuePatches(PS, **bad)


def test_small_image_is_padded_at_the_end() -> None:
    image = np.zeros((1, 40, 50), np.float32)
    image[0, :, :30] = 1.0
    mask = np.zeros((40, 50), bool)
    mask[10:14, 5:9] = True
    samples = SampleTissuePatches(PS, counts={"malignant": 1}).set_random_state(seed=0)(image, [mask], [1])
    patch = np.asarray(samples[0]["image"][0])
    assert samples[0]["patch_box"].tolist() == [0, 0, PS, PS]
    np.testing.assert_array_equal(patch[:40, :50], image[0])
    assert not patch[40:].any() and not patch[:, 50:].any()


def test_dict_version(case: dict[str, np.ndarray]) -> None:
    image = MetaTensor(torch.as_tensor(case["image"]), meta={"filename_or_obj": "/x/a.png"})
    item = {
        "image": image,
        "mask": torch.as_tensor(case["malignant"][None], dtype=torch.float32),
        "findings": [
            {"type": "mass", "pathology": "MALIGNANT", "mask": torch.as_tensor(case["malignant"][None])},
            {"type": "calcification", "label": 0, "mask": None, "bbox": [202, 62, 218, 78]},
        ],
        "patient_id": "p1",
    }
    sampler = SampleTissuePatchesd(["image", "mask"], patch_size=PS, counts={"malignant": 2, "benign": 1})
    samples = sampler.set_random_state(seed=3)(item)
    assert [s["label"] for s in samples] == [0, 0, 1]
    for sample in samples:
        assert "findings" not in sample and sample["patient_id"] == "p1"
        box = sample["patch_box"].tolist()
        assert (
            sample["image"].meta["patch_box"] == box and sample["image"].meta["filename_or_obj"] == "/x/a.png"
        )
        np.testing.assert_allclose(sample["image"].affine[:2, 3].numpy(), box[:2])
        np.testing.assert_array_equal(
            np.asarray(sample["mask"][0]), _window(case["malignant"], sample["patch_box"])
        )
    assert np.asarray(samples[0]["mask"]).any() and not np.asarray(samples[2]["mask"]).any()
    with pytest.raises(MammoDataError, match="load it first"):
        SampleTissuePatchesd("image", patch_size=PS)(
            {"image": image, "findings": [{"label": 1, "mask": "/x/m"}]}
        )
