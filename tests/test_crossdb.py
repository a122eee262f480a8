"""Cross-database study on tiny synthetic film (CBIS-DDSM) and digital (bounding-box CSV) patch sets."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from torch import nn

from monai_mammo.data.indexers import index_dataset
from monai_mammo.data.indexers.bbox_csv import omidb_filter
from monai_mammo.data.synthetic.writers import write_dataset
from monai_mammo.engines.calc_patches import extract_calc_patches, load_patch
from monai_mammo.engines.crossdb import (
    LOGGED_METRICS,
    TABLE_METRICS,
    cross_database_study,
    format_table,
    metric_key,
)
from monai_mammo.engines.gradcam import save_gradcam_overlays
from monai_mammo.engines.tracking import MLflowTracker
from monai_mammo.exceptions import MammoConfigError
from monai_mammo.metrics.classification import binary_metrics

PATCH = 48
MODELS = ("train_cbis", "train_omi", "train_cbis+omi")
SETS = ("cbis", "omi", "cbis+omi")


def _split(samples: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Patient-disjoint split: every third patient (sorted ids) goes to validation."""
    patients = sorted({s["patient_id"] for s in samples})
    val = set(patients[::3])
    return [s for s in samples if s["patient_id"] not in val], [s for s in samples if s["patient_id"] in val]


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list, list]]:
    root = tmp_path_factory.mktemp("xdb")
    cbis = index_dataset(
        "cbis-ddsm", write_dataset("cbis-ddsm", root / "cbis", n_patients=8, image_shape=(192, 160))
    )
    omi = index_dataset(
        "bbox-csv", write_dataset("bbox-csv", root / "omi", n_patients=14, image_shape=(192, 160))
    )
    kept, _ = omidb_filter(omi.items)
    return {
        "cbis": _split(extract_calc_patches(cbis.items, root / "cache", patch_size=PATCH)["samples"]),
        "omi": _split(extract_calc_patches(kept, root / "cache", patch_size=PATCH)["samples"]),
    }


def _omi_patches(root: Path) -> list[dict[str, Any]]:
    """The tiny digital source written and cut under ``root``, checking that torch's random state is untouched."""
    written = write_dataset("bbox-csv", root / "omi", n_patients=6, seed=3, image_shape=(192, 160))
    kept, _ = omidb_filter(index_dataset("bbox-csv", written).items)
    torch.manual_seed(11)
    before = torch.random.get_rng_state()
    first = extract_calc_patches(kept, root / "cache", patch_size=PATCH)  # cut
    again = extract_calc_patches(kept, root / "cache", patch_size=PATCH)  # read from the cache
    assert torch.equal(torch.random.get_rng_state(), before)
    assert again["samples"] == first["samples"] and first["samples"]
    return first["samples"]


def test_patches_and_random_state_do_not_depend_on_the_folder_or_the_cache(tmp_path):
    """The same dataset in two folders gives the same patches in the same order, and cutting them
    (or reading them from the cache) leaves torch's random state alone, so model initialisation
    and shuffling do not depend on MONAI_MAMMO_HOME or on a warm cache (the cross-database table did)."""
    here = _omi_patches(tmp_path / "a")
    there = _omi_patches(tmp_path / "elsewhere" / "b")
    assert [Path(s["image_path"]).relative_to(tmp_path / "a") for s in here] == [
        Path(s["image_path"]).relative_to(tmp_path / "elsewhere" / "b") for s in there
    ]
    for key in ("label", "patient_id", "lesion_box", "patch_box"):
        assert [s[key] for s in here] == [s[key] for s in there], key
    for a, b in zip(here, there):
        np.testing.assert_array_equal(load_patch(a["image"]), load_patch(b["image"]))


def _tiny_network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1)
    )


def _batch(samples: list[dict[str, Any]]) -> torch.Tensor:
    return torch.from_numpy(np.stack([load_patch(s["image"]) for s in samples]))


def _local_fit(
    network: nn.Module, train: list, val: list, *, tracker=None, stage=None, epochs: int = 2
) -> dict:
    """A small full-batch trainer owning its MLflow stage (as fit_classifier does)."""
    if tracker is not None:
        tracker.start_stage(stage, params={"epochs": epochs})
    images, labels = _batch(train), torch.tensor([float(s["label"]) for s in train])
    optimizer = torch.optim.Adam(network.parameters(), lr=0.05)
    losses = []
    for epoch in range(epochs):
        optimizer.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(network(images).reshape(-1), labels)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if tracker is not None:
            tracker.log_metrics({"train_loss": losses[-1]}, step=epoch + 1, stage=stage)
    if tracker is not None:
        tracker.end_stage(stage)
    return {"losses": losses, "n_val": len(val)}


@torch.no_grad()
def _local_predict(network: nn.Module, samples: list) -> np.ndarray:
    return torch.sigmoid(network(_batch(samples))).reshape(-1).numpy()


class _GradCamRecorder:
    """Stands in for save_gradcam_overlays: writes one file per patch and records the calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[int, ...], list[str]]] = []

    def __call__(
        self, network: nn.Module, images: torch.Tensor, names: list[str], out_dir: Path
    ) -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.calls.append((str(out_dir), tuple(images.shape), list(names)))
        paths = [out_dir / f"{name}.npy" for name in names]
        for path, image in zip(paths, images):
            np.save(path, image.numpy())
        return paths


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-12)


def _read_predictions(path: Path) -> dict[tuple[str, str], list[dict[str, str]]]:
    grouped: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    with open(path, newline="") as stream:
        for row in csv.DictReader(stream):
            grouped[row["model"], row["validation"]].append(row)
    return grouped


def test_table_predictions_and_common_errors(
    sources, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gradcam = _GradCamRecorder()
    out = tmp_path / "study"
    result = cross_database_study(
        sources,
        make_network=_tiny_network,
        fit=_local_fit,
        fit_kwargs={"epochs": 2},
        predict=_local_predict,
        out_dir=out,
        gradcam=gradcam,
    )
    assert result.models == MODELS and result.sets == SETS
    assert all(fit["n_val"] > 0 and len(fit["losses"]) == 2 for fit in result.fits.values())
    sizes = {"cbis": len(sources["cbis"][1]), "omi": len(sources["omi"][1])}
    sizes["cbis+omi"] = sizes["cbis"] + sizes["omi"]

    # the 3 x 3 table: rows in order, values equal to the metrics recomputed from the saved predictions
    with open(result.files["table_csv"], newline="") as stream:
        table = list(csv.DictReader(stream))
    assert list(table[0]) == ["model", "validation", *TABLE_METRICS]
    assert [(r["model"], r["validation"]) for r in table] == [(m, s) for m in MODELS for s in SETS]
    predictions = _read_predictions(result.files["predictions"])
    for row in table:
        rows = predictions[row["model"], row["validation"]]
        assert int(float(row["n"])) == len(rows) == sizes[row["validation"]]
        labels = [int(r["label"]) for r in rows]
        scores = [float(r["score"]) for r in rows]
        assert [int(r["prediction"]) for r in rows] == [int(s >= 0.5) for s in scores]
        expected = binary_metrics(labels, scores, 0.5)
        for metric in TABLE_METRICS[1:]:
            assert _same(float(row[metric]), expected[metric]), (row["model"], row["validation"], metric)
    for model in MODELS:  # the combined set is the union of both validation sets
        both = [r["id"] for r in predictions[model, "cbis+omi"]]
        assert both == [r["id"] for r in predictions[model, "cbis"] + predictions[model, "omi"]]

    # misclassified by all three models, recomputed from the predictions
    common = json.loads(result.files["misclassified"].read_text())
    for name in SETS:
        wrong = [{r["id"] for r in predictions[m, name] if r["prediction"] != r["label"]} for m in MODELS]
        ids = [r["id"] for r in predictions[MODELS[0], name] if all(r["id"] in w for w in wrong)]
        assert common[name]["ids"] == result.misclassified[name] == ids and common[name]["count"] == len(ids)
        assert common[name]["errors_per_model"] == {m: len(w) for m, w in zip(MODELS, wrong)}
    assert set(common["cbis+omi"]["ids"]) == set(common["cbis"]["ids"]) | set(common["omi"]["ids"])

    # Grad-CAM overlays: every model on the common errors of each source's validation set
    with_errors = [name for name in ("cbis", "omi") if common[name]["count"]]
    assert with_errors, "the tiny models should share some errors"
    expected_dirs = [str(out / "gradcam" / name / model) for name in with_errors for model in MODELS]
    assert [call[0] for call in gradcam.calls] == expected_dirs
    for folder, shape, names in gradcam.calls:
        set_name = Path(folder).parent.name
        assert shape == (common[set_name]["count"], 1, PATCH, PATCH) and len(names) == shape[0]
        assert all((Path(folder) / f"{n}.npy").is_file() for n in names)

    # Markdown table printed and written
    markdown = format_table(result)
    assert result.files["table_md"].read_text() == markdown + "\n"
    assert markdown in capsys.readouterr().out
    for name in SETS:
        assert f"{name} (n={sizes[name]})" in markdown
    assert markdown.count("| train_cbis+omi |") == len(LOGGED_METRICS)


def test_default_engine_mlflow_and_gradcam(sources, tmp_path: Path) -> None:
    """fit_classifier / predict_binary by default, save_gradcam_overlays, everything in MLflow."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MLflowTracker("calc_patch_crossdb", "synthetic-crossdb", output_dir=tmp_path, tracking_uri=uri)
    tracker.start()
    out = tmp_path / "study"
    result = cross_database_study(
        sources,
        make_network=_tiny_network,
        fit_kwargs={"epochs": 1, "lr": 1e-2, "batch_size": 4},
        out_dir=out,
        tracker=tracker,
        gradcam=save_gradcam_overlays,
    )
    tracker.finish()
    for model in MODELS:
        fit = result.fits[model]
        assert fit.best_epoch == 1 and Path(fit.best_checkpoint).is_file()
        assert Path(fit.best_checkpoint).parent == out / "checkpoints" / model.replace("+", "_plus_")
        # the cell on the model's own validation set is the fit's validation accuracy
        own = {"train_cbis": "cbis", "train_omi": "omi", "train_cbis+omi": "cbis+omi"}[model]
        assert result.cells[model, own]["accuracy"] == pytest.approx(fit.final_metrics["val_accuracy"])
    for name in ("cbis", "omi"):
        for model in MODELS:
            pngs = (
                sorted((out / "gradcam" / name / model).glob("*.png")) if result.misclassified[name] else []
            )
            assert len(pngs) == len(result.misclassified[name])

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("synthetic-crossdb")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    parent = runs[tracker.run_name]
    for model in MODELS:
        for name in SETS:
            for metric in LOGGED_METRICS:
                assert _same(
                    parent.data.metrics[metric_key(model, name, metric)], result.cells[model, name][metric]
                )
        stage = runs[f"{tracker.run_name}-{model}"]  # opened and closed by fit_classifier
        assert stage.info.status == "FINISHED" and stage.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert "val_accuracy" in stage.data.metrics and int(stage.data.params["n_train"]) > 0
    count = len(result.misclassified["cbis+omi"])
    assert parent.data.metrics["xdb_misclassified_by_all_cbis_plus_omi"] == count
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "crossdb")}
    expected = {
        "crossdb_table.csv",
        "crossdb_table.md",
        "crossdb_predictions.csv",
        "misclassified_by_all.json",
    }
    assert artifacts == {f"crossdb/{name}" for name in expected | ({"gradcam"} if count else set())}


def test_invalid_inputs(sources, tmp_path: Path) -> None:
    kwargs: dict[str, Any] = {
        "make_network": _tiny_network,
        "fit": _local_fit,
        "predict": _local_predict,
        "out_dir": tmp_path,
    }
    cbis, omi = sources["cbis"], sources["omi"]
    with pytest.raises(MammoConfigError, match="exactly two sources"):
        cross_database_study({"cbis": cbis}, **kwargs)
    with pytest.raises(MammoConfigError, match="needs training and validation"):
        cross_database_study({"cbis": cbis, "omi": (omi[0], [])}, **kwargs)
    with pytest.raises(MammoConfigError, match="label 0"):
        cross_database_study({"cbis": cbis, "omi": (omi[0], [{**omi[1][0], "label": 2}])}, **kwargs)
    with pytest.raises(MammoConfigError, match="unique"):
        cross_database_study({"cbis": cbis, "omi": (omi[0], cbis[1])}, **kwargs)
    with pytest.raises(MammoConfigError, match="epochs"):
        cross_database_study(sources, make_network=_tiny_network, out_dir=tmp_path)
    with pytest.raises(MammoConfigError, match="scores"):
        cross_database_study(sources, **{**kwargs, "predict": lambda network, samples: [0.5]})
