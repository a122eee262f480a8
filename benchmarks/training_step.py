"""Benchmark: one optimizer training step of each family's main network at its paper input size.

A step is ``zero_grad -> forward -> loss -> backward -> optimizer step`` on random inputs of the
paper's size, timed over ``--steps`` steps after ``--warmup`` untimed ones. The networks, input
sizes, batch sizes and optimizers are read from each bundle's configs (``train.json`` merged with
``paper.json`` and the configs the paper run merges), so they follow the bundles:

- ``shen_end2end``: ``network_def`` (``WholeImageClassifier`` on the ResNet-50 patch trunk with
  Shen's two ResNet top blocks) on 3 x 1152 x 896 images, Adam, all layers trained (the paper's
  last stage, ``whole_all``).
- ``nyu_multiview``: the view-wise model (ResNet-22 columns) on the four views L-CC, R-CC (3 x 2677
  x 1942) and L-MLO, R-MLO (3 x 2974 x 1748): image + 2 heatmap channels, ``MultiViewLoss``,
  Adam. ``exams_per_s`` counts exams (4 images each).
- ``calc_patch_crossdb``: ``ZooClassifier`` ResNet-101 on grey 674 x 674 patches, Adam.
- ``mass_roi_finetune``: ``ZooClassifier`` VGG-16 (Falconi head) on grey 320 x 320 ROIs, RMSprop,
  layers from ``gamma`` on trained (the fine-tuning stage, the heavier of the two).

Modes: fp32 and AMP (``torch.autocast``; CUDA: float16 with ``GradScaler`` and bfloat16; CPU:
bfloat16), each with and without channels-last. Per row: milliseconds per step, images/s, the
peak memory (CUDA: ``max_memory_allocated`` over the timed steps; CPU: the peak RSS from building
the network to the last step minus the RSS before), the forward + backward GFLOPs per image
(``FlopCounterMode``, counted once per family on a batch of one), the model FLOPs utilisation on
known GPUs, and the issue's targets (CUDA, AMP: Shen >= 150 images/s at 1152 x 896; NYU view-wise
>= 20 exams/s within 24 GiB at batch 4).

Defaults: on CUDA the paper batch sizes, 10 timed steps after 3 warm-up ones; on the CPU batch 1,
2 timed steps after 1 (a full-size CPU step takes seconds to a minute); ``--quick`` divides the
input sides by 4 with batches of 1-2 and 2 timed steps. CUDA rows (float16, ``mfu``, ``met``)
come only from a run on a GPU.

Usage::

    python benchmarks/training_step.py --quick --device cpu --json /tmp/training_step.json
    python benchmarks/training_step.py --device cpu --families shen_end2end  # batch 1, 2 steps
    python benchmarks/training_step.py --device cuda --steps 20 --warmup 5 --json training_step_h200.json
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import ctypes.util
import gc
import random
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from _common import (
    REPO_ROOT,
    add_common_arguments,
    build_payload,
    current_rss_mib,
    markdown_table,
    peak_rss_mib,
    reset_peak_rss,
    write_json,
)
from monai.bundle import ConfigParser
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from monai_mammo.data.indexers.nyu import NYU_VIEWS
from monai_mammo.engines.multiview import MultiViewLoss
from monai_mammo.engines.roi_training import WeightedBCEWithLogits, make_optimizer
from monai_mammo.exceptions import MammoConfigError

BENCHMARK = "training_step"
BUNDLES = REPO_ROOT / "bundles"
#: configs merged per family, in order (those the paper run of each bundle merges)
FAMILY_CONFIGS: dict[str, tuple[str, ...]] = {
    "shen_end2end": ("train.json", "paper.json"),
    "nyu_multiview": (
        "train.json",
        "train_patch.json",
        "heatmaps.json",
        "pretrain_birads.json",
        "chain.json",
        "paper.json",
    ),
    "calc_patch_crossdb": ("train.json", "crossdb.json", "paper.json"),
    "mass_roi_finetune": ("train.json", "paper.json"),
}
#: ``--quick``: input sides divided by this, small batches, few steps
QUICK_SCALE = 4
QUICK_BATCH = {"shen_end2end": 2, "nyu_multiview": 1, "calc_patch_crossdb": 2, "mass_roi_finetune": 2}
QUICK_STEPS, QUICK_WARMUP = 2, 1
#: full-size run on the CPU (the paper batches are GPU batches): batch 1, 2 timed steps after 1
CPU_BATCH, CPU_STEPS, CPU_WARMUP = 1, 2, 1
#: full-size run on CUDA: the paper batches
CUDA_STEPS, CUDA_WARMUP = 10, 3
AMP_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
#: dense (no sparsity) peak TFLOP/s by GPU name substring and precision; "tf32" = fp32 on tensor cores
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H200": {"fp32": 67.0, "tf32": 494.0, "bf16": 989.0, "fp16": 989.0},
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0},
}
SHEN_TARGET_IMAGES_PER_S = 150.0
NYU_TARGET_EXAMS_PER_S = 20.0
NYU_TARGET_PEAK_MIB = 24576.0
NYU_TARGET_BATCH = 4


@dataclass
class Workload:
    """One family's training step: network, inputs, loss and optimizer, as its bundle configures them.

    Attributes:
        family: bundle name.
        network: the template network (CPU, float32, training mode, trainable layers set).
        description: the network's name in the table.
        sizes: input name -> ``(H, W)``; ``{"image": ...}`` for single-input networks, the
            views for the multi-view model.
        channels: input channels.
        batch_size: samples (images, or exams for the multi-view model) per step.
        images_per_sample: images per sample (4 views per exam, else 1).
        optimizer: optimizer name for :func:`~monai_mammo.engines.roi_training.make_optimizer`.
        lr: learning rate.
        weight_decay: L2 penalty.
        loss: the loss module (unweighted: class weights do not change the cost).
        label_shape: label shape after the batch dimension (``()`` or ``(T,)``).
        full_size: whether the inputs have the paper's size (not scaled down).
    """

    family: str
    network: nn.Module
    description: str
    sizes: dict[str, tuple[int, int]]
    channels: int
    batch_size: int
    images_per_sample: int
    optimizer: str
    lr: float
    weight_decay: float
    loss: nn.Module
    label_shape: tuple[int, ...]
    full_size: bool

    @property
    def input_text(self) -> str:
        """The input size as ``CxHxW`` (per view for the multi-view model)."""
        return ", ".join(
            (f"{name} " if name != "image" else "") + f"{self.channels}x{h}x{w}"
            for name, (h, w) in self.sizes.items()
        )

    def batch(
        self, batch_size: int, device: torch.device, channels_last: bool, seed: int
    ) -> tuple[torch.Tensor | dict[str, torch.Tensor], torch.Tensor]:
        """Random standard-normal inputs and random 0/1 labels on ``device``.

        Args:
            batch_size: samples.
            device: where to create them.
            channels_last: store the inputs channels-last.
            seed: seed of the generator.

        Returns:
            ``(inputs, labels)``: a tensor, or a dict of view tensors for the multi-view model.
        """
        generator = torch.Generator(device=device).manual_seed(seed)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        inputs = {
            name: torch.randn(
                (batch_size, self.channels, h, w), generator=generator, device=device
            ).contiguous(memory_format=fmt)
            for name, (h, w) in self.sizes.items()
        }
        labels = torch.randint(0, 2, (batch_size, *self.label_shape), generator=generator, device=device)
        return (inputs if set(inputs) != {"image"} else inputs["image"]), labels


def load_bundle(family: str) -> ConfigParser:
    """The merged configs of ``family``'s paper run (``FAMILY_CONFIGS``), with its imports evaluated.

    Args:
        family: a key of ``FAMILY_CONFIGS``.

    Returns:
        The parser.

    Raises:
        MammoConfigError: unknown family.

    Example::

        parser = load_bundle("shen_end2end")
        parser.get_parsed_content("image_size")  # [1152, 896]
    """
    if family not in FAMILY_CONFIGS:
        raise MammoConfigError(f"unknown family {family!r}; expected one of {list(FAMILY_CONFIGS)}")
    parser = ConfigParser()
    parser.read_config([str(BUNDLES / family / "configs" / name) for name in FAMILY_CONFIGS[family]])
    parser.get_parsed_content("imports")
    return parser


def _scaled(size: Sequence[int], scale: int) -> tuple[int, int]:
    return int(size[0]) // scale, int(size[1]) // scale


Values = Callable[[str], Any]


def _shen(value: Values, scale: int, common: dict[str, Any]) -> Workload:
    """Shen: the whole-image classifier, all layers trained (the last stage, ``whole_all``)."""
    stage = value("stages")[-1]
    return Workload(
        description=f"WholeImageClassifier({value('backbone')}, top={value('top')})",
        sizes={"image": _scaled(value("image_size"), scale)},
        channels=int(value("in_channels")),
        optimizer="adam",  # train.json: torch.optim.Adam
        lr=float(stage["lr"]),
        weight_decay=float(stage.get("weight_decay", 0.0)),
        loss=nn.CrossEntropyLoss(),
        **common,
    )


def _nyu(value: Values, scale: int, common: dict[str, Any]) -> Workload:
    """NYU: the multi-view model on the four views, ``MultiViewLoss``."""
    network = common["network"]
    sizes = {
        v: _scaled(value("cc_size") if v.endswith("CC") else value("mlo_size"), scale) for v in NYU_VIEWS
    }
    return Workload(
        description=f"{type(network).__name__}(ResNet-22)",
        sizes=sizes,
        channels=int(value("in_channels")),
        optimizer="adam",  # train.json: torch.optim.Adam
        lr=float(value("lr")),
        weight_decay=float(value("weight_decay")),
        loss=MultiViewLoss(network.head_targets),
        **{**common, "label_shape": (network.num_targets,), "images_per_sample": len(NYU_VIEWS)},
    )


def _zoo(value: Values, side: int, lr: float, trained: str, scale: int, common: dict[str, Any]) -> Workload:
    """A ``ZooClassifier`` on square grey inputs (``build_zoo_classifier``'s ``in_channels=1``)."""
    return Workload(
        description=f"ZooClassifier({value('backbone')}, {value('head')} head, {trained})",
        sizes={"image": _scaled((side, side), scale)},
        channels=1,
        optimizer=str(value("optimizer")),
        lr=lr,
        weight_decay=float(value("weight_decay")),
        loss=WeightedBCEWithLogits(None),
        **common,
    )


def _calc(value: Values, scale: int, common: dict[str, Any]) -> Workload:
    """Calcification patches: the zoo classifier on ``patch_size`` patches, all layers trained."""
    return _zoo(value, int(value("patch_size")), float(value("lr")), "all layers", scale, common)


def _mass(value: Values, scale: int, common: dict[str, Any]) -> Workload:
    """Mass ROIs: the zoo classifier on ``roi_size`` ROIs, fine-tuning stage (layers >= ``gamma``)."""
    gamma = int(value("gamma"))
    common["network"].freeze_before(gamma)
    lr = float(value("finetune_stage")["lr"])
    return _zoo(value, int(value("roi_size")), lr, f"layers >= {gamma}", scale, common)


_BUILDERS: dict[str, Callable[[Values, int, dict[str, Any]], Workload]] = {
    "shen_end2end": _shen,
    "nyu_multiview": _nyu,
    "calc_patch_crossdb": _calc,
    "mass_roi_finetune": _mass,
}


def build_workload(family: str, scale: int = 1, batch_size: int | None = None) -> Workload:
    """The training step of ``family``'s main network, from its bundle configs.

    Args:
        family: a key of ``FAMILY_CONFIGS``.
        scale: divide each input side by this (1 = the paper's size).
        batch_size: override the config's batch size.

    Returns:
        The workload.

    Raises:
        MammoConfigError: unknown family or ``scale < 1``.

    Example::

        workload = build_workload("mass_roi_finetune", scale=4, batch_size=2)
    """
    if scale < 1:
        raise MammoConfigError(f"scale must be >= 1, got {scale}")
    parser = load_bundle(family)
    value = parser.get_parsed_content
    network = value("network_def")
    network.train()
    common = {
        "family": family,
        "network": network,
        "batch_size": int(batch_size or value("batch_size")),
        "full_size": scale == 1,
        "label_shape": (),
        "images_per_sample": 1,
    }
    return _BUILDERS[family](value, scale, common)


def seed_everything(seed: int) -> None:
    """Seed Python and torch (all devices); nothing here draws from NumPy."""
    random.seed(seed)
    torch.manual_seed(seed)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release_freed_memory() -> bool:
    """Collect garbage and hand the C heap's free pages back to the OS (glibc ``malloc_trim``).

    Without it the memory freed by an earlier row stays resident, and the next row's allocations
    reuse it without raising the RSS: its peak RSS delta would read near zero.

    Returns:
        True when ``malloc_trim`` ran; False where the C library has none (not glibc).
    """
    gc.collect()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


def _loss(workload: Workload, network: nn.Module, inputs: Any, labels: torch.Tensor) -> torch.Tensor:
    return workload.loss(network(inputs), labels)


def count_gflops(workload: Workload, device: torch.device, seed: int = 0) -> float:
    """Forward + backward GFLOPs per image, counted with ``FlopCounterMode`` on a batch of one (fp32).

    Only the matrix products and convolutions are counted (as ``FlopCounterMode`` does); the
    optimizer step is not.

    Args:
        workload: the training step.
        device: where to run the counted step.
        seed: seed of the inputs.

    Returns:
        GFLOPs per image (per exam divided by its 4 views for the multi-view model).
    """
    network = copy.deepcopy(workload.network).to(device)
    inputs, labels = workload.batch(1, device, False, seed)
    with FlopCounterMode(display=False) as counter:
        _loss(workload, network, inputs, labels).backward()
    return counter.get_total_flops() / 1e9 / workload.images_per_sample


def peak_tflops(device: torch.device, precision: str) -> float | None:
    """The GPU's dense peak TFLOP/s for ``precision`` (``PEAK_TFLOPS``), None on CPU or unknown GPUs.

    fp32 uses the TF32 peak when cuDNN may use TF32 (PyTorch's default for convolutions).

    Args:
        device: the benchmark's device.
        precision: ``"fp32"``, ``"fp16"`` or ``"bf16"``.

    Returns:
        TFLOP/s or None.
    """
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    key = "tf32" if precision == "fp32" and torch.backends.cudnn.allow_tf32 else precision
    for gpu, peaks in PEAK_TFLOPS.items():
        if gpu in name:
            return peaks[key]
    return None


def _target(
    workload: Workload, precision: str
) -> tuple[str | None, Callable[[Mapping[str, Any]], bool] | None]:
    """The issue's target of an AMP row (text, check), ``(None, None)`` where there is none."""
    if precision == "fp32":
        return None, None
    if workload.family == "shen_end2end":
        return (
            f">= {SHEN_TARGET_IMAGES_PER_S:g} images/s (CUDA, AMP, 1152x896)",
            lambda row: row["images_per_s"] >= SHEN_TARGET_IMAGES_PER_S,
        )
    if workload.family == "nyu_multiview":
        return (
            f">= {NYU_TARGET_EXAMS_PER_S:g} exams/s, <= {NYU_TARGET_PEAK_MIB:g} MiB (CUDA, AMP, batch 4)",
            lambda row: (
                row["exams_per_s"] >= NYU_TARGET_EXAMS_PER_S and row["peak_mem_mib"] <= NYU_TARGET_PEAK_MIB
            ),
        )
    return None, None


def _train_steps(
    workload: Workload,
    device: torch.device,
    precision: str,
    channels_last: bool,
    steps: int,
    warmup: int,
    seed: int,
) -> dict[str, Any]:
    """Build a fresh network and optimizer, run ``warmup`` + ``steps`` steps, return time, memory, loss.

    CPU memory: the peak RSS from building the network to the last step minus the RSS before.
    CUDA memory: the peak allocated over the timed steps (after cuDNN's autotuning in the warm-up).
    """
    release_freed_memory()
    rss_reset = reset_peak_rss()
    rss_before = current_rss_mib()
    seed_everything(seed)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    network = copy.deepcopy(workload.network).to(device, memory_format=fmt)  # type: ignore[call-overload]
    params = [p for p in network.parameters() if p.requires_grad]
    optimizer = make_optimizer(workload.optimizer, params, workload.lr, workload.weight_decay)
    inputs, labels = workload.batch(workload.batch_size, device, channels_last, seed)
    dtype = AMP_DTYPES[precision]
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = _loss(workload, network, inputs, labels)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        return loss.detach()

    for _ in range(warmup):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    _sync(device)
    elapsed = time.perf_counter() - start
    if device.type == "cuda":
        peak: float | None = torch.cuda.max_memory_allocated(device) / 2**20
        reserved: float | None = torch.cuda.max_memory_reserved(device) / 2**20
    else:
        peak = peak_rss_mib() - rss_before if rss_reset and rss_before is not None else None
        reserved = None
    return {"seconds": elapsed, "peak": peak, "reserved": reserved, "loss": float(loss)}


def measure(
    workload: Workload,
    device: torch.device,
    precision: str,
    channels_last: bool,
    steps: int,
    warmup: int,
    gflops: float,
    seed: int = 0,
) -> dict[str, Any]:
    """Time ``steps`` training steps of a fresh copy of the workload's network and optimizer.

    Args:
        workload: the training step.
        device: where to train.
        precision: ``"fp32"``, ``"fp16"`` (autocast + ``GradScaler``) or ``"bf16"`` (autocast).
        channels_last: network and inputs channels-last.
        steps: timed steps (>= 1).
        warmup: untimed steps before them.
        gflops: forward + backward GFLOPs per image (:func:`count_gflops`).
        seed: seed of the weights and inputs.

    Returns:
        The table row (``status`` ``"out of memory"`` and no figures when CUDA ran out of memory).

    Raises:
        MammoConfigError: ``steps < 1`` or an unknown precision.
    """
    if steps < 1:
        raise MammoConfigError(f"steps must be >= 1, got {steps}")
    if precision not in AMP_DTYPES:
        raise MammoConfigError(f"unknown precision {precision!r}; expected one of {list(AMP_DTYPES)}")
    row: dict[str, Any] = {
        "family": workload.family,
        "network": workload.description,
        "input": workload.input_text,
        "batch": workload.batch_size,
        "device": device.type,
        "precision": precision,
        "channels_last": channels_last,
        "steps": steps,
        "status": "ok",
        "ms_per_step": None,
        "images_per_s": None,
        "exams_per_s": None,
        "peak_mem_mib": None,
        "peak_reserved_mib": None,
        "gflops_per_image": round(gflops, 2),
        "peak_tflops": peak_tflops(device, precision),
        "mfu": None,
        "loss": None,
        "target": _target(workload, precision)[0],
        "met": None,
    }
    try:
        result = _train_steps(workload, device, precision, channels_last, steps, warmup, seed)
    except torch.OutOfMemoryError:
        row["status"] = "out of memory"
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if row["status"] != "ok":
        return row
    images_per_s = workload.batch_size * workload.images_per_sample * steps / result["seconds"]
    row.update(
        ms_per_step=round(1000.0 * result["seconds"] / steps, 2),
        images_per_s=round(images_per_s, 3),
        peak_mem_mib=None if result["peak"] is None else round(result["peak"], 1),
        peak_reserved_mib=None if result["reserved"] is None else round(result["reserved"], 1),
        loss=round(result["loss"], 4),
    )
    if workload.images_per_sample > 1:
        row["exams_per_s"] = round(images_per_s / workload.images_per_sample, 3)
    if row["peak_tflops"] is not None:
        row["mfu"] = round(gflops * images_per_s / (1000.0 * row["peak_tflops"]), 4)
    check = _target(workload, precision)[1]
    applicable = device.type == "cuda" and workload.full_size and row["peak_mem_mib"] is not None
    if workload.family == "nyu_multiview":
        applicable = applicable and workload.batch_size == NYU_TARGET_BATCH
    if check is not None and applicable:
        row["met"] = check(row)
    return row


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or BENCHMARK).splitlines()[0])
    add_common_arguments(parser, device=True)
    parser.add_argument("--families", nargs="+", choices=list(FAMILY_CONFIGS), default=list(FAMILY_CONFIGS))
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"timed steps (default CUDA {CUDA_STEPS}, CPU {CPU_STEPS}; --quick {QUICK_STEPS})",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help=f"untimed steps (default CUDA {CUDA_WARMUP}, CPU {CPU_WARMUP}; --quick {QUICK_WARMUP})",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help=f"every family's batch size (default CUDA: the paper's; CPU {CPU_BATCH}; --quick 1-2)",
    )
    parser.add_argument(
        "--scale",
        type=int,
        default=None,
        help=f"divide each input side by this (default 1; --quick {QUICK_SCALE})",
    )
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=list(AMP_DTYPES),
        default=None,
        help="default: fp32 fp16 bf16 (CPU: fp32 bf16)",
    )
    parser.add_argument(
        "--channels-last", choices=("both", "on", "off"), default="both", help="memory formats to measure"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def _notes(device: torch.device, settings: Mapping[str, Any], quick: bool) -> list[str]:
    notes = [
        "one step = zero_grad + forward + loss + backward + optimizer step on random inputs (no data "
        "loading); timed over the steps after the warm-up (CUDA: synchronised before and after)",
        "networks, sizes, batch sizes and optimizers from each bundle's paper configs; shen trains all "
        "layers (stage whole_all), mass_roi_finetune the layers from gamma on (fine-tuning stage); losses "
        "are unweighted (the bundles' class weights come from the data and do not change the cost)",
        "gflops_per_image: FlopCounterMode (convolutions and matrix products only), forward + backward of "
        "one fp32 sample on the benchmark device; mfu = gflops_per_image x images/s / peak_tflops",
    ]
    if device.type == "cuda":
        notes += [
            "peak_mem_mib: torch.cuda.max_memory_allocated over the timed steps (weights, gradients, "
            "optimizer state, inputs and activations); peak_reserved_mib: the caching allocator's reserve",
            f"cudnn.benchmark on; cuDNN TF32 {'on' if torch.backends.cudnn.allow_tf32 else 'off'} "
            "(fp32 rows use the TF32 peak when on)",
        ]
    else:
        notes += [
            "peak_mem_mib: peak RSS (VmHWM) from building the network to the last timed step minus the RSS "
            "just before (after gc + malloc_trim); CPU timings are noisy on a shared machine",
            "CPU run: no CUDA rows, no mfu; the issue's targets are GPU targets (met is None here). CUDA rows "
            "(fp16 + GradScaler, bf16, mfu, met) come only from a run with --device cuda on a GPU",
        ]
    scale = settings["scale"]
    if scale > 1:
        notes.append(
            f"inputs scaled down by {scale} per side: figures are not the paper sizes' (met is None)"
        )
    batches = settings["batches"]
    if None not in batches.values():
        notes.append(
            ("--quick: " if quick else "")
            + f"batch sizes {', '.join(f'{k} {v}' for k, v in batches.items())} instead of the paper "
            f"configs' batch_size; {settings['steps']} timed steps after "
            f"{settings['warmup']} warm-up"
        )
    return notes


def _settings(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Scale, steps, warm-up, precisions, memory formats and per-family batch sizes of a run."""
    cpu = device.type == "cpu"
    if args.quick:
        batches: dict[str, int | None] = dict(QUICK_BATCH)
        steps, warmup = QUICK_STEPS, QUICK_WARMUP
    else:
        batches = dict.fromkeys(FAMILY_CONFIGS, CPU_BATCH if cpu else None)
        steps, warmup = (CPU_STEPS, CPU_WARMUP) if cpu else (CUDA_STEPS, CUDA_WARMUP)
    precisions = args.precisions or (["fp32", "bf16"] if cpu else ["fp32", "fp16", "bf16"])
    if cpu and "fp16" in precisions:
        raise MammoConfigError("fp16 autocast is measured on CUDA only; use fp32 or bf16 on the CPU")
    return {
        "scale": args.scale or (QUICK_SCALE if args.quick else 1),
        "steps": args.steps or steps,
        "warmup": warmup if args.warmup is None else args.warmup,
        "precisions": precisions,
        "layouts": {"both": [False, True], "on": [True], "off": [False]}[args.channels_last],
        "batches": batches if args.batch_size is None else dict.fromkeys(FAMILY_CONFIGS, args.batch_size),
    }


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the Markdown table and return the JSON payload.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The payload of the benchmark JSON contract (also written to ``--json`` when given).

    Raises:
        MammoConfigError: ``--device cuda`` without CUDA, or invalid sizes.

    Example::

        payload = run(["--quick", "--device", "cpu", "--families", "mass_roi_finetune"])
    """
    arguments = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(arguments)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MammoConfigError("--device cuda but torch sees no CUDA device")
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    settings = _settings(args, device)
    rows = []
    for family in args.families:
        seed_everything(args.seed)
        workload = build_workload(family, settings["scale"], settings["batches"][family])
        gflops = count_gflops(workload, device, args.seed)
        for precision in settings["precisions"]:
            for channels_last in settings["layouts"]:
                row = measure(
                    workload,
                    device,
                    precision,
                    channels_last,
                    settings["steps"],
                    settings["warmup"],
                    gflops,
                    args.seed,
                )
                print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
                rows.append(row)
    notes = _notes(device, settings, args.quick)
    command = shlex.join(["python", "benchmarks/training_step.py", *arguments])
    if args.json is not None:
        payload = write_json(args.json, BENCHMARK, rows, args.quick, notes, command=command)
    else:
        payload = build_payload(BENCHMARK, rows, args.quick, notes, command=command)
    print(markdown_table(payload["rows"]))
    for note in payload["notes"]:
        print(f"- {note}")
    return payload


def main() -> None:
    """Command-line entry point (see :func:`run`)."""
    run()


if __name__ == "__main__":
    main()
