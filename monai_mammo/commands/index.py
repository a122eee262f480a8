"""``monai-mammo index``: index a dataset folder into a MONAI datalist JSON with patient-level splits.

Example::

    monai-mammo index --format cbis-ddsm /data/cbis-ddsm --out datalist.json --split-preset paper --seed 0

The JSON holds ``"training"``, ``"validation"`` and ``"test"`` lists (schema in
:mod:`monai_mammo.data.schema`) and the ``"summary"`` of what was indexed and skipped; the
summary is also printed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from monai_mammo.data.indexers import INDEXERS, index_dataset
from monai_mammo.data.splits import SPLIT_PRESETS, assert_patient_disjoint, split_by_patient
from monai_mammo.exceptions import MammoDataError

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``index`` options to ``parser``."""
    parser.add_argument("root", type=Path, help="the dataset folder")
    parser.add_argument("--format", required=True, choices=sorted(INDEXERS), help="dataset layout")
    parser.add_argument("--out", required=True, type=Path, help="datalist JSON to write")
    parser.add_argument(
        "--split-preset",
        choices=sorted(SPLIT_PRESETS),
        default="paper",
        help="train/val/test patient fractions: paper = 0.765/0.085/0.15 (85/15, 10%% of training for "
        "validation), inbreast = 0.7/0/0.3 (default: paper)",
    )
    parser.add_argument(
        "--ratios",
        nargs=3,
        type=float,
        metavar=("TRAIN", "VAL", "TEST"),
        help="fractions overriding the preset",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the patient split (default: 0)")
    parser.add_argument(
        "--official-split",
        action="store_true",
        help="keep the dataset's official test split (e.g. the CBIS-DDSM test CSVs) and draw validation "
        "patients from its training split",
    )
    parser.add_argument(
        "--on-error",
        choices=("skip", "raise"),
        default="skip",
        help="skip (and report) bad rows and files, or stop at the first one (default: skip)",
    )
    parser.add_argument(
        "--no-check-files",
        action="store_true",
        help="paths-only mode: do not open image files (paths kept as written in the dataset's tables)",
    )


def run(args: argparse.Namespace) -> int:
    """Index, split by patient, write the datalist and print the summary.

    Returns:
        0 on success.

    Raises:
        MammoDataError: missing folder, unreadable dataset, or no image indexed.
        MammoConfigError: invalid ratios.
    """
    root: Path = args.root
    if not root.is_dir():
        raise MammoDataError("dataset folder not found", root)
    result = index_dataset(args.format, root, on_error=args.on_error, check_files=not args.no_check_files)
    print(result.summary.format())
    if not result.items:
        raise MammoDataError(f"no image could be indexed as {args.format} (see the skips above)", root)
    ratios = tuple(args.ratios) if args.ratios else SPLIT_PRESETS[args.split_preset]
    splits = split_by_patient(result.items, ratios=ratios, seed=args.seed, use_official=args.official_split)
    assert_patient_disjoint(splits)
    for name, items in splits.items():
        patients = len({item["patient_id"] for item in items})
        positives = sum(1 for item in items if item.get("label") == 1)
        print(f"{name}: {len(items)} images, {patients} patients, {positives} with label 1")
    out = result.write(args.out, splits)
    print(f"wrote {out}")
    return 0
