"""The ``monai-mammo`` command (also ``python -m monai_mammo``).

Each subcommand lives in ``monai_mammo.commands.<name>`` and provides
``add_arguments(parser)`` and ``run(args) -> int``; modules are imported only when their
subcommand runs, so ``monai-mammo --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from monai_mammo.exceptions import MammoError

__all__ = ["main", "SUBCOMMANDS"]

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "synth": (
        "monai_mammo.commands.synth",
        "generate a synthetic mammography dataset in a real on-disk layout",
    ),
    "index": ("monai_mammo.commands.index", "index a dataset folder into a MONAI datalist JSON with splits"),
    "mlflow": (
        "monai_mammo.commands.mlflow",
        "MLflow helpers: replay a run journalled while the store was unreachable",
    ),
    "compare": (
        "monai_mammo.commands.compare",
        "the latest run of every model family side by side (MLflow), with CIs; CSV/Markdown export",
    ),
    "bundle": ("monai_mammo.commands.bundle", "pack a trained bundle for sharing, or verify a packed one"),
}


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with one sub-parser per registered subcommand."""
    parser = argparse.ArgumentParser(prog="monai-mammo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse ``argv`` and run the chosen subcommand.

    Returns:
        The process exit code (0 success, 1 data/config error, 2 usage error).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in SUBCOMMANDS:
        parser.parse_args(argv)  # prints help/usage errors and exits
        parser.print_help()
        return 2
    name = argv[0]
    module = importlib.import_module(SUBCOMMANDS[name][0])
    sub_parser = argparse.ArgumentParser(prog=f"monai-mammo {name}", description=SUBCOMMANDS[name][1])
    module.add_arguments(sub_parser)
    args = sub_parser.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except MammoError as exc:
        print(f"monai-mammo {name}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
