"""``monai-mammo synth``: write a synthetic mammography dataset in a real dataset's on-disk layout.

Example::

    monai-mammo synth --format cbis-ddsm /tmp/cbis --patients 12 --seed 0 --size 288 224 --style film
    monai-mammo index --format cbis-ddsm /tmp/cbis --out /tmp/cbis.json
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path
from typing import Any

from monai_mammo.data.synthetic.writers import WRITERS, get_writer
from monai_mammo.exceptions import MammoConfigError

__all__ = ["add_arguments", "run"]

_CASE_COUNTS = ("n_patients", "n_exams", "n_studies")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``synth`` options to ``parser``."""
    parser.add_argument("out", type=Path, help="destination folder (created)")
    parser.add_argument("--format", required=True, choices=sorted(WRITERS), help="dataset layout to write")
    parser.add_argument(
        "--patients",
        type=int,
        help="number of patients (exams for nyu, studies for vindr; default: the writer's)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), help="image rows and columns")
    parser.add_argument(
        "--style", choices=("film", "digital"), help="acquisition style (default: the writer's)"
    )
    parser.add_argument(
        "--broken",
        nargs="+",
        default=[],
        metavar="CASE",
        help="problems to inject, e.g. for cbis-ddsm: mask_size_mismatch missing_mask for_processing corrupt_file",
    )
    parser.add_argument("--overwrite", action="store_true", help="allow writing into a non-empty folder")


def run(args: argparse.Namespace) -> int:
    """Write the dataset and print where.

    Returns:
        0 on success.

    Raises:
        MammoConfigError: a non-empty destination without ``--overwrite``, an option the
            format's writer does not take, or an invalid option value.
    """
    out: Path = args.out
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not args.overwrite)):
        raise MammoConfigError("destination exists and is not an empty folder (use --overwrite)", out)
    writer = get_writer(args.format)
    accepted = inspect.signature(writer).parameters
    # --patients is the writer's unit of cases: patients, NYU exams or VinDr studies
    n_cases = next((name for name in _CASE_COUNTS if name in accepted), _CASE_COUNTS[0])
    options: dict[str, tuple[str, Any]] = {
        "seed": ("--seed", args.seed),
        n_cases: ("--patients", args.patients),
        "image_shape": ("--size", tuple(args.size) if args.size else None),
        "style": ("--style", args.style),
        "broken": ("--broken", tuple(args.broken) or None),
    }
    kwargs = {}
    for name, (flag, value) in options.items():
        if value is None:
            continue
        if name not in accepted:
            raise MammoConfigError(f"{flag} is not supported by the {args.format} writer")
        kwargs[name] = value
    root = writer(out, **kwargs)
    n_files = sum(1 for path in Path(root).rglob("*") if path.is_file())
    print(f"wrote a synthetic {args.format} dataset ({n_files} files) to {root}")
    return 0
