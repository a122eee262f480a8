"""Training robustness: a SIGKILLed run resumes to the same weights; bad checkpoints are refused or skipped.

* a real training subprocess (MONAI ``SupervisedTrainer`` + ``TrainingCheckpoint`` +
  ``run_trainer``) is killed with SIGKILL in the middle of epoch 3, then re-run with resume:
  its final weights and per-epoch losses equal those of an uninterrupted run;
* a truncated ``last.pt`` raises :class:`MammoDataError` naming it, or falls back to
  ``last.pt.prev`` with a warning when the previous epoch was kept;
* a crafted pickle in a checkpoint is refused by ``weights_only`` loading and never runs.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine

from monai_mammo.engines.handlers import TrainingCheckpoint, previous_checkpoint, resume_training
from monai_mammo.exceptions import MammoDataError

EPOCHS, ITERATIONS = 4, 48  # 192 samples, batch 4

TRAIN_SCRIPT = textwrap.dedent(
    """
    import json, random, sys, time
    from pathlib import Path

    import numpy as np
    import torch
    from ignite.engine import Events
    from monai.engines import SupervisedTrainer
    from monai.utils import set_determinism

    from monai_mammo.engines.handlers import TrainingCheckpoint, run_trainer

    out, resume, pause = Path(sys.argv[1]), sys.argv[2] == "1", float(sys.argv[3])
    torch.set_num_threads(1)
    set_determinism(seed=7)
    base = torch.linspace(-1, 1, 192 * 6).reshape(192, 6)


    class Noisy(torch.utils.data.Dataset):
        # every item draws from the global numpy, python and torch RNGs: resuming must restore all
        def __len__(self):
            return 192

        def __getitem__(self, i):
            noise = np.random.normal(0, 0.1, 6).astype(np.float32) + random.random() * 0.01
            image = base[i] + torch.from_numpy(noise) + 0.01 * torch.randn(6)
            return {"image": image, "label": torch.tensor(int(base[i].sum() > 0))}


    loader = torch.utils.data.DataLoader(Noisy(), batch_size=4, shuffle=True, num_workers=0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(8, 2))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=4, train_data_loader=loader, network=net,
        optimizer=opt, loss_function=torch.nn.CrossEntropyLoss(),
    )
    log = open(out / "progress.log", "a", buffering=1)
    losses = []


    @trainer.on(Events.EPOCH_STARTED)
    def _started(engine):
        losses.clear()
        log.write(f"epoch {engine.state.epoch} started\\n")


    @trainer.on(Events.ITERATION_COMPLETED)
    def _iteration(engine):
        losses.append(float(engine.state.output[0]["loss"]))
        log.write(f"iteration {engine.state.iteration}\\n")
        time.sleep(pause)


    @trainer.on(Events.EPOCH_COMPLETED)
    def _metrics(engine):
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"epoch": engine.state.epoch, "losses": losses}) + "\\n")


    objects = {"network": net, "optimizer": opt}
    TrainingCheckpoint(out / "ckpt", objects).attach(trainer)
    run_trainer(trainer, out / "ckpt" / "last.pt", objects, resume=resume)
    torch.save(net.state_dict(), out / "final.pt")
    """
)


def _train(out: Path, resume: bool, pause: float = 0.0) -> subprocess.Popen:
    out.mkdir(parents=True, exist_ok=True)
    script = out.parent / "train_tiny.py"
    script.write_text(TRAIN_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen(
        [sys.executable, str(script), str(out), "1" if resume else "0", str(pause)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )


def _finish(proc: subprocess.Popen) -> None:
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output.decode(errors="replace")[-3000:]


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_sigkilled_run_resumes_to_the_same_weights_and_losses(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    uninterrupted = _train(straight, resume=False)  # runs alongside the one to kill (same seed)
    proc = _train(killed, resume=False, pause=0.004)
    log, target = killed / "progress.log", 2 * ITERATIONS + 5  # a few iterations into epoch 3
    deadline = time.monotonic() + 90
    reached = False
    while proc.poll() is None and time.monotonic() < deadline:
        lines = log.read_text().splitlines() if log.is_file() else []
        if "epoch 3 started" in lines and any(line == f"iteration {target}" for line in lines):
            reached = True
            break
        time.sleep(0.002)
    assert reached, "the training process ended or stalled before epoch 3: " + str(
        proc.communicate()[0][-2000:]
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    last_iteration = max(
        int(line.split()[1]) for line in log.read_text().splitlines() if line.startswith("iteration")
    )
    assert 2 * ITERATIONS < last_iteration < 3 * ITERATIONS, "killed mid-epoch 3"
    assert not (killed / "final.pt").exists()

    # the killed run left a loadable (weights_only) checkpoint of epoch 2 and the one of epoch 1
    checkpoint = torch.load(killed / "ckpt" / "last.pt", weights_only=True)
    assert checkpoint["trainer"]["iteration"] == 2 * ITERATIONS  # end of epoch 2
    previous = torch.load(previous_checkpoint(killed / "ckpt" / "last.pt"), weights_only=True)
    assert previous["trainer"]["iteration"] == ITERATIONS
    assert [m["epoch"] for m in _metrics(killed)] == [1, 2]
    _finish(uninterrupted)

    _finish(_train(killed, resume=True))
    expected, resumed = torch.load(straight / "final.pt"), torch.load(killed / "final.pt")
    assert expected.keys() == resumed.keys()
    for key, value in expected.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=1e-6)
    expected_metrics, resumed_metrics = _metrics(straight), _metrics(killed)
    assert [m["epoch"] for m in resumed_metrics] == list(range(1, EPOCHS + 1))
    for want, got in zip(expected_metrics, resumed_metrics):
        assert len(got["losses"]) == ITERATIONS
        assert got["losses"] == pytest.approx(want["losses"], abs=1e-6)
    # the weights really moved: the comparison is not between two untrained networks
    assert expected_metrics[-1]["losses"] != pytest.approx(expected_metrics[0]["losses"], abs=1e-3)


def _tiny_run(folder: Path, epochs: int) -> tuple[torch.nn.Linear, Engine, dict]:
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)

    def step(engine, batch):
        opt.zero_grad()
        loss = net(torch.randn(2, 3)).pow(2).mean()
        loss.backward()
        opt.step()
        return {"loss": loss.item()}

    engine = Engine(step)
    objects = {"network": net, "optimizer": opt}
    TrainingCheckpoint(folder, objects).attach(engine)
    engine.run(range(3), max_epochs=epochs)
    return net, engine, objects


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_truncated_checkpoint_without_prev_names_the_file(tmp_path):
    _tiny_run(tmp_path, epochs=1)
    last = tmp_path / "last.pt"
    assert not previous_checkpoint(last).exists()  # only one epoch: nothing to rotate
    _truncate(last)
    _, engine, objects = _tiny_run(tmp_path / "other", epochs=1)
    with pytest.raises(MammoDataError, match="truncated or corrupt") as info:
        resume_training(last, engine, objects)
    assert info.value.source == str(last)


def test_truncated_checkpoint_falls_back_to_prev(tmp_path, caplog):
    _tiny_run(tmp_path, epochs=2)
    last, prev = tmp_path / "last.pt", previous_checkpoint(tmp_path / "last.pt")
    assert torch.load(prev, weights_only=True)["trainer"]["iteration"] == 3  # epoch 1
    epoch1_weights = torch.load(prev, weights_only=True)["network"]
    _truncate(last)
    net, engine, objects = _tiny_run(tmp_path / "other", epochs=3)
    with caplog.at_level(logging.WARNING, logger="monai_mammo.engines.handlers"):
        assert resume_training(last, engine, objects) is False
    assert engine.state.epoch == 1 and engine.state.iteration == 3
    for key, value in epoch1_weights.items():
        torch.testing.assert_close(net.state_dict()[key], value, rtol=0, atol=0)
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert str(last) in warning and str(prev) in warning

    # a crash between the two renames leaves only .prev: it is used too
    last.unlink()
    _, engine, objects = _tiny_run(tmp_path / "third", epochs=3)
    assert resume_training(last, engine, objects) is False and engine.state.epoch == 1


class _Evil:
    """Unpickling this creates ``marker`` (what a malicious checkpoint would run instead)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_malicious_checkpoint_is_refused_and_never_runs(tmp_path):
    # control: a plain (unsafe) load of such a file really does run the payload
    control = tmp_path / "control"
    torch.save({"network": _Evil(control)}, tmp_path / "control.pt")
    torch.load(tmp_path / "control.pt", weights_only=False)
    assert control.exists()

    _tiny_run(tmp_path, epochs=2)  # a good last.pt.prev exists: a refused file must not fall back
    marker, last = tmp_path / "pwned", tmp_path / "last.pt"
    content = torch.load(last, weights_only=True)
    content["network"] = {"weight": _Evil(marker)}
    torch.save(content, last)
    _, engine, objects = _tiny_run(tmp_path / "other", epochs=3)
    with pytest.raises(MammoDataError, match="refused") as info:
        resume_training(last, engine, objects)
    assert info.value.source == str(last)
    assert not marker.exists()
    assert engine.state.epoch == 3  # nothing was restored
