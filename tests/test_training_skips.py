"""Dataset-level skip policy during training: bad samples are skipped, counted and reported, never silently."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Events
from mlflow.tracking import MlflowClient
from monai.data import CacheDataset, DataLoader, Dataset
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import ValidationHandler
from monai.transforms import Compose, Lambdad, RandSpatialCropSamplesd, Resized

from monai_mammo.data.dicom_writer import write_mammogram_dicom
from monai_mammo.data.skipping import (
    SKIPPED_KEY,
    SkipAwareCollate,
    SkipBadSamples,
    SkippingCacheDataset,
    find_mammo_error,
)
from monai_mammo.engines.skipping import SkippedSamplesHandler
from monai_mammo.engines.tracking import MLflowTracker
from monai_mammo.exceptions import MammoConfigError, MammoDataError, MammoTrainingError
from monai_mammo.transforms.io import LoadMammogramd

N_IMAGES = 6
BAD = 2


@pytest.fixture
def datalist(tmp_path, rng) -> list[dict]:
    """Six small synthetic DICOMs; the third one is truncated on disk."""
    items = []
    for i in range(N_IMAGES):
        pixels = rng.integers(0, 4000, (32, 24)).astype(np.uint16)
        path = write_mammogram_dicom(tmp_path / f"img{i}.dcm", pixels, bits_stored=12)
        items.append({"image": str(path), "label": i % 2})
    bad = Path(items[BAD]["image"])
    bad.write_bytes(bad.read_bytes()[:-300])
    return items


def _transform(*extra) -> Compose:
    return Compose([LoadMammogramd("image"), Resized("image", (8, 8)), *extra])


def _loader(dataset, policy="skip", num_workers=0, batch_size=2) -> DataLoader:
    return DataLoader(
        SkipBadSamples(dataset, policy=policy),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=SkipAwareCollate(),
    )


def _trainer(loader, epochs=2, handlers=()) -> SupervisedTrainer:
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    return SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=epochs,
        train_data_loader=loader,
        network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=0.01),
        loss_function=torch.nn.CrossEntropyLoss(),
        train_handlers=list(handlers),
    )


def test_skip_counts_the_corrupt_file_once_per_epoch_in_mlflow(tmp_path, datalist, caplog):
    tracker = MLflowTracker(
        "test", "skips", output_dir=tmp_path / "out", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"
    )
    tracker.start()
    stage_run = tracker.start_stage("whole_image")
    train_skips = SkippedSamplesHandler(tracker, stage="whole_image", max_skip_fraction=0.5)
    val_skips = SkippedSamplesHandler(tracker, name="val_skipped_samples", max_skip_fraction=0.5)
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=_loader(Dataset(datalist, _transform())),
        network=torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2)),
        val_handlers=[val_skips],
    )
    trainer = _trainer(
        _loader(Dataset(datalist, _transform()), num_workers=2),
        handlers=[train_skips, ValidationHandler(validator=evaluator, interval=1, epoch_level=True)],
    )
    keys_seen: set[str] = set()
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: keys_seen.update(e.state.batch))
    with caplog.at_level(logging.WARNING, logger="monai_mammo.engines.skipping"):
        trainer.run()
    tracker.finish()

    bad = datalist[BAD]["image"]
    assert trainer.state.epoch == 2 and SKIPPED_KEY not in keys_seen
    assert [(r["epoch"], r["index"], r["source"]) for r in train_skips.records] == [
        (1, BAD, bad),
        (2, BAD, bad),
    ]
    assert (
        train_skips.records[0]["reason"] == "MammoDataError"
        and "pixel data" in train_skips.records[0]["message"]
    )
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    history = client.get_metric_history(stage_run, "skipped_samples")
    assert sorted((m.step, m.value) for m in history) == [(1, 1.0), (2, 1.0)]
    val_history = client.get_metric_history(stage_run, "val_skipped_samples")
    assert sorted((m.step, m.value) for m in val_history) == [(1, 1.0), (2, 1.0)]
    artifacts = {a.path for a in client.list_artifacts(stage_run)}
    assert {"skipped_samples.json", "val_skipped_samples.json"} <= artifacts
    report = json.loads(
        Path(client.download_artifacts(stage_run, "skipped_samples.json", str(tmp_path))).read_text()
    )
    assert [(r["source"], r["epoch"], r["stage"]) for r in report] == [
        (bad, 1, "whole_image"),
        (bad, 2, "whole_image"),
    ]
    assert (tmp_path / "out" / "whole_image" / "skipped_samples.json").is_file()
    assert f"epoch 1: skipped 1 of {N_IMAGES} samples: {bad}: MammoDataError" in caplog.text
    assert "skipped_samples: skipped 1 samples (2 skips over 2 epochs" in caplog.text


def test_raise_policy_gives_the_original_error_naming_the_file(datalist):
    trainer = _trainer(_loader(Dataset(datalist, _transform()), policy="raise", num_workers=2))
    with pytest.raises(MammoDataError, match=datalist[BAD]["image"]):
        trainer.run()
    with pytest.raises(MammoDataError) as info:
        SkipBadSamples(Dataset(datalist, _transform()), policy="raise")[BAD]
    assert info.value.source == datalist[BAD]["image"] and "pixel data" in info.value.problem


def test_errors_that_are_not_project_errors_propagate(datalist):
    def bug(x):
        raise ZeroDivisionError("a bug")

    dataset = SkipBadSamples(Dataset(datalist, _transform(Lambdad("label", bug))))
    with pytest.raises(RuntimeError, match="applying transform") as info:
        dataset[0]
    assert find_mammo_error(info.value) is None and isinstance(info.value.__cause__, ZeroDivisionError)
    with pytest.raises(RuntimeError):
        _trainer(_loader(dataset.dataset)).run()

    def bug_while_handling(x):
        try:
            raise MammoDataError("a handled problem", "somewhere")
        except MammoDataError:
            return 1 / 0  # a bug raised during handling: only its __context__ is the project error

    with pytest.raises(RuntimeError) as info:
        SkipBadSamples(Dataset(datalist, _transform(Lambdad("label", bug_while_handling))))[0]
    assert isinstance(info.value.__cause__, ZeroDivisionError)


def test_exceeding_max_skip_fraction_stops_training_with_a_report(tmp_path, datalist):
    skips = SkippedSamplesHandler(stage="patch", max_skip_fraction=0.1, output_dir=tmp_path)
    trainer = _trainer(_loader(Dataset(datalist, _transform())), handlers=[skips])
    with pytest.raises(
        MammoTrainingError, match=r"skipped 1 of 6 samples, more than max_skip_fraction=0.1"
    ) as info:
        trainer.run()
    assert datalist[BAD]["image"] in str(info.value) and trainer.state.epoch == 1
    report = json.loads((tmp_path / "patch" / "skipped_samples.json").read_text())
    assert [r["source"] for r in report] == [datalist[BAD]["image"]]
    with pytest.raises(MammoConfigError):
        SkippedSamplesHandler(max_skip_fraction=1.5)


def test_cache_dataset_keeps_the_failure_and_skips_it_each_time(datalist):
    with pytest.raises(RuntimeError):  # MONAI's CacheDataset aborts in its constructor
        CacheDataset(datalist, _transform(), progress=False)
    cached = SkippingCacheDataset(datalist, _transform(), num_workers=2, progress=False)
    dataset = SkipBadSamples(cached)
    substitute = dataset[BAD]
    assert torch.equal(substitute["image"], cached[BAD + 1]["image"])
    assert [r["index"] for r in substitute[SKIPPED_KEY]] == [BAD] and SKIPPED_KEY not in dataset[0]
    with pytest.raises(MammoDataError, match=datalist[BAD]["image"]):
        cached[BAD]
    batches = list(_loader(cached, num_workers=2, batch_size=3))
    assert [len(b[SKIPPED_KEY]) for b in batches] == [1, 0] and batches[0]["image"].shape == (3, 1, 8, 8)


def test_multi_sample_transforms_keep_their_records(datalist):
    crop = RandSpatialCropSamplesd("image", roi_size=(4, 4), num_samples=3, random_size=False)
    batch = next(iter(_loader(Dataset(datalist, _transform(crop)), batch_size=3)))
    assert batch["image"].shape == (9, 1, 4, 4)
    assert [r["source"] for r in batch[SKIPPED_KEY]] == [datalist[BAD]["image"]]


def test_consecutive_failures_beyond_max_tries_raise(datalist):
    bad_only = [datalist[BAD]] * 3
    with pytest.raises(MammoDataError, match="3 consecutive samples from index 0 failed"):
        SkipBadSamples(Dataset(bad_only, _transform()), max_tries=5)[0]
    with pytest.raises(MammoConfigError):
        SkipBadSamples(Dataset(bad_only), policy="ignore")


SHEN_TRAIN = Path(__file__).resolve().parents[1] / "bundles" / "shen_end2end" / "configs" / "train.json"


def test_shen_bundle_skips_a_corrupt_training_image_and_logs_it(tmp_path, monkeypatch):
    from monai.bundle import ConfigWorkflow

    monkeypatch.setenv("MONAI_MAMMO_HOME", str(tmp_path / "home"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    overrides = {
        "synthetic": {
            "n_patients": 4,
            "seed": 0,
            "image_shape": [128, 96],
            "style": "film",
            "broken": ["corrupt_file"],  # one truncated image, skipped (and counted) by the indexer
        },
        "split#ratios": [0.5, 0.25, 0.25],
        "image_size": [64, 48],
        "patch_size": 16,
        "stages": [{"name": "whole_new_top", "epochs": 1, "lr": 0.001, "trainable": "new"}],
        "num_workers": 0,
        "max_skip_fraction": 0.5,
        "tracking_uri": uri,
        "output_dir": str(tmp_path / "out"),
        "ckpt_dir": str(tmp_path / "models"),
        "run": [  # only the whole-image stage of train.json (from the patch network's initialisation)
            "$@tracker.start_stage('whole_image')",
            "$monai_mammo.engines.handlers.run_trainer(@train#trainer, @train#last_ckpt, "
            "@train#checkpoint_objects, @resume)",
            "$@tracker.end_stage('whole_image')",
        ],
    }
    workflow = ConfigWorkflow(config_file=str(SHEN_TRAIN), workflow_type="train", **overrides)
    workflow.initialize()
    training = workflow.parser.get_parsed_content("datalist")["training"]
    bad = Path(training[0]["image"])
    bad.write_bytes(bad.read_bytes()[:-500])
    workflow.run()
    workflow.finalize()

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("synthetic-cbis-ddsm").experiment_id])
    stage = next(r for r in runs if r.data.tags.get("stage") == "whole_image")
    assert stage.info.status == "FINISHED"
    assert [(m.step, m.value) for m in client.get_metric_history(stage.info.run_id, "skipped_samples")] == [
        (1, 1.0)
    ]
    assert [m.value for m in client.get_metric_history(stage.info.run_id, "val_skipped_samples")] == [0.0]
    path = client.download_artifacts(stage.info.run_id, "skipped_samples.json", str(tmp_path))
    assert [r["source"] for r in json.loads(Path(path).read_text())] == [str(bad)]

    # the indexer's skips reach the parent run as metrics (the list is in the datalist artifact)
    summary = workflow.parser.get_parsed_content("datalist")["summary"]
    parent = next(r for r in runs if "stage" not in r.data.tags)
    assert summary["skip_counts"] == {"corrupt_file": 1}
    assert (
        parent.data.metrics["index_skipped"] == 1.0
        and parent.data.metrics["index_skipped_corrupt_file"] == 1.0
    )
    assert parent.data.metrics["index_images"] == float(summary["images"])
    assert parent.data.metrics["index_duplicate_pairs"] == 0.0


def test_fit_classifier_skips_and_counts_a_corrupt_file(tmp_path, datalist):
    """``fit_classifier`` (crossdb / sweep / mass ROI stages) wraps its loaders the same way."""
    from monai.transforms import EnsureTyped

    from monai_mammo.engines.roi_training import fit_classifier

    items = [dict(item, label=float(item["label"])) for item in datalist]
    transform = _transform(EnsureTyped("image", dtype=torch.float32, track_meta=False))
    tracker = MLflowTracker(
        "test", "skips", output_dir=tmp_path / "out", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"
    )
    tracker.start()
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 1))
    common = dict(epochs=2, lr=1e-3, transform_train=transform, transform_eval=transform, batch_size=3)
    fit_classifier(
        network,
        items,
        items[:3],
        tracker=tracker,
        stage="fit",
        checkpoint_dir=tmp_path / "ckpt",
        max_skip_fraction=0.5,
        **common,
    )
    tracker.finish()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("skips").experiment_id])
    run_id = next(r for r in runs if r.data.tags.get("stage") == "fit").info.run_id
    for name in ("skipped_samples", "train_eval_skipped_samples", "val_skipped_samples"):
        assert [m.value for m in client.get_metric_history(run_id, name)] == [1.0, 1.0], name
    report = json.loads(next((tmp_path / "ckpt").rglob("skipped_samples.json")).read_text())
    assert {r["source"] for r in report} == {datalist[BAD]["image"]}

    with pytest.raises(MammoDataError) as info:
        fit_classifier(network, items, items[:3], on_bad_sample="raise", **common)
    assert info.value.source == datalist[BAD]["image"]


def test_damaged_patch_cache_is_a_project_error_so_it_can_be_skipped(tmp_path):
    from monai_mammo.engines.patches import PatchDataset

    good, bad = tmp_path / "good.npy", tmp_path / "bad.npy"
    np.save(good, np.zeros((2, 1, 4, 4), np.float32))
    np.save(bad, np.zeros((2, 1, 4, 4), np.float32))
    bad.write_bytes(bad.read_bytes()[:40])  # truncated header
    samples = [
        {"image": str(good), "row": 0, "label": 0},
        {"image": str(bad), "row": 0, "label": 1},
        {"image": str(good), "row": 5, "label": 1},
    ]
    dataset = PatchDataset(samples)
    assert dataset[0]["image"].shape == (1, 4, 4)
    with pytest.raises(MammoDataError, match="unreadable patch cache file") as info:
        dataset[1]
    assert info.value.source == str(bad)
    with pytest.raises(MammoDataError, match="row 5 is outside the 2 cached patches"):
        dataset[2]
    batches = list(DataLoader(SkipBadSamples(dataset), batch_size=3, collate_fn=SkipAwareCollate()))
    assert {(r["index"], r["source"]) for r in batches[0][SKIPPED_KEY]} == {(1, str(bad)), (2, str(good))}
