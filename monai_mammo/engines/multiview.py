"""Training and inference of the NYU multi-view classifiers (Wu et al. 2019) on MONAI's engines.

**Exam records** are the records of :func:`monai_mammo.data.indexers.nyu.group_exams` (NYU exam
lists) or :func:`monai_mammo.data.indexers.exams.group_image_exams` (DICOM and other datalist
images grouped by patient and study); the keys read here are:

- ``"L-CC"``, ``"R-CC"``, ``"L-MLO"``, ``"R-MLO"``: the image path of each view, None (or
  absent) when the exam lacks it;
- ``"horizontal_flip"``: NYU's ``"YES"``/``"NO"`` flag (``"YES"``: the L images have their
  chest wall on the right edge and the R images on the left);
- ``"label"``: ``[left_benign, right_benign, left_malignant, right_malignant]`` (the model's
  row order), None when unknown (a None entry: that target unknown); another key, e.g. ``"birads"`` (one int, 0/1/2), is chosen with
  ``LoadExam(label_key=..., num_targets=1)``;
- ``"exam_id"`` (optional): the exam's name in outputs; default ``"exam_<exam_index>"``
  (``group_image_exams`` sets ``"<patient_id>/<study_id>"``);
- ``"heatmaps"`` (optional, added by :func:`attach_heatmaps`): ``{view: [benign_path,
  malignant_path]}``, NIfTI heatmaps in the original image geometry
  (:mod:`monai_mammo.transforms.channels`).

**Samples** made by :class:`LoadExam` hold one ``(C, H, W)`` float32 tensor per present view
(``C`` = 1, or 3 = ``[image, benign, malignant]`` with heatmaps), ``"label"`` (a ``(T,)`` int64
tensor, :data:`UNKNOWN_LABEL` where unknown) and ``"exam_id"``. Per view: load ->
[stack heatmaps] -> :class:`~monai_mammo.transforms.breast.CropBreastd` ->
:class:`~monai_mammo.transforms.breast.OrientBreastd` (breast facing right, ``horizontal_flip``
respected) -> :class:`~monai_mammo.transforms.nyu_window.BestCenterCropd` (evaluation) or
:class:`~monai_mammo.transforms.nyu_window.RandCropNoised` (training and test-time augmentation)
-> standardisation of the image channel only. :func:`collate_exams` batches them into
``{"L-CC": (B, C, H, W), ..., "label": (B, T), "exam_id": [B]}``.

Training with MONAI: ``SupervisedTrainer(..., prepare_batch=MultiViewPrepareBatch(),
loss_function=MultiViewLoss(network.head_targets))`` (the default ``SimpleInferer`` calls
``network(views)``), a DataLoader with a :class:`BalancedExamSampler` (also passed as a train
handler so that every epoch re-draws), and a ``SupervisedEvaluator`` whose key metric is
:class:`MeanBreastAUC`.

Example::

    exams = group_exams(index_nyu(root).items)
    train = ExamDataset(exams, LoadExam(augment=True))
    sampler = BalancedExamSampler([e["label"] for e in exams], seed=0)
    loader = DataLoader(train, batch_size=4, sampler=sampler, collate_fn=collate_exams)
    network = ViewWiseModel()
    trainer = SupervisedTrainer(device, 100, loader, network, optimizer,
                                MultiViewLoss(network.head_targets),
                                prepare_batch=MultiViewPrepareBatch(), train_handlers=[sampler])
    result = predict_exams(network, ExamDataset(test_exams, LoadExam(augment=True)), n_passes=10)
    write_predictions_csv("predictions.csv", result.exam_ids, result.probs)
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import ignite.distributed as idist
import numpy as np
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced
from monai.data import Dataset, MetaTensor
from monai.data.utils import list_data_collate
from monai.engines.utils import PrepareBatch
from monai.transforms import Randomizable, Transform
from monai.utils import CommonKeys
from torch import nn
from torch.utils.data import DataLoader, Sampler

from monai_mammo.data.indexers.nyu import NYU_CANCER_KEYS, NYU_VIEWS
from monai_mammo.engines.evaluation import save_confusion_matrix, save_roc_plot
from monai_mammo.exceptions import MammoConfigError, MammoDataError
from monai_mammo.metrics.breast import BREAST_TASKS, breast_scores, per_target_auc
from monai_mammo.networks.multiview import MultiViewModel
from monai_mammo.transforms.breast import CropBreastd, ForegroundMode, OrientBreastd
from monai_mammo.transforms.channels import HEATMAP_BENIGN_KEY, HEATMAP_MALIGNANT_KEY, StackHeatmapsd
from monai_mammo.transforms.intensity import StandardizeImageChanneld
from monai_mammo.transforms.io import LoadMammogramd
from monai_mammo.transforms.nyu_window import CC_INPUT_SIZE, MLO_INPUT_SIZE, BestCenterCropd, RandCropNoised
from monai_mammo.transforms.roi import SkipAwareCompose

__all__ = [
    "EXAM_ID_KEY",
    "HEATMAPS_KEY",
    "LABEL_KEY",
    "UNKNOWN_LABEL",
    "MISSING_VIEW_POLICIES",
    "exam_id",
    "attach_heatmaps",
    "LoadExam",
    "ExamDataset",
    "collate_exams",
    "MultiViewPrepareBatch",
    "MultiViewLoss",
    "BalancedExamSampler",
    "multiview_output",
    "MeanBreastAUC",
    "BreastTaskAUC",
    "ExamPredictions",
    "predict_exams",
    "write_predictions_csv",
    "save_breast_figures",
    "read_reader_scores",
]

EXAM_ID_KEY = "exam_id"
HEATMAPS_KEY = "heatmaps"
LABEL_KEY = "label"
#: Label value of an unknown target (ignored by the loss and the metrics).
UNKNOWN_LABEL = -1
MISSING_VIEW_POLICIES = ("error", "allow")
_IMAGE = "image"

MissingViews = Literal["error", "allow"]


def exam_id(record: Mapping[str, Any]) -> str:
    """Name of an exam record: its ``"exam_id"``, else ``"exam_<exam_index>"``.

    Args:
        record: an exam record.

    Returns:
        The exam's name.

    Raises:
        MammoDataError: the record has neither key.

    Example:
        >>> exam_id({"exam_index": 3})
        'exam_3'
    """
    if record.get(EXAM_ID_KEY) is not None:
        return str(record[EXAM_ID_KEY])
    if record.get("exam_index") is None:
        raise MammoDataError(f"an exam record needs '{EXAM_ID_KEY}' or 'exam_index'; keys: {sorted(record)}")
    return f"exam_{record['exam_index']}"


def _manifest_items(manifest: str | os.PathLike | Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The items of a heatmap manifest: a JSON list (or ``{"items": [...]}``) file, or the list itself."""
    if not isinstance(manifest, (str, os.PathLike)):
        return list(manifest)
    path = Path(manifest)
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MammoDataError(f"cannot read the heatmap manifest ({type(exc).__name__}: {exc})", path) from exc
    items = content.get("items") if isinstance(content, dict) else content
    if not isinstance(items, list):
        raise MammoDataError("a heatmap manifest must be a JSON list of items (or {'items': [...]})", path)
    return items


def _path_key(path: Any) -> str:
    return os.path.normcase(os.path.abspath(os.fspath(path)))


def attach_heatmaps(
    records: Sequence[Mapping[str, Any]],
    manifest: str | os.PathLike | Sequence[Mapping[str, Any]],
    views: Sequence[str] = NYU_VIEWS,
) -> list[dict[str, Any]]:
    """Give exam records the heatmap files of their views from a heatmap manifest.

    A manifest lists image items with ``"image"`` and the ``"heatmap_benign"`` /
    ``"heatmap_malignant"`` files computed for it (as written by the heatmap engine); items are
    matched to the records' view paths by absolute path.

    Args:
        records: exam records (not modified).
        manifest: the manifest JSON file, or its items.
        views: views to look up.

    Returns:
        Copies of the records with ``"heatmaps": {view: [benign, malignant]}`` for every present view.

    Raises:
        MammoDataError: an unreadable manifest, or a present view without heatmaps in it (the
            message names the exam and the view).

    Example::

        exams = attach_heatmaps(group_exams(index_nyu(root).items), "heatmaps/manifest.json")
    """
    maps = {}
    for item in _manifest_items(manifest):
        if item.get(_IMAGE) and item.get(HEATMAP_BENIGN_KEY) and item.get(HEATMAP_MALIGNANT_KEY):
            maps[_path_key(item[_IMAGE])] = [str(item[HEATMAP_BENIGN_KEY]), str(item[HEATMAP_MALIGNANT_KEY])]
    out = []
    for record in records:
        heatmaps = {}
        for view in views:
            if not record.get(view):
                continue
            found = maps.get(_path_key(record[view]))
            if found is None:
                raise MammoDataError(
                    f"no heatmaps in the manifest for view {view} ({record[view]})", exam_id(record)
                )
            heatmaps[view] = found
        out.append({**record, HEATMAPS_KEY: heatmaps})
    return out


class LoadExam(Randomizable, Transform):
    """Exam record -> one classifier input per view, plus the label and the exam id.

    Works on a whole exam record (its views are its keys), so there is no ``d`` twin. The
    pipeline of every view is described in the module docstring. Randomness (``augment=True``)
    comes from this transform's ``R``, shared by every view's crop noise: seeding it (e.g.
    :meth:`set_random_state`) makes every crop reproducible.

    Args:
        augment: crop with NYU's location and size noise (training, test-time augmentation)
            instead of the deterministic optimal-centre window.
        heatmaps: stack the benign and malignant heatmaps onto each view (3 channels).
        heatmap_dir: folder of heatmaps named by :func:`~monai_mammo.transforms.channels.heatmap_paths`,
            used for records without ``"heatmaps"``.
        views: views to load.
        missing_views: ``"error"``: a missing view raises; ``"allow"``: it is left out of the
            sample (for the image-wise model).
        label_key: record key of the label.
        num_targets: length of the label (4 cancer targets; 1 for BI-RADS).
        cc_size: CC input size (NYU: 2677 x 1942).
        mlo_size: MLO input size (NYU: 2974 x 1748).
        max_crop_noise: location noise ``(y, x)`` in pixels (NYU: 100, 100).
        max_crop_size_noise: size noise per border in pixels (NYU: 100).
        crop_mode: foreground rule of the breast crop (``"nyu"``: nonzero; ``"otsu"`` for
            backgrounds that are not exactly zero).
        crop_radius: erosion radius of the breast crop (NYU: 100).
        crop_buffer: margin of the breast crop (NYU: 50).

    Raises:
        MammoConfigError: invalid options.

    Example::

        sample = LoadExam(cc_size=(128, 96), mlo_size=(144, 80), crop_mode="otsu", crop_radius=20)(record)
        sample["L-CC"].shape  # (1, 128, 96), breast facing right
    """

    backend = RandCropNoised.backend

    def __init__(
        self,
        augment: bool = False,
        heatmaps: bool = False,
        heatmap_dir: str | os.PathLike | None = None,
        views: Sequence[str] = NYU_VIEWS,
        missing_views: MissingViews = "error",
        label_key: str = LABEL_KEY,
        num_targets: int = len(NYU_CANCER_KEYS),
        cc_size: Sequence[int] = CC_INPUT_SIZE,
        mlo_size: Sequence[int] = MLO_INPUT_SIZE,
        max_crop_noise: Sequence[int] = (100, 100),
        max_crop_size_noise: int = 100,
        crop_mode: ForegroundMode = "nyu",
        crop_radius: int = 100,
        crop_buffer: int = 50,
    ) -> None:
        if missing_views not in MISSING_VIEW_POLICIES:
            raise MammoConfigError(
                f"missing_views must be one of {MISSING_VIEW_POLICIES}, got {missing_views!r}"
            )
        unknown = [v for v in views if v not in NYU_VIEWS]
        if unknown or not views:
            raise MammoConfigError(f"views must be some of {NYU_VIEWS}, got {list(views)}")
        if num_targets < 1:
            raise MammoConfigError(f"num_targets must be >= 1, got {num_targets}")
        self.augment = augment
        self.heatmaps = heatmaps
        self.heatmap_dir = heatmap_dir
        self.views = tuple(views)
        self.missing_views = missing_views
        self.label_key = label_key
        self.num_targets = num_targets
        steps: list[Callable] = [LoadMammogramd(_IMAGE)]
        if heatmaps:
            steps.append(StackHeatmapsd(_IMAGE, heatmap_dir=heatmap_dir))
        steps += [
            CropBreastd(_IMAGE, mode=crop_mode, radius=crop_radius, buffer=crop_buffer),
            OrientBreastd(_IMAGE),
        ]
        self.prepare = SkipAwareCompose(steps)
        self.crop: RandCropNoised | BestCenterCropd = (
            RandCropNoised(
                _IMAGE,
                max_crop_noise=max_crop_noise,
                max_crop_size_noise=max_crop_size_noise,
                cc_size=cc_size,
                mlo_size=mlo_size,
            )
            if augment
            else BestCenterCropd(_IMAGE, cc_size=cc_size, mlo_size=mlo_size)
        )
        self.standardize = StandardizeImageChanneld(_IMAGE)

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> LoadExam:
        """Seed the crop noise of every view (one shared RandomState).

        Args:
            seed: seed of a new RandomState.
            state: a RandomState to use instead.

        Returns:
            self.
        """
        super().set_random_state(seed, state)
        if isinstance(self.crop, RandCropNoised):
            self.crop.set_random_state(state=self.R)
        return self

    def _view_item(self, record: Mapping[str, Any], view: str, source: str) -> dict[str, Any]:
        side, kind = view.split("-")
        item = {
            _IMAGE: record[view],
            "laterality": side,
            "view": kind,
            "horizontal_flip": record.get("horizontal_flip", "NO"),
        }
        maps = (record.get(HEATMAPS_KEY) or {}).get(view)
        if self.heatmaps and maps is None and self.heatmap_dir is None:
            raise MammoDataError(
                f"no heatmaps for view {view}: use attach_heatmaps() or give heatmap_dir", source
            )
        if self.heatmaps and maps is not None:
            if len(maps) != 2:
                raise MammoDataError(
                    f"heatmaps of view {view} must be [benign, malignant], got {maps!r}", source
                )
            item[HEATMAP_BENIGN_KEY], item[HEATMAP_MALIGNANT_KEY] = maps
        return item

    def prepare_views(self, record: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """The deterministic part: load, stack heatmaps, crop the breast, face it right.

        Args:
            record: an exam record.

        Returns:
            ``{view: item}`` for the present views, each item holding the oriented crop
            under ``"image"``; :meth:`crop_views` finishes them.

        Raises:
            MammoDataError: a missing view with ``missing_views="error"`` or no view at all
                (naming the exam and the view); errors of the transforms (naming the file).
        """
        source = exam_id(record)
        prepared = {}
        for view in self.views:
            if not record.get(view):
                if self.missing_views == "error":
                    raise MammoDataError(
                        f"view {view} is missing (missing_views='allow' keeps such exams for the "
                        "image-wise model)",
                        source,
                    )
                continue
            prepared[view] = self.prepare(self._view_item(record, view, source))
        if not prepared:
            raise MammoDataError(f"none of the views {list(self.views)} is present", source)
        return prepared

    def crop_views(
        self, prepared: Mapping[str, Mapping[str, Any]], record: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The classifier input window (noisy with ``augment``) and standardisation of every view.

        Args:
            prepared: the output of :meth:`prepare_views` (not modified).
            record: the exam record (label and id).

        Returns:
            The sample: ``{view: (C, H, W) float32 tensor, "label": (T,) int64, "exam_id": str}``.

        Raises:
            MammoDataError: a label of the wrong length or type.
        """
        sample: dict[str, Any] = {}
        for view, item in prepared.items():
            image = self.standardize(self.crop(item))[_IMAGE]
            image = image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)
            sample[view] = image.to(torch.float32)
        sample[LABEL_KEY] = self._label(record)
        sample[EXAM_ID_KEY] = exam_id(record)
        return sample

    def _label(self, record: Mapping[str, Any]) -> torch.Tensor:
        value = record.get(self.label_key)
        if value is None:
            return torch.full((self.num_targets,), UNKNOWN_LABEL, dtype=torch.int64)
        values = list(value) if isinstance(value, (list, tuple, np.ndarray, torch.Tensor)) else [value]
        if len(values) != self.num_targets:
            raise MammoDataError(
                f"label {self.label_key!r} has {len(values)} value(s), expected {self.num_targets}",
                exam_id(record),
            )
        try:
            return torch.tensor([UNKNOWN_LABEL if v is None else int(v) for v in values], dtype=torch.int64)
        except (TypeError, ValueError) as exc:
            raise MammoDataError(
                f"label {self.label_key!r} is not integer: {value!r}", exam_id(record)
            ) from exc

    def __call__(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Make the sample of an exam.

        Args:
            record: an exam record (see the module docstring).

        Returns:
            ``{view: (C, H, W), "label": (T,), "exam_id": str}``.

        Raises:
            MammoDataError: see :meth:`prepare_views` and :meth:`crop_views`.
        """
        return self.crop_views(self.prepare_views(record), record)


class ExamDataset(Dataset):
    """A MONAI ``Dataset`` of exam records transformed by a :class:`LoadExam`.

    The project's errors reach the caller as they are (MONAI's ``Dataset`` would wrap them in
    a ``RuntimeError``).

    Args:
        data: exam records.
        transform: the exam transform.

    Example::

        dataset = ExamDataset(exams, LoadExam(augment=True))
        dataset[0]["L-CC"].shape
    """

    def __init__(self, data: Sequence[Mapping[str, Any]], transform: LoadExam) -> None:
        super().__init__(data, SkipAwareCompose([transform]))
        self.loader = transform

    def _transform(self, index: int) -> dict[str, Any]:
        return self.loader(self.data[index])


def collate_exams(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Batch exam samples (``collate_fn`` of a DataLoader over an :class:`ExamDataset`).

    Args:
        samples: samples of :class:`LoadExam`, all with the same views.

    Returns:
        ``{view: (B, C, H, W), "label": (B, T), "exam_id": [B]}``.

    Raises:
        MammoDataError: samples with different views (exams missing different views cannot
            share a batch: use ``batch_size=1`` with ``missing_views="allow"``).

    Example::

        loader = DataLoader(dataset, batch_size=4, collate_fn=collate_exams)
    """
    views = [tuple(v for v in NYU_VIEWS if v in sample) for sample in samples]
    if len(set(views)) > 1:
        named = {str(s.get(EXAM_ID_KEY)): list(v) for s, v in zip(samples, views)}
        raise MammoDataError(
            f"a batch mixes exams with different views {named}; use batch_size=1 for exams with missing views"
        )
    return list_data_collate(list(samples))


class MultiViewPrepareBatch(PrepareBatch):
    """``prepare_batch`` of MONAI workflows for multi-view models: ``(views dict, label)``.

    ``SimpleInferer`` then calls ``network(views)``.

    Args:
        views: views passed to the network (those present in the batch).
        label_key: batch key of the targets.

    Example::

        SupervisedTrainer(..., prepare_batch=MultiViewPrepareBatch())
    """

    def __init__(self, views: Sequence[str] = NYU_VIEWS, label_key: str = LABEL_KEY) -> None:
        self.views = tuple(views)
        self.label_key = label_key

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """Move the views and the label to ``device``.

        Args:
            batchdata: a batch of :func:`collate_exams`.
            device: target device.
            non_blocking: non-blocking copies.
            kwargs: other arguments of ``Tensor.to``.

        Returns:
            ``({view: (B, C, H, W)}, label (B, T) or None)``.

        Raises:
            MammoDataError: the batch holds none of the views.
        """
        inputs = {
            view: batchdata[view].to(device=device, non_blocking=non_blocking, **kwargs)
            for view in self.views
            if view in batchdata
        }
        if not inputs:
            raise MammoDataError(
                f"the batch holds none of the views {list(self.views)}; keys: {sorted(batchdata)}"
            )
        label = batchdata.get(self.label_key)
        if isinstance(label, torch.Tensor):
            label = label.to(device=device, non_blocking=non_blocking, **kwargs)
        return inputs, label


class MultiViewLoss(nn.Module):
    """Sum over heads and their target rows of the mean NLL (the paper's training loss).

    For the view-wise model (heads CC and MLO, 4 targets each) this is the sum of the 8 binary
    cross-entropies; for the BI-RADS model it is the sum of the two heads' 3-class NLLs. Heads
    absent from the outputs (image-wise model, missing views) add nothing; labels equal to
    :data:`UNKNOWN_LABEL` are ignored (each row's NLL is averaged over its known labels).

    Args:
        head_targets: head name -> target rows it predicts (``network.head_targets``).

    Raises:
        MammoConfigError: empty mapping.

    Example:
        >>> loss = MultiViewLoss({"CC": [0, 1], "MLO": [0, 1]})
        >>> out = {h: torch.log(torch.full((2, 2, 2), 0.5)) for h in ("CC", "MLO")}
        >>> round(loss(out, torch.tensor([[0, 1], [1, 0]])).item(), 4)  # 4 * ln 2
        2.7726
    """

    def __init__(self, head_targets: Mapping[str, Sequence[int]]) -> None:
        super().__init__()
        if not head_targets:
            raise MammoConfigError("head_targets is empty")
        self.head_targets = {head: list(rows) for head, rows in head_targets.items()}

    def forward(self, outputs: Mapping[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """The loss of a batch.

        Args:
            outputs: head name -> log-probabilities ``(B, rows, K)``.
            labels: ``(B, T)`` class indices (:data:`UNKNOWN_LABEL` = unknown).

        Returns:
            The scalar loss.

        Raises:
            MammoConfigError: an unknown head or an output whose rows do not match its targets.
        """
        labels = torch.as_tensor(labels).long()
        total = labels.new_zeros((), dtype=torch.float32)
        for head, log_probs in outputs.items():
            rows = self.head_targets.get(head)
            if rows is None or log_probs.ndim != 3 or log_probs.shape[1] != len(rows):
                raise MammoConfigError(
                    f"head {head!r}: output shape {tuple(log_probs.shape)} does not match its targets "
                    f"{rows} (heads: {list(self.head_targets)})"
                )
            target = labels[:, rows]
            known = target != UNKNOWN_LABEL
            nll = F.nll_loss(log_probs.transpose(1, 2), target.clamp(min=0), reduction="none")
            total = total + ((nll * known).sum(0) / known.sum(0).clamp(min=1)).sum()
        return total


class BalancedExamSampler(Sampler[int]):
    """Every epoch: all biopsied exams and as many randomly drawn non-biopsied ones (the paper).

    An exam is biopsied when any of its labels is positive (1), unless ``biopsied`` flags are
    given. The non-biopsied draw (without replacement, ``min(#biopsied, #non-biopsied)``) and
    the order are shuffled with a generator seeded by ``(seed, epoch)``: deterministic per seed
    and epoch. Attach it to the trainer (or pass it in ``train_handlers``) so that each epoch
    re-draws; :meth:`set_epoch` does it by hand.

    Args:
        labels: per exam, its labels (a sequence of ints, None entries = unknown) or None.
        seed: seed of the draws.
        biopsied: per exam, whether it was biopsied (overrides ``labels``).

    Raises:
        MammoConfigError: ``biopsied`` of another length than ``labels``.
        MammoDataError: no biopsied exam.

    Example:
        >>> sampler = BalancedExamSampler([[0, 0, 1, 0], [0] * 4, [0] * 4, None], seed=0)
        >>> len(sampler), 0 in list(sampler)
        (2, True)
    """

    def __init__(
        self,
        labels: Sequence[Sequence[int | None] | None],
        seed: int = 0,
        biopsied: Sequence[bool] | None = None,
    ) -> None:
        if biopsied is None:
            flags = [value is not None and any(v == 1 for v in value) for value in labels]
        elif len(biopsied) != len(labels):
            raise MammoConfigError(f"biopsied has {len(biopsied)} flags for {len(labels)} exams")
        else:
            flags = [bool(v) for v in biopsied]
        self.positive = np.flatnonzero(flags)
        self.negative = np.flatnonzero(~np.asarray(flags, dtype=bool))
        if self.positive.size == 0:
            raise MammoDataError(f"no biopsied exam among {len(labels)}: nothing to balance")
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose draw :meth:`__iter__` yields.

        Args:
            epoch: the epoch number.
        """
        self.epoch = int(epoch)

    def attach(self, engine: Engine) -> None:
        """Re-draw at every ``EPOCH_STARTED`` of ``engine`` (epoch = ``engine.state.epoch``).

        Args:
            engine: the trainer.
        """
        engine.add_event_handler(Events.EPOCH_STARTED, lambda e: self.set_epoch(e.state.epoch))

    def __len__(self) -> int:
        return int(self.positive.size + min(self.positive.size, self.negative.size))

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng((self.seed, self.epoch))
        drawn = rng.choice(self.negative, size=min(self.positive.size, self.negative.size), replace=False)
        return iter(int(i) for i in rng.permutation(np.concatenate((self.positive, drawn))))


def multiview_output(output: Any) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """``(pred, label)`` of a MONAI engine's output, batched or decollated.

    Args:
        output: ``engine.state.output``: a dict with ``"pred"`` (head -> ``(B, rows, K)``) and
            ``"label"``, or its decollated list of per-sample dicts.

    Returns:
        ``({head: (B, rows, K)}, label (B, T))``.

    Example::

        MeanBreastAUC(network.predict, output_transform=multiview_output)
    """
    if isinstance(output, Mapping):
        return dict(output[CommonKeys.PRED]), torch.as_tensor(output[CommonKeys.LABEL])
    heads = output[0][CommonKeys.PRED]
    pred = {head: torch.stack([o[CommonKeys.PRED][head] for o in output]) for head in heads}
    return pred, torch.stack([torch.as_tensor(o[CommonKeys.LABEL]) for o in output])


class MeanBreastAUC(Metric):
    """Mean over the targets of the validation AUC (the paper's early-stopping criterion).

    Per target, the AUC over the exams whose label is known and predicted; targets with a single
    class are left out of the mean (NaN when none is left). Usable as ``key_val_metric`` of a
    ``SupervisedEvaluator``.

    Args:
        predict: head outputs -> ``(B, T)`` probabilities (``network.predict``).
        output_transform: engine output -> ``(pred, label)``.
        device: where the metric accumulates.

    Example::

        SupervisedEvaluator(device, loader, network, prepare_batch=MultiViewPrepareBatch(),
                            key_val_metric={"val_mean_auc": MeanBreastAUC(network.predict)})
    """

    def __init__(
        self,
        predict: Callable[[Mapping[str, torch.Tensor]], torch.Tensor],
        output_transform: Callable[[Any], Any] = multiview_output,
        device: str | torch.device = "cpu",
    ) -> None:
        self.predict = predict
        self._probs: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._probs = []
        self._labels = []

    @reinit__is_reduced
    def update(self, output: tuple[Mapping[str, torch.Tensor], torch.Tensor]) -> None:
        pred, label = output
        with torch.no_grad():
            probs = self.predict(pred)
        self._probs.append(probs.detach().float().to(self._device))
        self._labels.append(torch.as_tensor(label).detach().float().to(self._device))

    def compute(self) -> float:
        aucs = per_target_auc(*self._gathered())
        finite = aucs[np.isfinite(aucs)]
        return float(finite.mean()) if finite.size else float("nan")

    def _gathered(self) -> tuple[np.ndarray, np.ndarray]:
        """``(probs, labels)`` of every process, ``(N, T)`` each."""
        probs = (
            cast(torch.Tensor, idist.all_gather(torch.cat(self._probs))) if self._probs else torch.zeros(0, 1)
        )
        labels = (
            cast(torch.Tensor, idist.all_gather(torch.cat(self._labels)))
            if self._labels
            else torch.zeros(0, 1)
        )
        return probs.cpu().numpy(), labels.cpu().numpy()


class BreastTaskAUC(MeanBreastAUC):
    """Breast-level AUC of one task (``"malignant"``: the cross-family ``val_auc``) during validation.

    Each exam contributes its left and right breasts; breasts with an unknown label or no score
    (an image-wise model without either view of the breast) are left out. NaN with a single class.

    Args:
        predict: head outputs -> ``(B, 4)`` probabilities (``network.predict``).
        task: ``"malignant"`` or ``"benign"``.
        output_transform: engine output -> ``(pred, label)``.
        device: where the metric accumulates.

    Raises:
        MammoConfigError: unknown task.

    Example::

        SupervisedEvaluator(..., key_val_metric={"val_mean_auc": MeanBreastAUC(network.predict)},
                            additional_metrics={"val_auc": BreastTaskAUC(network.predict)})
    """

    def __init__(
        self,
        predict: Callable[[Mapping[str, torch.Tensor]], torch.Tensor],
        task: str = "malignant",
        output_transform: Callable[[Any], Any] = multiview_output,
        device: str | torch.device = "cpu",
    ) -> None:
        if task not in BREAST_TASKS:
            raise MammoConfigError(f"unknown breast task {task!r}; expected one of {list(BREAST_TASKS)}")
        self.task = task
        super().__init__(predict, output_transform, device)

    def compute(self) -> float:
        probs, labels = self._gathered()
        columns = list(BREAST_TASKS[self.task])
        scores, truth = probs[:, columns].reshape(-1, 1), labels[:, columns].reshape(-1, 1)
        return float(per_target_auc(scores, truth)[0]) if scores.size else float("nan")


@dataclass(frozen=True)
class ExamPredictions:
    """Predictions of :func:`predict_exams`.

    Attributes:
        exam_ids: one name per exam, in dataset order.
        probs: ``(N, T)`` probabilities averaged over the passes (NaN for uncovered targets).
        labels: ``(N, T)`` labels (:data:`UNKNOWN_LABEL` where unknown).
    """

    exam_ids: list[str]
    probs: np.ndarray
    labels: np.ndarray


@torch.no_grad()
def predict_exams(
    model: MultiViewModel,
    data: ExamDataset | DataLoader,
    n_passes: int = 10,
    seed: int = 0,
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    amp: bool = False,
) -> ExamPredictions:
    """NYU inference: the mean of ``n_passes`` augmented predictions per exam.

    The dataset's :class:`LoadExam` is seeded once with ``seed`` and all crops draw from that
    single RNG, batch after batch and pass after pass, as the reference does: the same seed
    gives identical predictions. Each exam is loaded and its breasts cropped once; only the
    input windows are redrawn per pass. Runs in this process (a DataLoader contributes its
    dataset and batch size, not its workers, which would each copy the RNG). With
    ``LoadExam(augment=False)`` every pass is the same deterministic crop.

    Args:
        model: a multi-view model (``forward(views)`` and ``predict(outputs)``); run in eval mode.
        data: an :class:`ExamDataset`, or a DataLoader over one.
        n_passes: augmented passes averaged (NYU: 10).
        seed: seed of the crop noise (NYU: 0).
        device: where the model runs.
        batch_size: exams per forward pass (default: the DataLoader's, else 1).
        amp: autocast on CUDA.

    Returns:
        The :class:`ExamPredictions`.

    Raises:
        MammoConfigError: ``n_passes < 1`` or ``data`` not built on an :class:`ExamDataset`.
        MammoDataError: see :class:`LoadExam`.

    Example::

        result = predict_exams(network, ExamDataset(exams, LoadExam(augment=True)), n_passes=10)
    """
    if n_passes < 1:
        raise MammoConfigError(f"n_passes must be >= 1, got {n_passes}")
    dataset = data.dataset if isinstance(data, DataLoader) else data
    if not isinstance(dataset, ExamDataset):
        raise MammoConfigError(
            f"predict_exams needs an ExamDataset (or a DataLoader over one), got {type(dataset).__name__}"
        )
    size = batch_size or (data.batch_size if isinstance(data, DataLoader) else None) or 1
    loader = dataset.loader.set_random_state(seed)
    prepare = MultiViewPrepareBatch(loader.views, LABEL_KEY)
    use_amp = amp and torch.device(device).type == "cuda"
    was_training = model.training
    model.eval()
    ids: list[str] = []
    probs: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    try:
        for start in range(0, len(dataset), size):
            records = [dataset.data[i] for i in range(start, min(start + size, len(dataset)))]
            prepared = [loader.prepare_views(record) for record in records]
            passes = []
            for _ in range(n_passes):
                batch = collate_exams([loader.crop_views(p, r) for p, r in zip(prepared, records)])
                inputs, label = prepare(batch, device)
                with torch.autocast(device_type=torch.device(device).type, enabled=use_amp):
                    passes.append(model.predict(model(inputs)).float().cpu())
            probs.append(torch.stack(passes).mean(dim=0).numpy())
            labels.append(torch.as_tensor(label).cpu().numpy())
            ids.extend(str(i) for i in batch[EXAM_ID_KEY])
    finally:
        model.train(was_training)
    return ExamPredictions(ids, np.concatenate(probs), np.concatenate(labels).astype(np.int64))


def write_predictions_csv(
    path: str | os.PathLike, exam_ids: Sequence[Any] | None, probs: np.ndarray | Sequence[Sequence[float]]
) -> Path:
    """Write NYU's prediction CSV: ``[exam_id,] left_benign, right_benign, left_malignant, right_malignant``.

    A breast without a prediction (NaN: an image-wise model that saw neither of its views) gets
    an empty cell, which :func:`read_reader_scores` reads back as NaN.

    Args:
        path: the CSV file (parent folders are created).
        exam_ids: one name per exam (first column ``exam_id``), or None for the four columns only.
        probs: ``(N, 4)`` probabilities in that column order; written with 4 decimals (empty: NaN).

    Returns:
        The written path.

    Raises:
        MammoConfigError: ``probs`` is not ``(N, 4)`` or the ids do not match its rows.

    Example::

        write_predictions_csv("out/predictions.csv", result.exam_ids, result.probs)
    """
    table = np.asarray(probs, dtype=np.float64)
    if table.ndim != 2 or table.shape[1] != len(NYU_CANCER_KEYS):
        raise MammoConfigError(f"probs must be (N, {len(NYU_CANCER_KEYS)}), got shape {table.shape}")
    if exam_ids is not None and len(exam_ids) != table.shape[0]:
        raise MammoConfigError(f"{len(exam_ids)} exam ids for {table.shape[0]} rows of probabilities")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        id_column = [] if exam_ids is None else [EXAM_ID_KEY]
        writer.writerow([*id_column, *NYU_CANCER_KEYS])
        for index, row in enumerate(table):
            ident = [] if exam_ids is None else [exam_ids[index]]
            writer.writerow([*ident, *(f"{v:.4f}" if np.isfinite(v) else "" for v in row)])
    return out


def save_breast_figures(
    single: Any, averaged: Any, labels: Any, threshold: float, folder: str | os.PathLike
) -> list[Path]:
    """ROC curves and confusion matrix of the malignant breast-level task (test artifacts).

    Uses :func:`~monai_mammo.engines.evaluation.save_roc_plot` (one curve for the un-augmented
    pass, one for the averaged prediction) and
    :func:`~monai_mammo.engines.evaluation.save_confusion_matrix` (averaged prediction at
    ``threshold``), as the other families do.

    Args:
        single: ``(N, 4)`` probabilities of the un-augmented pass.
        averaged: ``(N, 4)`` test-time-augmented probabilities of the same exams.
        labels: ``(N, 4)`` labels (unknown breasts are left out).
        threshold: the operating point (``score >= threshold`` = malignant).
        folder: output folder.

    Returns:
        ``[roc.png, confusion_matrix.png, confusion_matrix.csv]`` under ``folder``.

    Raises:
        MammoConfigError: see :func:`~monai_mammo.metrics.breast.breast_scores`.

    Example::

        save_breast_figures(single.probs, tta.probs, tta.labels, 0.5, "outputs/test")
    """
    s, y = breast_scores(single, labels)["malignant"]
    a, _ = breast_scores(averaged, labels)["malignant"]
    folder = Path(folder)
    roc = save_roc_plot(
        y, {"single pass": s, "averaged (TTA)": a}, folder / "roc.png", "malignant, breast level"
    )
    matrix = save_confusion_matrix(
        y, a, threshold, folder / "confusion_matrix", class_names=("not malignant", "malignant")
    )
    return [roc, *matrix]


def read_reader_scores(path: str | os.PathLike, exam_ids: Sequence[str]) -> np.ndarray:
    """A radiologist's (or any reader's) probabilities per exam, in the order of ``exam_ids``.

    The CSV has the layout :func:`write_predictions_csv` writes: ``exam_id, left_benign,
    right_benign, left_malignant, right_malignant`` (probabilities in [0, 1]; an empty cell is
    NaN, i.e. that breast is not scored).

    Args:
        path: the reader's CSV.
        exam_ids: the exams to return, in order (e.g. ``ExamPredictions.exam_ids``).

    Returns:
        ``(len(exam_ids), 4)`` float64.

    Raises:
        MammoDataError: missing file, columns, exams, duplicate exams or values outside [0, 1],
            naming the file and the row.

    Example::

        reader = read_reader_scores("reader.csv", predictions.exam_ids)
    """
    file = Path(path)
    if not file.is_file():
        raise MammoDataError("reader score file not found", file)
    with open(file, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = (EXAM_ID_KEY, *NYU_CANCER_KEYS)
    if not rows or any(c not in rows[0] for c in columns):
        raise MammoDataError(f"a reader CSV needs the columns {list(columns)}", file)
    table: dict[str, list[float]] = {}
    for number, row in enumerate(rows, 2):
        exam = row[EXAM_ID_KEY]
        if exam in table:
            raise MammoDataError(f"exam {exam!r} appears twice", f"{file}:{number}")
        try:
            values = [float(row[c]) if row[c] not in ("", None) else float("nan") for c in NYU_CANCER_KEYS]
        except ValueError as exc:
            raise MammoDataError(f"not a probability: {exc}", f"{file}:{number}") from exc
        if any(not (0.0 <= v <= 1.0) for v in values if not np.isnan(v)):
            raise MammoDataError(f"probabilities must be in [0, 1], got {values}", f"{file}:{number}")
        table[exam] = values
    missing = [e for e in exam_ids if e not in table]
    if missing:
        raise MammoDataError(f"no reader scores for {len(missing)} exams, e.g. {missing[:3]}", file)
    return np.asarray([table[e] for e in exam_ids], dtype=np.float64)
