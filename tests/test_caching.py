"""cached_dataset: memory/disk caches of load -> crop -> orient -> resize give the uncached outputs;
the disk cache is keyed by a process-stable transform fingerprint (reused by a fresh process,
new entries for new parameters) and stops at the first random transform."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from monai.data import CacheDataset, Dataset
from monai.transforms import Compose, RandFlipd, Resized

from monai_mammo.data.caching import (
    CACHE_SAFE_GLOBALS,
    MetaPersistentDataset,
    cached_dataset,
    cached_prefix,
    transform_fingerprint,
)
from monai_mammo.data.dicom_writer import write_mammogram_dicom
from monai_mammo.data.synthetic.phantom import synthesize_mammogram
from monai_mammo.exceptions import MammoConfigError
from monai_mammo.transforms import CropBreastd, LoadMammogramd, OrientBreastd

REPO_ROOT = Path(__file__).resolve().parents[1]
SHAPE = (288, 224)
SIZE = (64, 48)
# meta entries the later stages read (laterality/view for views, geometry for heatmaps and patches)
META_KEYS = (
    "filename_or_obj",
    "laterality",
    "view",
    "pixel_spacing",
    "window_location",
    "rightmost_points",
    "bottommost_points",
    "flipped_lr",
)


def preprocessing(size: tuple[int, int] = SIZE, buffer: int = 5, flip: bool = False) -> Compose:
    """load -> crop (radius/buffer scaled to the tiny images) -> orient -> resize [-> random flip]."""
    transforms: list[Any] = [
        LoadMammogramd("image"),
        CropBreastd("image", mode="otsu", radius=10, buffer=buffer),
        OrientBreastd("image"),
        Resized("image", size),
    ]
    if flip:
        transforms.append(RandFlipd("image", prob=1.0, spatial_axis=1))
    return Compose(transforms)


def write_images(folder: Path) -> list[dict[str, Any]]:
    """Two DICOM (L CC, R MLO) and one 16-bit PNG (R CC, laterality from the datalist) mammograms."""
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for seed, laterality, view in ((0, "L", "CC"), (1, "R", "MLO")):
        synth = synthesize_mammogram(seed, shape=SHAPE, laterality=laterality, view=view, style="film")
        path = write_mammogram_dicom(
            folder / f"{seed}_{laterality}_{view}.dcm",
            synth.pixels,
            laterality=laterality,
            view=view,
            bits_stored=synth.bits_stored,
            photometric=synth.photometric,
            window=synth.window,
            pixel_spacing=synth.pixel_spacing,
        )
        items.append({"image": str(path), "label": seed})
    synth = synthesize_mammogram(2, shape=SHAPE, laterality="R", view="CC", style="film", text_markers=False)
    png = folder / "2_R_CC.png"
    assert cv2.imwrite(str(png), synth.pixels)
    items.append({"image": str(png), "label": 0, "laterality": "R", "view": "CC"})
    return items


def cache_files(folder: Path) -> dict[str, int]:
    """Name -> modification time (ns) of the cache files."""
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.pt")}


def assert_same_sample(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    """Same pixels, the same downstream metadata and the same traced operations."""
    a, e = actual["image"], expected["image"]
    assert a.shape == e.shape == (1, *SIZE)
    assert torch.equal(a.as_tensor(), e.as_tensor())
    for key in META_KEYS:
        assert a.meta[key] == e.meta[key], key
    assert torch.allclose(torch.as_tensor(a.affine), torch.as_tensor(e.affine))
    assert np.array_equal(a.meta["spatial_shape"], e.meta["spatial_shape"])
    assert [op["class"] for op in a.applied_operations] == [op["class"] for op in e.applied_operations]
    assert actual["label"] == expected["label"]


@pytest.fixture(scope="module")
def items(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return write_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def reference(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Uncached outputs of the deterministic preprocessing."""
    dataset = cached_dataset(items, preprocessing())
    assert type(dataset) is Dataset
    return [dataset[i] for i in range(len(items))]


def test_reference_preprocessing_is_meaningful(reference: list[dict[str, Any]]) -> None:
    """The crops differ from the full images and the R images were flipped (chest wall on the left)."""
    for sample in reference:
        image = sample["image"]
        top, bottom, left, right = image.meta["window_location"]
        assert (bottom - top, right - left) != SHAPE
        assert image.meta["flipped_lr"] == (image.meta["laterality"] == "R")
        assert float(image.std()) > 0


def test_memory_cache_equals_uncached(items: list[dict[str, Any]], reference: list[dict[str, Any]]) -> None:
    dataset = cached_dataset(items, preprocessing(), cache="memory", num_workers=1)
    assert isinstance(dataset, CacheDataset) and len(dataset._cache) == len(items)
    for _epoch in range(2):
        for i, expected in enumerate(reference):
            assert_same_sample(dataset[i], expected)


def test_memory_cache_rate_caches_a_fraction(items: list[dict[str, Any]]) -> None:
    dataset = cached_dataset(items, preprocessing(), cache="memory", cache_rate=0.5, num_workers=1)
    assert dataset.cache_num == 1


def test_disk_cache_equals_uncached_and_is_reused(
    items: list[dict[str, Any]], reference: list[dict[str, Any]], tmp_path: Path
) -> None:
    dataset = cached_dataset(items, preprocessing(), cache="disk", cache_dir=tmp_path)
    assert isinstance(dataset, MetaPersistentDataset)
    computed = [dataset[i] for i in range(len(items))]
    files = cache_files(tmp_path)
    fingerprint = transform_fingerprint(preprocessing())
    assert len(files) == len(items)
    assert all(name.endswith(f"{fingerprint}.pt") and len(name) == 64 + 64 + 3 for name in files)
    # a fresh dataset with a freshly built transform: every item read back, no file rewritten, and
    # no "Corrupt cache file detected" fallback (MONAI's warning when the metadata cannot be loaded)
    again = cached_dataset(items, preprocessing(), cache="disk", cache_dir=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = [again[i] for i in range(len(items))]
    assert cache_files(tmp_path) == files
    for first, second, expected in zip(computed, loaded, reference):
        assert_same_sample(first, expected)
        assert_same_sample(second, expected)


def test_changed_parameters_create_new_entries(items: list[dict[str, Any]], tmp_path: Path) -> None:
    for transform in (preprocessing(), preprocessing(size=(48, 32)), preprocessing(buffer=6)):
        dataset = cached_dataset(items[:1], transform, cache="disk", cache_dir=tmp_path)
        assert tuple(dataset[0]["image"].shape[1:]) == tuple(transform.transforms[3].resizer.spatial_size)
    assert len(cache_files(tmp_path)) == 3
    fingerprints = {
        transform_fingerprint(t) for t in (preprocessing(), preprocessing((48, 32)), preprocessing(buffer=6))
    }
    assert len(fingerprints) == 3
    assert transform_fingerprint(preprocessing()) == transform_fingerprint(preprocessing())


def test_only_the_deterministic_prefix_is_cached(
    items: list[dict[str, Any]], reference: list[dict[str, Any]], tmp_path: Path
) -> None:
    transform = preprocessing(flip=True)
    assert [type(t).__name__ for t in cached_prefix(transform)] == [
        "LoadMammogramd",
        "CropBreastd",
        "OrientBreastd",
        "Resized",
    ]
    # the random flip does not change the key: same fingerprint as without it
    assert transform_fingerprint(transform) == transform_fingerprint(preprocessing())
    dataset = cached_dataset(items[:1], transform, cache="disk", cache_dir=tmp_path)
    flipped = dataset[0]["image"]
    assert torch.equal(flipped.as_tensor(), reference[0]["image"].as_tensor().flip(-1))
    (cache_file,) = tmp_path.glob("*.pt")
    with torch.serialization.safe_globals(CACHE_SAFE_GLOBALS):
        stored = torch.load(cache_file, weights_only=True)
    assert torch.equal(stored["image"].as_tensor(), reference[0]["image"].as_tensor())
    memory = cached_dataset(items[:1], transform, cache="memory", num_workers=1)
    assert torch.equal(memory._cache[0]["image"].as_tensor(), reference[0]["image"].as_tensor())
    assert torch.equal(memory[0]["image"].as_tensor(), flipped.as_tensor())


def test_nested_compose_ends_the_cached_part() -> None:
    """MONAI treats a nested Compose as random: nothing before it is cached; the fingerprint sees
    the flattened chain (as MONAI's hash_transform does)."""
    flat = preprocessing(flip=True)
    nested = Compose([Compose(flat.transforms[:2]), *flat.transforms[2:]])
    assert cached_prefix(nested) == []
    assert transform_fingerprint(nested) == transform_fingerprint(flat)


_CHILD = """
import json, sys
sys.path.insert(0, {tests!r})
from test_caching import cache_files, preprocessing
from monai_mammo.data.caching import cached_dataset, transform_fingerprint
items = json.loads({items!r})
dataset = cached_dataset(items, preprocessing(), cache="disk", cache_dir={cache_dir!r})
sums = [float(dataset[i]["image"].sum()) for i in range(len(items))]
print(json.dumps({{"fingerprint": transform_fingerprint(preprocessing()), "sums": sums,
                  "files": cache_files(__import__("pathlib").Path({cache_dir!r}))}}))
"""


def test_fresh_process_reuses_the_disk_cache(
    tmp_path: Path, items: list[dict[str, Any]], reference: list[dict[str, Any]]
) -> None:
    """Another process (other hash seed) computes the same fingerprint and reads the files back,
    even with the source images gone (proof that nothing was recomputed)."""
    local = write_images(tmp_path / "images")
    cache_dir = tmp_path / "cache"
    dataset = cached_dataset(local, preprocessing(), cache="disk", cache_dir=cache_dir)
    sums = [float(dataset[i]["image"].sum()) for i in range(len(local))]
    files = cache_files(cache_dir)
    for item in local:
        os.remove(item["image"])
    code = _CHILD.format(tests=str(REPO_ROOT / "tests"), items=json.dumps(local), cache_dir=str(cache_dir))
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    child = json.loads(out.stdout.strip().splitlines()[-1])
    assert child["fingerprint"] == transform_fingerprint(preprocessing())
    assert child["files"] == files
    assert child["sums"] == sums == [float(sample["image"].sum()) for sample in reference]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cache": "ram"}, "unknown cache mode 'ram'"),
        ({"cache": "disk"}, "needs a cache_dir"),
        ({"cache": "memory", "cache_rate": 0.0}, "cache_rate must be in (0, 1]"),
    ],
)
def test_bad_arguments_raise(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(MammoConfigError, match=message.replace("(", r"\(").replace("]", r"\]")):
        cached_dataset([{"image": "x.dcm"}], preprocessing(), **kwargs)
