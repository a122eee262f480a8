"""``monai-mammo bundle``: pack a trained bundle for sharing, verify a packed one.

Example::

    monai-mammo bundle pack bundles/shen_end2end --checkpoint models/whole_image/model.pt --out dist/
    monai-mammo bundle pack bundles/nyu_multiview --checkpoint models/cancer/model.pt \
        --extra-checkpoint patch_checkpoint=models/patch/model.pt --out dist/
    monai-mammo bundle verify dist/shen_end2end.zip
    python -m monai.bundle download --name shen_end2end --url file://$PWD/dist/shen_end2end.zip --bundle_dir models/
    python -m monai.bundle run --config_file models/shen_end2end/configs/inference.json --input_dir scans/

See :mod:`monai_mammo.sharing` for the archive's layout.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from monai_mammo.sharing import pack_bundle, verify_bundle

__all__ = ["add_arguments", "run"]


def _key_and_file(text: str) -> tuple[str, str]:
    """``KEY=FILE`` of ``--extra-checkpoint`` -> ``(KEY, FILE)``."""
    key, sep, file = text.partition("=")
    if not (sep and key and file):
        raise argparse.ArgumentTypeError(f"expected KEY=FILE, got {text!r}")
    return key, file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``pack BUNDLE --out DIR [--checkpoint F] [--extra-checkpoint KEY=F ...] [--name N] [--torchscript]``
    and ``verify PATH [--no-forward] [--show-code]``."""
    sub = parser.add_subparsers(dest="action", required=True)
    pack = sub.add_parser("pack", help="zip a bundle with its checkpoints, checksums and verified metadata")
    pack.add_argument("bundle", type=Path, help="the bundle folder, e.g. bundles/shen_end2end")
    pack.add_argument("--out", type=Path, default=Path("dist"), help="output folder (default: dist)")
    pack.add_argument(
        "--checkpoint",
        default=None,
        help="weights to ship as models/model.pt, relative to the bundle or absolute (default: models/model.pt)",
    )
    pack.add_argument(
        "--extra-checkpoint",
        type=_key_and_file,
        action="append",
        default=[],
        metavar="KEY=FILE",
        help="also ship FILE as models/KEY.pt and point inference.json's KEY at it (repeatable), "
        "e.g. patch_checkpoint=models/patch/model.pt",
    )
    pack.add_argument("--name", default=None, help="bundle name (default: the folder name)")
    pack.add_argument(
        "--torchscript", action="store_true", help="also ship models/model.ts (single-input networks)"
    )
    verify = sub.add_parser(
        "verify", help="check a packed bundle: checksums, shipped checkpoints, metadata, a forward pass"
    )
    verify.add_argument("path", type=Path, help="<name>.zip or an extracted bundle folder")
    verify.add_argument(
        "--no-forward", action="store_true", help="skip building the network (no config is evaluated)"
    )
    verify.add_argument(
        "--show-code", action="store_true", help="list every $-expression and _target_ the configs would run"
    )


def run(args: argparse.Namespace) -> int:
    """Pack or verify; ``verify`` exits 1 when a check fails."""
    if args.action == "pack":
        path = pack_bundle(
            args.bundle,
            args.out,
            checkpoint=args.checkpoint,
            extra_checkpoints=dict(args.extra_checkpoint),
            name=args.name,
            torchscript=args.torchscript,
        )
        print(f"packed {path}")
        return 0
    report = verify_bundle(args.path, forward=not args.no_forward)
    print(f"{report.name}: {report.files_checked} files match their checksums")
    files = sorted({file for file, _, _ in report.expressions})
    print(
        f"the configs hold {len(report.expressions)} $-expressions / _target_ entries in {len(files)} files: "
        "bundle configs are code, run only bundles you trust"
        + ("" if args.show_code else " (--show-code lists them)")
    )
    if args.show_code:
        for file, cid, text in report.expressions:
            print(f"  {file}:{cid}: {text}")
    if report.output_shape is not None:
        print(f"forward pass output shape: {report.output_shape}")
    for error in report.errors:
        print(f"error: {error}")
    print("OK" if report.ok else "FAILED")
    return 0 if report.ok else 1
