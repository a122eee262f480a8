"""Benchmark: index a large CBIS-DDSM-style description CSV in paths-only mode.

Generates ``--rows`` rows (half mass, half calcification, in two CSVs with the real headers
and quirks: trailing newlines inside quoted path cells, ``N/A`` descriptors, 1-3 findings per
image) in a temporary folder, then times
``index_cbis_ddsm(folder, check_files=False)`` (the files need not exist).

Usage::

    python benchmarks/indexing.py --rows 1000000
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import numpy as np

from monai_mammo.data.indexers.cbis_ddsm import CALC_COLUMNS, MASS_COLUMNS, index_cbis_ddsm

_PATHOLOGIES = ("MALIGNANT", "BENIGN", "BENIGN_WITHOUT_CALLBACK")
_UID = "1.3.6.1.4.1.9590.100.1.2."


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


def main() -> None:
    """Generate the CSVs, index them with ``check_files=False`` and print rows, seconds, rows/s.

    Seconds are wall-clock (what the 60 s budget is about); the CPU time shows how much of
    it went to this process when the machine is shared.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="total number of CSV rows")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        mass_rows = args.rows // 2
        write_csv(folder / "mass_case_description_train_set.csv", mass_rows, "mass", args.seed)
        write_csv(
            folder / "calc_case_description_train_set.csv", args.rows - mass_rows, "calc", args.seed + 1
        )
        start, cpu_start = time.perf_counter(), time.process_time()
        result = index_cbis_ddsm(folder, check_files=False)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    summary = result.summary
    print(f"rows: {summary.rows_read}")
    print(f"images: {summary.images}, findings: {summary.findings}, skipped: {len(summary.skipped)}")
    print(f"seconds: {seconds:.2f} (CPU time {cpu_seconds:.2f})")
    print(f"rows/s: {summary.rows_read / seconds:,.0f}")


if __name__ == "__main__":
    main()
