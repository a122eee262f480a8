"""Four-view exam records from standard datalist items (DICOM, PNG): grouping by patient and study.

:func:`monai_mammo.data.indexers.nyu.group_exams` groups the items of NYU exam lists, which
carry their exam, view key and breast labels. :func:`group_image_exams` makes the same exam
records from items of the datalist schema (:mod:`monai_mammo.data.schema`: ``image``,
``patient_id``, ``study_id``, ``laterality``, ``view``, ``label``, ``findings``), as written by
the CBIS-DDSM, INbreast and VinDr indexers or brought by the user (``dataset_format
"datalist"``). :func:`group_exams_by_format` picks the grouping of a dataset format and is what
the ``nyu_multiview`` bundle calls.

Conventions of :func:`group_image_exams`:

- **Exam key**: ``(patient_id, study_id)``; an item whose ``study_id`` is None belongs to the
  exam of its patient alone (all of that patient's images without a study form one exam).
  ``exam_id`` is ``"<patient_id>/<study_id>"`` (``"<patient_id>"`` without a study).
- **Views**: laterality ``L``/``R`` and view ``CC``/``MLO`` (normalised as the DICOM reader
  does) give ``L-CC``, ``R-CC``, ``L-MLO``, ``R-MLO``. Other views (``ML``, ``XCCL``, ...) and
  unknown lateralities are *skipped and counted* (:class:`ExamGrouping` ``skipped``, a warning
  in the log): a true lateral (ML) is not the oblique projection the MLO column learns, so it
  is not used as one unless ``view_aliases={"ML": "MLO"}`` says so. The first image of a view
  is the view's image; ``images`` lists them all.
- **Breast labels**: a finding counts as malignant when its ``label`` is 1 (else its
  ``pathology`` is ``MALIGNANT``) and as benign when that label is 0 (``BENIGN``,
  ``BENIGN_WITHOUT_CALLBACK``). An image is malignant when its ``label`` is 1 or a finding is
  malignant, not malignant when its ``label`` is 0, else unknown; it is benign when a finding is
  benign, not benign when its ``label`` is known and none of its findings is of unknown
  pathology, else unknown. So an image with no findings and label 0 is negative for both. A
  breast is positive when any of its images is, negative when all of them are, else unknown
  (None), as is a breast without images. Unlike NYU records, ``label`` keeps the known
  targets of a partly labelled exam (None entries for the others).
- **BI-RADS**: the exam's class of Wu et al.'s pretraining task from the items' ``birads``:
  None when a breast is 3 or higher (not a screening class) or any breast is unknown, else 0
  when a breast is 0 (incomplete), else 2 when a breast is 2 (benign), else 1 (negative).
- **Orientation**: ``horizontal_flip`` is ``"NO"``. :class:`~monai_mammo.engines.multiview.LoadExam`
  then orients every view with :class:`~monai_mammo.transforms.breast.OrientBreastd` from its
  laterality, as every other family of the project does: the images are expected in the
  display orientation the DICOM readers deliver (pixels never transposed; the chest wall of
  a left breast on the image's left edge, of a right breast on its right edge).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from monai_mammo.data.dicom import normalize_laterality, normalize_view
from monai_mammo.data.indexers.common import SkipRecord
from monai_mammo.data.indexers.nyu import NYU_CANCER_KEYS, NYU_VIEWS, group_exams
from monai_mammo.data.schema import pathology_to_label
from monai_mammo.exceptions import MammoDataError

__all__ = [
    "NYU_FORMAT",
    "ExamGrouping",
    "exam_key",
    "image_breast_labels",
    "group_image_exams",
    "group_exams_by_format",
    "read_image_items",
]

NYU_FORMAT = "nyu"
_VIEWS = ("CC", "MLO")
logger = logging.getLogger(__name__)


class ExamGrouping(NamedTuple):
    """Exam records and the images left out of them.

    Attributes:
        exams: exam records (the keys of :func:`~monai_mammo.data.indexers.nyu.group_exams`
            plus ``study_id`` and ``exam_id``).
        skipped: one record per image left out (reasons ``unknown_laterality``, ``unused_view``).
    """

    exams: list[dict[str, Any]]
    skipped: list[SkipRecord]


def exam_key(item: Mapping[str, Any]) -> tuple[str, str | None]:
    """The exam of an image item: ``(patient_id, study_id)``, study None when unknown.

    Args:
        item: a datalist item.

    Returns:
        ``(patient_id, study_id or None)`` as strings.

    Raises:
        MammoDataError: the item has no ``patient_id``.

    Example:
        >>> exam_key({"patient_id": "P1", "study_id": None})
        ('P1', None)
    """
    patient = item.get("patient_id")
    if patient is None or str(patient) == "":
        raise MammoDataError("an image item needs a patient_id to be grouped into exams", item.get("image"))
    study = item.get("study_id")
    return str(patient), None if study is None or str(study) == "" else str(study)


def _finding_class(finding: Mapping[str, Any]) -> int | None:
    """1 malignant, 0 benign, None unknown: the finding's label, else its pathology."""
    label = finding.get("label")
    return int(label) if label in (0, 1) else pathology_to_label(finding.get("pathology"))


def image_breast_labels(item: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """``(benign, malignant)`` evidence of one image (module rules; None = unknown).

    Args:
        item: a datalist item (``label``, ``findings``).

    Returns:
        ``(benign, malignant)``, each 1, 0 or None.

    Example:
        >>> image_breast_labels({"label": 0, "findings": []})
        (0, 0)
        >>> image_breast_labels({"label": 1, "findings": [{"label": 1}, {"pathology": "BENIGN"}]})
        (1, 1)
    """
    label = item.get("label")
    label = int(label) if label in (0, 1) else None
    classes = [_finding_class(f) for f in item.get("findings") or []]
    malignant = 1 if label == 1 or 1 in classes else (0 if label == 0 else None)
    if 0 in classes:
        benign: int | None = 1
    else:
        benign = 0 if label is not None and None not in classes else None
    return benign, malignant


def _combine(values: Iterable[int | None]) -> int | None:
    """A breast label from its images: 1 if any is 1, 0 if all are 0, else None (also when empty)."""
    values = list(values)
    if 1 in values:
        return 1
    return 0 if values and all(v == 0 for v in values) else None


def _birads_number(value: Any) -> int | None:
    """The category number of a BI-RADS value (``"4a"`` -> 4); None when unknown."""
    text = "" if value is None else str(value).strip()
    return int(text[0]) if text[:1].isdigit() else None


def _birads_class(per_breast: Sequence[Any]) -> int | None:
    """Wu et al.'s exam class (0 incomplete, 1 negative, 2 benign) from the breasts' BI-RADS."""
    numbers = [_birads_number(v) for v in per_breast]
    if not numbers or any(n is None or n >= 3 for n in numbers):
        return None
    return 0 if 0 in numbers else (2 if 2 in numbers else 1)


def _view_key(
    item: Mapping[str, Any], aliases: Mapping[str, str], source: str
) -> tuple[str | None, SkipRecord | None]:
    """``"L-CC"``... of an item, or the skip record saying why it has none."""
    side = normalize_laterality(item.get("laterality"))
    if side is None:
        message = f"laterality {item.get('laterality')!r} is not L or R"
        return None, SkipRecord(source, "unknown_laterality", message)
    view = normalize_view(item.get("view"))
    view = aliases.get(view or "", view)
    if view not in _VIEWS:
        message = f"view {item.get('view')!r} is not one of {list(_VIEWS)} (view_aliases maps others)"
        return None, SkipRecord(source, "unused_view", message)
    return f"{side}-{view}", None


def _new_record(index: int, patient: str, study: str | None) -> dict[str, Any]:
    return {
        "exam_index": index,
        "exam_id": patient if study is None else f"{patient}/{study}",
        "patient_id": patient,
        "study_id": study,
        "horizontal_flip": "NO",
        **{view: None for view in NYU_VIEWS},
        "images": {view: [] for view in NYU_VIEWS},
    }


def group_image_exams(
    items: Sequence[Mapping[str, Any]], view_aliases: Mapping[str, str] | None = None
) -> ExamGrouping:
    """Group datalist items (DICOM or other images) into four-view exam records.

    Args:
        items: datalist items (``image``, ``patient_id``, ``study_id``, ``laterality``,
            ``view``, ``label``, ``findings``, optional ``birads``).
        view_aliases: normalised view -> ``"CC"``/``"MLO"`` for other views to use (e.g.
            ``{"ML": "MLO"}``); none by default.

    Returns:
        The :class:`ExamGrouping`: one record per exam in order of first appearance, with
        ``exam_index``, ``exam_id``, ``patient_id``, ``study_id``, ``horizontal_flip`` (``"NO"``),
        the four view keys (the first image, or None), ``images`` (every path per view), the
        four breast labels, ``label`` (those four in the model's row order, an unknown one
        None so that the loss and metrics ignore that target only; None when all four are
        unknown) and ``birads`` (module rules); and the skipped images.

    Raises:
        MammoDataError: an item without ``image`` or ``patient_id`` (named by its position).

    Example::

        grouping = group_image_exams(index_dataset("inbreast", "/data/INbreast").items)
        four_view = [e for e in grouping.exams if all(e[v] for v in NYU_VIEWS)]
    """
    aliases = {normalize_view(k) or k: v for k, v in (view_aliases or {}).items()}
    records: dict[tuple[str, str | None], dict[str, Any]] = {}
    evidence: dict[tuple[str, str | None], dict[str, list[tuple[int | None, int | None]]]] = {}
    birads: dict[tuple[str, str | None], dict[str, Any]] = {}
    skipped: list[SkipRecord] = []
    for position, item in enumerate(items):
        source = f"items[{position}] {item.get('image')}"
        if not item.get("image"):
            raise MammoDataError("an image item needs an 'image' path", f"items[{position}]")
        try:
            key = exam_key(item)
        except MammoDataError as error:
            raise MammoDataError(error.problem, source) from error
        view_key, skip = _view_key(item, aliases, source)
        if view_key is None:
            skipped.append(skip)  # type: ignore[arg-type]
            continue
        record = records.setdefault(key, _new_record(len(records), *key))
        record["images"][view_key].append(str(item["image"]))
        record[view_key] = record["images"][view_key][0]
        side = "left" if view_key.startswith("L") else "right"
        evidence.setdefault(key, {"left": [], "right": []})[side].append(image_breast_labels(item))
        birads.setdefault(key, {}).setdefault(side, item.get("birads"))
    for key, record in records.items():
        for side in ("left", "right"):
            per_image = evidence[key][side]
            record[f"{side}_benign"] = _combine(b for b, _ in per_image)
            record[f"{side}_malignant"] = _combine(m for _, m in per_image)
        labels = [record[name] for name in NYU_CANCER_KEYS]
        record["label"] = None if all(v is None for v in labels) else labels
        sides = birads[key]
        record["birads"] = _birads_class([sides.get("left"), sides.get("right")])
    if skipped:
        counts = dict(Counter(s.reason for s in skipped))
        logger.warning("exam grouping: %d image(s) not used as a view: %s", len(skipped), counts)
    return ExamGrouping(list(records.values()), skipped)


def group_exams_by_format(
    items: Sequence[dict[str, Any]],
    dataset_format: str,
    view_aliases: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Exam records of a dataset format's items: NYU exam lists by exam, any other format by patient/study.

    Args:
        items: datalist items.
        dataset_format: ``"nyu"`` (items of :func:`~monai_mammo.data.indexers.nyu.index_nyu`,
            grouped by :func:`~monai_mammo.data.indexers.nyu.group_exams`) or any other format
            (``cbis-ddsm``, ``inbreast``, ``vindr``, ``datalist``...: :func:`group_image_exams`).
        view_aliases: see :func:`group_image_exams` (other formats only).

    Returns:
        The exam records.

    Raises:
        MammoDataError: items that the chosen grouping cannot read.

    Example::

        exams = group_exams_by_format(datalist["training"], "inbreast")
    """
    if dataset_format == NYU_FORMAT:
        return group_exams(items)
    return group_image_exams(items, view_aliases).exams


def read_image_items(
    source: str | os.PathLike,
    dataset_format: str,
    exam_list: str | os.PathLike = "exam_list.pkl",
    image_dir: str | os.PathLike = "images",
) -> list[dict[str, Any]]:
    """Every image item of an inference input, failing on the first unreadable entry.

    Args:
        source: the dataset folder, or the datalist JSON for ``dataset_format="datalist"``.
        dataset_format: ``"nyu"``, ``"datalist"`` or another indexer's format.
        exam_list: NYU only: the exam-list pickle, relative to ``source`` or absolute.
        image_dir: NYU only: the image folder, relative to ``source`` or absolute.

    Returns:
        The items (a datalist: all of its splits in order; labels not required).

    Raises:
        MammoDataError: as raised by the indexer or the datalist reader.
        MammoConfigError: unknown format.

    Example::

        items = read_image_items("/data/new_exams", "inbreast")
        exams = group_exams_by_format(items, "inbreast")
    """
    from monai_mammo.data.indexers import index_dataset
    from monai_mammo.data.indexers.nyu import index_nyu
    from monai_mammo.data.prepare import DATALIST_FORMAT, load_user_datalist

    if dataset_format == NYU_FORMAT:
        return index_nyu(source, exam_list=exam_list, image_dir=image_dir, on_error="raise").items
    if dataset_format == DATALIST_FORMAT:
        splits, _ = load_user_datalist(source, require_label=False, on_error="raise")
        return [item for name in ("training", "validation", "test") for item in splits.get(name, [])]
    return index_dataset(dataset_format, source, on_error="raise").items
