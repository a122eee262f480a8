"""Flip TTA, reports with CIs, and the evaluation artifacts."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from monai_mammo.engines.evaluation import (
    HFLIP,
    classification_report,
    ensemble_report,
    flip_tta_scores,
    predict_scores,
    save_confusion_matrix,
    save_predictions_csv,
    save_roc_plot,
)
from monai_mammo.metrics import roc_auc


class LeftTopBright(nn.Module):
    """Logit of class 1 = mean of the top-left quadrant minus the rest: flips change it."""

    def forward(self, x):
        h, w = x.shape[-2] // 2, x.shape[-1] // 2
        score = x[..., :h, :w].mean(dim=(1, 2, 3)) - x.mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(score), score], dim=1)


def test_flip_tta_columns_are_the_four_flips():
    torch.manual_seed(0)
    x = torch.rand(3, 1, 8, 6)
    net = LeftTopBright()
    scores = flip_tta_scores(net, x)
    assert scores.shape == (3, 4)
    expected_hflip = torch.softmax(net(torch.flip(x, (-1,))), 1)[:, 1]
    expected_both = torch.softmax(net(torch.flip(x, (-2, -1))), 1)[:, 1]
    torch.testing.assert_close(scores[:, 1], expected_hflip)
    torch.testing.assert_close(scores[:, 3], expected_both)
    assert not torch.allclose(scores[:, 0], scores[:, 1])
    # the patch / ROI models' test-time augmentation: the first two columns only
    assert [name for name, _ in HFLIP] == ["original", "hflip"]
    torch.testing.assert_close(flip_tta_scores(net, x, flips=HFLIP), scores[:, :2])


class OneLogit(nn.Module):
    """The same score as one sigmoid logit (the zoo's binary networks)."""

    def forward(self, x):
        return LeftTopBright()(x)[:, 1:2]


def test_one_logit_networks_are_scored_with_a_sigmoid():
    torch.manual_seed(0)
    x = torch.rand(3, 1, 8, 6)
    scores = flip_tta_scores(OneLogit(), x)
    torch.testing.assert_close(scores[:, 0], torch.sigmoid(LeftTopBright()(x)[:, 1]))
    single = predict_scores(OneLogit(), [{"image": x, "label": torch.tensor([0, 1, 0])}], tta=False)
    np.testing.assert_allclose(single["scores"][:, 0], scores[:, 0].numpy(), rtol=1e-6)
    assert not np.allclose(single["scores"], 1.0)


def test_predict_scores_iterates_batches_and_restores_mode():
    net = LeftTopBright().train()
    batches = [{"image": torch.rand(2, 1, 8, 6), "label": torch.tensor([0, 1]), "path": ["a", "b"]}] * 2
    out = predict_scores(net, batches, id_key="path")
    assert out["scores"].shape == (4, 4) and out["labels"].tolist() == [0, 1, 0, 1]
    assert out["ids"] == ["a", "b", "a", "b"] and net.training
    single = predict_scores(net, batches, tta=False)
    np.testing.assert_allclose(single["scores"][:, 0], out["scores"][:, 0], rtol=1e-6)


def test_report_contains_auc_a_auc_cis_and_operating_point():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 120)
    scores = np.clip(y[:, None] * 0.3 + rng.normal(0.35, 0.2, (120, 4)), 0, 1)
    report = classification_report(y, scores, threshold="youden", n_bootstrap=200)
    assert report["test_auc"] == pytest.approx(roc_auc(y, scores[:, 0]))
    assert report["test_a_auc"] == pytest.approx(roc_auc(y, scores.mean(1)))
    assert report["test_a_auc"] > report["test_auc"]  # averaging independent noise helps
    for name in ("auc", "a_auc"):
        assert report[f"test_{name}_ci_low"] < report[f"test_{name}"] < report[f"test_{name}_ci_high"]
    assert {"test_sensitivity", "test_specificity", "test_threshold", "test_n_images"} <= report.keys()
    ens = ensemble_report(y, [scores, scores[:, ::-1]], n_bootstrap=0)
    assert ens["ensemble_auc"] == pytest.approx(roc_auc(y, scores.mean(1)))


def test_artifacts_are_real_files(tmp_path):
    y = np.array([0, 1, 0, 1, 1])
    s = np.array([[0.1, 0.2], [0.8, 0.7], [0.6, 0.4], [0.9, 0.9], [0.3, 0.5]])
    roc = save_roc_plot(y, {"original": s[:, 0], "A": s.mean(1)}, tmp_path / "roc.png")
    assert Image.open(roc).size[0] > 300
    png, table = save_confusion_matrix(y, s.mean(1), 0.5, tmp_path / "confusion")
    rows = list(csv.reader(open(table)))
    assert rows[1] == ["benign", "1", "1"] and rows[2] == ["malignant", "1", "2"]
    assert Image.open(png).format == "PNG"
    pred = save_predictions_csv(["a", "b", "c", "d", "e"], y, s, tmp_path / "pred.csv")
    lines = list(csv.DictReader(open(pred)))
    assert lines[0]["p_malignant"] == "0.150000" and "p_malignant_hflip" in lines[0]


def test_evaluate_and_log_ensembles_checkpoints(tmp_path):
    from monai_mammo.engines.workflow import evaluate_and_log

    torch.manual_seed(0)
    images = torch.rand(12, 1, 8, 6)
    labels = torch.tensor([0, 1] * 6)
    batches = [{"image": images[i : i + 4], "label": labels[i : i + 4]} for i in range(0, 12, 4)]
    net = nn.Sequential(nn.Flatten(), nn.Linear(48, 2))
    paths = []
    for k in range(2):
        torch.manual_seed(k + 1)
        state = nn.Sequential(nn.Flatten(), nn.Linear(48, 2)).state_dict()
        paths.append(tmp_path / f"m{k}.pt")
        torch.save(state, paths[-1])
    metrics = evaluate_and_log(net, batches, tmp_path, checkpoint=paths, threshold=0.5, n_bootstrap=0)
    scores = []
    for path in paths:
        net.load_state_dict(torch.load(path, weights_only=True))
        scores.append(predict_scores(net, batches)["scores"])
    expected = roc_auc(labels.numpy(), np.mean(scores, axis=0)[:, 0])
    assert metrics["test_n_models"] == 2 and metrics["test_auc"] == pytest.approx(expected)
    assert metrics["test_model0_auc"] == pytest.approx(roc_auc(labels.numpy(), scores[0][:, 0]))
    assert (tmp_path / "test" / "roc.png").is_file()
