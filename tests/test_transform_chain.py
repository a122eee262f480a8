"""The full chain (load DICOM -> finding masks -> crop -> orient -> resize -> S10 patches) in a MONAI
Dataset/DataLoader with workers; masks follow the geometry through StackFindingMasksd."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from monai.data import DataLoader, Dataset, list_data_collate
from monai.transforms import Compose, Resized

from monai_mammo.data.indexers.cbis_ddsm import index_cbis_ddsm
from monai_mammo.data.schema import PatchClass
from monai_mammo.data.synthetic.writers.cbis_ddsm import write_cbis_ddsm
from monai_mammo.exceptions import MammoConfigError
from monai_mammo.transforms import (
    CropBreastd,
    LoadFindingMasksd,
    LoadMammogramd,
    OrientBreastd,
    SamplePatchesd,
    StackFindingMasksd,
    UnstackFindingMasksd,
)

SIZE = (256, 192)
PATCH = 32
MASKS_KEY = "finding_masks"
# the NYU radius (100 px) and buffer (50 px) are meant for ~3000-pixel images; scaled to 288 rows
CROP_ARGS = {"mode": "otsu", "radius": 10, "buffer": 5}
ITEM_KEYS = ("image", "findings", "laterality", "view", "patient_id")


def geometry_transforms() -> list[Any]:
    """Everything up to (not including) the patch sampler: deterministic."""
    return [
        LoadMammogramd("image"),
        LoadFindingMasksd("findings"),
        StackFindingMasksd("findings"),
        CropBreastd(["image", MASKS_KEY], **CROP_ARGS),
        OrientBreastd(["image", MASKS_KEY]),
        Resized(["image", MASKS_KEY], SIZE, mode=("area", "nearest")),
        UnstackFindingMasksd("findings"),
    ]


def chain() -> Compose:
    return Compose([*geometry_transforms(), SamplePatchesd(keys="image", patch_size=PATCH, patch_set="S10")])


@pytest.fixture(scope="module")
def items(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    root = write_cbis_ddsm(tmp_path_factory.mktemp("cbis"), n_patients=3, image_shape=(288, 224))
    result = index_cbis_ddsm(root)
    assert result.items and not result.summary.skipped
    return [{k: item[k] for k in ITEM_KEYS} for item in result.items]


@pytest.fixture(scope="module")
def prepared(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The geometry chain's output per image file (run in this process, for the checks)."""
    geometry = Compose(geometry_transforms())
    return {item["image"]: geometry(item) for item in items}


def run_loader(items: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    loader = DataLoader(
        Dataset(items, transform=chain()),
        batch_size=2,
        shuffle=False,
        num_workers=2,
        collate_fn=list_data_collate,
        generator=torch.Generator().manual_seed(seed),
    )
    return list(loader)


@pytest.fixture(scope="module")
def batches(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return run_loader(items, seed=1234)


def test_batch_shapes(items: list[dict[str, Any]], batches: list[dict[str, Any]]) -> None:
    assert len(batches) == (len(items) + 1) // 2
    for start, batch in zip(range(0, len(items), 2), batches):
        expected = sum(10 * len(item["findings"]) + 10 for item in items[start : start + 2])
        n = batch["image"].shape[0]
        assert tuple(batch["image"].shape) == (expected, 1, PATCH, PATCH)
        assert batch["image"].dtype == torch.float32
        assert tuple(batch["label"].shape) == (n,)
        assert tuple(batch["patch_box"].shape) == (n, 4)
        assert tuple(batch["patch_center"].shape) == (n, 2)
        assert tuple(batch["finding_index"].shape) == (n,)
        assert "findings" not in batch and MASKS_KEY not in batch


def test_labels_are_patch_classes(items: list[dict[str, Any]], batches: list[dict[str, Any]]) -> None:
    valid = {int(c) for c in PatchClass}
    class_of = {item["image"]: [f["class_id"] for f in item["findings"]] for item in items}
    for batch in batches:
        names = batch["image"].meta["filename_or_obj"]
        for name, label, index in zip(names, batch["label"].tolist(), batch["finding_index"].tolist()):
            assert label in valid
            if index < 0:
                assert label == PatchClass.BACKGROUND
            else:
                assert label == class_of[name][index]


def test_roi_patches_overlap_their_roi(
    prepared: dict[str, dict[str, Any]], batches: list[dict[str, Any]]
) -> None:
    n_roi = 0
    for batch in batches:
        names = batch["image"].meta["filename_or_obj"]
        rows = zip(
            names,
            batch["finding_index"].tolist(),
            batch["patch_box"].tolist(),
            batch["roi_cutoff_used"].tolist(),
        )
        for name, index, (y0, x0, y1, x1), cut in rows:
            masks = [f["mask"][0].numpy() > 0 for f in prepared[name]["findings"]]
            window = (slice(max(y0, 0), max(y1, 0)), slice(max(x0, 0), max(x1, 0)))
            if index < 0:  # improved mode: background patches hold no ROI pixel at all
                assert all(not m[window].any() for m in masks)
                continue
            n_roi += 1
            mask = masks[index]
            inside = int(mask[window].sum())
            assert inside > 0
            assert inside / mask.sum() > cut or inside / PATCH**2 > cut  # Shen et al.'s overlap rule
    assert n_roi > 0


def test_breast_faces_the_chosen_side(
    items: list[dict[str, Any]], prepared: dict[str, dict[str, Any]], batches: list[dict[str, Any]]
) -> None:
    for item in items:
        image = prepared[item["image"]]["image"]
        assert tuple(image.shape) == (1, *SIZE)
        quarter = SIZE[1] // 4
        assert float(image[0, :, :quarter].mean()) > float(image[0, :, -quarter:].mean()), item["image"]
        # synthetic L breasts touch the left edge, R the right edge: only R images are flipped
        assert bool(image.meta["flipped_lr"]) == (item["laterality"] == "R")
    laterality = {item["image"]: item["laterality"] for item in items}
    for batch in batches:
        meta = batch["image"].meta
        for name, flipped in zip(meta["filename_or_obj"], meta["flipped_lr"].tolist()):
            assert bool(flipped) == (laterality[name] == "R")


def test_deterministic_with_the_same_seed(items: list[dict[str, Any]], batches: list[dict[str, Any]]) -> None:
    again = run_loader(items, seed=1234)
    assert len(again) == len(batches)
    for a, b in zip(batches, again):
        assert torch.equal(a["label"], b["label"])
        assert torch.equal(a["patch_center"], b["patch_center"])
        assert torch.equal(a["image"].as_tensor(), b["image"].as_tensor())
    other = run_loader(items, seed=4321)
    assert any(not torch.equal(a["patch_center"], b["patch_center"]) for a, b in zip(batches, other)), (
        "a different loader seed should draw different patches"
    )


def test_finding_masks_cannot_be_loaded_after_a_crop(items: list[dict[str, Any]]) -> None:
    """Loading masks after a crop would misplace them silently: it is refused with a clear error."""
    late = Compose(
        [
            LoadMammogramd("image"),
            CropBreastd("image", **CROP_ARGS),
            Resized("image", SIZE),
            LoadFindingMasksd("findings"),
        ],
        map_items=False,
    )
    with pytest.raises(Exception) as info:
        late(items[0])
    error = info.value if isinstance(info.value, MammoConfigError) else info.value.__cause__
    assert isinstance(error, MammoConfigError) and "CropBreast" in str(error)
