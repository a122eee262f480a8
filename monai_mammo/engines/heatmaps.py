"""Benign and malignant patch-classifier heatmaps of Wu et al. 2019 (NYU multi-view classifier).

The 4-class patch classifier (class order :data:`~monai_mammo.transforms.tissue_patches.NYU_PATCH_CLASSES`:
malignant, benign, outside, negative) is applied with a sliding window over the breast crop,
flipped to face right and standardised once. Every pixel's heatmap value is the mean softmax
probability of the patches covering it::

    heatmap[c](p) = sum over patches k covering p of P_k(c) / number of patches covering p

for ``c`` = benign and malignant; the result is a float32 ``(2, H, W)`` array
``[benign, malignant]`` of the crop's size.

Patch grid (:func:`patch_starts`, per axis, as the reference code): ``n = (L - P) // S + 2``
patches when ``(L - P) % S != 0`` (``n = (L - P) / S + 1`` with all strides ``S`` when it is
0), the first at 0 and the last ending at ``L``, the ``n - 1`` strides evened out: they take
the two integer values around ``(L - P) / (n - 1)`` (67–70 for ``P = 256, S = 70`` on
mammogram-sized crops). The reference places the shorter strides at random; here they are
spread deterministically (``start_i = i * (L - P) // (n - 1)``). An axis shorter than the
patch gets one patch at 0, zero-padded at the end (the reference cannot handle it).

Two equivalent implementations:

* :func:`heatmaps_loop`: the plain reference loop, one patch per forward pass.
* :func:`heatmaps_batched`: MONAI's ``PatchInferer`` with :class:`StridedPatchSplitter`
  (the grid above) and ``AvgMerger`` (each patch adds its two probabilities over its box and
  the merger divides by the overlap count), in batches under ``torch.inference_mode``, with
  channels-last tensors and float16 autocast on CUDA. Its maps equal the loop's to float32
  precision (without AMP).

:func:`generate_heatmaps` runs a datalist: load -> :class:`~monai_mammo.transforms.breast.CropBreastd`
-> :class:`~monai_mammo.transforms.breast.OrientBreastd` (breast facing right) ->
standardise -> heatmaps -> inverse orientation and crop, so that the saved maps have the
geometry of the original image (zeros outside the crop) and
:class:`~monai_mammo.transforms.channels.StackHeatmapsd` can stack them onto the freshly
loaded image. Files follow :func:`~monai_mammo.transforms.channels.heatmap_paths`.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Hashable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import NdarrayOrTensor
from monai.data import MetaTensor
from monai.inferers import AvgMerger, PatchInferer, Splitter
from torch import nn

from monai_mammo.exceptions import MammoConfigError, MammoDataError, MammoGeometryError, MammoSkip
from monai_mammo.transforms.breast import CropBreastd, OrientBreastd
from monai_mammo.transforms.channels import (
    HEATMAP_BENIGN_KEY,
    HEATMAP_MALIGNANT_KEY,
    heatmap_paths,
    image_stem,
    save_heatmap_nifti,
)
from monai_mammo.transforms.intensity import StandardizeImageChannel
from monai_mammo.transforms.io import LoadMammogramd
from monai_mammo.transforms.tissue_patches import NYU_PATCH_CLASSES

__all__ = [
    "HEATMAP_CHANNELS",
    "StridedPatchSplitter",
    "patch_starts",
    "heatmaps_loop",
    "heatmaps_batched",
    "default_batch_size",
    "generate_heatmaps",
]

HEATMAP_CHANNELS = ("benign", "malignant")
"""Channel order of the heatmap arrays (and of the stacked image channels after the image)."""
_CLASS_ROWS = [NYU_PATCH_CLASSES.index(name) for name in HEATMAP_CHANNELS]


def patch_starts(length: int, patch: int = 256, stride: int = 70) -> list[int]:
    """Start positions of the sliding-window patches along one axis (see the module docs).

    Args:
        length: the axis length ``L`` in pixels.
        patch: patch side ``P``.
        stride: nominal stride ``S`` (at most ``P``, so that every pixel is covered).

    Returns:
        The increasing starts; the first is 0 and the last ``L - P`` (``[0]`` when ``L <= P``).

    Raises:
        MammoConfigError: a non-positive size or a stride larger than the patch.

    Example:
        >>> patch_starts(600)  # (600 - 256) // 70 + 2 = 6 patches, strides 68 and 69
        [0, 68, 137, 206, 275, 344]
    """
    if min(length, patch, stride) < 1 or stride > patch:
        raise MammoConfigError(
            f"need length, patch, stride >= 1 and stride <= patch, got {length}, {patch}, {stride}"
        )
    span = length - patch
    if span <= 0:
        return [0]
    n = span // stride + (1 if span % stride == 0 else 2)
    return [i * span // (n - 1) for i in range(n)]


def _as_plane(image: NdarrayOrTensor) -> torch.Tensor:
    """A (H, W) or (1, H, W) image as a plain float32 (H, W) tensor.

    Raises:
        MammoDataError: another shape, or non-finite values.
    """
    data = image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != 2:
        raise MammoDataError(f"expected a (H, W) or (1, H, W) image, got shape {tuple(image.shape)}")
    data = data.to(torch.float32)
    if not bool(torch.isfinite(data).all()):
        raise MammoDataError("the image contains NaN/inf values")
    return data


def _pad_to(plane: torch.Tensor, patch: int) -> torch.Tensor:
    """Zero-pad the end of each spatial axis shorter than ``patch`` (last two axes)."""
    h, w = plane.shape[-2:]
    return F.pad(plane, (0, max(patch - w, 0), 0, max(patch - h, 0)))


def _probabilities(logits: torch.Tensor) -> torch.Tensor:
    """``(B, 2)`` [benign, malignant] softmax probabilities (float32) of ``(B, 4)`` logits.

    Raises:
        MammoConfigError: the network does not output one logit per patch class.
    """
    if logits.ndim != 2 or logits.shape[1] != len(NYU_PATCH_CLASSES):
        raise MammoConfigError(
            f"the patch classifier must output (B, {len(NYU_PATCH_CLASSES)}) logits {NYU_PATCH_CLASSES}, "
            f"got shape {tuple(logits.shape)}"
        )
    return torch.softmax(logits.float(), dim=1)[:, _CLASS_ROWS]


class StridedPatchSplitter(Splitter):
    """MONAI ``Splitter`` yielding the :func:`patch_starts` grid of a ``(B, 1, H, W)`` image.

    Axes shorter than the patch are zero-padded at the end (``get_padded_shape``).

    Args:
        patch_size: patch side.
        stride: nominal stride.

    Raises:
        MammoConfigError: invalid sizes.

    Example:
        >>> [loc for _, loc in StridedPatchSplitter(256, 70)(torch.zeros(1, 1, 300, 256))]
        [(0, 0), (44, 0)]
    """

    def __init__(self, patch_size: int = 256, stride: int = 70) -> None:
        patch_starts(patch_size, patch_size, stride)  # validates the sizes
        super().__init__(patch_size)
        self.patch = int(patch_size)
        self.stride = int(stride)

    def get_input_shape(self, inputs: Any) -> tuple:
        """Spatial shape ``(H, W)`` of the ``(B, C, H, W)`` input."""
        return tuple(int(s) for s in inputs.shape[2:])

    def get_padded_shape(self, inputs: Any) -> tuple:
        """Spatial shape covered by the patches: each axis at least ``patch_size``."""
        return tuple(max(s, self.patch) for s in self.get_input_shape(inputs))

    def __call__(self, inputs: Any) -> Iterator[tuple[torch.Tensor, Sequence[int]]]:
        """Yield ``(patch (B, C, P, P), (y, x))`` row by row.

        Args:
            inputs: the ``(B, C, H, W)`` tensor.

        Returns:
            An iterator over the patches and their top-left corners.
        """
        height, width = self.get_input_shape(inputs)
        padded = _pad_to(inputs, self.patch)
        p = self.patch
        for y in patch_starts(height, p, self.stride):
            for x in patch_starts(width, p, self.stride):
                yield padded[..., y : y + p, x : x + p], (y, x)


def heatmaps_loop(
    network: nn.Module,
    image: NdarrayOrTensor,
    patch_size: int = 256,
    stride: int = 70,
    device: str | torch.device = "cpu",
    in_channels: int = 3,
) -> np.ndarray:
    """Reference heatmaps: one forward pass per patch, float32, accumulated patch by patch.

    Args:
        network: the 4-class patch classifier (logits; put in eval mode and moved to ``device``).
        image: the standardised, right-facing crop, ``(H, W)`` or ``(1, H, W)``.
        patch_size: patch side (Wu et al.: 256).
        stride: nominal stride (Wu et al.: 70).
        device: where the network runs.
        in_channels: channels the grey patch is repeated to (3 for the DenseNet).

    Returns:
        float32 ``(2, H, W)`` [benign, malignant] mean patch probabilities.

    Raises:
        MammoDataError: a malformed image.
        MammoConfigError: invalid sizes or a network without 4 outputs.

    Example:
        >>> maps = heatmaps_loop(PatchClassifier("densenet121", 4, 3), crop)  # doctest: +SKIP
    """
    plane = _as_plane(image)
    height, width = plane.shape
    padded = _pad_to(plane, patch_size)
    sums = torch.zeros((len(HEATMAP_CHANNELS), *padded.shape), dtype=torch.float32)
    counts = torch.zeros(padded.shape, dtype=torch.int32)
    network.to(device).eval()
    p = patch_size
    with torch.no_grad():
        for y in patch_starts(height, p, stride):
            for x in patch_starts(width, p, stride):
                patch = padded[y : y + p, x : x + p].expand(1, in_channels, p, p).to(device)
                probs = _probabilities(network(patch))[0].cpu()
                sums[:, y : y + p, x : x + p] += probs[:, None, None]
                counts[y : y + p, x : x + p] += 1
    return (sums / counts)[:, :height, :width].numpy()


def default_batch_size(device: str | torch.device) -> int:
    """Patches per forward pass when none is given: 4 on the CPU, 64 on an accelerator.

    On 2 AMD EPYC cores, DenseNet-121 on 256 x 256 patches ran 32.7 patches/s at batch 4,
    28.3 at 8 and 17.6 at 32 (`benchmarks/heatmaps.py`, see docs/performance.md).
    """
    return 4 if torch.device(device).type == "cpu" else 64


def _autocast(device: torch.device, amp: bool, cpu_bf16: bool) -> Any:
    """float16 autocast on CUDA with ``amp``, bfloat16 on the CPU with ``cpu_bf16``, else nothing."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    if cpu_bf16 and device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


def heatmaps_batched(
    network: nn.Module,
    image: NdarrayOrTensor,
    patch_size: int = 256,
    stride: int = 70,
    batch_size: int | None = None,
    device: str | torch.device = "cpu",
    amp: bool = True,
    in_channels: int = 3,
    channels_last: bool = True,
    cpu_bf16: bool = False,
) -> np.ndarray:
    """Batched heatmaps with MONAI's ``PatchInferer`` (same maps as :func:`heatmaps_loop`).

    Args:
        network: the 4-class patch classifier (logits). It is put in eval mode and moved to
            ``device``; with ``channels_last`` its parameters are converted in place to the
            channels-last memory format (values unchanged).
        image: the standardised, right-facing crop, ``(H, W)`` or ``(1, H, W)``.
        patch_size: patch side.
        stride: nominal stride.
        batch_size: patches per forward pass; None: :func:`default_batch_size` (4 on the
            CPU, where larger batches of 256-pixel DenseNet patches overflow the caches and run
            slower, 64 on CUDA).
        device: where the network runs (the image and the merger follow).
        amp: float16 autocast when ``device`` is CUDA (ignored elsewhere; probabilities are
            accumulated in float32).
        in_channels: channels the grey patches are repeated to.
        channels_last: run the network on channels-last tensors (faster convolutions on CPU
            and recent GPUs).
        cpu_bf16: bfloat16 autocast when ``device`` is the CPU (opt-in: about 3x faster on
            CPUs with native bf16, e.g. AVX512-BF16/AMX; probabilities differ from float32 by
            about 1e-3, so the float32 agreement with :func:`heatmaps_loop` no longer holds).

    Returns:
        float32 ``(2, H, W)`` [benign, malignant] mean patch probabilities.

    Raises:
        MammoDataError: a malformed image.
        MammoConfigError: invalid sizes or a network without 4 outputs.

    Example:
        >>> maps = heatmaps_batched(PatchClassifier("densenet121", 4, 3), crop, device="cuda")  # doctest: +SKIP
    """
    device = torch.device(device)
    batch_size = default_batch_size(device) if batch_size is None else batch_size
    if batch_size < 1:
        raise MammoConfigError(f"batch_size must be >= 1, got {batch_size}")
    plane = _as_plane(image).to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    network.to(device).eval()
    if channels_last:
        network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    p = patch_size

    def to_channels(patches: torch.Tensor) -> torch.Tensor:
        return patches.expand(-1, in_channels, -1, -1).contiguous(memory_format=memory_format)

    def to_votes(logits: torch.Tensor) -> torch.Tensor:
        return _probabilities(logits)[:, :, None, None].expand(-1, -1, p, p)

    inferer = PatchInferer(
        splitter=StridedPatchSplitter(patch_size, stride),
        merger_cls=AvgMerger,
        batch_size=batch_size,
        preprocessing=to_channels,
        postprocessing=to_votes,
        count_dtype=torch.int32,
        device=device,
    )
    with torch.inference_mode(), _autocast(device, amp, cpu_bf16):
        merged = inferer(plane[None, None], network)
    return merged[0].float().cpu().numpy()


def _heatmaps_in_original_geometry(
    item: Mapping[str, Any],
    image_key: str,
    transforms: tuple[LoadMammogramd, CropBreastd, OrientBreastd],
    network: nn.Module,
    options: Mapping[str, Any],
) -> tuple[np.ndarray, dict[str, Any]]:
    """Heatmaps of one datalist item in its original image geometry, and the loaded image's metadata."""
    load, crop, orient = transforms
    if not item.get(image_key):
        raise MammoSkip(f"the item has no {image_key!r}", None, "missing_image_key")
    loaded = load(cast(dict[Hashable, Any], dict(item)))
    reference = dict(loaded[image_key].meta)
    oriented = orient(crop(loaded))
    image = oriented[image_key]
    maps = heatmaps_batched(network, StandardizeImageChannel()(image), **options)
    stacked = MetaTensor(torch.from_numpy(maps))
    stacked.copy_meta_from(image)
    restored = crop.inverse(orient.inverse({image_key: stacked}))[image_key]
    original = tuple(int(s) for s in loaded[image_key].shape[1:])
    if tuple(restored.shape[1:]) != original:
        raise MammoGeometryError(
            f"restored heatmaps have size {tuple(restored.shape[1:])}, the image {original}", item[image_key]
        )
    return np.asarray(restored.as_tensor().numpy(), dtype=np.float32), reference


def generate_heatmaps(
    items: Sequence[Mapping[str, Any]],
    network: nn.Module,
    heatmap_dir: str | os.PathLike,
    *,
    patch_size: int = 256,
    stride: int = 70,
    batch_size: int | None = None,
    device: str | torch.device = "cpu",
    amp: bool = True,
    cpu_bf16: bool = False,
    image_key: str = "image",
    crop_kwargs: Mapping[str, Any] | None = None,
    manifest_name: str = "heatmaps.json",
) -> Path:
    """Compute, save and list the heatmaps of a datalist, in each original image's geometry.

    Per item: :class:`LoadMammogramd` -> :class:`CropBreastd` -> :class:`OrientBreastd` (breast
    facing right) -> standardisation ``(x - mean) / max(std, 1e-5)`` -> :func:`heatmaps_batched`
    -> inverse orientation and crop (zeros outside the breast crop) -> ``<stem>_benign.nii.gz``
    and ``<stem>_malignant.nii.gz`` under ``heatmap_dir`` (:func:`heatmap_paths`; the loaded
    image's affine is stored). An item that fails (unreadable image, no breast, ...) is skipped
    and reported, not fatal.

    Args:
        items: datalist items (``image_key`` path; ``laterality``/``view``/``horizontal_flip``
            complete the image's metadata for the crop and the orientation).
        network: the 4-class patch classifier (see :func:`heatmaps_batched`).
        heatmap_dir: output folder (created).
        patch_size: patch side.
        stride: nominal stride.
        batch_size: patches per forward pass; None: :func:`default_batch_size` (4 on the
            CPU, where larger batches of 256-pixel DenseNet patches overflow the caches and run
            slower, 64 on CUDA).
        device: where the network runs.
        amp: float16 autocast on CUDA.
        cpu_bf16: bfloat16 autocast on the CPU (opt-in, see :func:`heatmaps_batched`).
        image_key: the image path key.
        crop_kwargs: arguments of :class:`CropBreastd` (e.g. ``{"mode": "otsu"}`` for
            backgrounds that are not exactly zero; ``radius``/``buffer`` for small images).
        manifest_name: file name of the manifest under ``heatmap_dir``.

    Returns:
        The manifest path: JSON ``{"items": [...], "summary": {...}}``; the items are the
        processed input items with ``heatmap_benign`` and ``heatmap_malignant`` (absolute
        paths) added; the summary counts ``images``, ``written``, ``skip_counts`` (per
        reason: the :class:`MammoSkip` reason or the error class name) and lists ``skipped``
        (``source``, ``reason``, ``message``), with ``patch_size`` and ``stride``.

    Raises:
        MammoConfigError: two images share a file stem (their heatmap files would collide),
            or invalid sizes.

    Example::

        manifest = generate_heatmaps(index_nyu(root).items, classifier, "/out/heatmaps", device="cuda")
    """
    stems = Counter(image_stem(item[image_key]) for item in items if item.get(image_key))
    clashes = sorted(stem for stem, n in stems.items() if n > 1)
    if clashes:
        raise MammoConfigError(
            f"several images share the stem(s) {clashes[:5]}: their heatmap files would collide"
        )
    patch_starts(patch_size, patch_size, stride)  # validates the sizes before any work
    out_dir = Path(heatmap_dir).expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    transforms = (
        LoadMammogramd(image_key),
        CropBreastd(image_key, **dict(crop_kwargs or {})),
        OrientBreastd(image_key),
    )
    options = {
        "patch_size": patch_size,
        "stride": stride,
        "batch_size": batch_size,
        "device": device,
        "amp": amp,
        "cpu_bf16": cpu_bf16,
    }
    written: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for position, item in enumerate(items):
        try:
            maps, reference = _heatmaps_in_original_geometry(item, image_key, transforms, network, options)
        except MammoDataError as error:
            reason = error.reason if isinstance(error, MammoSkip) else type(error).__name__
            source = error.source or str(item.get(image_key) or f"items[{position}]")
            skipped.append({"source": source, "reason": reason, "message": error.problem})
            continue
        benign, malignant = heatmap_paths(item[image_key], out_dir)
        save_heatmap_nifti(benign, maps[0], reference)
        save_heatmap_nifti(malignant, maps[1], reference)
        written.append({**item, HEATMAP_BENIGN_KEY: str(benign), HEATMAP_MALIGNANT_KEY: str(malignant)})
    summary = {
        "images": len(items),
        "written": len(written),
        "skip_counts": dict(Counter(entry["reason"] for entry in skipped)),
        "skipped": skipped,
        "patch_size": patch_size,
        "stride": stride,
    }
    manifest = out_dir / manifest_name
    manifest.write_text(json.dumps({"items": written, "summary": summary}, indent=1))
    return manifest
