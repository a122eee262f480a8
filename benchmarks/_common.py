"""Shared helpers of the benchmark scripts: environment, JSON payload, Markdown table, peak RSS.

Every script in ``benchmarks/`` writes the same JSON payload (see ``benchmarks/README.md``)::

    {"benchmark": "<name>", "command": "<the command line>", "quick": false,
     "environment": {...}, "rows": [{...}], "notes": ["..."]}

``rows`` is a flat list of dicts whose values are ``str``, ``int``, finite ``float``, ``bool`` or
``None`` (the keys are the columns of the Markdown table).

The scripts import this module as ``from _common import ...``: run as ``python
benchmarks/<name>.py``, Python puts ``benchmarks/`` first on ``sys.path``.

Example::

    from _common import add_common_arguments, write_json

    parser = argparse.ArgumentParser()
    add_common_arguments(parser, device=True)
    args = parser.parse_args(argv)
    rows = [{"mode": "cached", "images_per_s": 812.5}]
    payload = write_json(args.json, "caching", rows, args.quick) if args.json else None
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import math
import os
import platform
import resource
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from monai_mammo.exceptions import MammoDataError

__all__ = [
    "REPO_ROOT",
    "add_common_arguments",
    "build_payload",
    "check_rows",
    "children_peak_rss_mib",
    "command_line",
    "current_rss_mib",
    "default_device",
    "environment",
    "format_value",
    "markdown_table",
    "peak_rss_mib",
    "reset_peak_rss",
    "write_json",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
_MIB = 1024.0**2


def _cpu_model() -> str:
    """The ``model name`` line of ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    """Total memory in GiB from ``/proc/meminfo``, None where unavailable."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / _MIB, 1)
    except OSError:
        pass
    return None


def _usable_cores() -> int | None:
    """Cores this process may run on (``os.sched_getaffinity``), None where unsupported."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return None


def _module_version(name: str) -> str | None:
    """``__version__`` of an importable module, None when it is not installed."""
    try:
        return str(importlib.import_module(name).__version__)
    except ImportError:
        return None


def _git_commit() -> str | None:
    """The repository's ``HEAD`` commit, with ``+dirty`` when the working tree has changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def environment() -> dict[str, Any]:
    """The machine and software a benchmark ran on.

    Returns:
        A flat dict: ``hostname``, ``cpu_model``, ``logical_cores`` (``os.cpu_count``),
        ``usable_cores`` (``os.sched_getaffinity``), ``ram_gib``, ``load_average_1min``,
        ``gpu`` and ``gpu_memory_gib`` (None without CUDA), ``gpu_count``, ``cuda`` (the CUDA
        version torch was built with, None for a CPU build), ``python``, ``torch``, ``monai``,
        ``numpy``, ``pydicom``, ``opencv``, ``git_commit``, ``platform``, ``timestamp_utc``.

    Example::

        >>> env = environment()
        >>> env["gpu"] is None or isinstance(env["gpu"], str)
        True
    """
    cuda = torch.cuda.is_available()
    properties = torch.cuda.get_device_properties(0) if cuda else None
    return {
        "hostname": socket.gethostname(),
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": _usable_cores(),
        "ram_gib": _ram_gib(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "gpu": properties.name if properties else None,
        "gpu_memory_gib": round(properties.total_memory / 1024.0**3, 1) if properties else None,
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": _module_version("monai"),
        "numpy": _module_version("numpy"),
        "pydicom": _module_version("pydicom"),
        "opencv": _module_version("cv2"),
        "git_commit": _git_commit(),
        "platform": platform.platform(),
        "timestamp_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def default_device() -> str:
    """``"cuda"`` when a CUDA device is available, else ``"cpu"`` (the ``--device`` default)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def add_common_arguments(parser: argparse.ArgumentParser, device: bool = False) -> None:
    """Add the contract's options: ``--json PATH``, ``--quick`` and, if asked, ``--device``.

    Args:
        parser: the script's parser.
        device: also add ``--device {cpu,cuda}`` (default: :func:`default_device`).
    """
    parser.add_argument("--json", type=Path, default=None, help="also write the payload to this JSON file")
    parser.add_argument("--quick", action="store_true", help="reduced run (minutes on 2 CPU cores)")
    if device:
        parser.add_argument("--device", choices=("cpu", "cuda"), default=default_device())


def command_line(argv: Sequence[str] | None = None) -> str:
    """The shell command that reproduces this run: ``python <script> <arguments>``.

    Args:
        argv: the arguments after the script (default: ``sys.argv[1:]``).

    Returns:
        The quoted command line, e.g. ``python benchmarks/indexing.py --rows 1000``.
    """
    arguments = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["python", sys.argv[0], *arguments])


def check_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Check that ``rows`` are flat dicts of JSON scalars and return them as a list.

    Args:
        rows: the result rows.

    Returns:
        The rows, as a list of dicts.

    Raises:
        MammoDataError: a row is not a mapping, a key is not a string, or a value is not
            ``str``/``int``/``bool``/``None`` or a finite ``float`` (names the row and key).
    """
    checked = []
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise MammoDataError(f"is a {type(row).__name__}, not a dict", f"row {index}")
        for key, value in row.items():
            source = f"row {index}, key {key!r}"
            if not isinstance(key, str):
                raise MammoDataError("keys must be strings", source)
            if value is not None and not isinstance(value, (str, int, float, bool)):
                raise MammoDataError(f"value of type {type(value).__name__} is not a JSON scalar", source)
            if isinstance(value, float) and not math.isfinite(value):
                raise MammoDataError(f"value {value} is not finite (use None for 'not measured')", source)
        checked.append(dict(row))
    return checked


def build_payload(
    benchmark: str,
    rows: Iterable[Mapping[str, Any]],
    quick: bool,
    notes: Iterable[str] = (),
    command: str | None = None,
) -> dict[str, Any]:
    """The contract's payload: benchmark, command, quick, environment, rows, notes.

    Args:
        benchmark: the benchmark's name (the script's stem, e.g. ``"transforms"``).
        rows: the result rows (checked with :func:`check_rows`).
        quick: whether this was a ``--quick`` run.
        notes: free-text remarks printed under the table.
        command: the command line (default: :func:`command_line`).

    Returns:
        The payload dict.

    Raises:
        MammoDataError: a row breaks the contract (see :func:`check_rows`).
    """
    return {
        "benchmark": benchmark,
        "command": command_line() if command is None else command,
        "quick": bool(quick),
        "environment": environment(),
        "rows": check_rows(rows),
        "notes": [str(note) for note in notes],
    }


def write_json(
    path: str | os.PathLike,
    benchmark: str,
    rows: Iterable[Mapping[str, Any]],
    quick: bool,
    notes: Iterable[str] = (),
    command: str | None = None,
) -> dict[str, Any]:
    """Write the payload of :func:`build_payload` to ``path`` (parent folders created).

    Args:
        path: destination JSON file.
        benchmark: the benchmark's name.
        rows: the result rows.
        quick: whether this was a ``--quick`` run.
        notes: free-text remarks.
        command: the command line (default: ``python`` + ``sys.argv``).

    Returns:
        The payload written.

    Raises:
        MammoDataError: a row breaks the contract (see :func:`check_rows`).

    Example::

        >>> payload = write_json("/tmp/x.json", "demo", [{"images_per_s": 9.5}], quick=True)
        >>> payload["rows"][0]["images_per_s"]
        9.5
    """
    payload = build_payload(benchmark, rows, quick, notes, command)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(payload, indent=1, allow_nan=False) + "\n")
    return payload


def format_value(value: Any) -> str:
    """One Markdown cell: ``-`` for None, yes/no for bools, floats to about 3 significant digits.

    Floats of magnitude 100 or more are rounded to integers (``1234.5 -> "1234"``), smaller
    ones keep 3 significant digits (``9.634 -> "9.63"``, ``0.01234 -> "0.0123"``). ``|`` and
    line breaks in strings are escaped so that they cannot break the table.

    Args:
        value: a row value.

    Returns:
        The cell text.
    """
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """The rows as a Markdown table (columns: the union of the keys, in first-seen order).

    Args:
        rows: the result rows; a key missing from a row gives an empty ``-`` cell.
        columns: the columns to show, in this order (default: every key).

    Returns:
        The table (header, separator, one line per row); ``"(no rows)"`` for no rows.

    Example::

        >>> print(markdown_table([{"mode": "cached", "images_per_s": 812.46}, {"mode": "disk", "n": 3}]))
        | mode | images_per_s | n |
        |---|---:|---:|
        | cached | 812 | - |
        | disk | - | 3 |
    """
    if not rows:
        return "(no rows)"
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    numeric = {
        column: all(
            isinstance(row.get(column), (int, float)) and not isinstance(row.get(column), bool)
            for row in rows
            if row.get(column) is not None
        )
        for column in columns
    }
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---:" if numeric[column] else "---" for column in columns) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(format_value(row.get(column)) for column in columns) + " |")
    return "\n".join(lines)


def _status_mib(field: str) -> float | None:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in MiB, None where unsupported."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    return None


def _rusage_mib(who: int) -> float:
    """``ru_maxrss`` in MiB (KiB on Linux, bytes on macOS)."""
    scale = 1 / 1024.0**2 if sys.platform == "darwin" else 1 / 1024.0
    return round(resource.getrusage(who).ru_maxrss * scale, 1)


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux ``VmHWM``) to its current RSS.

    Returns:
        True when reset; False where unsupported (non-Linux, restricted ``/proc``), in which
        case :func:`peak_rss_mib` keeps reporting the peak since the process started.
    """
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB, since start or the last :func:`reset_peak_rss`.

    Returns:
        ``VmHWM`` on Linux, ``getrusage`` ``ru_maxrss`` elsewhere.
    """
    peak = _status_mib("VmHWM")
    return _rusage_mib(resource.RUSAGE_SELF) if peak is None else peak


def current_rss_mib() -> float | None:
    """Current resident memory of this process in MiB (``VmRSS``), None where unsupported."""
    return _status_mib("VmRSS")


def children_peak_rss_mib() -> float:
    """Peak RSS of the largest terminated child process (e.g. a DataLoader worker) in MiB.

    It counts the pages a forked child shares with its parent.
    """
    return _rusage_mib(resource.RUSAGE_CHILDREN)
