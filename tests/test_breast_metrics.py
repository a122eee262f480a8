"""Breast-level metrics of the NYU multi-view model: scores per breast, AUC / PR-AUC with CIs, hybrids."""

from __future__ import annotations

import numpy as np
import pytest

from monai_mammo.exceptions import MammoConfigError
from monai_mammo.metrics.breast import (
    BREAST_TARGETS,
    breast_metrics,
    breast_operating_point,
    breast_report,
    breast_scores,
    flatten_intervals,
    hybrid_report,
    hybrid_scores,
    malignant_report,
    per_target_auc,
    pr_auc,
)
from monai_mammo.metrics.classification import ConfidenceInterval, roc_auc

# two exams; columns left_benign, right_benign, left_malignant, right_malignant
PROBS = np.array([[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]])


def test_target_order_is_the_csv_order() -> None:
    assert BREAST_TARGETS == ("left_benign", "right_benign", "left_malignant", "right_malignant")


def test_breast_scores_are_exam_by_exam_left_then_right() -> None:
    labels = np.array([[0, 1, 1, 0], [1, 0, 0, 1]])
    scores = breast_scores(PROBS, labels)
    malignant_scores, malignant_labels = scores["malignant"]
    benign_scores, benign_labels = scores["benign"]
    assert malignant_scores.tolist() == [0.3, 0.4, 0.7, 0.8]
    assert malignant_labels.tolist() == [1, 0, 0, 1]
    assert benign_scores.tolist() == [0.1, 0.2, 0.5, 0.6]
    assert benign_labels.tolist() == [0, 1, 1, 0]
    assert malignant_labels.dtype == np.int64


def test_breast_scores_skip_unknown_labels() -> None:
    labels = [[0, None, -1, 0], [np.nan, 1, 1, -1]]
    scores = breast_scores(PROBS, labels)
    assert scores["malignant"][0].tolist() == [0.4, 0.7]
    assert scores["malignant"][1].tolist() == [0, 1]
    assert scores["benign"][0].tolist() == [0.1, 0.6]
    assert scores["benign"][1].tolist() == [0, 1]


def test_breast_scores_reject_missing_scores_and_bad_shapes() -> None:
    probs = PROBS.copy()
    probs[1, 3] = np.nan
    with pytest.raises(MammoConfigError, match="1 breast.*malignant.*NaN"):
        breast_scores(probs, np.zeros((2, 4)))
    # a NaN score whose label is unknown is fine
    assert breast_scores(probs, [[0, 0, 0, 0], [0, 0, 0, -1]])["malignant"][0].size == 3
    with pytest.raises(MammoConfigError, match=r"\(N, 4\)"):
        breast_scores(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(MammoConfigError, match="differ in shape"):
        breast_scores(np.zeros((2, 4)), np.zeros((3, 4)))


def test_per_target_auc_by_hand() -> None:
    probs = [[0.9, 0.1, 0.5], [0.2, 0.8, 0.5], [0.7, 0.3, np.nan], [0.1, 0.4, 0.2]]
    labels = [[1, 0, 1], [0, 1, 0], [0, 1, -1], [0, -1, 0]]
    aucs = per_target_auc(probs, labels)
    # column 0: positive 0.9 above the negatives 0.2, 0.7, 0.1 -> 1.0
    # column 1: positives 0.8, 0.3 vs negative 0.1 -> 1.0 (row 3 unknown)
    # column 2: positive 0.5 vs negatives 0.5 (tie = 1/2), 0.2 (win) -> 0.75 (row 2 not predicted)
    assert aucs.tolist() == [1.0, 1.0, 0.75]
    assert np.isnan(per_target_auc([[0.3], [0.4]], [[1], [1]])[0])


def test_pr_auc_by_hand() -> None:
    # ranking 0.9 (pos), 0.8 (neg), 0.3 (pos): AP = 1/2 * 1 + 1/2 * 2/3
    assert pr_auc([0, 1, 0, 1], [0.1, 0.9, 0.8, 0.3]) == pytest.approx(5 / 6)
    assert pr_auc([1, 1, 0], [0.9, 0.8, 0.1]) == 1.0
    assert np.isnan(pr_auc([0, 0], [0.1, 0.2]))


def test_breast_metrics_values_and_intervals() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, size=(40, 4))
    probs = np.clip(0.35 * labels + rng.uniform(0, 0.65, size=(40, 4)), 0, 1)
    metrics = breast_metrics(probs, labels, n_bootstrap=200, seed=3)
    assert sorted(metrics) == ["auc_benign", "auc_malignant", "pr_auc_benign", "pr_auc_malignant"]
    scores = breast_scores(probs, labels)
    for task in ("malignant", "benign"):
        s, y = scores[task]
        assert metrics[f"auc_{task}"].value == pytest.approx(roc_auc(y, s))
        assert metrics[f"pr_auc_{task}"].value == pytest.approx(pr_auc(y, s))
    for ci in metrics.values():
        assert isinstance(ci, ConfidenceInterval)
        assert ci.level == 0.95
        assert 0.0 < ci.low <= ci.value <= ci.high <= 1.0
    assert breast_metrics(probs, labels, n_bootstrap=200, seed=3) == metrics
    assert breast_metrics(probs, labels, n_bootstrap=200, seed=4) != metrics


def test_breast_metrics_single_class_is_nan() -> None:
    labels = np.array([[0, 1, 0, 0], [1, 0, 0, 0]])
    metrics = breast_metrics(PROBS, labels, n_bootstrap=20)
    assert np.isnan(metrics["auc_malignant"].value)
    assert np.isnan(metrics["pr_auc_malignant"].value)
    assert metrics["auc_benign"].value == pytest.approx(roc_auc([0, 1, 1, 0], [0.1, 0.2, 0.5, 0.6]))


def test_flatten_intervals() -> None:
    flat = flatten_intervals({"auc_malignant": ConfidenceInterval(0.8, 0.7, 0.9)})
    assert flat == {"auc_malignant": 0.8, "auc_malignant_ci_low": 0.7, "auc_malignant_ci_high": 0.9}


def test_breast_report_uses_the_shared_names() -> None:
    labels = np.array([[0, 1, 1, 0], [1, 0, 0, 1], [0, 0, 1, 0], [1, 1, 0, 0]])
    probs = np.array([[0.2, 0.7, 0.9, 0.1], [0.6, 0.3, 0.2, 0.8], [0.1, 0.4, 0.6, 0.3], [0.9, 0.5, 0.4, 0.2]])
    report = breast_report(probs, labels, n_bootstrap=50, seed=0)
    assert report["test_auc_malignant"] == pytest.approx(1.0)
    assert "test_auc" not in report  # the single-pass AUC: malignant_report
    assert report["test_pr_auc"] == report["test_pr_auc_malignant"]
    assert report["test_pr_auc_ci_low"] == report["test_pr_auc_malignant_ci_low"]
    assert report["test_n_exams"] == 4.0 and 0 <= report["test_mean_auc"] <= 1
    assert all(k.startswith("test_") for k in report)


def test_hybrid_scores_maths() -> None:
    reader = np.array([0.0, 0.2, 1.0, 0.5])
    model = np.array([1.0, 0.6, 0.0, 0.5])
    assert hybrid_scores(reader, model, 0.5).tolist() == pytest.approx([0.5, 0.4, 0.5, 0.5])
    assert hybrid_scores(reader, model, 1.0).tolist() == reader.tolist()
    assert hybrid_scores(reader, model, 0.0).tolist() == model.tolist()
    assert hybrid_scores(reader, model, 0.25).tolist() == pytest.approx([0.75, 0.5, 0.25, 0.5])
    assert hybrid_scores([[0.1, 0.3]], [[0.5, 0.7]], 0.5).shape == (1, 2)


@pytest.mark.parametrize(
    ("reader", "model", "lam", "message"),
    [
        ([0.1], [0.2], 1.5, "lambda"),
        ([0.1], [0.2], -0.1, "lambda"),
        ([0.1, 0.2], [0.2], 0.5, "differ in shape"),
        ([55.0], [0.2], 0.5, "reader.*divide by 100"),
        ([0.1], [np.nan], 0.5, "model"),
    ],
)
def test_hybrid_scores_validation(reader: list, model: list, lam: float, message: str) -> None:
    with pytest.raises(MammoConfigError, match=message):
        hybrid_scores(reader, model, lam)


def test_hybrid_report_reader_and_mixtures() -> None:
    labels = np.array([[0, 1, 1, 0], [1, 0, 0, 1], [0, 0, 1, 0], [1, 1, 0, 0]])
    model = np.array(
        [[0.2, 0.7, 0.4, 0.6], [0.6, 0.3, 0.5, 0.3], [0.1, 0.4, 0.45, 0.3], [0.9, 0.5, 0.4, 0.2]]
    )
    reader = labels * 0.8 + 0.1  # a perfect reader
    reader_missing = reader.copy()
    reader_missing[0, 0] = np.nan
    report = hybrid_report(model, reader, labels, lambdas=(0.0, 1.0), n_bootstrap=0)
    assert report["test_reader_auc_malignant"] == 1.0
    assert report["test_hybrid1.00_auc_malignant"] == 1.0
    assert report["test_hybrid0.00_auc_malignant"] == pytest.approx(
        breast_report(model, labels, 0)["test_auc_malignant"]
    )
    assert hybrid_report(model, reader_missing, labels, n_bootstrap=0)["test_reader_n_exams"] == 4.0
    with pytest.raises(MammoConfigError):
        hybrid_report(model, reader[:2], labels)
    with pytest.raises(MammoConfigError):
        hybrid_report(model, reader, labels, lambdas=(1.5,))


def test_operating_point_is_youden_on_the_malignant_breasts_else_the_default() -> None:
    labels = np.array([[0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]])
    probs = np.array([[0.0, 0.0, 0.7, 0.2], [0.0, 0.0, 0.1, 0.9], [0.0, 0.0, 0.3, 0.65]])
    # malignant breasts 0.7, 0.9; others 0.2, 0.1, 0.3, 0.65: every cut in (0.65, 0.7] separates them
    assert breast_operating_point(probs, labels) == pytest.approx(0.7)
    assert breast_operating_point(probs, np.zeros((3, 4))) == 0.5  # a single class
    assert breast_operating_point(np.zeros((0, 4)), np.zeros((0, 4)), default=0.3) == 0.3  # no exam
    with pytest.raises(MammoConfigError, match="unknown breast task"):
        breast_operating_point(probs, labels, task="cancer")


def test_malignant_report_single_pass_tta_and_operating_point() -> None:
    labels = np.array([[0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, -1]])
    single = np.array([[0.0, 0.0, 0.2, 0.6], [0.0, 0.0, 0.4, 0.9], [0.0, 0.0, 0.1, 0.0]])
    averaged = np.array([[0.0, 0.0, 0.8, 0.3], [0.0, 0.0, 0.2, 0.6], [0.0, 0.0, 0.1, 0.0]])
    # malignant breasts (unknown right breast of exam 2 left out): labels 1 0 0 1 0
    report = malignant_report(single, averaged, labels, threshold=0.5, n_bootstrap=30, seed=0)
    assert report["test_auc"] == pytest.approx(roc_auc([1, 0, 0, 1, 0], [0.2, 0.6, 0.4, 0.9, 0.1]))
    assert report["test_a_auc"] == pytest.approx(1.0)
    assert report["test_a_auc_ci_low"] <= report["test_a_auc"] <= report["test_a_auc_ci_high"]
    assert report["test_auc_ci_low"] <= report["test_auc"] <= report["test_auc_ci_high"]
    # averaged >= 0.5: 0.8 (malignant), 0.6 (malignant): 2/2 found, 3/3 negatives below
    assert (report["test_sensitivity"], report["test_specificity"]) == (1.0, 1.0)
    strict = malignant_report(single, averaged, labels, threshold=0.7, n_bootstrap=0)
    assert (strict["test_sensitivity"], strict["test_specificity"], strict["test_threshold"]) == (
        0.5,
        1.0,
        0.7,
    )
