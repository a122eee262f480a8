"""Write a synthetic digital (OMI-DB-like) dataset: DICOM images + one bounding-box CSV.

The tree written under ``root`` (read back by :mod:`monai_mammo.data.indexers.bbox_csv`)::

    annotations.csv
    images/<patient_id>/<study_id>/<image_id>.dcm

Images are drawn in the phantom's ``"digital"`` style (12/14-bit, stored window). Each image
gets a *kind* from a fixed cycle (:data:`CASE_KINDS`) so that the OMI-DB filter has work
and the expected counts follow from the cases (:func:`bbox_csv_cases`):

- ``calc_benign`` / ``calc_malignant``: one boxed calcification cluster (kept by the filter);
- ``mass``: one boxed mass (``not_calcification``);
- ``two_boxes``: a calcification and a mass, both boxed (``multiple_bboxes``);
- ``calc_unknown``: a boxed calcification with histology ``Unknown`` or ``Mixed``
  (``ambiguous_pathology``);
- ``normal``: no finding (``no_bbox``); ``calc_no_box``: a calcification row without a box
  (``no_bbox``); ``empty_box``: a calcification with a zero-width box (``empty_bbox``).

Every fifth image is stored pixel-inverted with photometric MONOCHROME2 (as found in
OMI-DB; its window is inverted too) and every seventh as MONOCHROME1 (inverted by the
reader, so not an "inverted image"). Histology is written OMI-DB style (``Malignant``,
``Benign``).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from monai_mammo.data.dicom_writer import write_mammogram_dicom
from monai_mammo.data.indexers.bbox_csv import BBOX_CSV_COLUMNS
from monai_mammo.data.synthetic.phantom import synthesize_mammogram
from monai_mammo.data.synthetic.types import FindingSpec, SyntheticMammogram
from monai_mammo.exceptions import MammoConfigError

__all__ = ["write_bbox_csv", "bbox_csv_cases", "BboxCsvCase", "CASE_KINDS", "BBOX_CSV_BROKEN"]

CASE_KINDS = (
    "calc_benign",
    "calc_malignant",
    "mass",
    "calc_malignant",
    "two_boxes",
    "calc_benign",
    "calc_unknown",
    "normal",
    "calc_malignant",
    "empty_box",
    "calc_benign",
    "calc_no_box",
)
"""Kind of the i-th image (cycled)."""

BBOX_CSV_BROKEN = (
    "missing_file",
    "corrupt_file",
    "for_processing",
    "bad_box",
    "unknown_pathology",
    "bad_row",
)
"""Problems :func:`write_bbox_csv` can inject, each once, into distinct ``calc_benign`` /
``calc_malignant`` images (in this order): the DICOM is not written; the DICOM is truncated;
the DICOM is FOR PROCESSING; the box has ``xmax < xmin``; the histology is ``Probably
benign``; the laterality is ``X``. Each makes the indexer skip that image with the reason of
the same name."""

_UID_TAG = "bbox-csv"  # entropy source of the generated UIDs
_VIEWS = (("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO"))
_INVERTED_EVERY = 5
_MONOCHROME1_EVERY = 7
_KEPT_KINDS = ("calc_benign", "calc_malignant")
_SPECS: dict[str, tuple[FindingSpec, ...]] = {
    "calc_benign": (FindingSpec("calcification", "BENIGN"),),
    "calc_malignant": (FindingSpec("calcification", "MALIGNANT"),),
    "mass": (FindingSpec("mass", "MALIGNANT"),),
    "two_boxes": (FindingSpec("calcification", "MALIGNANT"), FindingSpec("mass", "BENIGN")),
    "calc_unknown": (FindingSpec("calcification", "BENIGN"),),
    "normal": (),
    "calc_no_box": (FindingSpec("calcification", "MALIGNANT"),),
    "empty_box": (FindingSpec("calcification", "BENIGN"),),
}
_HISTOLOGY = {"MALIGNANT": "Malignant", "BENIGN": "Benign"}
_LESION_TYPES = {"calcification": "Calcification", "mass": "Mass"}


@dataclass
class BboxCsvCase:
    """One synthetic image of the bounding-box dataset (the writer's ground truth).

    Attributes:
        patient_id: the patient.
        study_id: the study (one per patient).
        image: path of the DICOM relative to the root.
        laterality: ``"L"`` or ``"R"``.
        view: ``"CC"`` or ``"MLO"``.
        kind: one of :data:`CASE_KINDS`.
        mammogram: the synthetic image as drawn (MONOCHROME2 brightness order, before inversion).
        inverted: stored pixel-inverted with photometric MONOCHROME2.
        photometric: photometric interpretation written.
        broken: the :data:`BBOX_CSV_BROKEN` problem injected, or None.
        rows: the CSV rows of the image (dicts keyed by column).
    """

    patient_id: str
    study_id: str
    image: str
    laterality: str
    view: str
    kind: str
    mammogram: SyntheticMammogram
    inverted: bool
    photometric: str
    broken: str | None = None
    rows: list[dict[str, str]] = field(default_factory=list)


def _rows(case: BboxCsvCase, rng: np.random.Generator) -> list[dict[str, str]]:
    """The CSV rows of a case (one per finding; one empty row for a normal image)."""
    base = {
        "image": case.image,
        "patient_id": case.patient_id,
        "study_id": case.study_id,
        "laterality": case.laterality,
        "view": case.view,
    }
    empty = {"lesion_type": "", "pathology": "", "xmin": "", "ymin": "", "xmax": "", "ymax": ""}
    if not case.mammogram.findings:
        return [{**base, **empty, "lesion_id": ""}]
    rows = []
    for number, finding in enumerate(case.mammogram.findings, start=1):
        y0, x0, y1, x1 = finding.bbox
        box = {"xmin": str(x0), "ymin": str(y0), "xmax": str(x1), "ymax": str(y1)}
        if case.kind == "calc_no_box":
            box = {key: "" for key in box}
        elif case.kind == "empty_box":
            box["xmax"] = box["xmin"]
        histology = _HISTOLOGY["BENIGN" if finding.pathology != "MALIGNANT" else "MALIGNANT"]
        if case.kind == "calc_unknown":
            histology = str(rng.choice(["Unknown", "Mixed"]))
        rows.append(
            {
                **base,
                "lesion_type": _LESION_TYPES[finding.type],
                "pathology": histology,
                **box,
                "lesion_id": str(number),
            }
        )
    return rows


def bbox_csv_cases(
    n_patients: int = 8, seed: int = 0, image_shape: tuple[int, int] = (256, 192), broken: Sequence[str] = ()
) -> list[BboxCsvCase]:
    """The images that :func:`write_bbox_csv` writes (same arguments), in CSV order.

    Patient ``i`` has ``1 + i % 3`` images; image ``k`` (counted over the whole dataset) has
    kind ``CASE_KINDS[k % 12]``, is pixel-inverted when ``k % 5 == 4`` and MONOCHROME1 when
    ``k % 7 == 6``.

    Args:
        n_patients: number of patients.
        seed: seed of everything drawn.
        image_shape: (rows, columns) of every image (at least the phantom's ``MIN_SHAPE``).
        broken: problems of :data:`BBOX_CSV_BROKEN` to inject.

    Returns:
        The cases, with their CSV rows (the injected problems applied to the rows).

    Raises:
        MammoConfigError: ``n_patients < 1``, an unknown or repeated broken case, too few
            ``calc_benign``/``calc_malignant`` images for them, or an invalid image shape.

    Example::

        cases = bbox_csv_cases(4)
        kept = [c for c in cases if c.kind in ("calc_benign", "calc_malignant") and c.broken is None]
    """
    if n_patients < 1:
        raise MammoConfigError(f"n_patients must be at least 1, got {n_patients}")
    unknown = [case for case in broken if case not in BBOX_CSV_BROKEN]
    if unknown:
        raise MammoConfigError(f"unknown broken cases {unknown}; expected some of {BBOX_CSV_BROKEN}")
    if len(set(broken)) != len(broken):
        raise MammoConfigError(f"each broken case can be injected once, got {list(broken)}")
    rng = np.random.default_rng(seed)
    cases: list[BboxCsvCase] = []
    for patient in range(n_patients):
        patient_id = f"OPT{patient + 1:05d}"
        study_id = f"S{int(rng.integers(10**7, 10**8))}"
        for view_index in range(1 + patient % 3):
            number = len(cases)
            laterality, view = _VIEWS[(patient + view_index) % len(_VIEWS)]
            kind = CASE_KINDS[number % len(CASE_KINDS)]
            inverted = number % _INVERTED_EVERY == _INVERTED_EVERY - 1
            photometric = (
                "MONOCHROME1" if number % _MONOCHROME1_EVERY == _MONOCHROME1_EVERY - 1 else "MONOCHROME2"
            )
            photometric = "MONOCHROME2" if inverted else photometric
            mammogram = synthesize_mammogram(
                int(rng.integers(2**31)),
                shape=image_shape,
                laterality=laterality,
                view=view,
                style="digital",
                findings=_SPECS[kind],
                photometric=photometric,
            )
            image = f"images/{patient_id}/{study_id}/{number + 1:04d}_{laterality}_{view}.dcm"
            case = BboxCsvCase(
                patient_id, study_id, image, laterality, view, kind, mammogram, inverted, photometric
            )
            case.rows = _rows(case, rng)
            cases.append(case)
    targets = [case for case in cases if case.kind in _KEPT_KINDS]
    if len(targets) < len(broken):
        raise MammoConfigError(
            f"{len(targets)} calcification images are too few to inject {len(broken)} broken cases; "
            "use more patients"
        )
    for case, problem in zip(targets, broken):
        case.broken = problem
        row = case.rows[0]
        if problem == "bad_box":
            row["xmax"] = str(max(0, int(row["xmin"]) - 1))
        elif problem == "unknown_pathology":
            row["pathology"] = "Probably benign"
        elif problem == "bad_row":
            row["laterality"] = "X"
    return cases


def _write_image(path: Path, case: BboxCsvCase, seed: int) -> None:
    """Write the DICOM of a case (inverted / truncated / FOR PROCESSING as the case says)."""
    image = case.mammogram
    pixels, window = image.pixels, image.window
    if case.inverted:
        top = (1 << image.bits_stored) - 1
        pixels = (top - pixels.astype(np.int32)).astype(np.uint16)
        window = None if window is None else (top - window[0], window[1])
    uid = [_UID_TAG, str(seed), case.image]
    write_mammogram_dicom(
        path,
        pixels,
        laterality=case.laterality,
        view=case.view,
        patient_id=case.patient_id,
        study_uid=generate_uid(entropy_srcs=[*uid, "study", case.study_id]),
        series_uid=generate_uid(entropy_srcs=[*uid, "series"]),
        sop_uid=generate_uid(entropy_srcs=[*uid, "sop"]),
        bits_stored=image.bits_stored,
        photometric=case.photometric,
        presentation_intent="FOR PROCESSING" if case.broken == "for_processing" else "FOR PRESENTATION",
        pixel_spacing=image.pixel_spacing,
        window=window,
    )
    if case.broken == "corrupt_file":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])


def write_bbox_csv(
    root: str | os.PathLike,
    *,
    n_patients: int = 8,
    seed: int = 0,
    image_shape: tuple[int, int] = (256, 192),
    broken: Sequence[str] = (),
) -> Path:
    """Write a synthetic digital dataset with a bounding-box CSV (deterministic per seed).

    Args:
        root: destination folder (created).
        n_patients: number of patients (1-3 images each, see :func:`bbox_csv_cases`).
        seed: seed of everything drawn.
        image_shape: (rows, columns) of every image.
        broken: problems of :data:`BBOX_CSV_BROKEN` to inject, each once.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        MammoConfigError: see :func:`bbox_csv_cases`.

    Example::

        root = write_bbox_csv("/tmp/omi", n_patients=6, broken=["bad_box"])
        result = index_bbox_csv(root)   # one "bad_box" skip
    """
    out = Path(root)
    cases = bbox_csv_cases(n_patients, seed, (int(image_shape[0]), int(image_shape[1])), broken)
    out.mkdir(parents=True, exist_ok=True)
    for case in cases:
        if case.broken != "missing_file":
            _write_image(out / case.image, case, seed)
    columns = [*BBOX_CSV_COLUMNS, "lesion_id"]
    with open(out / "annotations.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for case in cases:
            writer.writerows(case.rows)
    return out
