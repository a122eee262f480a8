"""Lesion-centred calcification patches at native resolution (Mračko et al.), cached on disk.

For every calcification finding with a benign or malignant pathology, the full image is
loaded (:class:`~monai_mammo.transforms.io.LoadMammogram`: DICOM display pipeline, so
MONOCHROME1 is already upright), min-max normalised to [0, 1], re-inverted (``1 - x``) when
the item is flagged ``"inverted"`` (pixel-inverted MONOCHROME2 images, see
:func:`~monai_mammo.data.indexers.bbox_csv.looks_inverted`), and a ``patch_size`` square is
cut around the finding with :meth:`LesionCenteredCrop.compute_patch_box
<monai_mammo.transforms.patches.LesionCenteredCrop.compute_patch_box>`: centred on the
finding's box, moved so that the whole finding is inside, shifted inwards at the image
border. Patches are never padded: an image smaller than the patch is skipped.

The finding's box is its ``bbox`` (bounding-box sources), else the bounding box of its ROI
mask (CBIS-DDSM). A mask of another size than the image is accepted when its aspect ratio
matches the image's (relative difference <= ``aspect_tolerance``): its box is rescaled to
the image; a mask of another aspect ratio is rejected (CBIS-DDSM has such masks; they are
not stretched).

Exclusions are counted per finding, by reason (:data:`SKIP_REASONS`):
``not_calcification``, ``no_pathology`` (pathology neither benign nor malignant),
``unreadable_image``, ``constant_image``, ``image_smaller_than_patch``, ``no_location``
(neither box nor mask), ``empty_bbox`` (zero-area box), ``bad_bbox`` (box outside the
image), ``unreadable_mask``, ``empty_mask``, ``mask_aspect_mismatch``,
``lesion_larger_than_patch``.

Each patch is a ``(1, patch_size, patch_size)`` float16 ``.npy`` file in
``cache_dir/<key>/``, where ``key`` is a digest of the items (paths, inversion flags,
findings) and the parameters; ``index.json`` in that folder holds the samples and the
report, so a second call with the same inputs reads no image.

The extraction leaves torch's global random state as it found it (a MONAI ``DataLoader``
re-seeds it and its workers draw from it): a run that extracts the patches and one that reads
them from the cache then initialise and shuffle their models identically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, EnsureTyped, LoadImaged, SelectItemsd

from monai_mammo.data.schema import pathology_to_label
from monai_mammo.exceptions import MammoConfigError, MammoDataError, MammoSkip
from monai_mammo.transforms.io import LoadMammogram
from monai_mammo.transforms.patches import LesionCenteredCrop

__all__ = ["extract_calc_patches", "calc_patch_transform", "SKIP_REASONS", "load_patch"]

logger = logging.getLogger(__name__)

SKIP_REASONS = (
    "not_calcification",
    "no_pathology",
    "unreadable_image",
    "constant_image",
    "image_smaller_than_patch",
    "no_location",
    "empty_bbox",
    "bad_bbox",
    "unreadable_mask",
    "empty_mask",
    "mask_aspect_mismatch",
    "lesion_larger_than_patch",
)
"""Reasons a finding gives no patch (keys of the report's ``skip_counts``)."""

_CACHE_VERSION = 1  # bump when the extraction changes, so old caches are not reused


def load_patch(path: str | os.PathLike) -> np.ndarray:
    """A cached patch as float32 ``(1, h, w)`` in [0, 1].

    Args:
        path: a sample's ``image`` (``.npy``).

    Returns:
        The patch.

    Example::

        patch = load_patch(result["samples"][0]["image"])
    """
    return np.load(path).astype(np.float32)


def calc_patch_transform(augment: Callable[[Any], Any] | None = None) -> Compose:
    """The transform turning a cached patch sample into a training/evaluation item.

    ``LoadImaged`` (MONAI's ``NumpyReader``) -> float32 tensor ``(1, h, w)`` -> optional
    augmentation -> only ``image`` and ``label`` kept (the other sample keys may be None,
    which batches cannot collate).

    Args:
        augment: a dict transform applied to the loaded ``image`` (e.g. flips); None: none.

    Returns:
        The composed transform, for :func:`~monai_mammo.engines.roi_training.fit_classifier`
        (``transform_train`` / ``transform_eval``) and
        :func:`~monai_mammo.engines.roi_training.predict_binary`.

    Example::

        fit_classifier(net, train, val, epochs=40, lr=1e-6,
                       transform_train=calc_patch_transform(RandFlipd("image", prob=0.5)),
                       transform_eval=calc_patch_transform())
    """
    steps: list[Callable[[Any], Any]] = [
        LoadImaged("image", reader="NumpyReader", image_only=True),
        EnsureTyped("image", dtype=torch.float32, track_meta=False),
    ]
    if augment is not None:
        steps.append(augment)
    steps.append(SelectItemsd(["image", "label"]))
    return Compose(steps)


def _finding_label(finding: Mapping[str, Any]) -> int | None:
    return pathology_to_label(finding.get("pathology"))


class _ItemExtractor:
    """Cut the patches of one ``{"position": i, "item": item}``; picklable, run in the DataLoader workers.

    Returns ``{"samples": [...], "skipped": [...], "rescaled_masks": n, "reinverted": bool}``.
    """

    def __init__(self, folder: Path, patch_size: int, aspect_tolerance: float) -> None:
        self.folder = folder
        self.patch_size = patch_size
        self.aspect_tolerance = aspect_tolerance
        self.cropper = LesionCenteredCrop(patch_size)
        self.loader = LoadMammogram()
        self.mask_loader = LoadMammogram(as_mask=True)

    def __call__(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        position, item = int(entry["position"]), entry["item"]
        image_path = str(item.get("image"))
        out: dict[str, Any] = {"samples": [], "skipped": [], "rescaled_masks": 0, "reinverted": False}

        def skip(index: int, reason: str, message: str) -> None:
            out["skipped"].append(
                {
                    "source": image_path,
                    "finding_id": f"{image_path}#{index}",
                    "reason": reason,
                    "message": message,
                }
            )

        wanted = []
        for index, finding in enumerate(item.get("findings") or []):
            if finding.get("type") != "calcification":
                skip(index, "not_calcification", f"a {finding.get('type')!r} finding")
            elif _finding_label(finding) is None:
                skip(
                    index,
                    "no_pathology",
                    f"pathology {finding.get('pathology')!r} is neither benign nor malignant",
                )
            else:
                wanted.append(index)
        if not wanted:
            return out
        try:
            image = self._image(item)
        except MammoSkip as error:
            for index in wanted:
                skip(index, error.reason, error.problem)
            return out
        out["reinverted"] = bool(item.get("inverted"))
        shape = (int(image.shape[-2]), int(image.shape[-1]))
        if shape[0] < self.patch_size or shape[1] < self.patch_size:
            for index in wanted:
                skip(
                    index,
                    "image_smaller_than_patch",
                    f"image {shape[0]}x{shape[1]} is smaller than the {self.patch_size} px patch (never padded)",
                )
            return out
        for index in wanted:
            finding = item["findings"][index]
            try:
                box, rescaled = self._finding_box(finding, shape, image_path)
                patch_box = self._patch_box(box, shape, image_path)
            except MammoSkip as error:
                skip(index, error.reason, error.problem)
                continue
            out["rescaled_masks"] += int(rescaled)
            y0, x0, y1, x1 = patch_box
            path = self.folder / f"{position:06d}_{index:03d}.npy"
            np.save(path, image[:, y0:y1, x0:x1].astype(np.float16))
            out["samples"].append(
                {
                    "image": str(path),
                    "label": _finding_label(finding),
                    "source": item.get("source"),
                    "finding_id": f"{image_path}#{index}",
                    "image_path": image_path,
                    "patient_id": item.get("patient_id"),
                    "split": item.get("split"),
                    "pathology": finding.get("pathology"),
                    "lesion_box": list(box),
                    "patch_box": list(patch_box),
                }
            )
        return out

    def _image(self, item: Mapping[str, Any]) -> np.ndarray:
        """The (1, H, W) image in [0, 1], re-inverted when flagged.

        Raises:
            MammoSkip: ``unreadable_image`` or ``constant_image``.
        """
        path = str(item.get("image"))
        try:
            loaded = self.loader(path, item.get("laterality"), item.get("view"))
        except MammoDataError as error:
            raise MammoSkip(error.problem, path, reason="unreadable_image") from error
        image = np.asarray(loaded, dtype=np.float32)
        low, high = float(image.min()), float(image.max())
        if not high > low:
            raise MammoSkip("constant image", path, reason="constant_image")
        image = (image - low) / (high - low)
        return 1.0 - image if item.get("inverted") else image

    def _finding_box(
        self, finding: Mapping[str, Any], shape: tuple[int, int], source: str
    ) -> tuple[tuple[int, int, int, int], bool]:
        """The finding's box in image pixels, and whether it came from a rescaled mask.

        Raises:
            MammoSkip: ``no_location``, ``empty_bbox``, ``bad_bbox``, ``unreadable_mask``,
                ``empty_mask`` or ``mask_aspect_mismatch``.
        """
        bbox = finding.get("bbox")
        if bbox is not None:
            y0, x0, y1, x1 = (int(v) for v in bbox)
            if y1 <= y0 or x1 <= x0:
                raise MammoSkip(f"empty bounding box {list(bbox)}", source, reason="empty_bbox")
            if y0 < 0 or x0 < 0 or y1 > shape[0] or x1 > shape[1]:
                raise MammoSkip(
                    f"bounding box {list(bbox)} outside the {shape} image", source, reason="bad_bbox"
                )
            return (y0, x0, y1, x1), False
        mask_ref = finding.get("mask")
        if mask_ref is None:
            raise MammoSkip("the finding has neither a bounding box nor a mask", source, reason="no_location")
        if isinstance(mask_ref, (str, os.PathLike)):
            try:
                mask = np.asarray(self.mask_loader(str(mask_ref)))[0] > 0
            except MammoDataError as error:
                raise MammoSkip(error.problem, mask_ref, reason="unreadable_mask") from error
        else:
            mask = np.asarray(mask_ref).reshape(np.asarray(mask_ref).shape[-2:]) > 0
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size == 0:
            raise MammoSkip("empty ROI mask", str(mask_ref), reason="empty_mask")
        box = (int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)
        if mask.shape == shape:
            return box, False
        image_aspect, mask_aspect = shape[0] / shape[1], mask.shape[0] / mask.shape[1]
        if abs(mask_aspect - image_aspect) > self.aspect_tolerance * image_aspect:
            raise MammoSkip(
                f"ROI mask {mask.shape[0]}x{mask.shape[1]} has another aspect ratio than its image "
                f"{shape[0]}x{shape[1]}; rejected (not stretched)",
                str(mask_ref),
                reason="mask_aspect_mismatch",
            )
        sy, sx = shape[0] / mask.shape[0], shape[1] / mask.shape[1]
        scaled = (
            int(np.floor(box[0] * sy)),
            int(np.floor(box[1] * sx)),
            min(shape[0], int(np.ceil(box[2] * sy))),
            min(shape[1], int(np.ceil(box[3] * sx))),
        )
        return scaled, True

    def _patch_box(
        self, box: tuple[int, int, int, int], shape: tuple[int, int], source: str
    ) -> tuple[int, int, int, int]:
        """The patch box around ``box``, inside the image.

        Raises:
            MammoSkip: ``lesion_larger_than_patch``.
        """
        height, width = box[2] - box[0], box[3] - box[1]
        if height > self.patch_size or width > self.patch_size:
            raise MammoSkip(
                f"lesion of {height}x{width} px does not fit in a {self.patch_size} px patch",
                source,
                reason="lesion_larger_than_patch",
            )
        return self.cropper.compute_patch_box(shape, bbox=list(box), source=source)


def _cache_key(items: Sequence[Mapping[str, Any]], params: Mapping[str, Any]) -> str:
    described = [
        {
            "image": str(item.get("image")),
            "inverted": bool(item.get("inverted")),
            "findings": [
                {key: finding.get(key) for key in ("type", "pathology", "bbox", "mask")}
                for finding in item.get("findings") or []
            ],
        }
        for item in items
    ]
    blob = json.dumps({"items": described, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _identity(batch: Any) -> Any:
    return batch


def extract_calc_patches(
    items: Sequence[Mapping[str, Any]],
    cache_dir: str | os.PathLike,
    *,
    patch_size: int = 674,
    num_workers: int = 0,
    aspect_tolerance: float = 0.01,
) -> dict[str, Any]:
    """Cut (or read from the cache) one lesion-centred patch per benign/malignant calcification.

    Args:
        items: datalist items (schema of :mod:`monai_mammo.data.schema`; findings with
            ``bbox`` or ``mask`` paths; optional ``"inverted"``), e.g. CBIS-DDSM items or
            :func:`~monai_mammo.data.indexers.bbox_csv.omidb_filter` output.
        cache_dir: cache root; the set goes to ``cache_dir/<key>/``.
        patch_size: side of the square patches (native resolution; 674 in the paper).
        num_workers: DataLoader workers (images are read and patches written in the workers).
        aspect_tolerance: largest relative difference between a mask's and its image's
            aspect ratio for the mask to be rescaled instead of rejected.

    Returns:
        ``{"samples": [{"image": npy path, "label": 0|1, "source", "finding_id"
        ("<image path>#<finding index>"), "image_path", "patient_id", "split", "pathology",
        "lesion_box", "patch_box"}], "report": {"images", "findings", "patches",
        "skip_counts": {reason: n}, "skipped": [{"source", "finding_id", "reason",
        "message"}], "rescaled_masks", "reinverted_images"}, "folder": str, "params": {...}}``.

    Raises:
        MammoConfigError: ``patch_size < 1`` or a negative ``aspect_tolerance``.

    Example::

        kept, _ = omidb_filter(index_bbox_csv("/data/omi").items)
        omi = extract_calc_patches(kept, "cache/calc_patches")
        print(omi["report"]["skip_counts"])  # {"lesion_larger_than_patch": 3}
    """
    if int(patch_size) < 1:
        raise MammoConfigError(f"patch_size must be a positive number of pixels, got {patch_size}")
    if aspect_tolerance < 0:
        raise MammoConfigError(f"aspect_tolerance must be >= 0, got {aspect_tolerance}")
    params = {
        "patch_size": int(patch_size),
        "aspect_tolerance": float(aspect_tolerance),
        "version": _CACHE_VERSION,
    }
    folder = Path(cache_dir) / _cache_key(items, params)
    index_file = folder / "index.json"
    if index_file.is_file():
        logger.info("calcification patches found in cache %s", folder)
        return json.loads(index_file.read_text())  # type: ignore[no-any-return]
    folder.mkdir(parents=True, exist_ok=True)
    samples: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    rescaled = reinverted = 0
    with torch.random.fork_rng(devices=[]):  # a cache hit and a miss leave the same random state
        loader = DataLoader(
            Dataset(
                [{"position": i, "item": item} for i, item in enumerate(items)],
                transform=_ItemExtractor(folder, int(patch_size), aspect_tolerance),
            ),
            batch_size=None,
            num_workers=num_workers,
            collate_fn=_identity,
        )
        for result in loader:
            samples += result["samples"]
            skipped += result["skipped"]
            rescaled += result["rescaled_masks"]
            reinverted += int(result["reinverted"])
    report = {
        "images": len(items),
        "findings": sum(len(item.get("findings") or []) for item in items),
        "patches": len(samples),
        "skip_counts": dict(Counter(record["reason"] for record in skipped)),
        "skipped": skipped,
        "rescaled_masks": rescaled,
        "reinverted_images": reinverted,
    }
    summary = {"samples": samples, "report": report, "folder": str(folder), "params": params}
    index_file.write_text(json.dumps(summary, indent=1, default=str))
    if skipped:
        logger.warning(
            "%d of %d findings gave no patch: %s (see %s)",
            len(skipped),
            report["findings"],
            report["skip_counts"],
            index_file,
        )
    return summary
