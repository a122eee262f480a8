"""VinDr-Mammo indexer: the two annotation CSVs + ``images/<study_id>/<image_id>.dicom`` -> datalist.

Layout (PhysioNet; 5,000 studies, 20,000 12-bit DICOMs)::

    <root>/breast-level_annotations.csv   # one row per image
    <root>/finding_annotations.csv        # one row per finding ('No Finding' rows for normals)
    <root>/images/<study_id>/<image_id>.dicom

Conventions of this indexer:

- Image labels come from the breast-level BI-RADS: 1-2 -> 0, 4-5 -> 1; BI-RADS 3 is
  excluded and counted (``birads_3``). Finding labels come from each finding's BI-RADS the
  same way (BI-RADS 3 findings are kept with ``label`` and ``class_id`` None).
- VinDr has no pathology and no patient column: ``pathology`` is None and the patient id is
  the ``study_id`` (one study per patient in the release), so patient-level splits are
  study-level splits.
- Boxes ``xmin, ymin, xmax, ymax`` (float pixels) become half-open ``[y0, x0, y1, x1]``
  integer boxes (floor of the minima, ceil of the maxima) clipped to the image.
- ``DENSITY A..D`` -> 1..4; split ``training`` -> ``train``, ``test`` -> ``test``.
- Finding categories: a finding containing ``Mass`` is a ``mass``, else one containing
  ``Suspicious Calcification`` a ``calcification``, else its first category lower-cased
  (``architectural distortion``, ``focal asymmetry``, ...) with ``class_id`` None; all
  categories are kept under ``categories``.
- A malformed finding row skips its whole image (an image with a dropped lesion would
  teach a model that the lesion is background).
"""

from __future__ import annotations

import ast
import csv
import math
import os
import re
from pathlib import Path
from typing import Any

from monai_mammo.data.indexers.common import IndexResult, IndexSummary, OnError
from monai_mammo.data.schema import patch_class
from monai_mammo.exceptions import MammoConfigError, MammoDataError, MammoSkip

__all__ = ["index_vindr", "VINDR_BREAST_COLUMNS", "VINDR_FINDING_COLUMNS", "VINDR_BIRADS_MAP"]

VINDR_BREAST_COLUMNS = (
    "study_id",
    "series_id",
    "image_id",
    "laterality",
    "view_position",
    "height",
    "width",
    "breast_birads",
    "breast_density",
    "split",
)
VINDR_FINDING_COLUMNS = VINDR_BREAST_COLUMNS + (
    "finding_categories",
    "finding_birads",
    "xmin",
    "ymin",
    "xmax",
    "ymax",
)
VINDR_BIRADS_MAP: dict[str, int | None] = {"1": 0, "2": 0, "3": None, "4": 1, "5": 1}
"""BI-RADS -> label; None excludes an image (skip reason ``birads_3``) or leaves a finding unlabelled."""

_BIRADS = re.compile(r"^(?:BI-?RADS\s*)?([0-9][a-c]?)$", re.I)
_DENSITY = {"A": 1, "B": 2, "C": 3, "D": 4}
_SPLITS = {"training": "train", "test": "test"}


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a VinDr CSV as dicts of stripped cells, with ``#line`` (header checked, trailing blank cells ignored)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as stream:
            reader = csv.reader(stream)
            header = [cell.strip() for cell in next(reader, [])]
            missing = [column for column in columns if column not in header]
            if missing:
                raise MammoDataError(f"missing columns {missing}; header is {header}", path)
            rows = []
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                record = {"#line": str(reader.line_num)}
                record.update(
                    {column: (row[i].strip() if i < len(row) else "") for i, column in enumerate(header)}
                )
                if len(row) < len(header) or any(cell.strip() for cell in row[len(header) :]):
                    record["#error"] = f"{len(row)} cells, expected {len(header)}"
                rows.append(record)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise MammoDataError(f"cannot read the VinDr CSV: {exc}", path) from exc
    return rows


def _birads(value: str, where: str) -> str:
    """``"BI-RADS 4"`` -> ``"4"``; raises MammoSkip(bad_row) on anything else."""
    match = _BIRADS.match(value)
    if match is None or match.group(1) not in VINDR_BIRADS_MAP:
        raise MammoSkip(f"bad BI-RADS {value!r}; expected 'BI-RADS 1'..'BI-RADS 5'", where, reason="bad_row")
    return match.group(1)


def _finding(row: dict[str, str], where: str, height: int, width: int) -> dict[str, Any] | None:
    """A finding row -> finding dict, None for 'No Finding'; raises MammoSkip on a malformed row."""
    if "#error" in row:
        raise MammoSkip(row["#error"], where, reason="bad_finding")
    try:
        categories = ast.literal_eval(row["finding_categories"])
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise MammoSkip(
            f"finding_categories {row['finding_categories']!r} is not a list literal",
            where,
            reason="bad_finding",
        ) from exc
    if not isinstance(categories, list) or not categories or not all(isinstance(c, str) for c in categories):
        raise MammoSkip(
            f"finding_categories {row['finding_categories']!r} is not a list of names",
            where,
            reason="bad_finding",
        )
    names = [" ".join(c.split()) for c in categories]
    if [n.lower() for n in names] == ["no finding"]:
        return None
    if "Mass" in names:
        kind = "mass"
    elif "Suspicious Calcification" in names:
        kind = "calcification"
    else:
        kind = names[0].lower()
    birads = _birads(row["finding_birads"], where) if row["finding_birads"] else None
    label = VINDR_BIRADS_MAP[birads] if birads is not None else None
    cells = [row[k] for k in ("xmin", "ymin", "xmax", "ymax")]
    bbox = None
    if any(cells):
        try:
            xmin, ymin, xmax, ymax = (float(c) for c in cells)
        except ValueError as exc:
            raise MammoSkip(f"bad box {cells}", where, reason="bad_box") from exc
        if all(math.isnan(v) for v in (xmin, ymin, xmax, ymax)):
            bbox = None
        else:
            if not all(math.isfinite(v) for v in (xmin, ymin, xmax, ymax)):
                raise MammoSkip(f"bad box {cells}", where, reason="bad_box")
            y0, x0 = max(0, math.floor(ymin)), max(0, math.floor(xmin))
            y1, x1 = min(height, math.ceil(ymax)), min(width, math.ceil(xmax))
            if y1 <= y0 or x1 <= x0:
                raise MammoSkip(f"empty box {cells} in a {height}x{width} image", where, reason="bad_box")
            bbox = [y0, x0, y1, x1]
    return {
        "type": kind,
        "pathology": None,
        "label": label,
        "class_id": int(patch_class(kind, label))
        if kind in ("mass", "calcification") and label is not None
        else None,
        "mask": None,
        "bbox": bbox,
        "abnormality_id": None,
        "categories": names,
        "birads": birads,
    }


def index_vindr(
    root: str | os.PathLike, *, on_error: OnError = "skip", check_files: bool = True
) -> IndexResult:
    """Index a VinDr-Mammo folder into datalist items.

    Args:
        root: the folder holding the two CSVs and ``images/``.
        on_error: ``"skip"`` counts a bad row or missing image in the summary and goes on;
            ``"raise"`` raises on the first one. The BI-RADS 3 exclusion is always counted,
            never raised.
        check_files: check that every image file exists.

    Returns:
        The items (one per kept image in breast-level CSV order, ``source`` ``"vindr"``,
        ``patient_id`` = ``study_id``, extra keys ``series_id`` and ``image_id``; findings
        carry ``categories`` and their ``birads``, ``abnormality_id`` numbers them per image)
        and the summary (``rows_read`` counts the rows of both CSVs). Skip reasons:
        ``birads_3``, ``bad_row``, ``missing_image``, ``bad_finding``, ``bad_box``,
        ``orphan_finding`` (a finding row whose image is not in the breast-level CSV),
        ``duplicate_image``.

    Raises:
        MammoDataError: a CSV is missing, unreadable or lacks columns; with
            ``on_error="raise"``, the first bad row or missing image.
        MammoConfigError: invalid ``on_error``.

    Example::

        result = index_vindr("/data/vindr-mammo")
        train = [item for item in result.items if item["split"] == "train"]
    """
    if on_error not in ("skip", "raise"):
        raise MammoConfigError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    root = Path(root).expanduser().resolve()
    summary = IndexSummary(dataset="vindr", root=str(root))
    breast_csv, finding_csv = root / "breast-level_annotations.csv", root / "finding_annotations.csv"
    for path in (breast_csv, finding_csv):
        if not path.is_file():
            raise MammoDataError("VinDr annotation CSV not found (is this the VinDr-Mammo folder?)", path)
    breast_rows = _read_csv(breast_csv, VINDR_BREAST_COLUMNS)
    finding_rows = _read_csv(finding_csv, VINDR_FINDING_COLUMNS)
    summary.rows_read = len(breast_rows) + len(finding_rows)

    def fail(error: MammoSkip) -> None:
        if on_error == "raise":
            raise MammoDataError(error.problem, error.source) from error
        summary.skip_error(error)

    findings_of: dict[str, list[tuple[str, dict[str, str]]]] = {}
    for row in finding_rows:
        findings_of.setdefault(row.get("image_id", ""), []).append((f"{finding_csv}:{row['#line']}", row))
    items = []
    seen: set[str] = set()
    for row in breast_rows:
        where = f"{breast_csv}:{row['#line']}"
        try:
            item = _index_row(row, where, root, check_files, findings_of.pop(row["image_id"], []), seen)
        except MammoSkip as error:
            fail(error)
            continue
        if item is None:
            summary.skip(
                where,
                "birads_3",
                f"breast_birads {row['breast_birads']!r} excluded (neither negative nor positive)",
            )
        else:
            items.append(item)
    for image_id, rows in findings_of.items():
        for where, _ in rows:
            fail(
                MammoSkip(
                    f"image_id {image_id!r} is not in {breast_csv.name}", where, reason="orphan_finding"
                )
            )
    summary.images = len(items)
    summary.findings = sum(len(item["findings"]) for item in items)
    return IndexResult(items=items, summary=summary)


def _index_row(
    row: dict[str, str],
    where: str,
    root: Path,
    check_files: bool,
    finding_rows: list[tuple[str, dict[str, str]]],
    seen: set[str],
) -> dict[str, Any] | None:
    """A breast-level row and its finding rows -> item (None for BI-RADS 3); MammoSkip on errors."""
    if "#error" in row:
        raise MammoSkip(row["#error"], where, reason="bad_row")
    study_id, image_id = row["study_id"], row["image_id"]
    side, view = row["laterality"].upper(), row["view_position"].upper()
    if not study_id or not image_id or side not in ("L", "R") or not view:
        raise MammoSkip(
            f"bad study_id / image_id / laterality / view_position: {study_id!r} {image_id!r} {side!r} {view!r}",
            where,
            reason="bad_row",
        )
    if image_id in seen:
        raise MammoSkip(f"image_id {image_id} listed twice", where, reason="duplicate_image")
    seen.add(image_id)
    try:
        height, width = int(row["height"]), int(row["width"])
    except ValueError as exc:
        raise MammoSkip(
            f"bad height/width {row['height']!r} {row['width']!r}", where, reason="bad_row"
        ) from exc
    birads = _birads(row["breast_birads"], where)
    density_code = row["breast_density"].upper().replace("DENSITY", "").strip()
    if density_code and density_code not in _DENSITY:
        raise MammoSkip(f"bad breast_density {row['breast_density']!r}", where, reason="bad_row")
    if row["split"].lower() not in _SPLITS:
        raise MammoSkip(f"bad split {row['split']!r}; expected training or test", where, reason="bad_row")
    label = VINDR_BIRADS_MAP[birads]
    if label is None:
        return None
    image = root / "images" / study_id / f"{image_id}.dicom"
    if check_files and not image.is_file():
        raise MammoSkip("image file not found", image, reason="missing_image")
    findings: list[dict[str, Any]] = []
    for finding_where, finding_row in finding_rows:
        finding = _finding(finding_row, finding_where, height, width)
        if finding is not None:
            finding["abnormality_id"] = len(findings)
            findings.append(finding)
    return {
        "image": str(image),
        "patient_id": study_id,
        "study_id": study_id,
        "laterality": side,
        "view": view,
        "density": _DENSITY.get(density_code),
        "birads": birads,
        "label": label,
        "findings": findings,
        "source": "vindr",
        "split": _SPLITS[row["split"].lower()],
        "series_id": row["series_id"],
        "image_id": image_id,
    }
