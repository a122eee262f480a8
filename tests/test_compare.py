"""``monai-mammo compare``: latest parent run per family from a real MLflow store."""

from __future__ import annotations

import csv
import io

import pytest

from monai_mammo.cli import main
from monai_mammo.engines.comparison import format_table, latest_runs
from monai_mammo.engines.tracking import MLflowTracker
from monai_mammo.exceptions import MammoConfigError, MammoDataError


def _run(
    uri: str, tmp, family: str, auc: float, dataset: str = "synthetic-x", status: str = "FINISHED"
) -> str:
    tracker = MLflowTracker(family, dataset, output_dir=tmp, tracking_uri=uri)
    tracker.start()
    tracker.start_stage("test")
    tracker.log_metrics({"test_auc": auc + 0.5}, stage="test")  # a stage run's value must not be shown
    tracker.end_stage("test")
    tracker.log_metrics({"test_auc": auc, "test_auc_ci_low": auc - 0.1, "test_auc_ci_high": auc + 0.05})
    tracker.finish(status)
    return tracker.run_name


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    names = {
        "old_shen": _run(uri, tmp_path, "shen_end2end", 0.70),
        "shen": _run(uri, tmp_path, "shen_end2end", 0.80),
        "nyu": _run(uri, tmp_path, "nyu_multiview", 0.75),
        "failed": _run(uri, tmp_path, "nyu_multiview", 0.99, status="FAILED"),
        "other": _run(uri, tmp_path, "shen_end2end", 0.60, dataset="synthetic-y"),
    }
    return uri, names


def test_latest_finished_parent_run_per_family(store):
    uri, names = store
    runs = latest_runs(uri, experiment="synthetic-x")
    assert [(r.family, r.run_name) for r in runs] == [
        ("nyu_multiview", names["nyu"]),
        ("shen_end2end", names["shen"]),
    ]
    assert runs[1].metrics["test_auc"] == pytest.approx(0.80)
    assert len(latest_runs(uri)) == 3  # both experiments
    with_failed = latest_runs(uri, "synthetic-x", ["nyu_multiview"], include_unfinished=True)
    assert [r.run_name for r in with_failed] == [names["failed"]]


def test_tables_show_values_with_cis(store):
    uri, _ = store
    runs = latest_runs(uri, experiment="synthetic-x")
    text = format_table(runs)
    assert "0.800 [0.700, 0.850]" in text and "test_sensitivity" not in text  # absent metrics left out
    markdown = format_table(runs, fmt="markdown").splitlines()
    assert markdown[0].startswith("| experiment | family | run | test_auc")
    rows = list(csv.DictReader(io.StringIO(format_table(runs, fmt="csv"))))
    assert [float(r["test_auc"]) for r in rows] == pytest.approx([0.75, 0.80])
    assert float(rows[1]["test_auc_ci_low"]) == pytest.approx(0.70)
    with pytest.raises(MammoConfigError):
        format_table(runs, fmt="html")  # type: ignore[arg-type]


def test_unknown_experiment_names_the_existing_ones(store):
    uri, _ = store
    with pytest.raises(MammoDataError, match="synthetic-x"):
        latest_runs(uri, experiment="nope")


def test_cli_writes_exports(store, tmp_path, capsys):
    uri, names = store
    out_csv, out_md = tmp_path / "t.csv", tmp_path / "t.md"
    code = main(
        [
            "compare",
            "--tracking-uri",
            uri,
            "--experiment",
            "synthetic-x",
            "--csv",
            str(out_csv),
            "--markdown",
            str(out_md),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert names["shen"] in printed and names["nyu"] in printed
    assert out_csv.read_text().startswith("experiment,family,run,run_id,test_auc")
    assert "| nyu_multiview |" in out_md.read_text()
    assert main(["compare", "--tracking-uri", uri, "--family", "absent"]) == 1
