"""Tracking end to end: tiny bundles of two families against a real ``mlflow server`` over HTTP,
and a tiny bundle run whose store is unreachable (outputs kept, run replayed afterwards)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from monai_mammo.engines.comparison import latest_runs
from monai_mammo.engines.tracking import CONTRACT_METRICS, replay_journal

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from test_bundle_mass_roi import TINY as MASS_TINY  # noqa: E402
from test_bundle_shen import TINY as SHEN_TINY  # noqa: E402

COMMON_TAGS = ("model_family", "bundle_version", "dataset", "dataset_digest", "split_seed", "git_commit")
EVALUATION_FILES = ("roc.png", "confusion_matrix.png", "confusion_matrix.csv", "predictions.csv")

# (family, config file, tiny overrides); --dataset_name puts both in one experiment
FAMILIES = [
    ("shen_end2end", "bundles/shen_end2end/configs/train.json", SHEN_TINY),
    ("mass_roi_finetune", "bundles/mass_roi_finetune/configs/train.json", MASS_TINY),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(
    tmp: Path, config: str, overrides: list[str], tracking_uri: str, name: str
) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "MONAI_MAMMO_HOME": str(tmp / "home"),
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config]
    cmd += ["--output_dir", str(tmp / name / "out"), "--ckpt_dir", str(tmp / name / "models"), *overrides]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow_server")
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    cmd += [
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        (root / "artifacts").as_uri(),
    ]
    log = open(root / "server.log", "w")
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                    break
            except OSError:
                pass
            if server.poll() is not None or time.time() > deadline:
                pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(1)
        yield url, root
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_two_families_share_one_experiment_on_an_http_server(mlflow_server, tmp_path):
    url, root = mlflow_server
    for family, config, overrides in FAMILIES:
        _run(tmp_path, config, [*overrides, "--dataset_name", "shared-synthetic"], url, family)
    client = MlflowClient(url)
    experiment = client.get_experiment_by_name("shared-synthetic")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    parents = {r.data.tags["model_family"]: r for r in runs if "mlflow.parentRunId" not in r.data.tags}
    assert set(parents) == {family for family, _, _ in FAMILIES}
    missing = {}
    for family, run in parents.items():
        assert run.info.status == "FINISHED", family
        for tag in COMMON_TAGS:
            assert run.data.tags.get(tag), (family, tag)
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"executed_config.json", "checkpoints", "evaluation", "curves"} <= artifacts, (
            family,
            artifacts,
        )
        curves = [a.path for a in client.list_artifacts(run.info.run_id, "curves")]
        assert curves == ["curves/training_curves.png"], (family, curves)
        evaluation = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
        assert {f"evaluation/{name}" for name in EVALUATION_FILES} <= evaluation, (family, evaluation)
        assert [d.dataset.digest for d in run.inputs.dataset_inputs] == [run.data.tags["dataset_digest"]]
        assert 0.0 <= run.data.metrics.get("val_auc", 0.0) <= 1.0, family
        missing[family] = [key for key in CONTRACT_METRICS if key not in run.data.metrics]
    assert missing == {family: [] for family in parents}, missing
    assert any((root / "artifacts").rglob("executed_config.json")), (
        "artifacts travelled over HTTP to the server"
    )
    compared = latest_runs(url, experiment="shared-synthetic")
    assert [r.family for r in compared] == sorted(parents)
    assert all("val_auc" in r.metrics for r in compared)


def test_unreachable_store_keeps_outputs_and_the_run_can_be_replayed(tmp_path):
    dead = f"http://127.0.0.1:{_free_port()}"
    result = _run(tmp_path, FAMILIES[0][1], FAMILIES[0][2], dead, "offline")
    out = tmp_path / "offline" / "out"
    assert "unreachable" in result.stdout + result.stderr
    assert (tmp_path / "offline" / "models" / "whole_image" / "model.pt").is_file()
    assert (out / "test" / "metrics.json").is_file()
    journal = out / "mlflow_journal.jsonl"
    assert journal.is_file()
    store = f"sqlite:///{tmp_path / 'replayed.db'}"
    run_id = replay_journal(journal, tracking_uri=store)
    client = MlflowClient(store)
    run = client.get_run(run_id)
    assert run.data.tags["model_family"] == "shen_end2end" and "test_auc" in run.data.metrics
    assert run.info.status == "FINISHED" and "val_auc" in run.data.metrics
    assert (out / "training_curves.png").is_file()
    assert [a.path for a in client.list_artifacts(run_id, "curves")] == ["curves/training_curves.png"]
    assert [d.dataset.digest for d in run.inputs.dataset_inputs] == [run.data.tags["dataset_digest"]]
