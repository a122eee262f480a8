"""NYU-style exam lists (Wu et al. 2019): a pickled list of exams -> one datalist item per image.

An exam list is a pickle of dicts such as::

    {"horizontal_flip": "NO", "L-CC": ["0_L_CC"], "R-CC": ["0_R_CC"],
     "L-MLO": ["0_L_MLO"], "R-MLO": ["0_R_MLO"],
     # after NYU's cropping / optimal-centre steps, one entry per image of each view:
     "window_location": {"L-CC": [(top, bottom, left, right)], ...},
     "rightmost_points": {"L-CC": [((y_first, y_last), x)], ...},
     "bottommost_points": {"L-CC": [(y, (x_first, x_last))], ...},
     "distance_from_starting_side": {"L-CC": [0], ...},
     "best_center": {"L-CC": [(y, x)], ...},
     # optional labels:
     "cancer_label": {"left_benign": 0, "right_benign": 0, "left_malignant": 1, "right_malignant": 0},
     # optional extensions of monai_mammo (not in NYU's format):
     "birads": 0,                                  # exam BI-RADS class: 0, 1 or 2 (Wu et al.)
     "findings": {"L-CC": [[{"type": "mass", "pathology": "MALIGNANT",
                             "mask": "masks/0_L_CC_0.png", "bbox": [y0, x0, y1, x1]}]], ...}}

Images are ``<image_dir>/<name>.png`` (16-bit PNGs holding 12-bit data). The pickle is
loaded with :func:`monai_mammo.data.safe_pickle.restricted_load` (builtins and numpy
values only), so a malicious exam list cannot run code.

Conventions of this indexer:

- Exam lists carry no patient id: every exam is its own patient and study
  (``patient_id`` = ``study_id`` = ``"exam_<index>"``), so splits are exam-level.
- Labels are breast-level: an image gets ``benign`` / ``malignant`` of its side and
  ``label`` = ``malignant``; all three are None without ``cancer_label``.
- The preprocessing metadata keeps NYU's meaning and orientation (relative to the crop,
  breast facing right); tuples become lists so that the datalist is JSON.
- ``birads`` (optional) is the exam's class of Wu et al.'s BI-RADS pretraining task:
  0 = incomplete (recalled), 1 = negative, 2 = benign. Every image of the exam carries it.
- ``findings`` (optional) gives, per view, one list of lesions per image (the view's images
  in order): ``type`` (``mass``/``calcification``), ``pathology`` (``MALIGNANT``, ``BENIGN``,
  ``BENIGN_WITHOUT_CALLBACK``), ``mask`` (binary image-sized mask file, relative to ``root``
  or absolute) and optionally ``bbox`` (half-open ``[y0, x0, y1, x1]`` in pixels). A view
  missing from ``findings`` has no lesion. Exam lists without these keys stay valid
  (``birads`` None, ``findings`` empty).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from monai_mammo.data.indexers.common import IndexResult, IndexSummary, OnError
from monai_mammo.data.safe_pickle import restricted_load
from monai_mammo.data.schema import FINDING_TYPES, PATHOLOGIES, patch_class
from monai_mammo.exceptions import MammoConfigError, MammoDataError, MammoSkip

__all__ = [
    "index_nyu",
    "group_exams",
    "NYU_VIEWS",
    "NYU_METADATA_KEYS",
    "NYU_CANCER_KEYS",
    "NYU_BIRADS_CLASSES",
]

NYU_VIEWS = ("L-CC", "R-CC", "L-MLO", "R-MLO")
NYU_CANCER_KEYS = ("left_benign", "right_benign", "left_malignant", "right_malignant")
_N = "number"
_TEMPLATES: dict[str, Any] = {
    "window_location": [_N, _N, _N, _N],
    "rightmost_points": [[_N, _N], _N],
    "bottommost_points": [_N, [_N, _N]],
    "distance_from_starting_side": _N,
    "best_center": [_N, _N],
}
NYU_METADATA_KEYS = tuple(_TEMPLATES)
NYU_BIRADS_CLASSES = (0, 1, 2)
"""Exam BI-RADS classes of Wu et al.'s pretraining: 0 = incomplete, 1 = negative, 2 = benign."""
_KNOWN_KEYS = frozenset(
    ("horizontal_flip", "cancer_label", "birads", "findings") + NYU_VIEWS + NYU_METADATA_KEYS
)
_FINDING_KEYS = frozenset(("type", "pathology", "mask", "bbox"))


class _Exam(NamedTuple):
    """A validated exam: its views, cancer labels, BI-RADS class and per-image findings."""

    views: dict[str, list[str]]
    labels: dict[str, int] | None
    birads: int | None
    findings: dict[str, list[list[dict[str, Any]]]]


def _plain(value: Any) -> Any:
    """numpy values -> Python scalars, tuples/arrays -> lists (JSON-ready); other values unchanged."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _matches(value: Any, template: Any) -> bool:
    """Whether a plain value has the nested shape of a template (``_N`` = a real number)."""
    if template == _N:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return (
        isinstance(value, list)
        and len(value) == len(template)
        and all(_matches(v, t) for v, t in zip(value, template))
    )


def _finding_problem(finding: Any) -> str | None:
    """What is wrong with one exam-list finding (None when it is valid)."""
    if not isinstance(finding, dict):
        return f"a finding must be a dict, got {finding!r}"
    unknown = sorted(str(key) for key in finding if key not in _FINDING_KEYS)
    if unknown:
        return f"unknown finding keys {unknown}; expected some of {sorted(_FINDING_KEYS)}"
    if finding.get("type") not in FINDING_TYPES:
        return f"finding type must be one of {list(FINDING_TYPES)}, got {finding.get('type')!r}"
    if finding.get("pathology") not in PATHOLOGIES:
        return f"finding pathology must be one of {list(PATHOLOGIES)}, got {finding.get('pathology')!r}"
    if not isinstance(finding.get("mask"), str) or not finding["mask"]:
        return f"finding mask must be a file path, got {finding.get('mask')!r}"
    bbox = _plain(finding.get("bbox"))
    if bbox is not None and not (
        _matches(bbox, [_N] * 4)
        and all(float(v).is_integer() for v in bbox)
        and 0 <= bbox[0] < bbox[2]
        and 0 <= bbox[1] < bbox[3]
    ):
        return f"finding bbox must be [y0, x0, y1, x1] integers with y0 < y1 and x0 < x1, got {bbox!r}"
    return None


def _check_findings(per_view: Any, views: dict[str, list[str]]) -> str | None:
    """What is wrong with an exam's ``findings`` (None when valid)."""
    if not isinstance(per_view, dict) or set(per_view) - set(views):
        return f"findings must be a dict over the exam's views, got {per_view!r}"
    for view, per_image in per_view.items():
        if not isinstance(per_image, list) or len(per_image) != len(views[view]):
            return f"findings[{view!r}] must list one list of findings per image ({len(views[view])})"
        for position, findings in enumerate(per_image):
            if not isinstance(findings, list):
                return f"findings[{view!r}][{position}] must be a list of findings, got {findings!r}"
            for index, finding in enumerate(findings):
                problem = _finding_problem(finding)
                if problem:
                    return f"findings[{view!r}][{position}][{index}]: {problem}"
    return None


def _check_exam(exam: Any, source: str) -> _Exam:
    """Validate an exam dict; return its views, labels, BI-RADS class and findings. Raises MammoSkip."""

    def bad(problem: str) -> MammoSkip:
        return MammoSkip(problem, source, reason="unexpected_content")

    if not isinstance(exam, dict):
        raise bad(f"exam is a {type(exam).__name__}, not a dict")
    unknown = sorted(str(key) for key in exam if key not in _KNOWN_KEYS)
    if unknown:
        raise bad(f"unknown keys {unknown}; views are {list(NYU_VIEWS)}")
    if exam.get("horizontal_flip") not in ("YES", "NO"):
        raise bad(f"horizontal_flip must be 'YES' or 'NO', got {exam.get('horizontal_flip')!r}")
    views = {}
    for view in NYU_VIEWS:
        if view not in exam:
            continue
        names = exam[view]
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise bad(f"{view} must be a list of image names, got {names!r}")
        views[view] = names
    if not any(views.values()):
        raise bad("no images in any view")
    for key, template in _TEMPLATES.items():
        if key not in exam:
            continue
        per_view = exam[key]
        if not isinstance(per_view, dict) or set(per_view) - set(views):
            raise bad(f"{key} must be a dict over the exam's views, got {per_view!r}")
        for view, names in views.items():
            values = _plain(per_view.get(view, []))
            if not isinstance(values, list) or len(values) != len(names):
                raise bad(
                    f"{key}[{view!r}] must list one value per image ({len(names)}), got {per_view.get(view)!r}"
                )
            if not all(_matches(v, template) for v in values):
                raise bad(f"{key}[{view!r}] values must look like {template}, got {values!r}")
    labels = None
    if "cancer_label" in exam:
        labels = exam["cancer_label"]
        if not isinstance(labels, dict) or any(_plain(labels.get(k)) not in (0, 1) for k in NYU_CANCER_KEYS):
            raise bad(f"cancer_label must map {list(NYU_CANCER_KEYS)} to 0 or 1, got {labels!r}")
        labels = {key: int(_plain(labels[key])) for key in NYU_CANCER_KEYS}
    birads = _plain(exam.get("birads"))
    if "birads" in exam and (isinstance(birads, bool) or birads not in NYU_BIRADS_CLASSES):
        raise bad(f"birads must be one of {list(NYU_BIRADS_CLASSES)}, got {exam['birads']!r}")
    findings = exam.get("findings", {})
    problem = _check_findings(findings, views)
    if problem:
        raise bad(problem)
    return _Exam(views, labels, None if birads is None else int(birads), findings)


def _resolve_findings(
    findings: list[dict[str, Any]],
    root: Path,
    check_files: bool,
    source: str,
    fail: Callable[[MammoSkip], None],
) -> list[dict[str, Any]]:
    """Schema findings of one image: absolute mask paths, label and class id (missing masks skipped)."""
    out = []
    for index, finding in enumerate(findings):
        mask = root / Path(finding["mask"]).expanduser()
        if check_files and not mask.is_file():
            fail(
                MammoSkip(
                    f"finding {index}: mask {finding['mask']!r} not found at {mask}", source, "missing_mask"
                )
            )
            continue
        label = int(finding["pathology"] == "MALIGNANT")  # pathology checked against PATHOLOGIES
        bbox = _plain(finding.get("bbox"))
        out.append(
            {
                "type": finding["type"],
                "pathology": finding["pathology"],
                "label": label,
                "class_id": int(patch_class(finding["type"], label)),
                "mask": str(mask),
                "bbox": None if bbox is None else [int(v) for v in bbox],
                "abnormality_id": index,
            }
        )
    return out


def index_nyu(
    root: str | os.PathLike,
    *,
    exam_list: str | os.PathLike = "exam_list.pkl",
    image_dir: str | os.PathLike = "images",
    on_error: OnError = "skip",
    check_files: bool = True,
) -> IndexResult:
    """Index an NYU-style exam list into one datalist item per image.

    Args:
        root: the dataset folder.
        exam_list: the exam-list pickle, relative to ``root`` or absolute.
        image_dir: the PNG folder, relative to ``root`` or absolute.
        on_error: ``"skip"`` counts a malformed exam or missing image and goes on;
            ``"raise"`` raises on the first one.
        check_files: check that every ``<image_dir>/<name>.png`` and finding mask exists.

    Returns:
        The items (``source`` ``"nyu"``; ``birads`` the exam's class or None; ``findings``
        in the datalist schema with absolute ``mask`` paths, ``label``, ``class_id``, ``bbox``
        (or None) and ``abnormality_id`` (index within the image); extra keys ``exam_index``,
        ``view_key`` (e.g. ``"L-CC"``), ``horizontal_flip``, ``benign``, ``malignant`` and the
        exam's preprocessing metadata keys present, each the value of this image) and the
        summary (``rows_read`` = exams read). Skip reasons: ``unexpected_content`` (the whole
        exam: not a dict, unknown key, wrong types, missing or invalid ``horizontal_flip``,
        metadata or findings not matching its views, a ``birads`` outside 0..2, a malformed
        finding), ``missing_image`` (that image only) and ``missing_mask`` (that finding only).

    Raises:
        MammoDataError: the pickle is missing, corrupt, references a forbidden global or
            is not a list; with ``on_error="raise"``, the first malformed exam, missing
            image or missing mask (named as ``<pickle>[exam <index>]``).
        MammoConfigError: invalid ``on_error``.

    Example::

        result = index_nyu("/data/nyu", exam_list="data.pkl", image_dir="cropped")
        exams = group_exams(result.items)
    """
    if on_error not in ("skip", "raise"):
        raise MammoConfigError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    root = Path(root).expanduser().resolve()
    list_path = root / Path(exam_list).expanduser()
    images = root / Path(image_dir).expanduser()
    exams = restricted_load(list_path, allow_numpy=True)
    if not isinstance(exams, list):
        raise MammoDataError(
            f"an exam list must be a list of exam dicts, got a {type(exams).__name__}", list_path
        )
    summary = IndexSummary(dataset="nyu", root=str(root))

    def fail(error: MammoSkip) -> None:
        if on_error == "raise":
            raise MammoDataError(error.problem, error.source) from error
        summary.skip_error(error)

    items = []
    for index, exam in enumerate(exams):
        summary.rows_read += 1
        source = f"{list_path}[exam {index}]"
        try:
            checked = _check_exam(exam, source)
        except MammoSkip as error:
            fail(error)
            continue
        labels = checked.labels
        for view_key, names in checked.views.items():
            side, view = view_key.split("-")
            prefix = "left" if side == "L" else "right"
            for position, name in enumerate(names):
                image = images / f"{name}.png"
                if check_files and not image.is_file():
                    fail(
                        MammoSkip(
                            f"{view_key} image {name!r} not found at {image}", source, reason="missing_image"
                        )
                    )
                    continue
                per_image = checked.findings.get(view_key, [[]] * len(names))[position]
                findings = _resolve_findings(
                    per_image, root, check_files, f"{source} {view_key} {name!r}", fail
                )
                item = {
                    "image": str(image),
                    "patient_id": f"exam_{index}",
                    "study_id": f"exam_{index}",
                    "laterality": side,
                    "view": view,
                    "density": None,
                    "birads": checked.birads,
                    "label": None if labels is None else labels[f"{prefix}_malignant"],
                    "findings": findings,
                    "source": "nyu",
                    "split": None,
                    "exam_index": index,
                    "view_key": view_key,
                    "horizontal_flip": exam["horizontal_flip"],
                    "benign": None if labels is None else labels[f"{prefix}_benign"],
                    "malignant": None if labels is None else labels[f"{prefix}_malignant"],
                }
                for key in NYU_METADATA_KEYS:
                    if key in exam:
                        item[key] = _plain(exam[key][view_key][position])
                items.append(item)
                summary.findings += len(findings)
    summary.images = len(items)
    return IndexResult(items=items, summary=summary)


def group_exams(items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group :func:`index_nyu` items into exam-level records for four-view models.

    Args:
        items: image items carrying ``exam_index``, ``view_key``, ``horizontal_flip``,
            ``benign`` and ``malignant`` (as made by :func:`index_nyu`).

    Returns:
        One record per exam in order of first appearance: ``exam_index``, ``patient_id``,
        ``horizontal_flip``, the four view keys (``"L-CC"``, ``"R-CC"``, ``"L-MLO"``,
        ``"R-MLO"``) each holding the path of the view's first image or None when the exam
        lacks the view, ``images`` (every path per view), the four breast labels
        ``left_benign, right_benign, left_malignant, right_malignant`` (None when unknown),
        ``label``: those four in the view-wise model's row order
        ``[L-benign, R-benign, L-malignant, R-malignant]``, None when any is unknown, and
        ``birads``: the exam's BI-RADS class (the items' ``birads``; None when unknown).

    Raises:
        MammoDataError: an item lacks one of the keys above (named by its position).

    Example::

        exams = [e for e in group_exams(index_nyu(root).items) if all(e[v] for v in NYU_VIEWS)]
    """
    exams: dict[int, dict[str, Any]] = {}
    for position, item in enumerate(items):
        missing = [
            k for k in ("exam_index", "view_key", "horizontal_flip", "benign", "malignant") if k not in item
        ]
        if missing or item.get("view_key") not in NYU_VIEWS:
            raise MammoDataError(
                f"not an NYU image item: missing {missing} or bad view_key", f"items[{position}]"
            )
        record = exams.setdefault(
            item["exam_index"],
            {
                "exam_index": item["exam_index"],
                "patient_id": item.get("patient_id"),
                "horizontal_flip": item["horizontal_flip"],
                **{view: None for view in NYU_VIEWS},
                "images": {view: [] for view in NYU_VIEWS},
                **{key: None for key in NYU_CANCER_KEYS},
                "birads": None,
            },
        )
        if record["birads"] is None:
            record["birads"] = item.get("birads")
        view_key = item["view_key"]
        record["images"][view_key].append(item["image"])
        record[view_key] = record["images"][view_key][0]
        prefix = "left" if view_key.startswith("L") else "right"
        record[f"{prefix}_benign"], record[f"{prefix}_malignant"] = item["benign"], item["malignant"]
    for record in exams.values():
        labels = [record[key] for key in NYU_CANCER_KEYS]
        record["label"] = None if any(value is None for value in labels) else labels
    return list(exams.values())
