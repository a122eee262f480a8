"""Helpers that bundle configs call: bundle location, dataset cache, class weights, test evaluation."""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from monai_mammo.engines.evaluation import (
    classification_report,
    predict_scores,
    save_confusion_matrix,
    save_predictions_csv,
    save_roc_plot,
)
from monai_mammo.engines.tracking import MLflowTracker, default_home
from monai_mammo.exceptions import MammoConfigError, MammoDataError
from monai_mammo.metrics import youden_threshold

__all__ = [
    "running_bundle_root",
    "synthetic_dataset_dir",
    "ensure_dataset",
    "balanced_class_weights",
    "load_checkpoint",
    "evaluate_and_log",
    "predict_to_csv",
    "rank_zero_first",
    "find_images",
]

logger = logging.getLogger(__name__)


def running_bundle_root(default: str = ".") -> str:
    """The folder of the bundle whose config is running (``configs/..``), else ``default``.

    Lets a bundle run from the repository root (``--config_file bundles/X/configs/train.json``)
    and from inside its folder alike; ``--bundle_root`` still overrides it.
    """
    from monai.bundle import ConfigWorkflow

    for frame_info in inspect.stack(context=0):
        candidate = frame_info.frame.f_locals.get("self")
        if isinstance(candidate, ConfigWorkflow):
            root = candidate.config_root_path
            return str((root.parent if root.name == "configs" else root).resolve())
    return str(Path(default).resolve())


def synthetic_dataset_dir(dataset_format: str, params: Mapping[str, Any]) -> str:
    """Cache folder of a synthetic dataset: ``<MONAI_MAMMO_HOME>/datasets/synthetic-<format>-<hash>``."""
    key = json.dumps({"format": dataset_format, **params}, sort_keys=True, default=list)
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return str(default_home() / "datasets" / f"synthetic-{dataset_format}-{digest}")


def ensure_dataset(
    dataset_dir: str | os.PathLike, dataset_format: str, synthetic_dir: str, synthetic: Mapping[str, Any]
) -> str:
    """Return ``dataset_dir``, generating the synthetic dataset first when it is the synthetic cache folder.

    A user's ``--dataset_dir`` (any other folder, or a datalist JSON with
    ``dataset_format="datalist"``) is only read, never written.

    Raises:
        MammoDataError: a user folder (or datalist JSON) that does not exist.
    """
    from monai_mammo.data.prepare import DATALIST_FORMAT, ensure_synthetic_dataset

    if os.path.abspath(dataset_dir) == os.path.abspath(synthetic_dir):
        ensure_synthetic_dataset(synthetic_dir, dataset_format, **synthetic)
    elif dataset_format == DATALIST_FORMAT:
        if not os.path.isfile(dataset_dir):
            raise MammoDataError("datalist JSON not found (dataset_format 'datalist')", dataset_dir)
    elif not os.path.isdir(dataset_dir):
        raise MammoDataError(f"dataset folder not found (dataset_format {dataset_format!r})", dataset_dir)
    return str(dataset_dir)


def balanced_class_weights(
    items: Sequence[Mapping[str, Any]], num_classes: int, key: str = "label"
) -> torch.Tensor:
    """``n / (num_classes * count_c)`` per class (absent classes get weight 0).

    Raises:
        MammoDataError: an item's label is outside ``0 .. num_classes - 1``.
    """
    labels = np.array([int(item[key]) for item in items], dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise MammoDataError(f"labels must be in 0..{num_classes - 1}, found {sorted(set(labels.tolist()))}")
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, labels.size / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.as_tensor(weights, dtype=torch.float32)


def load_checkpoint(network: nn.Module, path: str | os.PathLike, key: str | None = None) -> nn.Module:
    """Load weights saved by MONAI's ``CheckpointSaver`` (or a plain state dict) safely.

    Args:
        network: the model to fill.
        path: the checkpoint file; loaded with ``weights_only=True`` (no code execution).
        key: entry of the checkpoint dict holding the state dict (``"network"``, ``"model"``);
            None guesses (``network``/``model``/``state_dict``) or takes the file as the state dict.

    Returns:
        ``network``.

    Raises:
        MammoDataError: missing, truncated or incompatible checkpoint (naming the file).
    """
    file = Path(path)
    if not file.is_file():
        raise MammoDataError("checkpoint not found", file)
    try:
        content = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for corrupt files
        raise MammoDataError(f"unreadable checkpoint ({type(exc).__name__}: {exc})", file) from exc
    state = content
    if isinstance(content, Mapping):
        for candidate in [key] if key else ["network", "model", "state_dict"]:
            if candidate in content and isinstance(content[candidate], Mapping):
                state = content[candidate]
                break
    try:
        getattr(network, "module", network).load_state_dict(state)
    except (RuntimeError, TypeError) as exc:
        raise MammoDataError(f"checkpoint does not fit {type(network).__name__}: {exc}", file) from exc
    return network


def evaluate_and_log(
    network: nn.Module,
    test_loader: Iterable[Mapping[str, Any]],
    output_dir: str | os.PathLike,
    tracker: MLflowTracker | None = None,
    checkpoint: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    val_loader: Iterable[Mapping[str, Any]] | None = None,
    device: torch.device | str = "cpu",
    threshold: float | str = "val_youden",
    n_bootstrap: int = 1000,
    seed: int = 0,
    stage: str = "test",
    amp: bool = False,
) -> dict[str, float]:
    """Evaluate a binary whole-image classifier on the test split and log everything.

    Per-image AUC, A-AUC (four flips), sensitivity/specificity at an operating point chosen on
    the validation split (Youden) or given, bootstrap CIs, ROC curve and confusion matrix PNGs,
    per-image CSV; metrics use the shared names (``test_auc``, ``test_a_auc``, ...).

    Args:
        network: the classifier (logits (B, 2)).
        test_loader: test batches (``image``, ``label``, ``image_meta_dict`` optional).
        output_dir: where the artifacts go.
        tracker: MLflow tracker (a nested ``stage`` run is opened), or None.
        checkpoint: weights to load first (best validation checkpoint), or None; several
            checkpoints evaluate their ensemble (mean of the models' A-predictions, Shen et al.),
            and each model's AUC is reported as ``test_model<k>_auc``.
        val_loader: validation batches, needed for ``threshold="val_youden"``.
        device: where to run.
        threshold: ``"val_youden"``, ``"youden"`` (on test: optimistic) or a probability.
        n_bootstrap: bootstrap resamples of the CIs.
        seed: bootstrap seed.
        stage: name of the nested MLflow run and of the artifact folder.
        amp: autocast on CUDA.

    Returns:
        The metrics dict.
    """
    if threshold == "val_youden" and val_loader is None:
        raise MammoConfigError("threshold 'val_youden' needs a val_loader")
    single = checkpoint is None or isinstance(checkpoint, (str, os.PathLike))
    checkpoints: list[Any] = [checkpoint] if single else list(checkpoint)  # type: ignore[arg-type]
    network = network.to(device)
    test_runs, val_runs = [], []
    for ckpt in checkpoints:
        if ckpt is not None:
            load_checkpoint(network, ckpt)
        test_runs.append(predict_scores(network, test_loader, device, tta=True, amp=amp))
        if threshold == "val_youden":
            val_runs.append(predict_scores(network, val_loader, device, tta=True, amp=amp))  # type: ignore[arg-type]
    out = dict(test_runs[0])
    if out["labels"].size == 0:
        raise MammoDataError("the test split is empty")
    out["scores"] = np.mean([run["scores"] for run in test_runs], axis=0)
    cut: float | str = threshold
    if val_runs:
        val_mean = np.mean([run["scores"].mean(axis=1) for run in val_runs], axis=0)
        cut = youden_threshold(val_runs[0]["labels"], val_mean)
    metrics = classification_report(
        out["labels"], out["scores"], threshold=cut, n_bootstrap=n_bootstrap, seed=seed
    )
    if len(test_runs) > 1:
        metrics["test_n_models"] = float(len(test_runs))
        for k, run in enumerate(test_runs):
            metrics[f"test_model{k}_auc"] = classification_report(
                run["labels"], run["scores"], n_bootstrap=0
            )["test_auc"]
    folder = Path(output_dir) / stage
    roc = save_roc_plot(
        out["labels"],
        {"per-image": out["scores"][:, 0], "A (4 flips)": out["scores"].mean(axis=1)},
        folder / "roc.png",
        title=f"{stage} ROC",
    )
    confusion_png, confusion_csv = save_confusion_matrix(
        out["labels"], out["scores"].mean(axis=1), metrics["test_threshold"], folder / "confusion_matrix"
    )
    predictions = save_predictions_csv(out["ids"], out["labels"], out["scores"], folder / "predictions.csv")
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=1))
    logger.info(
        "%s: AUC %.3f [%.3f, %.3f], A-AUC %.3f, sensitivity %.3f, specificity %.3f at %.3f (%d images)",
        stage,
        metrics["test_auc"],
        metrics.get("test_auc_ci_low", float("nan")),
        metrics.get("test_auc_ci_high", float("nan")),
        metrics.get("test_a_auc", float("nan")),
        metrics["test_sensitivity"],
        metrics["test_specificity"],
        metrics["test_threshold"],
        int(metrics["test_n_images"]),
    )
    if tracker is not None:
        tracker.start_stage(stage)
        tracker.log_metrics(metrics, stage=stage)
        tracker.log_metrics(metrics)  # also on the parent, for side-by-side comparison
        for artifact in (roc, confusion_png, confusion_csv, predictions, folder / "metrics.json"):
            tracker.log_artifact(artifact, stage=stage)
            tracker.log_artifact(artifact, artifact_path="evaluation")
        tracker.end_stage(stage)
    return metrics


@torch.no_grad()
def predict_to_csv(
    network: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    output_csv: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    tta: bool = True,
    amp: bool = False,
) -> Path:
    """Per-image malignancy probabilities (four flips and their mean) written as CSV.

    Batches need ``image``; ``label`` is optional (written as -1 when absent).

    Returns:
        The CSV path.
    """
    if checkpoint is not None:
        load_checkpoint(network, checkpoint)
    network = network.to(device)

    def labelled(batches: Iterable[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
        for batch in batches:
            if "label" not in batch:
                batch = {**batch, "label": torch.full((len(batch["image"]),), -1)}
            yield batch

    out = predict_scores(network, labelled(loader), device, tta=tta, amp=amp)
    path = save_predictions_csv(out["ids"], out["labels"], out["scores"], output_csv)
    logger.info("wrote %d predictions to %s", len(out["ids"]), path)
    return path


def rank_zero_first(fn: Any) -> Any:
    """Call ``fn()`` on rank 0 first, then on the other ranks (which then find its cached output).

    Without ``torch.distributed`` initialised this is just ``fn()``. Use it for dataset generation,
    indexing and patch extraction in multi-GPU runs.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return fn()
    result = fn() if dist.get_rank() == 0 else None
    dist.barrier()
    if dist.get_rank() != 0:
        result = fn()
    return result


def find_images(folder: str | os.PathLike, pattern: str = "**/*.dcm") -> list[dict[str, str]]:
    """Datalist items ``{"image": path}`` of the files under ``folder`` matching ``pattern`` (sorted).

    Raises:
        MammoDataError: nothing matches (naming the folder and the pattern).
    """
    root = Path(folder)
    files = sorted(p for p in root.glob(pattern) if p.is_file())
    if not files:
        raise MammoDataError(f"no file matches {pattern!r}", root)
    return [{"image": str(p)} for p in files]
