"""Staged fine tuning as an Ignite handler: per-stage epochs, learning rate, weight decay and trainable layers.

The paper schedules of Shen et al. are configurations of :class:`StagedFineTuning`::

    patch classifier:   [Stage(3, 1e-3, trainable="head"), Stage(10, 1e-4, trainable="top:5"),
                         Stage(37, 1e-5, trainable="all")]
    whole image:        [Stage(30, 1e-4, 1e-3, trainable="new"), Stage(20, 1e-5, 1e-2, trainable="all")]

Which parameters a ``trainable`` value selects is defined by the network:

- ``"all"``: every parameter;
- ``"head"``: the last group of ``network.layer_groups()`` (the classifier layer; groups may be
  modules or ``(name, module)`` pairs);
- ``"top:N"``: the last N groups of ``network.layer_groups()`` (ordered input -> output);
- ``"new"``: ``network.new_parameters()`` (layers added on top of a pretrained trunk).

Networks without ``layer_groups()`` use their direct children as groups.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from ignite.engine import Engine, Events
from torch import nn

from monai_mammo.exceptions import MammoConfigError

__all__ = ["Stage", "StagedFineTuning", "one_cycle_lr", "select_trainable", "total_epochs"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    """One fine-tuning stage.

    Args:
        epochs: number of epochs of the stage (> 0).
        lr: learning rate set on every optimizer parameter group.
        weight_decay: weight decay set on every parameter group.
        trainable: ``"all"``, ``"head"``, ``"top:N"`` or ``"new"`` (see the module docstring).
        name: label used in logs and MLflow (defaults to ``stage<k>``).
        schedule: ``"constant"`` (the papers) or ``"one_cycle"``: per iteration, a linear warm-up
            from ``lr / 25`` to ``lr`` over the first 30 % of the stage, then cosine annealing to
            ``lr / 1e4`` (the defaults of ``torch.optim.lr_scheduler.OneCycleLR``).
    """

    epochs: int
    lr: float
    weight_decay: float = 0.0
    trainable: str = "all"
    name: str = ""
    schedule: str = "constant"

    def __post_init__(self) -> None:
        if int(self.epochs) <= 0:
            raise MammoConfigError(f"stage epochs must be > 0, got {self.epochs}")
        if self.lr <= 0:
            raise MammoConfigError(f"stage lr must be > 0, got {self.lr}")
        if self.schedule not in ("constant", "one_cycle"):
            raise MammoConfigError(f"stage schedule must be 'constant' or 'one_cycle', got {self.schedule!r}")
        _parse_trainable(self.trainable)


def one_cycle_lr(step: int, total: int, max_lr: float, pct_start: float = 0.3) -> float:
    """Learning rate of one-cycle step ``step`` (0-based) out of ``total``.

    Example::

        one_cycle_lr(0, 100, 1e-3)  # 4e-05 (= 1e-3 / 25)
    """
    start, end = max_lr / 25.0, max_lr / 25.0 / 1e4
    warm = max(int(pct_start * total), 1)
    if step < warm:
        return start + (max_lr - start) * step / warm
    progress = min((step - warm) / max(total - warm, 1), 1.0)
    return end + (max_lr - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _parse_trainable(trainable: str) -> tuple[str, int]:
    kind, _, count = trainable.partition(":")
    if kind in ("all", "head", "new") and not count:
        return kind, 0
    if kind == "top" and count.isdigit() and int(count) > 0:
        return kind, int(count)
    raise MammoConfigError(f"trainable must be 'all', 'head', 'new' or 'top:N' (N > 0), got {trainable!r}")


def _as_stage(stage: Stage | Mapping[str, Any], index: int) -> Stage:
    if isinstance(stage, Stage):
        result = stage
    else:
        try:
            result = Stage(**dict(stage))
        except TypeError as exc:
            raise MammoConfigError(f"stage {index}: {exc}") from exc
    return result if result.name else Stage(**{**asdict(result), "name": f"stage{index + 1}"})


def total_epochs(stages: Sequence[Stage | Mapping[str, Any]]) -> int:
    """Sum of the stages' epochs (use it as the trainer's ``max_epochs``)."""
    return sum(int(_as_stage(s, i).epochs) for i, s in enumerate(stages))


def _layer_groups(network: nn.Module) -> list[nn.Module]:
    layer_groups = getattr(network, "layer_groups", None)
    groups = list(layer_groups() if callable(layer_groups) else network.children())
    # networks may name their groups: [(name, module), ...]
    groups = [g[1] if isinstance(g, tuple) else g for g in groups]
    if not groups:
        raise MammoConfigError(f"{type(network).__name__} has no layer groups to fine-tune")
    return groups


def select_trainable(network: nn.Module, trainable: str) -> list[nn.Parameter]:
    """The parameters a ``trainable`` value selects on ``network``.

    Args:
        network: the model (unwrapped from DistributedDataParallel by the caller or here).
        trainable: ``"all"``, ``"head"``, ``"top:N"`` or ``"new"``.

    Returns:
        The selected parameters.

    Raises:
        MammoConfigError: unknown value, N larger than the number of groups, or ``"new"`` on a
            network without ``new_parameters()``.
    """
    network = getattr(network, "module", network)
    kind, count = _parse_trainable(trainable)
    if kind == "all":
        return list(network.parameters())
    if kind == "new":
        if not hasattr(network, "new_parameters"):
            raise MammoConfigError(
                f"{type(network).__name__} has no new_parameters(): cannot train 'new' only"
            )
        return list(network.new_parameters())  # type: ignore[operator]
    groups = _layer_groups(network)
    count = 1 if kind == "head" else count
    if count > len(groups):
        raise MammoConfigError(
            f"top:{count} asked but {type(network).__name__} has {len(groups)} layer groups"
        )
    return [p for group in groups[-count:] for p in group.parameters()]


class StagedFineTuning:
    """Switch learning rate, weight decay and trainable layers at stage boundaries.

    The current stage follows from the trainer's epoch, so resuming from a checkpoint (which
    restores the epoch and the optimizer state) continues in the right stage. The handler
    also has ``state_dict``/``load_state_dict`` so that ``CheckpointSaver`` can store it.

    Args:
        network: the model being trained.
        optimizer: its optimizer, created over all parameters.
        stages: the stages in order (:class:`Stage` or dicts with its fields).
        frozen_bn_eval: keep batch-norm layers whose parameters are all frozen in eval mode while
            training (running statistics fixed, as with Keras >= 2.1.3 / TF2 frozen layers). Off by
            default: the paper's Keras 2.0 kept updating them.

    Example::

        handler = StagedFineTuning(net, opt, [{"epochs": 1, "lr": 1e-3, "trainable": "head"},
                                              {"epochs": 2, "lr": 1e-4, "trainable": "all"}])
        handler.attach(trainer)   # trainer.max_epochs should be handler.total_epochs
    """

    def __init__(
        self,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        stages: Sequence[Stage | Mapping[str, Any]],
        frozen_bn_eval: bool = False,
    ) -> None:
        if not stages:
            raise MammoConfigError("StagedFineTuning needs at least one stage")
        self.network = network
        self.optimizer = optimizer
        self.stages = [_as_stage(s, i) for i, s in enumerate(stages)]
        self.current: int | None = None
        self._frozen_bn: list[nn.Module] = []
        if frozen_bn_eval:
            network.register_forward_pre_hook(self._freeze_bn_statistics)

    def _freeze_bn_statistics(self, module: nn.Module, args: Any) -> None:
        """Forward pre-hook: trainers call ``network.train()`` every iteration; undo it for frozen BN."""
        if module.training:
            for bn in self._frozen_bn:
                bn.eval()

    @property
    def total_epochs(self) -> int:
        """Epochs of all stages together."""
        return sum(s.epochs for s in self.stages)

    def stage_index(self, epoch: int) -> int:
        """Index of the stage that contains 1-based ``epoch`` (the last stage beyond the schedule)."""
        end = 0
        for index, stage in enumerate(self.stages):
            end += stage.epochs
            if epoch <= end:
                return index
        return len(self.stages) - 1

    def attach(self, engine: Engine) -> None:
        """Apply the stage of each epoch when it starts (and the stage's lr schedule every iteration)."""
        if not engine.has_event_handler(self, Events.EPOCH_STARTED):
            engine.add_event_handler(Events.EPOCH_STARTED, self)
            engine.add_event_handler(Events.ITERATION_STARTED, self._schedule)

    def _schedule(self, engine: Engine) -> None:
        stage = self.stages[
            self.current if self.current is not None else self.stage_index(engine.state.epoch)
        ]
        if stage.schedule != "one_cycle":
            return
        first_epoch = sum(s.epochs for s in self.stages[: self.stages.index(stage)])
        per_epoch = int(engine.state.epoch_length or 1)
        step = engine.state.iteration - 1 - first_epoch * per_epoch
        lr = one_cycle_lr(step, stage.epochs * per_epoch, stage.lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def __call__(self, engine: Engine) -> None:
        index = self.stage_index(engine.state.epoch)
        if index != self.current:
            self.apply(index)
            engine.state.stage = self.stages[index].name  # type: ignore[attr-defined]

    def apply(self, index: int) -> None:
        """Set trainable parameters, learning rate and weight decay of stage ``index``."""
        stage = self.stages[index]
        trainable = {id(p) for p in select_trainable(self.network, stage.trainable)}
        params: Iterable[nn.Parameter] = getattr(self.network, "module", self.network).parameters()
        n_trainable = 0
        for p in params:
            train = id(p) in trainable
            p.requires_grad_(train)
            if train:
                n_trainable += p.numel()
            else:
                p.grad = None  # a stale (even zeroed) grad would let Adam's momentum move a frozen weight
        self._frozen_bn = [
            m
            for m in getattr(self.network, "module", self.network).modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and not any(p.requires_grad for p in m.parameters())
        ]
        for group in self.optimizer.param_groups:
            group["lr"] = stage.lr
            group["weight_decay"] = stage.weight_decay
        self.current = index
        logger.info(
            "%s: %d epochs, lr %g, weight decay %g, trainable %s (%d parameters)",
            stage.name,
            stage.epochs,
            stage.lr,
            stage.weight_decay,
            stage.trainable,
            n_trainable,
        )

    def state_dict(self) -> dict[str, Any]:
        """The current stage index (for checkpoints)."""
        return {"current": self.current}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the stage index; parameters are re-applied at the next epoch start."""
        self.current = None if state.get("current") is None else int(state["current"])
        if self.current is not None:
            self.apply(self.current)
