"""Cross-database study of Mračko et al.: train on A, on B, on A+B; evaluate each on A, B, A+B.

Given two sources (e.g. CBIS-DDSM film and an OMI-DB-like digital set), each with training
and validation patch samples (:func:`~monai_mammo.engines.calc_patches.extract_calc_patches`
``samples``, split patient-disjointly by the caller), three models are trained
(``train_<A>``, ``train_<B>``, ``train_<A>+<B>``), each validated during training on the
validation set of its own training data, then every model is scored on the validation sets
``<A>``, ``<B>`` and ``<A>+<B>``. The paper reports, per cell, the epoch with the best
accuracy on that validation set; here every cell uses the model as ``fit`` leaves it (its
best epoch on its own validation set), a stricter protocol.

Outputs in ``out_dir`` (also logged to MLflow under ``crossdb/`` when a tracker is given):

- ``crossdb_table.csv``: one row per (model, validation set): ``n``, ``accuracy``,
  ``sensitivity``, ``specificity``, ``auc``, ``f1``, ``tp``, ``fp``, ``tn``, ``fn``
  (malignant = positive, ``score >= threshold`` called malignant);
- ``crossdb_table.md``: :func:`format_table` (one 3 x 3 table per metric), also printed;
- ``crossdb_predictions.csv``: ``model, validation, id, label, score, prediction``;
- ``misclassified_by_all.json``: per validation set, the ids misclassified by all three
  models, their count, and that count's share of the models' mean number of errors;
- ``gradcam/<set>/<model>/``: with a ``gradcam`` callable, the overlays of those patches
  as seen by each model (``<set>`` = ``<A>`` and ``<B>``; ``<A>+<B>`` is their union).

MLflow metrics on the parent run: ``xdb_<model>_on_<set>_<metric>`` for accuracy,
sensitivity, specificity and auc, and ``xdb_misclassified_by_all_<set>``, where ``+`` in
names is written ``_plus_`` (MLflow refuses ``+`` in metric names). Each model trains in a
nested run (stage) named after it, opened by ``fit`` (``fit_classifier`` does).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from monai_mammo.engines.calc_patches import calc_patch_transform, load_patch
from monai_mammo.engines.tracking import MLflowTracker
from monai_mammo.exceptions import MammoConfigError
from monai_mammo.metrics.classification import binary_metrics

__all__ = [
    "CrossDbResult",
    "cross_database_study",
    "format_table",
    "metric_key",
    "TABLE_METRICS",
    "LOGGED_METRICS",
]

logger = logging.getLogger(__name__)

TABLE_METRICS = ("n", "accuracy", "sensitivity", "specificity", "auc", "f1", "tp", "fp", "tn", "fn")
"""Columns of ``crossdb_table.csv`` after ``model`` and ``validation``."""
LOGGED_METRICS = ("accuracy", "sensitivity", "specificity", "auc")
"""Metrics logged to MLflow per cell and shown by :func:`format_table`."""

FitFn = Callable[..., Any]
PredictFn = Callable[[nn.Module, Sequence[Mapping[str, Any]]], "Sequence[float] | np.ndarray"]
GradCamFn = Callable[..., Sequence[os.PathLike | str]]


@dataclass
class CrossDbResult:
    """The study's 3 x 3 table and its error analysis.

    Attributes:
        models: ``(train_<A>, train_<B>, train_<A>+<B>)``.
        sets: validation sets ``(<A>, <B>, <A>+<B>)``.
        cells: ``(model, set) -> {"n", "accuracy", "sensitivity", "specificity", "auc", "f1",
            "tp", "fp", "tn", "fn"}``.
        predictions: ``(model, set) -> {"ids": [...], "labels": array, "scores": array}``.
        misclassified: ``set -> ids`` misclassified by every model (validation-set order).
        files: name -> file written (``table_csv``, ``table_md``, ``predictions``,
            ``misclassified``, and the ``gradcam`` folder when overlays were made).
        fits: model -> what ``fit`` returned.
        threshold: the decision threshold.
    """

    models: tuple[str, str, str]
    sets: tuple[str, str, str]
    cells: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    predictions: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    misclassified: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    fits: dict[str, Any] = field(default_factory=dict)
    threshold: float = 0.5


def metric_key(model: str, validation: str, metric: str) -> str:
    """MLflow metric name of a cell: ``xdb_<model>_on_<set>_<metric>`` with ``+`` as ``_plus_``.

    Args:
        model: a model name (``train_cbis+omi``).
        validation: a validation set name.
        metric: the metric.

    Returns:
        A name MLflow accepts (characters outside ``[\\w.-]`` become ``_``).

    Example:
        >>> metric_key("train_cbis+omi", "omi", "accuracy")
        'xdb_train_cbis_plus_omi_on_omi_accuracy'
    """
    return _safe(f"xdb_{model}_on_{validation}_{metric}")


def _safe(name: str) -> str:
    """``+`` -> ``_plus_``, then characters MLflow and file systems dislike -> ``_``."""
    return re.sub(r"[^\w.\-]", "_", name.replace("+", "_plus_"))


def _sample_id(sample: Mapping[str, Any]) -> str:
    return str(sample.get("finding_id") or sample["image"])


def _labels(samples: Sequence[Mapping[str, Any]], what: str) -> np.ndarray:
    labels = np.asarray([sample.get("label") for sample in samples], dtype=object)
    if not all(label in (0, 1) for label in labels):
        raise MammoConfigError(f"{what}: every sample needs a label 0 (benign) or 1 (malignant)")
    return labels.astype(np.int64)


def _check_sources(
    sources: Mapping[str, tuple[Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]]]],
) -> tuple[str, str]:
    """The two source names, after checking the samples.

    Raises:
        MammoConfigError: not exactly two sources, an empty split, a bad label, duplicate ids.
    """
    if len(sources) != 2:
        raise MammoConfigError(f"the cross-database study takes exactly two sources, got {list(sources)}")
    names = tuple(str(name) for name in sources)
    for name, (train, val) in sources.items():
        if not train or not val:
            raise MammoConfigError(
                f"source {name!r} needs training and validation samples, got {len(train)} and {len(val)}"
            )
        _labels(train, f"source {name!r} training samples")
        _labels(val, f"source {name!r} validation samples")
    ids = [_sample_id(s) for _, val in sources.values() for s in val]
    if len(set(ids)) != len(ids):
        raise MammoConfigError("validation sample ids (finding_id) must be unique across both sources")
    return names[0], names[1]


def _default_fit(out: Path, fit_kwargs: Mapping[str, Any]) -> FitFn:
    """:func:`~monai_mammo.engines.roi_training.fit_classifier` on cached patches, one checkpoint folder per model.

    Raises:
        MammoConfigError: ``fit_kwargs`` lacks ``epochs`` or ``lr``.
    """
    from monai_mammo.engines.roi_training import fit_classifier

    missing = [key for key in ("epochs", "lr") if key not in fit_kwargs]
    if missing:
        raise MammoConfigError(f"the default fit (fit_classifier) needs {missing} in fit_kwargs")
    defaults = {"transform_train": calc_patch_transform(), "transform_eval": calc_patch_transform()}

    def fit(
        network: nn.Module,
        train: Sequence[Mapping[str, Any]],
        val: Sequence[Mapping[str, Any]],
        **kwargs: Any,
    ) -> Any:
        options = {**defaults, "checkpoint_dir": out / "checkpoints" / _safe(kwargs["stage"]), **kwargs}
        return fit_classifier(network, train, val, **options)

    return fit


def _default_predict(network: nn.Module, samples: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """:func:`~monai_mammo.engines.roi_training.predict_binary` on cached patches, on the network's device."""
    from monai_mammo.engines.roi_training import predict_binary

    device = next(network.parameters()).device
    return predict_binary(network, list(samples), transform=calc_patch_transform(), device=device)


def cross_database_study(
    sources: Mapping[str, tuple[Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]]]],
    *,
    make_network: Callable[[], nn.Module],
    fit: FitFn | None = None,
    fit_kwargs: Mapping[str, Any] | None = None,
    predict: PredictFn | None = None,
    out_dir: str | os.PathLike,
    tracker: MLflowTracker | None = None,
    gradcam: GradCamFn | None = None,
    threshold: float = 0.5,
) -> CrossDbResult:
    """Train on A, B and A+B, score every model on A, B and A+B, analyse the common errors.

    Args:
        sources: ``{A: (train samples, val samples), B: (...)}``, exactly two; samples are
            dicts with ``"image"`` (a patch ``.npy``), ``"label"`` (0 benign, 1 malignant)
            and an id ``"finding_id"`` (else ``"image"``), e.g. from
            :func:`~monai_mammo.engines.calc_patches.extract_calc_patches`.
        make_network: returns a fresh network (called once per model).
        fit: ``fit(network, train_samples, val_samples, tracker=tracker, stage=model,
            **fit_kwargs)``, training ``network`` in place and owning the MLflow stage run
            named ``model`` (opening and closing it when ``tracker`` is given); its return
            value is kept in ``fits``. Default:
            :func:`~monai_mammo.engines.roi_training.fit_classifier` with
            :func:`~monai_mammo.engines.calc_patches.calc_patch_transform` for training and
            evaluation and ``checkpoint_dir=<out_dir>/checkpoints/<model>`` (each overridable
            through ``fit_kwargs``, which must then hold ``epochs`` and ``lr``).
        fit_kwargs: further arguments of every ``fit`` call (e.g. ``epochs``, ``lr``,
            ``class_weights``, ``device``, ``transform_train``).
        predict: ``predict(network, samples) -> scores`` (probability of malignant, in sample
            order); default :func:`~monai_mammo.engines.roi_training.predict_binary` with
            :func:`~monai_mammo.engines.calc_patches.calc_patch_transform`, on the network's device.
        out_dir: folder of the tables, predictions and overlays.
        tracker: an MLflow tracker with a started parent run (None: nothing logged).
        gradcam: ``gradcam(network, images (N, C, h, w) tensor, names, out_dir) -> paths``,
            e.g. :func:`monai_mammo.engines.gradcam.save_gradcam_overlays`; None: no overlays.
        threshold: ``score >= threshold`` is called malignant.

    Returns:
        The :class:`CrossDbResult` (the table is also printed and written).

    Raises:
        MammoConfigError: not exactly two sources, empty splits, labels other than 0/1,
            duplicate validation ids, the default ``fit`` without ``epochs``/``lr``, or a
            ``predict`` returning the wrong number of scores.

    Example::

        result = cross_database_study(
            {"cbis": (cbis_train, cbis_val), "omi": (omi_train, omi_val)},
            make_network=lambda: build_zoo_classifier("resnet101"),
            fit_kwargs={"epochs": 40, "lr": 1e-6, "class_weights": "balanced"},
            out_dir="outputs/crossdb",
            tracker=tracker,
            gradcam=save_gradcam_overlays,
        )
    """
    first, second = _check_sources(sources)
    out = Path(out_dir)
    fit_options = dict(fit_kwargs or {})
    fit = fit or _default_fit(out, fit_options)
    predict = predict or _default_predict
    both = f"{first}+{second}"
    models = (f"train_{first}", f"train_{second}", f"train_{both}")
    sets = (first, second, both)
    trains = {
        models[0]: list(sources[first][0]),
        models[1]: list(sources[second][0]),
        models[2]: list(sources[first][0]) + list(sources[second][0]),
    }
    vals = {first: list(sources[first][1]), second: list(sources[second][1])}
    vals[both] = vals[first] + vals[second]
    own_val = dict(zip(models, (vals[first], vals[second], vals[both])))
    out.mkdir(parents=True, exist_ok=True)
    result = CrossDbResult(models, sets, threshold=threshold)
    networks: dict[str, nn.Module] = {}  # kept for the Grad-CAM overlays only
    for model in models:
        network = make_network()
        logger.info("cross-database study: training %s on %d patches", model, len(trains[model]))
        result.fits[model] = fit(
            network, trains[model], own_val[model], tracker=tracker, stage=model, **fit_options
        )
        for name in (first, second):
            _score(result, model, name, network, predict, vals[name])
        _combine(result, model, first, second, both)
        if gradcam is not None:
            networks[model] = network
    for name in sets:
        result.misclassified[name] = _misclassified_by_all(result, name)
    _write(result, out)
    overlays = None if gradcam is None else _gradcam(result, networks, vals, (first, second), gradcam, out)
    if overlays is not None:
        result.files["gradcam"] = overlays
    table = format_table(result)
    print(table)
    if tracker is not None:
        _log(result, tracker)
    return result


def _score(
    result: CrossDbResult,
    model: str,
    name: str,
    network: nn.Module,
    predict: PredictFn,
    samples: Sequence[Mapping[str, Any]],
) -> None:
    """Predict one validation set and fill its cell."""
    scores = np.asarray(predict(network, samples), dtype=np.float64).ravel()
    if scores.size != len(samples):
        raise MammoConfigError(
            f"predict returned {scores.size} scores for {len(samples)} samples ({model} on {name})"
        )
    labels = _labels(samples, name)
    result.predictions[model, name] = {
        "ids": [_sample_id(s) for s in samples],
        "labels": labels,
        "scores": scores,
    }
    result.cells[model, name] = {"n": float(len(samples)), **binary_metrics(labels, scores, result.threshold)}


def _combine(result: CrossDbResult, model: str, first: str, second: str, both: str) -> None:
    """The ``A+B`` cell from the predictions on ``A`` and ``B``."""
    parts = [result.predictions[model, first], result.predictions[model, second]]
    labels = np.concatenate([p["labels"] for p in parts])
    scores = np.concatenate([p["scores"] for p in parts])
    result.predictions[model, both] = {
        "ids": parts[0]["ids"] + parts[1]["ids"],
        "labels": labels,
        "scores": scores,
    }
    result.cells[model, both] = {"n": float(labels.size), **binary_metrics(labels, scores, result.threshold)}


def _errors(prediction: Mapping[str, Any], threshold: float) -> np.ndarray:
    """Boolean array: the samples a model's prediction gets wrong."""
    return np.asarray((prediction["scores"] >= threshold).astype(np.int64) != prediction["labels"])


def _misclassified_by_all(result: CrossDbResult, name: str) -> list[str]:
    wrong = np.logical_and.reduce(
        [_errors(result.predictions[m, name], result.threshold) for m in result.models]
    )
    ids = result.predictions[result.models[0], name]["ids"]
    return [sample_id for sample_id, bad in zip(ids, wrong) if bad]


def _number(value: float) -> str:
    return "nan" if math.isnan(value) else repr(float(value))


def _write(result: CrossDbResult, out: Path) -> None:
    """Write the table (CSV, Markdown), the predictions and the common errors."""
    table_csv = out / "crossdb_table.csv"
    with open(table_csv, "w", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(["model", "validation", *TABLE_METRICS])
        for model in result.models:
            for name in result.sets:
                cell = result.cells[model, name]
                writer.writerow([model, name, *(_number(cell[m]) for m in TABLE_METRICS)])
    predictions = out / "crossdb_predictions.csv"
    with open(predictions, "w", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(["model", "validation", "id", "label", "score", "prediction"])
        for (model, name), prediction in result.predictions.items():
            for sample_id, label, score in zip(prediction["ids"], prediction["labels"], prediction["scores"]):
                writer.writerow(
                    [model, name, sample_id, int(label), repr(float(score)), int(score >= result.threshold)]
                )
    common = {}
    for name, ids in result.misclassified.items():
        errors = [int(_errors(result.predictions[m, name], result.threshold).sum()) for m in result.models]
        mean_errors = float(np.mean(errors))
        common[name] = {
            "count": len(ids),
            "ids": ids,
            "errors_per_model": dict(zip(result.models, errors)),
            "share_of_mean_errors": len(ids) / mean_errors if mean_errors else 0.0,
        }
    misclassified = out / "misclassified_by_all.json"
    misclassified.write_text(json.dumps(common, indent=1))
    table_md = out / "crossdb_table.md"
    table_md.write_text(format_table(result) + "\n")
    result.files.update(
        {
            "table_csv": table_csv,
            "table_md": table_md,
            "predictions": predictions,
            "misclassified": misclassified,
        }
    )


def _overlay_name(index: int, sample: Mapping[str, Any]) -> str:
    stem = Path(str(sample.get("image_path") or sample["image"])).stem
    finding = _sample_id(sample).rpartition("#")[2]
    return re.sub(r"[^\w.\-]", "_", f"{index:03d}_{stem}_{finding}_label{sample['label']}")


def _gradcam(
    result: CrossDbResult,
    networks: Mapping[str, nn.Module],
    vals: Mapping[str, Sequence[Mapping[str, Any]]],
    names: Sequence[str],
    gradcam: GradCamFn,
    out: Path,
) -> Path | None:
    """Overlays of the patches every model got wrong, per validation set and model (None: no such patch)."""
    folder = out / "gradcam"
    written = False
    for name in names:
        wrong = set(result.misclassified[name])
        samples = [s for s in vals[name] if _sample_id(s) in wrong]
        if not samples:
            continue
        images = torch.from_numpy(np.stack([load_patch(s["image"]) for s in samples]))
        overlay_names = [_overlay_name(i, s) for i, s in enumerate(samples)]
        for model in result.models:
            gradcam(networks[model], images, overlay_names, folder / name / model)
        written = True
    return folder if written else None


def _log(result: CrossDbResult, tracker: MLflowTracker) -> None:
    """Metrics and artifacts on the parent run."""
    metrics = {
        metric_key(model, name, metric): result.cells[model, name][metric]
        for model in result.models
        for name in result.sets
        for metric in LOGGED_METRICS
    }
    metrics.update(
        {
            _safe(f"xdb_misclassified_by_all_{name}"): float(len(ids))
            for name, ids in result.misclassified.items()
        }
    )
    tracker.log_metrics(metrics)
    for path in result.files.values():
        tracker.log_artifact(path, artifact_path="crossdb" if path.is_file() else "crossdb/gradcam")


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100.0 * value:.1f}%"


def format_table(result: CrossDbResult) -> str:
    """The study as Markdown: one 3 x 3 table per metric (rows = training set, columns = validation set).

    Args:
        result: a :class:`CrossDbResult`.

    Returns:
        Markdown text: accuracy, sensitivity and specificity in percent, AUC to 3 decimals,
        ``n/a`` where undefined (e.g. sensitivity without malignant patches), then the counts
        of patches misclassified by all models.

    Example::

        print(format_table(result))
    """
    columns = [f"{name} (n={int(result.cells[result.models[0], name]['n'])})" for name in result.sets]
    lines = [f"Cross-database study (malignant when score >= {result.threshold:g})", ""]
    for metric in LOGGED_METRICS:
        lines.append(f"| {metric} | " + " | ".join(columns) + " |")
        lines.append("|---" * (len(columns) + 1) + "|")
        for model in result.models:
            values = [result.cells[model, name][metric] for name in result.sets]
            shown = [
                ("n/a" if math.isnan(v) else f"{v:.3f}") if metric == "auc" else _percent(v) for v in values
            ]
            lines.append(f"| {model} | " + " | ".join(shown) + " |")
        lines.append("")
    counts = ", ".join(f"{name}: {len(ids)}" for name, ids in result.misclassified.items())
    lines.append(f"Misclassified by all models: {counts}")
    return "\n".join(lines)
