"""Breast-level evaluation of the NYU multi-view model (Wu et al. 2019): AUC, PR-AUC, hybrids.

Exam-level predictions and labels are ``(N, 4)`` tables whose columns are the model's targets
``left_benign, right_benign, left_malignant, right_malignant`` (:data:`BREAST_TARGETS`). The
paper evaluates two breast-level tasks, *malignant / not malignant* and *benign / not benign*:
each exam contributes its two breasts to each task, so a task has up to ``2N`` cases, ordered
exam by exam (left then right). Unknown labels (negative values, NaN or None) are left out.

The cross-family names of the project (:func:`malignant_report`) are those of the malignant task:
``test_auc`` of a single un-augmented pass, ``test_a_auc`` of the test-time-augmented prediction,
sensitivity and specificity at an operating point chosen on the validation set
(:func:`breast_operating_point`).

PR-AUC is estimated by the average precision (the step-wise area under the precision-recall
curve, ``sklearn.metrics.average_precision_score``). Confidence intervals are percentile
bootstraps over breasts (:func:`monai_mammo.metrics.classification.bootstrap_ci`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score

from monai_mammo.exceptions import MammoConfigError
from monai_mammo.metrics.classification import (
    ConfidenceInterval,
    bootstrap_ci,
    roc_auc,
    sensitivity_specificity,
    youden_threshold,
)

__all__ = [
    "BREAST_TARGETS",
    "BREAST_TASKS",
    "breast_scores",
    "per_target_auc",
    "pr_auc",
    "breast_metrics",
    "flatten_intervals",
    "breast_report",
    "breast_operating_point",
    "malignant_report",
    "hybrid_scores",
    "hybrid_report",
]

#: Columns of the exam-level tables (the model's target rows, the CSV's columns).
BREAST_TARGETS: tuple[str, ...] = ("left_benign", "right_benign", "left_malignant", "right_malignant")
#: Breast-level task -> (left column, right column) of the exam-level tables.
BREAST_TASKS: dict[str, tuple[int, int]] = {"malignant": (2, 3), "benign": (0, 1)}


def _table(values: Any, name: str, columns: int | None = len(BREAST_TARGETS)) -> np.ndarray:
    """``values`` as a float (N, columns) array; None becomes NaN."""
    array = np.asarray(values, dtype=np.float64)  # numpy turns None into NaN
    if array.ndim != 2 or (columns is not None and array.shape[1] != columns):
        want = f"(N, {columns})" if columns is not None else "(N, T)"
        raise MammoConfigError(f"{name} must be a {want} table, got shape {array.shape}")
    return array


def _known(labels: np.ndarray) -> np.ndarray:
    """Mask of the known labels (finite and >= 0)."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(labels) & (labels >= 0)


def _check_tables(
    probs: Any, labels: Any, columns: int | None = len(BREAST_TARGETS)
) -> tuple[np.ndarray, np.ndarray]:
    p, y = _table(probs, "probs", columns), _table(labels, "labels", columns)
    if p.shape != y.shape:
        raise MammoConfigError(f"probs and labels differ in shape: {p.shape} vs {y.shape}")
    return p, y


def breast_scores(probs: Any, labels: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Breast-level scores and labels of the malignant and benign tasks.

    Args:
        probs: ``(N, 4)`` exam-level probabilities in :data:`BREAST_TARGETS` order.
        labels: ``(N, 4)`` labels 0/1 in the same order; negative, NaN or None = unknown.

    Returns:
        ``{"malignant": (scores, labels), "benign": (scores, labels)}``: 1-D arrays of the
        breasts with a known label, exam by exam, left breast first (at most ``2N`` each).

    Raises:
        MammoConfigError: tables of the wrong shape, or a breast with a known label whose
            score is NaN (e.g. an image-wise model that saw neither view of that breast).

    Example:
        >>> s = breast_scores([[0.1, 0.2, 0.3, 0.4]], [[0, 1, -1, 0]])
        >>> s["malignant"][0].tolist(), s["benign"][1].tolist()
        ([0.4], [0, 1])
    """
    p, y = _check_tables(probs, labels)
    out = {}
    for task, columns in BREAST_TASKS.items():
        scores, truth = p[:, columns].reshape(-1), y[:, columns].reshape(-1)
        known = _known(truth)
        scores, truth = scores[known], truth[known]
        missing = int((~np.isfinite(scores)).sum())
        if missing:
            raise MammoConfigError(f"{missing} breast(s) with a known {task} label have no score (NaN)")
        out[task] = (scores, truth.astype(np.int64))
    return out


def per_target_auc(probs: Any, labels: Any) -> np.ndarray:
    """ROC AUC of every column of exam-level tables, over the rows whose label and score are known.

    Args:
        probs: ``(N, T)`` probabilities (NaN = not predicted).
        labels: ``(N, T)`` labels 0/1 (negative, NaN or None = unknown).

    Returns:
        ``(T,)`` AUCs; NaN for a column with a single known class.

    Raises:
        MammoConfigError: tables of different shapes or non-binary known labels.

    Example:
        >>> per_target_auc([[0.2, 0.9], [0.8, 0.1]], [[0, 1], [1, -1]]).tolist()
        [1.0, nan]
    """
    p, y = _check_tables(probs, labels, columns=None)
    aucs = []
    for column in range(p.shape[1]):
        keep = _known(y[:, column]) & np.isfinite(p[:, column])
        single_class = np.unique(y[keep, column]).size < 2
        aucs.append(float("nan") if single_class else roc_auc(y[keep, column], p[keep, column]))
    return np.asarray(aucs, dtype=np.float64)


def pr_auc(y_true: Sequence[float] | np.ndarray, y_score: Sequence[float] | np.ndarray) -> float:
    """Area under the precision-recall curve, estimated by the average precision.

    Args:
        y_true: binary labels.
        y_score: scores, higher = more likely positive.

    Returns:
        The average precision; NaN without a positive case.

    Example:
        >>> pr_auc([0, 1, 0, 1], [0.1, 0.9, 0.8, 0.3])  # 1/2 * 1 + 1/2 * 2/3
        0.8333333333333333
    """
    y = np.asarray(y_true, dtype=np.int64).ravel()
    if not (y == 1).any():
        return float("nan")
    return float(average_precision_score(y, np.asarray(y_score, dtype=np.float64).ravel()))


def breast_metrics(
    probs: Any, labels: Any, n_bootstrap: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, ConfidenceInterval]:
    """Breast-level AUC and PR-AUC of the malignant and benign tasks with bootstrap CIs.

    Args:
        probs: ``(N, 4)`` exam-level probabilities in :data:`BREAST_TARGETS` order.
        labels: ``(N, 4)`` labels (unknown: negative, NaN or None; those breasts are left out).
        n_bootstrap: bootstrap resamples (breasts drawn with replacement).
        seed: bootstrap seed (deterministic).
        level: confidence level.

    Returns:
        ``auc_malignant``, ``auc_benign``, ``pr_auc_malignant``, ``pr_auc_benign`` as
        :class:`ConfidenceInterval` (NaN where a task has a single class).

    Raises:
        MammoConfigError: see :func:`breast_scores`.

    Example:
        >>> m = breast_metrics([[0.1, 0.2, 0.9, 0.3]] * 2, [[0, 1, 1, 0], [0, 0, 0, 1]], n_bootstrap=10)
        >>> sorted(m)
        ['auc_benign', 'auc_malignant', 'pr_auc_benign', 'pr_auc_malignant']
    """
    scores = breast_scores(probs, labels)
    out: dict[str, ConfidenceInterval] = {}
    for name, metric in (("auc", roc_auc), ("pr_auc", pr_auc)):
        for task in BREAST_TASKS:
            s, y = scores[task]
            out[f"{name}_{task}"] = bootstrap_ci(y, s, metric, n_bootstrap, level, seed)
    return out


def flatten_intervals(metrics: Mapping[str, ConfidenceInterval]) -> dict[str, float]:
    """``{name: CI}`` -> ``{name: value, name_ci_low: low, name_ci_high: high}`` (for MLflow metrics).

    Args:
        metrics: e.g. the result of :func:`breast_metrics`.

    Returns:
        A flat dict of floats.

    Example:
        >>> flatten_intervals({"auc": ConfidenceInterval(0.8, 0.7, 0.9)})
        {'auc': 0.8, 'auc_ci_low': 0.7, 'auc_ci_high': 0.9}
    """
    flat: dict[str, float] = {}
    for name, ci in metrics.items():
        flat.update({name: ci.value, f"{name}_ci_low": ci.low, f"{name}_ci_high": ci.high})
    return flat


def breast_report(
    probs: Any, labels: Any, n_bootstrap: int = 1000, seed: int = 0, prefix: str = "test_"
) -> dict[str, float]:
    """Every breast-level metric under the project's shared names, ready for MLflow.

    ``<prefix>auc_malignant``, ``auc_benign``, ``pr_auc_malignant``, ``pr_auc_benign`` (each
    with ``_ci_low``/``_ci_high``), ``mean_auc`` (mean of the four targets' AUCs), ``n_exams``,
    and the cross-family alias ``<prefix>pr_auc`` (with its CIs) = the malignant task, the
    headline of the paper. The cross-family ``<prefix>auc`` (a single un-augmented pass) and
    ``<prefix>a_auc`` (the averaged prediction) come from :func:`malignant_report`, which needs
    both predictions.

    Args:
        probs: (N, 4) predicted probabilities.
        labels: (N, 4) labels (NaN or negative: unknown).
        n_bootstrap: bootstrap resamples of the CIs.
        seed: bootstrap seed.
        prefix: prefix of every name.

    Returns:
        The flat metrics dict.

    Example::

        report = breast_report(predictions.probs, predictions.labels, n_bootstrap=1000)
        report["test_pr_auc"] == report["test_pr_auc_malignant"]
    """
    flat = flatten_intervals(breast_metrics(probs, labels, n_bootstrap=n_bootstrap, seed=seed))
    for suffix in ("", "_ci_low", "_ci_high"):
        flat[f"pr_auc{suffix}"] = flat[f"pr_auc_malignant{suffix}"]
    with np.errstate(invalid="ignore"):
        flat["mean_auc"] = float(np.nanmean(per_target_auc(probs, labels)))
    flat["n_exams"] = float(np.asarray(probs).shape[0])
    return {f"{prefix}{name}": float(value) for name, value in flat.items()}


def breast_operating_point(probs: Any, labels: Any, task: str = "malignant", default: float = 0.5) -> float:
    """Operating point of a breast-level task: Youden's threshold on these predictions, else ``default``.

    Meant for the validation predictions, the threshold then being applied to the test ones.

    Args:
        probs: ``(N, 4)`` exam-level probabilities in :data:`BREAST_TARGETS` order.
        labels: ``(N, 4)`` labels (unknown: negative, NaN or None).
        task: ``"malignant"`` or ``"benign"``.
        default: the threshold when the task has fewer than two classes (or no exam).

    Returns:
        The threshold (a breast is called positive when its score is ``>=`` it).

    Raises:
        MammoConfigError: unknown task; see :func:`breast_scores`.

    Example:
        >>> breast_operating_point([[0.1, 0.2, 0.3, 0.8]], [[0, 0, 0, 1]])
        0.8
        >>> breast_operating_point([[0.1, 0.2, 0.3, 0.8]], [[0, 0, 0, 0]])
        0.5
    """
    if task not in BREAST_TASKS:
        raise MammoConfigError(f"unknown breast task {task!r}; expected one of {list(BREAST_TASKS)}")
    if np.asarray(probs).size == 0:
        return float(default)
    scores, truth = breast_scores(probs, labels)[task]
    return youden_threshold(truth, scores) if np.unique(truth).size == 2 else float(default)


def malignant_report(
    single: Any,
    averaged: Any,
    labels: Any,
    threshold: float = 0.5,
    n_bootstrap: int = 1000,
    seed: int = 0,
    prefix: str = "test_",
) -> dict[str, float]:
    """The cross-family metric names for the malignant breast-level task (the paper's protocol).

    ``<prefix>auc`` (with ``_ci_low``/``_ci_high``): AUC of a single un-augmented pass;
    ``<prefix>a_auc`` (with CIs): AUC of the test-time-augmented (averaged) prediction;
    ``<prefix>sensitivity``, ``<prefix>specificity`` of the averaged prediction at ``threshold``
    (``score >= threshold`` = malignant) and ``<prefix>threshold``.

    Args:
        single: ``(N, 4)`` probabilities of the un-augmented pass.
        averaged: ``(N, 4)`` TTA-averaged probabilities of the same exams, same order.
        labels: ``(N, 4)`` labels (unknown: negative, NaN or None).
        threshold: operating point, e.g. :func:`breast_operating_point` of the validation set.
        n_bootstrap: bootstrap resamples of the CIs.
        seed: bootstrap seed.
        prefix: prefix of every name.

    Returns:
        The flat metrics dict (NaN where the task has a single class).

    Raises:
        MammoConfigError: see :func:`breast_scores`.

    Example::

        malignant_report(single.probs, tta.probs, tta.labels, threshold=0.31, n_bootstrap=1000)
    """
    s, y = breast_scores(single, labels)["malignant"]
    a, _ = breast_scores(averaged, labels)["malignant"]
    out = flatten_intervals(
        {
            "auc": bootstrap_ci(y, s, roc_auc, n_bootstrap, seed=seed),
            "a_auc": bootstrap_ci(y, a, roc_auc, n_bootstrap, seed=seed),
        }
    )
    sensitivity, specificity = sensitivity_specificity(y, a, threshold)
    out.update(sensitivity=sensitivity, specificity=specificity, threshold=float(threshold))
    return {f"{prefix}{name}": float(value) for name, value in out.items()}


def hybrid_report(
    model: Any,
    reader: Any,
    labels: Any,
    lambdas: Sequence[float] = (0.5,),
    n_bootstrap: int = 1000,
    seed: int = 0,
    prefix: str = "test_",
) -> dict[str, float]:
    """Breast-level metrics of the reader alone and of ``lam * reader + (1 - lam) * model`` per lambda.

    Names: ``<prefix>reader_<metric>`` and ``<prefix>hybrid<lam>_<metric>`` (``lam`` with two
    decimals, e.g. ``test_hybrid0.50_auc_malignant``), ``<metric>`` as in :func:`breast_report`.
    Breasts the reader did not score (NaN) are left out of the reader and hybrid metrics.

    Args:
        model: (N, 4) model probabilities.
        reader: (N, 4) reader probabilities (NaN: not scored).
        labels: (N, 4) labels.
        lambdas: reader weights in [0, 1] (the paper reports 0.5).
        n_bootstrap: bootstrap resamples of the CIs.
        seed: bootstrap seed.
        prefix: prefix of every name.

    Returns:
        The flat metrics dict.

    Raises:
        MammoConfigError: shapes differ or a lambda outside [0, 1].

    Example::

        hybrid_report(predictions.probs, reader, predictions.labels, lambdas=(0.25, 0.5))
    """
    model_table = _table(model, "model", 4)
    reader_table = _table(reader, "reader", 4)
    label_table = np.array(_table(labels, "labels", 4))
    if model_table.shape != reader_table.shape or label_table.shape != model_table.shape:
        raise MammoConfigError(
            f"model {model_table.shape}, reader {reader_table.shape} and labels {label_table.shape} differ"
        )
    label_table[np.isnan(reader_table)] = np.nan  # unscored breasts leave the reader's metrics
    out = breast_report(
        np.nan_to_num(reader_table), label_table, n_bootstrap, seed, prefix=f"{prefix}reader_"
    )
    for lam in lambdas:
        mixed = hybrid_scores(np.nan_to_num(reader_table), model_table, lam)
        out.update(breast_report(mixed, label_table, n_bootstrap, seed, prefix=f"{prefix}hybrid{lam:.2f}_"))
    return out


def hybrid_scores(reader: Any, model: Any, lam: float) -> np.ndarray:
    """Human-machine hybrid of the paper: ``lam * reader + (1 - lam) * model``.

    Args:
        reader: a radiologist's probabilities of malignancy in [0, 1] (any shape).
        model: the model's probabilities, same shape.
        lam: weight of the reader in [0, 1] (the paper reports ``lam = 0.5``).

    Returns:
        The hybrid probabilities (float64, same shape).

    Raises:
        MammoConfigError: ``lam`` outside [0, 1], shapes differ, or scores that are not finite
            probabilities (reader percentages must be divided by 100 first).

    Example:
        >>> hybrid_scores([0.2, 1.0], [0.6, 0.0], 0.5).tolist()
        [0.4, 0.5]
    """
    if not 0.0 <= float(lam) <= 1.0:
        raise MammoConfigError(f"lambda must be in [0, 1], got {lam}")
    r, m = np.asarray(reader, dtype=np.float64), np.asarray(model, dtype=np.float64)
    if r.shape != m.shape:
        raise MammoConfigError(f"reader and model scores differ in shape: {r.shape} vs {m.shape}")
    for name, values in (("reader", r), ("model", m)):
        if not (np.isfinite(values).all() and ((values >= 0) & (values <= 1)).all()):
            raise MammoConfigError(
                f"{name} scores must be finite probabilities in [0, 1] (percentages: divide by 100)"
            )
    return float(lam) * r + (1.0 - float(lam)) * m
