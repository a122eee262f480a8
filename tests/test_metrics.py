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
