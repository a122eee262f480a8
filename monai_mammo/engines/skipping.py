"""Ignite handler counting and reporting the samples skipped by :class:`~monai_mammo.data.skipping.SkipBadSamples`.

The skip records reach the engine inside each batch (under
:data:`~monai_mammo.data.skipping.SKIPPED_KEY`, put there by
:class:`~monai_mammo.data.skipping.SkipAwareCollate` in the loader's worker processes); the
handler takes them out before the iteration runs, so that no workflow sees the key.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

from monai_mammo.data.skipping import SKIPPED_KEY
from monai_mammo.engines.tracking import MLflowTracker
from monai_mammo.exceptions import MammoConfigError, MammoTrainingError

__all__ = ["SkippedSamplesHandler"]

logger = logging.getLogger(__name__)


class SkippedSamplesHandler:
    """Count, log and bound the samples skipped in each epoch of a MONAI/Ignite engine.

    Each epoch: the distinct skipped samples (by index and source) are counted, the count
    (0 included) is logged as metric ``name`` (step = epoch) to the tracker's ``stage`` run and
    a warning names every file and reason. At completion (and before stopping), when samples
    were skipped, all records with their epoch are written to ``<output_dir>/<stage>/<name>.json``,
    logged as an artifact and summarised in one log line.

    Args:
        tracker: the run's :class:`~monai_mammo.engines.tracking.MLflowTracker` (None: no MLflow).
        stage: the tracker's (open) stage run to log to, also the report's folder; None: the
            stage run opened last and still open (the parent run when none), so that one
            handler serves an evaluator shared by successive stages.
        name: metric and report name (e.g. ``"val_skipped_samples"`` for a validation loader).
        max_skip_fraction: largest tolerated fraction of an epoch's samples that is skipped.
        output_dir: folder of the report (default: the tracker's ``output_dir``, else ``"."``).

    Raises:
        MammoConfigError: ``max_skip_fraction`` outside [0, 1].
        MammoTrainingError: (during the run) an epoch skipped more than ``max_skip_fraction``.

    Example::

        SkippedSamplesHandler(tracker, stage="whole_image", max_skip_fraction=0.05).attach(trainer)
    """

    def __init__(
        self,
        tracker: MLflowTracker | None = None,
        stage: str | None = None,
        name: str = "skipped_samples",
        max_skip_fraction: float = 0.05,
        output_dir: str | os.PathLike | None = None,
    ) -> None:
        if not 0.0 <= max_skip_fraction <= 1.0:
            raise MammoConfigError(f"max_skip_fraction must be within [0, 1], got {max_skip_fraction}")
        self.tracker = tracker
        self.stage = stage
        self.name = name
        self.max_skip_fraction = max_skip_fraction
        default_dir = tracker.output_dir if tracker is not None else Path(".")
        self.output_dir = Path(output_dir) if output_dir is not None else default_dir
        self.records: list[dict[str, Any]] = []
        self._epoch: dict[tuple[Any, Any], dict[str, Any]] = {}

    @property
    def current_stage(self) -> str | None:
        """The stage run logged to: ``stage``, else the tracker's last open stage (None: parent run)."""
        if self.stage is not None or self.tracker is None:
            return self.stage
        return next(reversed(self.tracker.stage_runs), None)

    @property
    def stage_records(self) -> list[dict[str, Any]]:
        """The skip records (with ``stage`` and ``epoch``) of the current stage."""
        return [r for r in self.records if r["stage"] == self.current_stage]

    @property
    def report_path(self) -> Path:
        """``<output_dir>/<stage>/<name>.json``: every skip record with its epoch."""
        return self.output_dir / (self.current_stage or "") / f"{self.name}.json"

    def attach(self, engine: Engine) -> None:
        """Collect the records of each batch, report at each epoch's end and at completion.

        Args:
            engine: the trainer or evaluator whose data loader yields :class:`SkipAwareCollate` batches.
        """
        engine.add_event_handler(Events.EPOCH_STARTED, lambda e: self._epoch.clear())
        engine.add_event_handler(Events.GET_BATCH_COMPLETED, self.collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def collect(self, engine: Engine) -> None:
        """Pop the batch's skip records (deduplicated by index and source within the epoch)."""
        batch = engine.state.batch
        if not isinstance(batch, MutableMapping):
            return
        for record in batch.pop(SKIPPED_KEY, None) or []:
            self._epoch.setdefault((record["index"], record["source"]), record)

    def epoch_completed(self, engine: Engine) -> None:
        """Log the epoch's count, warn with the files, stop when too many samples were skipped.

        Raises:
            MammoTrainingError: the skipped fraction exceeds ``max_skip_fraction``.
        """
        epoch = engine.state.epoch
        skipped = sorted(self._epoch.values(), key=lambda r: r["index"])
        self.records += [{"stage": self.current_stage, "epoch": epoch, **r} for r in skipped]
        if self.tracker is not None:
            self.tracker.log_metrics({self.name: len(skipped)}, step=epoch, stage=self.current_stage)
        if not skipped:
            return
        total = _epoch_size(engine)
        details = "; ".join(f"{r['source']}: {r['message']}" for r in skipped)
        logger.warning(
            "[%s] epoch %d: skipped %d of %d samples: %s",
            self.current_stage,
            epoch,
            len(skipped),
            total,
            details,
        )
        if total and len(skipped) / total > self.max_skip_fraction:
            self.write_report()
            raise MammoTrainingError(
                f"epoch {epoch} skipped {len(skipped)} of {total} samples, more than max_skip_fraction="
                f"{self.max_skip_fraction}: {details}",
                self.report_path,
            )

    def completed(self, engine: Engine) -> None:
        """Write the report when samples were skipped (the per-epoch metric records the zeros)."""
        if self.stage_records:
            self.write_report()

    def write_report(self) -> None:
        """Write the current stage's records to :attr:`report_path`, log it as an artifact and a summary line."""
        records = self.stage_records
        self.report_path.parent.mkdir(parents=True, exist_ok=True)
        self.report_path.write_text(json.dumps(records, indent=1, default=str))
        if self.tracker is not None:
            self.tracker.log_artifact(self.report_path, stage=self.current_stage)
        reasons = {r["source"]: r["message"] for r in records}
        logger.warning(
            "[%s] %s: skipped %d samples (%d skips over %d epochs, report %s)%s",
            self.current_stage,
            self.name,
            len(reasons),
            len(records),
            len({r["epoch"] for r in records}),
            self.report_path,
            "".join(f"\n  {source}: {message}" for source, message in sorted(reasons.items())),
        )


def _epoch_size(engine: Engine) -> int:
    """Samples drawn per epoch: the sampler's length (per rank under DDP), else the dataset's."""
    loader = engine.state.dataloader
    for part in (getattr(loader, "sampler", None), getattr(loader, "dataset", None)):
        try:
            return len(part)  # type: ignore[arg-type]
        except TypeError:
            continue
    return 0
