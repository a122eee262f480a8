"""Classification metrics used across the model families (pure functions on arrays).

All functions take binary ground truth (0/1) and scores (probability of the positive
class) as array-likes and return plain floats / numpy arrays, so they can be used from
Ignite handlers, notebooks and the CLI alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from monai_mammo.exceptions import MammoConfigError

__all__ = [
    "ConfidenceInterval",
    "roc_auc",
    "augmented_auc",
    "ensemble_scores",
    "bootstrap_ci",
    "sensitivity_specificity",
    "threshold_for_sensitivity",
    "youden_threshold",
    "binary_confusion_matrix",
    "overfitting_ratio",
    "is_overfit",
    "accuracy",
    "f1_score",
    "binary_metrics",
]


@dataclass(frozen=True)
class ConfidenceInterval:
    """A point estimate with its bootstrap confidence interval."""

    value: float
    low: float
    high: float
    level: float = 0.95


def _binary_inputs(y_true: Sequence[float] | np.ndarray, y_score: Sequence[float] | np.ndarray):
    labels = np.asarray(y_true, dtype=np.float64).ravel()
    s = np.asarray(y_score, dtype=np.float64).ravel()
    if labels.shape != s.shape:
        raise MammoConfigError(f"labels and scores differ in length: {labels.shape[0]} vs {s.shape[0]}")
    if not np.isin(labels, (0, 1)).all():
        raise MammoConfigError("labels must be 0 or 1")
    if not np.isfinite(s).all():
        raise MammoConfigError("scores contain NaN or inf")
    return labels.astype(np.int64), s


def roc_auc(y_true: Sequence[float] | np.ndarray, y_score: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve.

    Args:
        y_true: binary labels.
        y_score: scores, higher = more likely positive.

    Returns:
        The AUC, or NaN when only one class is present.

    Raises:
        MammoConfigError: mismatched lengths, non-binary labels or non-finite scores.

    Example::

        roc_auc([0, 1, 1], [0.2, 0.7, 0.9])  # 1.0
    """
    y, s = _binary_inputs(y_true, y_score)
    if np.unique(y).size < 2:  # one class (or none): the AUC is undefined
        return float("nan")
    return float(roc_auc_score(y, s))


def augmented_auc(y_true: Sequence[float] | np.ndarray, augmented_scores: np.ndarray) -> float:
    """A-AUC of Shen et al.: the AUC of the mean of several augmented predictions per image.

    Args:
        y_true: binary labels, shape (N,).
        augmented_scores: scores of shape (N, A), e.g. A = 4 for original, h-flip, v-flip and both.

    Returns:
        The AUC of ``augmented_scores.mean(axis=1)``.

    Example::

        augmented_auc([0, 1], [[0.1, 0.3, 0.2, 0.2], [0.8, 0.6, 0.9, 0.7]])  # 1.0
    """
    scores = np.asarray(augmented_scores, dtype=np.float64)
    if scores.ndim != 2:
        raise MammoConfigError(f"augmented_scores must be (N, A), got shape {scores.shape}")
    return roc_auc(y_true, scores.mean(axis=1))


def ensemble_scores(model_scores: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """Mean score over several models (each entry (N,) or (N, A); augmented scores are averaged first).

    Args:
        model_scores: one array per model.

    Returns:
        (N,) mean scores.
    """
    arrays = [np.asarray(s, dtype=np.float64) for s in model_scores]
    if not arrays:
        raise MammoConfigError("ensemble needs at least one model's scores")
    arrays = [a.mean(axis=1) if a.ndim == 2 else a for a in arrays]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise MammoConfigError(f"models scored different numbers of images: {sorted(shapes)}")
    return np.mean(arrays, axis=0)


def bootstrap_ci(
    y_true: Sequence[float] | np.ndarray,
    y_score: Sequence[float] | np.ndarray,
    metric: Callable[[np.ndarray, np.ndarray], float] = roc_auc,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> ConfidenceInterval:
    """Percentile bootstrap confidence interval of a metric (cases resampled with replacement).

    Resamples that contain a single class are dropped (they have no AUC).

    Args:
        y_true: binary labels.
        y_score: scores.
        metric: ``metric(y, s) -> float``.
        n_resamples: number of bootstrap resamples.
        level: confidence level.
        seed: RNG seed (deterministic).

    Returns:
        The metric on the full data with its ``[low, high]`` percentile interval.
    """
    y, s = _binary_inputs(y_true, y_score)
    if not 0 < level < 1:
        raise MammoConfigError(f"level must be in (0, 1), got {level}")
    value = metric(y, s)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, y.size, size=(n_resamples, y.size))
    both = (y[idx].min(axis=1) == 0) & (y[idx].max(axis=1) == 1)
    stats = np.array([metric(y[i], s[i]) for i in idx[both]])
    if stats.size == 0:
        return ConfidenceInterval(value, float("nan"), float("nan"), level)
    alpha = (1 - level) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return ConfidenceInterval(float(value), float(low), float(high), level)


def sensitivity_specificity(
    y_true: Sequence[float] | np.ndarray, y_score: Sequence[float] | np.ndarray, threshold: float = 0.5
) -> tuple[float, float]:
    """Sensitivity and specificity when ``score >= threshold`` is called positive.

    Returns:
        (sensitivity, specificity); NaN where a class is absent.
    """
    y, s = _binary_inputs(y_true, y_score)
    pred = s >= threshold
    pos, neg = y == 1, y == 0
    sens = float(pred[pos].mean()) if pos.any() else float("nan")
    spec = float((~pred[neg]).mean()) if neg.any() else float("nan")
    return sens, spec


def threshold_for_sensitivity(
    y_true: Sequence[float] | np.ndarray, y_score: Sequence[float] | np.ndarray, sensitivity: float
) -> float:
    """The highest threshold whose sensitivity is at least ``sensitivity`` (an operating point)."""
    y, s = _binary_inputs(y_true, y_score)
    positives = np.sort(s[y == 1])[::-1]
    if positives.size == 0:
        raise MammoConfigError("no positive case: the operating point is undefined")
    k = int(np.ceil(sensitivity * positives.size)) - 1
    return float(positives[min(max(k, 0), positives.size - 1)])


def youden_threshold(y_true: Sequence[float] | np.ndarray, y_score: Sequence[float] | np.ndarray) -> float:
    """Threshold maximising Youden's J = sensitivity + specificity - 1 on the ROC curve."""
    y, s = _binary_inputs(y_true, y_score)
    fpr, tpr, thresholds = roc_curve(y, s)
    best = int(np.argmax(tpr - fpr))
    return float(min(thresholds[best], 1.0))


def binary_confusion_matrix(
    y_true: Sequence[float] | np.ndarray, y_score: Sequence[float] | np.ndarray, threshold: float = 0.5
) -> np.ndarray:
    """2 x 2 confusion matrix ``[[TN, FP], [FN, TP]]`` (rows = truth, columns = prediction)."""
    y, s = _binary_inputs(y_true, y_score)
    pred = (s >= threshold).astype(np.int64)
    matrix = np.zeros((2, 2), dtype=np.int64)
    np.add.at(matrix, (y, pred), 1)
    return matrix


def overfitting_ratio(train_accuracy: float, valid_accuracy: float) -> float:
    """Falconi et al.'s beta = train accuracy / validation accuracy (1 = no overfitting)."""
    if valid_accuracy <= 0:
        raise MammoConfigError(f"validation accuracy must be > 0, got {valid_accuracy}")
    return float(train_accuracy / valid_accuracy)


def is_overfit(train_accuracy: float, test_accuracy: float, max_gap: float = 0.10) -> bool:
    """The paper's rejection rule: train and test accuracy differ by more than ``max_gap`` (10%)."""
    return abs(train_accuracy - test_accuracy) > max_gap


def _confusion_counts(
    y_true: Sequence[float] | np.ndarray, y_score: Sequence[float] | np.ndarray, threshold: float
) -> tuple[int, int, int, int]:
    """(TP, FP, TN, FN) with ``score >= threshold`` called positive; refuses empty input."""
    if not np.isfinite(threshold):
        raise MammoConfigError(f"threshold must be finite, got {threshold}")
    y, s = _binary_inputs(y_true, y_score)
    if y.size == 0:
        raise MammoConfigError("no sample to score: labels and scores are empty")
    (tn, fp), (fn, tp) = binary_confusion_matrix(y, s, threshold).tolist()
    return tp, fp, tn, fn


def accuracy(
    y_true: Sequence[float] | np.ndarray,
    y_pred_or_score: Sequence[float] | np.ndarray,
    threshold: float = 0.5,
) -> float:
    """Fraction of correct calls, ``(TP + TN) / N``, when ``score >= threshold`` is called positive.

    Hard 0/1 predictions work unchanged (0 < 0.5 <= 1).

    Args:
        y_true: binary labels.
        y_pred_or_score: 0/1 predictions or scores (probability of the positive class).
        threshold: decision threshold on the scores.

    Returns:
        The accuracy in [0, 1].

    Raises:
        MammoConfigError: empty input, mismatched lengths, non-binary labels, non-finite scores or threshold.

    Example::

        accuracy([0, 1, 1, 0], [0.2, 0.7, 0.4, 0.6])  # 0.5
    """
    tp, fp, tn, fn = _confusion_counts(y_true, y_pred_or_score, threshold)
    return float((tp + tn) / (tp + fp + tn + fn))


def f1_score(
    y_true: Sequence[float] | np.ndarray,
    y_pred_or_score: Sequence[float] | np.ndarray,
    threshold: float = 0.5,
) -> float:
    """F1 score of the positive class, ``2 TP / (2 TP + FP + FN)`` (Falconi et al., eq. 12).

    Args:
        y_true: binary labels.
        y_pred_or_score: 0/1 predictions or scores.
        threshold: decision threshold on the scores.

    Returns:
        The F1 score; NaN when there is no positive case and none is predicted (0 / 0).

    Raises:
        MammoConfigError: empty input, mismatched lengths, non-binary labels, non-finite scores or threshold.

    Example::

        f1_score([0, 1, 1, 0], [0.2, 0.7, 0.4, 0.6])  # 2 / (2 + 1 + 1) = 0.5
    """
    tp, fp, _, fn = _confusion_counts(y_true, y_pred_or_score, threshold)
    denominator = 2 * tp + fp + fn
    return float(2 * tp / denominator) if denominator else float("nan")


def binary_metrics(
    y_true: Sequence[float] | np.ndarray, y_score: Sequence[float] | np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """The per-epoch / per-model report of the ROI papers in one call.

    ``auc`` is the ROC AUC over all thresholds. Falconi et al.'s eq. (13),
    ``(1 + TPR - FPR) / 2``, is the single-threshold AUC, i.e. the balanced accuracy: it is
    reported as ``balanced_accuracy`` (their tables' "AUC" is this value).

    Args:
        y_true: binary labels (1 = positive, e.g. malignant).
        y_score: scores (probability of the positive class).
        threshold: ``score >= threshold`` is called positive.

    Returns:
        ``{"accuracy", "auc", "f1", "sensitivity", "specificity", "balanced_accuracy",
        "tp", "fp", "tn", "fn"}`` as floats (counts are whole numbers). ``auc`` is NaN when one
        class is absent; sensitivity (specificity, F1) NaN without positive (negative) cases.

    Raises:
        MammoConfigError: empty input, mismatched lengths, non-binary labels, non-finite scores or threshold.

    Example::

        binary_metrics([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.8])["accuracy"]  # 0.5
    """
    tp, fp, tn, fn = _confusion_counts(y_true, y_score, threshold)
    sensitivity = tp / (tp + fn) if tp + fn else float("nan")
    specificity = tn / (tn + fp) if tn + fp else float("nan")
    return {
        "accuracy": accuracy(y_true, y_score, threshold),
        "auc": roc_auc(y_true, y_score),
        "f1": f1_score(y_true, y_score, threshold),
        "sensitivity": float(sensitivity),
        "specificity": float(specificity),
        "balanced_accuracy": float((sensitivity + specificity) / 2),
        "tp": float(tp),
        "fp": float(fp),
        "tn": float(tn),
        "fn": float(fn),
    }
