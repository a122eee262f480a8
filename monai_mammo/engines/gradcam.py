"""Grad-CAM overlays of ROI / patch classifiers (Mračko et al.'s error analysis).

:func:`gradcam_maps` computes MONAI's :class:`~monai.visualize.GradCAM` of a classifier at a
convolutional layer (by default the whole trunk's output, see :func:`default_target_layer`),
each map scaled to [0, 1]; :func:`save_gradcam_overlays` blends them as a colour map over
the grey image and writes PNGs; :func:`select_for_gradcam` picks the samples to look at
(e.g. the misclassified ones).

For a one-logit binary network the map explains the positive (malignant) logit: the class
index is 0 whatever the prediction. For multi-logit networks the default is the predicted
class.

Example::

    paths = save_gradcam_overlays(net, patches, names, "outputs/gradcam")
"""

from __future__ import annotations

import copy
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.visualize import GradCAM
from torch import nn

from monai_mammo.exceptions import MammoConfigError, MammoDataError

__all__ = [
    "TARGET_CANDIDATES",
    "default_target_layer",
    "gradcam_maps",
    "overlay_cam",
    "save_gradcam_overlays",
    "select_for_gradcam",
]

#: Child modules taken as the Grad-CAM target, in this order, when they contain a convolution.
TARGET_CANDIDATES: tuple[str, ...] = ("trunk", "backbone", "features", "encoder")

_SELECTIONS = ("misclassified", "correct", "false_positive", "false_negative", "all")


def default_target_layer(network: nn.Module) -> str:
    """Name of the layer whose output Grad-CAM explains: the last convolutional block.

    The first of :data:`TARGET_CANDIDATES` that is a child of the network and contains a
    convolution (``trunk`` of ``ZooClassifier`` and ``PatchClassifier``: the feature map just
    before global pooling), else the top-level child holding the network's last
    ``nn.Conv2d`` (``layer4`` of a MONAI ResNet, ``features`` of a MONAI DenseNet). Names of
    a ``DistributedDataParallel`` / ``DataParallel`` wrapper get the ``module.`` prefix.

    Args:
        network: the classifier.

    Returns:
        A name of ``network.named_modules()``.

    Raises:
        MammoConfigError: the network has no 2-D convolution.

    Example::

        default_target_layer(ZooClassifier("vgg16"))  # "trunk"
    """
    model = getattr(network, "module", network)
    prefix = "module." if model is not network else ""
    children = dict(model.named_children())
    for name in TARGET_CANDIDATES:
        child = children.get(name)
        if child is not None and any(isinstance(m, nn.Conv2d) for m in child.modules()):
            return prefix + name
    convolutions = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convolutions:
        raise MammoConfigError(f"{type(model).__name__} has no 2-D convolution: no Grad-CAM target layer")
    return prefix + convolutions[-1].split(".")[0]


def _as_images(images: torch.Tensor | Sequence[Any]) -> list[torch.Tensor]:
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        batch = list(images)
    elif isinstance(images, torch.Tensor):
        raise MammoDataError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    else:
        batch = list(images)
    out = []
    for index, image in enumerate(batch):
        tensor = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(np.asarray(image))
        tensor = tensor[None] if tensor.ndim == 2 else tensor
        if tensor.ndim != 3:
            raise MammoDataError(
                f"image {index} must be (C, H, W) or (H, W), got shape {tuple(tensor.shape)}"
            )
        out.append(tensor.detach().float())
    return out


def _unit_range(maps: torch.Tensor) -> torch.Tensor:
    """Scale each map of ``(B, 1, H, W)`` to [0, 1] (a constant map becomes 0)."""
    flat = maps.reshape(len(maps), -1)
    low = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - low
    scaled = torch.where(span > 0, (flat - low) / span.clamp_min(1e-12), torch.zeros_like(flat))
    return scaled.reshape(maps.shape)


def gradcam_maps(
    network: nn.Module,
    images: torch.Tensor | Sequence[Any],
    target_layer: str | None = None,
    class_index: int | None = None,
) -> list[np.ndarray]:
    """Grad-CAM of every image, upsampled to the image size and scaled to [0, 1] per image.

    The network is deep-copied first (MONAI's hooks stay on the copy; frozen parameters are
    unfrozen there so gradients reach the target layer); the caller's model is untouched.
    Images are processed one at a time, so their sizes may differ.

    Args:
        network: classifier returning logits ``(B, K)``.
        images: ``(N, C, H, W)`` tensor or a sequence of ``(C, H, W)`` / ``(H, W)`` arrays or tensors.
        target_layer: module name (``network.named_modules()``); None: :func:`default_target_layer`.
        class_index: logit to explain; None: 0 for one-logit networks, else the predicted class.

    Returns:
        One float32 ``(H, W)`` map per image (1 = most important).

    Raises:
        MammoConfigError: unknown target layer, a class index the network does not have, or a
            target layer without a spatial output.
        MammoDataError: images of a wrong shape.

    Example::

        maps = gradcam_maps(net, torch.rand(2, 1, 64, 64))
    """
    batch = _as_images(images)
    model = copy.deepcopy(getattr(network, "module", network)).eval()
    model.requires_grad_(True)
    layer = target_layer or default_target_layer(model)
    if layer not in dict(model.named_modules()):
        raise MammoConfigError(f"{type(model).__name__} has no module named {layer!r} (Grad-CAM target)")
    device = next(model.parameters()).device
    cam = GradCAM(nn_module=model, target_layers=layer, postprocessing=_unit_range)
    maps = []
    for index, image in enumerate(batch):
        x = image[None].to(device)
        try:
            with warnings.catch_warnings():
                # expected: the input does not require a gradient, the hook fires on the outputs
                warnings.filterwarnings(
                    "ignore", message="Full backward hook is firing", category=UserWarning
                )
                result = cam(x, class_idx=class_index)
        except IndexError as exc:
            raise MammoConfigError(f"class_index {class_index} is not a logit of the network: {exc}") from exc
        except (NotImplementedError, RuntimeError, ValueError) as exc:
            raise MammoConfigError(
                f"Grad-CAM at {layer!r} failed on image {index} (the target must output a (B, C, H, W) "
                f"feature map): {type(exc).__name__}: {exc}"
            ) from exc
        maps.append(result[0, 0].detach().cpu().numpy().astype(np.float32))
    return maps


def overlay_cam(image: np.ndarray, cam: np.ndarray, alpha: float = 0.4, colormap: str = "jet") -> np.ndarray:
    """Blend a [0, 1] map as a colour map over a grey image.

    Args:
        image: ``(H, W)`` grey image (any range; min-max scaled) or ``(C, H, W)`` (channels averaged).
        cam: ``(H, W)`` map in [0, 1].
        alpha: weight of the colour map (0 = image only, 1 = map only).
        colormap: a Matplotlib colour map name.

    Returns:
        ``(H, W, 3)`` uint8 RGB.

    Raises:
        MammoConfigError: ``alpha`` outside [0, 1] or an unknown colour map.
        MammoDataError: image and map sizes differ.
    """
    import matplotlib

    if not 0 <= alpha <= 1:
        raise MammoConfigError(f"alpha must be in [0, 1], got {alpha}")
    grey = np.asarray(image, dtype=np.float64)
    grey = grey.mean(axis=0) if grey.ndim == 3 else grey
    if grey.shape != cam.shape:
        raise MammoDataError(f"image {grey.shape} and Grad-CAM {cam.shape} differ in size")
    span = grey.max() - grey.min()
    grey = (grey - grey.min()) / span if span > 0 else np.zeros_like(grey)
    try:
        colours = matplotlib.colormaps[colormap](np.clip(cam, 0, 1))[..., :3]
    except KeyError as exc:
        raise MammoConfigError(f"unknown colour map {colormap!r}") from exc
    blended = (1 - alpha) * grey[..., None] + alpha * colours
    return np.round(np.clip(blended, 0, 1) * 255).astype(np.uint8)


def _file_name(name: Any) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._")
    if not stem:
        raise MammoConfigError(f"name {name!r} gives an empty file name")
    return stem if stem.lower().endswith(".png") else f"{stem}.png"


def save_gradcam_overlays(
    network: nn.Module,
    images: torch.Tensor | Sequence[Any],
    names: Sequence[Any],
    out_dir: str | os.PathLike,
    target_layer: str | None = None,
    class_index: int | None = None,
    alpha: float = 0.4,
    colormap: str = "jet",
) -> list[Path]:
    """Write one Grad-CAM overlay PNG per image: ``<out_dir>/<name>.png``, the image's size, RGB.

    Names are made file-safe (characters other than letters, digits, ``.``, ``_``, ``-``
    become ``_``). See :func:`gradcam_maps` for the maps and :func:`overlay_cam` for the blend.

    Args:
        network: classifier returning logits.
        images: ``(N, C, H, W)`` tensor or a sequence of ``(C, H, W)`` / ``(H, W)`` images.
        names: one name per image (e.g. the patch id).
        out_dir: output folder (created).
        target_layer: Grad-CAM layer; None: :func:`default_target_layer`.
        class_index: logit to explain; None: 0 for one logit, else the predicted class.
        alpha: weight of the colour map.
        colormap: Matplotlib colour map.

    Returns:
        The PNG paths, in image order.

    Raises:
        MammoConfigError: as many names as images are needed, names must give distinct files;
            see also :func:`gradcam_maps` and :func:`overlay_cam`.

    Example::

        save_gradcam_overlays(net, torch.rand(2, 1, 64, 64), ["a", "b"], "gradcam")
    """
    from PIL import Image

    batch = _as_images(images)
    files = [_file_name(n) for n in names]
    if len(files) != len(batch):
        raise MammoConfigError(f"{len(batch)} images but {len(files)} names")
    if len(set(files)) != len(files):
        raise MammoConfigError(f"names must give distinct file names, got {files}")
    if not 0 <= alpha <= 1:
        raise MammoConfigError(f"alpha must be in [0, 1], got {alpha}")
    maps = gradcam_maps(network, batch, target_layer, class_index)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for image, cam, file in zip(batch, maps, files):
        path = folder / file
        Image.fromarray(overlay_cam(image.cpu().numpy(), cam, alpha, colormap)).save(path)
        paths.append(path)
    return paths


def select_for_gradcam(
    labels: Sequence[float] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    threshold: float = 0.5,
    which: str | Sequence[int] = "misclassified",
) -> np.ndarray:
    """Indices of the samples to explain.

    Args:
        labels: binary labels (N,).
        scores: P(positive) (N,); ``score >= threshold`` is called positive.
        threshold: decision threshold.
        which: ``"misclassified"``, ``"correct"``, ``"false_positive"``, ``"false_negative"``,
            ``"all"``, or explicit indices (checked against N).

    Returns:
        Sorted int64 indices (explicit indices keep their order).

    Raises:
        MammoConfigError: unknown selection, an index outside ``0 .. N - 1``, mismatched
            lengths, labels other than 0/1 or non-finite scores.

    Example::

        select_for_gradcam([0, 1, 1], [0.7, 0.9, 0.2])  # array([0, 2])
    """
    y = np.asarray(labels, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise MammoConfigError(f"{y.size} labels but {s.size} scores")
    if not np.isin(y, (0, 1)).all() or not np.isfinite(s).all():
        raise MammoConfigError("labels must be 0 or 1 and scores finite")
    if not isinstance(which, str):
        chosen = np.asarray(which, dtype=np.int64).ravel()
        if chosen.size and (chosen.min() < 0 or chosen.max() >= y.size):
            raise MammoConfigError(f"indices must be in 0..{y.size - 1}, got {chosen.tolist()}")
        return chosen
    if which not in _SELECTIONS:
        raise MammoConfigError(f"which must be one of {list(_SELECTIONS)} or indices, got {which!r}")
    predicted = s >= threshold
    truth = y == 1
    mask = {
        "misclassified": predicted != truth,
        "correct": predicted == truth,
        "false_positive": predicted & ~truth,
        "false_negative": ~predicted & truth,
        "all": np.ones_like(truth),
    }[which]
    return np.flatnonzero(mask).astype(np.int64)
