"""Whole-image evaluation: flip test-time augmentation, metric reports with CIs, ROC and confusion plots."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from monai_mammo.engines.plots import save_figure
from monai_mammo.exceptions import MammoConfigError
from monai_mammo.metrics import (
    binary_confusion_matrix,
    bootstrap_ci,
    ensemble_scores,
    roc_auc,
    sensitivity_specificity,
    youden_threshold,
)

__all__ = [
    "FLIPS",
    "HFLIP",
    "positive_probability",
    "flip_tta_scores",
    "predict_scores",
    "classification_report",
    "ensemble_report",
    "save_roc_plot",
    "save_confusion_matrix",
    "save_predictions_csv",
]

# (name, spatial dims to flip) of the four A-AUC predictions of Shen et al.
FLIPS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("original", ()),
    ("hflip", (-1,)),
    ("vflip", (-2,)),
    ("hvflip", (-2, -1)),
)

#: The original and the horizontally flipped input: the test-time augmentation of the patch and
#: ROI classifiers (``test_a_auc`` of mass_roi_finetune and calc_patch_crossdb).
HFLIP: tuple[tuple[str, tuple[int, ...]], ...] = FLIPS[:2]


def positive_probability(logits: torch.Tensor, positive_index: int = 1) -> torch.Tensor:
    """P(positive) per sample: sigmoid of one logit, or softmax column ``positive_index`` of several.

    Args:
        logits: ``(B,)``, ``(B, 1)`` or ``(B, C >= 2)``.
        positive_index: the positive class's column when ``C >= 2``.

    Returns:
        ``(B,)`` float32 probabilities.

    Raises:
        MammoConfigError: any other shape.
    """
    x = logits.float()
    if x.ndim == 1 or (x.ndim == 2 and x.shape[1] == 1):
        return torch.sigmoid(x.reshape(-1))
    if x.ndim == 2 and x.shape[1] > positive_index:
        return torch.softmax(x, dim=1)[:, positive_index]
    raise MammoConfigError(
        f"binary scores need logits (B, 1) or (B, C > {positive_index}), got {tuple(x.shape)}"
    )


@torch.no_grad()
def flip_tta_scores(
    network: nn.Module,
    images: torch.Tensor,
    positive_index: int = 1,
    flips: Sequence[tuple[str, tuple[int, ...]]] = FLIPS,
) -> torch.Tensor:
    """Positive-class probabilities under flips (default the four of :data:`FLIPS`).

    Args:
        network: classifier returning logits (B, C) (C = 1: one sigmoid logit).
        images: batch (B, C, H, W) on the network's device.
        positive_index: index of the positive class in the logits when C > 1.
        flips: ``(name, spatial dims to flip)`` per column, e.g. :data:`HFLIP` (original and
            horizontal flip).

    Returns:
        (B, len(flips)) probabilities, columns in ``flips`` order.

    Example::

        flip_tta_scores(net, images, flips=HFLIP).mean(dim=1)  # the ROI models' TTA score
    """
    columns = []
    for _, dims in flips:
        logits = network(torch.flip(images, dims) if dims else images)
        columns.append(positive_probability(logits, positive_index))
    return torch.stack(columns, dim=1)


@torch.no_grad()
def predict_scores(
    network: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    device: torch.device | str = "cpu",
    image_key: str = "image",
    label_key: str = "label",
    id_key: str | None = None,
    tta: bool = True,
    amp: bool = False,
) -> dict[str, Any]:
    """Score every batch of a loader.

    Args:
        network: classifier returning logits (B, 2), or (B, 1) for one sigmoid logit.
        batches: an iterable of dict batches (e.g. a MONAI DataLoader).
        device: where to run.
        image_key: batch key of the images.
        label_key: batch key of the binary labels.
        id_key: batch key of an identifier to report per image; None: the images' ``filename_or_obj``
            metadata when present, else indices.
        tta: score the four flips (A-AUC) instead of the original only.
        amp: autocast on CUDA.

    Returns:
        ``{"labels": (N,), "scores": (N, A), "ids": [N]}`` with A = 4 with ``tta`` else 1.
    """
    was_training = network.training
    network.eval()
    labels: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    ids: list[Any] = []
    use_amp = amp and torch.device(device).type == "cuda"
    for batch in batches:
        images = batch[image_key].to(device)
        with torch.autocast(device_type=torch.device(device).type, enabled=use_amp):
            if tta:
                batch_scores = flip_tta_scores(network, images)
            else:
                batch_scores = positive_probability(network(images))[:, None]
        scores.append(batch_scores.cpu().numpy())
        labels.append(torch.as_tensor(batch[label_key]).reshape(-1).cpu().numpy())
        if id_key is not None:
            ids.extend(str(v) for v in batch[id_key])
        elif "filename_or_obj" in getattr(images, "meta", {}):
            ids.extend(str(v) for v in images.meta["filename_or_obj"])
    network.train(was_training)
    label_array = np.concatenate(labels).astype(np.int64) if labels else np.zeros(0, np.int64)
    score_array = np.concatenate(scores) if scores else np.zeros((0, 4 if tta else 1))
    return {"labels": label_array, "scores": score_array, "ids": ids or list(range(len(label_array)))}


def classification_report(
    labels: Sequence[int] | np.ndarray,
    scores: np.ndarray,
    threshold: float | str = 0.5,
    n_bootstrap: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    prefix: str = "test_",
) -> dict[str, float]:
    """Per-image AUC (original prediction), A-AUC (mean of augmentations), operating point, with CIs.

    Args:
        labels: binary labels (N,).
        scores: (N, A) scores, column 0 = original prediction; A = 1 gives no A-AUC.
        threshold: a probability, or ``"youden"`` to choose it on these scores (report it as such).
        n_bootstrap: bootstrap resamples for the CIs (0 disables them).
        level: CI level.
        seed: bootstrap seed.
        prefix: prefix of every metric name (``test_``, ``val_``...).

    Returns:
        ``{prefix+"auc", prefix+"auc_ci_low", prefix+"auc_ci_high", prefix+"a_auc", ...,
        prefix+"sensitivity", prefix+"specificity", prefix+"threshold", prefix+"n_images",
        prefix+"n_positive"}``.
    """
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    s = s[:, None] if s.ndim == 1 else s
    if s.shape[0] != y.shape[0]:
        raise MammoConfigError(f"{y.shape[0]} labels but {s.shape[0]} scores")
    final = s.mean(axis=1)
    out: dict[str, float] = {"n_images": float(y.size), "n_positive": float(y.sum())}
    named = {"auc": s[:, 0]}
    if s.shape[1] > 1:
        named["a_auc"] = final
    for name, values in named.items():
        if n_bootstrap > 0:
            ci = bootstrap_ci(y, values, n_resamples=n_bootstrap, level=level, seed=seed)
            out.update({name: ci.value, f"{name}_ci_low": ci.low, f"{name}_ci_high": ci.high})
        else:
            out[name] = roc_auc(y, values)
    cut = youden_threshold(y, final) if threshold == "youden" else float(threshold)
    sens, spec = sensitivity_specificity(y, final, cut)
    out.update({"threshold": cut, "sensitivity": sens, "specificity": spec})
    return {f"{prefix}{k}": float(v) for k, v in out.items()}


def ensemble_report(
    labels: np.ndarray, model_scores: Sequence[np.ndarray], **kwargs: Any
) -> dict[str, float]:
    """:func:`classification_report` of the mean of several models' (augmented) scores (prefix ``ensemble_``)."""
    kwargs.setdefault("prefix", "ensemble_")
    return classification_report(labels, ensemble_scores(model_scores)[:, None], **kwargs)


def save_roc_plot(
    labels: np.ndarray, curves: Mapping[str, np.ndarray], path: str | os.PathLike, title: str = "ROC"
) -> Path:
    """Write a ROC plot (PNG) with one curve per named score vector and its AUC in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    for name, values in curves.items():
        fpr, tpr, _ = roc_curve(labels, values)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc(labels, values):.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path)


def save_confusion_matrix(
    labels: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    path: str | os.PathLike,
    class_names: Sequence[str] = ("benign", "malignant"),
) -> tuple[Path, Path]:
    """Write the 2 x 2 confusion matrix as PNG and CSV (same stem).

    Returns:
        (png path, csv path).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = binary_confusion_matrix(labels, scores, threshold)
    png = Path(path).with_suffix(".png")
    png.parent.mkdir(parents=True, exist_ok=True)
    with open(png.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["truth \\ prediction", *class_names])
        for name, row in zip(class_names, matrix):
            writer.writerow([name, *row.tolist()])
    fig, ax = plt.subplots(figsize=(3.6, 3.2), dpi=120)
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(value), ha="center", va="center", color="black")
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=class_names, yticklabels=class_names)
    ax.set(xlabel="prediction", ylabel="truth", title=f"threshold {threshold:.3f}")
    return save_figure(fig, png), png.with_suffix(".csv")


def save_predictions_csv(
    ids: Sequence[Any], labels: np.ndarray, scores: np.ndarray, path: str | os.PathLike
) -> Path:
    """Per-image CSV: id, label, one column per augmentation (``FLIPS`` names) and their mean."""
    s = np.asarray(scores)
    s = s[:, None] if s.ndim == 1 else s
    names = [name for name, _ in FLIPS][: s.shape[1]] if s.shape[1] <= len(FLIPS) else list(range(s.shape[1]))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "label", *[f"p_malignant_{n}" for n in names], "p_malignant"])
        for ident, label, row in zip(ids, labels, s):
            writer.writerow([ident, int(label), *[f"{v:.6f}" for v in row], f"{row.mean():.6f}"])
    return out
