"""EarlyStopOnMetric: counts validations (not epochs), stops the trainer, refuses an absent metric."""

from __future__ import annotations

import pytest
from ignite.engine import Engine, Events

from monai_mammo.engines.handlers import EarlyStopOnMetric
from monai_mammo.exceptions import MammoConfigError


def _engines(values: list[float], val_interval: int = 1, key: str = "val_auc") -> tuple[Engine, Engine]:
    """A trainer of 1-iteration epochs validating every ``val_interval`` epochs with scripted metric values."""
    trainer = Engine(lambda engine, batch: None)
    evaluator = Engine(lambda engine, batch: None)
    scores = iter(values)

    @evaluator.on(Events.EPOCH_COMPLETED)
    def _score(engine: Engine) -> None:
        engine.state.metrics[key] = next(scores)

    @trainer.on(Events.EPOCH_COMPLETED(every=val_interval))
    def _validate(engine: Engine) -> None:
        evaluator.run([0])

    return trainer, evaluator


def test_stops_after_patience_validations_without_improvement():
    trainer, evaluator = _engines([0.5, 0.7, 0.6, 0.65, 0.69, 0.9])
    stop = EarlyStopOnMetric(evaluator, "val_auc", patience=3)
    stop.attach(trainer)
    trainer.run([0], max_epochs=10)
    assert trainer.state.epoch == 5  # best 0.7 at epoch 2, then 3 validations without improvement
    assert stop.best == 0.7 and stop.bad_epochs == 3


def test_epochs_between_validations_do_not_count():
    """With a validation every 2nd epoch, the stale metric of the epoch in between is not re-counted."""
    trainer, evaluator = _engines([0.5, 0.4, 0.8, 0.7, 0.6, 0.9, 0.9], val_interval=2)
    stop = EarlyStopOnMetric(evaluator, "val_auc", patience=2)
    stop.attach(trainer)
    trainer.run([0], max_epochs=14)
    assert trainer.state.epoch == 10  # 5 validations: improve, bad, improve, bad, bad -> stops at the 5th
    assert (stop.best, stop.bad_epochs) == (0.8, 2)


def test_non_finite_values_are_ignored():
    trainer, evaluator = _engines([0.5, float("nan"), float("nan"), 0.6])
    stop = EarlyStopOnMetric(evaluator, "val_auc", patience=2)
    stop.attach(trainer)
    trainer.run([0], max_epochs=4)
    assert trainer.state.epoch == 4 and stop.best == 0.6


def test_a_metric_the_validator_does_not_compute_is_refused():
    trainer, evaluator = _engines([0.5], key="val_mean_auc")
    EarlyStopOnMetric(evaluator, "val_auc", patience=2).attach(trainer)
    with pytest.raises(MammoConfigError, match=r"'val_auc'.*val_mean_auc"):
        trainer.run([0], max_epochs=2)


def test_state_round_trip_resumes_the_count():
    _, evaluator = _engines([])
    stop = EarlyStopOnMetric(evaluator, "val_auc", patience=3)
    stop.best, stop.bad_epochs = 0.8, 2
    resumed = EarlyStopOnMetric(evaluator, "val_auc", patience=3)
    resumed.load_state_dict(stop.state_dict())
    assert (resumed.best, resumed.bad_epochs) == (0.8, 2)
