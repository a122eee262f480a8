"""ROI classifier training: optimizers, class weights, weighted BCE, per-epoch statistics in MLflow,
checkpoints, early stopping, transfer learning then fine tuning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from torch import nn

from monai_mammo.engines.evaluation import HFLIP
from monai_mammo.engines.roi_training import (
    LOGGED_METRICS,
    EpochStatistics,
    WeightedBCEWithLogits,
    balanced_binary_weights,
    fit_classifier,
    make_binary_evaluator,
    make_optimizer,
    predict_binary,
    resolve_class_weights,
    transfer_then_finetune,
)
from monai_mammo.engines.tracking import MLflowTracker
from monai_mammo.engines.workflow import load_checkpoint
from monai_mammo.exceptions import MammoConfigError, MammoDataError
from monai_mammo.metrics.classification import binary_metrics
from monai_mammo.networks.vgg import VGG
from monai_mammo.networks.zoo import ZooClassifier


def blob_items(n: int, seed: int, size: int = 32) -> list[dict]:
    """Noise patches with a bright (label 1) or dark (label 0) Gaussian blob at a random place."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    items = []
    for index in range(n):
        label = index % 2
        cy, cx = rng.integers(8, size - 8, 2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 4.0**2))
        image = rng.normal(0, 0.05, (size, size)) + (1.0 if label else -1.0) * blob
        items.append({"image": image[None].astype(np.float32), "label": label})
    return items


class TinyClassifier(nn.Module):
    """Our VGG trunk at toy size (8 and 16 channels, one pool) -> global average pool -> one logit."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = VGG([8, "M", 16], in_channels=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


class MeanIntensity(nn.Module):
    """Hand-built: logit = 10 * mean intensity, so P(positive) is known without training."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(10.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x.mean(dim=(1, 2, 3))[:, None]


@pytest.fixture(scope="module")
def sqlite_uri(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, sqlite_uri):
    """One 3-epoch run with MLflow and per-epoch checkpoints, shared by the assertions below."""
    folder = tmp_path_factory.mktemp("fit")
    torch.manual_seed(0)
    network = TinyClassifier()
    train, val = blob_items(16, 0), blob_items(16, 1)
    tracker = MLflowTracker("roi", "synthetic-blobs", output_dir=folder, tracking_uri=sqlite_uri)
    tracker.start()
    result = fit_classifier(
        network,
        train,
        val,
        epochs=3,
        lr=1e-2,
        batch_size=4,
        tracker=tracker,
        stage="tiny",
        checkpoint_dir=folder / "models",
        save_every_epoch=True,
    )
    tracker.finish()
    return {"result": result, "network": network, "tracker": tracker, "val": val, "folder": folder}


def test_make_optimizer_names_and_paper_defaults():
    params = [nn.Parameter(torch.zeros(2))]
    rmsprop = make_optimizer("RMSProp", params, lr=1e-5)
    assert isinstance(rmsprop, torch.optim.RMSprop)
    group = rmsprop.param_groups[0]
    assert (group["lr"], group["alpha"], group["eps"], group["momentum"], group["centered"]) == (
        1e-5,
        0.9,
        1e-7,
        0,
        False,
    )
    adam = make_optimizer("adam", params, lr=1e-6, weight_decay=1e-4)
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["weight_decay"] == 1e-4
    sgd = make_optimizer("sgd", params, lr=0.1, momentum=0.9)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.9
    assert make_optimizer("rmsprop", params, lr=1e-3, alpha=0.99).param_groups[0]["alpha"] == 0.99
    with pytest.raises(MammoConfigError, match="unknown optimizer"):
        make_optimizer("adagrad", params, lr=1e-3)
    with pytest.raises(MammoConfigError, match="learning rate"):
        make_optimizer("adam", params, lr=0.0)
    with pytest.raises(MammoConfigError, match="sgd"):
        make_optimizer("sgd", params, lr=0.1, rho=0.9)


def test_balanced_weights_reproduce_the_papers_numbers():
    # Mračko et al., Table 1 training counts (benign 0, malignant 1) and the weights they used
    cbis = balanced_binary_weights([0] * 852 + [1] * 309)
    omi = balanced_binary_weights([0] * 457 + [1] * 1329)
    combined = balanced_binary_weights([0] * (852 + 457) + [1] * (309 + 1329))
    assert cbis == pytest.approx((0.266, 0.734), abs=5e-4)
    assert omi == pytest.approx((0.744, 0.256), abs=5e-4)
    assert combined == pytest.approx((0.556, 0.444), abs=5e-4)
    assert sum(cbis) == pytest.approx(1.0)
    with pytest.raises(MammoDataError, match="undefined"):
        balanced_binary_weights([1, 1, 1])
    with pytest.raises(MammoDataError, match="0 or 1"):
        balanced_binary_weights([0, 2])


def test_resolve_class_weights():
    assert resolve_class_weights(None, [0, 1]) is None
    assert resolve_class_weights("balanced", [0, 0, 0, 1]) == (0.25, 0.75)
    assert resolve_class_weights([0.3, 0.7], [0, 1]) == (0.3, 0.7)
    for bad in ("inverse", [1.0], [-1.0, 1.0], [0.0, 0.0], [float("nan"), 1.0]):
        with pytest.raises(MammoConfigError):
            resolve_class_weights(bad, [0, 1])


def test_weighted_bce_weights_each_sample_by_its_class():
    logits = torch.tensor([[0.0], [2.0], [-1.0]])
    labels = torch.tensor([0, 1, 1])
    loss = WeightedBCEWithLogits((0.25, 0.75))
    bce = [math.log(2), math.log(1 + math.exp(-2)), math.log(1 + math.exp(1))]
    expected = (0.25 * bce[0] + 0.75 * bce[1] + 0.75 * bce[2]) / 3
    assert loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    assert loss(logits[:, 0], labels[:, None]).item() == pytest.approx(expected, rel=1e-6)
    unweighted = WeightedBCEWithLogits()(logits, labels)
    torch.testing.assert_close(unweighted, nn.BCEWithLogitsLoss()(logits[:, 0], labels.float()))
    with pytest.raises(MammoConfigError, match="one logit"):
        loss(torch.zeros(3, 2), labels)
    with pytest.raises(MammoConfigError, match="3 logits but 2 labels"):
        loss(logits, labels[:2])
    with pytest.raises(MammoDataError, match="0 or 1"):
        loss(logits, torch.tensor([0, 1, 2]))


def test_evaluator_and_predict_binary_agree_with_the_known_response():
    items = blob_items(10, 3)
    network = MeanIntensity()
    expected = 1 / (1 + np.exp(-10 * np.array([it["image"].mean() for it in items], dtype=np.float64)))
    scores = predict_binary(network, items, batch_size=3)
    np.testing.assert_allclose(scores, expected, rtol=1e-5)
    loader_scores = predict_binary(
        network, iter([{"image": torch.as_tensor(np.stack([it["image"] for it in items]))}])
    )
    np.testing.assert_allclose(loader_scores, scores, rtol=1e-6)
    # flip test-time augmentation: original and horizontal flip (a mean is flip-invariant)
    tta = predict_binary(network, items, batch_size=3, flips=HFLIP)
    assert tta.shape == (10, 2)
    np.testing.assert_allclose(tta, np.stack([expected, expected], axis=1), rtol=1e-5)
    assert predict_binary(network, [], flips=HFLIP).shape == (0, 2)
    from monai.data import DataLoader

    evaluator = make_binary_evaluator(network, DataLoader(items, batch_size=4))
    evaluator.run()
    reference = binary_metrics([it["label"] for it in items], expected)
    for key, value in reference.items():
        assert evaluator.state.metrics[key] == pytest.approx(value, rel=1e-5), key


def test_epoch_history_beta_and_overfit_flag(trained):
    result, network, val = trained["result"], trained["network"], trained["val"]
    history = result.history
    assert [r["epoch"] for r in history] == [1.0, 2.0, 3.0]
    for record in history:
        assert record["overfitting_ratio"] == pytest.approx(record["train_accuracy"] / record["val_accuracy"])
        assert record["overfit"] == float(abs(record["train_accuracy"] - record["val_accuracy"]) > 0.10)
        assert record["val_tp"] + record["val_fn"] == 8 and record["val_tn"] + record["val_fp"] == 8
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["val_accuracy"] == 1.0  # bright vs dark blobs are learnt in three epochs
    best = max(history, key=lambda r: r["val_accuracy"])
    assert result.best_epoch == int(best["epoch"]) and result.final_metrics == best
    # the network holds the best epoch's weights: re-scoring reproduces that epoch's validation metrics
    again = binary_metrics([it["label"] for it in val], predict_binary(network, val))
    for key in ("accuracy", "auc", "f1", "sensitivity", "specificity"):
        assert again[key] == pytest.approx(result.final_metrics[f"val_{key}"], abs=1e-6)


def test_epoch_metrics_are_logged_to_the_mlflow_stage_run(trained, sqlite_uri):
    result, tracker = trained["result"], trained["tracker"]
    client = MlflowClient(sqlite_uri)
    experiment = client.get_experiment_by_name("synthetic-blobs")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    stage = runs[f"{tracker.run_name}-tiny"]
    assert stage.info.status == "FINISHED"
    assert stage.data.tags["mlflow.parentRunId"] == runs[tracker.run_name].info.run_id
    assert stage.data.params["optimizer"] == "adam" and stage.data.params["class_weights"] == "[0.5, 0.5]"
    assert stage.data.params["n_train"] == "16" and stage.data.params["monitor"] == "val_accuracy"
    counts = {f"{split}_{count}" for split in ("train", "val") for count in ("tp", "fp", "tn", "fn")}
    assert counts <= set(LOGGED_METRICS)
    for name in LOGGED_METRICS:
        logged = client.get_metric_history(stage.info.run_id, name)
        assert [m.step for m in logged] == [1, 2, 3], name
        np.testing.assert_allclose([m.value for m in logged], [r[name] for r in result.history], err_msg=name)
    for epoch in range(3):  # 8 positive and 8 negative patches in each set, every epoch
        logged = {name: client.get_metric_history(stage.info.run_id, name)[epoch].value for name in counts}
        for split in ("train", "val"):
            assert logged[f"{split}_tp"] + logged[f"{split}_fn"] == 8
            assert logged[f"{split}_tn"] + logged[f"{split}_fp"] == 8
    assert stage.data.metrics["best_epoch"] == result.best_epoch
    assert [a.path for a in client.list_artifacts(stage.info.run_id)] == ["history.json"]


def test_checkpoint_every_epoch_and_best(trained):
    result, folder = trained["result"], trained["folder"] / "models"
    assert result.epoch_checkpoints == [folder / f"model_epoch_{n}.pt" for n in (1, 2, 3)]
    states = []
    for path in result.epoch_checkpoints:
        model = load_checkpoint(TinyClassifier(), path)
        states.append(model.state_dict())
    assert not torch.equal(states[0]["head.2.weight"], states[2]["head.2.weight"])
    assert result.best_checkpoint == folder / "model.pt"
    best = load_checkpoint(TinyClassifier(), result.best_checkpoint).state_dict()
    for key, value in best.items():
        torch.testing.assert_close(value, states[result.best_epoch - 1][key])
    assert not list(folder.glob(".*tmp*"))


def test_early_stopping_ends_the_run():
    torch.manual_seed(0)
    result = fit_classifier(
        TinyClassifier(),
        blob_items(8, 0),
        blob_items(8, 1),
        epochs=6,
        lr=1e-12,  # nothing changes: validation accuracy never improves after epoch 1
        optimizer="sgd",
        early_stop_patience=2,
    )
    assert len(result.history) == 3
    assert result.best_epoch == 1 and result.best_checkpoint is None


def test_epoch_statistics_state_dict_round_trip():
    statistics = EpochStatistics(None, None)  # type: ignore[arg-type]
    statistics.history = [{"epoch": 1.0, "val_accuracy": 0.5}]
    restored = EpochStatistics(None, None)  # type: ignore[arg-type]
    restored.load_state_dict(statistics.state_dict())
    assert restored.history == statistics.history and restored.latest["val_accuracy"] == 0.5
    with pytest.raises(MammoConfigError):
        _ = EpochStatistics(None, None).latest  # type: ignore[arg-type]
    with pytest.raises(MammoConfigError, match="max_gap"):
        EpochStatistics(None, None, max_gap=1.5)  # type: ignore[arg-type]


def test_fit_rejects_bad_settings_before_training(tmp_path):
    train, val = blob_items(4, 0), blob_items(4, 1)
    net = TinyClassifier()
    with pytest.raises(MammoConfigError, match="monitor"):
        fit_classifier(net, train, val, epochs=1, lr=1e-3, monitor="loss")
    with pytest.raises(MammoConfigError, match="checkpoint_dir"):
        fit_classifier(net, train, val, epochs=1, lr=1e-3, save_every_epoch=True)
    with pytest.raises(MammoDataError, match="validation set is empty"):
        fit_classifier(net, train, [], epochs=1, lr=1e-3)
    bad = [*train[:3], {"image": train[3]["image"], "label": 2}]
    with pytest.raises(MammoDataError, match="training item 3"):
        fit_classifier(net, bad, val, epochs=1, lr=1e-3)
    with pytest.raises(MammoConfigError, match="no trainable parameter"):
        fit_classifier(net, train, val, epochs=1, lr=1e-3, trainable=lambda n: n.requires_grad_(False))


def test_transfer_then_finetune_freezes_per_stage_and_names_the_runs(tmp_path, sqlite_uri):
    torch.manual_seed(0)
    network = ZooClassifier("vgg13", head="linear", dropout=0.0)
    initial = {k: v.clone() for k, v in network.state_dict().items()}
    tracker = MLflowTracker("roi", "synthetic-tlft", output_dir=tmp_path, tracking_uri=sqlite_uri)
    tracker.start()
    results = transfer_then_finetune(
        network,
        blob_items(4, 0),
        blob_items(4, 1),
        gamma=10,
        tl_epochs=1,
        ft_epochs=1,
        tl_lr=1e-3,
        ft_lr=1e-3,
        tracker=tracker,
        checkpoint_dir=tmp_path / "models",
        save_every_epoch=True,
        batch_size=4,
    )
    tracker.finish()
    assert list(results) == ["vgg13-TL", "vgg13-10-FT"]
    for result in results.values():
        assert {"overfitting_ratio", "overfit"} <= set(result.final_metrics)
    # VGG13 layer indices: 1 block1_conv1 (features.0) ... 8 block3_conv2 (features.12), 9 block3_pool,
    # 10 block4_conv1 (features.15): gamma = 10 trains block 4 on
    after_tl = load_checkpoint(
        ZooClassifier("vgg13", head="linear"), results["vgg13-TL"].epoch_checkpoints[0]
    )
    tl_state, final = after_tl.state_dict(), network.state_dict()
    assert all(torch.equal(tl_state[k], initial[k]) for k in initial if k.startswith("trunk."))
    assert not torch.equal(tl_state["head.classifier.weight"], initial["head.classifier.weight"])
    assert torch.equal(final["trunk.features.0.weight"], initial["trunk.features.0.weight"])  # block1_conv1
    assert torch.equal(final["trunk.features.12.weight"], initial["trunk.features.12.weight"])  # block3_conv2
    assert not torch.equal(
        final["trunk.features.15.weight"], initial["trunk.features.15.weight"]
    )  # block4_conv1
    client = MlflowClient(sqlite_uri)
    experiment = client.get_experiment_by_name("synthetic-tlft")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    for name in results:
        run = runs[f"{tracker.run_name}-{name}"]
        assert run.data.params["optimizer"] == "rmsprop"
        assert run.data.metrics["overfitting_ratio"] == pytest.approx(
            results[name].history[-1]["overfitting_ratio"]
        )
    with pytest.raises(MammoConfigError, match="lacks"):
        transfer_then_finetune(TinyClassifier(), [], [], gamma=1, tl_epochs=1, ft_epochs=1)
    with pytest.raises(MammoConfigError, match="sets"):
        transfer_then_finetune(network, [], [], gamma=1, tl_epochs=1, ft_epochs=1, epochs=3)


def test_a_last_training_batch_of_one_is_dropped_for_batch_norm():
    torch.manual_seed(0)
    network = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 4),
        nn.BatchNorm1d(4),
        nn.Linear(4, 1),
    )
    result = fit_classifier(network, blob_items(9, 0), blob_items(5, 1), epochs=1, lr=1e-3, batch_size=4)
    assert len(result.history) == 1 and result.history[0]["val_accuracy"] >= 0  # 9 = 2 x 4 + 1: no crash
