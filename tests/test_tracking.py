"""MLflowTracker against a real SQLite store; journal + replay when the store is unreachable."""

from __future__ import annotations

import json
import math

import matplotlib.image
import pytest
from ignite.engine import Engine
from mlflow.tracking import MlflowClient

from monai_mammo.cli import main
from monai_mammo.engines.comparison import format_table, latest_runs
from monai_mammo.engines.tracking import (
    CURVES_FILE,
    MLflowTracker,
    default_tracking_uri,
    flatten_params,
    unique_run_name,
)

DIGEST = "0123abcd"


@pytest.fixture
def sqlite_uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _run_once(tracker: MLflowTracker, artifact) -> None:
    tracker.start()
    tracker.log_dataset("training", [{"image": "a.png", "label": 1, "boxes": [1, 2]}], DIGEST)
    tracker.start_stage("patch", params={"lr": 1e-3})
    engine = Engine(lambda e, b: {"loss": float(b)})
    tracker.epoch_handler("patch").attach(engine)
    engine.run([1.0, 3.0], max_epochs=2)
    tracker.end_stage("patch")
    tracker.log_metrics({"test_auc": 0.9})
    tracker.log_artifact(artifact)
    tracker.finish()


def test_parent_and_nested_runs_with_tags_params_metrics_artifacts(tmp_path, sqlite_uri):
    artifact = tmp_path / "roc.png"
    artifact.write_bytes(b"\x89PNG fake")
    tracker = MLflowTracker(
        "shen_end2end",
        "synthetic-cbis",
        output_dir=tmp_path,
        tracking_uri=sqlite_uri,
        tags={"patch_set": "S10", "split_seed": 0},
        params={"stages": [{"epochs": 1, "lr": 0.1}], "image_size": [288, 224]},
    )
    _run_once(tracker, artifact)
    client = MlflowClient(sqlite_uri)
    exp = client.get_experiment_by_name("synthetic-cbis")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    parent = runs[tracker.run_name]
    child = runs[f"{tracker.run_name}-patch"]
    assert parent.info.status == child.info.status == "FINISHED"
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert parent.data.tags["model_family"] == "shen_end2end" and parent.data.tags["patch_set"] == "S10"
    assert parent.data.params["stages.0.lr"] == "0.1" and parent.data.params["image_size"] == "[288, 224]"
    assert parent.data.metrics["test_auc"] == 0.9
    history = client.get_metric_history(child.info.run_id, "train_loss")
    assert [m.value for m in history] == [2.0, 2.0] and [m.step for m in history] == [1, 2]
    assert [a.path for a in client.list_artifacts(parent.info.run_id)] == ["curves", "roc.png"]
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "curves")] == [f"curves/{CURVES_FILE}"]
    assert matplotlib.image.imread(tmp_path / CURVES_FILE).shape[:2] == (396, 495)  # one panel: "patch"
    (dataset,) = parent.inputs.dataset_inputs
    assert dataset.dataset.digest == DIGEST and dataset.dataset.name == "synthetic-cbis-training"
    assert not tracker.journal_path.exists()


def test_unreachable_store_journals_everything_and_replays(tmp_path, sqlite_uri, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    artifact = tmp_path / "model.pt"
    artifact.write_bytes(b"weights")
    tracker = MLflowTracker(
        "shen_end2end", "synthetic-cbis", output_dir=tmp_path, tracking_uri="http://127.0.0.1:9"
    )
    _run_once(tracker, artifact)  # must not raise
    assert tracker.offline
    entries = [json.loads(line) for line in tracker.journal_path.read_text().splitlines()]
    ops = [e["op"] for e in entries]
    assert ops[0] == "start" and "log_metrics" in ops and ops[-1] == "finish"
    curves = [e for e in entries if e["op"] == "log_artifact" and e["artifact_path"] == "curves"]
    assert len(curves) == 1 and curves[0]["path"] == str((tmp_path / CURVES_FILE).resolve())

    assert main(["mlflow", "replay", str(tracker.journal_path), "--tracking-uri", sqlite_uri]) == 0
    client = MlflowClient(sqlite_uri)
    run_id = next(
        r.info.run_id
        for r in client.search_runs([client.get_experiment_by_name("synthetic-cbis").experiment_id])
        if "mlflow.parentRunId" not in r.data.tags
    )
    client = MlflowClient(sqlite_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["test_auc"] == 0.9
    assert [a.path for a in client.list_artifacts(run_id)] == ["curves", "model.pt"]
    assert [a.path for a in client.list_artifacts(run_id, "curves")] == [f"curves/{CURVES_FILE}"]
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.digest == DIGEST and dataset.dataset.name == "synthetic-cbis-training"
    assert sorted(c["name"] for c in json.loads(dataset.dataset.schema)["mlflow_colspec"]) == [
        "image",
        "label",
    ]
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    assert len(children) == 1 and client.get_metric_history(children[0].info.run_id, "train_loss")


def test_names_and_params_helpers():
    a, b = unique_run_name("nyu_multiview", "patch"), unique_run_name("nyu_multiview", "patch")
    assert a != b and a.startswith("nyu_multiview-patch-")
    assert flatten_params({"a": {"b": 1}, "c": [1, 2]}) == {"a.b": "1", "c": "[1, 2]"}


def test_disabled_tracker_is_a_no_op(tmp_path):
    tracker = MLflowTracker("x", "y", output_dir=tmp_path, enabled=False, tracking_uri="http://127.0.0.1:9")
    _run_once(tracker, tmp_path)
    assert not tracker.journal_path.exists() and tracker.run_id is None


def _stage(tracker: MLflowTracker, stage: str, epochs: dict[str, list[float]]) -> None:
    tracker.start_stage(stage)
    for epoch, values in enumerate(zip(*epochs.values()), start=1):
        tracker.log_metrics(dict(zip(epochs, values)), step=epoch, stage=stage)
    tracker.end_stage(stage)


def test_best_val_auc_of_the_last_stage_lands_on_the_parent_and_in_compare(tmp_path, sqlite_uri):
    tracker = MLflowTracker("mass_roi_finetune", "synthetic-x", output_dir=tmp_path, tracking_uri=sqlite_uri)
    tracker.start()
    _stage(tracker, "transfer", {"train_loss": [0.9, 0.7, 0.6], "val_auc": [0.6, 0.8, 0.7]})
    _stage(tracker, "finetune", {"train_loss": [0.5, 0.4, 0.3], "val_auc": [0.75, math.nan, 0.72]})
    _stage(tracker, "test", {"test_auc": [0.9]})  # no val_auc: nothing copied
    tracker.finish()

    client = MlflowClient(sqlite_uri)
    history = client.get_metric_history(tracker.run_id, "val_auc")
    assert [(m.step, m.value) for m in history] == [(1, 0.8), (2, 0.75)]
    (run,) = latest_runs(sqlite_uri, experiment="synthetic-x")
    assert run.metrics["val_auc"] == pytest.approx(0.75)
    header = format_table([run]).splitlines()[0]
    assert "val_auc" in header and "0.750" in format_table([run])
    # two panels (transfer, finetune); the test stage has no per-epoch loss or validation rate
    assert matplotlib.image.imread(tmp_path / CURVES_FILE).shape[:2] == (396, 990)


def test_no_training_curves_when_nothing_per_epoch_was_logged(tmp_path, sqlite_uri):
    tracker = MLflowTracker("shen_end2end", "synthetic-x", output_dir=tmp_path, tracking_uri=sqlite_uri)
    tracker.start()
    tracker.log_metrics({"test_auc": 0.9})
    tracker.finish()
    client = MlflowClient(sqlite_uri)
    assert not (tmp_path / CURVES_FILE).exists() and client.list_artifacts(tracker.run_id) == []
    assert "val_auc" not in client.get_run(tracker.run_id).data.metrics


def test_tracking_uri_precedence_argument_then_env_then_default(tmp_path, monkeypatch):
    monkeypatch.setenv("MONAI_MAMMO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    default = f"sqlite:///{tmp_path / 'home' / 'mlflow' / 'mlflow.db'}"
    assert default_tracking_uri() == default
    assert MLflowTracker("x", "y", output_dir=tmp_path).tracking_uri == default
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert MLflowTracker("x", "y", output_dir=tmp_path).tracking_uri == "http://env:5000"
    explicit = MLflowTracker("x", "y", output_dir=tmp_path, tracking_uri="http://arg:5000")
    assert explicit.tracking_uri == "http://arg:5000"


def test_a_run_whose_process_crashes_is_marked_failed(tmp_path, sqlite_uri):
    """An exception escaping a bundle's run section skips finalize: the run must not stay RUNNING."""
    import subprocess
    import sys

    script = (
        "from monai_mammo.engines.tracking import MLflowTracker\n"
        f"t = MLflowTracker('shen_end2end', 'crash-test', output_dir={str(tmp_path)!r}, tracking_uri={sqlite_uri!r})\n"
        "t.start()\n"
        "t.start_stage('patch')\n"
        "t.log_metrics({'train_loss': 0.5}, step=1, stage='patch')\n"
        "raise RuntimeError('boom')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "boom" in done.stderr
    client = MlflowClient(sqlite_uri)
    experiment = client.get_experiment_by_name("crash-test")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted((r.data.tags.get("stage", "parent"), r.info.status) for r in runs) == [
        ("parent", "FAILED"),
        ("patch", "FAILED"),
    ]
    assert "was not finished: marking it FAILED" in done.stderr
