"""Benchmark: first vs cached epochs of the mammogram input pipeline, without cache, in memory, on disk.

The preprocessing is ``LoadMammogramd -> CropBreastd -> OrientBreastd -> Resized(1152 x 896)`` (the
Shen et al. input size) followed by a cheap ``RandFlipd``: MONAI caches the result of the
transforms before the first random one, so the flip runs on every access (shown by
``cached_prefix``). Datasets come from :func:`monai_mammo.data.caching.cached_dataset` with
``cache="none" | "memory" | "disk"``, read through a MONAI ``DataLoader`` with ``--workers`` worker
processes and with none (``workers=0``).

Inputs: ``--images`` synthetic 3328 x 2560 16-bit film-style DICOM files, written once into a
temporary folder (``synthesize_mammogram`` + ``write_mammogram_dicom``; four distinct phantoms, L/R
and CC/MLO, copied under distinct names, so every file is its own cache entry). ``--quick``: 6
images of 1664 x 1280 resized to 576 x 448.

Per (workers, mode) two rows: ``epoch="first"`` (building the dataset, which computes the memory
cache with ``max(workers, 1)`` threads, starting the workers and one pass) and ``epoch="cached"``
(the mean of ``--cached-epochs`` further passes, persistent workers). ``peak_rss_mib`` is the peak
resident memory of this process during the row (the memory cache lives here);
``cache_mib_in_memory`` / ``cache_mib_on_disk`` are the bytes held by the cache. Files are read
from the page cache (they were just written): a cold disk read is not measured.

Usage::

    nice python benchmarks/caching.py --images 16 --workers 2 --json /tmp/caching.json
    nice python benchmarks/caching.py --quick
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import torch
from _common import (
    add_common_arguments,
    build_payload,
    children_peak_rss_mib,
    command_line,
    markdown_table,
    peak_rss_mib,
    reset_peak_rss,
    write_json,
)
from monai.data import CacheDataset, DataLoader
from monai.transforms import Compose, RandFlipd, Resized

from monai_mammo.data.caching import CACHE_MODES, cached_dataset, cached_prefix, transform_fingerprint
from monai_mammo.data.dicom_writer import write_mammogram_dicom
from monai_mammo.data.synthetic.phantom import synthesize_mammogram
from monai_mammo.transforms import CropBreastd, LoadMammogramd, OrientBreastd

FULL_SHAPE, FULL_SIZE = (3328, 2560), (1152, 896)
QUICK_SHAPE, QUICK_SIZE = (1664, 1280), (576, 448)
DEFAULT_IMAGES, QUICK_IMAGES = 16, 6
PHANTOMS = (("L", "CC"), ("R", "CC"), ("L", "MLO"), ("R", "MLO"))
_MIB = 1024.0**2


def preprocessing(size: tuple[int, int], seed: int = 0) -> Compose:
    """The deterministic preprocessing (cached) and a random flip after it (never cached)."""
    transform = Compose(
        [
            LoadMammogramd("image"),
            CropBreastd("image", mode="otsu"),
            OrientBreastd("image"),
            Resized("image", size),
            RandFlipd("image", prob=0.5, spatial_axis=1),
        ]
    )
    return transform.set_random_state(seed)


def write_images(folder: Path, n_images: int, shape: tuple[int, int]) -> list[dict[str, Any]]:
    """Write up to four distinct synthetic DICOM phantoms and copy them to ``n_images`` files."""
    phantoms = []
    for seed, (laterality, view) in enumerate(PHANTOMS[: min(n_images, len(PHANTOMS))]):
        synth = synthesize_mammogram(seed, shape=shape, laterality=laterality, view=view, style="film")
        phantoms.append(
            write_mammogram_dicom(
                folder / f"phantom_{seed}_{laterality}_{view}.dcm",
                synth.pixels,
                laterality=laterality,
                view=view,
                bits_stored=synth.bits_stored,
                photometric=synth.photometric,
                window=synth.window,
                pixel_spacing=synth.pixel_spacing,
            )
        )
    items = []
    for i in range(n_images):
        path = folder / f"image_{i:04d}.dcm"
        shutil.copyfile(phantoms[i % len(phantoms)], path)
        items.append({"image": str(path), "label": i % 2})
    return items


def _megabytes_in_memory(dataset: Any) -> float | None:
    """Bytes of the images held by a CacheDataset, in MiB (None for the other datasets)."""
    if not isinstance(dataset, CacheDataset):
        return None
    return round(
        sum(item["image"].numel() * item["image"].element_size() for item in dataset._cache) / _MIB, 1
    )


def _megabytes_on_disk(folder: Path) -> float:
    """Size of the ``.pt`` files of a disk cache, in MiB."""
    return round(sum(p.stat().st_size for p in folder.glob("*.pt")) / _MIB, 1)


def _epoch(loader: DataLoader) -> int:
    """One pass over ``loader``; the number of images seen."""
    return sum(int(batch["image"].shape[0]) for batch in loader)


def bench_mode(
    mode: str,
    workers: int,
    items: list[dict[str, Any]],
    make_transform: Callable[[], Compose],
    cache_dir: Path,
    batch_size: int,
    cached_epochs: int,
) -> list[dict[str, Any]]:
    """The ``first`` and ``cached`` rows of one cache mode with ``workers`` DataLoader workers."""
    reset_peak_rss()
    start = time.perf_counter()
    dataset = cached_dataset(
        items, make_transform(), cache=mode, cache_dir=cache_dir, num_workers=max(workers, 1)
    )
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, persistent_workers=workers > 0)
    count = _epoch(loader)
    first = time.perf_counter() - start
    first_peak = peak_rss_mib()
    reset_peak_rss()
    start = time.perf_counter()
    cached_count = sum(_epoch(loader) for _ in range(cached_epochs))
    cached = (time.perf_counter() - start) / cached_epochs
    in_memory = _megabytes_in_memory(dataset)
    on_disk = _megabytes_on_disk(cache_dir) if mode == "disk" else None
    del loader  # stops the persistent workers
    rows = []
    for epoch, seconds, peak in (("first", first, first_peak), ("cached", cached, peak_rss_mib())):
        rows.append(
            {
                "mode": mode,
                "workers": workers,
                "epoch": epoch,
                "images": count if epoch == "first" else cached_count // cached_epochs,
                "seconds": round(seconds, 2),
                "images_per_s": round(count / seconds, 2),
                "peak_rss_mib": peak,
                "cache_mib_in_memory": in_memory,
                "cache_mib_on_disk": on_disk,
            }
        )
    return rows


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Write the synthetic DICOM files, time the epochs of every cache mode, print and return the figures.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The JSON payload (also written to ``--json`` when given).

    Example::

        payload = run(["--quick"])
        [(r["mode"], r["epoch"], r["images_per_s"]) for r in payload["rows"]]
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--images", type=int, default=None, help=f"images (default {DEFAULT_IMAGES}; --quick 6)"
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="DataLoader worker processes (plus a workers=0 run)"
    )
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--cached-epochs", type=int, default=2, help="passes averaged in the 'cached' rows")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    n_images = args.images or (QUICK_IMAGES if args.quick else DEFAULT_IMAGES)
    shape, size = (QUICK_SHAPE, QUICK_SIZE) if args.quick else (FULL_SHAPE, FULL_SIZE)
    # one OpenCV thread, inherited by the forked workers: N workers use about N cores
    cv2.setNumThreads(1)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        items = write_images(folder, n_images, shape)
        writing = time.perf_counter() - start
        for workers in dict.fromkeys((args.workers, 0)):
            for mode in CACHE_MODES:
                cache_dir = folder / f"cache_{mode}_{workers}"
                rows += bench_mode(
                    mode,
                    workers,
                    items,
                    lambda: preprocessing(size),
                    cache_dir,
                    args.batch_size,
                    args.cached_epochs,
                )
    transform = preprocessing(size)
    notes = [
        f"{n_images} synthetic {shape[0]} x {shape[1]} 16-bit film DICOM files "
        f"({min(n_images, len(PHANTOMS))} distinct phantoms, written in {writing:.1f} s), resized to "
        f"{size[0]} x {size[1]}, batch size {args.batch_size}, torch threads {torch.get_num_threads()}, "
        "OpenCV threads 1",
        "cached prefix (MONAI stops at the first random transform): "
        + " -> ".join(type(t).__name__ for t in cached_prefix(transform))
        + "; RandFlipd runs on every access",
        f"disk cache files: <item sha256><transform fingerprint {transform_fingerprint(transform)[:12]}...>.pt",
        "first = building the dataset (memory: computing the cache with max(workers, 1) threads) + "
        "starting the workers + one pass; cached = mean of "
        f"{args.cached_epochs} further passes with persistent workers",
        "peak_rss_mib: this process only (the memory cache lives here); largest worker over the run: "
        f"{children_peak_rss_mib()} MiB (includes pages shared with this process after the fork)",
        "files are read from the page cache (a cold disk read is not measured)",
    ]
    print(markdown_table(rows))
    print("\n".join(notes))
    command = command_line(argv)
    if args.json is not None:
        return write_json(args.json, "caching", rows, args.quick, notes, command)
    return build_payload("caching", rows, args.quick, notes, command)


def main() -> None:
    """Command-line entry point."""
    run()


if __name__ == "__main__":
    main()
