"""``monai-mammo compare``: the latest run of every model family side by side, from MLflow.

Example::

    monai-mammo compare --experiment synthetic-cbis-ddsm --markdown runs.md --csv runs.csv

Reads the project's tracking store (``MLFLOW_TRACKING_URI`` or the default SQLite file, see
``docs/mlflow.md``); prints a table of the key test metrics with their bootstrap CIs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from monai_mammo.engines.comparison import KEY_METRICS, format_table, latest_runs

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``compare`` options to ``parser``."""
    parser.add_argument("--experiment", default=None, help="only this experiment (dataset name); default all")
    parser.add_argument("--family", action="append", default=None, help="only this family (repeatable)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default: the project's store)")
    parser.add_argument(
        "--metric",
        action="append",
        default=None,
        help=f"metrics to show (repeatable; default {list(KEY_METRICS)})",
    )
    parser.add_argument("--all-statuses", action="store_true", help="also consider unfinished or failed runs")
    parser.add_argument("--csv", type=Path, default=None, help="also write the table as CSV")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table as Markdown")


def run(args: argparse.Namespace) -> int:
    """Print the table (and write the exports); exit 1 when no run matches."""
    runs = latest_runs(args.tracking_uri, args.experiment, args.family, include_unfinished=args.all_statuses)
    metrics = tuple(args.metric) if args.metric else KEY_METRICS
    if not runs:
        print("no finished runs with a model_family tag found")
        return 1
    print(format_table(runs, metrics, "text"), end="")
    for path, fmt in ((args.csv, "csv"), (args.markdown, "markdown")):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(format_table(runs, metrics, fmt))  # type: ignore[arg-type]
            print(f"wrote {path}")
    return 0
