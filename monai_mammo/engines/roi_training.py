"""Binary ROI / patch classifier training shared by the calcification and mass papers.

Built on MONAI's :class:`~monai.engines.SupervisedTrainer` and
:class:`~monai.engines.SupervisedEvaluator`:

- :func:`make_optimizer`: Adam (Mračko et al.), RMSProp with Keras 2 defaults (Falconi et al.), SGD.
- :class:`WeightedBCEWithLogits` with per-class weights; :func:`balanced_binary_weights` gives
  the papers' convention (inverse class frequency normalised to sum 1).
- Ignite handlers: :class:`EpochStatistics` (after every epoch: accuracy on the *non-augmented*
  training set, validation accuracy / AUC / F1 / sensitivity / specificity, Falconi's
  beta = train_acc / valid_acc and the 10 % rejection rule, all logged to MLflow),
  :class:`EpochCheckpoint` (one file per epoch) and :class:`BestCheckpoint`.
- :func:`fit_classifier` (one training run; a stage run in MLflow), :func:`predict_binary`
  and :func:`transfer_then_finetune` (Falconi's TL stage then FT from layer gamma).

Networks return logits ``(B, 1)`` (one logit, P(positive) = sigmoid); ``(B, 2)`` networks are
scored with the softmax of column 1 but cannot be trained with the binary loss.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.metrics import Metric
from monai.data import DataLoader, Dataset
from monai.engines import Evaluator, SupervisedEvaluator, SupervisedTrainer
from monai.handlers import from_engine
from monai.transforms import EnsureTyped
from monai.utils import set_determinism
from torch import nn

from monai_mammo.data.skipping import SkipAwareCollate, SkipBadSamples
from monai_mammo.engines.evaluation import flip_tta_scores, positive_probability
from monai_mammo.engines.handlers import (
    EarlyStopOnMetric,
    NonFiniteLossGuard,
    ProgressLogger,
    atomic_save,
    output_loss,
)
from monai_mammo.engines.skipping import SkippedSamplesHandler
from monai_mammo.engines.tracking import MLflowTracker
from monai_mammo.engines.workflow import load_checkpoint
from monai_mammo.exceptions import MammoConfigError, MammoDataError
from monai_mammo.metrics.classification import binary_metrics, is_overfit, overfitting_ratio

__all__ = [
    "OPTIMIZERS",
    "VAL_METRICS",
    "LOGGED_METRICS",
    "make_optimizer",
    "balanced_binary_weights",
    "resolve_class_weights",
    "WeightedBCEWithLogits",
    "positive_probability",
    "BinaryScoreMetrics",
    "make_binary_evaluator",
    "EpochStatistics",
    "EpochCheckpoint",
    "BestCheckpoint",
    "FitResult",
    "fit_classifier",
    "predict_binary",
    "transfer_then_finetune",
]

logger = logging.getLogger(__name__)

#: Optimizer names accepted by :func:`make_optimizer`.
OPTIMIZERS: tuple[str, ...] = ("adam", "rmsprop", "sgd")

#: Keys of :func:`~monai_mammo.metrics.classification.binary_metrics` usable as ``monitor``.
VAL_METRICS: tuple[str, ...] = ("accuracy", "auc", "f1", "sensitivity", "specificity", "balanced_accuracy")

#: Per-epoch metric names :class:`EpochStatistics` logs to MLflow (step = epoch).
LOGGED_METRICS: tuple[str, ...] = (
    "train_loss",
    "train_accuracy",
    "train_auc",
    "val_accuracy",
    "val_auc",
    "val_f1",
    "val_sensitivity",
    "val_specificity",
    "train_tp",
    "train_fp",
    "train_tn",
    "train_fn",
    "val_tp",
    "val_fp",
    "val_tn",
    "val_fn",
    "overfitting_ratio",
    "overfit",
)


def make_optimizer(
    name: str, params: Iterable[Any], lr: float, weight_decay: float = 0.0, **kwargs: Any
) -> torch.optim.Optimizer:
    """An optimizer by name, with the papers' defaults.

    - ``"adam"`` (Mračko et al.): :class:`torch.optim.Adam` with PyTorch's defaults.
    - ``"rmsprop"`` (Falconi et al., Keras 2): :class:`torch.optim.RMSprop` with ``alpha=0.9``
      (Keras ``rho``) and ``eps=1e-7`` (Keras ``epsilon``; both add it outside the square root),
      no momentum, not centred. PyTorch's own defaults are ``alpha=0.99, eps=1e-8``.
    - ``"sgd"``: :class:`torch.optim.SGD` (``momentum`` 0 unless given).

    Args:
        name: ``"adam"``, ``"rmsprop"`` or ``"sgd"`` (case-insensitive).
        params: parameters (or parameter groups) to optimise.
        lr: learning rate (> 0).
        weight_decay: L2 penalty (>= 0).
        kwargs: further optimizer arguments; they override the defaults above.

    Returns:
        The optimizer.

    Raises:
        MammoConfigError: unknown name, ``lr <= 0``, ``weight_decay < 0`` or an argument the
            optimizer does not accept.

    Example::

        opt = make_optimizer("rmsprop", net.parameters(), lr=1e-5)  # Falconi's TL stage
    """
    key = str(name).lower()
    if key not in OPTIMIZERS:
        raise MammoConfigError(f"unknown optimizer {name!r}; expected one of {list(OPTIMIZERS)}")
    if not lr > 0:
        raise MammoConfigError(f"learning rate must be > 0, got {lr}")
    if weight_decay < 0:
        raise MammoConfigError(f"weight_decay must be >= 0, got {weight_decay}")
    defaults: dict[str, Any] = {"rmsprop": {"alpha": 0.9, "eps": 1e-7}}.get(key, {})
    cls = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop, "sgd": torch.optim.SGD}[key]
    try:
        return cls(params, lr=lr, weight_decay=weight_decay, **{**defaults, **kwargs})
    except TypeError as exc:
        raise MammoConfigError(f"optimizer {key!r}: {exc}") from exc


def balanced_binary_weights(labels: Sequence[int] | np.ndarray) -> tuple[float, float]:
    """The papers' class weights: inverse class frequency normalised to sum 1.

    ``w_c = (1 / n_c) / (1 / n_0 + 1 / n_1) = n_(1-c) / N``. Mračko et al.'s CBIS-DDSM model
    (852 benign, 309 malignant training findings) used [benign 0.266, malignant 0.734]
    = [309 / 1161, 852 / 1161]; OMI-DB (457 / 1329) [0.744, 0.256]; combined [0.556, 0.444].
    The ratio equals scikit-learn's "balanced" ``N / (2 n_c)``; the scale is half of it on
    average, which adaptive optimizers (Adam, RMSProp) largely absorb.

    Args:
        labels: binary training labels (0 = negative/benign, 1 = positive/malignant).

    Returns:
        ``(w_negative, w_positive)``.

    Raises:
        MammoDataError: no labels, labels other than 0/1, or a class without any sample.

    Example::

        balanced_binary_weights([0] * 852 + [1] * 309)  # (0.266..., 0.733...)
    """
    y = np.asarray(labels, dtype=np.float64).ravel()
    if y.size == 0:
        raise MammoDataError("no training label to derive class weights from")
    if not np.isin(y, (0, 1)).all():
        raise MammoDataError(f"labels must be 0 or 1, found {sorted(set(y.tolist()))[:10]}")
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise MammoDataError(
            f"class weights are undefined: the training labels have {n_neg} negative and {n_pos} positive samples"
        )
    return n_pos / y.size, n_neg / y.size


def resolve_class_weights(
    class_weights: str | Sequence[float] | None, labels: Sequence[int] | np.ndarray
) -> tuple[float, float] | None:
    """``"balanced"`` -> :func:`balanced_binary_weights` of ``labels``; a pair is checked; None stays None.

    Raises:
        MammoConfigError: another string, not two values, or negative / non-finite / all-zero weights.
        MammoDataError: see :func:`balanced_binary_weights`.
    """
    if class_weights is None:
        return None
    if isinstance(class_weights, str):
        if class_weights != "balanced":
            raise MammoConfigError(f"class_weights must be 'balanced', a pair or None, got {class_weights!r}")
        return balanced_binary_weights(labels)
    values = [float(w) for w in class_weights]
    if len(values) != 2 or not all(math.isfinite(w) and w >= 0 for w in values) or sum(values) == 0:
        raise MammoConfigError(
            f"class_weights must be two finite non-negative numbers (negative, positive), got {class_weights!r}"
        )
    return values[0], values[1]


class WeightedBCEWithLogits(nn.Module):
    """Binary cross-entropy on one logit, each sample weighted by the weight of its class.

    ``loss = mean_i w[y_i] * BCE(logit_i, y_i)``: the batch mean like Keras' ``class_weight``
    (not normalised by the sum of the weights).

    Args:
        class_weights: ``(w_negative, w_positive)``; None weights every sample 1.

    Raises:
        MammoConfigError: weights that are not two numbers.

    Example::

        loss = WeightedBCEWithLogits((0.266, 0.734))
        loss(torch.zeros(4, 1), torch.tensor([0, 1, 1, 0]))  # log(2) * (0.266 + 0.734) / 2
    """

    weight: torch.Tensor

    def __init__(self, class_weights: Sequence[float] | None = None) -> None:
        super().__init__()
        weights = (1.0, 1.0) if class_weights is None else tuple(float(w) for w in class_weights)
        if len(weights) != 2:
            raise MammoConfigError(f"class_weights must be (negative, positive), got {class_weights!r}")
        self.register_buffer("weight", torch.tensor(weights, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Weighted mean loss of logits ``(B, 1)`` or ``(B,)`` against 0/1 labels ``(B,)`` or ``(B, 1)``.

        Raises:
            MammoConfigError: logits with more than one column or a batch size mismatch.
            MammoDataError: labels other than 0 and 1.
        """
        if logits.ndim > 2 or (logits.ndim == 2 and logits.shape[1] != 1):
            raise MammoConfigError(
                f"binary loss expects one logit per sample, shape (B, 1) or (B,), got {tuple(logits.shape)}"
            )
        x = logits.float().reshape(-1)
        y = torch.as_tensor(labels, device=x.device).float().reshape(-1)
        if y.shape != x.shape:
            raise MammoConfigError(f"{x.numel()} logits but {y.numel()} labels")
        if ((y != 0) & (y != 1)).any():
            raise MammoDataError("labels must be 0 or 1 for the binary loss")
        per_sample = nn.functional.binary_cross_entropy_with_logits(x, y, reduction="none")
        return (per_sample * self.weight.to(x.device)[y.long()]).mean()


def _as_flat(values: Any) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.detach().float().reshape(len(values), -1)
    return torch.stack([torch.as_tensor(v).detach().float().reshape(-1) for v in values])


class BinaryScoreMetrics(Metric):
    """Ignite metric: collect logits and labels over an evaluation, report :func:`binary_metrics`.

    The result is a dict flattened into ``engine.state.metrics`` (``accuracy``, ``auc``, ``f1``,
    ``sensitivity``, ``specificity``, ``balanced_accuracy``, ``tp``, ``fp``, ``tn``, ``fn``).
    Single process: scores are not gathered across distributed ranks.

    Args:
        threshold: P(positive) >= threshold is called positive.
        output_transform: engine output -> ``(logits, labels)`` (default: MONAI's decollated
            ``pred`` and ``label``).

    Example::

        BinaryScoreMetrics().attach(evaluator, "binary")
        evaluator.run()
        evaluator.state.metrics["auc"]
    """

    def __init__(self, threshold: float = 0.5, output_transform: Callable[[Any], Any] | None = None) -> None:
        self.threshold = float(threshold)
        self._scores: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        super().__init__(
            output_transform=output_transform or from_engine(["pred", "label"]),
            skip_unrolling=True,
            metrics_result_mode="flatten",
        )

    def reset(self) -> None:
        self._scores, self._labels = [], []

    def update(self, output: Sequence[Any]) -> None:
        logits, labels = output
        self._scores.append(positive_probability(_as_flat(logits).cpu()))
        self._labels.append(_as_flat(labels).cpu().reshape(-1))

    def compute(self) -> dict[str, float]:
        if not self._scores:
            raise MammoDataError("the evaluation saw no sample")
        return binary_metrics(
            torch.cat(self._labels).numpy(), torch.cat(self._scores).numpy(), self.threshold
        )


def make_binary_evaluator(
    network: nn.Module,
    loader: Iterable[Any],
    device: torch.device | str = "cpu",
    threshold: float = 0.5,
    amp: bool = False,
    handlers: Sequence[Any] | None = None,
) -> SupervisedEvaluator:
    """A MONAI ``SupervisedEvaluator`` with :class:`BinaryScoreMetrics` attached (no key metric).

    Args:
        network: classifier returning logits ``(B, 1)`` (or ``(B, 2)``).
        loader: batches with ``image`` and ``label``.
        device: where to run.
        threshold: decision threshold of the metrics.
        amp: autocast (CUDA only).
        handlers: further evaluation handlers.

    Returns:
        The evaluator; after ``run()`` its ``state.metrics`` hold the :func:`binary_metrics` keys.
    """
    evaluator = SupervisedEvaluator(
        device=torch.device(device),
        val_data_loader=loader,
        network=network,
        amp=amp and torch.device(device).type == "cuda",
        val_handlers=handlers,
    )
    BinaryScoreMetrics(threshold).attach(evaluator, "binary")
    return evaluator


class EpochStatistics:
    """After every training epoch: evaluate, compute beta and the 10 % rule, keep a history, log to MLflow.

    Runs ``train_evaluator`` (the training set through the *evaluation* transform, i.e. without
    augmentation, as Falconi et al.'s train accuracy) and ``val_evaluator``, both carrying
    :class:`BinaryScoreMetrics` (see :func:`make_binary_evaluator`); do not also attach a
    ``ValidationHandler`` for them. The epoch record holds the mean training loss,
    ``train_<metric>`` and ``val_<metric>`` for every :func:`binary_metrics` key,
    ``overfitting_ratio`` (beta = train_accuracy / val_accuracy; NaN when val_accuracy is 0)
    and ``overfit`` (1.0 when they differ by more than ``max_gap``, Falconi's rejection rule).
    :data:`LOGGED_METRICS` go to MLflow with step = epoch.

    Attach it before :class:`EarlyStopOnMetric`, :class:`BestCheckpoint` and
    :class:`EpochCheckpoint` (they read what it computed).

    Args:
        train_evaluator: evaluator over the non-augmented training set.
        val_evaluator: evaluator over the validation set.
        tracker: MLflow tracker, or None.
        stage: MLflow stage run to log to (None: the parent run).
        max_gap: largest accepted |train_accuracy - val_accuracy| (0.10 in the paper).

    Example::

        stats = EpochStatistics(make_binary_evaluator(net, train_eval_loader),
                                make_binary_evaluator(net, val_loader), tracker, "vgg16-TL")
        stats.attach(trainer)
        trainer.run()
        stats.history[-1]["overfitting_ratio"]
    """

    def __init__(
        self,
        train_evaluator: Evaluator,
        val_evaluator: Evaluator,
        tracker: MLflowTracker | None = None,
        stage: str | None = None,
        max_gap: float = 0.10,
    ) -> None:
        if not 0 <= max_gap <= 1:
            raise MammoConfigError(f"max_gap must be in [0, 1], got {max_gap}")
        self.train_evaluator = train_evaluator
        self.val_evaluator = val_evaluator
        self.tracker = tracker
        self.stage = stage
        self.max_gap = max_gap
        self.history: list[dict[str, float]] = []
        self._losses: list[float] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _reset(self, engine: Engine) -> None:
        self._losses = []

    def _collect(self, engine: Engine) -> None:
        loss = output_loss(engine.state.output)
        if loss is not None:
            self._losses.append(loss)

    @property
    def latest(self) -> dict[str, float]:
        """The last epoch's record.

        Raises:
            MammoConfigError: no epoch completed yet.
        """
        if not self.history:
            raise MammoConfigError("no epoch statistics yet")
        return self.history[-1]

    def __call__(self, engine: Engine) -> None:
        epoch = int(engine.state.epoch)
        self.train_evaluator.run(epoch)
        self.val_evaluator.run(epoch)
        record: dict[str, float] = {
            "epoch": float(epoch),
            "train_loss": float(np.mean(self._losses)) if self._losses else float("nan"),
        }
        for prefix, evaluator in (("train_", self.train_evaluator), ("val_", self.val_evaluator)):
            metrics = evaluator.state.metrics
            record.update({f"{prefix}{k}": float(v) for k, v in metrics.items() if np.ndim(v) == 0})
        train_acc, val_acc = record["train_accuracy"], record["val_accuracy"]
        record["overfitting_ratio"] = overfitting_ratio(train_acc, val_acc) if val_acc > 0 else float("nan")
        record["overfit"] = float(is_overfit(train_acc, val_acc, self.max_gap))
        self.history.append(record)
        if self.tracker is not None:
            self.tracker.log_metrics({k: record[k] for k in LOGGED_METRICS}, step=epoch, stage=self.stage)
        logger.info(
            "%sepoch %d: train acc %.4f, val acc %.4f, val AUC %.4f, beta %.3f%s",
            f"[{self.stage}] " if self.stage else "",
            epoch,
            train_acc,
            val_acc,
            record["val_auc"],
            record["overfitting_ratio"],
            " (overfit: |train - val| > %.0f%%)" % (100 * self.max_gap) if record["overfit"] else "",
        )

    def state_dict(self) -> dict[str, Any]:
        return {"history": [dict(r) for r in self.history]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.history = [dict(r) for r in state.get("history", [])]


def _unwrap(network: nn.Module) -> nn.Module:
    return getattr(network, "module", network)


class EpochCheckpoint:
    """Save the network's weights every ``every`` epochs as ``<save_dir>/model_epoch_<n>.pt`` (atomically).

    The file holds ``{"network": state_dict}`` (readable by
    :func:`~monai_mammo.engines.workflow.load_checkpoint`), so any epoch can be evaluated
    later (Mračko et al. report each validation set at its own best epoch).

    Args:
        save_dir: destination folder.
        network: the trained model.
        every: save every this many epochs (>= 1).

    Example::

        EpochCheckpoint("models/cbis", net).attach(trainer)  # models/cbis/model_epoch_1.pt, ...
    """

    def __init__(self, save_dir: str | os.PathLike, network: nn.Module, every: int = 1) -> None:
        if every < 1:
            raise MammoConfigError(f"every must be >= 1, got {every}")
        self.save_dir = Path(save_dir)
        self.network = network
        self.every = every
        self.saved: list[Path] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.every), self)

    def path(self, epoch: int) -> Path:
        """The file of ``epoch``."""
        return self.save_dir / f"model_epoch_{epoch}.pt"

    def __call__(self, engine: Engine) -> None:
        self.saved.append(
            atomic_save({"network": _unwrap(self.network).state_dict()}, self.path(engine.state.epoch))
        )


class BestCheckpoint:
    """Keep the weights of the epoch with the highest ``monitor`` value of an :class:`EpochStatistics`.

    Strictly higher values replace the file (ties keep the earlier epoch); NaN never counts.

    Args:
        path: checkpoint file (``{"network": state_dict}``).
        network: the trained model.
        statistics: the :class:`EpochStatistics` attached before this handler.
        monitor: a key of its records, higher is better (e.g. ``"val_accuracy"``).

    Example::

        best = BestCheckpoint("models/model.pt", net, stats, "val_auc")
        best.attach(trainer)
    """

    def __init__(
        self, path: str | os.PathLike, network: nn.Module, statistics: EpochStatistics, monitor: str
    ) -> None:
        self.path = Path(path)
        self.network = network
        self.statistics = statistics
        self.monitor = monitor
        self.best: float | None = None
        self.best_epoch = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        record = self.statistics.latest
        if self.monitor not in record:
            raise MammoConfigError(
                f"monitor {self.monitor!r} is not an epoch statistic; have {sorted(record)}"
            )
        value = record[self.monitor]
        if math.isfinite(value) and (self.best is None or value > self.best):
            self.best, self.best_epoch = value, int(record["epoch"])
            atomic_save({"network": _unwrap(self.network).state_dict()}, self.path)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best = state.get("best")
        self.best_epoch = int(state.get("best_epoch", 0))


@dataclass
class FitResult:
    """Outcome of :func:`fit_classifier`.

    Attributes:
        best_checkpoint: the best epoch's weights (None when no ``checkpoint_dir`` was given;
            the network then holds them in memory).
        history: one :class:`EpochStatistics` record per epoch.
        best_epoch: the epoch with the highest validation ``monitor`` (1-based; 0 if none was finite).
        final_metrics: the record of ``best_epoch`` (the model this result stands for); the
            last epoch's record when no epoch had a finite ``monitor`` value.
        epoch_checkpoints: the per-epoch files (``save_every_epoch``).
    """

    best_checkpoint: Path | None
    history: list[dict[str, float]]
    best_epoch: int
    final_metrics: dict[str, float]
    epoch_checkpoints: list[Path] = field(default_factory=list)


def _item_labels(items: Sequence[Mapping[str, Any]], name: str) -> np.ndarray:
    if not items:
        raise MammoDataError(f"the {name} set is empty")
    labels = []
    for index, item in enumerate(items):
        source = (
            item.get("image") if isinstance(item.get("image"), (str, os.PathLike)) else f"{name} item {index}"
        )
        if "label" not in item:
            raise MammoDataError("item has no 'label'", source)
        value = float(np.asarray(item["label"]).reshape(-1)[0])
        if value not in (0.0, 1.0):
            raise MammoDataError(f"label must be 0 or 1, got {item['label']!r}", source)
        labels.append(value)
    return np.asarray(labels)


def _default_transform() -> Callable[[Any], Any]:
    return EnsureTyped(keys="image", dtype=torch.float32, track_meta=False)


def _loader(
    items: Sequence[Mapping[str, Any]],
    transform: Callable[[Any], Any] | None,
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    on_bad_sample: str | None = None,
) -> DataLoader:
    dataset: Any = Dataset(data=list(items), transform=transform or _default_transform())
    extra: dict[str, Any] = {}
    if on_bad_sample is not None:  # training and validation: bad samples skipped and counted
        dataset, extra["collate_fn"] = SkipBadSamples(dataset, on_bad_sample), SkipAwareCollate()
    # a shuffled last batch of one sample would break batch norm in training mode: drop it
    # (one sample per epoch, a different one each epoch); evaluation keeps every sample
    drop_last = shuffle and len(items) % batch_size == 1 and len(items) > 1
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers, drop_last=drop_last, **extra
    )


def fit_classifier(
    network: nn.Module,
    train_items: Sequence[Mapping[str, Any]],
    val_items: Sequence[Mapping[str, Any]],
    *,
    epochs: int,
    lr: float,
    transform_train: Callable[[Any], Any] | None = None,
    transform_eval: Callable[[Any], Any] | None = None,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    optimizer_kwargs: Mapping[str, Any] | None = None,
    batch_size: int = 8,
    class_weights: str | Sequence[float] | None = "balanced",
    early_stop_patience: int | None = None,
    monitor: str = "accuracy",
    threshold: float = 0.5,
    max_gap: float = 0.10,
    trainable: Callable[[nn.Module], Any] | None = None,
    device: torch.device | str = "cpu",
    tracker: MLflowTracker | None = None,
    stage: str | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    save_every_epoch: bool = False,
    restore_best: bool = True,
    num_workers: int = 0,
    seed: int = 0,
    amp: bool = False,
    nonfinite_loss: str = "stop",
    on_bad_sample: str = "skip",
    max_skip_fraction: float = 0.05,
) -> FitResult:
    """Train a one-logit binary classifier with MONAI's ``SupervisedTrainer``, evaluating every epoch.

    Every epoch :class:`EpochStatistics` evaluates the non-augmented training set and the
    validation set (logged to MLflow), :class:`BestCheckpoint` keeps the epoch with the highest
    validation ``monitor``, optionally :class:`EpochCheckpoint` saves every epoch and
    :class:`~monai_mammo.engines.handlers.EarlyStopOnMetric` stops after
    ``early_stop_patience`` epochs without improvement of ``monitor``.

    With a ``tracker`` and a ``stage`` that is not open yet, the stage run is opened with the
    fit's parameters and closed at the end (FAILED on an exception); a stage already opened
    by the caller is only logged to. The history is logged as ``<stage>/history.json``.

    Args:
        network: classifier returning logits ``(B, 1)`` (e.g. ``ZooClassifier``).
        train_items: dicts with ``image`` (array/tensor, or a path the transforms load) and ``label`` 0/1.
        val_items: the validation items.
        epochs: maximum number of epochs (40 in Mračko et al.).
        lr: learning rate.
        transform_train: training transform (with augmentation); None converts ``image`` to a float tensor.
        transform_eval: transform of the training-set evaluation and of validation (no augmentation).
        optimizer: ``"adam"``, ``"rmsprop"`` or ``"sgd"`` (:func:`make_optimizer`).
        weight_decay: L2 penalty of the optimizer.
        optimizer_kwargs: further optimizer arguments.
        batch_size: mini-batch size (8 in Mračko et al.).
        class_weights: ``"balanced"`` (:func:`balanced_binary_weights` of the training labels),
            ``(w_negative, w_positive)``, or None (unweighted).
        early_stop_patience: epochs without improvement before stopping; None disables it.
        monitor: validation metric selecting the best epoch and driving early stopping, one of
            :data:`VAL_METRICS` (higher is better).
        threshold: P(positive) >= threshold is called positive in the metrics.
        max_gap: the overfitting rule's largest accepted train/validation accuracy gap.
        trainable: called with the network before the optimizer is built, to freeze layers
            (e.g. ``lambda net: net.freeze_before(10)``); only parameters that then require a
            gradient are optimised.
        device: where to train.
        tracker: MLflow tracker, or None.
        stage: MLflow stage run name (also the log label); None logs to the parent run.
        checkpoint_dir: where ``model.pt`` (best epoch) and the per-epoch files go; None keeps
            the best weights in a temporary folder only.
        save_every_epoch: also write ``model_epoch_<n>.pt`` every epoch (needs ``checkpoint_dir``).
        restore_best: load the best epoch's weights into ``network`` before returning.
        num_workers: data loader workers.
        seed: seeds MONAI, torch, numpy and the training transform's random state.
        amp: mixed precision (CUDA only).
        nonfinite_loss: ``"stop"`` or ``"skip"`` on a NaN/inf loss (:class:`NonFiniteLossGuard`).
        on_bad_sample: a training/validation sample whose loading raises a project error:
            ``"skip"`` (replaced by the next one, counted per epoch as ``skipped_samples``,
            ``train_eval_skipped_samples`` and ``val_skipped_samples``, listed in an artifact)
            or ``"raise"`` (:class:`~monai_mammo.data.skipping.SkipBadSamples`).
        max_skip_fraction: stop with ``MammoTrainingError`` when more of an epoch is skipped
            (:class:`~monai_mammo.engines.skipping.SkippedSamplesHandler`).

    Returns:
        The :class:`FitResult`.

    Raises:
        MammoConfigError: invalid settings (epochs, monitor, optimizer, class weights, no
            trainable parameter, ``save_every_epoch`` without ``checkpoint_dir``).
        MammoDataError: an empty split or a label other than 0/1 (naming the item).

    Example::

        result = fit_classifier(net, train, val, epochs=40, lr=1e-5, transform_train=aug,
                                transform_eval=plain, tracker=tracker, stage="cbis",
                                checkpoint_dir="models/cbis", save_every_epoch=True)
        result.final_metrics["val_accuracy"], result.final_metrics["overfitting_ratio"]
    """
    if epochs < 1:
        raise MammoConfigError(f"epochs must be >= 1, got {epochs}")
    if batch_size < 1:
        raise MammoConfigError(f"batch_size must be >= 1, got {batch_size}")
    if monitor not in VAL_METRICS:
        raise MammoConfigError(f"monitor must be one of {list(VAL_METRICS)}, got {monitor!r}")
    if save_every_epoch and checkpoint_dir is None:
        raise MammoConfigError("save_every_epoch needs a checkpoint_dir")
    train_labels = _item_labels(train_items, "training")
    _item_labels(val_items, "validation")
    weights = resolve_class_weights(class_weights, train_labels)
    set_determinism(seed=seed)
    if transform_train is not None and hasattr(transform_train, "set_random_state"):
        transform_train.set_random_state(seed=seed)
    if trainable is not None:
        trainable(network)
    params = [p for p in network.parameters() if p.requires_grad]
    if not params:
        raise MammoConfigError(f"{type(network).__name__} has no trainable parameter")
    torch_device = torch.device(device)
    use_amp = amp and torch_device.type == "cuda"
    network.to(torch_device)
    opt = make_optimizer(optimizer, params, lr, weight_decay, **dict(optimizer_kwargs or {}))
    loss = WeightedBCEWithLogits(weights).to(torch_device)

    def skips(name: str) -> list[SkippedSamplesHandler]:
        return [SkippedSamplesHandler(tracker, stage, name, max_skip_fraction, checkpoint_dir)]

    train_loader = _loader(train_items, transform_train, batch_size, True, num_workers, on_bad_sample)
    train_evaluator = make_binary_evaluator(
        network,
        _loader(train_items, transform_eval, batch_size, False, num_workers, on_bad_sample),
        torch_device,
        threshold,
        use_amp,
        handlers=skips("train_eval_skipped_samples"),
    )
    val_evaluator = make_binary_evaluator(
        network,
        _loader(val_items, transform_eval, batch_size, False, num_workers, on_bad_sample),
        torch_device,
        threshold,
        use_amp,
        handlers=skips("val_skipped_samples"),
    )
    statistics = EpochStatistics(train_evaluator, val_evaluator, tracker, stage, max_gap)

    # the stage run this call opens (and closes); None when absent or opened by the caller
    own_stage = (
        stage if tracker is not None and stage is not None and stage not in tracker.stage_runs else None
    )
    if tracker is not None and own_stage is not None:
        tracker.start_stage(
            own_stage,
            params={
                "optimizer": optimizer,
                "lr": lr,
                "weight_decay": weight_decay,
                "optimizer_kwargs": dict(optimizer_kwargs or {}),
                "epochs": epochs,
                "batch_size": batch_size,
                "class_weights": "none" if weights is None else [round(w, 6) for w in weights],
                "early_stop_patience": early_stop_patience,
                "monitor": f"val_{monitor}",
                "threshold": threshold,
                "max_gap": max_gap,
                "n_train": len(train_items),
                "n_train_positive": int(train_labels.sum()),
                "n_val": len(val_items),
                "n_trainable_parameters": sum(p.numel() for p in params),
                "seed": seed,
            },
        )
    with tempfile.TemporaryDirectory(prefix="fit_classifier_") as scratch:
        folder = Path(checkpoint_dir) if checkpoint_dir is not None else Path(scratch)
        best = BestCheckpoint(folder / "model.pt", network, statistics, f"val_{monitor}")
        handlers: list[Any] = [statistics, best]
        per_epoch = EpochCheckpoint(folder, network) if save_every_epoch else None
        if per_epoch is not None:
            handlers.append(per_epoch)
        if early_stop_patience is not None:
            handlers.append(EarlyStopOnMetric(val_evaluator, monitor, early_stop_patience))
        handlers.append(ProgressLogger(stage or "fit", evaluator=val_evaluator))
        handlers.append(NonFiniteLossGuard(nonfinite_loss))
        handlers.extend(skips("skipped_samples"))
        trainer = SupervisedTrainer(
            device=torch_device,
            max_epochs=epochs,
            train_data_loader=train_loader,
            network=network,
            optimizer=opt,
            loss_function=loss,
            train_handlers=handlers,
            amp=use_amp,
        )
        try:
            trainer.run()
        except BaseException:
            if tracker is not None and own_stage is not None:
                tracker.end_stage(own_stage, status="FAILED")
            raise
        if restore_best and best.best is not None:
            load_checkpoint(network, best.path)
    best_record = next(
        (r for r in statistics.history if int(r["epoch"]) == best.best_epoch), statistics.history[-1]
    )
    result = FitResult(
        best_checkpoint=best.path if checkpoint_dir is not None and best.best is not None else None,
        history=statistics.history,
        best_epoch=best.best_epoch,
        final_metrics=dict(best_record),
        epoch_checkpoints=list(per_epoch.saved) if per_epoch is not None else [],
    )
    if tracker is not None:
        summary = {"best_epoch": float(best.best_epoch)}
        summary.update({f"best_{k}": v for k, v in best_record.items() if k in LOGGED_METRICS})
        tracker.log_metrics(summary, stage=stage)
        tracker.log_dict({"history": statistics.history}, f"{stage or 'fit'}/history.json", stage=stage)
        if own_stage is not None:
            tracker.end_stage(own_stage)
    return result


@torch.no_grad()
def predict_binary(
    network: nn.Module,
    data: Sequence[Mapping[str, Any]] | Iterable[Mapping[str, Any]],
    transform: Callable[[Any], Any] | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 8,
    amp: bool = False,
    flips: Sequence[tuple[str, tuple[int, ...]]] | None = None,
) -> np.ndarray:
    """P(positive) of every sample, in order; optionally under flip test-time augmentation.

    Args:
        network: classifier returning logits ``(B, 1)`` (or ``(B, 2)``).
        data: a list/tuple of item dicts (run through ``transform``), or any other iterable
            of batches (e.g. a DataLoader) with an ``image`` key.
        transform: item transform for a list of items (None: ``image`` to a float tensor).
        device: where to run.
        batch_size: batch size for a list of items.
        amp: autocast (CUDA only).
        flips: None scores the input as it is; else one column per ``(name, dims)`` flip
            (:func:`~monai_mammo.engines.evaluation.flip_tta_scores`, e.g.
            :data:`~monai_mammo.engines.evaluation.HFLIP`).

    Returns:
        ``(N,)`` float64 probabilities, or ``(N, len(flips))`` with ``flips``.

    Example::

        scores = predict_binary(net, val_items, transform=plain)
        binary_metrics([it["label"] for it in val_items], scores)
        tta = predict_binary(net, val_items, transform=plain, flips=HFLIP)  # (N, 2)
    """
    batches = _loader(data, transform, batch_size, False, 0) if isinstance(data, (list, tuple)) else data
    torch_device = torch.device(device)
    was_training = network.training
    network.eval()
    scores: list[np.ndarray] = []
    try:
        for batch in batches:
            images = torch.as_tensor(batch["image"]).to(torch_device)
            with torch.autocast(device_type=torch_device.type, enabled=amp and torch_device.type == "cuda"):
                batch_scores = (
                    positive_probability(network(images))
                    if flips is None
                    else flip_tta_scores(network, images, flips=flips)
                )
            scores.append(batch_scores.cpu().numpy().astype(np.float64))
    finally:
        network.train(was_training)
    if scores:
        return np.concatenate(scores)
    return np.zeros(0) if flips is None else np.zeros((0, len(flips)))


def _freeze_before(model: Any, gamma: int) -> Callable[[nn.Module], Any]:
    return lambda _network: model.freeze_before(gamma)


def transfer_then_finetune(
    network: nn.Module,
    train_items: Sequence[Mapping[str, Any]],
    val_items: Sequence[Mapping[str, Any]],
    *,
    gamma: int,
    tl_epochs: int,
    ft_epochs: int,
    tl_lr: float = 1e-5,
    ft_lr: float = 2e-7,
    optimizer: str = "rmsprop",
    tracker: MLflowTracker | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    **fit_kwargs: Any,
) -> dict[str, FitResult]:
    """Falconi et al.'s two stages: transfer learning (head only), then fine tuning from layer gamma.

    Stage 1 trains the head only (``network.freeze_before(network.head_start)``); stage 2
    starts from stage 1's best weights and trains the layers ``>= gamma``
    (``network.freeze_before(gamma)``). Each stage is a :func:`fit_classifier` run and its own
    MLflow stage run named ``network.model_name(None)`` (``vgg16-TL``) and
    ``network.model_name(gamma)`` (``vgg16-10-FT``); each result carries beta
    (``final_metrics["overfitting_ratio"]``) and the 10 % flag (``final_metrics["overfit"]``).
    Both stages run whatever beta the first one reached: the paper fine tunes only models
    that passed the 10 % rule, a choice left to the caller.

    Args:
        network: a ``ZooClassifier`` (needs ``head_start``, ``freeze_before`` and ``model_name``).
        train_items: training items (``image``, ``label``).
        val_items: validation items.
        gamma: first trained layer index of the fine tuning (10 for VGG16-10-FT).
        tl_epochs: epochs of the transfer-learning stage.
        ft_epochs: epochs of the fine-tuning stage.
        tl_lr: transfer-learning learning rate (1e-5 in the paper).
        ft_lr: fine-tuning learning rate (2e-7 in the paper).
        optimizer: optimizer of both stages (RMSProp in the paper).
        tracker: MLflow tracker, or None.
        checkpoint_dir: parent folder; each stage writes ``<checkpoint_dir>/<model name>/``.
        fit_kwargs: further :func:`fit_classifier` arguments (transforms, batch size, early stopping...).

    Returns:
        ``{tl_name: FitResult, ft_name: FitResult}`` in stage order.

    Raises:
        MammoConfigError: the network lacks ``head_start`` / ``freeze_before`` / ``model_name``,
            an invalid ``gamma``, or ``fit_kwargs`` setting what this function sets.

    Example::

        results = transfer_then_finetune(zoo_vgg16, train, val, gamma=10, tl_epochs=100,
                                         ft_epochs=100, tracker=tracker,
                                         transform_train=aug, transform_eval=plain)
        {name: r.final_metrics["overfitting_ratio"] for name, r in results.items()}
    """
    model: Any = _unwrap(network)  # a ZooClassifier-like model (duck-typed)
    missing = [a for a in ("head_start", "freeze_before", "model_name") if not hasattr(model, a)]
    if missing:
        raise MammoConfigError(
            f"{type(model).__name__} lacks {missing}: transfer then fine tune needs a ZooClassifier-like model"
        )
    reserved = {
        "epochs",
        "lr",
        "trainable",
        "stage",
        "tracker",
        "checkpoint_dir",
        "optimizer",
        "restore_best",
    }
    clash = sorted(reserved & set(fit_kwargs))
    if clash:
        raise MammoConfigError(f"transfer_then_finetune sets {clash} itself")
    plan = (
        (model.model_name(None), tl_epochs, tl_lr, int(model.head_start)),
        (model.model_name(gamma), ft_epochs, ft_lr, gamma),
    )
    results: dict[str, FitResult] = {}
    for name, epochs, lr, first_trained in plan:
        results[name] = fit_classifier(
            network,
            train_items,
            val_items,
            epochs=epochs,
            lr=lr,
            optimizer=optimizer,
            trainable=_freeze_before(model, first_trained),
            tracker=tracker,
            stage=name,
            checkpoint_dir=None if checkpoint_dir is None else Path(checkpoint_dir) / name,
            restore_best=True,  # fine tuning starts from the best transfer-learning epoch
            **fit_kwargs,
        )
        metrics = results[name].final_metrics
        logger.info(
            "%s: best epoch %d, val accuracy %.4f, beta %.3f (%s)",
            name,
            results[name].best_epoch,
            metrics["val_accuracy"],
            metrics["overfitting_ratio"],
            "rejected: overfit" if metrics["overfit"] else "accepted",
        )
    return results
