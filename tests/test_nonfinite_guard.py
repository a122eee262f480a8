"""NonFiniteLossGuard: a NaN batch never updates the weights (stop or skip)."""

from __future__ import annotations

import pytest
import torch
from monai.engines import SupervisedTrainer

from monai_mammo.engines.handlers import NonFiniteLossGuard
from monai_mammo.exceptions import MammoConfigError, MammoTrainingError


def _batches(nan_at: set[int]) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    batches = []
    for i in range(4):
        image = torch.randn(4, 3, generator=g)
        if i in nan_at:
            image[0, 0] = float("nan")
        batches.append({"image": image, "label": torch.randint(0, 2, (4,), generator=g)})
    return batches


def _trainer(batches, guard, weights_seen):
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=batches,
        network=net,
        optimizer=torch.optim.Adam(net.parameters(), lr=0.1),
        loss_function=torch.nn.CrossEntropyLoss(),
        train_handlers=[guard],
    )

    @trainer.on(__import__("ignite.engine", fromlist=["Events"]).Events.ITERATION_COMPLETED)
    def record(engine):
        weights_seen.append(net.weight.detach().clone())

    return trainer, net


def test_stop_raises_before_the_step_and_names_the_iteration():
    seen: list[torch.Tensor] = []
    trainer, net = _trainer(_batches({2}), NonFiniteLossGuard("stop"), seen)
    with pytest.raises(MammoTrainingError, match="epoch 1, iteration 3"):
        trainer.run()
    assert len(seen) == 2 and torch.equal(net.weight, seen[-1])  # the NaN batch changed nothing
    assert torch.isfinite(net.weight).all()


def test_skip_leaves_the_weights_and_counts_then_stops_past_the_limit():
    seen: list[torch.Tensor] = []
    guard = NonFiniteLossGuard("skip", max_skips=1)
    trainer, net = _trainer(_batches({1}), guard, seen)
    trainer.run()
    assert guard.skipped == [(1, 2)]
    assert torch.equal(seen[1], seen[0]) and not torch.equal(seen[2], seen[1])
    assert torch.isfinite(net.weight).all()
    assert guard.state_dict() == {"skipped": [[1, 2]]}
    seen.clear()
    trainer, _ = _trainer(_batches({1, 3}), NonFiniteLossGuard("skip", max_skips=1), seen)
    with pytest.raises(MammoTrainingError, match="after skipping 1 batches"):
        trainer.run()


def test_bad_settings():
    with pytest.raises(MammoConfigError):
        NonFiniteLossGuard("ignore")
    with pytest.raises(MammoConfigError):
        NonFiniteLossGuard("skip", max_skips=-1)
