"""The shen_end2end bundle: properties, metadata, and a tiny end-to-end run logged to MLflow."""

from __future__ import annotations

import ast
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from monai.bundle import ConfigWorkflow, verify_metadata

from monai_mammo.engines.tracking import CONTRACT_METRICS
from monai_mammo.engines.workflow import load_checkpoint
from monai_mammo.exceptions import MammoDataError

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "shen_end2end"
CONFIGS = BUNDLE / "configs"
SCHEMA = REPO / "monai_mammo" / "resources" / "meta_schema.json"

TINY = [
    "--synthetic",
    "{'n_patients': 16, 'seed': 0, 'image_shape': [192, 160], 'style': 'film'}",
    "--image_size",
    "[96, 80]",
    "--patch_size",
    "24",
    "--patch_stages#0#epochs",
    "1",
    "--stages",
    "[{'name': 'whole_new_top', 'epochs': 1, 'lr': 0.001, 'trainable': 'new'},"
    " {'name': 'whole_all', 'epochs': 1, 'lr': 0.0001, 'trainable': 'all'}]",
    "--split#ratios",
    "[0.5, 0.2, 0.3]",
    "--n_bootstrap",
    "50",
    "--num_workers",
    "0",
]


def _run_bundle(tmp: Path, configs: str, *extra: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "MONAI_MAMMO_HOME": str(tmp / "home"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", configs]
    cmd += ["--output_dir", str(tmp / "out"), "--ckpt_dir", str(tmp / "models"), *TINY, *extra]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shen")
    result = _run_bundle(tmp, str(CONFIGS / "train.json"))
    return tmp, result


def test_train_config_has_the_bundle_properties(tmp_path, monkeypatch):
    # an empty initialize list: nothing is trained or logged; MONAI resolves the properties'
    # content (datasets included), so the tiny synthetic dataset goes to a temporary home
    monkeypatch.setenv("MONAI_MAMMO_HOME", str(tmp_path))
    overrides = {TINY[i][2:]: ast.literal_eval(TINY[i + 1]) for i in range(0, len(TINY), 2)}
    overrides.update(initialize=[], output_dir=str(tmp_path / "out"), ckpt_dir=str(tmp_path / "models"))
    workflow = ConfigWorkflow(config_file=str(CONFIGS / "train.json"), workflow_type="train", **overrides)
    workflow.initialize()
    assert workflow.check_properties() in (None, [])
    assert workflow.parser["train"]["trainer"]["max_epochs"].startswith("$")


def test_metadata_verifies_offline_against_the_shipped_schema(tmp_path):
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(SCHEMA))
    broken = json.loads((CONFIGS / "metadata.json").read_text())
    del broken["network_data_format"]
    (tmp_path / "metadata.json").write_text(json.dumps(broken))
    with pytest.raises(Exception, match="network_data_format"):
        verify_metadata(meta_file=str(tmp_path / "metadata.json"), filepath=str(SCHEMA))


def test_tiny_run_writes_an_mlflow_run_with_params_metrics_artifacts(trained):
    tmp, _ = trained
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("synthetic-cbis-ddsm")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    stages = {r.data.tags["stage"]: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert set(stages) == {"patch", "whole_image", "test"}
    assert all(r.info.status == "FINISHED" for r in runs)
    tags = parent.data.tags
    assert tags["model_family"] == "shen_end2end" and tags["patch_set"] == "S10"
    assert len(tags["dataset_digest"]) == 16 and tags["split_seed"] == "0"
    params = parent.data.params
    assert params["backbone"] == "resnet18" and params["patch_size"] == "24"
    assert params["stages.1.trainable"] == "all" and params["patch_stages.0.epochs"] == "1"
    assert [key for key in CONTRACT_METRICS if key not in parent.data.metrics] == []
    assert {"test_a_auc_ci_low", "test_a_auc_ci_high"} <= set(parent.data.metrics)
    for key, value in (("n_bootstrap", "50"), ("val_interval", "1"), ("on_bad_sample", "skip")):
        assert params[key] == value, key
    assert {"max_skip_fraction", "memory_format", "cache"} <= set(params)
    assert "val_auc" in stages["whole_image"].data.metrics
    assert "val_patch_auc" in stages["patch"].data.metrics and "train_loss" in stages["patch"].data.metrics
    top = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"executed_config.json", "checkpoints", "evaluation", "data"} <= top
    evaluation = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "evaluation")}
    assert {"roc.png", "confusion_matrix.png", "predictions.csv", "metrics.json"} <= evaluation
    assert [Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "checkpoints")] == [
        "model.pt"
    ]
    assert len(parent.data.params) >= 20
    assert parent.inputs.dataset_inputs, "the datalist is logged as an MLflow dataset input"


def test_tiny_run_outputs_and_progress(trained):
    tmp, result = trained
    assert "[patch/patch_all] epoch 1/1" in result.stdout
    assert "[whole_image/whole_all] epoch 2/2" in result.stdout and "ETA" in result.stdout
    metrics = json.loads((tmp / "out" / "test" / "metrics.json").read_text())
    assert metrics["test_n_images"] > 0 and 0 <= metrics["test_a_auc"] <= 1
    rows = list(csv.DictReader(open(tmp / "out" / "test" / "predictions.csv")))
    assert len(rows) == metrics["test_n_images"] and rows[0]["id"].endswith(".dcm")
    datalist = json.loads((tmp / "out" / "datalist.json").read_text())
    patients = [{i["patient_id"] for i in datalist[s]} for s in ("training", "validation", "test")]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])


def test_evaluate_and_inference_configs_reuse_the_trained_model(trained):
    tmp, _ = trained
    _run_bundle(tmp, f"['{CONFIGS / 'train.json'}','{CONFIGS / 'evaluate.json'}']")
    evaluated = json.loads((tmp / "out" / "evaluate" / "metrics.json").read_text())
    tested = json.loads((tmp / "out" / "test" / "metrics.json").read_text())
    assert evaluated["test_auc"] == pytest.approx(tested["test_auc"])
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("synthetic-cbis-ddsm").experiment_id])
    parent = next(
        r for r in runs if r.data.tags.get("stage") == "evaluate" and "mlflow.parentRunId" not in r.data.tags
    )
    assert parent.info.status == "FINISHED" and "evaluate" in parent.info.run_name
    assert parent.info.run_name.startswith("shen_end2end-evaluate-")

    datalist = json.loads((tmp / "out" / "datalist.json").read_text())
    images = tmp / "to_infer"
    images.mkdir()
    for k, item in enumerate(datalist["test"][:3]):
        os.symlink(item["image"], images / f"case{k}.dcm")
    env = {**os.environ, "MONAI_MAMMO_HOME": str(tmp / "home")}
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(CONFIGS / "inference.json")]
    cmd += [
        "--ckpt_dir",
        str(tmp / "models"),
        "--input_dir",
        str(images),
        "--output_csv",
        str(tmp / "pred.csv"),
    ]
    cmd += ["--image_size", "[96, 80]", "--num_workers", "0"]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp / "pred.csv")))
    assert [Path(r["id"]).name for r in rows] == ["case0.dcm", "case1.dcm", "case2.dcm"]
    assert all(0.0 <= float(r["p_malignant"]) <= 1.0 for r in rows)


def test_resume_skips_finished_stages_and_checkpoints_load(trained):
    tmp, _ = trained
    result = _run_bundle(tmp, str(CONFIGS / "train.json"), "--resume", "true")
    assert result.stdout.count("(already complete)") == 2
    state = torch.load(tmp / "models" / "whole_image" / "last.pt", weights_only=False)
    assert (
        state["trainer"]["iteration"] == 2 * state["trainer"]["epoch_length"]
        and state["stages"]["current"] == 1
    )
    truncated = tmp / "truncated.pt"
    truncated.write_bytes((tmp / "models" / "whole_image" / "model.pt").read_bytes()[:100])
    with pytest.raises(MammoDataError, match="truncated.pt"):
        load_checkpoint(torch.nn.Linear(1, 1), truncated)


def test_multi_gpu_config_runs_with_torchrun_on_cpu(tmp_path):
    """``multi_gpu_train.json`` with torchrun, 2 processes, gloo: one MLflow run, loadable checkpoints."""
    env = {
        **os.environ,
        "MONAI_MAMMO_HOME": str(tmp_path / "home"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "OMP_NUM_THREADS": "1",
    }
    configs = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'multi_gpu_train.json'}']"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2"]
    cmd += ["-m", "monai.bundle", "run", "--config_file", configs]
    cmd += ["--output_dir", str(tmp_path / "out"), "--ckpt_dir", str(tmp_path / "models"), *TINY]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("[whole_image/whole_all] epoch 2/2") == 2  # both ranks trained
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("synthetic-cbis-ddsm").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and "test_auc" in parents[0].data.metrics  # rank 0 alone logs
    state = torch.load(tmp_path / "models" / "whole_image" / "model.pt", weights_only=True)
    assert state and not any(k.startswith("module.") for k in state)  # loadable without DDP


def test_paper_config_merges_with_the_paper_networks_and_schedules(tmp_path, monkeypatch):
    from monai.bundle import ConfigParser

    monkeypatch.setenv("MONAI_MAMMO_HOME", str(tmp_path))
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "paper.json")])
    parser.read_meta(str(CONFIGS / "metadata.json"))
    whole = parser.get_parsed_content("network_def")
    assert whole.trunk.out_channels == 2048 and parser.get_parsed_content("image_size") == [1152, 896]
    assert [s["trainable"] for s in parser.get_parsed_content("patch_stages")] == ["head", "top:5", "all"]
    assert [s["lr"] for s in parser.get_parsed_content("stages")] == [1e-4, 1e-5]
    steps = [type(t).__name__ for t in parser.get_parsed_content("image_preprocessing")[2].transforms]
    assert steps == ["ScaleBitDepthd", "RepeatChanneld", "SubtractMeand"]


def test_inference_config_builds_the_trained_network():
    """inference.json stands alone (MONAI loads only it), so its network settings must match train.json."""
    train = json.loads((CONFIGS / "train.json").read_text())
    inference = json.loads((CONFIGS / "inference.json").read_text())
    for key in ("image_size", "backbone", "in_channels", "widen_factor", "top", "top_blocks"):
        assert inference[key] == train[key], key
