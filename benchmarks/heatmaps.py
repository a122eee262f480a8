"""Benchmark: NYU patch heatmaps, the per-patch reference loop against the batched PatchInferer path.

Both paths compute the same ``(2, H, W)`` [benign, malignant] maps (the script checks the
largest absolute difference) with the same network: Wu et al.'s patch classifier,
``PatchClassifier("densenet121", num_classes=4, in_channels=3)`` with random weights, on a
random standardised crop of ``--size H W`` pixels (default 2600 x 1300, about 560 patches of
256 x 256 at stride 70, as a typical NYU crop; ``--quick``: 1300 x 650, 112 patches).
Reported: seconds per image of each path (median over ``--repeats``, after one warm-up
forward pass of each), patches per second, the speed-up of the batched path and the peak RSS
of this process during each path.

The loop is :func:`~monai_mammo.engines.heatmaps.heatmaps_loop` (one patch per forward pass
under ``torch.no_grad``, as a plain re-implementation would do). The batched path is
:func:`~monai_mammo.engines.heatmaps.heatmaps_batched` (MONAI ``PatchInferer``, ``--batch-size``
patches per pass, ``torch.inference_mode``, channels-last, float16 autocast on CUDA with
``--amp``). ``--device`` defaults to CUDA when available.

Usage (``--quick`` takes about 15 s on 2 quiet CPU cores, minutes when they are shared)::

    python benchmarks/heatmaps.py --quick --device cpu --json /tmp/heatmaps.json
    python benchmarks/heatmaps.py --device cuda --amp --batch-size 128 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from _common import (
    add_common_arguments,
    build_payload,
    markdown_table,
    peak_rss_mib,
    reset_peak_rss,
    write_json,
)

from monai_mammo.engines.heatmaps import default_batch_size, heatmaps_batched, heatmaps_loop, patch_starts
from monai_mammo.networks.patch_classifier import PatchClassifier

PATCH = 256
STRIDE = 70
FULL_SIZE = (2600, 1300)
QUICK_SIZE = (1300, 650)


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


def _path_row(
    path: str, seconds: float, n_patches: int, common: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    """One table row: the path's seconds per image and patches per second."""
    return {
        "path": path,
        **common,
        "s_per_image": round(seconds, 3),
        "images_per_s": round(1.0 / seconds, 3),
        "patches_per_s": round(n_patches / seconds, 1),
        **extra,
    }


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and print its figures.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The JSON payload (also written to ``--json`` when given): one row per path
        (``"batched"``, and ``"loop"`` unless ``--skip-loop``, with ``speedup_of_batched`` and
        ``max_abs_diff`` against the batched path).

    Example::

        payload = run(["--size", "520", "520", "--skip-loop", "--device", "cpu"])
        payload["rows"][0]["s_per_image"]
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help=f"crop size (default {FULL_SIZE[0]} {FULL_SIZE[1]}; --quick {QUICK_SIZE[0]} {QUICK_SIZE[1]})",
    )
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
    add_common_arguments(parser, device=True)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    height, width = args.size or (QUICK_SIZE if args.quick else FULL_SIZE)
    n_patches = len(patch_starts(height, PATCH, STRIDE)) * len(patch_starts(width, PATCH, STRIDE))
    torch.manual_seed(0)
    image = torch.randn(height, width, generator=torch.Generator().manual_seed(0))
    print(f"{height} x {width} crop: {n_patches} patches of {PATCH} (stride {STRIDE}), device {device}")

    loop_net = PatchClassifier("densenet121", num_classes=4, in_channels=3).to(device).eval()
    batched_net = PatchClassifier("densenet121", num_classes=4, in_channels=3).to(device).eval()
    batched_net.load_state_dict(loop_net.state_dict())
    batch_size = args.batch_size or default_batch_size(device)
    common = {
        "size": f"{height} x {width}",
        "patches_per_image": n_patches,
        "device": str(device),
        "amp": args.amp,
        "cpu_bf16": args.cpu_bf16,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
    }
    warm = torch.zeros(batch_size, 3, PATCH, PATCH, device=device)
    with torch.inference_mode():  # warm-up: first-call kernel selection is not measured
        loop_net(warm[:1])
        heatmaps_batched(
            batched_net,
            warm[0, 0],
            device=device,
            amp=args.amp,
            batch_size=batch_size,
            cpu_bf16=args.cpu_bf16,
        )

    reset_peak_rss()
    batched_s, batched = _timed(
        lambda: heatmaps_batched(
            batched_net, image, PATCH, STRIDE, batch_size, device, args.amp, cpu_bf16=args.cpu_bf16
        ),
        args.repeats,
        device,
    )
    rows = [
        _path_row("batched", batched_s, n_patches, common, batch_size=batch_size, peak_rss_mib=peak_rss_mib())
    ]
    print(f"batched (batch {batch_size}): {batched_s:.2f} s/image, {n_patches / batched_s:.1f} patches/s")
    if not args.skip_loop:
        reset_peak_rss()
        loop_s, loop = _timed(
            lambda: heatmaps_loop(loop_net, image, PATCH, STRIDE, device), args.repeats, device
        )
        max_abs_diff = float(np.abs(loop - batched).max())
        rows.append(
            _path_row(
                "loop",
                loop_s,
                n_patches,
                common,
                batch_size=1,
                peak_rss_mib=peak_rss_mib(),
                speedup_of_batched=round(loop_s / batched_s, 2),
                max_abs_diff=max_abs_diff,
            )
        )
        print(f"loop (1 patch per pass): {loop_s:.2f} s/image, {n_patches / loop_s:.1f} patches/s")
        print(f"speed-up: {loop_s / batched_s:.1f}x; max |loop - batched| = {max_abs_diff:.2e}")
    notes = [
        f"DenseNet-121 patch classifier (random weights), {PATCH}-pixel patches at stride {STRIDE}; "
        f"median of {args.repeats} run(s) after one warm-up pass",
    ]
    print(markdown_table(rows))
    if args.json is not None:
        return write_json(args.json, "heatmaps", rows, args.quick, notes)
    return build_payload("heatmaps", rows, args.quick, notes)


if __name__ == "__main__":
    run()
