"""Benchmark: mammogram loading, breast cropping/orientation and S10 patch sampling throughput.

Measures, on the CPU:

(a) images/s on ONE core (``torch.set_num_threads(1)``, ``cv2.setNumThreads(1)``) of
    ``LoadMammogram -> CropBreast -> OrientBreast -> Resize`` (to 1152 x 896, area) on 3328 x 2560 16-bit images: the real NYU
    sample PNGs (``../shared/data/nyu_sample``, when present; ``"nyu"`` foreground mode) and a
    synthetic film-style DICOM written with ``write_mammogram_dicom`` from
    ``synthesize_mammogram`` (``"otsu"`` mode: its background is not zero). Target: >= 4 images/s.
(b) images/s of S10 patch sampling (``SamplePatches``, 224-pixel patches, 10 per finding plus 10
    background) on a 1152 x 896 synthetic image with 2 findings. Target: >= 50 images/s.
(c) the pipeline of (a) as ``LoadMammogramd -> CropBreastd -> OrientBreastd -> Resized`` in a MONAI
    ``Dataset`` + ``DataLoader`` with ``--workers`` worker processes (end to end, worker start
    included).
(d) peak resident memory: ``resource.getrusage`` for this process (up to the first benchmark,
    i.e. imports + writing the synthetic image) and for the worker processes; per benchmark, the
    peak of this process during it (Linux ``/proc/self/status`` VmHWM, reset before each one,
    which also resets what ``getrusage`` reports for this process afterwards).

Files are read from the page cache after the warm-up calls (a cold disk read is not measured).
Prints a Markdown table; ``--json PATH`` also writes the payload of ``benchmarks/_common.py``.
``--quick``: 5 timed calls instead of 20 (same code paths).

Usage::

    python benchmarks/transforms.py --repeats 20 --workers 2 --json /tmp/transforms.json
    python benchmarks/transforms.py --quick
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from _common import (
    add_common_arguments,
    build_payload,
    children_peak_rss_mib,
    current_rss_mib,
    peak_rss_mib,
    reset_peak_rss,
    write_json,
)
from monai.data import DataLoader, Dataset, MetaTensor
from monai.transforms import Compose, Resize, Resized

from monai_mammo.data.dicom_writer import write_mammogram_dicom
from monai_mammo.data.schema import PatchClass
from monai_mammo.data.synthetic.phantom import synthesize_mammogram
from monai_mammo.data.synthetic.types import FindingSpec
from monai_mammo.transforms import (
    CropBreast,
    CropBreastd,
    LoadMammogram,
    LoadMammogramd,
    OrientBreast,
    OrientBreastd,
    SamplePatches,
)
from monai_mammo.transforms.breast import ForegroundMode

REPO_ROOT = Path(__file__).resolve().parents[1]
NYU_SAMPLE = REPO_ROOT.parent / "shared" / "data" / "nyu_sample"
FULL_SHAPE = (3328, 2560)
SAMPLING_SHAPE = (1152, 896)
RESIZE_SHAPE = (1152, 896)  # the Shen et al. whole-image size
LOAD_TARGET = 4.0  # images/s, one core
SAMPLING_TARGET = 50.0  # images/s, one core
WARMUP = 2
FULL_REPEATS = 20
QUICK_REPEATS = 5


def _median_ms(seconds: Sequence[float]) -> float:
    return 1000.0 * statistics.median(seconds)


def _row(
    name: str, source: str, times: Sequence[float], target: float | None, **extra: Any
) -> dict[str, Any]:
    """One result: median latency and throughput (calls / total time) of the timed calls."""
    rate = len(times) / sum(times)
    return {
        "benchmark": name,
        "input": source,
        "n": len(times),
        "median_ms": round(_median_ms(times), 1),
        "images_per_s": round(rate, 2),
        "target_images_per_s": target,
        "met": None if target is None else rate >= target,
        **extra,
    }


def bench_load_crop_orient(
    paths: Sequence[Path], mode: ForegroundMode, repeats: int, name: str, source: str
) -> dict[str, Any]:
    """(a): time each stage of load -> crop -> orient -> resize, cycling over ``paths``."""
    load, crop, orient = LoadMammogram(), CropBreast(mode=mode), OrientBreast()
    resize = Resize(RESIZE_SHAPE, mode="area")
    stages: dict[str, list[float]] = {"load": [], "crop": [], "orient": [], "resize": []}
    totals: list[float] = []
    shapes = set()
    for i in range(WARMUP + repeats):
        path = paths[i % len(paths)]
        t0 = time.perf_counter()
        image = load(path)
        t1 = time.perf_counter()
        cropped = crop(image)
        t2 = time.perf_counter()
        oriented = orient(cropped)
        t3 = time.perf_counter()
        resize(oriented)
        t4 = time.perf_counter()
        if i < WARMUP:
            continue
        stages["load"].append(t1 - t0)
        stages["crop"].append(t2 - t1)
        stages["orient"].append(t3 - t2)
        stages["resize"].append(t4 - t3)
        totals.append(t4 - t0)
        shapes.add(tuple(oriented.shape[1:]))
    breakdown = {f"{k}_ms": round(_median_ms(v), 1) for k, v in stages.items()}
    crop_shapes = ", ".join(f"{h} x {w}" for h, w in sorted(shapes))
    return _row(name, source, totals, LOAD_TARGET, crop_mode=mode, crop_shapes=crop_shapes, **breakdown)


def bench_sampling(repeats: int, seed: int = 0) -> dict[str, Any]:
    """(b): S10 sampling (centres + 224-pixel patch crops) on a 1152 x 896 image with 2 findings."""
    specs = [FindingSpec("mass", "MALIGNANT"), FindingSpec("calcification", "BENIGN")]
    synth = synthesize_mammogram(seed, shape=SAMPLING_SHAPE, laterality="L", style="film", findings=specs)
    image = MetaTensor(
        torch.from_numpy(synth.pixels.astype(np.float32))[None], meta={"filename_or_obj": "synthetic_s10"}
    )
    masks = [torch.from_numpy(f.mask)[None] for f in synth.findings]
    classes = [int(PatchClass.MASS_MALIGNANT), int(PatchClass.CALC_BENIGN)]
    sampler = SamplePatches(patch_size=224, patch_set="S10")
    sampler.set_random_state(seed)
    times: list[float] = []
    n_patches = 0
    for i in range(WARMUP + repeats):
        t0 = time.perf_counter()
        samples = sampler(image, masks, classes)
        elapsed = time.perf_counter() - t0
        if i >= WARMUP:
            times.append(elapsed)
            n_patches = len(samples)
    source = f"synthetic {SAMPLING_SHAPE[0]} x {SAMPLING_SHAPE[1]}, 2 findings, patch 224"
    return _row("(b) S10 sampling, 1 core", source, times, SAMPLING_TARGET, patches_per_image=n_patches)


def _unbatch(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Collate function of the loader benchmark: crops differ in size, so no stacking."""
    return batch[0]


def bench_loader(
    paths: Sequence[Path], mode: ForegroundMode, workers: int, n_images: int, source: str
) -> list[dict[str, Any]]:
    """(c): the same pipeline through a MONAI DataLoader with ``workers`` processes.

    Two epochs with persistent workers: the first includes starting the workers, the second is
    the steady state. The main process's CPU time per image is recorded too (receiving the
    crops from the workers).
    """
    transform = Compose(
        [
            LoadMammogramd("image"),
            CropBreastd("image", mode=mode),
            OrientBreastd("image"),
            Resized("image", RESIZE_SHAPE, mode="area"),
        ]
    )
    items = [{"image": str(paths[i % len(paths)])} for i in range(n_images)]
    loader = DataLoader(
        Dataset(items, transform=transform),
        batch_size=1,
        num_workers=workers,
        collate_fn=_unbatch,
        persistent_workers=workers > 0,
    )
    rows = []
    for epoch in ("first epoch (workers start)", "second epoch (steady state)"):
        start, cpu_start = time.perf_counter(), time.process_time()
        count = sum(1 for _ in loader)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        row = _row(f"(c) DataLoader, {workers} workers, {epoch}", source, [elapsed / count] * count, None)
        row["median_ms"] = None  # only the end-to-end throughput is meaningful here
        row["main_cpu_ms_per_image"] = round(1000.0 * cpu / count, 1)
        rows.append(row)
    del loader  # stops the persistent workers
    return rows


def write_synthetic_dicom(folder: Path, seed: int = 0) -> Path:
    """A 3328 x 2560 16-bit film-style synthetic mammogram as DICOM (R CC, breast on the right)."""
    synth = synthesize_mammogram(seed, shape=FULL_SHAPE, laterality="R", view="CC", style="film")
    return write_mammogram_dicom(
        folder / "synthetic_R_CC.dcm",
        synth.pixels,
        laterality=synth.laterality,
        view=synth.view,
        bits_stored=synth.bits_stored,
        photometric=synth.photometric,
        window=synth.window,
        pixel_spacing=synth.pixel_spacing,
    )


def _measured(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` and add this process's RSS at the start and its peak during the call to its row(s)."""
    supported = reset_peak_rss()
    start = current_rss_mib()
    result = fn()
    peak = peak_rss_mib() if supported else None
    for row in result if isinstance(result, list) else [result]:
        row["rss_at_start_mib"] = start
        row["peak_rss_mib"] = peak
    return result


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The results as a Markdown table."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "**no**"
        return str(value)

    lines = [
        "| benchmark | input | n | median ms/image | load / crop / orient / resize ms | images/s | target | met "
        "| peak RSS MiB (at start) |",
        "|---|---|---:|---:|---|---:|---:|---|---:|",
    ]
    for r in rows:
        stages = (
            " / ".join(cell(r.get(k)) for k in ("load_ms", "crop_ms", "orient_ms", "resize_ms"))
            if "load_ms" in r
            else "-"
        )
        lines.append(
            f"| {r['benchmark']} | {r['input']} | {r['n']} | {cell(r['median_ms'])} | {stages} | "
            f"{r['images_per_s']} | {cell(r['target_images_per_s'])} | {cell(r['met'])} | "
            f"{cell(r.get('peak_rss_mib'))} ({cell(r.get('rss_at_start_mib'))}) |"
        )
    return "\n".join(lines)


def _on_one_core(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(threads[0])
        cv2.setNumThreads(threads[1])


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run (a)-(d), print the Markdown table and the peak memory, return the payload.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The JSON payload (also written to ``--json`` when given); the memory figures of (d)
        are in its notes and in the ``peak_rss_mib`` / ``rss_at_start_mib`` columns.

    Example::

        payload = run(["--quick", "--workers", "1"])
        [row["images_per_s"] for row in payload["rows"]]
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help=f"timed calls per benchmark after 2 warm-ups (default {FULL_REPEATS}; --quick {QUICK_REPEATS})",
    )
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes for (c)")
    parser.add_argument("--nyu-dir", type=Path, default=NYU_SAMPLE, help="folder of the real NYU sample PNGs")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    repeats = args.repeats or (QUICK_REPEATS if args.quick else FULL_REPEATS)

    baseline = current_rss_mib()  # torch, MONAI and OpenCV imported, nothing loaded yet
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    real = sorted(args.nyu_dir.glob("1_*_CC.png")) if args.nyu_dir.is_dir() else []
    real_source = "real NYU PNG 3328 x 2560 16-bit (1_L_CC, 1_R_CC)"
    synth_source = "synthetic DICOM 3328 x 2560 16-bit (film)"
    single = "(a) load+crop+orient+resize, 1 core"
    if not real:
        notes.append(f"{args.nyu_dir} not found; real-image rows skipped")
        print(f"note: {notes[-1]}")
    with tempfile.TemporaryDirectory() as tmp:
        synthetic = [write_synthetic_dicom(Path(tmp))]
        before = peak_rss_mib()  # the per-benchmark resets below also reset this figure
        if real:
            rows.append(
                _measured(
                    lambda: _on_one_core(
                        lambda: bench_load_crop_orient(real, "nyu", repeats, single, real_source)
                    )
                )
            )
        rows.append(
            _measured(
                lambda: _on_one_core(
                    lambda: bench_load_crop_orient(synthetic, "otsu", repeats, single, synth_source)
                )
            )
        )
        rows.append(_measured(lambda: _on_one_core(lambda: bench_sampling(repeats))))
        # (c): PyTorch gives each worker one thread; OpenCV is limited to one thread as well (the
        # setting is inherited by the forked workers), so N workers use about N cores
        cv2.setNumThreads(1)
        n_images = max(repeats, 4 * max(args.workers, 1))
        if real:
            rows.extend(_measured(lambda: bench_loader(real, "nyu", args.workers, n_images, real_source)))
        rows.extend(_measured(lambda: bench_loader(synthetic, "otsu", args.workers, n_images, synth_source)))
    peak = max([before] + [r["peak_rss_mib"] for r in rows if r.get("peak_rss_mib") is not None])
    notes += [
        f"(d) RSS of this process after the imports: {baseline} MiB; peak after writing the synthetic "
        f"image: {before} MiB; peak over the run: {peak} MiB (per benchmark: peak_rss_mib)",
        f"(d) peak RSS of the largest DataLoader worker: {children_peak_rss_mib()} MiB "
        "(counts the pages it shares with the parent after the fork)",
        f"torch {torch.__version__}, OpenCV {cv2.__version__}, {platform.processor() or platform.machine()}",
    ]
    print(format_table(rows))
    print()
    print("\n".join(notes))
    if args.json is not None:
        return write_json(args.json, "transforms", rows, args.quick, notes)
    return build_payload("transforms", rows, args.quick, notes)


if __name__ == "__main__":
    run()
