"""CBIS-DDSM indexer: the four description CSVs and the NBIA download -> a MONAI datalist.

CBIS-DDSM (TCIA) ships four description CSVs (``mass_case_description_{train,test}_set.csv``,
``calc_case_description_{train,test}_set.csv``), one row per finding, and the DICOM files in
the NBIA retriever's layout, whose paths do not match the CSV paths. This module reads the
CSVs, groups the rows into one datalist item per full image (schema in
:mod:`monai_mammo.data.schema`) and resolves every CSV path to a file on disk.

Quirks handled (see ``docs/data.md``):

- the density column is ``breast_density`` in the mass files and ``breast density`` in the
  calc files (either spelling is accepted in either file);
- every cell is stripped (path cells end with a newline inside the quotes);
- missing descriptors read ``N/A`` (calc train) or ``NA`` (calc test): the csv module keeps
  them as text, so they never turn into NaN and never shift or drop a row;
- CSV paths are resolved in this order: the exact relative path (older retrievers), the
  subject folder (``Mass-Training_P_00001_LEFT_CC/.../1-1.dcm``, ROI folder
  ``<subject>_<abnormality id>/.../1-1.dcm`` and ``1-2.dcm``), the series folder listed for
  the CSV's SeriesInstanceUID in the retriever's ``metadata.csv``;
- crop and ROI mask are swapped in many rows, so the columns are not trusted: among the
  ROI files, the mask is the one of the full image's size (pixels are read, to check that it
  is binary, only when more than one file has that size); a binary file of another size is
  a mask at the wrong resolution/aspect and the finding is skipped, never stretched.

Skip reasons (counted in :class:`~monai_mammo.data.indexers.common.IndexSummary`):
``bad_row`` (wrong number of cells), ``bad_value`` (unknown pathology, non-integer density,
...; the source names ``file.csv:row N``, rows counted with the header as row 1, and the
message names the column), ``duplicate_row`` (same image and abnormality id as an earlier
row), ``inconsistent_row`` (patient/side/view differ from the image's first row),
``missing_file`` (full image or ROI files not found), ``corrupt_file`` (unreadable or
truncated DICOM), ``for_processing`` (a FOR PROCESSING full image), ``missing_mask`` (ROI
files found but none is the mask), ``mask_size_mismatch`` (the mask's size differs from the
image's).
"""

from __future__ import annotations

import csv
import gc
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from monai_mammo.data.dicom import read_dicom
from monai_mammo.data.indexers.common import IndexResult, IndexSummary, OnError
from monai_mammo.data.schema import patch_class
from monai_mammo.exceptions import MammoConfigError, MammoDataError, MammoSkip

__all__ = ["index_cbis_ddsm", "MASS_COLUMNS", "CALC_COLUMNS", "find_description_csvs"]

MASS_COLUMNS = (
    "patient_id",
    "breast_density",
    "left or right breast",
    "image view",
    "abnormality id",
    "abnormality type",
    "mass shape",
    "mass margins",
    "assessment",
    "pathology",
    "subtlety",
    "image file path",
    "cropped image file path",
    "ROI mask file path",
)
CALC_COLUMNS = (
    "patient_id",
    "breast density",
    "left or right breast",
    "image view",
    "abnormality id",
    "abnormality type",
    "calc type",
    "calc distribution",
    "assessment",
    "pathology",
    "subtlety",
    "image file path",
    "cropped image file path",
    "ROI mask file path",
)
DATASET = "cbis-ddsm"
METADATA_CSV = "metadata.csv"
_CSV_GLOB = "*case_description*.csv"
_DENSITY_COLUMNS = ("breast_density", "breast density")

_SIDES = {"LEFT": "L", "RIGHT": "R"}
_VIEWS = {"CC": "CC", "MLO": "MLO"}
_TYPES = {"mass": "mass", "calcification": "calcification"}
_PATHOLOGY_LABELS = {"MALIGNANT": 1, "BENIGN": 0, "BENIGN_WITHOUT_CALLBACK": 0}
# DDSM density 0 means "not assessed": kept as None.
_DENSITIES: dict[str, int | None] = {"0": None, "1": 1, "2": 2, "3": 3, "4": 4}
_SCORES = {str(v): v for v in range(6)}
_CLASS_IDS = {(kind, label): int(patch_class(kind, label)) for kind in _TYPES for label in (0, 1)}
# a binary file of another size than the image is taken for a (mis-sized) mask, not for a crop,
# when it covers at least this fraction of the image's area
_MIN_MISSIZED_MASK_AREA = 0.25


@dataclass
class _Group:
    """The rows of one full image: its datalist item and its findings with their CSV ROI paths."""

    item: dict[str, Any]
    source: str
    image_rel: str
    rows_by_abnormality: dict[int, str] = field(default_factory=dict)
    label: int = 0  # maximum over the valid rows (every group has at least one)
    assessment: int = 0
    # (finding dict, cropped image path cell, ROI mask path cell, row source)
    findings: list[tuple[dict[str, Any], str, str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class _Header:
    rows: int
    columns: int
    for_processing: bool


def find_description_csvs(root: str | os.PathLike) -> list[Path]:
    """The CBIS-DDSM description CSVs in ``root`` (or, when none, in its direct sub-folders).

    Args:
        root: the dataset folder.

    Returns:
        The ``*case_description*.csv`` files, sorted by name.

    Raises:
        MammoDataError: ``root`` is not a folder or holds no description CSV.

    Example::

        find_description_csvs("/data/cbis")  # [.../calc_case_description_test_set.csv, ...]
    """
    folder = Path(root)
    if not folder.is_dir():
        raise MammoDataError("dataset folder not found", folder)
    found = sorted(folder.glob(_CSV_GLOB)) or sorted(folder.glob(f"*/{_CSV_GLOB}"))
    if not found:
        raise MammoDataError(
            "no CBIS-DDSM description CSVs found (expected mass_case_description_{train,test}_set.csv "
            "and/or calc_case_description_{train,test}_set.csv in the folder or a direct sub-folder)",
            folder,
        )
    return sorted(found, key=lambda p: p.name)


def _split_of(csv_name: str) -> str | None:
    name = csv_name.lower()
    if "train" in name:
        return "train"
    if "test" in name:
        return "test"
    return None


def _column_indices(header: list[str], path: Path) -> tuple[int, ...]:
    """Indices of the columns in :data:`MASS_COLUMNS` order, validating the header.

    Raises:
        MammoDataError: duplicate, missing or unexpected columns (naming the CSV and the columns).
    """
    if len(set(header)) != len(header):
        raise MammoDataError(f"duplicate columns {sorted({h for h in header if header.count(h) > 1})}", path)
    present = set(header)
    kind, columns = ("calc", CALC_COLUMNS) if "calc type" in present else ("mass", MASS_COLUMNS)
    # the density column is spelt two ways; accept either in either file
    density = next((s for s in _DENSITY_COLUMNS if s in present), columns[1])
    expected = [density if c in _DENSITY_COLUMNS else c for c in columns]
    missing = [c for c in expected if c not in present]
    extra = [c for c in header if c not in expected]
    if missing or extra:
        raise MammoDataError(
            f"not a CBIS-DDSM {kind} description CSV: missing columns {missing}, unexpected columns "
            f"{extra}; expected {list(columns)}",
            path,
        )
    return tuple(header.index(c) for c in expected)


class _Indexer:
    """State of one indexing run: options, the summary and the image groups read so far."""

    def __init__(self, root: Path, on_error: OnError, check_files: bool) -> None:
        if on_error not in ("skip", "raise"):
            raise MammoConfigError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        self.root = root
        self.root_str = os.path.abspath(root)
        self.on_error = on_error
        self.check_files = check_files
        self.summary = IndexSummary(dataset=DATASET, root=self.root_str)
        self.groups: dict[str, _Group] = {}
        self.resolver = _Resolver(Path(self.root_str)) if check_files else None

    def problem(self, source: str, reason: str, message: str) -> None:
        """Raise (``on_error="raise"``) or record a skip."""
        if self.on_error == "raise":
            raise MammoSkip(message, source, reason=reason)
        self.summary.skip(source, reason, message)

    def read_csv(self, path: Path) -> None:
        """Read one description CSV into :attr:`groups`."""
        name = path.name
        split = _split_of(name)
        try:
            fh = open(path, newline="", encoding="utf-8-sig")
        except OSError as exc:
            raise MammoDataError(f"cannot read the CSV: {exc}", path) from exc
        with fh:
            reader = csv.reader(fh)
            try:
                header = next(reader)
            except StopIteration:
                raise MammoDataError("empty CSV (no header row)", path) from None
            except csv.Error as exc:
                raise MammoDataError(f"malformed CSV header: {exc}", path) from exc
            header = [h.strip() for h in header]
            indices = _column_indices(header, path)
            try:
                self._read_rows(reader, name, split, header, indices)
            except csv.Error as exc:
                raise MammoDataError(f"malformed CSV at line {reader.line_num}: {exc}", path) from exc

    def _read_rows(
        self, reader: Any, name: str, split: str | None, header: list[str], indices: tuple[int, ...]
    ) -> None:
        (
            i_pid,
            i_den,
            i_side,
            i_view,
            i_abn,
            i_type,
            _,
            _,
            i_assess,
            i_path,
            i_subtle,
            i_img,
            i_crop,
            i_roi,
        ) = indices
        n_cols = len(header)
        groups = self.groups
        check_files = self.check_files
        summary = self.summary
        prefix = os.path.join(self.root_str, "")  # CSV paths are relative: joined by concatenation (fast)
        problem = self.problem
        row_no = 1
        for row in reader:
            row_no += 1
            if len(row) != n_cols:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line (e.g. at the end of the file)
                summary.rows_read += 1
                problem(f"{name}:row {row_no}", "bad_row", f"{len(row)} cells, expected {n_cols}")
                continue
            summary.rows_read += 1
            cells = list(map(str.strip, row))
            pid = cells[i_pid]
            density = _DENSITIES.get(cells[i_den], -1)
            side = _SIDES.get(cells[i_side])
            view = _VIEWS.get(cells[i_view])
            abn_cell = cells[i_abn]
            kind = _TYPES.get(cells[i_type]) or _TYPES.get(cells[i_type].lower())
            pathology = cells[i_path]
            label = _PATHOLOGY_LABELS.get(pathology)
            if label is None:  # tolerate case and spaces ("Benign without callback")
                pathology = pathology.upper().replace(" ", "_")
                label = _PATHOLOGY_LABELS.get(pathology)
            assessment = _SCORES.get(cells[i_assess])
            subtlety = _SCORES.get(cells[i_subtle])
            image_rel = cells[i_img]
            if (
                not pid
                or density == -1
                or side is None
                or view is None
                or not abn_cell.isdigit()
                or kind is None
                or label is None
                or assessment is None
                or subtlety is None
                or not image_rel
            ):
                column, expected = _first_bad_cell(cells, indices, pathology)
                problem(
                    f"{name}:row {row_no}",
                    "bad_value",
                    f"bad value {cells[column]!r} in column {header[column]!r} (expected {expected})",
                )
                continue
            abnormality = int(abn_cell)
            source = f"{name}:row {row_no}"
            group = groups.get(image_rel)
            item: dict[str, Any]
            if group is None:
                item = {
                    "image": prefix + image_rel,
                    "patient_id": pid,
                    "study_id": _study_of(image_rel),
                    "laterality": side,
                    "view": view,
                    "density": density,
                    "birads": None,
                    "label": None,
                    "findings": [],
                    "source": DATASET,
                    "split": split,
                }
                group = groups[image_rel] = _Group(item, source, image_rel)
            else:
                item = group.item
                if item["patient_id"] != pid or item["laterality"] != side or item["view"] != view:
                    problem(
                        source,
                        "inconsistent_row",
                        f"patient/side/view {pid}/{side}/{view} differ from {group.source} "
                        f"({item['patient_id']}/{item['laterality']}/{item['view']}) for image {image_rel!r}",
                    )
                    continue
            first = group.rows_by_abnormality.get(abnormality)
            if first is not None:
                problem(
                    source,
                    "duplicate_row",
                    f"duplicate of {first} (image {image_rel!r}, abnormality id {abnormality})",
                )
                continue
            group.rows_by_abnormality[abnormality] = source
            crop_rel = cells[i_crop]
            mask_rel = cells[i_roi]
            finding = {
                "type": kind,
                "pathology": pathology,
                "label": label,
                "class_id": _CLASS_IDS[kind, label],
                "mask": None if check_files or not mask_rel else prefix + mask_rel,
                "bbox": None,
                "abnormality_id": abnormality,
            }
            group.findings.append((finding, crop_rel, mask_rel, source))
            group.label = max(group.label, label)
            group.assessment = max(group.assessment, assessment)

    def items(self) -> list[dict[str, Any]]:
        """The datalist items of every group, resolving files when :attr:`check_files`."""
        out = []
        for group in self.groups.values():
            item = self._resolve(group) if self.check_files else group.item
            if item is None:
                continue
            item["label"], item["birads"] = group.label, str(group.assessment)
            if not self.check_files:
                item["findings"] = [finding for finding, _, _, _ in group.findings]
            out.append(item)
            self.summary.findings += len(item["findings"])
        self.summary.images = len(out)
        return out

    def _resolve(self, group: _Group) -> dict[str, Any] | None:
        """Resolve the full image and the ROI masks of one group on disk (None: image skipped)."""
        assert self.resolver is not None
        resolver = self.resolver
        item = group.item
        candidates = resolver.candidates(group.image_rel)
        if not candidates:
            self.problem(
                group.source,
                "missing_file",
                f"full image {group.image_rel!r} not found under {self.root_str} "
                f"({resolver.tried(group.image_rel)})",
            )
            return None
        headers: dict[Path, _Header] = {}
        errors: list[MammoSkip] = []
        for path in candidates:
            try:
                headers[path] = resolver.header(path)
            except MammoSkip as exc:
                errors.append(exc)
        if not headers:
            error = errors[0]
            self.problem(error.source or group.source, error.reason, f"full image: {error.problem}")
            return None
        # the full mammogram is the largest image of its series folder
        image_path = max(headers, key=lambda p: (headers[p].rows * headers[p].columns, str(p)))
        header = headers[image_path]
        if header.for_processing:
            self.problem(
                str(image_path),
                "for_processing",
                "PresentationIntentType is FOR PROCESSING (raw detector data); CBIS-DDSM full images "
                "must be FOR PRESENTATION",
            )
            return None
        item["image"] = str(image_path)
        shape = (header.rows, header.columns)
        for finding, crop_rel, mask_rel, source in group.findings:
            mask = self._resolve_mask(shape, image_path, crop_rel, mask_rel, source)
            if mask is not None:
                finding["mask"] = str(mask)
                item["findings"].append(finding)
        return item

    def _resolve_mask(
        self, shape: tuple[int, int], image_path: Path, crop_rel: str, mask_rel: str, source: str
    ) -> Path | None:
        """The ROI mask among the files of a finding's two ROI cells (None: finding skipped)."""
        assert self.resolver is not None
        resolver = self.resolver
        candidates = list(dict.fromkeys(resolver.candidates(mask_rel) + resolver.candidates(crop_rel)))
        candidates = [p for p in candidates if p != image_path]
        if not candidates:
            self.problem(
                source,
                "missing_file",
                f"ROI files {mask_rel!r} / {crop_rel!r} not found ({resolver.tried(mask_rel)})",
            )
            return None
        headers: dict[Path, _Header] = {}
        errors: list[MammoSkip] = []
        for path in candidates:
            try:
                headers[path] = resolver.header(path)
            except MammoSkip as exc:
                errors.append(exc)
        same = [p for p in headers if (headers[p].rows, headers[p].columns) == shape]
        if len(same) == 1:
            return same[0]
        binary_same = [p for p in same if resolver.is_binary(p)]
        if binary_same:
            return binary_same[0]
        area = shape[0] * shape[1]
        missized = [
            p
            for p in headers
            if p not in same
            and headers[p].rows * headers[p].columns >= _MIN_MISSIZED_MASK_AREA * area
            and resolver.is_binary(p)
        ]
        if missized:
            h = headers[missized[0]]
            self.problem(
                source,
                "mask_size_mismatch",
                f"ROI mask {missized[0]} is {h.rows}x{h.columns} but the image is {shape[0]}x{shape[1]}; "
                "excluded (not stretched)",
            )
        elif errors and not same:
            self.problem(source, "corrupt_file", f"no usable ROI mask: {errors[0]}")
        else:
            found = ", ".join(f"{p.name} {headers[p].rows}x{headers[p].columns}" for p in headers)
            self.problem(
                source,
                "missing_mask",
                f"no binary ROI mask of the image's size {shape[0]}x{shape[1]} among the ROI files ({found})",
            )
        return None


def _first_bad_cell(cells: list[str], indices: tuple[int, ...], pathology: str) -> tuple[int, str]:
    """The first invalid cell of a row (column index, what was expected)."""
    (i_pid, i_den, i_side, i_view, i_abn, i_type, _, _, i_assess, i_path, i_subtle, i_img, _, _) = indices
    checks: list[tuple[int, bool, str]] = [
        (i_pid, bool(cells[i_pid]), "a patient id"),
        (i_den, cells[i_den] in _DENSITIES, "an integer density 0..4"),
        (i_side, cells[i_side] in _SIDES, "LEFT or RIGHT"),
        (i_view, cells[i_view] in _VIEWS, "CC or MLO"),
        (i_abn, cells[i_abn].isdigit(), "an integer abnormality id"),
        (i_type, cells[i_type].lower() in _TYPES, "mass or calcification"),
        (i_assess, cells[i_assess] in _SCORES, "an integer assessment 0..5"),
        (i_path, pathology in _PATHOLOGY_LABELS, "one of " + ", ".join(_PATHOLOGY_LABELS)),
        (i_subtle, cells[i_subtle] in _SCORES, "an integer subtlety 0..5"),
        (i_img, bool(cells[i_img]), "an image file path"),
    ]
    return next((index, expected) for index, ok, expected in checks if not ok)


def _study_of(image_rel: str) -> str | None:
    """The StudyInstanceUID of a CSV path ``<subject>/<study UID>/<series UID>/<file>``."""
    parts = image_rel.split("/")
    return parts[1] if len(parts) >= 4 else None


class _Resolver:
    """Finds the files of CSV paths on disk and reads their DICOM headers (cached)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bases = [b for b in (root, root / "CBIS-DDSM") if b.is_dir()]
        self._subjects: dict[str, list[Path]] = {}
        self._series: dict[str, Path] | None = None
        self._headers: dict[Path, _Header | MammoSkip] = {}
        self._binary: dict[Path, bool] = {}

    def candidates(self, rel: str) -> list[Path]:
        """The files a CSV path may refer to: the exact file, the subject folder's, or the series folder's."""
        if not rel:
            return []
        for base in self.bases:
            path = base / rel
            if path.is_file():
                return [path]
        parts = rel.split("/")
        files = self._subject_files(parts[0])
        if files:
            return files
        if len(parts) >= 3:
            folder = self.series_folders().get(parts[-2])
            if folder is not None:
                return sorted(p for p in folder.rglob("*.dcm") if p.is_file())
        return []

    def tried(self, rel: str) -> str:
        """What :meth:`candidates` looked for (for messages)."""
        parts = rel.split("/")
        series = f", series {parts[-2]} in {METADATA_CSV}" if len(parts) >= 3 else ""
        return f"tried the CSV path, the subject folder {parts[0]!r}{series}"

    def _subject_files(self, subject: str) -> list[Path]:
        if subject not in self._subjects:
            files: list[Path] = []
            for base in self.bases:
                folder = base / subject
                if folder.is_dir():
                    files = sorted(p for p in folder.rglob("*.dcm") if p.is_file())
                    break
            self._subjects[subject] = files
        return self._subjects[subject]

    def series_folders(self) -> dict[str, Path]:
        """SeriesInstanceUID -> folder, from the retriever's ``metadata.csv`` (empty when absent)."""
        if self._series is None:
            self._series = {}
            places = [self.root / METADATA_CSV, self.root / "CBIS-DDSM" / METADATA_CSV]
            if self.root.name == "CBIS-DDSM":
                places.append(self.root.parent / METADATA_CSV)
            for path in places:
                if path.is_file():
                    self._series = _read_metadata_csv(path)
                    break
        return self._series

    def header(self, path: Path) -> _Header:
        """Rows, Columns and presentation intent of a DICOM file (pixels not read).

        Raises:
            MammoSkip: (reason ``corrupt_file``) unreadable or truncated file.
        """
        cached = self._headers.get(path)
        if cached is None:
            cached = self._headers[path] = _read_header(path)
        if isinstance(cached, MammoSkip):
            raise cached
        return cached

    def is_binary(self, path: Path) -> bool:
        """Whether a DICOM file's pixels take at most two values, one of them 0 (a mask)."""
        if path not in self._binary:
            try:
                arr = pydicom.dcmread(path).pixel_array
            except Exception:  # pydicom raises many types on damaged pixel data
                self._binary[path] = False
            else:
                top = arr.max()
                self._binary[path] = bool(top > 0 and np.count_nonzero((arr != 0) & (arr != top)) == 0)
        return self._binary[path]


def _read_header(path: Path) -> _Header | MammoSkip:
    try:
        ds = read_dicom(path, stop_before_pixels=True)
        rows, columns = int(ds.Rows), int(ds.Columns)
        bits = int(ds.get("BitsAllocated", 16))
        intent = str(ds.get("PresentationIntentType", "")).strip().upper()
        syntax = ds.file_meta.get("TransferSyntaxUID")
    except Exception as exc:  # pydicom raises many types (InvalidDicomError, EOFError, ...) on bad files
        return MammoSkip(f"unreadable DICOM file: {type(exc).__name__}: {exc}", path, reason="corrupt_file")
    expected = rows * columns * ((bits + 7) // 8)
    size = path.stat().st_size
    if syntax is not None and not syntax.is_compressed and size < expected:
        return MammoSkip(
            f"truncated DICOM file: {size} bytes for a {rows}x{columns} {bits}-bit image",
            path,
            reason="corrupt_file",
        )
    return _Header(rows, columns, intent == "FOR PROCESSING")


def _read_metadata_csv(path: Path) -> dict[str, Path]:
    """SeriesInstanceUID -> series folder from an NBIA retriever ``metadata.csv``.

    Raises:
        MammoDataError: the CSV lacks the ``Series UID`` or ``File Location`` column.
    """
    folders = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        try:
            header = [c.strip() for c in next(reader, [])]
            missing = [c for c in ("Series UID", "File Location") if c not in header]
            if missing:
                raise MammoDataError(f"NBIA metadata CSV lacks columns {missing}", path)
            i_uid, i_location = header.index("Series UID"), header.index("File Location")
            for row in reader:
                if len(row) > max(i_uid, i_location):
                    uid, location = row[i_uid].strip(), row[i_location].strip().replace("\\", "/")
                    if uid and location:
                        folders[uid] = path.parent / location
        except csv.Error as exc:
            raise MammoDataError(f"malformed CSV at line {reader.line_num}: {exc}", path) from exc
    return folders


def index_cbis_ddsm(
    root: str | os.PathLike,
    *,
    on_error: OnError = "skip",
    check_files: bool = True,
    csv_files: Sequence[str | os.PathLike] | None = None,
) -> IndexResult:
    """Index a CBIS-DDSM download: one datalist item per full image, with its findings.

    Rows are grouped by image file path; each finding gets a binary ``label`` (MALIGNANT -> 1,
    BENIGN / BENIGN_WITHOUT_CALLBACK -> 0) and a 5-class ``class_id``
    (:class:`~monai_mammo.data.schema.PatchClass`); the image ``label`` is the maximum over the
    findings whose rows are valid (a finding dropped only because its mask is missing or
    mis-sized still counts: its pathology is known), ``birads`` the highest assessment,
    ``split`` the official split of the CSV (``"train"``/``"test"``), ``study_id`` the
    StudyInstanceUID of the CSV path. ``bbox`` is left None (derive it from the mask).

    Args:
        root: the download folder: the one holding ``CBIS-DDSM/`` (or the subject folders
            directly), ``metadata.csv`` and the description CSVs.
        on_error: ``"skip"`` records every bad row/file in the summary and goes on;
            ``"raise"`` raises at the first one.
        check_files: True resolves every path on disk, reads DICOM headers (and mask pixels
            when ambiguous) and skips broken files; False (paths-only / benchmark mode) touches
            no image file and keeps the CSV paths joined to ``root`` (``mask`` is then the ROI
            mask column as written, which may be the crop).
        csv_files: the description CSVs to read (relative paths are taken under ``root``);
            None finds ``*case_description*.csv`` in ``root`` or a direct sub-folder.

    Returns:
        The items (schema in :mod:`monai_mammo.data.schema`, ``source="cbis-ddsm"``) and the
        summary with every skip.

    Raises:
        MammoDataError: no CSV found, a CSV with missing/extra columns (naming the file and
            the columns), a malformed metadata.csv, or with ``on_error="raise"`` the first bad
            row or file (a :class:`~monai_mammo.exceptions.MammoSkip` naming ``file.csv:row N``).
        MammoConfigError: invalid ``on_error``.

    Example::

        result = index_cbis_ddsm("/data/cbis-ddsm")
        print(result.summary.format())
        splits = split_by_patient(result.items)
    """
    root_path = Path(root)
    if check_files and not root_path.is_dir():
        raise MammoDataError("dataset folder not found", root_path)
    indexer = _Indexer(root_path, on_error, check_files)
    if csv_files is None:
        paths = find_description_csvs(root_path)
    else:
        paths = [p if p.is_absolute() else root_path / p for p in map(Path, csv_files)]
        if not paths:
            raise MammoConfigError("csv_files is empty")
    # the rows become long-lived dicts: cyclic garbage collection passes over them are pure overhead
    # (they halve the speed on million-row CSVs), so it is paused while reading
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for path in paths:
            indexer.read_csv(path)
    finally:
        if gc_was_enabled:
            gc.enable()
    return IndexResult(items=indexer.items(), summary=indexer.summary)
