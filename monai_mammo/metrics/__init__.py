"""Metrics as pure functions: AUC variants, bootstrap CIs, operating points, overfitting ratio."""

from monai_mammo.metrics.classification import (
    ConfidenceInterval,
    accuracy,
    augmented_auc,
    binary_confusion_matrix,
    binary_metrics,
    bootstrap_ci,
    ensemble_scores,
    f1_score,
    is_overfit,
    overfitting_ratio,
    roc_auc,
    sensitivity_specificity,
    threshold_for_sensitivity,
    youden_threshold,
)

__all__ = [
    "accuracy",
    "binary_metrics",
    "f1_score",
    "ConfidenceInterval",
    "augmented_auc",
    "binary_confusion_matrix",
    "bootstrap_ci",
    "ensemble_scores",
    "is_overfit",
    "overfitting_ratio",
    "roc_auc",
    "sensitivity_specificity",
    "threshold_for_sensitivity",
    "youden_threshold",
]
