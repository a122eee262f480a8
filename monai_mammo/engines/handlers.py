"""Ignite handlers for long runs: atomic resumable checkpoints and early stopping on a validation metric.

Both receive the trainer when attached, so bundle configs need no circular reference
(``trainer -> handlers -> trainer``).
"""

from __future__ import annotations

import logging
import os
import pickle
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from monai_mammo.exceptions import MammoConfigError, MammoDataError, MammoTrainingError

__all__ = [
    "TrainingCheckpoint",
    "EarlyStopOnMetric",
    "NonFiniteLossGuard",
    "ProgressLogger",
    "atomic_save",
    "output_loss",
    "previous_checkpoint",
    "resume_training",
    "run_trainer",
]

logger = logging.getLogger(__name__)


def output_loss(output: Any) -> float | None:
    """The ``loss`` of a MONAI trainer's iteration output (a dict, or a list of dicts), else None."""
    if isinstance(output, list) and output and isinstance(output[0], Mapping):
        output = output[0]
    if isinstance(output, Mapping) and "loss" in output:
        return float(output["loss"])
    return None


def atomic_save(obj: Any, path: str | os.PathLike, keep_previous: bool = False) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename: a crash never leaves a partial file.

    Args:
        obj: what to save.
        path: the target file.
        keep_previous: first rename an existing ``path`` to ``<path>.prev`` (replacing an older
            one), so the last good file survives even if the new one later proves unreadable.
            Both renames are atomic; a crash between them leaves only ``.prev``, which
            :func:`resume_training` falls back to.

    Returns:
        ``path``.

    Example::

        atomic_save({"network": net.state_dict()}, "models/last.pt", keep_previous=True)
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        torch.save(obj, tmp)
        if keep_previous and target.exists():
            os.replace(target, previous_checkpoint(target))
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def previous_checkpoint(path: str | os.PathLike) -> Path:
    """The file a :class:`TrainingCheckpoint` keeps its previous epoch in: ``<path>.prev``."""
    path = Path(path)
    return path.with_name(f"{path.name}.prev")


def _rng_state() -> dict[str, Any]:
    """The global RNG states in a ``torch.load(weights_only=True)``-loadable form.

    numpy's ``MT19937`` state (a tuple holding a ``uint32`` array) is stored as a dict with the
    key as an int64 tensor, and python's ``random`` state as nested tuples of ints: no numpy
    global needs allowlisting, so loading never unpickles anything but tensors and plain values.
    """
    name, key, pos, has_gauss, cached_gaussian = np.random.get_state()  # noqa: NPY002 - global state
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": str(name),
            "key": torch.from_numpy(np.asarray(key, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": random.getstate(),
    }


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8))
    numpy_state = state["numpy"]
    if isinstance(numpy_state, Mapping):
        numpy_state = (
            numpy_state["bit_generator"],
            np.asarray(numpy_state["key"], dtype=np.uint32),
            int(numpy_state["pos"]),
            int(numpy_state["has_gauss"]),
            float(numpy_state["cached_gaussian"]),
        )
    np.random.set_state(tuple(numpy_state))  # noqa: NPY002
    random.setstate(_as_tuple(state["python"]))


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


class TrainingCheckpoint:
    """Save everything needed to resume after every epoch, atomically, as ``<save_dir>/<filename>``.

    The checkpoint holds the state dicts of the given objects (network, optimizer, staged
    fine-tuning, early stopping...), of the trainer (epoch, iteration) and the global RNG states,
    all as tensors and plain python values so that :func:`resume_training` loads it with
    ``weights_only=True``. The previous epoch's file is kept as ``<filename>.prev``.

    Args:
        save_dir: folder of the checkpoint.
        objects: name -> object with ``state_dict()``/``load_state_dict()``.
        filename: checkpoint file name.

    Raises:
        MammoConfigError: ``objects`` contains ``"trainer"``.

    Example::

        TrainingCheckpoint("models/whole_image", {"network": net, "optimizer": opt}).attach(trainer)
        # later, before trainer.run():
        resume_training("models/whole_image/last.pt", trainer, {"network": net, "optimizer": opt})
    """

    def __init__(
        self, save_dir: str | os.PathLike, objects: Mapping[str, Any], filename: str = "last.pt"
    ) -> None:
        if "trainer" in objects:
            raise MammoConfigError("'trainer' is added when the handler is attached; do not pass it")
        self.path = Path(save_dir) / filename
        self.objects = dict(objects)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)

    def save(self, engine: Engine) -> None:
        """Write the checkpoint of the current epoch (rank 0 only in distributed runs)."""
        if (
            torch.distributed.is_available()
            and torch.distributed.is_initialized()
            and torch.distributed.get_rank()
        ):
            return
        content = {name: obj.state_dict() for name, obj in self.objects.items()}
        content["trainer"] = engine.state_dict()
        content["rng"] = _rng_state()
        atomic_save(content, self.path, keep_previous=True)


class _CheckpointRefused(MammoDataError):
    """A checkpoint that ``weights_only`` loading refused (never falls back to ``.prev``)."""


def _load_checkpoint_content(path: Path) -> Any:
    """``torch.load(weights_only=True)``; a refused or unreadable file raises MammoDataError naming it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower():
            raise _CheckpointRefused(
                "checkpoint refused: it holds objects other than tensors and plain values, which "
                "weights_only loading does not execute (tampered, not written by TrainingCheckpoint, or written "
                "by a monai_mammo version that pickled numpy RNG states: restart that stage)",
                path,
            ) from exc
        raise MammoDataError(f"unreadable (truncated or corrupt) checkpoint: {exc}", path) from exc
    except Exception as exc:  # noqa: BLE001 - torch raises many types for corrupt files
        raise MammoDataError(
            f"unreadable (truncated or corrupt) checkpoint: {type(exc).__name__}: {exc}", path
        ) from exc


def resume_training(
    checkpoint: str | os.PathLike, trainer: Engine, objects: Mapping[str, Any], missing_ok: bool = True
) -> bool:
    """Restore a :class:`TrainingCheckpoint` before ``trainer.run()``.

    The file is loaded with ``torch.load(weights_only=True)``: a checkpoint holding anything
    but tensors and plain python values (e.g. a crafted pickle) is refused, never executed.
    When ``checkpoint`` is missing or truncated/corrupt but ``<checkpoint>.prev`` (the previous
    epoch, kept by :class:`TrainingCheckpoint`) is readable, training resumes from ``.prev``
    with a logged warning (one epoch is redone). A refused file never falls back.

    Args:
        checkpoint: the checkpoint file.
        trainer: the trainer (its epoch/iteration are restored so ``run()`` continues).
        objects: the same objects given to :class:`TrainingCheckpoint`.
        missing_ok: return False when neither the file nor its ``.prev`` exists (fresh start)
            instead of raising.

    Returns:
        True when the run had already completed every epoch (nothing left to run).

    Raises:
        MammoDataError: a missing (with ``missing_ok=False``), truncated/corrupt (with no
            readable ``.prev``), refused or ill-fitting checkpoint, naming the file.

    Example::

        if not resume_training("models/whole_image/last.pt", trainer, objects):
            trainer.run()
    """
    path = Path(checkpoint)
    previous = previous_checkpoint(path)
    if not path.is_file() and not previous.is_file():
        if missing_ok:
            return False
        raise MammoDataError("checkpoint to resume from not found", path)
    try:
        if not path.is_file():
            raise MammoDataError("checkpoint not found", path)
        content = _load_checkpoint_content(path)
    except MammoDataError as exc:
        if not previous.is_file() or isinstance(exc, _CheckpointRefused):
            raise
        logger.warning("%s; resuming from the previous epoch's checkpoint %s", exc, previous)
        path = previous
        content = _load_checkpoint_content(path)
    try:
        for name, obj in objects.items():
            obj.load_state_dict(content[name])
        trainer.load_state_dict(content["trainer"])
        _set_rng_state(content["rng"])
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise MammoDataError(f"checkpoint does not fit this run ({type(exc).__name__}: {exc})", path) from exc
    done = trainer.state.epoch >= (trainer.state.max_epochs or 0)
    logger.info(
        "resumed from %s at epoch %d%s", path, trainer.state.epoch, " (already complete)" if done else ""
    )
    return done


class NonFiniteLossGuard:
    """Never let a non-finite loss or gradient reach the optimizer.

    Runs after the backward pass and before ``optimizer.step()`` of a MONAI
    ``SupervisedTrainer`` (``IterationEvents.BACKWARD_COMPLETED``). With ``policy="stop"`` a
    NaN/inf loss (or gradient) raises :class:`MammoTrainingError` naming the epoch and
    iteration; the weights are untouched and the last epoch checkpoint stays as it was. With
    ``policy="skip"`` the gradients are cleared so the step leaves the weights unchanged, the
    batch is counted and logged, and training stops once ``max_skips`` batches were skipped.
    Under AMP only the loss is checked (the grad scaler handles overflowing gradients).

    Args:
        policy: ``"stop"`` or ``"skip"``.
        max_skips: skipped batches tolerated with ``policy="skip"`` before stopping.

    Raises:
        MammoConfigError: an unknown policy or negative ``max_skips``.

    Example::

        NonFiniteLossGuard("skip", max_skips=10).attach(trainer)
    """

    def __init__(self, policy: str = "stop", max_skips: int = 10) -> None:
        if policy not in ("stop", "skip"):
            raise MammoConfigError(f"policy must be 'stop' or 'skip', got {policy!r}")
        if max_skips < 0:
            raise MammoConfigError(f"max_skips must be >= 0, got {max_skips}")
        self.policy = policy
        self.max_skips = max_skips
        self.skipped: list[tuple[int, int]] = []

    def attach(self, engine: Engine) -> None:
        from monai.engines.utils import IterationEvents

        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    @staticmethod
    def _finite_gradients(engine: Engine) -> bool:
        optimizer: torch.optim.Optimizer = engine.optimizer  # type: ignore[attr-defined]
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        return all(bool(torch.isfinite(g).all()) for g in grads)

    def __call__(self, engine: Engine) -> None:
        loss = output_loss(engine.state.output)
        finite = loss is not None and np.isfinite(loss)
        if finite and not getattr(engine, "amp", False):
            finite = self._finite_gradients(engine)
        if finite:
            return
        where = f"epoch {engine.state.epoch}, iteration {engine.state.iteration}"
        optimizer: torch.optim.Optimizer = engine.optimizer  # type: ignore[attr-defined]
        if self.policy == "stop" or len(self.skipped) >= self.max_skips:
            optimizer.zero_grad(set_to_none=True)
            limit = "" if self.policy == "stop" else f" after skipping {len(self.skipped)} batches"
            raise MammoTrainingError(
                f"non-finite loss or gradient ({loss}) at {where}{limit}; the weights were not updated. "
                "Lower the learning rate, check the inputs for NaN/inf, or use policy='skip'"
            )
        optimizer.zero_grad(set_to_none=True)
        self.skipped.append((engine.state.epoch, engine.state.iteration))
        logger.warning(
            "non-finite loss or gradient (%s) at %s: batch skipped (%d so far)",
            loss,
            where,
            len(self.skipped),
        )

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": [list(s) for s in self.skipped]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.skipped = [tuple(s) for s in state.get("skipped", [])]  # type: ignore[misc]


class EarlyStopOnMetric:
    """Stop training when a validation metric has not improved for ``patience`` validations.

    The metric is read each time ``evaluator`` completes a run (so a validation every
    ``val_interval`` epochs counts once, never again on the epochs in between), and the trainer
    it is attached to is terminated after ``patience`` validations without improvement.
    Non-finite values (e.g. an AUC on a one-class validation set) are ignored.

    Args:
        evaluator: the validation engine whose ``state.metrics[metric]`` is watched.
        metric: metric name (higher is better).
        patience: validations without improvement before stopping.
        min_delta: smallest change that counts as an improvement.

    Raises:
        MammoConfigError: ``patience < 1``; or, after a validation, ``metric`` is not among the
            evaluator's metrics (a renamed key metric would otherwise turn early stopping off
            silently).

    Example::

        EarlyStopOnMetric(evaluator, "val_auc", patience=8).attach(trainer)
    """

    def __init__(self, evaluator: Engine, metric: str, patience: int, min_delta: float = 0.0) -> None:
        if patience < 1:
            raise MammoConfigError(f"patience must be >= 1, got {patience}")
        self.evaluator = evaluator
        self.metric = metric
        self.patience = patience
        self.min_delta = min_delta
        self.best: float | None = None
        self.bad_epochs = 0
        self._trainer: Engine | None = None

    def attach(self, engine: Engine) -> None:
        """Watch the evaluator's completed runs and stop ``engine`` (the trainer)."""
        self._trainer = engine
        if not self.evaluator.has_event_handler(self._check, Events.COMPLETED):
            self.evaluator.add_event_handler(Events.COMPLETED, self._check)

    def _check(self, evaluator: Engine) -> None:
        metrics = evaluator.state.metrics
        if self.metric not in metrics:
            raise MammoConfigError(
                f"early stopping watches {self.metric!r}, which the validator does not compute "
                f"(its metrics: {sorted(metrics)})"
            )
        value = float(metrics[self.metric])
        if not np.isfinite(value):
            return
        if self.best is None or value > self.best + self.min_delta:
            self.best, self.bad_epochs = value, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience and self._trainer is not None:
            logger.info(
                "early stop: %s has not improved on %.4f for %d validations",
                self.metric,
                self.best,
                self.patience,
            )
            self._trainer.terminate()

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best = state.get("best")
        self.bad_epochs = int(state.get("bad_epochs", 0))


def run_trainer(
    trainer: Engine, checkpoint: str | os.PathLike, objects: Mapping[str, Any], resume: bool
) -> None:
    """Run ``trainer``; with ``resume``, first restore ``checkpoint`` (if present) and skip a finished run.

    Args:
        trainer: the trainer (a MONAI ``SupervisedTrainer``).
        checkpoint: the :class:`TrainingCheckpoint` file of this stage.
        objects: the objects saved in it (network, optimizer, staged fine tuning, early stopping).
        resume: continue from ``checkpoint`` instead of starting over.
    """
    if resume and resume_training(checkpoint, trainer, objects):
        return
    trainer.run()


class ProgressLogger:
    """One log line per epoch: stage, epoch / max epochs, mean loss, elapsed time and ETA of the stage.

    Args:
        name: label of the training stage (``patch``, ``whole_image``...).
        evaluator: optional validation engine whose metrics are appended to the line.
    """

    def __init__(self, name: str, evaluator: Engine | None = None) -> None:
        self.name = name
        self.evaluator = evaluator
        self._start = 0.0
        self._first_epoch = 0
        self._losses: list[float] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch)

    def _started(self, engine: Engine) -> None:
        import time

        self._start = time.perf_counter()
        self._first_epoch = engine.state.epoch

    def _iteration(self, engine: Engine) -> None:
        loss = output_loss(engine.state.output)
        if loss is not None:
            self._losses.append(loss)

    def _epoch(self, engine: Engine) -> None:
        import time

        elapsed = time.perf_counter() - self._start
        done = engine.state.epoch - self._first_epoch
        left = (engine.state.max_epochs or engine.state.epoch) - engine.state.epoch
        eta = elapsed / max(done, 1) * left
        loss = sum(self._losses) / len(self._losses) if self._losses else float("nan")
        self._losses.clear()
        metrics = dict(self.evaluator.state.metrics) if self.evaluator is not None else {}
        shown = ", ".join(f"{k} {float(v):.4f}" for k, v in metrics.items() if np.ndim(v) == 0)
        stage = getattr(engine.state, "stage", "")
        logger.info(
            "[%s%s] epoch %d/%d: loss %.4f%s | elapsed %.0fs, ETA %.0fs",
            self.name,
            f"/{stage}" if stage else "",
            engine.state.epoch,
            engine.state.max_epochs,
            loss,
            f", {shown}" if shown else "",
            elapsed,
            eta,
        )
