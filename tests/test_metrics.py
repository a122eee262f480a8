"""Metric maths: AUC, A-AUC, ensembles, bootstrap CIs, operating points, beta."""

from __future__ import annotations

import numpy as np
import pytest

from monai_mammo.exceptions import MammoConfigError
from monai_mammo.metrics import (
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
from monai_mammo.metrics.classification import accuracy, binary_metrics, f1_score


def test_roc_auc_known_values():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert np.isnan(roc_auc([1, 1], [0.2, 0.3]))


def test_augmented_auc_is_auc_of_mean_over_augmentations():
    y = np.array([0, 0, 1, 1])
    # each augmentation alone ranks one pair wrongly; their mean ranks perfectly
    aug = np.array([[0.6, 0.1, 0.1, 0.1], [0.1, 0.6, 0.1, 0.1], [0.5, 0.9, 0.9, 0.9], [0.9, 0.5, 0.9, 0.9]])
    assert roc_auc(y, aug[:, 0]) < 1.0
    assert augmented_auc(y, aug) == pytest.approx(roc_auc(y, aug.mean(axis=1)))
    assert augmented_auc(y, aug) == 1.0


def test_ensemble_averages_models_after_their_augmentations():
    a = np.array([[0.2, 0.4], [0.6, 0.8]])  # model A, 2 augmentations -> [0.3, 0.7]
    b = np.array([0.5, 0.9])
    np.testing.assert_allclose(ensemble_scores([a, b]), [0.4, 0.8])
    with pytest.raises(MammoConfigError, match="different numbers"):
        ensemble_scores([np.zeros(3), np.zeros(4)])


def test_bootstrap_ci_brackets_value_and_is_deterministic():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = y * 0.5 + rng.normal(0, 0.5, 200)
    ci = bootstrap_ci(y, s, n_resamples=300, seed=1)
    assert ci.low < ci.value < ci.high
    assert 0.05 < ci.high - ci.low < 0.3
    assert bootstrap_ci(y, s, n_resamples=300, seed=1) == ci


def test_sensitivity_specificity_and_confusion_matrix_agree():
    y = np.array([0, 0, 0, 1, 1])
    s = np.array([0.1, 0.6, 0.3, 0.7, 0.4])
    sens, spec = sensitivity_specificity(y, s, 0.5)
    assert (sens, spec) == (0.5, pytest.approx(2 / 3))
    np.testing.assert_array_equal(binary_confusion_matrix(y, s, 0.5), [[2, 1], [1, 1]])


def test_operating_points():
    y = np.array([0, 0, 1, 1, 1, 1])
    s = np.array([0.1, 0.5, 0.2, 0.6, 0.7, 0.9])
    t = threshold_for_sensitivity(y, s, 0.75)
    assert sensitivity_specificity(y, s, t)[0] >= 0.75
    assert t == 0.6
    assert youden_threshold(y, s) == pytest.approx(0.6)


def test_beta_ratio_and_rejection_rule():
    assert overfitting_ratio(0.93, 0.80) == pytest.approx(1.1625)
    assert is_overfit(0.95, 0.80) and not is_overfit(0.85, 0.80)
    with pytest.raises(MammoConfigError):
        overfitting_ratio(0.9, 0.0)


def test_bad_inputs_raise_project_errors():
    with pytest.raises(MammoConfigError, match="length"):
        roc_auc([0, 1], [0.1])
    with pytest.raises(MammoConfigError, match="0 or 1"):
        roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(MammoConfigError, match="NaN"):
        roc_auc([0, 1], [0.1, float("nan")])


def test_accuracy_and_f1_hand_checked():
    y = [0, 1, 1, 0, 1]
    s = [0.2, 0.7, 0.4, 0.6, 0.5]  # calls at 0.5: 0 1 0 1 1 -> TP 2, FP 1, TN 1, FN 1
    assert accuracy(y, s) == pytest.approx(3 / 5)
    assert f1_score(y, s) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert accuracy(y, [0, 1, 0, 1, 1]) == accuracy(y, s)  # hard predictions work unchanged
    assert accuracy(y, s, threshold=0.65) == pytest.approx(3 / 5)  # calls 0 1 0 0 0
    assert f1_score(y, s, threshold=0.65) == pytest.approx(2 / (2 + 0 + 2))
    assert np.isnan(f1_score([0, 0], [0.1, 0.2]))  # no positive case, none predicted


def test_binary_metrics_report():
    y = [0, 0, 0, 1, 1]
    s = [0.1, 0.6, 0.3, 0.7, 0.4]
    report = binary_metrics(y, s)
    assert {k: report[k] for k in ("tp", "fp", "tn", "fn")} == {"tp": 1.0, "fp": 1.0, "tn": 2.0, "fn": 1.0}
    assert report["accuracy"] == pytest.approx(3 / 5)
    assert report["sensitivity"] == 0.5 and report["specificity"] == pytest.approx(2 / 3)
    assert report["f1"] == pytest.approx(2 / (2 + 1 + 1))
    assert report["auc"] == pytest.approx(roc_auc(y, s)) == pytest.approx(5 / 6)
    # Falconi et al.'s eq. (13) "AUC" = (1 + TPR - FPR) / 2 is the balanced accuracy
    assert report["balanced_accuracy"] == pytest.approx((1 + 0.5 - 1 / 3) / 2)
    one_class = binary_metrics([1, 1], [0.7, 0.2])
    assert one_class["accuracy"] == 0.5 and np.isnan(one_class["auc"]) and np.isnan(one_class["specificity"])


def test_new_metrics_reject_bad_input():
    with pytest.raises(MammoConfigError, match="empty"):
        accuracy([], [])
    with pytest.raises(MammoConfigError, match="0 or 1"):
        binary_metrics([0, 0.5], [0.1, 0.2])  # fractional labels are not truncated to 0
    with pytest.raises(MammoConfigError, match="threshold"):
        f1_score([0, 1], [0.1, 0.2], threshold=float("nan"))
    with pytest.raises(MammoConfigError, match="length"):
        binary_metrics([0, 1, 1], [0.1, 0.2])
