"""Generic digital source: DICOM images + one bounding-box CSV (stands in for OMI-DB) -> datalist.

OMI-DB (OPTIMAM) is not public; any digital mammography source that ships DICOM files and a
table of lesion boxes fits this indexer. Layout::

    <root>/annotations.csv          # one row per finding (several rows per image allowed)
    <root>/<any relative path>.dcm  # the images, named by the CSV's ``image`` column

CSV columns (header required, any order, extra columns ignored)::

    image,patient_id,study_id,laterality,view,lesion_type,pathology,xmin,ymin,xmax,ymax

plus the optional ``lesion_id`` (integer, becomes ``abnormality_id``) and ``split``
(``train``/``val``/``test``). Conventions:

- ``image``: DICOM path relative to ``root`` (absolute paths accepted, ``\\`` read as
  ``/``); the rows of one image must agree on patient, study, laterality and view (else
  ``inconsistent_row``).
- ``laterality``: ``L``/``R``/``LEFT``/``RIGHT``; ``view``: ``CC``/``MLO``/``ML``/...;
  either may be empty: it is then read from the DICOM header when files are checked.
- ``lesion_type``: ``calcification`` (also ``calc``, ``calcifications``,
  ``microcalcification(s)``), ``mass``, or any other name (kept lower-cased, e.g.
  ``architectural distortion``). A row whose lesion type, pathology and four box cells are
  all empty declares an image without findings.
- ``pathology`` (histology, case-insensitive, spaces or dashes read as ``_``):
  ``MALIGNANT``, ``BENIGN``, ``BENIGN_WITHOUT_CALLBACK`` (label 1 / 0), ``UNKNOWN``,
  ``MIXED`` or empty (pathology and label None). The value as written (upper case) is kept
  under the finding's ``histology``. Any other value: ``unknown_pathology``.
- boxes: pixel coordinates of the full image, ``xmin``/``ymin`` inclusive and
  ``xmax``/``ymax`` exclusive; fractional edges are floored (minima) and ceiled (maxima).
  Four empty cells: a finding without a box (``bbox`` None). A zero-area box
  (``xmax == xmin`` or ``ymax == ymin``) is kept as it is: an *empty* box, which
  :func:`omidb_filter` does not count as a box. Partly empty, non-numeric, negative,
  inverted (max < min) boxes, or boxes beyond the image: ``bad_box``.
- findings carry ``bbox`` ``[y0, x0, y1, x1]`` and no mask (``mask`` None).
- a bad row excludes its whole image (an image with a dropped lesion would look like a
  single-lesion image to the filter); the skip is recorded once, for the row. (A row with
  the wrong number of cells is skipped alone: its image cell cannot be trusted.)

Inverted images: MONOCHROME1 files are inverted by the reader (display pipeline). OMI-DB
also holds MONOCHROME2 images whose pixels are stored inverted (Mračko et al.); with
``detect_inverted`` the displayed pixels are tested by :func:`looks_inverted` and such
items get ``"inverted": True`` (every item carries the key), counted in the summary's
``inverted``. :func:`~monai_mammo.engines.calc_patches.extract_calc_patches` re-inverts them.

Skip reasons: ``bad_row`` (wrong number of cells, no image / patient id, bad laterality,
lesion id or split, a box or pathology without a lesion type), ``bad_box``, ``unknown_pathology``, ``inconsistent_row``,
``missing_file``, ``corrupt_file`` (unreadable or truncated DICOM), ``for_processing``.

:func:`omidb_filter` then applies the paper's selection (exactly one non-empty box,
calcification, histology unambiguously malignant or benign).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from monai_mammo.data.dicom import (
    check_presentation_intent,
    dicom_laterality,
    dicom_view,
    display_pixels,
    normalize_laterality,
    normalize_view,
    read_dicom,
)
from monai_mammo.data.indexers.common import IndexResult, IndexSummary, OnError, SkipRecord
from monai_mammo.data.schema import patch_class
from monai_mammo.exceptions import MammoConfigError, MammoDataError, MammoSkip

__all__ = [
    "index_bbox_csv",
    "omidb_filter",
    "looks_inverted",
    "BboxCsvSummary",
    "BBOX_CSV_COLUMNS",
    "BBOX_CSV_OPTIONAL_COLUMNS",
    "BBOX_CSV_PATHOLOGIES",
    "FILTER_REASONS",
    "DATASET",
]

DATASET = "bbox-csv"
BBOX_CSV_COLUMNS = (
    "image",
    "patient_id",
    "study_id",
    "laterality",
    "view",
    "lesion_type",
    "pathology",
    "xmin",
    "ymin",
    "xmax",
    "ymax",
)
BBOX_CSV_OPTIONAL_COLUMNS = ("lesion_id", "split")
BBOX_CSV_PATHOLOGIES: dict[str, str | None] = {
    "MALIGNANT": "MALIGNANT",
    "BENIGN": "BENIGN",
    "BENIGN_WITHOUT_CALLBACK": "BENIGN_WITHOUT_CALLBACK",
    "UNKNOWN": None,
    "MIXED": None,
    "": None,
}
"""Accepted pathology values -> schema pathology (None: not a usable histology)."""

FILTER_REASONS = ("no_bbox", "empty_bbox", "multiple_bboxes", "not_calcification", "ambiguous_pathology")
"""Exclusion reasons of :func:`omidb_filter`, in the order the rules are checked."""

_CALC_NAMES = {
    "calcification",
    "calcifications",
    "calc",
    "calcs",
    "microcalcification",
    "microcalcifications",
}
_LABELS = {"MALIGNANT": 1, "BENIGN": 0, "BENIGN_WITHOUT_CALLBACK": 0}
_SPLITS = {"train": "train", "training": "train", "val": "val", "validation": "val", "test": "test"}
_BOX_COLUMNS = ("xmin", "ymin", "xmax", "ymax")
_INVERSION_ROWS = 256  # the inversion test looks at a subsampled image of about this many rows
_BORDER_FRACTION = 0.05  # width of the border frame, as a fraction of the smaller side
_HISTOGRAM_BINS = 32


@dataclass
class BboxCsvSummary(IndexSummary):
    """:class:`~monai_mammo.data.indexers.common.IndexSummary` plus the number of re-inversion candidates.

    Attributes:
        inverted: kept images detected as pixel-inverted MONOCHROME2 (``"inverted": True``).
    """

    inverted: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with ``inverted``."""
        return {**super().to_dict(), "inverted": self.inverted}

    def format(self, max_listed: int = 20) -> str:
        """The base report with the number of inverted images after the first line."""
        first, _, rest = super().format(max_listed).partition("\n")
        line = f"  inverted images detected (re-inverted when patches are extracted): {self.inverted}"
        return "\n".join(part for part in (first, line, rest) if part)


@dataclass
class _Image:
    """The rows of one image: its item, its rows' findings (with row sources) and its first row."""

    item: dict[str, Any]
    source: str
    findings: list[tuple[dict[str, Any], str]] = field(default_factory=list)


def looks_inverted(image: np.ndarray) -> bool:
    """Whether a displayed mammogram looks pixel-inverted (bright background, dark tissue).

    Heuristic: the most common value along the image border is the background (air), which
    is the darkest part of a correctly displayed mammogram. The image is subsampled to about
    256 rows; the border frame is 5% of the smaller side wide on all four edges; its values
    are binned into 32 bins spanning the image's 1st..99th percentiles. The image is called
    inverted when the fullest bin lies in the upper half of that range. The breast touches
    one edge (and the top edge in MLO views) but its values spread over many bins, whereas
    the background sits in one or two; burned-in text markers are too small to matter.

    Args:
        image: (H, W) or (1, H, W) displayed pixel values (after VOI and MONOCHROME1 handling).

    Returns:
        True when the border's mode is in the bright half of the intensity range.

    Raises:
        MammoConfigError: not a 2-D image.

    Example:
        >>> img = np.zeros((64, 48)); img[8:56, :30] = 0.6
        >>> looks_inverted(img), looks_inverted(1.0 - img)
        (False, True)
    """
    arr = np.asarray(image, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise MammoConfigError(f"looks_inverted takes a 2-D image, got shape {arr.shape}")
    step = max(1, arr.shape[0] // _INVERSION_ROWS)
    small = arr[::step, ::step]
    low, high = np.percentile(small, [1.0, 99.0])
    if not high > low:
        return False
    width = max(1, round(_BORDER_FRACTION * min(small.shape)))
    frame = np.concatenate(
        [small[:width].ravel(), small[-width:].ravel(), small[width:-width, :width].ravel()]
        + [small[width:-width, -width:].ravel()]
    )
    counts, edges = np.histogram(np.clip(frame, low, high), bins=_HISTOGRAM_BINS, range=(low, high))
    peak = int(np.argmax(counts))
    return bool((edges[peak] + edges[peak + 1]) / 2.0 > (low + high) / 2.0)


def _lesion_type(value: str) -> str:
    name = " ".join(value.lower().replace("-", " ").replace("_", " ").split())
    if name.replace(" ", "") in _CALC_NAMES:
        return "calcification"
    return name


def _box(cells: Sequence[str], source: str) -> list[int] | None:
    """``[y0, x0, y1, x1]`` of the four box cells (None when all are empty).

    Raises:
        MammoSkip: (``bad_box``) partly empty, non-numeric, non-finite, negative or inverted box.
    """
    if not any(cells):
        return None
    try:
        xmin, ymin, xmax, ymax = (float(c) for c in cells)
    except ValueError:
        raise MammoSkip(f"bad box xmin,ymin,xmax,ymax = {list(cells)}", source, reason="bad_box") from None
    values = (xmin, ymin, xmax, ymax)
    if not all(math.isfinite(v) and v >= 0 for v in values) or xmax < xmin or ymax < ymin:
        raise MammoSkip(
            f"bad box xmin,ymin,xmax,ymax = {list(cells)} (negative, non-finite or max < min)",
            source,
            reason="bad_box",
        )
    return [math.floor(ymin), math.floor(xmin), math.ceil(ymax), math.ceil(xmax)]


class _Indexer:
    """State of one indexing run."""

    def __init__(
        self, root: Path, on_error: OnError, check_files: bool, detect_inverted: bool, source: str
    ) -> None:
        if on_error not in ("skip", "raise"):
            raise MammoConfigError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        self.root = root
        self.on_error = on_error
        self.check_files = check_files
        self.detect_inverted = detect_inverted
        self.source = source
        self.summary = BboxCsvSummary(dataset=source, root=str(root))
        self.images: dict[str, _Image] = {}
        self.bad_images: set[str] = set()  # CSV image cells with a bad row: excluded

    def problem(self, error: MammoSkip) -> None:
        """Raise (``on_error="raise"``) or record a skip."""
        if self.on_error == "raise":
            raise error
        self.summary.skip_error(error)

    def read(self, path: Path) -> None:
        """Read the CSV into :attr:`images`.

        Raises:
            MammoDataError: unreadable CSV or missing columns.
        """
        try:
            with open(path, newline="", encoding="utf-8-sig") as stream:
                reader = csv.reader(stream)
                header = [cell.strip() for cell in next(reader, [])]
                missing = [column for column in BBOX_CSV_COLUMNS if column not in header]
                if missing:
                    raise MammoDataError(
                        f"missing columns {missing}; expected {list(BBOX_CSV_COLUMNS)} "
                        f"(optional {list(BBOX_CSV_OPTIONAL_COLUMNS)}), header is {header}",
                        path,
                    )
                for row in reader:
                    if not any(cell.strip() for cell in row):
                        continue
                    self.summary.rows_read += 1
                    where = f"{path.name}:row {reader.line_num}"
                    if len(row) != len(header):
                        self.problem(
                            MammoSkip(f"{len(row)} cells, expected {len(header)}", where, reason="bad_row")
                        )
                        continue
                    cells = {column: cell.strip() for column, cell in zip(header, row)}
                    try:
                        self._row(cells, where)
                    except MammoSkip as error:
                        self.bad_images.add(cells["image"])
                        self.problem(error)
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise MammoDataError(f"cannot read the bounding-box CSV: {exc}", path) from exc

    def _row(self, cells: dict[str, str], where: str) -> None:
        """Add one row's image and finding.

        Raises:
            MammoSkip: a bad row (the image is then excluded).
        """
        image_rel, patient = cells["image"], cells["patient_id"]
        if not image_rel or not patient:
            raise MammoSkip("empty image or patient_id cell", where, reason="bad_row")
        laterality = normalize_laterality(cells["laterality"])
        if cells["laterality"] and laterality is None:
            raise MammoSkip(
                f"bad laterality {cells['laterality']!r}; expected L or R", where, reason="bad_row"
            )
        split_cell = cells.get("split", "").lower()
        if split_cell and split_cell not in _SPLITS:
            raise MammoSkip(
                f"bad split {cells['split']!r}; expected train, val or test", where, reason="bad_row"
            )
        image = self.images.get(image_rel)
        if image is None:
            relative = image_rel.replace("\\", "/")  # paths written on Windows
            path = Path(relative) if Path(relative).is_absolute() else self.root / relative
            item: dict[str, Any] = {
                "image": str(path),
                "patient_id": patient,
                "study_id": cells["study_id"] or None,
                "laterality": laterality,
                "view": normalize_view(cells["view"]),
                "density": None,
                "birads": None,
                "label": None,
                "findings": [],
                "source": self.source,
                "split": _SPLITS.get(split_cell),
                "inverted": False,
            }
            image = self.images[image_rel] = _Image(item, where)
        else:
            item = image.item
            if (patient, cells["study_id"] or None, laterality, normalize_view(cells["view"])) != (
                item["patient_id"],
                item["study_id"],
                item["laterality"],
                item["view"],
            ):
                raise MammoSkip(
                    f"patient/study/laterality/view differ from {image.source} for image {image_rel!r}",
                    where,
                    reason="inconsistent_row",
                )
        finding = self._finding(cells, where)
        if finding is not None:
            image.findings.append((finding, where))

    def _finding(self, cells: dict[str, str], where: str) -> dict[str, Any] | None:
        """The finding of a row (None for a no-finding row).

        Raises:
            MammoSkip: ``unknown_pathology``, ``bad_box`` or ``bad_row``.
        """
        box_cells = [cells[c] for c in _BOX_COLUMNS]
        if not cells["lesion_type"]:
            if cells["pathology"] or any(box_cells):
                raise MammoSkip("a box or pathology without a lesion_type", where, reason="bad_row")
            return None
        histology = cells["pathology"].upper().replace(" ", "_").replace("-", "_")
        if histology not in BBOX_CSV_PATHOLOGIES:
            raise MammoSkip(
                f"unknown pathology {cells['pathology']!r}; expected one of "
                f"{[p for p in BBOX_CSV_PATHOLOGIES if p]} or empty",
                where,
                reason="unknown_pathology",
            )
        lesion_id = cells.get("lesion_id", "")
        if lesion_id and not lesion_id.isdigit():
            raise MammoSkip(f"bad lesion_id {lesion_id!r}; expected an integer", where, reason="bad_row")
        kind = _lesion_type(cells["lesion_type"])
        pathology = BBOX_CSV_PATHOLOGIES[histology]
        label = _LABELS.get(pathology or "")
        return {
            "type": kind,
            "pathology": pathology,
            "histology": histology or "UNKNOWN",
            "label": label,
            "class_id": int(patch_class(kind, label))
            if kind in ("mass", "calcification") and label is not None
            else None,
            "mask": None,
            "bbox": _box(box_cells, where),
            "abnormality_id": int(lesion_id) if lesion_id else None,
        }

    def items(self) -> list[dict[str, Any]]:
        """The kept items (files checked when asked)."""
        out = []
        for image_rel, image in self.images.items():
            if image_rel in self.bad_images:
                continue
            try:
                if self.check_files:
                    self._check_file(image)
            except MammoSkip as error:
                self.problem(error)
                continue
            item = image.item
            item["findings"] = [finding for finding, _ in image.findings]
            labels = [f["label"] for f in item["findings"] if f["label"] is not None]
            item["label"] = max(labels) if labels else (0 if not item["findings"] else None)
            out.append(item)
        self.summary.images = len(out)
        self.summary.findings = sum(len(item["findings"]) for item in out)
        self.summary.inverted = sum(bool(item["inverted"]) for item in out)
        return out

    def _check_file(self, image: _Image) -> None:
        """Open the DICOM: existence, integrity, presentation intent, boxes inside, inversion.

        Raises:
            MammoSkip: ``missing_file``, ``corrupt_file``, ``for_processing`` or ``bad_box``.
        """
        item = image.item
        path = Path(item["image"])
        if not path.is_file():
            raise MammoSkip(f"image file not found (listed at {image.source})", path, reason="missing_file")
        try:
            ds = read_dicom(path)
            rows, columns = int(ds.Rows), int(ds.Columns)
        except (MammoDataError, AttributeError, TypeError, ValueError) as exc:
            raise MammoSkip(f"unreadable DICOM file: {exc}", path, reason="corrupt_file") from exc
        try:
            check_presentation_intent(ds, source=path)
        except MammoDataError as exc:
            raise MammoSkip(exc.problem, path, reason="for_processing") from exc
        pixels = self._pixels(ds, path)
        item["laterality"] = item["laterality"] or dicom_laterality(ds, path)
        item["view"] = item["view"] or dicom_view(ds, path)
        for finding, where in image.findings:
            box = finding["bbox"]
            if box is not None and (box[2] > rows or box[3] > columns):
                raise MammoSkip(
                    f"box [y0, x0, y1, x1] = {box} beyond the {rows}x{columns} image {path.name}; "
                    "image excluded",
                    where,
                    reason="bad_box",
                )
        item["inverted"] = pixels is not None and looks_inverted(pixels)

    def _pixels(self, ds: Dataset, path: Path) -> np.ndarray | None:
        """The displayed pixels when inversion is detected, else None after a size check.

        Raises:
            MammoSkip: (``corrupt_file``) undecodable or truncated pixel data.
        """
        if self.detect_inverted:
            try:
                return display_pixels(ds, source=path)
            except MammoDataError as exc:
                raise MammoSkip(f"unreadable pixel data: {exc.problem}", path, reason="corrupt_file") from exc
        syntax = ds.file_meta.get("TransferSyntaxUID")
        expected = int(ds.Rows) * int(ds.Columns) * ((int(ds.get("BitsAllocated", 16)) + 7) // 8)
        data = ds.get("PixelData")
        if data is None or (syntax is not None and not syntax.is_compressed and len(data) < expected):
            raise MammoSkip(
                f"truncated pixel data: {0 if data is None else len(data)} bytes, expected {expected}",
                path,
                reason="corrupt_file",
            )
        return None


def index_bbox_csv(
    root: str | os.PathLike,
    *,
    csv: str = "annotations.csv",
    on_error: OnError = "skip",
    check_files: bool = True,
    detect_inverted: bool = True,
    source: str = DATASET,
) -> IndexResult:
    """Index a folder of DICOM images described by one bounding-box CSV (see the module docstring).

    Args:
        root: the dataset folder.
        csv: the CSV file, relative to ``root`` (or absolute).
        on_error: ``"skip"`` records bad rows and files in the summary and goes on;
            ``"raise"`` raises at the first one.
        check_files: open every DICOM (existence, integrity, FOR PROCESSING, boxes inside the
            image, laterality/view fallback, inversion); False keeps the CSV as it is.
        detect_inverted: decode the pixels and flag pixel-inverted images (only with
            ``check_files``); False leaves every ``"inverted"`` False.
        source: the items' ``source`` and the summary's dataset name (e.g. ``"omi-db"``).

    Returns:
        The items (one per image, CSV order, schema of :mod:`monai_mammo.data.schema` plus
        ``"inverted"``; image ``label`` = the maximum known finding label, 0 for an image
        without findings, None when no finding has a known pathology) and a
        :class:`BboxCsvSummary`.

    Raises:
        MammoDataError: missing folder or CSV, unreadable CSV, missing columns; with
            ``on_error="raise"`` the first bad row or file (a :class:`MammoSkip` naming
            ``file.csv:row N`` or the DICOM).
        MammoConfigError: invalid ``on_error``.

    Example::

        result = index_bbox_csv("/data/omi-db-subset", source="omi-db")
        kept, excluded = omidb_filter(result.items)
    """
    folder = Path(root).expanduser().resolve()
    if not folder.is_dir():
        raise MammoDataError("dataset folder not found", folder)
    table = Path(csv) if Path(csv).is_absolute() else folder / csv
    if not table.is_file():
        raise MammoDataError("bounding-box CSV not found", table)
    indexer = _Indexer(folder, on_error, check_files, detect_inverted and check_files, source)
    indexer.read(table)
    return IndexResult(items=indexer.items(), summary=indexer.summary)


def _non_empty(box: Sequence[int] | None) -> bool:
    return box is not None and box[2] > box[0] and box[3] > box[1]


def _exclusion(item: Mapping[str, Any]) -> tuple[str, str] | None:
    """(reason, message) of the first filter rule an item fails, None when it passes."""
    findings = item.get("findings") or []
    boxed = [f for f in findings if _non_empty(f.get("bbox"))]
    if not boxed:
        if any(f.get("bbox") is not None for f in findings):
            return "empty_bbox", "its only bounding boxes are empty (zero area)"
        return "no_bbox", f"no bounding box ({len(findings)} findings without a box)"
    if len(boxed) > 1:
        return "multiple_bboxes", f"{len(boxed)} non-empty bounding boxes, exactly one required"
    finding = boxed[0]
    if finding.get("type") != "calcification":
        return "not_calcification", f"the boxed finding is a {finding.get('type')!r}, not a calcification"
    if _LABELS.get(str(finding.get("pathology"))) is None:
        histology = finding.get("histology", finding.get("pathology"))
        return "ambiguous_pathology", f"histology {histology!r} is not unambiguously malignant or benign"
    return None


def omidb_filter(items: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[SkipRecord]]:
    """Mračko et al.'s OMI-DB selection: exactly one non-empty box, calcification, clear histology.

    Rules, checked in this order (the first failing one is the exclusion's reason, see
    :data:`FILTER_REASONS`): the image has at least one box (``no_bbox``) and at least one
    of non-zero area (``empty_bbox``); exactly one non-empty box (``multiple_bboxes``); the
    boxed finding is a calcification (``not_calcification``); its pathology is MALIGNANT,
    BENIGN or BENIGN_WITHOUT_CALLBACK (``ambiguous_pathology``: UNKNOWN, MIXED, empty).
    Findings without a box or with an empty box do not count as boxes.

    Args:
        items: datalist items with ``findings`` carrying ``bbox`` (e.g. from :func:`index_bbox_csv`).

    Returns:
        (kept items: copies whose ``findings`` hold only the boxed calcification and whose
        ``label`` is its label, exclusions: one :class:`SkipRecord` per excluded image).

    Example::

        kept, skipped = omidb_filter(index_bbox_csv(root).items)
        Counter(record.reason for record in skipped)  # {"multiple_bboxes": 3, ...}
    """
    kept: list[dict[str, Any]] = []
    skipped: list[SkipRecord] = []
    for item in items:
        exclusion = _exclusion(item)
        if exclusion is not None:
            skipped.append(SkipRecord(str(item.get("image")), *exclusion))
            continue
        finding = next(f for f in item["findings"] if _non_empty(f.get("bbox")))
        kept.append({**item, "findings": [dict(finding)], "label": finding["label"]})
    return kept, skipped
