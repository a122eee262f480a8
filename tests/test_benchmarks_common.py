"""The benchmark suite's plumbing: JSON payload, Markdown tables, the runner and the comparison.

No timing is asserted: the benchmarks themselves are scripts, not tests. The runner is
exercised on tiny stand-in scripts written to a temporary folder.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from monai_mammo.exceptions import MammoDataError

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import _common  # noqa: E402
import run_all  # noqa: E402

ENV = {
    "hostname": "gpu-node/1",
    "cpu_model": "Test CPU",
    "logical_cores": 16,
    "usable_cores": 16,
    "ram_gib": 128.0,
    "load_average_1min": 0.5,
    "gpu": "NVIDIA H200",
    "gpu_memory_gib": 139.8,
    "gpu_count": 1,
    "cuda": "12.8",
    "python": "3.11.7",
    "torch": "2.13.0",
    "monai": "1.6.1",
    "numpy": "2.4.6",
    "pydicom": "3.0.2",
    "opencv": "5.0.0",
    "git_commit": "abc123",
}

TRAINING = [
    {"family": "shen", "device": "cuda", "precision": "fp32", "channels_last": False, "images_per_s": 90.0},
    {"family": "shen", "device": "cuda", "precision": "fp16", "channels_last": True, "images_per_s": 400.0},
    {"family": "nyu", "device": "cuda", "precision": "bf16", "channels_last": False, "images_per_s": 50.0},
    {"family": "shen", "device": "cuda", "precision": "bf16", "channels_last": True, "images_per_s": 350.0},
    {"family": "wu", "device": "cuda", "precision": "fp32", "images_per_s": None},  # out of memory
]
CACHING = [
    {"epoch": "first", "mode": "persistent", "workers": 8, "images_per_s": 5000.0},  # not cached: ignored
    {"epoch": "cached", "mode": "memory", "workers": 8, "images_per_s": 120.0},
    {"epoch": "cached", "mode": "persistent", "workers": 8, "images_per_s": 300.5},
    {"epoch": "cached", "mode": "none", "workers": 8, "images_per_s": None},
]


def test_write_json_payload(tmp_path: Path) -> None:
    rows = [{"mode": "cached", "images_per_s": 812.5, "met": True, "note": None}]
    path = tmp_path / "sub" / "caching.json"
    payload = _common.write_json(
        path, "caching", rows, quick=True, notes=["first note"], command="python x.py"
    )
    written = json.loads(path.read_text())
    assert written == payload
    assert list(written) == ["benchmark", "command", "quick", "environment", "rows", "notes"]
    assert written["benchmark"] == "caching" and written["command"] == "python x.py"
    assert written["quick"] is True and written["rows"] == rows and written["notes"] == ["first note"]
    env = written["environment"]
    assert env["logical_cores"] >= 1 and env["usable_cores"] >= 1
    assert env["torch"] and env["monai"] and env["python"].count(".") == 2
    assert (env["gpu"] is None) == (env["gpu_memory_gib"] is None)


def test_command_line_quotes_arguments() -> None:
    command = _common.command_line(["--size", "1300", "650", "--note", "a b"])
    assert command.startswith("python ") and command.endswith("--size 1300 650 --note 'a b'")


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ({"shapes": [1, 2]}, "key 'shapes'"),
        ({"images_per_s": float("nan")}, "not finite"),
        ({1: 2.0}, "keys must be strings"),
    ],
)
def test_check_rows_rejects_non_scalars(row: dict, problem: str) -> None:
    with pytest.raises(MammoDataError, match=problem) as raised:
        _common.check_rows([{"ok": 1}, row])
    assert raised.value.source is not None and raised.value.source.startswith("row 1")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "-"),
        (True, "yes"),
        (False, "no"),
        (7, "7"),
        (1234.56, "1235"),
        (9.634, "9.63"),
        (0.012345, "0.0123"),
        (8.94e-08, "8.94e-08"),
        ("a|b\nc", "a\\|b c"),
    ],
)
def test_format_value(value: object, text: str) -> None:
    assert _common.format_value(value) == text


def test_markdown_table_union_of_keys() -> None:
    table = _common.markdown_table(
        [{"mode": "cached", "images_per_s": 812.46}, {"mode": "disk", "n": 3, "ok": False}]
    )
    assert table.splitlines() == [
        "| mode | images_per_s | n | ok |",
        "|---|---:|---:|---|",
        "| cached | 812 | - | - |",
        "| disk | - | 3 | no |",
    ]
    assert _common.markdown_table([]) == "(no rows)"
    assert _common.markdown_table([{"a": 1, "b": 2}], columns=["b"]).splitlines()[2] == "| 2 |"


def test_peak_rss_is_at_least_current() -> None:
    _common.reset_peak_rss()
    current = _common.current_rss_mib()
    assert current is None or _common.peak_rss_mib() >= current - 1.0
    assert _common.children_peak_rss_mib() >= 0.0


def test_pipeline_vs_training_best_cached_mode() -> None:
    rows = run_all.pipeline_vs_training(TRAINING, CACHING)
    assert [r["family"] for r in rows] == ["shen", "nyu"]
    shen, nyu = rows
    assert (shen["precision"], shen["channels_last"]) == ("fp16", True)  # the fastest shen step
    assert shen["input_mode"] == "persistent" and shen["input_workers"] == 8
    assert shen["input_images_per_s"] == 300.5 and shen["training_images_per_s"] == 400.0
    assert shen["starves"] is True and shen["input_over_training"] == 0.75
    assert nyu["starves"] is False and nyu["input_over_training"] == 6.01


def test_pipeline_vs_training_matches_families() -> None:
    caching = [
        {"family": "shen", "epoch": "cached", "mode": "memory", "num_workers": 4, "images_per_s": 500.0},
        {"family": "nyu", "epoch": "cached", "mode": "memory", "num_workers": 4, "images_per_s": 20.0},
    ]
    shen, nyu = run_all.pipeline_vs_training(TRAINING, caching)
    assert (shen["input_images_per_s"], shen["input_workers"], shen["starves"]) == (500.0, 4, False)
    assert (nyu["input_images_per_s"], nyu["starves"]) == (20.0, True)
    missing = run_all.pipeline_vs_training(TRAINING, [{"epoch": "first", "images_per_s": 1.0}])
    assert [(r["input_images_per_s"], r["starves"]) for r in missing] == [(None, None), (None, None)]


def _record(name: str, rows: list | None, status: str = "ok", quick: bool = False) -> dict:
    payload = (
        None if rows is None else {"benchmark": name, "quick": quick, "rows": rows, "notes": [f"{name} note"]}
    )
    return {
        "name": name,
        "status": status,
        "exit_code": 0 if rows is not None else None,
        "wall_s": 12.3 if rows is not None else None,
        "peak_rss_mib": 700.0 if rows is not None else None,
        "load_average_1min_after": 1.5 if rows is not None else None,
        "command": f"python benchmarks/{name}.py --quick",
        "error": None if rows is not None else f"benchmarks/{name}.py does not exist",
        "payload": payload,
    }


def _report(records: list[dict]) -> dict:
    return {
        "environment": ENV,
        "command": "python benchmarks/run_all.py --quick",
        "quick": True,
        "device": "cuda",
        "started_utc": "2026-11-24T01:00:00+00:00",
        "benchmarks": records,
    }


def test_render_markdown_sections_and_comparison() -> None:
    records = [
        _record("caching", CACHING),
        _record("training_step", TRAINING),
        _record("indexing", None, status="missing"),
    ]
    text = run_all.render_markdown(_report(records))
    assert "NVIDIA H200 (139.8 GiB) x 1" in text and "torch 2.13.0" in text and "cuda 12.8" in text
    assert "`python benchmarks/run_all.py --quick` (quick run, device cuda)" in text
    assert "| caching | ok | 0 | 12.3 | 700 | 1.5 |" in text
    assert "| indexing | missing | - | - | - | - |" in text
    assert "**missing**: benchmarks/indexing.py does not exist" in text
    assert "- caching note" in text and "`python benchmarks/caching.py --quick`" in text
    section = text.split("## Input pipeline vs training step", 1)[1]
    assert "| shen | cuda | fp16 | yes | 400 | persistent | 8 | 300 | 0.75 | yes |" in section
    assert "| nyu | cuda | bf16 | no | 50 | persistent | 8 | 300 | 6.01 | no |" in section
    assert "Quick run" not in section and "The caching rows name no family" in section
    assert "only meaningful on the device the training figure comes from" in section


def test_render_markdown_comparison_needs_both() -> None:
    text = run_all.render_markdown(_report([_record("training_step", TRAINING)]))
    assert "Not available: training_step ok, caching not run (both are needed)." in text
    quick = [_record("caching", CACHING, quick=True), _record("training_step", TRAINING)]
    assert "Quick run (caching): reduced sizes" in run_all.render_markdown(_report(quick))


SCRIPTS = {
    "good": """
        import json, sys
        rows = [{"images_per_s": 12.5, "quick": "--quick" in sys.argv}]
        path = sys.argv[sys.argv.index("--json") + 1]
        json.dump({"benchmark": "good", "command": "x", "quick": True, "environment": {},
                   "rows": rows, "notes": []}, open(path, "w"))
        """,
    "crash": """
        raise RuntimeError("out of memory in step 3")
        """,
    "silent": """
        pass
        """,
    "bad": """
        import json, sys
        path = sys.argv[sys.argv.index("--json") + 1]
        json.dump({"benchmark": "bad", "rows": [{"shape": [1, 2]}]}, open(path, "w"))
        """,
    "slow": """
        import time
        time.sleep(60)
        """,
}


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    for name, body in SCRIPTS.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    return tmp_path


def test_run_benchmark_ok(scripts: Path) -> None:
    record = run_all.run_benchmark("good", ["--quick"], None, 60.0, scripts=scripts)
    assert record["status"] == "ok" and record["exit_code"] == 0 and record["error"] is None
    assert record["payload"]["rows"] == [{"images_per_s": 12.5, "quick": True}]
    assert record["command"].endswith("good.py --quick") and "--json" not in record["command"]
    assert record["peak_rss_mib"] is None or record["peak_rss_mib"] > 0
    assert record["load_average_1min_after"] is None or record["load_average_1min_after"] >= 0


@pytest.mark.parametrize(
    ("name", "status", "error"),
    [
        ("crash", "failed", "RuntimeError: out of memory in step 3"),
        ("silent", "no output", "was not written"),
        ("bad", "invalid output", "key 'shape'"),
        ("absent", "missing", "does not exist"),
    ],
)
def test_run_benchmark_failures_are_recorded(scripts: Path, name: str, status: str, error: str) -> None:
    record = run_all.run_benchmark(name, [], None, 60.0, scripts=scripts)
    assert record["status"] == status and record["payload"] is None
    assert error in record["error"]
    assert (record["exit_code"] == 1) == (name == "crash")


def test_run_benchmark_timeout(scripts: Path) -> None:
    record = run_all.run_benchmark("slow", [], None, 0.5, scripts=scripts)
    assert record["status"] == "timeout" and record["exit_code"] == -9 and record["wall_s"] < 30
