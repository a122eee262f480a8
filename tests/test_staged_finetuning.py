"""StagedFineTuning switches lr, weight decay and trainable layers at the right epochs."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine, Events
from torch import nn

from monai_mammo.engines.staged import Stage, StagedFineTuning, select_trainable, total_epochs
from monai_mammo.exceptions import MammoConfigError


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(4, 4)
        self.block = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)
        self.extra = nn.Linear(2, 2)

    def layer_groups(self):
        return [self.stem, self.block, self.head]

    def new_parameters(self):
        return list(self.extra.parameters())

    def forward(self, x):
        return self.extra(self.head(self.block(self.stem(x))))


STAGES = [
    {"epochs": 2, "lr": 1e-2, "trainable": "head", "name": "head"},
    {"epochs": 1, "lr": 1e-3, "weight_decay": 0.01, "trainable": "top:2"},
    {"epochs": 2, "lr": 1e-4, "trainable": "all"},
]


def _trainer(net, opt, log):
    torch.manual_seed(0)
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))

    def step(engine, _):
        opt.zero_grad(set_to_none=False)  # as MONAI's SupervisedTrainer does by default
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    engine = Engine(step)

    @engine.on(Events.EPOCH_COMPLETED)
    def record(e):
        log.append(
            (
                e.state.epoch,
                opt.param_groups[0]["lr"],
                opt.param_groups[0]["weight_decay"],
                tuple(n for n, p in net.named_parameters() if p.requires_grad),
            )
        )

    return engine


def test_stages_switch_at_the_right_epochs():
    torch.manual_seed(0)
    net = TinyNet()
    opt = torch.optim.Adam(net.parameters(), lr=1.0)
    handler = StagedFineTuning(net, opt, STAGES)
    log: list = []
    trainer = _trainer(net, opt, log)
    handler.attach(trainer)
    stem_before = net.stem.weight.detach().clone()
    trainer.run(range(2), max_epochs=handler.total_epochs)

    assert handler.total_epochs == total_epochs(STAGES) == 5
    assert [entry[1] for entry in log] == [1e-2, 1e-2, 1e-3, 1e-4, 1e-4]
    assert [entry[2] for entry in log] == [0.0, 0.0, 0.01, 0.0, 0.0]
    assert log[0][3] == ("head.weight", "head.bias")
    assert log[2][3] == ("block.weight", "block.bias", "head.weight", "head.bias")
    assert len(log[4][3]) == 8
    assert not torch.equal(stem_before, net.stem.weight)  # trained in the last stage


def test_frozen_layers_do_not_move_even_with_adam_momentum():
    torch.manual_seed(0)
    net = TinyNet()
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    stages = [Stage(1, 0.1, trainable="all"), Stage(2, 0.1, trainable="head")]
    handler = StagedFineTuning(net, opt, stages)
    snapshots = {}
    trainer = _trainer(net, opt, [])

    @trainer.on(Events.EPOCH_COMPLETED)
    def snap(e):
        snapshots[e.state.epoch] = net.stem.weight.detach().clone()

    handler.attach(trainer)
    trainer.run(range(2), max_epochs=3)
    assert torch.equal(snapshots[1], snapshots[3])


def test_resume_restores_the_stage():
    net = TinyNet()
    opt = torch.optim.Adam(net.parameters(), lr=1.0)
    handler = StagedFineTuning(net, opt, STAGES)
    handler.apply(1)
    state = handler.state_dict()
    net2 = TinyNet()
    opt2 = torch.optim.Adam(net2.parameters(), lr=1.0)
    resumed = StagedFineTuning(net2, opt2, STAGES)
    resumed.load_state_dict(state)
    assert resumed.current == 1 and opt2.param_groups[0]["lr"] == 1e-3
    assert not net2.stem.weight.requires_grad and net2.block.weight.requires_grad
    assert resumed.stage_index(4) == 2 and resumed.stage_index(99) == 2


def test_selection_and_validation_errors():
    net = TinyNet()
    assert len(select_trainable(net, "new")) == 2
    assert len(select_trainable(net, "top:3")) == 6
    with pytest.raises(MammoConfigError, match="top:4"):
        select_trainable(net, "top:4")
    with pytest.raises(MammoConfigError, match="trainable"):
        Stage(1, 1e-3, trainable="some")
    with pytest.raises(MammoConfigError, match="epochs"):
        Stage(0, 1e-3)
    with pytest.raises(MammoConfigError, match="new_parameters"):
        select_trainable(nn.Sequential(nn.Linear(2, 2)), "new")


def test_frozen_batch_norm_statistics_stay_fixed_when_asked():
    for frozen_bn_eval, should_move in ((True, False), (False, True)):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
        net.layer_groups = lambda net=net: [net[0], net[1], net[2]]  # type: ignore[method-assign]
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        handler = StagedFineTuning(
            net, opt, [Stage(1, 1e-2, trainable="head")], frozen_bn_eval=frozen_bn_eval
        )
        handler.apply(0)
        net.train()
        net(torch.randn(16, 4) * 5 + 3)
        moved = not torch.allclose(net[1].running_mean, torch.zeros(4))
        assert moved == should_move
        assert net[2].training  # only the frozen batch norm is switched to eval


def test_one_cycle_schedule_follows_the_iterations():
    from monai_mammo.engines.staged import one_cycle_lr

    net = TinyNet()
    opt = torch.optim.Adam(net.parameters(), lr=1.0)
    handler = StagedFineTuning(
        net, opt, [Stage(1, 1e-2, trainable="head"), Stage(2, 1e-3, schedule="one_cycle")]
    )
    lrs: list = []
    trainer = _trainer(net, opt, [])
    handler.attach(trainer)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: lrs.append(opt.param_groups[0]["lr"]))
    trainer.run(range(5), max_epochs=3)
    assert lrs[:5] == [1e-2] * 5  # constant stage
    expected = [one_cycle_lr(i, 10, 1e-3) for i in range(10)]
    assert lrs[5:] == pytest.approx(expected)
    assert expected[0] == pytest.approx(1e-3 / 25) and max(expected) == pytest.approx(1e-3)
    with pytest.raises(MammoConfigError, match="schedule"):
        Stage(1, 1e-3, schedule="step")


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    """Train 3 epochs straight vs 1 epoch + checkpoint + resume for 2: identical weights and stage."""
    from monai_mammo.engines.handlers import TrainingCheckpoint, resume_training

    def build():
        torch.manual_seed(0)
        net = TinyNet()
        opt = torch.optim.Adam(net.parameters(), lr=1.0)
        stages = [Stage(1, 1e-2, trainable="head"), Stage(2, 1e-3, schedule="one_cycle")]
        handler = StagedFineTuning(net, opt, stages)
        data = torch.utils.data.DataLoader(list(range(8)), batch_size=2, shuffle=True)

        def step(engine, _):
            opt.zero_grad()
            x = torch.randn(4, 4)  # draws from the global RNG: resuming must restore it
            loss = nn.functional.cross_entropy(net(x), torch.tensor([0, 1, 0, 1]))
            loss.backward()
            opt.step()
            return {"loss": loss.item()}

        engine = Engine(step)
        handler.attach(engine)
        objects = {"network": net, "optimizer": opt, "stages": handler}
        TrainingCheckpoint(tmp_path, objects).attach(engine)
        return net, engine, data, objects

    net, engine, data, _ = build()
    engine.run(data, max_epochs=3)
    straight = {k: v.clone() for k, v in net.state_dict().items()}

    net, engine, data, _ = build()
    engine.add_event_handler(
        Events.EPOCH_COMPLETED(once=1), lambda e: e.terminate()
    )  # "killed" after epoch 1
    engine.run(data, max_epochs=3)
    net, engine, data, objects = build()
    assert resume_training(tmp_path / "last.pt", engine, objects) is False
    assert engine.state.epoch == 1
    engine.run(data, max_epochs=3)
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, straight[key])
    assert objects["stages"].current == 1
