"""Patch datasets for patch-classifier training: sampled once from whole images, cached on disk.

Patches of each image are stored as one ``.npy`` array (N, C, ps, ps) in float16 and read
back memory-mapped, so that a paper-scale patch set (tens of thousands of 224 x 224 patches)
never has to fit in RAM. The cache folder is keyed by the datalist digest and the sampling
parameters: changing either builds a new set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader, Dataset
from tqdm import tqdm

from monai_mammo.exceptions import MammoDataError, MammoError

__all__ = ["extract_patch_dataset", "PatchDataset"]

logger = logging.getLogger(__name__)


class _Guarded:
    """Run the preprocessing of one item; return the error instead of raising (workers must not die)."""

    def __init__(self, transform: Callable[[Any], Any]) -> None:
        self.transform = transform

    def __call__(self, item: Mapping[str, Any]) -> dict[str, Any]:
        try:
            return {"data": self.transform(dict(item)), "error": None}
        except MammoError as exc:
            return {"data": None, "error": exc}


def _cache_key(items: Sequence[Mapping[str, Any]], params: Mapping[str, Any]) -> str:
    images = [str(item.get("image")) for item in items]
    blob = json.dumps({"images": images, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def extract_patch_dataset(
    items: Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike,
    preprocess: Callable[[Any], Any],
    sampler: Any,
    params: Mapping[str, Any],
    seed: int = 0,
    num_workers: int = 0,
    on_error: str = "skip",
    image_key: str = "image",
    label_key: str = "label",
) -> dict[str, Any]:
    """Sample patches from every image once and cache them.

    Args:
        items: datalist items (images with their findings).
        out_dir: cache root; the set goes to ``out_dir/<key>/``.
        preprocess: transform of one item up to the sampler (load, resize, intensity, masks).
        sampler: a multi-sample dict transform, e.g. :class:`~monai_mammo.transforms.patches.SamplePatchesd`,
            re-seeded per image with ``seed + index`` so the set does not depend on worker order.
        params: the sampling parameters (part of the cache key and of ``index.json``).
        seed: base seed.
        num_workers: DataLoader workers for the preprocessing.
        on_error: ``"skip"`` counts and reports images that fail (project errors) and goes on;
            ``"raise"`` stops at the first.
        image_key: key of the patch images in the sampler's outputs.
        label_key: key of the patch labels.

    Returns:
        ``{"samples": [{"image": npy path, "row": i, "label": k, "source": image path}, ...],
        "skipped": [{"source", "reason", "message"}], "class_counts": {...}, "folder": str}``.
    """
    key = _cache_key(items, {**params, "seed": seed})
    folder = Path(out_dir) / key
    index_file = folder / "index.json"
    if index_file.is_file():
        logger.info("patch set %s found in cache", folder)
        return json.loads(index_file.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    samples: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    with torch.random.fork_rng(devices=[]):  # a cache hit and a miss leave the same random state
        loader = DataLoader(
            Dataset(list(items), transform=_Guarded(preprocess)),
            batch_size=None,
            num_workers=num_workers,
            collate_fn=lambda x: x,
        )
        progress = tqdm(loader, desc="sampling patches", unit="image", mininterval=5)
        for position, result in enumerate(progress):  # type: ignore[arg-type]
            source = str(items[position].get(image_key))
            error = result["error"]
            patches: list[dict[str, Any]] = []
            if error is None:
                try:
                    sampler.set_random_state(seed=seed + position)
                    patches = sampler(result["data"])
                except MammoError as exc:
                    error = exc
            if error is not None:
                if on_error == "raise":
                    raise error
                skipped.append(
                    {
                        "source": source,
                        "reason": getattr(error, "reason", type(error).__name__),
                        "message": str(error),
                    }
                )
                continue
            array = np.stack([np.asarray(p[image_key], dtype=np.float16) for p in patches])
            path = folder / f"{position:06d}.npy"
            np.save(path, array)
            samples += [
                {"image": str(path), "row": row, "label": int(p[label_key]), "source": source}
                for row, p in enumerate(patches)
            ]
    counts: dict[str, int] = {}
    for sample in samples:
        counts[str(sample["label"])] = counts.get(str(sample["label"]), 0) + 1
    summary = {
        "samples": samples,
        "skipped": skipped,
        "class_counts": counts,
        "folder": str(folder),
        "params": params,
    }
    index_file.write_text(json.dumps(summary, default=str))
    if skipped:
        logger.warning("%d of %d images gave no patches (see %s)", len(skipped), len(items), index_file)
    return summary


class PatchDataset(torch.utils.data.Dataset):
    """Cached patches as MONAI-style dicts ``{"image": (C, ps, ps) float32, "label": int}``.

    Args:
        samples: the ``samples`` list of :func:`extract_patch_dataset`.
        transform: optional dict transform (augmentation) applied to each sample.

    Example::

        index = extract_patch_dataset(train_items, "cache/patches", preprocess, sampler, params)
        ds = PatchDataset(index["samples"], transform=shen_augmentation("image"))
    """

    def __init__(
        self, samples: Sequence[Mapping[str, Any]], transform: Callable[[Any], Any] | None = None
    ) -> None:
        self.samples = list(samples)
        self.transform = transform
        self._arrays: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def _array(self, path: str) -> np.ndarray:
        if path not in self._arrays:
            try:
                self._arrays[path] = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as exc:  # missing, truncated or not an .npy file
                raise MammoDataError(
                    f"unreadable patch cache file (delete the cache folder?): {exc}", path
                ) from exc
        return self._arrays[path]

    def __getitem__(self, index: int) -> dict[str, Any]:
        """The patch ``index`` (with the transform applied).

        Raises:
            MammoDataError: its cache file is missing or damaged, or holds no such row.
        """
        sample = self.samples[index]
        array = self._array(sample["image"])
        if not 0 <= int(sample["row"]) < len(array):
            raise MammoDataError(
                f"row {sample['row']} is outside the {len(array)} cached patches", sample["image"]
            )
        image = torch.from_numpy(np.array(array[sample["row"]], dtype=np.float32))
        item = {"image": image, "label": int(sample["label"]), "source": sample.get("source", "")}
        return self.transform(item) if self.transform is not None else item
