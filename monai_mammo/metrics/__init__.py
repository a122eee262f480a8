"""Metrics as pure functions: AUC variants, bootstrap CIs, operating points, overfitting ratio."""

from monai_mammo.metrics.classification import (
    ConfidenceInterval,
    augmented_auc,
    binary_confusion_matrix,
    bootstrap_ci,
    ensemble_scores,
    is_overfit,
    overfitting_ratio,
    roc_auc,
    sensitivity_specificity,
    threshold_for_sensitivity,
    youden_threshold,
)

__all__ = [
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
