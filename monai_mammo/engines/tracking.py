"""MLflow tracking shared by every bundle: one store, one naming scheme, nested stage runs.

- Store: the explicit ``tracking_uri`` (a bundle's ``--tracking_uri``) if given, else
  ``MLFLOW_TRACKING_URI`` if set, else the project default
  ``sqlite:///<MONAI_MAMMO_HOME>/mlflow/mlflow.db`` (``MONAI_MAMMO_HOME`` defaults to
  ``~/.monai_mammo``), artifacts beside it, so one ``mlflow ui`` shows every family.
- Experiment: the dataset name. Runs: ``<family>-<YYYYmmdd-HHMMSS>-<4 hex>`` (never reused,
  so a crashed run is never continued by accident); each training stage is a nested run.
- Summaries on the parent run: a stage's best ``val_auc`` (:data:`PARENT_SUMMARY_METRICS`) when
  the stage ends, and ``curves/training_curves.png`` (every stage's per-epoch losses and
  validation rates) when the run finishes.
- If the store cannot be reached, training goes on: every call is appended to
  ``<output_dir>/mlflow_journal.jsonl`` and :func:`replay_journal` logs it afterwards.
"""

from __future__ import annotations

import atexit
import datetime
import inspect
import json
import logging
import math
import os
import secrets
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

from monai_mammo.engines.handlers import output_loss
from monai_mammo.engines.plots import save_training_curves

__all__ = [
    "default_home",
    "default_tracking_uri",
    "unique_run_name",
    "git_commit",
    "flatten_params",
    "current_bundle_config",
    "MLflowTracker",
    "MLflowEpochLogger",
    "replay_journal",
    "PARENT_SUMMARY_METRICS",
    "CONTRACT_METRICS",
    "CURVES_FILE",
]

logger = logging.getLogger(__name__)

# tag keys every bundle sets (the comparison CLI and docs rely on them)
COMMON_TAGS = ("model_family", "bundle_version", "dataset", "dataset_digest", "split_seed", "git_commit")

#: The metric contract: every family's parent run ends with these names, for the same quantity
#: (docs/mlflow.md, "Metric contract"); ``monai-mammo compare`` lines the families up on them.
CONTRACT_METRICS: tuple[str, ...] = (
    "test_auc",
    "test_auc_ci_low",
    "test_auc_ci_high",
    "test_a_auc",
    "test_sensitivity",
    "test_specificity",
    "val_auc",
)

#: Stage metrics whose best (max) value is logged on the parent run when the stage ends, so the
#: parent's latest value is the best of the last stage to end (``monai-mammo compare`` reads parents).
PARENT_SUMMARY_METRICS: tuple[str, ...] = ("val_auc",)

#: File name of the training-curve figure written to ``output_dir`` and logged under ``curves/``.
CURVES_FILE = "training_curves.png"


def default_home() -> Path:
    """``$MONAI_MAMMO_HOME`` or ``~/.monai_mammo``: default place of the MLflow store and dataset caches."""
    return Path(os.environ.get("MONAI_MAMMO_HOME", Path.home() / ".monai_mammo")).expanduser()


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the project's SQLite store under :func:`default_home`."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    db = default_home() / "mlflow" / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}"


def unique_run_name(family: str, stage: str | None = None) -> str:
    """``<family>[-<stage>]-<YYYYmmdd-HHMMSS>-<4 hex>``."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    parts = [family, stage, stamp, secrets.token_hex(2)]
    return "-".join(p for p in parts if p)


def git_commit(path: str | os.PathLike | None = None) -> str:
    """The git commit of the code (``unknown`` outside a checkout)."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten nested dicts/lists into ``a.b.0.c -> str(value)`` (MLflow params are flat strings)."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, f"{name}."))
        elif isinstance(value, (list, tuple)) and any(isinstance(v, Mapping) for v in value):
            for i, item in enumerate(value):
                flat.update(
                    flatten_params(item if isinstance(item, Mapping) else {"value": item}, f"{name}.{i}.")
                )
        else:
            flat[name] = str(value)[:6000]
    return flat


def current_bundle_config() -> dict[str, Any] | None:
    """The executed config (files merged, overrides applied) of the MONAI bundle workflow running now.

    Looks up the calling ``ConfigWorkflow`` on the stack; None outside a bundle run.
    """
    from monai.bundle import ConfigWorkflow

    for frame_info in inspect.stack(context=0):
        candidate = frame_info.frame.f_locals.get("self")
        if isinstance(candidate, ConfigWorkflow):
            return candidate.parser.get()
    return None


class MLflowTracker:
    """One MLflow parent run per bundle run, nested runs per stage, fail-safe.

    Args:
        family: model family (``shen_end2end``, ``nyu_multiview``...), tag ``model_family``.
        dataset: dataset name; also the experiment name unless ``experiment_name`` is given.
        output_dir: where the offline journal is written when the store is unreachable.
        tracking_uri: store URI; None for :func:`default_tracking_uri`.
        experiment_name: experiment (default: ``dataset``).
        run_name: parent run name (default: :func:`unique_run_name`).
        tags: further tags (``patch_set``, ``dataset_digest``, ``split_seed``...).
        params: hyperparameters, flattened and logged at start.
        enabled: False turns every call into a no-op (e.g. for unit tests of a bundle).
        bundle_version: tag ``bundle_version``.
        summarize: log the parent summaries (:data:`PARENT_SUMMARY_METRICS` at the end of each
            stage, the training-curve figure at :meth:`finish`); False when replaying a journal,
            which already holds them.

    Example::

        tracker = MLflowTracker("shen_end2end", "synthetic-cbis-ddsm", output_dir="outputs")
        tracker.start()
        tracker.start_stage("patch")
        tracker.log_metrics({"val_auc": 0.8}, step=1, stage="patch")
        tracker.finish()
    """

    def __init__(
        self,
        family: str,
        dataset: str,
        output_dir: str | os.PathLike = ".",
        tracking_uri: str | None = None,
        experiment_name: str | None = None,
        run_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        enabled: bool = True,
        bundle_version: str = "unknown",
        summarize: bool = True,
    ) -> None:
        self.family = family
        self.dataset = dataset
        self.output_dir = Path(output_dir)
        self.tracking_uri = tracking_uri or default_tracking_uri()
        self.experiment_name = experiment_name or dataset
        self.run_name = run_name or unique_run_name(family)
        self.tags = {
            "model_family": family,
            "dataset": dataset,
            "bundle_version": bundle_version,
            "git_commit": git_commit(),
            **{k: str(v) for k, v in (tags or {}).items()},
        }
        self.params = dict(params or {})
        self.enabled = enabled
        self.summarize = summarize
        self.offline = False
        self.client: Any = None
        self.run_id: str | None = None
        self.stage_runs: dict[str, str | None] = {}
        # {stage (None: parent): {metric: [(step, value), ...]}}, for the summaries
        self.history: dict[str | None, dict[str, list[tuple[int | None, float]]]] = {}
        self._summaries = 0

    # -- plumbing ----------------------------------------------------------------------------
    @property
    def journal_path(self) -> Path:
        """The offline journal (written only when the store is unreachable)."""
        return self.output_dir / "mlflow_journal.jsonl"

    def _journal(self, op: str, **fields: Any) -> None:
        self.journal_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.journal_path, "a") as f:
            f.write(json.dumps({"op": op, **fields}, default=str) + "\n")

    def _call(self, op: str, fn: Any, **fields: Any) -> Any:
        """Run an MLflow call; on failure switch to offline mode and journal it."""
        if not self.enabled:
            return None
        if not self.offline:
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - any store failure must not stop training
                self.offline = True
                self._journal("start", header=self._header(), online_run_id=self.run_id)
                logger.warning(
                    "MLflow store %s unreachable (%s: %s); training continues and tracking is journalled to %s "
                    "(replay it later with `monai-mammo mlflow replay %s`)",
                    self.tracking_uri,
                    type(exc).__name__,
                    exc,
                    self.journal_path,
                    self.journal_path,
                )
        if op != "start":
            self._journal(op, **fields)
        return None

    def _header(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment_name,
            "run_name": self.run_name,
            "tags": self.tags,
            "tracking_uri": self.tracking_uri,
        }

    # -- runs --------------------------------------------------------------------------------
    def start(self) -> str | None:
        """Create the experiment (if needed) and the parent run; log tags and params.

        Until :meth:`finish` is called, an exit of the interpreter (e.g. an exception escaping
        a bundle's ``run`` section, which skips its ``finalize``) finishes the run as ``FAILED``,
        so a crashed run is never left ``RUNNING``.
        """
        if not self.enabled:
            return None
        self.run_id = self._call("start", self._start_online)
        atexit.register(self._fail_if_open)
        if self.params:
            self.log_params(self.params)
        return self.run_id

    def _start_online(self) -> str:
        from mlflow.tracking import MlflowClient

        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        experiment = self.client.get_experiment_by_name(self.experiment_name)
        if experiment is None:
            artifact_location = None
            if self.tracking_uri.startswith("sqlite:///"):
                db = Path(self.tracking_uri[len("sqlite:///") :])
                artifact_location = (db.parent / "artifacts").resolve().as_uri()
            experiment_id = self.client.create_experiment(
                self.experiment_name, artifact_location=artifact_location
            )
        else:
            experiment_id = experiment.experiment_id
        run = self.client.create_run(experiment_id, run_name=self.run_name, tags=self.tags)
        return run.info.run_id

    def start_stage(self, stage: str, params: Mapping[str, Any] | None = None) -> str | None:
        """Open a nested run for ``stage`` (e.g. ``patch``, ``whole_image``, ``test``)."""
        if not self.enabled:
            return None

        def create() -> str:
            run = self.client.create_run(
                self.client.get_run(self.run_id).info.experiment_id,
                run_name=f"{self.run_name}-{stage}",
                tags={**self.tags, "stage": stage, "mlflow.parentRunId": self.run_id},
            )
            return run.info.run_id

        run_id = self._call("start_stage", create, stage=stage)
        self.stage_runs[stage] = run_id
        self.history.pop(stage, None)
        if params:
            self.log_params(params, stage=stage)
        return run_id

    def _run_for(self, stage: str | None) -> str | None:
        return self.stage_runs.get(stage) if stage else self.run_id

    def end_stage(self, stage: str, status: str = "FINISHED") -> None:
        """Close the nested run of ``stage``; log its best :data:`PARENT_SUMMARY_METRICS` on the parent."""
        if stage in self.stage_runs:
            run_id = self.stage_runs.pop(stage)
            self._log_stage_summary(stage)
            self._call(
                "end_stage", lambda: self.client.set_terminated(run_id, status), stage=stage, status=status
            )

    def _log_stage_summary(self, stage: str) -> None:
        """The stage's best value of each :data:`PARENT_SUMMARY_METRICS` on the parent run.

        Step = how many stages have been summarized so far, so the parent's latest value is the
        one of the last stage to end.
        """
        if not self.summarize:
            return
        curves = self.history.get(stage, {})
        best = {}
        for name in PARENT_SUMMARY_METRICS:
            values = [v for _, v in curves.get(name, []) if math.isfinite(v)]
            if values:
                best[name] = max(values)
        if best:
            self._summaries += 1
            self._send_metrics(best, step=self._summaries, stage=None)

    def _fail_if_open(self) -> None:
        """At interpreter exit: finish a run that was never finished as ``FAILED``."""
        logger.warning("MLflow run %s was not finished: marking it FAILED", self.run_name)
        try:
            self.finish("FAILED")
        except Exception as exc:  # at exit the store or the output folder may be gone: say so, never raise
            logger.warning("could not mark MLflow run %s FAILED: %s", self.run_name, exc)

    def finish(self, status: str = "FINISHED") -> None:
        """Close every open stage run, log the training curves, close the parent run; report where to look."""
        atexit.unregister(self._fail_if_open)
        for stage in list(self.stage_runs):
            self.end_stage(stage, status)
        if self.run_id is not None or self.offline:
            self._log_training_curves()
            self._call("finish", lambda: self.client.set_terminated(self.run_id, status), status=status)
        if self.enabled:
            where = self.journal_path if self.offline else self.tracking_uri
            logger.info("MLflow run %s (%s) recorded in %s", self.run_name, status, where)

    def _log_training_curves(self) -> None:
        """Write ``output_dir/training_curves.png`` from every per-epoch history; log it under ``curves/``."""
        if not self.summarize:
            return
        histories = {stage or "parent run": curves for stage, curves in self.history.items()}
        png = save_training_curves(histories, self.output_dir / CURVES_FILE)
        if png is not None:
            self.log_artifact(png, artifact_path="curves")

    # -- logging -----------------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any], stage: str | None = None) -> None:
        """Log (flattened) hyperparameters on the parent or a stage run."""
        from mlflow.entities import Param

        flat = flatten_params(params)

        def send() -> None:
            items = [Param(k, v) for k, v in flat.items()]
            for i in range(0, len(items), 90):
                self.client.log_batch(self._run_for(stage), params=items[i : i + 90])

        self._call("log_params", send, params=flat, stage=stage)

    def set_tags(self, tags: Mapping[str, Any], stage: str | None = None) -> None:
        """Set tags on the parent (and, with ``stage``, that stage's run)."""
        self.tags.update({k: str(v) for k, v in tags.items()} if stage is None else {})

        def send() -> None:
            for key, value in tags.items():
                self.client.set_tag(self._run_for(stage), key, str(value))

        self._call("set_tags", send, tags={k: str(v) for k, v in tags.items()}, stage=stage)

    def log_metrics(
        self, metrics: Mapping[str, float], step: int | None = None, stage: str | None = None
    ) -> None:
        """Log numeric metrics (non-finite values are logged as they are: MLflow shows NaN).

        Every value is also kept in :attr:`history` (per stage, with its step) for the stage
        summaries and the training curves.
        """
        values = {k: float(v) for k, v in metrics.items()}
        if self.enabled:
            curves = self.history.setdefault(stage, {})
            for name, value in values.items():
                curves.setdefault(name, []).append((step, value))
        self._send_metrics(values, step, stage)

    def _send_metrics(self, values: Mapping[str, float], step: int | None, stage: str | None) -> None:
        import time

        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)

        def send() -> None:
            batch = [Metric(k, v, stamp, step or 0) for k, v in values.items()]
            self.client.log_batch(self._run_for(stage), metrics=batch)

        self._call("log_metrics", send, metrics=values, step=step, stage=stage)

    def log_artifact(
        self, path: str | os.PathLike, stage: str | None = None, artifact_path: str | None = None
    ) -> None:
        """Upload a file (or a folder's files) as artifact(s)."""
        target = Path(path)
        if not target.exists():
            logger.warning("artifact %s does not exist; not logged", target)
            return

        def send() -> None:
            if target.is_dir():
                self.client.log_artifacts(self._run_for(stage), str(target), artifact_path)
            else:
                self.client.log_artifact(self._run_for(stage), str(target), artifact_path)

        self._call("log_artifact", send, path=str(target.resolve()), stage=stage, artifact_path=artifact_path)

    def log_dict(self, content: Mapping[str, Any], filename: str, stage: str | None = None) -> None:
        """Write ``content`` as JSON to ``output_dir/filename`` and log it as an artifact."""
        out = self.output_dir / filename
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(content, indent=1, default=str))
        self.log_artifact(out, stage=stage)

    def log_executed_config(self, filename: str = "executed_config.json") -> None:
        """Log the running bundle's executed config (merged files + overrides) as an artifact."""
        config = current_bundle_config()
        if config is not None:
            self.log_dict(config, filename)

    def log_dataset(
        self, name: str, records: Iterable[Mapping[str, Any]], digest: str, stage: str | None = None
    ) -> None:
        """Log a datalist as an MLflow dataset input (context ``name``) with its digest.

        Nested values (lists, dicts) are left out; the rows are journalled when the store is unreachable.
        """
        rows = [{k: str(v) for k, v in r.items() if not isinstance(v, (list, dict))} for r in records]

        def send() -> None:
            import mlflow.data
            import pandas as pd
            from mlflow.entities import DatasetInput, InputTag

            dataset = mlflow.data.from_pandas(  # type: ignore[attr-defined]
                pd.DataFrame(rows), name=f"{self.dataset}-{name}", digest=digest
            )
            inp = DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", name)])
            self.client.log_inputs(self._run_for(stage), datasets=[inp])

        self._call("log_dataset", send, name=name, rows=rows, digest=digest, stage=stage)

    def log_index_summary(
        self, summary: Mapping[str, Any], prefix: str = "index_", stage: str | None = None
    ) -> None:
        """Log a prepared datalist's ``summary`` (indexing and hygiene) as metrics.

        ``<prefix>rows_read``, ``<prefix>images``, ``<prefix>skipped`` and one
        ``<prefix>skipped_<reason>`` per skip reason, plus ``<prefix>duplicate_pairs`` (images in
        two splits). The list of skipped items is in the datalist JSON logged as an artifact.

        Args:
            summary: ``datalist["summary"]`` as written by :func:`~monai_mammo.data.prepare.prepare_datalist`.
            prefix: metric name prefix (e.g. ``"index_cbis_"`` for one of several datasets).
            stage: nested run to log to (default: the parent run).

        Example::

            tracker.log_index_summary(datalist["summary"])
        """
        counts = {str(k): int(v) for k, v in dict(summary.get("skip_counts", {})).items()}
        metrics = {
            f"{prefix}rows_read": float(summary.get("rows_read", 0)),
            f"{prefix}images": float(summary.get("images", 0)),
            f"{prefix}skipped": float(sum(counts.values())),
        }
        metrics.update({f"{prefix}skipped_{reason}": float(n) for reason, n in counts.items()})
        duplicates = dict(summary.get("hygiene", {})).get("duplicates", {})
        if duplicates:
            metrics[f"{prefix}duplicate_pairs"] = float(duplicates.get("n_pairs", 0))
        self.log_metrics(metrics, stage=stage)

    # -- Ignite --------------------------------------------------------------------------------
    def epoch_handler(
        self, stage: str, prefix: str = "", loss_name: str = "train_loss", output_transform: Any = None
    ) -> MLflowEpochLogger:
        """An Ignite handler logging the epoch's mean loss and ``engine.state.metrics`` to ``stage``'s run."""
        return MLflowEpochLogger(self, stage, prefix, loss_name, output_transform)


class MLflowEpochLogger:
    """Ignite handler: mean loss of the epoch plus the engine's metrics, logged to ``stage``'s run.

    Args:
        tracker: the run's :class:`MLflowTracker`.
        stage: nested run to log to.
        prefix: prefix of the metric names.
        loss_name: name of the epoch's mean loss.
        output_transform: engine output -> loss (default: ``output["loss"]``).
    """

    def __init__(
        self,
        tracker: MLflowTracker,
        stage: str,
        prefix: str = "",
        loss_name: str = "train_loss",
        output_transform: Any = None,
    ) -> None:
        self.tracker = tracker
        self.stage = stage
        self.prefix = prefix
        self.loss_name = loss_name
        self.output_transform = output_transform or output_loss
        self._losses: list[float] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda e: self._losses.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._log)

    def _collect(self, engine: Engine) -> None:
        value = self.output_transform(engine.state.output)
        if value is not None:
            self._losses.append(float(value))

    def _log(self, engine: Engine) -> None:
        metrics = {f"{self.prefix}{k}": v for k, v in engine.state.metrics.items() if _is_number(v)}
        if self._losses:
            metrics[self.loss_name] = sum(self._losses) / len(self._losses)
        if metrics:
            self.tracker.log_metrics(metrics, step=engine.state.epoch, stage=self.stage)


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def replay_journal(journal: str | os.PathLike, tracking_uri: str | None = None) -> str:
    """Log an offline journal into a store (after the store was unreachable during training).

    Replays stages, params, tags, metrics (with their steps; the parent summaries are in the
    journal already, so none is derived again), dataset inputs (same rows and digest) and
    artifacts (from the paths recorded, so the files must still be there).

    Args:
        journal: the ``mlflow_journal.jsonl`` written by :class:`MLflowTracker`.
        tracking_uri: target store; default: the URI recorded in the journal's start entry, else the default.

    Returns:
        The id of the parent run created.

    Raises:
        MammoDataError: the journal has no start entry.
        MammoConfigError: the target store is still unreachable.

    Example::

        run_id = replay_journal("outputs/mlflow_journal.jsonl", tracking_uri="sqlite:///mlflow.db")
    """
    entries = [json.loads(line) for line in Path(journal).read_text().splitlines() if line.strip()]
    start = next((e for e in entries if e["op"] == "start"), None)
    if start is None:
        from monai_mammo.exceptions import MammoDataError

        raise MammoDataError("journal has no start entry", journal)
    header = start.get("header", {})
    tracker = MLflowTracker(
        family=header.get("tags", {}).get("model_family", "unknown"),
        dataset=header.get("tags", {}).get("dataset", header.get("experiment", "unknown")),
        output_dir=Path(journal).parent / "replayed",
        tracking_uri=tracking_uri or header.get("tracking_uri"),
        experiment_name=header.get("experiment"),
        run_name=header.get("run_name"),
        tags=header.get("tags"),
        summarize=False,
    )
    tracker.start()
    for entry in entries:
        op, stage = entry["op"], entry.get("stage")
        if op == "start_stage":
            tracker.start_stage(stage)
        elif op == "log_params":
            tracker.log_params(entry["params"], stage=stage)
        elif op == "set_tags":
            tracker.set_tags(entry["tags"], stage=stage)
        elif op == "log_metrics":
            tracker.log_metrics(entry["metrics"], step=entry.get("step"), stage=stage)
        elif op == "log_dataset":
            tracker.log_dataset(entry["name"], entry.get("rows", []), entry["digest"], stage=stage)
        elif op == "log_artifact":
            tracker.log_artifact(entry["path"], stage=stage, artifact_path=entry.get("artifact_path"))
        elif op == "end_stage":
            tracker.end_stage(stage, entry.get("status", "FINISHED"))
    finish = next((e for e in reversed(entries) if e["op"] == "finish"), None)
    tracker.finish(finish["status"] if finish else "FAILED")
    if tracker.offline:
        from monai_mammo.exceptions import MammoConfigError

        raise MammoConfigError(f"store {tracker.tracking_uri} still unreachable; journal kept", journal)
    return tracker.run_id or ""
