"""Benchmark: NYU patch heatmaps, the per-patch reference loop against the batched PatchInferer path.

Both paths compute the same ``(2, H, W)`` [benign, malignant] maps (the script checks the
largest absolute difference) with the same network: Wu et al.'s patch classifier,
``PatchClassifier("densenet121", num_classes=4, in_channels=3)`` with random weights, on a
random standardised crop of ``--size H W`` pixels (default 2600 x 1300, about 560 patches of
256 x 256 at stride 70, as a typical NYU crop). Reported: seconds per image of each path
(median over ``--repeats``, after one warm-up forward pass of each), patches per second and
the speed-up of the batched path.

The loop is :func:`~monai_mammo.engines.heatmaps.heatmaps_loop` (one patch per forward pass
under ``torch.no_grad``, as a plain re-implementation would do). The batched path is
:func:`~monai_mammo.engines.heatmaps.heatmaps_batched` (MONAI ``PatchInferer``, ``--batch-size``
patches per pass, ``torch.inference_mode``, channels-last, float16 autocast on CUDA with
``--amp``).

Usage (a small crop finishes in a few minutes on 2 CPU cores)::

    python benchmarks/heatmaps.py --size 1300 650 --repeats 1
    python benchmarks/heatmaps.py --device cuda --amp --batch-size 128 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_mammo.engines.heatmaps import default_batch_size, heatmaps_batched, heatmaps_loop, patch_starts
from monai_mammo.networks.patch_classifier import PatchClassifier

PATCH = 256
STRIDE = 70


def _timed(run: Callable[[], np.ndarray], repeats: int, device: torch.device) -> tuple[float, np.ndarray]:
    """Median seconds of ``repeats`` calls of ``run`` and its last result."""
    seconds = []
    result = np.empty(0)
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and print its figures.

    Args:
        argv: command-line arguments (default: ``sys.argv``).

    Returns:
        The figures (also written to ``--json`` when given).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size", type=int, nargs=2, default=(2600, 1300), metavar=("H", "W"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument(
        "--cpu-bf16", action="store_true", help="bfloat16 autocast for the batched path on the CPU (opt-in)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="patches per pass (default: 4 on the CPU, 64 on CUDA)"
    )
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--skip-loop", action="store_true", help="time the batched path only")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    height, width = args.size
    n_patches = len(patch_starts(height, PATCH, STRIDE)) * len(patch_starts(width, PATCH, STRIDE))
    torch.manual_seed(0)
    image = torch.randn(height, width, generator=torch.Generator().manual_seed(0))
    figures: dict[str, Any] = {
        "size": [height, width],
        "patches_per_image": n_patches,
        "device": str(device),
        "amp": args.amp,
        "cpu_bf16": args.cpu_bf16,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
    }
    print(f"{height} x {width} crop: {n_patches} patches of {PATCH} (stride {STRIDE}), device {device}")

    loop_net = PatchClassifier("densenet121", num_classes=4, in_channels=3).to(device).eval()
    batched_net = PatchClassifier("densenet121", num_classes=4, in_channels=3).to(device).eval()
    batched_net.load_state_dict(loop_net.state_dict())
    args.batch_size = args.batch_size or default_batch_size(device)
    warm = torch.zeros(args.batch_size, 3, PATCH, PATCH, device=device)
    with torch.inference_mode():  # warm-up: first-call kernel selection is not measured
        loop_net(warm[:1])
        heatmaps_batched(
            batched_net,
            warm[0, 0],
            device=device,
            amp=args.amp,
            batch_size=args.batch_size,
            cpu_bf16=args.cpu_bf16,
        )

    batched_s, batched = _timed(
        lambda: heatmaps_batched(
            batched_net, image, PATCH, STRIDE, args.batch_size, device, args.amp, cpu_bf16=args.cpu_bf16
        ),
        args.repeats,
        device,
    )
    figures["batched_s_per_image"] = batched_s
    figures["batched_patches_per_s"] = n_patches / batched_s
    print(
        f"batched (batch {args.batch_size}): {batched_s:.2f} s/image, {n_patches / batched_s:.1f} patches/s"
    )
    if not args.skip_loop:
        loop_s, loop = _timed(
            lambda: heatmaps_loop(loop_net, image, PATCH, STRIDE, device), args.repeats, device
        )
        figures["loop_s_per_image"] = loop_s
        figures["loop_patches_per_s"] = n_patches / loop_s
        figures["speedup"] = loop_s / batched_s
        figures["max_abs_diff"] = float(np.abs(loop - batched).max())
        print(f"loop (1 patch per pass): {loop_s:.2f} s/image, {n_patches / loop_s:.1f} patches/s")
        print(f"speed-up: {loop_s / batched_s:.1f}x; max |loop - batched| = {figures['max_abs_diff']:.2e}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return figures


if __name__ == "__main__":
    main()
