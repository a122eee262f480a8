"""The mass_roi_finetune bundle: properties, metadata, a tiny two-stage run (transfer learning
then fine tuning) logged to MLflow, evaluation, inference and DDP, on a tiny synthetic CBIS-DDSM."""

from __future__ import annotations

import ast
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from monai.bundle import ConfigParser, ConfigWorkflow, verify_metadata

from monai_mammo.data.synthetic.writers import write_dataset
from monai_mammo.engines.tracking import CONTRACT_METRICS
from monai_mammo.engines.workflow import load_checkpoint
from monai_mammo.networks.zoo import build_zoo_classifier

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "mass_roi_finetune"
CONFIGS = BUNDLE / "configs"
SCHEMA = REPO / "monai_mammo" / "resources" / "meta_schema.json"

TINY = [
    "--synthetic",
    "{'n_patients': 16, 'seed': 0, 'image_shape': [256, 192], 'style': 'film'}",
    "--split#ratios",
    "[0.5, 0.25, 0.25]",
    "--roi_size",
    "32",
    "--transfer_stage",
    "{'epochs': 2, 'lr': 0.001}",
    "--finetune_stage",
    "{'epochs': 1, 'lr': 0.0001}",
    "--batch_size",
    "6",
    "--gradcam_which",
    "all",
    "--n_gradcam",
    "3",
    "--n_bootstrap",
    "20",
    "--num_workers",
    "0",
]


def _value(text: str) -> object:
    """A command-line value as the bundle runner reads it (a Python literal, else the string)."""
    try:
        return ast.literal_eval(text)
    except ValueError:
        return text


TINY_OVERRIDES = {TINY[i][2:]: _value(TINY[i + 1]) for i in range(0, len(TINY), 2)}
TL, FT = "vgg16-TL", "vgg16-10-FT"


def _env(tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "MONAI_MAMMO_HOME": str(tmp / "home"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
        "PYTHONUNBUFFERED": "1",
    }


def _runs(tmp: Path) -> tuple[MlflowClient, list]:
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    return client, client.search_runs([client.get_experiment_by_name("synthetic-cbis-ddsm").experiment_id])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mass")
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(CONFIGS / "train.json")]
    cmd += ["--output_dir", str(tmp / "out"), "--ckpt_dir", str(tmp / "models"), *TINY]
    cmd += ["--save_every_epoch", "True"]
    result = subprocess.run(cmd, cwd=REPO, env=_env(tmp), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return tmp, result


def test_train_config_has_the_bundle_properties(trained, monkeypatch):
    tmp, _ = trained
    monkeypatch.setenv("MONAI_MAMMO_HOME", str(tmp / "home"))  # the tiny dataset is cached there
    overrides = {
        **TINY_OVERRIDES,
        "initialize": [],
        "output_dir": str(tmp / "out"),
        "ckpt_dir": str(tmp / "props"),
    }
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "train.json"), logging_file=False, workflow_type="train", **overrides
    )
    workflow.initialize()
    assert workflow.check_properties() in (None, [])
    # MONAI writes the "#" of ids as "::"
    assert workflow.parser["train"]["trainer"]["max_epochs"] == "@finetune_stage::epochs"
    for section in ("transfer", "train"):
        assert all(isinstance(h, dict) and "_target_" in h for h in workflow.parser[section]["handlers"])
    assert workflow.parser.get_parsed_content("roi_resize") == 33  # 32 * 328 / 320, the paper's margin


def test_metadata_verifies_offline_against_the_shipped_schema(tmp_path):
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(SCHEMA))
    broken = json.loads((CONFIGS / "metadata.json").read_text())
    broken["network_data_format"]["inputs"]["image"]["type"] = "picture"
    (tmp_path / "metadata.json").write_text(json.dumps(broken))
    with pytest.raises(Exception, match="picture"):
        verify_metadata(meta_file=str(tmp_path / "metadata.json"), filepath=str(SCHEMA))


def test_tiny_run_logs_one_stage_run_per_model_name_with_beta(trained):
    tmp, _ = trained
    client, runs = _runs(tmp)
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    stages = {r.data.tags["stage"]: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert set(stages) == {TL, FT, "test"} and all(r.info.status == "FINISHED" for r in runs)
    tags = parent.data.tags
    assert tags["model_family"] == "mass_roi_finetune" and tags["model_name"] == FT and tags["gamma"] == "10"
    assert len(tags["dataset_digest"]) == 16 and tags["split_seed"] == "0"
    assert parent.data.params["optimizer"] == "rmsprop" and parent.data.params["head"] == "falconi"
    assert parent.data.params["transfer_stage.lr"] == "0.001" and parent.data.params["roi_size"] == "32"
    for name in (TL, FT):
        metrics = stages[name].data.metrics
        for key in ("train_loss", "train_accuracy", "val_accuracy", "val_auc", "val_f1", "val_sensitivity"):
            assert key in metrics, (name, key)
        assert {
            "val_specificity",
            "overfitting_ratio",
            "overfit",
            "best_overfitting_ratio",
            "best_epoch",
        } <= set(metrics)
        history = client.get_metric_history(stages[name].info.run_id, "overfitting_ratio")
        assert [m.step for m in history] == list(range(1, len(history) + 1))
    assert len(client.get_metric_history(stages[TL].info.run_id, "val_accuracy")) == 2
    # transfer learning trains the head only; fine tuning also trains blocks 4 and 5 (gamma = 10)
    tl_params, ft_params = stages[TL].data.params, stages[FT].data.params
    assert tl_params["first_trained_layer"] == "19" and ft_params["first_trained_layer"] == "10"
    assert int(tl_params["n_trainable_parameters"]) < int(ft_params["n_trainable_parameters"])
    assert ast.literal_eval(ft_params["trained_layers"])[:2] == ["block3_pool", "block4_conv1"]
    for key in ("test_accuracy", "test_auc", "test_f1", "test_sensitivity", "test_specificity"):
        assert key in parent.data.metrics and key in stages["test"].data.metrics, key
    metrics = parent.data.metrics
    assert [key for key in CONTRACT_METRICS if key not in metrics] == []
    assert metrics["test_a_auc_ci_low"] <= metrics["test_a_auc"] <= metrics["test_a_auc_ci_high"]
    # the parent's val_auc is the best epoch of the last training stage (fine tuning)
    ft_val_auc = [m.value for m in client.get_metric_history(stages[FT].info.run_id, "val_auc")]
    assert metrics["val_auc"] == pytest.approx(max(ft_val_auc))
    for key in ("val_tp", "val_fp", "val_tn", "val_fn"):
        assert len(client.get_metric_history(stages[TL].info.run_id, key)) == 2, key
    params = parent.data.params
    assert params["n_bootstrap"] == "20" and params["gradcam_which"] == "all" and params["n_gradcam"] == "3"
    assert params["save_every_epoch"] == "True" and params["on_bad_sample"] == "skip"
    assert "max_skip_fraction" in params
    checkpoints = {a.path for a in client.list_artifacts(parent.info.run_id, "checkpoints")}
    assert checkpoints == {f"checkpoints/{TL}", f"checkpoints/{FT}"}
    evaluation = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "evaluation")}
    assert {"roc.png", "confusion_matrix.png", "predictions.csv", "gradcam"} <= evaluation
    overlays = client.list_artifacts(parent.info.run_id, "evaluation/gradcam")
    assert len(overlays) == 3 and all(a.path.endswith(".png") for a in overlays)


def test_tiny_run_outputs_rois_and_frozen_layers(trained):
    tmp, result = trained
    assert f"[{TL}] epoch 2/2" in result.stdout and f"[{FT}] epoch 1/1" in result.stdout
    tl = load_checkpoint(build_zoo_classifier("vgg16"), tmp / "models" / TL / "model.pt")
    ft = load_checkpoint(build_zoo_classifier("vgg16"), tmp / "models" / FT / "model.pt")
    tl_state, ft_state = tl.state_dict(), ft.state_dict()
    frozen = [
        n for n, _ in tl.named_parameters() if n.startswith("trunk.features.") and int(n.split(".")[2]) < 16
    ]
    assert len(frozen) == 14 and all(torch.equal(tl_state[n], ft_state[n]) for n in frozen)  # blocks 1-3
    for trained_in_ft in ("trunk.features.28.weight", "head.fc.weight"):  # block5_conv3 and the head
        assert not torch.equal(tl_state[trained_in_ft], ft_state[trained_in_ft])
    report = json.loads((tmp / "out" / "data" / "data_report.json").read_text())
    for split in ("training", "validation", "test"):
        assert report[split]["rois"] + sum(report[split]["skipped"].values()) == report[split]["masses"]
    index = json.loads(next((tmp / "out" / "cache" / "mass_rois").glob("*/index.json")).read_text())
    first = index["samples"][0]
    assert np.load(first["image"]).shape[-2:] == (32, 32)
    overlays = sorted((tmp / "out" / "test" / "gradcam").glob("*.png"))
    assert len(overlays) == 3
    # save_every_epoch: one file per epoch of each stage, in <ckpt_dir>/<model name>/epochs
    for name, epochs in ((TL, 2), (FT, 1)):
        saved = sorted(p.name for p in (tmp / "models" / name / "epochs").iterdir())
        assert saved == [f"model_epoch_{e}.pt" for e in range(1, epochs + 1)], name
    last_ft = load_checkpoint(
        build_zoo_classifier("vgg16"), tmp / "models" / FT / "epochs" / "model_epoch_1.pt"
    )
    assert all(torch.equal(v, ft_state[k]) for k, v in last_ft.state_dict().items())  # one FT epoch: the best
    metrics = json.loads((tmp / "out" / "test" / "metrics.json").read_text())
    assert metrics["test_n_images"] == report["test"]["rois"]


def test_evaluate_and_inference_configs_reuse_the_trained_model(trained, monkeypatch, tmp_path):
    tmp, _ = trained
    for key, value in _env(tmp).items():
        monkeypatch.setenv(key, value)
    settings = {**TINY_OVERRIDES, "output_dir": str(tmp / "out"), "ckpt_dir": str(tmp / "models")}
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")],
        logging_file=False,
        workflow_type="train",
        **settings,
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    evaluated = json.loads((tmp / "out" / "evaluate" / "metrics.json").read_text())
    tested = json.loads((tmp / "out" / "test" / "metrics.json").read_text())
    assert evaluated["test_accuracy"] == pytest.approx(tested["test_accuracy"])
    assert evaluated["test_a_auc"] == pytest.approx(tested["test_a_auc"])
    _, runs = _runs(tmp)
    parent = next(
        r for r in runs if r.data.tags.get("stage") == "evaluate" and "mlflow.parentRunId" not in r.data.tags
    )
    assert parent.info.status == "FINISHED" and parent.info.run_name.startswith("mass_roi_finetune-evaluate-")
    assert [key for key in CONTRACT_METRICS[:-1] if key not in parent.data.metrics] == []

    # a digital DICOM + box CSV folder (pathology known here, but not needed)
    root = write_dataset("bbox-csv", tmp_path / "digital", n_patients=6, seed=1, image_shape=(256, 192))
    rows = list(csv.DictReader(open(root / "annotations.csv")))
    masses = [r for r in rows if r["lesion_type"] == "Mass"]
    inference = ConfigWorkflow(
        config_file=str(CONFIGS / "inference.json"),
        logging_file=False,
        workflow_type="infer",
        ckpt_dir=str(tmp / "models"),
        output_dir=str(tmp_path / "inference"),
        input_dir=str(root),
        input_format="bbox-csv",
        output_csv=str(tmp_path / "pred.csv"),
        roi_size=32,
        num_workers=0,
    )
    inference.initialize()
    inference.run()
    predicted = list(csv.DictReader(open(tmp_path / "pred.csv")))
    assert 0 < len(predicted) <= len(masses)
    assert all(0.0 <= float(r["p_malignant"]) <= 1.0 for r in predicted)
    assert {r["label"] for r in predicted} <= {"0", "1"}


def test_multi_gpu_config_runs_with_torchrun_on_cpu(trained):
    """``multi_gpu_train.json`` with torchrun, 2 processes, gloo: a DDP wrapper per stage, one MLflow parent."""
    base, _ = trained
    tmp = base / "ddp"
    env = {**_env(tmp), "MONAI_MAMMO_HOME": str(base / "home"), "OMP_NUM_THREADS": "1"}
    configs = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'multi_gpu_train.json'}']"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2"]
    cmd += ["-m", "monai.bundle", "run", "--config_file", configs]
    cmd += ["--output_dir", str(tmp / "out"), "--ckpt_dir", str(tmp / "models"), *TINY]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count(f"[{FT}] epoch 1/1") == 2  # both ranks fine tuned
    _, runs = _runs(tmp)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and "test_accuracy" in parents[0].data.metrics
    state = torch.load(tmp / "models" / FT / "model.pt", weights_only=True)["network"]
    assert state and not any(k.startswith("module.") for k in state)


def test_paper_config_merges_with_the_paper_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("MONAI_MAMMO_HOME", str(tmp_path))
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "paper.json")])
    parser.read_meta(str(CONFIGS / "metadata.json"))
    assert (parser.get_parsed_content("roi_size"), parser.get_parsed_content("roi_resize")) == (320, 328)
    assert parser["transfer_stage"]["lr"] == 1e-5 and parser["finetune_stage"]["lr"] == 2e-7
    assert parser["optimizer"] == "rmsprop" and parser["early_stop_patience"] == 50 and parser["gamma"] == 10
    head = parser.get_parsed_content("network_def").head
    assert head.fc.out_features == 4096 and head.dropout.p == 0.2 and head.classifier.out_features == 1
    assert parser.get_parsed_content("ft_name") == "vgg16-10-FT"


def test_inference_config_builds_the_trained_network():
    """inference.json stands alone (MONAI loads only it), so its network and ROI settings must match train.json."""
    train = json.loads((CONFIGS / "train.json").read_text())
    inference = json.loads((CONFIGS / "inference.json").read_text())
    keys = (
        "roi_size",
        "roi_resize",
        "clahe_clip",
        "nlm_h",
        "backbone",
        "head",
        "dropout",
        "imagenet_norm",
        "gamma",
    )
    for key in keys:
        assert inference[key] == train[key], key
    assert inference["network_def"] == train["network_def"].replace(", weights=@pretrained_weights", "")
    assert inference["preprocessing"] == train["roi"]["preprocessing"]
