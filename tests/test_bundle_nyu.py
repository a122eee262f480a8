"""The nyu_multiview bundle: a tiny chain (patch classifier -> heatmaps -> BI-RADS -> image+heatmaps model
-> test), evaluation, standalone inference, properties, metadata and the paper configuration."""

from __future__ import annotations

import ast
import csv
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from monai.bundle import ConfigParser, ConfigWorkflow, verify_metadata

from monai_mammo.data.indexers.exams import group_image_exams
from monai_mammo.data.safe_pickle import restricted_load
from monai_mammo.data.synthetic.phantom import synthesize_mammogram
from monai_mammo.engines.multiview import read_reader_scores
from monai_mammo.engines.workflow import load_checkpoint
from monai_mammo.exceptions import MammoConfigError, MammoDataError
from monai_mammo.metrics.breast import breast_report
from monai_mammo.networks.multiview import TARGETS, ViewWiseModel, build_multiview
from monai_mammo.networks.patch_classifier import PatchClassifier
from monai_mammo.transforms.breast import CropBreast

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "nyu_multiview"
CONFIGS = BUNDLE / "configs"
SCHEMA = REPO / "monai_mammo" / "resources" / "meta_schema.json"
STAGE_FILES = ["train.json", "train_patch.json", "heatmaps.json", "pretrain_birads.json"]
CHAIN = "[" + ",".join(f"'{CONFIGS / name}'" for name in [*STAGE_FILES, "chain.json"]) + "]"
IMAGE_SHAPE = (256, 208)

TINY = [
    "--synthetic",
    f"{{'n_exams': 12, 'seed': 0, 'image_shape': {list(IMAGE_SHAPE)}}}",
    "--split#ratios",
    "[0.5, 0.25, 0.25]",
    "--cc_size",
    "[64, 48]",
    "--mlo_size",
    "[72, 40]",
    "--patch_stride",
    "16",
    "--patch_epochs",
    "1",
    "--birads_epochs",
    "1",
    "--epochs",
    "2",
    "--tta_passes",
    "2",
    "--n_bootstrap",
    "20",
    "--num_workers",
    "0",
]
# the inference config stands alone: the same network and input settings as TINY
TINY_INFERENCE = [
    "--cc_size",
    "[64, 48]",
    "--mlo_size",
    "[72, 40]",
    "--patch_stride",
    "16",
    "--tta_passes",
    "2",
]


def _env(tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "MONAI_MAMMO_HOME": str(tmp / "home"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",  # the runs are tiny: one thread avoids oversubscribing shared CPUs
    }


def _run(tmp: Path, configs: str, *extra: str, tiny: list[str] = TINY) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", configs]
    cmd += ["--output_dir", str(tmp / "out"), "--ckpt_dir", str(tmp / "models"), *tiny, *extra]
    result = subprocess.run(cmd, cwd=REPO, env=_env(tmp), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _runs(tmp: Path, experiment: str = "synthetic-nyu") -> list:
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


def _csv(path: Path) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(path.read_text().splitlines()))
    return rows[0], rows[1:]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nyu")
    return tmp, _run(tmp, CHAIN)


def test_train_config_has_the_bundle_properties(tmp_path, monkeypatch):
    # an empty initialize list: nothing is trained or logged; MONAI resolves the properties' content
    # (datalist included: the tiny synthetic dataset goes to a temporary home)
    monkeypatch.setenv("MONAI_MAMMO_HOME", str(tmp_path))
    overrides = {TINY[i][2:]: ast.literal_eval(TINY[i + 1]) for i in range(0, len(TINY), 2)}
    overrides.update(initialize=[], output_dir=str(tmp_path / "out"), ckpt_dir=str(tmp_path / "models"))
    workflow = ConfigWorkflow(config_file=str(CONFIGS / "train.json"), workflow_type="train", **overrides)
    workflow.initialize()
    assert workflow.check_properties() in (None, [])
    assert workflow.parser.get_parsed_content("in_channels") == 3  # use_heatmaps: image + 2 heatmaps
    assert workflow.parser.get_parsed_content("weight_decay") == pytest.approx(10**-4.5)


def test_metadata_verifies_offline_against_the_shipped_schema(tmp_path):
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(SCHEMA))
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    assert list(meta["network_data_format"]["outputs"]["pred"]["channel_def"].values()) == list(TARGETS)
    del meta["network_data_format"]
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(Exception, match="network_data_format"):
        verify_metadata(meta_file=str(tmp_path / "metadata.json"), filepath=str(SCHEMA))


def test_chain_logs_every_stage_to_one_mlflow_run(chain):
    tmp, _ = chain
    runs = _runs(tmp)
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    stages = {r.data.tags["stage"]: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert set(stages) == {"patch", "heatmaps", "birads", "cancer", "test"}
    assert all(r.info.status == "FINISHED" for r in runs)
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in stages.values())
    tags = parent.data.tags
    assert tags["model_family"] == "nyu_multiview" and tags["workflow"] == "chain"
    assert tags["use_heatmaps"] == "True" and tags["variant"] == "view" and len(tags["dataset_digest"]) == 16
    params = parent.data.params
    assert params["patch_backbone"] == "densenet121" and params["patch_stride"] == "16"
    assert params["cc_size"] == "[64, 48]" and float(params["weight_decay"]) == pytest.approx(10**-4.5)
    for stage, metric in (
        ("patch", "val_patch_auc"),
        ("birads", "val_birads_auc"),
        ("cancer", "val_mean_auc"),
    ):
        assert {"train_loss", metric} <= set(stages[stage].data.metrics), stage
    assert stages["heatmaps"].data.metrics["heatmap_written"] == 48
    assert stages["cancer"].data.params["init_from_birads"] == "True"
    for name in (
        "auc_malignant",
        "auc_benign",
        "pr_auc_malignant",
        "pr_auc_benign",
        "auc",
        "a_auc",
        "pr_auc",
    ):
        for key in (f"test_{name}", f"test_{name}_ci_low", f"test_{name}_ci_high"):
            assert key in parent.data.metrics and key in stages["test"].data.metrics, key
    metrics = parent.data.metrics
    assert metrics["test_n_exams"] == 3
    # shared names: test_a_auc = the TTA-averaged malignant AUC (the paper's), test_auc = one plain pass
    assert metrics["test_a_auc"] == metrics["test_auc_malignant"]
    assert {"test_sensitivity", "test_specificity", "test_threshold"} <= set(metrics)
    assert "val_auc" in stages["cancer"].data.metrics  # breast-level malignant, next to val_mean_auc
    for key in ("n_bootstrap", "val_interval", "max_skip_fraction", "on_bad_sample", "heatmap_batch_size"):
        assert key in params, key
    assert params["n_bootstrap"] == "20" and params["on_bad_sample"] == "skip"
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    top = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"executed_config.json", "checkpoints", "evaluation", "data"} <= top
    figures = {"evaluation/roc.png", "evaluation/confusion_matrix.png", "evaluation/confusion_matrix.csv"}
    assert figures <= {a.path for a in client.list_artifacts(parent.info.run_id, "evaluation")}
    assert {f.split("/")[1] for f in figures} <= {
        a.path for a in client.list_artifacts(stages["test"].info.run_id)
    }
    saved = {a.path for a in client.list_artifacts(parent.info.run_id, "checkpoints")}
    assert saved == {"checkpoints/patch", "checkpoints/birads", "checkpoints/cancer"}
    assert [a.path for a in client.list_artifacts(stages["heatmaps"].info.run_id)] == ["heatmaps.json"]
    assert parent.inputs.dataset_inputs, "the datalist is logged as an MLflow dataset input"


def test_chain_progress_and_checkpoints(chain):
    tmp, result = chain
    for line in (
        "[patch] epoch 1/1",
        "[birads] epoch 1/1",
        "[cancer] epoch 2/2",
        "heatmaps: 48 of 48 images",
    ):
        assert line in result.stdout, line
    for stage in ("patch", "birads", "cancer"):
        names = {p.name for p in (tmp / "models" / stage).iterdir()}
        assert {"model.pt", "last.pt"} <= names <= {"model.pt", "last.pt", "last.pt.prev"}, stage
    load_checkpoint(
        PatchClassifier("densenet121", num_classes=4, in_channels=3), tmp / "models/patch/model.pt"
    )
    birads = load_checkpoint(ViewWiseModel(num_targets=1, num_classes=3), tmp / "models/birads/model.pt")
    cancer = load_checkpoint(build_multiview("view", in_channels=3), tmp / "models/cancer/model.pt")
    assert cancer.column["CC"].conv.weight.shape == (16, 3, 7, 7)
    assert birads.column["CC"].conv.weight.shape == (16, 1, 7, 7)


def test_heatmaps_are_nifti_in_the_original_geometry_with_a_manifest(chain):
    tmp, _ = chain
    manifest = json.loads((tmp / "out" / "heatmaps" / "heatmaps.json").read_text())
    assert (
        manifest["summary"]["written"] == len(manifest["items"]) == 48 and not manifest["summary"]["skipped"]
    )
    item = manifest["items"][0]
    stem = Path(item["image"]).stem
    assert Path(item["heatmap_benign"]).name == f"{stem}_benign.nii.gz"
    for key in ("heatmap_benign", "heatmap_malignant"):
        data = np.asarray(nib.load(item[key]).dataobj)
        assert data.shape == IMAGE_SHAPE and data.dtype == np.float32
        assert 0.0 <= data.min() and data.max() <= 1.0 and data.max() > 0.0
    benign = np.asarray(nib.load(item["heatmap_benign"]).dataobj)
    malignant = np.asarray(nib.load(item["heatmap_malignant"]).dataobj)
    assert np.all(benign + malignant <= 1.0 + 1e-5)  # two of the four class probabilities
    assert (benign == 0).any(), "zero outside the breast crop"


def test_test_predictions_csv(chain):
    tmp, _ = chain
    header, rows = _csv(tmp / "out" / "test" / "predictions.csv")
    assert header == ["exam_id", *TARGETS]
    assert len(rows) == 3 and all(r[0].startswith("exam_") for r in rows)
    assert all(len(v.split(".")[1]) == 4 and 0.0 <= float(v) <= 1.0 for r in rows for v in r[1:])
    metrics = json.loads((tmp / "out" / "test" / "metrics.json").read_text())
    assert metrics["test_n_exams"] == 3 and 0.0 <= metrics["test_auc_malignant"] <= 1.0


def test_evaluate_and_standalone_inference_reproduce_the_test_predictions(chain):
    tmp, _ = chain
    # a perfect reader (the labels): its AUCs are 1 and so are those of the lambda = 1 hybrid
    header, test_rows = _csv(tmp / "out" / "test" / "predictions.csv")
    dataset = next((tmp / "home" / "datasets").glob("synthetic-nyu-*"))
    exams = restricted_load(dataset / "exam_list.pkl", allow_numpy=True)
    lines = [",".join(header)]
    for row in test_rows:
        labels = exams[int(row[0].split("_")[1])]["cancer_label"]
        lines.append(",".join([row[0], *(str(0.9 if labels[t] else 0.1) for t in TARGETS)]))
    (tmp / "reader.csv").write_text("\n".join(lines) + "\n")
    extra = ("--reader_csv", str(tmp / "reader.csv"), "--hybrid_lambdas", "[0.5, 1.0]")
    _run(tmp, f"['{CONFIGS / 'train.json'}','{CONFIGS / 'evaluate.json'}']", *extra)
    evaluated = json.loads((tmp / "out" / "evaluate" / "metrics.json").read_text())
    tested = json.loads((tmp / "out" / "test" / "metrics.json").read_text())
    assert {k: evaluated[k] for k in tested} == pytest.approx(tested, nan_ok=True)
    for name in ("reader", "hybrid1.00"):
        value = evaluated[f"test_{name}_auc_malignant"]
        assert value == 1.0 or (np.isnan(value) and np.isnan(tested["test_auc_malignant"])), name
    assert "test_hybrid0.50_auc_malignant" in evaluated
    evaluate_run = next(r for r in _runs(tmp) if r.data.tags.get("stage") == "evaluate")
    assert (
        evaluate_run.data.tags["workflow"] == "evaluate" and "test_auc_malignant" in evaluate_run.data.metrics
    )
    parent = next(r for r in _runs(tmp) if r.info.run_id == evaluate_run.data.tags["mlflow.parentRunId"])
    assert parent.info.run_name.startswith("nyu_multiview-evaluate-")

    # a new exam list holding the test exams, in the test order, without labels
    keep = ("horizontal_flip", "L-CC", "R-CC", "L-MLO", "R-MLO")
    chosen = [{k: exams[int(r[0].split("_")[1])][k] for k in keep} for r in test_rows]
    (tmp / "new").mkdir()
    (tmp / "new" / "exam_list.pkl").write_bytes(pickle.dumps(chosen, protocol=4))
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(CONFIGS / "inference.json")]
    cmd += ["--ckpt_dir", str(tmp / "models"), "--input_dir", str(tmp / "new")]
    cmd += ["--image_dir", str(dataset / "images"), "--output_csv", str(tmp / "new_out" / "pred.csv")]
    result = subprocess.run(
        cmd + TINY_INFERENCE, cwd=REPO, env=_env(tmp), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    new_header, rows = _csv(tmp / "new_out" / "pred.csv")
    assert new_header == header and [r[0] for r in rows] == [f"exam_{i}" for i in range(len(chosen))]
    # same checkpoints, freshly computed heatmaps, 2 passes seeded 0 over the same exams: same values
    assert [r[1:] for r in rows] == [r[1:] for r in test_rows]
    assert len(list((tmp / "new_out" / "heatmaps").glob("*.nii.gz"))) == 8 * len(chosen)
    inference = next(r for r in _runs(tmp, "new") if r.data.tags.get("stage") == "inference")
    assert inference.data.params["tta_passes"] == "2" and inference.data.params["exams"] == "3"
    parent = next(r for r in _runs(tmp, "new") if "mlflow.parentRunId" not in r.data.tags)
    assert parent.info.run_name.startswith("nyu_multiview-inference-")


def test_inference_config_builds_the_trained_networks():
    """inference.json stands alone (MONAI loads only it): its network and input settings match train.json."""
    train = json.loads((CONFIGS / "train.json").read_text())
    inference = json.loads((CONFIGS / "inference.json").read_text())
    keys = (
        "dataset_format",
        "variant",
        "use_heatmaps",
        "noise_std",
        "in_channels",
        "crop",
        "cc_size",
        "mlo_size",
        "crop_noise",
    )
    keys += ("patch_backbone", "patch_size", "patch_stride", "heatmap_batch_size", "batch_size")
    keys += ("tta_passes", "tta_seed")
    for key in keys:
        assert inference[key] == train[key], key
    assert inference["network_def"].endswith(
        "build_multiview('image' if @image_wise else @variant, in_channels=@in_channels, noise_std=@noise_std)"
    )
    assert inference["patch_network_def"] == train["patch"]["network_def"]


def test_one_switch_selects_image_only_or_image_and_heatmaps(tmp_path, monkeypatch):
    monkeypatch.setenv("MONAI_MAMMO_HOME", str(tmp_path))
    for use_heatmaps, channels in ((True, 3), (False, 1)):
        parser = ConfigParser()
        parser.read_config(str(CONFIGS / "train.json"))
        parser["use_heatmaps"] = use_heatmaps
        assert parser.get_parsed_content("network_def").in_channels == channels
        for section in ("train", "validate", "test"):
            assert parser.get_parsed_content(f"{section}#loader").heatmaps is use_heatmaps


def test_inference_missing_views_policies(chain):
    tmp, _ = chain
    dataset = next((tmp / "home" / "datasets").glob("synthetic-nyu-*"))
    exam = restricted_load(dataset / "exam_list.pkl", allow_numpy=True)[1]
    partial = {k: exam[k] for k in ("horizontal_flip", "L-CC", "R-CC", "L-MLO")}  # no R-MLO
    (tmp / "partial").mkdir()
    (tmp / "partial" / "exam_list.pkl").write_bytes(pickle.dumps([partial], protocol=4))
    overrides = {
        "input_dir": str(tmp / "partial"),
        "image_dir": str(dataset / "images"),
        "use_heatmaps": False,
    }
    for policy, network, allowed in (
        ("error", "ViewWiseModel", "error"),
        ("image_wise", "ImageWiseModel", "allow"),
    ):
        parser = ConfigParser()
        parser.read_config(str(CONFIGS / "inference.json"))
        parser.update({**overrides, "missing_views": policy, "cc_size": [64, 48], "mlo_size": [72, 40]})
        assert type(parser.get_parsed_content("network_def")).__name__ == network
        dataset_ = parser.get_parsed_content("dataset")
        assert dataset_.loader.missing_views == allowed
        if policy == "error":
            with pytest.raises(MammoDataError, match="R-MLO") as error:
                dataset_[0]
            assert error.value.source == "exam_0"
        else:
            assert sorted(k for k in dataset_[0] if "-" in k) == ["L-CC", "L-MLO", "R-CC"]


def test_paper_config_has_the_paper_sizes_and_hyperparameters(tmp_path, monkeypatch):
    monkeypatch.setenv("MONAI_MAMMO_HOME", str(tmp_path))
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / name) for name in [*STAGE_FILES, "chain.json", "paper.json"]])
    parser.read_meta(str(CONFIGS / "metadata.json"))
    get = parser.get_parsed_content
    assert get("cc_size") == [2677, 1942] and get("mlo_size") == [2974, 1748]
    assert (get("patch_size"), get("patch_stride"), get("patch_backbone")) == (256, 70, "densenet121")
    assert (get("lr"), get("batch_size"), get("birads_batch_size"), get("early_stop_patience")) == (
        1e-5,
        4,
        24,
        20,
    )
    assert get("weight_decay") == pytest.approx(10**-4.5) and get("amp") is True
    network = get("network_def")
    assert sum(p.numel() for p in network.parameters()) == 6_135_728  # the paper's image+heatmaps count
    assert network.column["CC"].output_size(get("cc_size")) == (42, 31)
    birads = get("birads#network_def")
    assert sum(p.numel() for p in birads.parameters()) == 6_132_592 - 2 * (512 * 8 + 8) + 2 * (512 * 3 + 3)
    assert get("tta_passes") == 10 and get("tta_seed") == 0
    assert [ref.lstrip("@") for ref in parser["run"]] == [
        "patch_steps",
        "heatmaps_steps",
        "birads_steps",
        "train_steps",
        "test_steps",
    ]


@pytest.mark.slow
def test_multi_gpu_config_runs_with_torchrun_on_cpu(chain):
    """``multi_gpu_train.json`` with torchrun, 2 processes, gloo: one MLflow run, loadable checkpoints."""
    tmp, _ = chain
    ddp = tmp / "ddp"
    ddp.mkdir()
    (ddp / "home").symlink_to(tmp / "home")
    env = _env(ddp)
    names = [*STAGE_FILES, "chain.json", "multi_gpu_train.json"]
    configs = "[" + ",".join(f"'{CONFIGS / name}'" for name in names) + "]"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2"]
    cmd += ["-m", "monai.bundle", "run", "--config_file", configs]
    cmd += ["--output_dir", str(ddp / "out"), "--ckpt_dir", str(ddp / "models"), *TINY]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("[cancer] epoch 2/2") == 2  # both ranks trained
    assert result.stdout.count("heatmaps: 48 of 48 images") == 1  # rank 0 alone writes heatmaps
    runs = _runs(ddp)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and "test_auc_malignant" in parents[0].data.metrics  # rank 0 alone logs
    for stage in ("patch", "birads", "cancer"):
        state = torch.load(ddp / "models" / stage / "model.pt", weights_only=True)
        assert state and not any(k.startswith("module.") for k in state), stage


def test_paper_config_crops_the_breast_of_a_synthetic_view(tmp_path, monkeypatch):
    """On the synthetic exams (background not exactly 0) paper.json crops with Otsu; NYU's rule on NYU data."""
    monkeypatch.setenv("MONAI_MAMMO_HOME", str(tmp_path))
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "paper.json")])
    crop = parser.get_parsed_content("crop")
    shape = tuple(parser.get_parsed_content("synthetic")["image_shape"])
    assert crop == {"mode": "otsu", "radius": 100, "buffer": 50}
    view = synthesize_mammogram(0, shape=shape, laterality="L", view="CC", style="digital")
    image = torch.as_tensor(view.pixels.astype(np.float32))[None]
    assert float(image.min()) > 0  # why NYU's "image > 0" rule would keep the whole image
    cropped = CropBreast(crop["mode"], radius=crop["radius"], buffer=crop["buffer"])(image)
    assert cropped.shape[1] * cropped.shape[2] < 0.9 * shape[0] * shape[1]
    assert cropped.shape[2] < shape[1]  # the background beyond the nipple is cut
    parser["dataset_dir"] = "/data/nyu"  # a real NYU-format dataset: the paper's rule
    assert parser.get_parsed_content("crop#mode") == "nyu"


def test_early_stopping_watches_a_key_metric_of_its_validator():
    """EarlyStopOnMetric does nothing when its metric is not one the evaluator computes."""
    for name, validator in (("train.json", "validate"), ("pretrain_birads.json", "birads_validate")):
        config = json.loads((CONFIGS / name).read_text())
        handlers = config["train" if name == "train.json" else "birads_train"]["handlers"]
        stop = next(h for h in handlers if h["_target_"].endswith("EarlyStopOnMetric"))
        assert stop["evaluator"] == f"@{validator}#evaluator", name
        evaluator = config[validator]["evaluator"]
        key_metric = evaluator["key_val_metric"]
        if isinstance(key_metric, str):  # a reference such as "@validate#key_metric"
            key_metric = config[validator][key_metric.split("#")[-1]]
        assert stop["metric"] in key_metric, name


@pytest.fixture(scope="module")
def dicom_image_model(tmp_path_factory):
    """train.json on synthetic INbreast DICOMs: exams grouped by patient/study, image-wise, 1 epoch."""
    tmp = tmp_path_factory.mktemp("nyu_dicom")
    tiny = [
        "--dataset_format",
        "inbreast",
        "--synthetic",
        f"{{'n_patients': 8, 'seed': 0, 'image_shape': {list(IMAGE_SHAPE)}}}",
        *TINY[2:],
    ]
    tiny[tiny.index("--epochs") + 1] = "1"
    extra = ("--variant", "image", "--use_heatmaps", "False", "--init_from_birads", "False")
    return tmp, _run(tmp, f"'{CONFIGS / 'train.json'}'", *extra, tiny=tiny)


def test_dicom_exams_train_an_image_wise_model(dicom_image_model):
    tmp, result = dicom_image_model
    assert "[cancer] epoch 1/1" in result.stdout
    datalist = json.loads((tmp / "out" / "datalist.json").read_text())
    expected = [
        e["exam_id"]
        for e in group_image_exams(datalist["test"]).exams
        if all(e[v] for v in ("L-CC", "R-CC", "L-MLO", "R-MLO"))
    ]
    header, rows = _csv(tmp / "out" / "test" / "predictions.csv")
    assert header == ["exam_id", *TARGETS] and [r[0] for r in rows] == expected and expected
    assert all("/1.2." in r[0] for r in rows)  # <patient_id>/<StudyInstanceUID>
    runs = _runs(tmp, "synthetic-inbreast")
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    cancer = next(r for r in runs if r.data.tags.get("stage") == "cancer")
    assert {"val_auc", "val_mean_auc"} <= set(cancer.data.metrics)
    assert parent.data.metrics["test_n_exams"] == len(expected)
    for key in ("test_auc", "test_auc_ci_low", "test_a_auc", "test_sensitivity", "test_specificity"):
        assert key in parent.data.metrics, key


def test_image_wise_inference_on_dicom_exams_with_missing_views(dicom_image_model):
    tmp, _ = dicom_image_model
    datalist = json.loads((tmp / "out" / "datalist.json").read_text())
    patient = datalist["test"][0]["patient_id"]
    items = [i for i in datalist["test"] if i["patient_id"] == patient]
    right_only = [dict(i, patient_id="A") for i in items if i["laterality"] == "R"]
    no_r_mlo = [dict(i, patient_id="B") for i in items if (i["laterality"], i["view"]) != ("R", "MLO")]
    (tmp / "mine.json").write_text(json.dumps({"training": right_only + no_r_mlo}))
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(CONFIGS / "inference.json")]
    cmd += [
        "--ckpt_dir",
        str(tmp / "models"),
        "--dataset_format",
        "datalist",
        "--input_dir",
        str(tmp / "mine.json"),
    ]
    cmd += ["--output_csv", str(tmp / "mine_out" / "pred.csv"), "--missing_views", "image_wise"]
    cmd += ["--use_heatmaps", "False", *TINY_INFERENCE]
    result = subprocess.run(cmd, cwd=REPO, env=_env(tmp), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    header, rows = _csv(tmp / "mine_out" / "pred.csv")
    assert header == ["exam_id", *TARGETS] and [r[0].split("/")[0] for r in rows] == ["A", "B"]
    left = [TARGETS.index("left_benign") + 1, TARGETS.index("left_malignant") + 1]
    assert [rows[0][i] for i in left] == ["", ""]  # no left view: empty cells, not "nan"
    assert all(0.0 <= float(v) <= 1.0 for i, v in enumerate(rows[0][1:], 1) if i not in left)
    assert all(0.0 <= float(v) <= 1.0 for v in rows[1][1:])  # R-CC alone scores the right breast
    probs = read_reader_scores(tmp / "mine_out" / "pred.csv", [r[0] for r in rows])
    assert np.isnan(probs[0, [0, 2]]).all() and np.isfinite(probs[1]).all()
    with pytest.raises(MammoConfigError, match="no score"):  # evaluation refuses unscored breasts
        breast_report(probs, np.zeros((2, 4)), n_bootstrap=0)
    runs = _runs(tmp, "mine.json")
    assert next(r for r in runs if "mlflow.parentRunId" not in r.data.tags).info.run_name.startswith(
        "nyu_multiview-inference-"
    )
    assert next(r for r in runs if r.data.tags.get("stage") == "inference").data.params["exams"] == "2"
