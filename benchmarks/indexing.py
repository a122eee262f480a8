"""Benchmark: index a large CBIS-DDSM-style description CSV in paths-only mode.

Generates ``--rows`` rows (half mass, half calcification, in two CSVs with the real headers
and quirks: trailing newlines inside quoted path cells, ``N/A`` descriptors, 1-3 findings per
image) in a temporary folder, then times
``index_cbis_ddsm(folder, check_files=False)`` (the files need not exist).

Usage (``--quick``: 100,000 rows)::

    python benchmarks/indexing.py --rows 1000000 --json /tmp/indexing.json
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    add_common_arguments,
    build_payload,
    markdown_table,
    peak_rss_mib,
    reset_peak_rss,
    write_json,
)

from monai_mammo.data.indexers.cbis_ddsm import CALC_COLUMNS, MASS_COLUMNS, index_cbis_ddsm

_PATHOLOGIES = ("MALIGNANT", "BENIGN", "BENIGN_WITHOUT_CALLBACK")
_UID = "1.3.6.1.4.1.9590.100.1.2."
FULL_ROWS = 1_000_000
QUICK_ROWS = 100_000
BUDGET_S = 60.0  # wall-clock seconds per 1,000,000 rows


def write_csv(path: Path, n_rows: int, kind: str, seed: int) -> None:
    """Write a CBIS-DDSM-style description CSV of ``n_rows`` rows (1-3 findings per image).

    Args:
        path: destination CSV.
        n_rows: number of data rows.
        kind: ``"mass"`` or ``"calc"``.
        seed: random seed.
    """
    rng = np.random.default_rng(seed)
    columns = MASS_COLUMNS if kind == "mass" else CALC_COLUMNS
    prefix = "Mass-Training" if kind == "mass" else "Calc-Training"
    abnormality = "mass" if kind == "mass" else "calcification"
    descriptors = ("OVAL", "CIRCUMSCRIBED") if kind == "mass" else ("PLEOMORPHIC", "N/A")
    findings = rng.integers(1, 4, size=n_rows)
    density = rng.integers(1, 5, size=n_rows)
    pathology = rng.integers(0, 3, size=n_rows)
    score = rng.integers(0, 6, size=n_rows)
    uids = rng.integers(10**11, 10**12, size=n_rows)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        row = image = 0
        while row < n_rows:
            patient = f"P_{image // 4:07d}"
            side = "LEFT" if image % 2 else "RIGHT"
            view = "CC" if (image // 2) % 2 else "MLO"
            subject = f"{prefix}_{patient}_{side}_{view}"
            image_path = f"{subject}/{_UID}{uids[row]}/{_UID}{uids[row] + 1}/000000.dcm"
            for abn in range(1, int(findings[image % n_rows]) + 1):
                if row == n_rows:
                    break
                roi = f"{subject}_{abn}/{_UID}{uids[row] + 2}/{_UID}{uids[row] + 3}"
                writer.writerow(
                    [
                        patient,
                        int(density[image % n_rows]),
                        side,
                        view,
                        abn,
                        abnormality,
                        *descriptors,
                        int(score[row]),
                        _PATHOLOGIES[pathology[row]],
                        int(score[row]),
                        image_path,
                        f"{roi}/000000.dcm\n",
                        f"{roi}/000001.dcm\n",
                    ]
                )
                row += 1
            image += 1


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Generate the CSVs, index them with ``check_files=False``, print and return the figures.

    Seconds are wall-clock (what the 60 s budget is about); the CPU time shows how much of
    it went to this process when the machine is shared. Peak RSS is this process's peak during
    the indexing call (the CSV writing before it is excluded where ``VmHWM`` can be reset).

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The JSON payload (also written to ``--json`` when given).

    Example::

        payload = run(["--rows", "10000"])
        payload["rows"][0]["rows_per_s"]
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows",
        type=int,
        default=None,
        help=f"total number of CSV rows (default {FULL_ROWS:,}; --quick {QUICK_ROWS:,})",
    )
    parser.add_argument("--seed", type=int, default=0)
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    n_rows = args.rows or (QUICK_ROWS if args.quick else FULL_ROWS)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        mass_rows = n_rows // 2
        write_csv(folder / "mass_case_description_train_set.csv", mass_rows, "mass", args.seed)
        write_csv(folder / "calc_case_description_train_set.csv", n_rows - mass_rows, "calc", args.seed + 1)
        reset = reset_peak_rss()
        start, cpu_start = time.perf_counter(), time.process_time()
        result = index_cbis_ddsm(folder, check_files=False)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        peak = peak_rss_mib()
    summary = result.summary
    row = {
        "csv_rows": summary.rows_read,
        "images": summary.images,
        "findings": summary.findings,
        "skipped": len(summary.skipped),
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),
        "rows_per_s": round(summary.rows_read / seconds),
        "budget_s_per_million_rows": BUDGET_S,
        "met": seconds * 1_000_000 / max(summary.rows_read, 1) <= BUDGET_S,
        "peak_rss_mib": peak,
    }
    notes = [
        "paths-only indexing: index_cbis_ddsm(folder, check_files=False) of generated CBIS-DDSM-style CSVs",
        f"budget: {BUDGET_S:.0f} s wall-clock per 1,000,000 rows on one core (scaled linearly for other sizes)",
    ]
    if not reset:
        notes.append("peak RSS includes writing the CSVs (VmHWM could not be reset on this system)")
    print(markdown_table([row]))
    print("\n".join(notes))
    if args.json is not None:
        return write_json(args.json, "indexing", [row], args.quick, notes)
    return build_payload("indexing", [row], args.quick, notes)


if __name__ == "__main__":
    run()
