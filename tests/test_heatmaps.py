"""Patch heatmaps: the stride rule, loop == batched, and maps saved in the original image geometry."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from monai_mammo.data.indexers.nyu import index_nyu
from monai_mammo.data.synthetic.writers.nyu import write_nyu
from monai_mammo.engines.heatmaps import (
    StridedPatchSplitter,
    generate_heatmaps,
    heatmaps_batched,
    heatmaps_loop,
    patch_starts,
)
from monai_mammo.exceptions import MammoConfigError, MammoDataError
from monai_mammo.networks.patch_classifier import PatchClassifier
from monai_mammo.transforms.breast import CropBreastd
from monai_mammo.transforms.channels import StackHeatmapsd, load_heatmap_nifti
from monai_mammo.transforms.io import LoadMammogramd


def _reference_strides(length: int, patch: int, stride: int) -> list[int]:
    """The reference code's stride list (facts of its rule), shorter strides first."""
    lower, left = (length - patch) // stride + 1, (length - patch) % stride
    if left == 0:
        return [stride] * (lower - 1)
    steps = lower
    overlap = stride - left
    avg = stride - overlap // steps
    return sorted([avg - 1] * (overlap % steps) + [avg] * (steps - overlap % steps))


def test_patch_starts_follow_the_reference_rule() -> None:
    for length in range(257, 3400, 7):
        starts = patch_starts(length)
        strides = np.diff(starts).tolist()
        assert starts[0] == 0 and starts[-1] == length - 256
        assert sorted(strides) == _reference_strides(length, 256, 70), length
        assert max(strides) - min(strides) <= 1 and max(strides) <= 70
        if (length - 256) % 70:
            assert len(starts) == (length - 256) // 70 + 2
    assert np.diff(patch_starts(2677)).min() >= 67 and len(patch_starts(2677)) == 36
    assert patch_starts(256 + 3 * 70) == [0, 70, 140, 210]  # divisible: exact stride, no extra patch
    assert patch_starts(256) == patch_starts(100) == [0]
    assert len(patch_starts(2600)) * len(patch_starts(1300)) == 560  # "about 450-590 per crop"
    with pytest.raises(MammoConfigError):
        patch_starts(300, 64, 65)
    with pytest.raises(MammoConfigError):
        patch_starts(0)
    locations = [loc for _, loc in StridedPatchSplitter(64, 20)(torch.zeros(1, 1, 100, 40))]
    assert locations == [(0, 0), (18, 0), (36, 0)]


class TinyNet(nn.Module):
    """A small random conv net with the patch classifier's interface (3 channels in, 4 logits out)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 5, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x)) * 3.0


def test_loop_matches_batched_and_the_definition() -> None:
    image = torch.randn(150, 131, generator=torch.Generator().manual_seed(1))
    net = TinyNet()
    loop = heatmaps_loop(net, image, patch_size=64, stride=20)
    assert loop.shape == (2, 150, 131) and loop.dtype == np.float32
    for batch_size in (1, 7, 64):
        batched = heatmaps_batched(net, image[None], patch_size=64, stride=20, batch_size=batch_size)
        assert batched.dtype == np.float32 and np.abs(batched - loop).max() < 1e-5
    np.testing.assert_allclose(
        heatmaps_batched(net, image, 64, 20, amp=True, channels_last=False), loop, atol=1e-5
    )
    with torch.no_grad():  # pixel (0, 0) is covered by the first patch only; the last by the last only
        first = torch.softmax(net(image[:64, :64].expand(1, 3, 64, 64)), 1)[0]
        last = torch.softmax(net(image[-64:, -64:].expand(1, 3, 64, 64)), 1)[0]
    np.testing.assert_allclose(loop[:, 0, 0], first[[1, 0]].numpy(), atol=1e-6)
    np.testing.assert_allclose(loop[:, -1, -1], last[[1, 0]].numpy(), atol=1e-6)
    # a pixel covered by 2 x 2 patches averages their four probabilities
    ys, xs = patch_starts(150, 64, 20), patch_starts(131, 64, 20)
    y, x = ys[1] + 1, xs[1] + 1  # inside patches 0 and 1 of each axis, and no other
    assert y < ys[0] + 64 and y < ys[2] and x < xs[2]
    with torch.no_grad():
        probs = [
            torch.softmax(net(image[a : a + 64, b : b + 64].expand(1, 3, 64, 64)), 1)[0]
            for a in ys[:2]
            for b in xs[:2]
        ]
    np.testing.assert_allclose(loop[:, y, x], torch.stack(probs).mean(0)[[1, 0]].numpy(), atol=1e-6)


def test_cpu_bf16_is_opt_in_and_close_to_float32() -> None:
    image = torch.randn(100, 90, generator=torch.Generator().manual_seed(2))
    net = TinyNet()
    exact = heatmaps_batched(net, image, 64, 20)
    fast = heatmaps_batched(net, image, 64, 20, cpu_bf16=True)
    assert fast.dtype == np.float32 and 0 < np.abs(fast - exact).max() < 2e-2


def test_short_axes_are_zero_padded() -> None:
    image = torch.randn(40, 90, generator=torch.Generator().manual_seed(2))
    net = TinyNet()
    loop = heatmaps_loop(net, image, patch_size=64, stride=20)
    padded = torch.zeros(64, 90)
    padded[:40] = image
    with torch.no_grad():
        first = torch.softmax(net(padded[:, :64].expand(1, 3, 64, 64)), 1)[0]
    np.testing.assert_allclose(loop[:, 0, 0], first[[1, 0]].numpy(), atol=1e-6)
    assert np.abs(heatmaps_batched(net, image, 64, 20, batch_size=3) - loop).max() < 1e-5


def test_densenet_loop_matches_batched() -> None:
    torch.manual_seed(0)
    net = PatchClassifier("densenet121", 4, 3)
    image = torch.randn(100, 90, generator=torch.Generator().manual_seed(3))
    loop = heatmaps_loop(net, image, patch_size=64, stride=20)  # 3 x 3 patches
    batched = heatmaps_batched(net, image, patch_size=64, stride=20, batch_size=4)
    assert np.abs(batched - loop).max() < 1e-5 and 0 < loop.min() and loop.max() < 1


def test_bad_inputs() -> None:
    with pytest.raises(MammoConfigError, match=r"must output \(B, 4\) logits"):
        heatmaps_loop(nn.Sequential(nn.Flatten(), nn.LazyLinear(3)), torch.zeros(64, 64), 64, 20)
    with pytest.raises(MammoDataError, match="expected a"):
        heatmaps_batched(TinyNet(), torch.zeros(3, 64, 64), 64, 20)
    with pytest.raises(MammoDataError, match="NaN"):
        heatmaps_batched(TinyNet(), torch.full((64, 64), float("nan")), 64, 20)
    with pytest.raises(MammoConfigError):
        heatmaps_batched(TinyNet(), torch.zeros(64, 64), 64, 20, batch_size=0)


MARKER_LEVEL = 4.0  # standardised intensity only the marker reaches


class MarkerNet(nn.Module):
    """'Malignant' exactly for the patches holding a marker pixel, 'negative' otherwise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hit = (x[:, 0].amax(dim=(1, 2)) > MARKER_LEVEL).float()
        zero = torch.zeros_like(hit)
        return torch.stack([20 * hit, zero, zero, 20 * (1 - hit)], dim=1)


SHAPE = (320, 260)
MARKER = (160, 235)  # near the chest wall of the R breast: far from its mirror image in the crop


def _write_breast(path: Path, side: str, marker: tuple[int, int] | None, value: int = 1000) -> Path:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    edge = SHAPE[1] - 1 if side == "R" else 0
    breast = (yy - 160) ** 2 + (xx - edge) ** 2 <= 120**2
    pixels = np.where(breast, value + rng.integers(0, 50, SHAPE), 0).astype(np.uint16)
    if marker is not None:
        pixels[marker[0] - 1 : marker[0] + 2, marker[1] - 1 : marker[1] + 2] = 4000
    cv2.imwrite(str(path), pixels)
    return path


def test_generate_heatmaps_in_original_geometry(tmp_path: Path) -> None:
    mirror = (MARKER[0], SHAPE[1] - 1 - MARKER[1])
    items = [
        {
            "image": str(_write_breast(tmp_path / "r.png", "R", MARKER)),
            "laterality": "R",
            "view": "CC",
            "id": 7,
        },
        {"image": str(_write_breast(tmp_path / "l.png", "L", mirror)), "laterality": "L", "view": "MLO"},
        {"image": str(tmp_path / "missing.png"), "laterality": "L", "view": "CC"},
        {
            "image": str(_write_breast(tmp_path / "blank.png", "L", None, value=0)),
            "laterality": "L",
            "view": "CC",
        },
    ]
    manifest = generate_heatmaps(
        items,
        MarkerNet(),
        tmp_path / "hm",
        patch_size=64,
        stride=20,
        batch_size=16,
        crop_kwargs={"radius": 20, "buffer": 10},
    )
    body = json.loads(manifest.read_text())
    assert manifest == tmp_path / "hm" / "heatmaps.json"
    summary = body["summary"]
    assert (summary["images"], summary["written"]) == (4, 2) and summary["patch_size"] == 64
    assert summary["skip_counts"] == {"MammoDataError": 1, "MammoGeometryError": 1}
    assert {Path(s["source"]).name for s in summary["skipped"]} == {"missing.png", "blank.png"}
    written = body["items"]
    assert written[0]["id"] == 7 and written[0]["heatmap_malignant"] == str(
        tmp_path / "hm" / "r_malignant.nii.gz"
    )
    for item, marker in zip(written, (MARKER, mirror)):
        benign = load_heatmap_nifti(item["heatmap_benign"])
        malignant = load_heatmap_nifti(item["heatmap_malignant"])
        assert benign.shape == malignant.shape == SHAPE
        # the crop is rows 30..290 and the 10-px nipple-side buffer; nothing outside it
        assert not malignant[:30].any() and not malignant[291:].any() and not benign[:30].any()
        columns = np.flatnonzero(malignant.any(axis=0))
        assert (columns.min(), columns.max()) == ((129, 259) if item["laterality"] == "R" else (0, 130))
        assert benign.max() < 1e-6 and malignant[marker] > 0.999
        hot = np.argwhere(malignant > 0.999)  # every patch covering these pixels holds the marker
        assert np.abs(hot - marker).max() < 64
        far = (marker[0], SHAPE[1] - 1 - marker[1])  # where an un-flipped map would have put it
        assert malignant[far] < 1e-6
    # the L image is the R image mirrored (crop and patch grid included): so are their maps
    right, left = (load_heatmap_nifti(item["heatmap_malignant"]) for item in written)
    np.testing.assert_allclose(left, right[:, ::-1], atol=1e-6)
    stacked = StackHeatmapsd("image")(LoadMammogramd("image")(written[0]))["image"]
    assert stacked.shape == (3, *SHAPE)
    np.testing.assert_array_equal(stacked[2].numpy(), load_heatmap_nifti(written[0]["heatmap_malignant"]))
    np.testing.assert_array_equal(stacked[0].numpy(), cv2.imread(items[0]["image"], cv2.IMREAD_UNCHANGED))
    with pytest.raises(MammoConfigError, match="share the stem"):
        generate_heatmaps(
            [items[0], {**items[0], "image": str(tmp_path / "x" / "r.png")}], MarkerNet(), tmp_path
        )


def test_nyu_datalist_round_trip(tmp_path: Path) -> None:
    items = index_nyu(write_nyu(tmp_path / "nyu", n_exams=1, seed=0, image_shape=(256, 208))).items
    crop_kwargs = {"mode": "otsu", "radius": 10, "buffer": 5}  # synthetic backgrounds are not exactly 0
    manifest = generate_heatmaps(
        items, TinyNet(), tmp_path / "hm", patch_size=64, stride=20, crop_kwargs=crop_kwargs
    )
    body = json.loads(manifest.read_text())
    assert body["summary"]["written"] == len(body["items"]) == 4
    for item in body["items"]:
        loaded = LoadMammogramd("image")(item)
        window = CropBreastd("image", **crop_kwargs)(loaded)["image"].meta["window_location"]
        top, bottom, left, right = window
        stacked = StackHeatmapsd("image")(loaded)["image"]
        assert stacked.shape == (3, 256, 208)
        support = np.argwhere(stacked[1:].numpy().any(axis=0))  # probabilities are > 0 inside the crop
        assert support.min(axis=0).tolist() == [top, left] and support.max(axis=0).tolist() == [
            bottom - 1,
            right - 1,
        ]
        assert (left == 0) == (item["laterality"] == "L") and (right == 208) == (item["laterality"] == "R")
