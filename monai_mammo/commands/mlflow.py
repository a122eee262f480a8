"""``monai-mammo mlflow``: MLflow helpers (replay an offline journal into a store)."""

from __future__ import annotations

import argparse

from monai_mammo.engines.tracking import default_tracking_uri, replay_journal


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``replay JOURNAL [--tracking-uri URI]``."""
    sub = parser.add_subparsers(dest="action", required=True)
    replay = sub.add_parser("replay", help="log a run recorded while the tracking store was unreachable")
    replay.add_argument("journal", help="the mlflow_journal.jsonl written next to the run's outputs")
    replay.add_argument(
        "--tracking-uri", default=None, help="target store (default: the journal's, else the project default)"
    )


def run(args: argparse.Namespace) -> int:
    """Replay the journal and print the new run id."""
    run_id = replay_journal(args.journal, tracking_uri=args.tracking_uri)
    print(f"logged run {run_id} to {args.tracking_uri or default_tracking_uri()}")
    return 0
