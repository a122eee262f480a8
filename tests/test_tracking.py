"""MLflowTracker against a real SQLite store; journal + replay when the store is unreachable."""

from __future__ import annotations

import json

import pytest
from ignite.engine import Engine
from mlflow.tracking import MlflowClient

from monai_mammo.cli import main
from monai_mammo.engines.tracking import MLflowTracker, flatten_params, unique_run_name


@pytest.fixture
def sqlite_uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _run_once(tracker: MLflowTracker, artifact) -> None:
    tracker.start()
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
    assert [a.path for a in client.list_artifacts(parent.info.run_id)] == ["roc.png"]
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
    ops = [json.loads(line)["op"] for line in tracker.journal_path.read_text().splitlines()]
    assert ops[0] == "start" and "log_metrics" in ops and ops[-1] == "finish"

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
    assert [a.path for a in client.list_artifacts(run_id)] == ["model.pt"]
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
