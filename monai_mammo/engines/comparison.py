"""Compare the latest runs of every model family in an MLflow store (``monai-mammo compare``).

Every bundle logs its parent run with the tag ``model_family`` and its final test metrics under
the shared names (:data:`KEY_METRICS`), so one query over the parent runs gives a side-by-side
table. Nested stage runs (tag ``mlflow.parentRunId``) are skipped.

Example::

    rows = latest_runs(experiment="synthetic-cbis-ddsm")
    print(format_table(rows))
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from monai_mammo.engines.tracking import default_tracking_uri
from monai_mammo.exceptions import MammoConfigError, MammoDataError

__all__ = ["KEY_METRICS", "RunSummary", "latest_runs", "format_table"]

#: The metrics shown by default; a value ``X`` with ``X_ci_low``/``X_ci_high`` is shown with its CI.
KEY_METRICS: tuple[str, ...] = (
    "test_auc",
    "test_a_auc",
    "test_pr_auc",
    "test_sensitivity",
    "test_specificity",
    "test_accuracy",
    "val_auc",
)

TableFormat = Literal["text", "markdown", "csv"]


@dataclass
class RunSummary:
    """One parent run.

    Attributes:
        family: tag ``model_family``.
        experiment: experiment name (the dataset).
        run_name: the run's name.
        run_id: the run's id.
        status: ``FINISHED``, ``RUNNING``, ``FAILED``...
        start_time: start in ms since the epoch.
        metrics: the run's latest metric values.
        tags: the run's tags.
    """

    family: str
    experiment: str
    run_name: str
    run_id: str
    status: str
    start_time: int
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


def latest_runs(
    tracking_uri: str | None = None,
    experiment: str | None = None,
    families: Sequence[str] | None = None,
    include_unfinished: bool = False,
) -> list[RunSummary]:
    """The latest parent run of each (experiment, family) pair.

    Args:
        tracking_uri: the store (default: ``MLFLOW_TRACKING_URI``, else the project's default).
        experiment: only this experiment; None for all of them.
        families: only these families.
        include_unfinished: also consider RUNNING / FAILED / KILLED runs.

    Returns:
        Runs sorted by experiment, then family.

    Raises:
        MammoDataError: the named experiment does not exist, or the store cannot be read.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri or default_tracking_uri())
    try:
        if experiment is not None:
            found = client.get_experiment_by_name(experiment)
            if found is None:
                names = sorted(e.name for e in client.search_experiments())
                raise MammoDataError(
                    f"no experiment named {experiment!r}; the store has {names}", tracking_uri
                )
            experiments = [found]
        else:
            experiments = list(client.search_experiments())
        latest: dict[tuple[str, str], RunSummary] = {}
        for exp in experiments:
            runs = client.search_runs(
                [exp.experiment_id],
                filter_string="tags.model_family != ''",
                order_by=["attributes.start_time DESC"],
            )
            for run in runs:
                tags = dict(run.data.tags)
                family = tags.get("model_family", "")
                if "mlflow.parentRunId" in tags or (families and family not in families):
                    continue
                if not include_unfinished and run.info.status != "FINISHED":
                    continue
                key = (exp.name, family)
                if key not in latest:
                    latest[key] = RunSummary(
                        family=family,
                        experiment=exp.name,
                        run_name=run.info.run_name or "",
                        run_id=run.info.run_id,
                        status=run.info.status,
                        start_time=int(run.info.start_time or 0),
                        metrics=dict(run.data.metrics),
                        tags=tags,
                    )
    except MammoDataError:
        raise
    except Exception as exc:  # noqa: BLE001 - unreachable store, bad URI...
        raise MammoDataError(
            f"cannot read the MLflow store ({type(exc).__name__}: {exc})", tracking_uri
        ) from exc
    return [latest[key] for key in sorted(latest)]


def _cell(metrics: Mapping[str, float], name: str) -> str:
    value = metrics.get(name)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    low, high = metrics.get(f"{name}_ci_low"), metrics.get(f"{name}_ci_high")
    if low is not None and high is not None:
        return f"{value:.3f} [{low:.3f}, {high:.3f}]"
    return f"{value:.3f}"


def format_table(
    runs: Sequence[RunSummary], metrics: Sequence[str] = KEY_METRICS, fmt: TableFormat = "text"
) -> str:
    """Render runs as an aligned text table, a Markdown table or CSV.

    Text and Markdown cells show ``value [ci_low, ci_high]`` when the CI is logged; CSV has one
    column per metric and per CI bound. Metrics no run has are left out.

    Args:
        runs: from :func:`latest_runs`.
        metrics: metric names, in column order.
        fmt: ``"text"``, ``"markdown"`` or ``"csv"``.

    Returns:
        The table (ends with a newline).

    Raises:
        MammoConfigError: an unknown format.
    """
    if fmt not in ("text", "markdown", "csv"):
        raise MammoConfigError(f"format must be 'text', 'markdown' or 'csv', got {fmt!r}")
    shown = [m for m in metrics if any(m in run.metrics for run in runs)]
    head = ["experiment", "family", "run"]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        columns = [c for m in shown for c in (m, f"{m}_ci_low", f"{m}_ci_high")]
        writer.writerow([*head, "run_id", *columns])
        for run in runs:
            values = ["" if run.metrics.get(c) is None else f"{run.metrics[c]:.6g}" for c in columns]
            writer.writerow([run.experiment, run.family, run.run_name, run.run_id, *values])
        return out.getvalue()
    rows = [
        [run.experiment, run.family, run.run_name, *(_cell(run.metrics, m) for m in shown)] for run in runs
    ]
    header = [*head, *shown]
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines) + "\n"
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n"
