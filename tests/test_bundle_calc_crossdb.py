"""The calc_patch_crossdb bundle: properties, metadata, a tiny training run, the cross-database
study, the sweep, evaluation, inference and DDP, all on tiny synthetic film and digital sources."""

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
from monai.bundle import ConfigParser, ConfigWorkflow, verify_metadata

from monai_mammo.engines.tracking import CONTRACT_METRICS

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "calc_patch_crossdb"
CONFIGS = BUNDLE / "configs"
SCHEMA = REPO / "monai_mammo" / "resources" / "meta_schema.json"
EXPERIMENT = "synthetic-cbis-ddsm+synthetic-bbox-csv"

TINY = [
    "--sources#cbis#synthetic",
    "{'n_patients': 12, 'seed': 0, 'image_shape': [256, 192], 'style': 'film'}",
    "--sources#omi#synthetic",
    "{'n_patients': 16, 'seed': 0, 'image_shape': [192, 160]}",
    "--patch_size",
    "32",
    "--epochs",
    "1",
    "--batch_size",
    "6",
    "--n_bootstrap",
    "20",
    "--num_workers",
    "0",
]
TINY_OVERRIDES = {TINY[i][2:]: ast.literal_eval(TINY[i + 1]) for i in range(0, len(TINY), 2)}


def _env(tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "MONAI_MAMMO_HOME": str(tmp / "home"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
        "PYTHONUNBUFFERED": "1",
    }


def _in_process(tmp: Path, monkeypatch, configs: list[str], **overrides) -> ConfigWorkflow:
    """Run merged configs in this process (no interpreter start-up), in the tiny run's store and home."""
    for key, value in _env(tmp).items():
        monkeypatch.setenv(key, value)
    settings = {
        **TINY_OVERRIDES,
        "output_dir": str(tmp / "out"),
        "ckpt_dir": str(tmp / "models"),
        **overrides,
    }
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / c) for c in configs], logging_file=False, workflow_type="train", **settings
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return workflow


def _runs(tmp: Path) -> tuple[MlflowClient, list]:
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return client, client.search_runs([experiment.experiment_id])


def _run_tree(runs: list, parent_id: str) -> dict[str, object]:
    return {r.data.tags["stage"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("calc")
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(CONFIGS / "train.json")]
    cmd += ["--output_dir", str(tmp / "out"), "--ckpt_dir", str(tmp / "models"), *TINY]
    cmd += ["--save_every_epoch", "True"]
    result = subprocess.run(cmd, cwd=REPO, env=_env(tmp), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return tmp, result


def test_train_config_has_the_bundle_properties(trained, monkeypatch):
    tmp, _ = trained
    monkeypatch.setenv("MONAI_MAMMO_HOME", str(tmp / "home"))  # the tiny datasets are cached there
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
    assert workflow.parser["train"]["trainer"]["max_epochs"] == "@epochs"
    assert all(isinstance(h, dict) and "_target_" in h for h in workflow.parser["train"]["handlers"])
    assert workflow.dataset_dir == [
        workflow.parser.get_parsed_content(f"sources#{name}#synthetic_dir") for name in ("cbis", "omi")
    ]


def test_metadata_verifies_offline_against_the_shipped_schema(tmp_path):
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(SCHEMA))
    broken = json.loads((CONFIGS / "metadata.json").read_text())
    del broken["network_data_format"]["outputs"]
    (tmp_path / "metadata.json").write_text(json.dumps(broken))
    with pytest.raises(Exception, match="outputs"):
        verify_metadata(meta_file=str(tmp_path / "metadata.json"), filepath=str(SCHEMA))


def test_tiny_run_logs_parent_stage_and_test_runs_with_the_shared_names(trained):
    tmp, _ = trained
    client, runs = _runs(tmp)
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    stages = _run_tree(runs, parent.info.run_id)
    assert set(stages) == {"train_cbis+omi", "test"}
    assert all(r.info.status == "FINISHED" for r in runs)
    tags = parent.data.tags
    assert tags["model_family"] == "calc_patch_crossdb" and tags["train_sources"] == "cbis+omi"
    assert tags["backbone"] == "resnet50" and len(tags["dataset_digest"]) == 16 and tags["split_seed"] == "0"
    assert parent.data.params["patch_size"] == "32" and parent.data.params["optimizer"] == "adam"
    assert parent.data.params["sources.1.dataset_format"] == "bbox-csv"
    epoch = stages["train_cbis+omi"].data.metrics
    for key in ("train_loss", "train_accuracy", "val_accuracy", "val_auc", "val_f1", "val_sensitivity"):
        assert key in epoch, key
    assert {"val_specificity", "overfitting_ratio", "overfit", "best_epoch", "best_val_accuracy"} <= set(
        epoch
    )
    assert epoch["overfitting_ratio"] == pytest.approx(epoch["train_accuracy"] / epoch["val_accuracy"])
    weights = [float(w) for w in ast.literal_eval(stages["train_cbis+omi"].data.params["class_weights"])]
    assert sum(weights) == pytest.approx(1.0)  # the papers' inverse-frequency weights
    for key in (
        "test_accuracy",
        "test_auc",
        "test_f1",
        "test_sensitivity",
        "test_specificity",
        "test_auc_ci_low",
    ):
        assert key in parent.data.metrics and key in stages["test"].data.metrics, key
    metrics = parent.data.metrics
    assert [key for key in CONTRACT_METRICS if key not in metrics] == []
    assert metrics["test_a_auc_ci_low"] <= metrics["test_a_auc"] <= metrics["test_a_auc_ci_high"]
    assert metrics["val_auc"] == pytest.approx(epoch["val_auc"])  # one epoch: its val_auc is the best
    assert epoch["val_tp"] + epoch["val_fn"] + epoch["val_tn"] + epoch["val_fp"] > 0
    params = parent.data.params
    assert params["n_bootstrap"] == "20" and params["gradcam_which"] == "misclassified"
    assert params["n_gradcam"] == "8" and params["on_bad_sample"] == "skip" and "max_skip_fraction" in params
    top = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"executed_config.json", "checkpoints", "evaluation", "data", "data_report.json"} <= top
    evaluation = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "evaluation")}
    assert {"roc.png", "confusion_matrix.png", "confusion_matrix.csv", "predictions.csv"} <= evaluation
    data = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "data")}
    assert data == {"datalist_cbis.json", "datalist_omi.json"}
    assert parent.inputs.dataset_inputs


def test_tiny_run_outputs_checkpoints_gradcam_and_data_report(trained):
    tmp, result = trained
    assert "[train_cbis+omi] epoch 1/1" in result.stdout
    models = tmp / "models"
    assert (models / "model.pt").is_file() and (models / "last.pt").is_file()
    assert sorted(p.name for p in (models / "epochs").iterdir()) == ["model_epoch_1.pt"]
    state = torch.load(models / "epochs" / "model_epoch_1.pt", weights_only=True)["network"]
    assert not any(k.startswith("module.") for k in state)
    metrics = json.loads((tmp / "out" / "test" / "metrics.json").read_text())
    rows = list(csv.DictReader(open(tmp / "out" / "test" / "predictions.csv")))
    assert (
        len(rows)
        == metrics["test_n_images"]
        == metrics["test_tp"] + metrics["test_fp"] + metrics["test_tn"] + metrics["test_fn"]
    )
    wrong = int(metrics["test_fp"] + metrics["test_fn"])
    overlays = sorted((tmp / "out" / "test" / "gradcam").glob("*.png")) if wrong else []
    assert len(overlays) == min(wrong, 8)
    report = json.loads((tmp / "out" / "data" / "data_report.json").read_text())
    assert set(report) == {"cbis", "omi"}
    omi = report["omi"]["training"]
    assert omi["patches"] <= omi["images"] and set(omi["filter_excluded"]) <= {
        "no_bbox",
        "empty_bbox",
        "multiple_bboxes",
        "not_calcification",
        "ambiguous_pathology",
    }
    assert sum(omi["filter_excluded"].values()) > 0  # the OMI-DB filter excluded masses, normals, ...


def test_evaluate_and_inference_configs_reuse_the_trained_model(trained, monkeypatch):
    tmp, _ = trained
    _in_process(tmp, monkeypatch, ["train.json", "evaluate.json"], gradcam_which="all", n_gradcam=2)
    evaluated = json.loads((tmp / "out" / "evaluate" / "metrics.json").read_text())
    tested = json.loads((tmp / "out" / "test" / "metrics.json").read_text())
    assert evaluated["test_auc"] == pytest.approx(tested["test_auc"])
    assert evaluated["test_accuracy"] == pytest.approx(tested["test_accuracy"])
    assert evaluated["test_a_auc"] == pytest.approx(tested["test_a_auc"])
    # gradcam_which="all": the first n_gradcam test patches, whatever their prediction
    assert len(list((tmp / "out" / "evaluate" / "gradcam").glob("*.png"))) == min(
        2, evaluated["test_n_images"]
    )
    _, runs = _runs(tmp)
    parent = next(
        r for r in runs if r.data.tags.get("stage") == "evaluate" and "mlflow.parentRunId" not in r.data.tags
    )
    assert parent.info.status == "FINISHED" and parent.info.run_name.startswith(
        "calc_patch_crossdb-evaluate-"
    )
    assert [key for key in CONTRACT_METRICS[:-1] if key not in parent.data.metrics] == []

    omi_dir = json.loads((tmp / "out" / "datalist_omi.json").read_text())["summary"]["root"]
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "inference.json"),
        logging_file=False,
        workflow_type="infer",
        ckpt_dir=str(tmp / "models"),
        input_dir=omi_dir,
        output_csv=str(tmp / "pred.csv"),
        patch_size=32,
    )
    workflow.initialize()
    workflow.run()
    rows = list(csv.DictReader(open(tmp / "pred.csv")))
    boxed = [row for row in csv.DictReader(open(Path(omi_dir) / "annotations.csv"))]
    calcs = [r for r in boxed if r["lesion_type"] == "Calcification" and r["xmin"] not in ("", None)]
    assert 0 < len(rows) <= len(calcs)
    assert all(0.0 <= float(r["p_malignant"]) <= 1.0 for r in rows)
    assert {r["label"] for r in rows} <= {"0", "1", "-1"}


def test_crossdb_study_writes_the_3x3_table_and_gradcam_of_common_errors(trained, monkeypatch):
    """Threshold 1.0 calls every patch benign: each cell's sensitivity is 0 and specificity 1,
    and the malignant validation patches are exactly the ones all three models got wrong."""
    tmp, _ = trained
    workflow = _in_process(tmp, monkeypatch, ["train.json", "crossdb.json"], threshold=1.0)
    out = tmp / "out" / "crossdb"
    cells = list(csv.DictReader(open(out / "crossdb_table.csv")))
    assert [(c["model"], c["validation"]) for c in cells] == [
        (m, v) for m in ("train_cbis", "train_omi", "train_cbis+omi") for v in ("cbis", "omi", "cbis+omi")
    ]
    assert all(float(c["sensitivity"]) == 0.0 and float(c["specificity"]) == 1.0 for c in cells)
    common = json.loads((out / "misclassified_by_all.json").read_text())
    malignant = {
        name: sum(
            s["label"] for s in workflow.parser.get_parsed_content("patches")[name]["validation"]["samples"]
        )
        for name in ("cbis", "omi")
    }
    assert common["cbis"]["count"] == malignant["cbis"] > 0 and common["omi"]["count"] == malignant["omi"] > 0
    for name in ("cbis", "omi"):
        for model in ("train_cbis", "train_omi", "train_cbis+omi"):
            assert len(list((out / "gradcam" / name / model).glob("*.png"))) == malignant[name]
    table = (out / "crossdb_table.md").read_text()
    assert "| train_cbis+omi |" in table and "| specificity |" in table

    client, runs = _runs(tmp)
    parent = next(
        r for r in runs if r.data.tags.get("study") == "crossdb" and "mlflow.parentRunId" not in r.data.tags
    )
    assert set(_run_tree(runs, parent.info.run_id)) == {"train_cbis", "train_omi", "train_cbis+omi"}
    assert parent.data.metrics["xdb_train_cbis_plus_omi_on_omi_specificity"] == 1.0
    logged = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "crossdb")}
    assert {"crossdb_table.csv", "crossdb_table.md", "misclassified_by_all.json", "gradcam"} <= logged


def test_sweep_logs_one_tagged_run_per_backbone_and_learning_rate(trained, monkeypatch):
    tmp, _ = trained
    _in_process(
        tmp,
        monkeypatch,
        ["train.json", "sweep.json"],
        **{
            "sweep_backbones": ["resnet50"],
            "sweep_learning_rates": [0.001, 0.0001],
            "train_sources": ["omi"],
        },
    )
    client, runs = _runs(tmp)
    parent = next(
        r for r in runs if r.data.tags.get("study") == "sweep" and "mlflow.parentRunId" not in r.data.tags
    )
    children = _run_tree(runs, parent.info.run_id)
    assert set(children) == {"resnet50-lr0.001", "resnet50-lr0.0001"}
    for name, run in children.items():
        assert run.data.tags["sweep"] == parent.info.run_name and run.data.tags["backbone"] == "resnet50"
        assert float(run.data.tags["lr"]) == float(name.split("-lr")[1])
        assert {"val_accuracy", "overfitting_ratio", "best_val_accuracy"} <= set(run.data.metrics)
    table = json.loads((tmp / "out" / "sweep" / "results.json").read_text())["runs"]
    assert [row["run"] for row in table] == ["resnet50-lr0.001", "resnet50-lr0.0001"]
    assert parent.data.metrics["sweep_best_val_accuracy"] == max(row["val_accuracy"] for row in table)


def test_multi_gpu_config_runs_with_torchrun_on_cpu(trained):
    """``multi_gpu_train.json`` with torchrun, 2 processes, gloo: one MLflow parent, loadable checkpoints."""
    base, _ = trained
    tmp = base / "ddp"
    env = {**_env(tmp), "MONAI_MAMMO_HOME": str(base / "home"), "OMP_NUM_THREADS": "1"}
    configs = f"['{CONFIGS / 'train.json'}','{CONFIGS / 'multi_gpu_train.json'}']"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2"]
    cmd += ["-m", "monai.bundle", "run", "--config_file", configs]
    cmd += ["--output_dir", str(tmp / "out"), "--ckpt_dir", str(tmp / "models"), *TINY]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("[train_cbis+omi] epoch 1/1") == 2  # both ranks trained
    _, runs = _runs(tmp)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and "test_accuracy" in parents[0].data.metrics  # rank 0 alone logs
    state = torch.load(tmp / "models" / "model.pt", weights_only=True)["network"]
    assert state and not any(k.startswith("module.") for k in state)


def test_paper_config_merges_with_the_paper_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("MONAI_MAMMO_HOME", str(tmp_path))
    parser = ConfigParser()
    parser.read_config(
        [str(CONFIGS / "train.json"), str(CONFIGS / "crossdb.json"), str(CONFIGS / "paper.json")]
    )
    parser.read_meta(str(CONFIGS / "metadata.json"))
    assert parser.get_parsed_content("patch_size") == 674
    settings = [parser[k] for k in ("backbone", "optimizer", "lr", "epochs")]
    assert settings == ["resnet101", "adam", 1e-6, 40]
    assert parser["batch_size"] == 8 and parser["augmentation"] == [] and parser["save_every_epoch"] is True
    assert parser.get_parsed_content("sources#cbis#split")["use_official"] is True
    # the study trains on each source and on both, whatever train_sources says
    assert parser.get_parsed_content("train_sources") == ["cbis", "omi"]
    assert len(parser["sweep_backbones"]) == 10 and parser["sweep_learning_rates"][-1] == 1e-7


def test_inference_config_builds_the_trained_network():
    """inference.json stands alone (MONAI loads only it), so its network settings must match train.json."""
    train = json.loads((CONFIGS / "train.json").read_text())
    inference = json.loads((CONFIGS / "inference.json").read_text())
    for key in ("patch_size", "backbone", "head", "dropout", "imagenet_norm"):
        assert inference[key] == train[key], key
    assert inference["network_def"] == train["network_def"].replace(", weights=@pretrained_weights", "")
