"""NYU multi-view training/inference engine: exam pipeline, loss, sampler, TTA, CSV, MONAI workflows."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Engine
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.inferers import SimpleInferer
from torch.utils.data import DataLoader

from monai_mammo.data.indexers.nyu import NYU_VIEWS, group_exams, index_nyu
from monai_mammo.data.synthetic.writers.nyu import write_nyu
from monai_mammo.engines.multiview import (
    BalancedExamSampler,
    BreastTaskAUC,
    ExamDataset,
    LoadExam,
    MeanBreastAUC,
    MultiViewLoss,
    MultiViewPrepareBatch,
    attach_heatmaps,
    collate_exams,
    exam_id,
    multiview_output,
    predict_exams,
    read_reader_scores,
    save_breast_figures,
    write_predictions_csv,
)
from monai_mammo.exceptions import MammoConfigError, MammoDataError
from monai_mammo.metrics.breast import breast_scores, per_target_auc
from monai_mammo.metrics.classification import roc_auc
from monai_mammo.networks.multiview import ImageWiseModel, ViewWiseModel
from monai_mammo.transforms.channels import heatmap_paths, save_heatmap_nifti

CC, MLO = (64, 48), (72, 40)
# demo-sized pipeline for 256 x 208 synthetic images, whose background is not exactly zero
SMALL = {
    "cc_size": CC,
    "mlo_size": MLO,
    "crop_mode": "otsu",
    "crop_radius": 20,
    "crop_buffer": 10,
    "max_crop_noise": (8, 8),
    "max_crop_size_noise": 8,
}


@pytest.fixture(scope="module", autouse=True)
def single_thread() -> Iterator[None]:
    """One intra-op thread: tiny tensors, and far faster when the CPU cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def nyu_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_nyu(tmp_path_factory.mktemp("nyu"), n_exams=4, image_shape=(256, 208))


@pytest.fixture(scope="module")
def exams(nyu_root: Path) -> list[dict[str, Any]]:
    # labels cycle: exam 0 none, 1 left malignant, 2 right benign, 3 left benign + right malignant
    return group_exams(index_nyu(nyu_root).items)


@pytest.fixture(scope="module")
def view_model() -> ViewWiseModel:
    torch.manual_seed(0)
    return ViewWiseModel()


def _halves(image: torch.Tensor) -> tuple[float, float]:
    width = image.shape[-1]
    return float(image[..., : width // 2].mean()), float(image[..., width // 2 :].mean())


# --- exam pipeline --------------------------------------------------------------------------


def test_exam_sample_shapes_labels_and_orientation(exams: list[dict[str, Any]]) -> None:
    sample = LoadExam(**SMALL)(exams[3])
    assert sample["exam_id"] == "exam_3"
    assert sample["label"].dtype == torch.int64
    assert sample["label"].tolist() == [1, 0, 0, 1]  # left benign, right malignant
    for view in NYU_VIEWS:
        image = sample[view]
        assert type(image) is torch.Tensor and image.dtype == torch.float32
        assert tuple(image.shape) == (1, *(CC if view.endswith("CC") else MLO))
        assert float(image.mean()) == pytest.approx(0.0, abs=1e-4)
        assert float(image.std(unbiased=False)) == pytest.approx(1.0, abs=1e-3)
        chest_wall, nipple = _halves(image)
        assert chest_wall > nipple + 0.2, view  # every breast faces right: tissue at column 0


def test_horizontal_flip_yes_is_respected(exams: list[dict[str, Any]], tmp_path: Path) -> None:
    # zero background (NYU's cropping rule), so that the crop does not depend on the mirroring
    original = dict(exams[1])
    mirrored = dict(exams[1], horizontal_flip="YES")
    for view in NYU_VIEWS:
        pixels = cv2.imread(exams[1][view], cv2.IMREAD_UNCHANGED)
        pixels[pixels < 8000] = 0
        original[view], mirrored[view] = str(tmp_path / f"o_{view}.png"), str(tmp_path / f"m_{view}.png")
        cv2.imwrite(original[view], pixels)
        cv2.imwrite(mirrored[view], np.ascontiguousarray(pixels[:, ::-1]))
    load = LoadExam(**dict(SMALL, crop_mode="nyu"))
    plain, flipped, ignored = load(original), load(mirrored), load(dict(mirrored, horizontal_flip="NO"))

    def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(np.corrcoef(a.ravel().numpy(), b.ravel().numpy())[0, 1])

    for view in NYU_VIEWS:
        chest_wall, nipple = _halves(flipped[view])
        assert chest_wall > nipple + 0.2, view  # "YES" read: the mirrored breasts face right too
        # the same window, up to NYU's one-pixel offset when mirroring the crop metadata
        assert correlation(flipped[view], plain[view]) > 0.85, view
        assert correlation(ignored[view], plain[view]) < 0.5, view  # the flag matters


def test_collate_batches_views_labels_and_ids(exams: list[dict[str, Any]]) -> None:
    dataset = ExamDataset(exams, LoadExam(**SMALL))
    loader = DataLoader(dataset, batch_size=2, collate_fn=collate_exams)
    batch = next(iter(loader))
    assert tuple(batch["L-CC"].shape) == (2, 1, *CC)
    assert tuple(batch["R-MLO"].shape) == (2, 1, *MLO)
    assert batch["label"].tolist() == [[0, 0, 0, 0], [0, 0, 1, 0]]
    assert list(batch["exam_id"]) == ["exam_0", "exam_1"]
    inputs, label = MultiViewPrepareBatch()(batch, torch.device("cpu"))
    assert sorted(inputs) == sorted(NYU_VIEWS) and label is batch["label"]


def _write_heatmaps(exams: list[dict[str, Any]], folder: Path) -> list[dict[str, Any]]:
    """Benign map = 0.25 everywhere; malignant map = column / width (a left-to-right ramp)."""
    manifest = []
    for record in exams:
        for view in NYU_VIEWS:
            height, width = cv2.imread(record[view], cv2.IMREAD_UNCHANGED).shape
            benign, malignant = heatmap_paths(record[view], folder)
            save_heatmap_nifti(benign, np.full((height, width), 0.25, np.float32))
            save_heatmap_nifti(malignant, np.tile(np.arange(width, dtype=np.float32) / width, (height, 1)))
            manifest.append(
                {"image": record[view], "heatmap_benign": str(benign), "heatmap_malignant": str(malignant)}
            )
    return manifest


def test_heatmaps_are_stacked_moved_with_the_image_and_not_standardised(
    exams: list[dict[str, Any]], tmp_path: Path
) -> None:
    manifest = _write_heatmaps(exams[:2], tmp_path / "hm")
    manifest_file = tmp_path / "manifest.json"
    manifest_file.write_text(json.dumps({"items": manifest, "summary": {}}))  # generate_heatmaps' layout
    records = attach_heatmaps(exams[:2], manifest_file)
    assert records[1]["heatmaps"]["R-CC"] == [manifest[5]["heatmap_benign"], manifest[5]["heatmap_malignant"]]
    assert "heatmaps" not in exams[1]  # inputs untouched
    plain = LoadExam(**SMALL)(records[1])
    sample = LoadExam(heatmaps=True, **SMALL)(records[1])
    for view in NYU_VIEWS:
        stack = sample[view]
        assert tuple(stack.shape) == (3, *(CC if view.endswith("CC") else MLO))
        torch.testing.assert_close(stack[:1], plain[view])  # the image channel is unchanged
        assert float(stack[1].max()) == pytest.approx(0.25, abs=1e-4)  # heatmaps keep their values
        ramp = stack[2, stack.shape[1] // 2]
        steps = torch.diff(ramp[ramp > 0])
        if view.startswith("L"):  # not flipped: the ramp still grows to the right
            assert bool((steps > 0).all()), view
        else:  # R images were flipped to face right, and their heatmaps with them
            assert bool((steps < 0).all()), view


def test_heatmap_dir_fallback_and_missing_heatmaps(exams: list[dict[str, Any]], tmp_path: Path) -> None:
    _write_heatmaps(exams[:1], tmp_path / "hm")
    sample = LoadExam(heatmaps=True, heatmap_dir=tmp_path / "hm", **SMALL)(exams[0])
    assert sample["L-MLO"].shape[0] == 3
    with pytest.raises(MammoDataError, match=r"exam_0.*L-CC.*attach_heatmaps"):
        LoadExam(heatmaps=True, **SMALL)(exams[0])
    with pytest.raises(MammoDataError, match=r"exam_1.*view L-CC"):
        attach_heatmaps(
            exams[:2],
            [{"image": exams[0][v], "heatmap_benign": "b", "heatmap_malignant": "m"} for v in NYU_VIEWS],
        )


def test_missing_views_policies(exams: list[dict[str, Any]]) -> None:
    incomplete = dict(exams[2], **{"R-MLO": None})
    with pytest.raises(MammoDataError, match=r"exam_2.*R-MLO is missing"):
        LoadExam(**SMALL)(incomplete)
    dataset = ExamDataset([incomplete], LoadExam(**SMALL))
    with pytest.raises(MammoDataError, match="R-MLO"):  # the typed error, not MONAI's RuntimeError
        dataset[0]
    sample = LoadExam(missing_views="allow", **SMALL)(incomplete)
    assert sorted(k for k in sample if k in NYU_VIEWS) == ["L-CC", "L-MLO", "R-CC"]
    with pytest.raises(MammoDataError, match="different views"):
        collate_exams([sample, LoadExam(missing_views="allow", **SMALL)(exams[0])])
    # the image-wise model takes the exam as it is; every target is still covered
    model = ImageWiseModel().eval()
    inputs, _ = MultiViewPrepareBatch()(collate_exams([sample]))
    outputs = model(inputs)
    assert sorted(outputs) == ["L-CC", "L-MLO", "R-CC"]
    assert bool(torch.isfinite(model.predict(outputs)).all())
    with pytest.raises(MammoDataError, match="none of the views"):
        LoadExam(missing_views="allow", **SMALL)(dict(exams[0], **{v: None for v in NYU_VIEWS}))
    with pytest.raises(MammoConfigError, match="missing_views"):
        LoadExam(missing_views="image_wise")  # type: ignore[arg-type]


def test_label_keys_and_unknown_labels(exams: list[dict[str, Any]]) -> None:
    birads = LoadExam(label_key="birads", num_targets=1, views=("L-CC",), missing_views="allow", **SMALL)
    assert birads(dict(exams[0], birads=2))["label"].tolist() == [2]
    assert LoadExam(**SMALL)(dict(exams[0], label=None))["label"].tolist() == [-1, -1, -1, -1]
    with pytest.raises(MammoDataError, match=r"exam_0.*3 value"):
        LoadExam(**SMALL)(dict(exams[0], label=[0, 1, 0]))
    assert exam_id({"exam_id": "A-7", "exam_index": 1}) == "A-7"
    with pytest.raises(MammoDataError, match="exam_index"):
        exam_id({})


# --- loss -----------------------------------------------------------------------------------


def test_view_wise_loss_is_the_sum_of_eight_nlls_and_trains_both_heads(
    exams: list[dict[str, Any]], view_model: ViewWiseModel
) -> None:
    batch = collate_exams([LoadExam(**SMALL)(exams[i]) for i in (1, 3)])
    inputs, labels = MultiViewPrepareBatch()(batch)
    view_model.zero_grad()
    outputs = view_model(inputs)
    loss = MultiViewLoss(view_model.head_targets)(outputs, labels)
    by_hand = sum(
        F.nll_loss(outputs[head][:, row], labels[:, row]) for head in ("CC", "MLO") for row in range(4)
    )
    assert torch.isclose(loss, by_hand)
    elementwise = sum(
        -outputs[head][b, row, labels[b, row]] / 2
        for head in ("CC", "MLO")
        for row in range(4)
        for b in (0, 1)
    )
    assert torch.isclose(loss, elementwise)
    loss.backward()
    for head in ("CC", "MLO"):
        assert float(view_model.heads[head].output.weight.grad.abs().sum()) > 0, head
    for column in ("CC", "MLO"):
        assert float(view_model.column[column].conv.weight.grad.abs().sum()) > 0, column


def test_birads_loss_three_classes_one_target() -> None:
    log_probs = torch.log_softmax(torch.randn(3, 1, 3, generator=torch.Generator().manual_seed(0)), dim=-1)
    other = torch.log_softmax(torch.randn(3, 1, 3, generator=torch.Generator().manual_seed(1)), dim=-1)
    labels = torch.tensor([[0], [2], [1]])
    loss = MultiViewLoss({"CC": [0], "MLO": [0]})({"CC": log_probs, "MLO": other}, labels)
    expected = F.nll_loss(log_probs[:, 0], labels[:, 0]) + F.nll_loss(other[:, 0], labels[:, 0])
    assert torch.isclose(loss, expected)


def test_loss_ignores_unknown_labels_and_checks_heads() -> None:
    log_probs = torch.log(torch.tensor([[[0.8, 0.2], [0.3, 0.7]], [[0.4, 0.6], [0.5, 0.5]]]))
    loss = MultiViewLoss({"CC": [0, 1]})({"CC": log_probs}, torch.tensor([[0, -1], [1, 1]]))
    expected = (-math.log(0.8) - math.log(0.6)) / 2 - math.log(0.5)  # row 1: only the second exam
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    # an image-wise head (rows 0 and 2) only reads its own columns
    partial = MultiViewLoss({"L-CC": [0, 2], "R-CC": [1, 3]})(
        {"L-CC": log_probs}, torch.tensor([[0, 9, 1, 9]] * 2)
    )
    assert float(partial) == pytest.approx(
        -(math.log(0.8) + math.log(0.4)) / 2 - (math.log(0.7) + math.log(0.5)) / 2
    )
    with pytest.raises(MammoConfigError, match="'MLO'"):
        MultiViewLoss({"CC": [0, 1]})({"MLO": log_probs}, torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(MammoConfigError, match="does not match"):
        MultiViewLoss({"CC": [0, 1, 2]})({"CC": log_probs}, torch.zeros(2, 3, dtype=torch.long))


# --- balanced sampler -----------------------------------------------------------------------


def test_balanced_sampler_takes_every_biopsied_exam_and_as_many_others() -> None:
    labels = [[0, 0, 1, 0], [0] * 4, [1, 0, 0, 0], [0] * 4, None, [0, 0, 0, 1], [0] * 4, [0, None, 0, 0]]
    sampler = BalancedExamSampler(labels, seed=7)
    negatives = {1, 3, 4, 6, 7}
    draws = []
    for epoch in range(6):
        sampler.set_epoch(epoch)
        indices = list(sampler)
        assert len(indices) == len(sampler) == 6
        assert {0, 2, 5} <= set(indices) and len(set(indices)) == 6
        assert set(indices) - {0, 2, 5} <= negatives
        draws.append(indices)
    assert len({tuple(d) for d in draws}) > 1  # epochs differ
    sampler.set_epoch(3)
    assert list(sampler) == draws[3]  # deterministic per epoch
    again = BalancedExamSampler(labels, seed=7)
    again.set_epoch(3)
    assert list(again) == draws[3]  # and per seed
    other = BalancedExamSampler(labels, seed=8)
    assert [list((other.set_epoch(e), other)[1]) for e in range(6)] != draws


def test_balanced_sampler_flags_small_negative_pool_and_errors() -> None:
    flagged = BalancedExamSampler([None] * 5, seed=0, biopsied=[False, True, False, False, False])
    assert len(flagged) == 2 and 1 in list(flagged)
    few = BalancedExamSampler([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]], seed=0)
    assert sorted(few) == [0, 1, 2]
    with pytest.raises(MammoDataError, match="no biopsied"):
        BalancedExamSampler([[0, 0, 0, 0]] * 3)
    with pytest.raises(MammoConfigError, match="flags"):
        BalancedExamSampler([None] * 3, biopsied=[True])


def test_balanced_sampler_redraws_every_ignite_epoch() -> None:
    sampler = BalancedExamSampler([[1, 0, 0, 0]] * 2 + [[0] * 4] * 8, seed=0)
    loader = DataLoader(list(range(10)), batch_size=4, sampler=sampler)
    seen: dict[int, list[int]] = {}
    engine = Engine(lambda e, batch: seen.setdefault(e.state.epoch, []).extend(batch.tolist()))
    sampler.attach(engine)
    engine.run(loader, max_epochs=4)
    assert sampler.epoch == 4
    for epoch, indices in seen.items():
        sampler.set_epoch(epoch)
        assert indices == list(sampler)
    assert len({tuple(v) for v in seen.values()}) > 1


# --- inference ------------------------------------------------------------------------------


def test_tta_is_deterministic_per_seed(
    exams: list[dict[str, Any]], view_model: ViewWiseModel, tmp_path: Path
) -> None:
    dataset = ExamDataset(exams[:2], LoadExam(augment=True, **SMALL))
    first = predict_exams(view_model, dataset, n_passes=2, seed=0, batch_size=2)
    second = predict_exams(
        view_model, DataLoader(dataset, batch_size=2, collate_fn=collate_exams), n_passes=2
    )
    other = predict_exams(view_model, dataset, n_passes=2, seed=1, batch_size=2)
    assert first.exam_ids == ["exam_0", "exam_1"]
    assert first.probs.shape == (2, 4) and first.labels.tolist() == [[0, 0, 0, 0], [0, 0, 1, 0]]
    np.testing.assert_array_equal(first.probs, second.probs)
    assert np.abs(first.probs - other.probs).max() > 0
    assert view_model.training  # the mode is restored
    texts = [
        write_predictions_csv(tmp_path / f"{i}.csv", r.exam_ids, r.probs).read_text()
        for i, r in enumerate((first, second))
    ]
    assert texts[0] == texts[1]  # same seed, identical CSV


def test_single_deterministic_pass_equals_the_model_on_the_sample(
    exams: list[dict[str, Any]], view_model: ViewWiseModel
) -> None:
    load = LoadExam(**SMALL)
    result = predict_exams(view_model, ExamDataset(exams[:2], load), n_passes=4, batch_size=2)
    view_model.eval()
    with torch.no_grad():
        inputs, _ = MultiViewPrepareBatch()(collate_exams([load(e) for e in exams[:2]]))
        expected = view_model.predict(view_model(inputs)).numpy()
    view_model.train()
    np.testing.assert_allclose(result.probs, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(MammoConfigError, match="n_passes"):
        predict_exams(view_model, ExamDataset(exams[:1], load), n_passes=0)
    with pytest.raises(MammoConfigError, match="ExamDataset"):
        predict_exams(view_model, [exams[0]], n_passes=1)  # type: ignore[arg-type]


def test_predictions_csv_format(tmp_path: Path) -> None:
    probs = np.array([[0.123456, 0.5, 1.0, 0.0], [0.00004, 0.99996, 0.25, 0.333333]])
    path = write_predictions_csv(tmp_path / "out" / "predictions.csv", ["exam_0", "exam_1"], probs)
    assert path.read_text().splitlines() == [
        "exam_id,left_benign,right_benign,left_malignant,right_malignant",
        "exam_0,0.1235,0.5000,1.0000,0.0000",
        "exam_1,0.0000,1.0000,0.2500,0.3333",
    ]
    bare = write_predictions_csv(tmp_path / "bare.csv", None, probs[:1])
    with open(bare, newline="") as f:
        assert list(csv.reader(f)) == [
            ["left_benign", "right_benign", "left_malignant", "right_malignant"],
            ["0.1235", "0.5000", "1.0000", "0.0000"],
        ]
    partial = write_predictions_csv(tmp_path / "partial.csv", ["e"], [[np.nan, 0.25, np.nan, 0.5]])
    assert partial.read_text().splitlines()[1] == "e,,0.2500,,0.5000"  # a breast without views: empty
    np.testing.assert_array_equal(read_reader_scores(partial, ["e"]), [[np.nan, 0.25, np.nan, 0.5]])
    with pytest.raises(MammoConfigError, match=r"\(N, 4\)"):
        write_predictions_csv(tmp_path / "x.csv", None, np.zeros((2, 3)))
    with pytest.raises(MammoConfigError, match="1 exam ids for 2 rows"):
        write_predictions_csv(tmp_path / "x.csv", ["a"], probs)


# --- MONAI workflows --------------------------------------------------------------------------


def test_one_training_iteration_with_supervised_trainer(exams: list[dict[str, Any]]) -> None:
    torch.manual_seed(0)
    network = ViewWiseModel()
    sampler = BalancedExamSampler([e["label"] for e in exams], seed=0)
    loader = DataLoader(
        ExamDataset(exams, LoadExam(augment=True, **SMALL)),
        batch_size=2,
        sampler=sampler,
        collate_fn=collate_exams,
    )
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-5, weight_decay=10**-4.5)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        epoch_length=1,
        train_data_loader=loader,
        network=network,
        optimizer=optimizer,
        loss_function=MultiViewLoss(network.head_targets),
        prepare_batch=MultiViewPrepareBatch(),
        inferer=SimpleInferer(),
        train_handlers=[sampler],
    )
    before = {k: v.clone() for k, v in network.state_dict().items() if "heads" in k}
    trainer.run()
    assert trainer.state.iteration == 1 and sampler.epoch == 1
    output = trainer.state.output[0]
    assert sorted(output["pred"]) == ["CC", "MLO"] and tuple(output["pred"]["CC"].shape) == (4, 2)
    assert math.isfinite(output["loss"]) and output["loss"] > 0
    changed = [k for k, v in network.state_dict().items() if "heads" in k and not torch.equal(v, before[k])]
    assert any(k.startswith("heads.CC") for k in changed) and any(k.startswith("heads.MLO") for k in changed)


def test_mean_breast_auc_as_evaluator_key_metric(
    exams: list[dict[str, Any]], view_model: ViewWiseModel
) -> None:
    dataset = ExamDataset(exams, LoadExam(**SMALL))
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(dataset, batch_size=2, collate_fn=collate_exams),
        network=view_model,
        prepare_batch=MultiViewPrepareBatch(),
        key_val_metric={"val_mean_auc": MeanBreastAUC(view_model.predict)},
        additional_metrics={"val_auc": BreastTaskAUC(view_model.predict)},
    )
    evaluator.run()
    value = evaluator.state.metrics["val_mean_auc"]
    reference = predict_exams(view_model, dataset, n_passes=1, batch_size=2)
    aucs = per_target_auc(reference.probs, reference.labels)
    assert np.isfinite(aucs).all()  # every target has both classes among the 4 exams
    assert value == pytest.approx(float(aucs.mean()), abs=1e-6)
    assert evaluator.state.best_metric == pytest.approx(value)
    scores, truth = breast_scores(reference.probs, reference.labels)["malignant"]
    assert evaluator.state.metrics["val_auc"] == pytest.approx(roc_auc(truth, scores), abs=1e-6)


def test_multiview_output_batched_and_decollated() -> None:
    pred = {"CC": torch.rand(3, 4, 2), "MLO": torch.rand(3, 4, 2)}
    label = torch.tensor([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]])
    decollated = [{"pred": {h: p[i] for h, p in pred.items()}, "label": label[i]} for i in range(3)]
    for output in ({"pred": pred, "label": label}, decollated):
        got_pred, got_label = multiview_output(output)
        assert all(torch.equal(got_pred[h], pred[h]) for h in pred)
        assert torch.equal(got_label, label)
    metric = MeanBreastAUC(lambda outputs: outputs["CC"][:, :, 1])
    metric.update(multiview_output({"pred": pred, "label": label}))
    assert metric.compute() == pytest.approx(float(np.nanmean(per_target_auc(pred["CC"][:, :, 1], label))))
    metric.reset()
    metric.update(({"CC": pred["CC"]}, torch.zeros(3, 4)))
    assert math.isnan(metric.compute())  # a single class everywhere: no AUC


def test_reader_scores_round_trip_and_errors(tmp_path) -> None:
    probs = np.array([[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]])
    path = write_predictions_csv(tmp_path / "reader.csv", ["a", "b"], probs)
    np.testing.assert_allclose(read_reader_scores(path, ["b", "a"]), probs[::-1])
    with pytest.raises(MammoDataError, match="no reader scores"):
        read_reader_scores(path, ["a", "c"])
    (tmp_path / "bad.csv").write_text(
        "exam_id,left_benign,right_benign,left_malignant,right_malignant\na,0.1,2,0,0\n"
    )
    with pytest.raises(MammoDataError, match="bad.csv:2"):
        read_reader_scores(tmp_path / "bad.csv", ["a"])
    with pytest.raises(MammoDataError, match="not found"):
        read_reader_scores(tmp_path / "none.csv", ["a"])


def test_breast_task_auc_leaves_out_unknown_and_unscored_breasts() -> None:
    probs = torch.tensor([[0.0, 0.0, 0.9, 0.2], [0.0, 0.0, 0.3, float("nan")], [0.0, 0.0, 0.4, 0.8]])
    label = torch.tensor([[0, 0, 1, 0], [0, 0, 0, 1], [0, 0, -1, 1]])
    metric = BreastTaskAUC(lambda outputs: outputs["p"])
    metric.update(({"p": probs}, label))
    # kept: 0.9 (1), 0.2 (0), 0.3 (0), 0.8 (1); the unscored and the unknown breast are left out
    assert metric.compute() == pytest.approx(1.0)
    benign = BreastTaskAUC(lambda outputs: outputs["p"], task="benign")
    benign.update(({"p": probs}, label))
    assert math.isnan(benign.compute())  # no benign breast
    with pytest.raises(MammoConfigError, match="unknown breast task"):
        BreastTaskAUC(lambda outputs: outputs["p"], task="cancer")


def test_breast_figures_roc_and_confusion_matrix(tmp_path: Path) -> None:
    labels = np.array([[0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]])
    single = np.array([[0.0, 0.0, 0.6, 0.2], [0.0, 0.0, 0.1, 0.4], [0.0, 0.0, 0.5, 0.3]])
    averaged = np.array([[0.0, 0.0, 0.8, 0.2], [0.0, 0.0, 0.1, 0.7], [0.0, 0.0, 0.5, 0.3]])
    files = save_breast_figures(single, averaged, labels, 0.6, tmp_path / "test")
    assert [f.name for f in files] == ["roc.png", "confusion_matrix.png", "confusion_matrix.csv"]
    assert all(f.stat().st_size > 0 for f in files) and cv2.imread(str(files[0])) is not None
    with open(files[2], newline="") as f:
        rows = list(csv.reader(f))
    # averaged >= 0.6: the two malignant breasts; 4 negatives below
    assert rows[1:] == [["not malignant", "4", "0"], ["malignant", "0", "2"]]
