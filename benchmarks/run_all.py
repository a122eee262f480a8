"""Run every benchmark, one subprocess each, and write ``<host>-<date>.json`` and ``.md`` results.

Each benchmark runs as ``python benchmarks/<name>.py --json <tmp> [...]`` in its own process,
so its peak RSS is its own and a crash or a timeout is recorded (exit status, the end of its
error output) without stopping the suite. A script that does not exist yet is reported as
missing. The results go to ``<out>/<host>-<YYYY-MM-DD>.json`` (environment, command, and per
benchmark: status, exit code, wall time, peak RSS of its largest process, its payload) and
``<out>/<host>-<YYYY-MM-DD>.md`` (hardware, versions, command, one table per benchmark, and
the input pipeline against the training step). ``--quick`` runs write ``...-quick.json`` /
``...-quick.md`` so that they never overwrite a full run of the same day.

The subprocesses get the repository root prepended to ``PYTHONPATH``: they import the
``monai_mammo`` of this checkout.

Usage::

    python benchmarks/run_all.py --quick
    python benchmarks/run_all.py --device cuda                 # full run on a GPU machine
    python benchmarks/run_all.py --only transforms indexing --out /tmp/results
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import (
    check_rows,
    command_line,
    default_device,
    environment,
    format_value,
    markdown_table,
)

from monai_mammo.exceptions import MammoDataError

BENCHMARK_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCHMARK_DIR.parent
DEFAULT_OUT = BENCHMARK_DIR / "results"
ERROR_TAIL = 2000  # characters of a failed benchmark's error output kept in the results


@dataclass(frozen=True)
class Plan:
    """How the suite runs: quick or full, the device, and the machine's usable cores.

    Args:
        quick: reduced runs (each script's ``--quick``).
        device: ``"cpu"`` or ``"cuda"`` (``--device``, else the scripts' default).
        cores: usable CPU cores (the DataLoader worker count of the full transforms and caching runs).
    """

    quick: bool
    device: str
    cores: int


def _workers(plan: Plan) -> str:
    """DataLoader workers of a full run: the usable cores, at most 8 (quick runs: 2)."""
    return "2" if plan.quick else str(max(1, min(plan.cores, 8)))


def _transforms_args(plan: Plan) -> list[str]:
    return (
        ["--quick", "--workers", _workers(plan)]
        if plan.quick
        else ["--repeats", "20", "--workers", _workers(plan)]
    )


def _caching_args(plan: Plan) -> list[str]:
    return ["--quick", "--workers", _workers(plan)] if plan.quick else ["--workers", _workers(plan)]


def _heatmaps_args(plan: Plan) -> list[str]:
    args = ["--quick"] if plan.quick else []
    if plan.device == "cuda":
        args += ["--amp", "--batch-size", "128"] + ([] if plan.quick else ["--repeats", "3"])
    return args


def _quick_only(plan: Plan) -> list[str]:
    return ["--quick"] if plan.quick else []


def _indexing_args(plan: Plan) -> list[str]:
    return ["--quick"] if plan.quick else ["--rows", "1000000"]


#: benchmark name -> its arguments (besides ``--json`` and ``--device``), in running order
BENCHMARKS: dict[str, Callable[[Plan], list[str]]] = {
    "transforms": _transforms_args,
    "caching": _caching_args,
    "heatmaps": _heatmaps_args,
    "training_step": _quick_only,
    "indexing": _indexing_args,
}


def _takes_option(script: Path, option: str, env: Mapping[str, str]) -> bool:
    """Whether ``script --help`` lists ``option``."""
    result = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, env=env, cwd=REPO_ROOT
    )
    return result.returncode == 0 and option in result.stdout


def _child_env() -> dict[str, str]:
    """This environment with the repository root first on ``PYTHONPATH``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def _wait(process: subprocess.Popen, timeout: float | None) -> tuple[int, float | None, bool]:
    """Wait for ``process`` (killed after ``timeout`` s): exit code, peak RSS in MiB, timed out.

    The peak RSS comes from ``os.wait4``: the largest of the process and its waited-for
    children (e.g. DataLoader workers); None where ``wait4`` is unavailable.
    """
    killed = threading.Event()

    def kill() -> None:  # the whole process group: DataLoader workers included
        killed.set()
        os.killpg(process.pid, signal.SIGKILL)

    timer = threading.Timer(timeout, kill) if timeout else None
    if timer:
        timer.start()
    try:
        if hasattr(os, "wait4"):
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            scale = 1 / 1024.0**2 if sys.platform == "darwin" else 1 / 1024.0
            peak: float | None = round(usage.ru_maxrss * scale, 1)
        else:
            process.wait()
            peak = None
    finally:
        if timer:
            timer.cancel()
    return int(process.returncode), peak, killed.is_set()


def run_benchmark(
    name: str,
    arguments: Sequence[str],
    device: str | None,
    timeout: float | None,
    scripts: Path = BENCHMARK_DIR,
) -> dict[str, Any]:
    """Run ``scripts/<name>.py [--device D] <arguments> --json <tmp>`` and record the outcome.

    Args:
        name: the script's stem.
        arguments: its arguments besides ``--json`` and ``--device``.
        device: passed as ``--device`` when the script lists that option, else not passed.
        timeout: seconds before the process is killed (None: no limit).
        scripts: the folder of the scripts.

    Returns:
        ``name``, ``status`` (``ok``, ``missing``, ``failed``, ``timeout``, ``no output``,
        ``invalid output``), ``exit_code``, ``wall_s``, ``peak_rss_mib``,
        ``load_average_1min_after`` (other jobs on the cores lower the figures), ``command``,
        ``error`` (the end of its error output, or the problem with its payload) and
        ``payload`` (None unless ``ok``). Its output is echoed to this process's stdout.
    """
    script = scripts / f"{name}.py"
    record: dict[str, Any] = {
        "name": name,
        "status": "missing",
        "exit_code": None,
        "wall_s": None,
        "peak_rss_mib": None,
        "load_average_1min_after": None,
        "command": None,
        "error": None,
        "payload": None,
    }
    if not script.is_file():
        record["error"] = f"{script} does not exist"
        return record
    env = _child_env()
    extra = ["--device", device] if device and _takes_option(script, "--device", env) else []
    with tempfile.TemporaryDirectory() as tmp:
        out, log = Path(tmp) / f"{name}.json", Path(tmp) / "stderr.txt"
        argv = [str(script.relative_to(REPO_ROOT) if script.is_relative_to(REPO_ROOT) else script)]
        argv += [*extra, *arguments]
        record["command"] = shlex.join(["python", *argv])  # as reproduced by hand: without --json
        print(f"== {name}: {record['command']}", flush=True)
        start = time.perf_counter()
        with open(log, "w") as err:
            process = subprocess.Popen(
                [sys.executable, *argv, "--json", str(out)],
                stderr=err,
                env=env,
                cwd=REPO_ROOT,
                start_new_session=True,
            )
            code, peak, timed_out = _wait(process, timeout)
        record.update(
            exit_code=code,
            wall_s=round(time.perf_counter() - start, 1),
            peak_rss_mib=peak,
            load_average_1min_after=round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        )
        errors = log.read_text(errors="replace")
        sys.stdout.write(errors)
        if timed_out or code != 0:
            record["status"] = "timeout" if timed_out else "failed"
            record["error"] = errors[-ERROR_TAIL:]
        elif not out.is_file():
            record["status"], record["error"] = "no output", f"exit 0 but {out.name} was not written"
        else:
            record["status"], record["payload"], record["error"] = _read_payload(out, name)
    return record


def _read_payload(path: Path, name: str) -> tuple[str, dict[str, Any] | None, str | None]:
    """(status, payload, error) of a benchmark's JSON output, checked against the contract."""
    try:
        payload = json.loads(path.read_text())
        if not isinstance(payload, dict) or not isinstance(payload.get("rows"), list):
            raise MammoDataError("no 'rows' list", path.name)
        payload["rows"] = check_rows(payload["rows"])
    except (ValueError, MammoDataError) as error:  # JSONDecodeError is a ValueError
        return "invalid output", None, f"{name}: {error}"
    return "ok", payload, None


def _number(value: Any) -> float | None:
    """``value`` as a float when it is a number (not a bool), else None."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _best_cached(rows: Sequence[Mapping[str, Any]], family: Any) -> Mapping[str, Any] | None:
    """The fastest ``epoch == "cached"`` caching row, of ``family`` when the rows name families."""
    cached = [r for r in rows if r.get("epoch") == "cached" and _number(r.get("images_per_s")) is not None]
    if any("family" in r for r in cached):
        cached = [r for r in cached if r.get("family") == family]
    return max(cached, key=lambda r: _number(r["images_per_s"]) or 0.0, default=None)


def _fastest_steps(training_rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Per (family, device), the training row with the most images/s (the hardest to feed)."""
    fastest: dict[tuple[Any, Any], Mapping[str, Any]] = {}
    for row in training_rows:
        rate = _number(row.get("images_per_s"))
        if "family" not in row or rate is None:
            continue
        key = (row["family"], row.get("device"))
        if key not in fastest or rate > (_number(fastest[key]["images_per_s"]) or 0.0):
            fastest[key] = row
    return list(fastest.values())


def pipeline_vs_training(
    training_rows: Sequence[Mapping[str, Any]], caching_rows: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Compare, per family and device, the fastest training step with the cached input pipeline.

    Training rows need ``family`` and ``images_per_s`` (``device``, ``precision`` and
    ``channels_last`` are shown); per family and device the fastest row counts, as the one the
    pipeline must keep up with. Caching rows count when ``epoch == "cached"``; the fastest wins
    (matched on ``family`` when the caching rows have that key), shown with its ``mode`` and
    ``workers`` (or ``num_workers``). The pipeline starves the step when it delivers fewer
    images/s than the step consumes.

    Args:
        training_rows: rows of the ``training_step`` payload.
        caching_rows: rows of the ``caching`` payload.

    Returns:
        One row per family and device, in first-seen order: ``family``, ``device``,
        ``precision``, ``channels_last``, ``training_images_per_s``, ``input_mode``,
        ``input_workers``, ``input_images_per_s``, ``input_over_training`` and ``starves``
        (None when the pipeline figure is missing).

    Example::

        >>> pipeline_vs_training(
        ...     [{"family": "shen_end2end", "device": "cuda", "precision": "fp16", "images_per_s": 300.0}],
        ...     [{"epoch": "cached", "mode": "persistent", "workers": 8, "images_per_s": 900.0}],
        ... )[0]["starves"]
        False
    """
    comparison = []
    for train in _fastest_steps(training_rows):
        step = float(train["images_per_s"])
        best = _best_cached(caching_rows, train["family"])
        supply = _number(best.get("images_per_s")) if best else None
        comparison.append(
            {
                "family": train["family"],
                "device": train.get("device"),
                "precision": train.get("precision"),
                "channels_last": train.get("channels_last"),
                "training_images_per_s": step,
                "input_mode": best.get("mode") if best else None,
                "input_workers": best.get("workers", best.get("num_workers")) if best else None,
                "input_images_per_s": supply,
                "input_over_training": round(supply / step, 2) if supply is not None and step > 0 else None,
                "starves": None if supply is None else supply < step,
            }
        )
    return comparison


def _payload_rows(records: Sequence[Mapping[str, Any]], name: str) -> list[dict[str, Any]]:
    """The rows of benchmark ``name`` when it ran fine, else an empty list."""
    for record in records:
        if record["name"] == name and record["payload"] is not None:
            return list(record["payload"]["rows"])
    return []


def _status_of(records: Sequence[Mapping[str, Any]], name: str) -> str:
    return next((r["status"] for r in records if r["name"] == name), "not run")


def _comparison_section(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The "Input pipeline vs training step" section of the Markdown report."""
    lines = ["## Input pipeline vs training step", ""]
    training, caching = _payload_rows(records, "training_step"), _payload_rows(records, "caching")
    if not training or not caching:
        lines.append(
            f"Not available: training_step {_status_of(records, 'training_step')}, "
            f"caching {_status_of(records, 'caching')} (both are needed)."
        )
        return lines
    rows = pipeline_vs_training(training, caching)
    if not rows:
        lines.append("Not available: no training_step row has both `family` and `images_per_s`.")
        return lines
    quick = [
        r["name"] for r in records if r["name"] in ("training_step", "caching") and r["payload"].get("quick")
    ]
    table = [
        {**row, "starves": None if row["starves"] is None else ("yes" if row["starves"] else "no")}
        for row in rows
    ]
    lines += [
        "Training step: images/s of the fastest configuration per family and device (`training_step`); "
        'input pipeline: images/s of the fastest cached mode (`caching`, `epoch == "cached"`) with its '
        "DataLoader worker count. The pipeline starves the GPU when it delivers fewer images/s than the "
        "step consumes.",
        "",
        markdown_table(table),
        "",
        "The comparison is only meaningful on the device the training figure comes from: the input "
        "pipeline runs on this machine's CPU cores; a training figure measured on another device (or "
        "on these same CPU cores, which the pipeline then competes for) does not tell whether this "
        "pipeline would keep that device busy.",
    ]
    if not any("family" in row for row in caching):
        lines += [
            "",
            "The caching rows name no family: the one pipeline they measure (see the caching notes) is "
            "compared with every family; a family whose preprocessing differs (input size, views) "
            "needs a figure of its own.",
        ]
    if quick:
        lines += [
            "",
            f"Quick run ({', '.join(quick)}): reduced sizes and counts, so these figures do not answer the "
            "question for the paper sizes; use a full run.",
        ]
    return lines


def _hardware_line(env: Mapping[str, Any]) -> str:
    gpu = f"{env['gpu']} ({env['gpu_memory_gib']} GiB) x {env['gpu_count']}" if env.get("gpu") else "none"
    return (
        f"- Hardware: {env.get('cpu_model')}, {env.get('logical_cores')} logical cores "
        f"({env.get('usable_cores')} usable), {env.get('ram_gib')} GiB RAM; GPU: {gpu}; "
        f"1-min load average at start: {env.get('load_average_1min')}"
    )


def _versions_line(env: Mapping[str, Any]) -> str:
    names = ("python", "torch", "cuda", "monai", "numpy", "pydicom", "opencv")
    return (
        "- Software: "
        + ", ".join(f"{n} {env.get(n) or '-'}" for n in names)
        + (f"; commit {env.get('git_commit') or '-'}")
    )


def render_markdown(report: Mapping[str, Any]) -> str:
    """The Markdown report of a suite run (the JSON written by :func:`main`).

    Args:
        report: ``environment``, ``command``, ``quick``, ``device``, ``started_utc`` and
            ``benchmarks`` (the records of :func:`run_benchmark`).

    Returns:
        Markdown: hardware, versions and command lines; a summary table (status, wall time,
        peak RSS); per benchmark its command, table and notes (or why it is missing); the
        input pipeline against the training step.
    """
    env, records = report["environment"], report["benchmarks"]
    lines = [
        f"# Benchmarks: {env.get('hostname')}, {report['started_utc']}",
        "",
        _hardware_line(env),
        _versions_line(env),
        f"- Command: `{report['command']}` ({'quick' if report['quick'] else 'full'} run, device {report['device']})",
        "",
        "## Summary",
        "",
        markdown_table(
            [
                {
                    "benchmark": r["name"],
                    "status": r["status"],
                    "exit_code": r["exit_code"],
                    "wall_s": r["wall_s"],
                    "peak_rss_mib": r["peak_rss_mib"],
                    "load_average_1min_after": r["load_average_1min_after"],
                }
                for r in records
            ]
        ),
        "",
        "`peak_rss_mib`: the largest resident size of the benchmark's process and of its children "
        "(e.g. DataLoader workers). `load_average_1min_after`: the machine's 1-minute load average when "
        "the benchmark ended; above the number of usable cores, other jobs competed for the CPU and the "
        "figures are lower bounds.",
    ]
    for record in records:
        lines += ["", f"## {record['name']}", ""]
        if record["payload"] is None:
            detail = (record["error"] or "").strip().splitlines()[-1:] or ["-"]
            code = "" if record["exit_code"] is None else f" (exit code {record['exit_code']})"
            lines.append(f"**{record['status']}**{code}: {detail[0]}")
            continue
        lines += [f"`{record['command']}`", "", markdown_table(record["payload"]["rows"])]
        notes = record["payload"].get("notes") or []
        if notes:
            lines += [""] + [f"- {note}" for note in notes]
    lines += [""] + _comparison_section(records)
    return "\n".join(lines) + "\n"


def _host_slug(hostname: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", hostname).strip("-") or "host"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the suite and write the JSON and Markdown results.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The report written as JSON (with ``json_path`` and ``markdown_path`` added).

    Example::

        report = main(["--quick", "--only", "indexing", "--out", "/tmp/results"])
        report["benchmarks"][0]["status"]  # "ok"
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced runs (each script's --quick)")
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default=None, help="passed to the scripts that take it"
    )
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), default=None, metavar="NAME")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder")
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds per benchmark before it is killed"
    )
    args = parser.parse_args(argv)
    started = datetime.datetime.now(datetime.timezone.utc)
    env = environment()
    plan = Plan(args.quick, args.device or default_device(), env["usable_cores"] or 1)
    names = [name for name in BENCHMARKS if args.only is None or name in args.only]
    records = [run_benchmark(name, BENCHMARKS[name](plan), args.device, args.timeout) for name in names]
    report = {
        "suite": "monai_mammo benchmarks",
        "command": command_line(argv),
        "quick": args.quick,
        "device": plan.device,
        "started_utc": started.isoformat(timespec="seconds"),
        "environment": env,
        "benchmarks": records,
    }
    stem = f"{_host_slug(env['hostname'])}-{started:%Y-%m-%d}" + ("-quick" if args.quick else "")
    args.out.mkdir(parents=True, exist_ok=True)
    json_path, markdown_path = args.out / f"{stem}.json", args.out / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    markdown_path.write_text(render_markdown(report))
    print(f"\nwritten: {json_path}\nwritten: {markdown_path}")
    for record in records:
        print(f"{record['name']}: {record['status']} ({format_value(record['wall_s'])} s)")
    return {**report, "json_path": str(json_path), "markdown_path": str(markdown_path)}


if __name__ == "__main__":
    main()
