"""INbreast indexer: ``INbreast.csv`` + ``AllDICOMs`` + ``AllXML`` OsiriX ROIs -> datalist and masks.

Layout (Moreira et al. 2012; 115 cases, 410 images, 14-bit)::

    <root>/INbreast.csv                   # semicolon separated, one row per image
    <root>/AllDICOMs/<FileName>_<hash>_MG_<L|R>_<CC|ML>_ANON.dcm
    <root>/AllXML/<FileName>.xml          # OsiriX plist, only for annotated images

Conventions of this indexer:

- Image labels come from the image's BI-RADS (Shen et al.): 1-2 -> 0, 4/4a/4b/4c/5/6 -> 1;
  BI-RADS 3 and 0 are excluded and counted (``birads_3``, ``birads_0``).
- INbreast gives no biopsy result per lesion: every finding has ``pathology`` None and
  inherits the image label.
- The CSV's patient ids are ``removed``: the patient id is the DICOM PatientID when set,
  else the ``<hash>`` of the file name (INbreast's per-patient key).
- Oblique views are named ``ML`` in file names; the datalist uses the CSV's view, with
  ``ML`` written as ``MLO``.
- Each ROI becomes one finding with an image-sized PNG mask (uint8 0/255): ROIs of at most
  2 points are single pixels (individually marked calcifications), larger ones filled
  polygons (boundary included) clipped to the image. ROI names map to the finding type:
  Mass / Spiculated Region / Espiculated Region -> ``mass``; Calcification /
  Calcifications / Cluster -> ``calcification``; any other name (Distortion, Asymmetry,
  ...) is kept lower-cased with ``class_id`` None.
- A malformed XML skips the whole image (an image with a dropped lesion would teach a
  model that the lesion is background).
"""

from __future__ import annotations

import csv
import os
import plistlib
import re
import xml.parsers.expat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pydicom
from skimage.draw import polygon, polygon_perimeter

from monai_mammo.data.dicom import read_dicom
from monai_mammo.data.indexers.common import IndexResult, IndexSummary, OnError
from monai_mammo.data.schema import patch_class
from monai_mammo.exceptions import MammoConfigError, MammoDataError, MammoSkip

__all__ = [
    "index_inbreast",
    "parse_inbreast_xml",
    "roi_to_mask",
    "INBREAST_BIRADS_MAP",
    "INBREAST_CSV_COLUMNS",
    "MAX_POINT_COORDINATE",
    "inbreast_finding_type",
]

INBREAST_CSV_COLUMNS = (
    "Patient ID",
    "Patient age",
    "Laterality",
    "View",
    "Acquisition date",
    "File Name",
    "ACR",
    "Bi-Rads",
)

INBREAST_BIRADS_MAP: dict[str, int | None] = {
    "0": None,
    "1": 0,
    "2": 0,
    "3": None,
    "4": 1,
    "4a": 1,
    "4b": 1,
    "4c": 1,
    "5": 1,
    "6": 1,
}
"""BI-RADS (lower case) -> image label; None excludes the image (skip reason ``birads_<value>``)."""

_MASS_NAMES = frozenset({"mass", "spiculated region", "espiculated region"})
_CALC_NAMES = frozenset({"calcification", "calcifications", "cluster"})
_DICOM_NAME = re.compile(
    r"^(?P<file>[^_]+)_(?P<hash>[^_]+)_MG_(?P<side>[LR])_(?P<view>[A-Z]+)_ANON\.dcm$", re.I
)
_FLOAT = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_POINT = re.compile(rf"^\(\s*({_FLOAT})\s*,\s*({_FLOAT})\s*\)$")
_VIEWS = {"CC": "CC", "MLO": "MLO", "ML": "MLO"}


#: largest |x| or |y| accepted in ``Point_px`` (pixels); mammograms are a few thousand pixels wide
MAX_POINT_COORDINATE = 1e5


def inbreast_finding_type(roi_name: str) -> str:
    """Finding type of an INbreast ROI name.

    Args:
        roi_name: the ROI's ``Name`` as written in the XML.

    Returns:
        ``"mass"``, ``"calcification"``, or the lower-cased, stripped name for other findings.

    Example::

        inbreast_finding_type("Spiculated Region")  # "mass"
    """
    name = " ".join(roi_name.split()).lower()
    if name in _MASS_NAMES:
        return "mass"
    if name in _CALC_NAMES:
        return "calcification"
    return name


def parse_inbreast_xml(path: str | os.PathLike) -> list[tuple[str, np.ndarray]]:
    """Read the ROIs of an INbreast OsiriX plist.

    Args:
        path: an ``AllXML/<FileName>.xml`` file.

    Returns:
        One ``(name, points)`` per ROI in file order; ``points`` is a float ``(N, 2)`` array
        of ``(x, y)`` = (column, row) pixel coordinates from ``Point_px``.

    Raises:
        MammoSkip: reason ``bad_xml`` (not a plist, or no ``Images[0].ROIs`` list),
            ``bad_points`` (a ``Point_px`` entry is not ``"(x, y)"``, or a coordinate is
            non-finite or beyond :data:`MAX_POINT_COORDINATE`) or ``point_count_mismatch``
            (``NumberOfPoints`` differs from the points given); the message names the file
            and the ROI index.

    Example::

        for name, points in parse_inbreast_xml("AllXML/22678622.xml"):
            print(name, len(points))
    """
    source = str(path)
    try:
        with open(path, "rb") as stream:
            plist = plistlib.load(stream)
    except (
        plistlib.InvalidFileException,
        xml.parsers.expat.ExpatError,
        ValueError,
        TypeError,
        LookupError,  # an unknown encoding in the XML declaration
    ) as exc:
        raise MammoSkip(f"not an OsiriX plist: {exc}", source, reason="bad_xml") from exc
    except OSError as exc:
        raise MammoSkip(f"cannot read XML: {exc.strerror or exc}", source, reason="bad_xml") from exc
    images = plist.get("Images") if isinstance(plist, dict) else None
    if not isinstance(images, list) or not images or not isinstance(images[0], dict):
        raise MammoSkip("plist has no 'Images' list of dicts", source, reason="bad_xml")
    rois = images[0].get("ROIs", [])
    if not isinstance(rois, list):
        raise MammoSkip("Images[0]['ROIs'] is not a list", source, reason="bad_xml")
    result = []
    for index, roi in enumerate(rois):
        if not isinstance(roi, dict) or not isinstance(roi.get("Point_px"), list):
            raise MammoSkip(f"ROI {index} has no 'Point_px' list", source, reason="bad_xml")
        name = str(roi.get("Name", "Unnamed"))
        points = []
        for entry in roi["Point_px"]:
            match = _POINT.match(entry.strip()) if isinstance(entry, str) else None
            if match is None:
                raise MammoSkip(
                    f"ROI {index} ({name!r}): bad Point_px entry {entry!r}", source, reason="bad_points"
                )
            points.append((float(match.group(1)), float(match.group(2))))
        count = roi.get("NumberOfPoints")
        if not isinstance(count, int) or count != len(points):
            raise MammoSkip(
                f"ROI {index} ({name!r}): NumberOfPoints {count!r} but {len(points)} Point_px entries",
                source,
                reason="point_count_mismatch",
            )
        if not np.isfinite(points).all():
            raise MammoSkip(f"ROI {index} ({name!r}): non-finite point", source, reason="bad_points")
        if points and np.abs(points).max() > MAX_POINT_COORDINATE:
            # drawing the outline of such a polygon would allocate a line of that many pixels
            raise MammoSkip(
                f"ROI {index} ({name!r}): point coordinate beyond +-{MAX_POINT_COORDINATE:g} px",
                source,
                reason="bad_points",
            )
        result.append((name, np.asarray(points, dtype=np.float64).reshape(-1, 2)))
    return result


def roi_to_mask(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Binary mask of an INbreast ROI.

    Args:
        points: ``(N, 2)`` ``(x, y)`` pixel coordinates (x = column).
        shape: the image's (rows, columns).

    Returns:
        A boolean mask of ``shape``: single pixels for ROIs of at most 2 points, else the
        filled polygon with its boundary; parts outside the image are clipped.

    Example::

        mask = roi_to_mask(np.array([[10.0, 5.0], [20.0, 5.0], [15.0, 12.0]]), (64, 48))
    """
    mask = np.zeros(shape, dtype=bool)
    rows, cols = points[:, 1], points[:, 0]
    if len(points) <= 2:
        r, c = np.rint(rows).astype(int), np.rint(cols).astype(int)
        inside = (r >= 0) & (r < shape[0]) & (c >= 0) & (c < shape[1])
        mask[r[inside], c[inside]] = True
        return mask
    mask[polygon(rows, cols, shape)] = True
    mask[polygon_perimeter(np.rint(rows).astype(int), np.rint(cols).astype(int), shape, clip=False)] = True
    return mask


def _read_rows(csv_path: Path) -> list[dict[str, str]]:
    """The CSV rows as dicts of stripped cells, with ``#line`` (header checked, trailing blank cells ignored)."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as stream:
            rows = list(csv.reader(stream, delimiter=";"))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise MammoDataError(f"cannot read the INbreast CSV: {exc}", csv_path) from exc
    if not rows:
        raise MammoDataError("empty INbreast CSV", csv_path)
    header = [cell.strip() for cell in rows[0]]
    missing = [column for column in INBREAST_CSV_COLUMNS if column not in header]
    if missing:
        raise MammoDataError(f"missing columns {missing}; header is {header}", csv_path)
    records = []
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        record = {"#line": str(number)}
        record.update({column: (row[i].strip() if i < len(row) else "") for i, column in enumerate(header)})
        if len(row) < len(header) or any(cell.strip() for cell in row[len(header) :]):
            record["#error"] = f"{len(row)} cells, expected {len(header)}"
        records.append(record)
    return records


def _dicom_index(folder: Path) -> dict[str, list[tuple[Path, str]]]:
    """``FileName -> [(dicom path, hash)]`` for the DICOMs following INbreast's naming."""
    index: dict[str, list[tuple[Path, str]]] = {}
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            match = _DICOM_NAME.match(path.name)
            if match:
                index.setdefault(match.group("file"), []).append((path, match.group("hash")))
    return index


def _read_header(path: Path, check_files: bool) -> pydicom.Dataset:
    """The DICOM header (no pixels); with ``check_files`` also check the file is not truncated."""
    try:
        ds = read_dicom(path, stop_before_pixels=True)
        shape = (int(ds.Rows), int(ds.Columns))
        compressed = ds.file_meta.TransferSyntaxUID.is_compressed
    except (MammoDataError, AttributeError, ValueError, TypeError) as exc:
        raise MammoSkip(f"unreadable DICOM header: {exc}", path, reason="unreadable_dicom") from exc
    if check_files and not compressed:
        expected = (
            shape[0] * shape[1] * int(ds.get("SamplesPerPixel", 1)) * int(ds.get("BitsAllocated", 16)) // 8
        )
        size = path.stat().st_size
        if size < expected:
            raise MammoSkip(
                f"truncated DICOM: {size} bytes for {shape[0]}x{shape[1]} pixels",
                path,
                reason="truncated_dicom",
            )
    return ds


def index_inbreast(
    root: str | os.PathLike,
    *,
    on_error: OnError = "skip",
    check_files: bool = True,
    birads_map: Mapping[str, int | None] | None = None,
    masks_dir: str | os.PathLike | None = None,
) -> IndexResult:
    """Index an INbreast folder into datalist items and write its ROI masks as PNGs.

    Args:
        root: the folder holding ``INbreast.csv``, ``AllDICOMs`` and ``AllXML``.
        on_error: ``"skip"`` counts a bad row, DICOM or XML in the summary and goes on;
            ``"raise"`` raises on the first one. Exclusions by rule (BI-RADS 3 / 0) are
            always counted, never raised.
        check_files: also check that each DICOM holds all its pixel bytes (uncompressed
            files); the header of every DICOM is read in any case (size, PatientID).
        birads_map: BI-RADS (case-insensitive) -> image label, None to exclude; defaults to
            :data:`INBREAST_BIRADS_MAP` (1-2 -> 0, 4-6 incl. 4a/4b/4c -> 1, 3 and 0 excluded).
        masks_dir: where to write the masks (``<FileName>_roi<NNN>.png``, NNN the ROI's
            index in its XML); default ``<root>/masks``.

    Returns:
        The items (one per kept image, ``source`` ``"inbreast"``, ``split`` None, extra key
        ``file_name``; findings carry ``roi_name`` and ``abnormality_id`` = the ROI's index
        in its XML; ``study_id`` is the DICOM StudyInstanceUID, else ``<patient>_<date>``)
        and the summary. Skip reasons: ``birads_<value>``, ``bad_row``, ``missing_dicom``,
        ``ambiguous_dicom``, ``unreadable_dicom``, ``truncated_dicom``, ``bad_xml``,
        ``bad_points``, ``point_count_mismatch``, ``empty_roi`` (one ROI entirely outside
        its image; the rest of the image is kept).

    Raises:
        MammoDataError: missing or unreadable CSV or missing columns; with
            ``on_error="raise"``, the first bad row / DICOM / XML (named with its problem).
        MammoConfigError: invalid ``on_error``.

    Example::

        result = index_inbreast("/data/INbreast")
        print(result.summary.format())
        result.write("inbreast.json")
    """
    if on_error not in ("skip", "raise"):
        raise MammoConfigError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    root = Path(root).expanduser().resolve()
    mapping = {str(k).strip().lower(): v for k, v in (birads_map or INBREAST_BIRADS_MAP).items()}
    out_dir = Path(masks_dir).expanduser().resolve() if masks_dir is not None else root / "masks"
    csv_path = root / "INbreast.csv"
    if not csv_path.is_file():
        raise MammoDataError("INbreast.csv not found (is this the INbreast folder?)", csv_path)
    summary = IndexSummary(dataset="inbreast", root=str(root))
    dicoms = _dicom_index(root / "AllDICOMs")
    items = []
    for row in _read_rows(csv_path):
        summary.rows_read += 1
        where = f"{csv_path}:{row['#line']}"
        birads = row["Bi-Rads"].lower()
        if "#error" not in row and birads in mapping and mapping[birads] is None:
            summary.skip(where, f"birads_{birads}", f"BI-RADS {row['Bi-Rads']} excluded by the label map")
            continue
        try:
            items.append(
                _index_row(row, where, mapping, dicoms, root, out_dir, check_files, summary, on_error)
            )
        except MammoSkip as error:
            if on_error == "raise":
                raise MammoDataError(error.problem, error.source) from error
            summary.skip_error(error)
    summary.images = len(items)
    summary.findings = sum(len(item["findings"]) for item in items)
    return IndexResult(items=items, summary=summary)


def _index_row(
    row: dict[str, str],
    where: str,
    mapping: dict[str, int | None],
    dicoms: dict[str, list[tuple[Path, str]]],
    root: Path,
    out_dir: Path,
    check_files: bool,
    summary: IndexSummary,
    on_error: OnError,
) -> dict[str, Any]:
    """One CSV row -> datalist item (masks written); raises MammoSkip on a bad row / file."""
    if "#error" in row:
        raise MammoSkip(row["#error"], where, reason="bad_row")
    file_name, side, view = row["File Name"], row["Laterality"].upper(), row["View"].upper()
    if not file_name or side not in ("L", "R") or view not in _VIEWS:
        raise MammoSkip(
            f"bad File Name / Laterality / View: {file_name!r} {row['Laterality']!r} {row['View']!r}",
            where,
            reason="bad_row",
        )
    if row["Bi-Rads"].lower() not in mapping:
        raise MammoSkip(
            f"unknown BI-RADS {row['Bi-Rads']!r}; known: {sorted(mapping)}", where, reason="bad_row"
        )
    label = mapping[row["Bi-Rads"].lower()]
    if row["ACR"] and row["ACR"] not in ("1", "2", "3", "4"):
        raise MammoSkip(f"ACR density {row['ACR']!r} is not 1..4", where, reason="bad_row")
    density = int(row["ACR"]) if row["ACR"] else None
    matches = dicoms.get(file_name, [])
    if not matches:
        raise MammoSkip(
            f"no AllDICOMs/{file_name}_<hash>_MG_*_ANON.dcm for File Name {file_name}",
            where,
            reason="missing_dicom",
        )
    if len(matches) > 1:
        raise MammoSkip(
            f"several DICOMs for File Name {file_name}: {[p.name for p, _ in matches]}",
            where,
            reason="ambiguous_dicom",
        )
    path, file_hash = matches[0]
    ds = _read_header(path, check_files)
    shape = (int(ds.Rows), int(ds.Columns))
    patient_id = str(ds.get("PatientID", "") or "").strip() or file_hash
    date = row["Acquisition date"]
    study_id = str(ds.get("StudyInstanceUID", "") or "").strip() or (
        f"{patient_id}_{date}" if date else patient_id
    )
    xml_path = root / "AllXML" / f"{file_name}.xml"
    rois = parse_inbreast_xml(xml_path) if xml_path.is_file() else []
    masks = []
    for index, (name, points) in enumerate(rois):
        mask = roi_to_mask(points, shape)
        if not mask.any():
            error = MammoSkip(
                f"ROI {index} ({name!r}) lies outside the {shape[0]}x{shape[1]} image",
                xml_path,
                reason="empty_roi",
            )
            if on_error == "raise":
                raise error
            summary.skip_error(error)
            continue
        masks.append((index, name, mask))
    findings = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for index, name, mask in masks:
        mask_path = out_dir / f"{file_name}_roi{index:03d}.png"
        if not cv2.imwrite(str(mask_path), mask.astype(np.uint8) * 255):
            raise MammoDataError("cannot write the ROI mask", mask_path)
        kind = inbreast_finding_type(name)
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        findings.append(
            {
                "type": kind,
                "pathology": None,
                "label": label,
                "class_id": int(patch_class(kind, label))
                if kind in ("mass", "calcification") and label is not None
                else None,
                "mask": str(mask_path),
                "bbox": [int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1],
                "abnormality_id": index,
                "roi_name": name,
            }
        )
    return {
        "image": str(path),
        "patient_id": patient_id,
        "study_id": study_id,
        "laterality": side,
        "view": _VIEWS[view],
        "density": density,
        "birads": row["Bi-Rads"],
        "label": label,
        "findings": findings,
        "source": "inbreast",
        "split": None,
        "file_name": file_name,
    }
