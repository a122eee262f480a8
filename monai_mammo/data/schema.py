"""Datalist schema and label conventions shared by the indexers, transforms and bundles.

A datalist item (one image) is a dict with these keys (``None`` when unknown)::

    {
        "image": "/abs/path/to/full_image.dcm",      # full mammogram
        "patient_id": "P_00001",
        "study_id": "1.2.3...",                     # study UID or dataset study id
        "laterality": "L" | "R",
        "view": "CC" | "MLO" | "ML" | ...,
        "density": 1..4 | None,
        "birads": "4a" | "2" | None,                 # as written by the dataset
        "label": 0 | 1 | None,                       # image-level: 1 = malignant finding
        "findings": [                                # possibly empty (normal image)
            {
                "type": "mass" | "calcification",
                "pathology": "MALIGNANT" | "BENIGN" | "BENIGN_WITHOUT_CALLBACK" | None,
                "label": 0 | 1 | None,               # 1 = malignant
                "class_id": 1..4,                    # PatchClass (5-class patch label)
                "mask": "/abs/path/mask.dcm" | None, # binary ROI mask, image-sized
                "bbox": [y0, x0, y1, x1] | None,     # half-open, pixels of the full image
                "abnormality_id": int | None,
            },
        ],
        "source": "cbis-ddsm" | "inbreast" | "nyu" | "vindr" | "synthetic-...",
        "split": "train" | "val" | "test" | None,
    }

Datalist files are MONAI-style JSON: ``{"training": [...], "validation": [...], "test": [...]}``
plus a ``"summary"`` of what was indexed and skipped.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "PatchClass",
    "FINDING_TYPES",
    "PATHOLOGIES",
    "pathology_to_label",
    "patch_class",
    "IMAGE_KEY",
    "LABEL_KEY",
    "MASK_KEY",
    "FINDINGS_KEY",
    "LATERALITY_KEY",
    "VIEW_KEY",
    "PATIENT_KEY",
]

IMAGE_KEY = "image"
LABEL_KEY = "label"
MASK_KEY = "mask"
FINDINGS_KEY = "findings"
LATERALITY_KEY = "laterality"
VIEW_KEY = "view"
PATIENT_KEY = "patient_id"

FINDING_TYPES = ("mass", "calcification")
PATHOLOGIES = ("MALIGNANT", "BENIGN", "BENIGN_WITHOUT_CALLBACK")


class PatchClass(IntEnum):
    """The five patch classes of Shen et al. with fixed ids (used by S1/S10 sampling)."""

    BACKGROUND = 0
    CALC_BENIGN = 1
    CALC_MALIGNANT = 2
    MASS_BENIGN = 3
    MASS_MALIGNANT = 4


def pathology_to_label(pathology: str | None) -> int | None:
    """Binary label of a pathology string: MALIGNANT -> 1, BENIGN(_WITHOUT_CALLBACK) -> 0.

    Args:
        pathology: the pathology as written by the dataset (case and spaces ignored).

    Returns:
        1, 0, or None when the pathology is unknown or empty.
    """
    if pathology is None:
        return None
    value = str(pathology).strip().upper().replace(" ", "_")
    if value == "MALIGNANT":
        return 1
    if value in ("BENIGN", "BENIGN_WITHOUT_CALLBACK"):
        return 0
    return None


def patch_class(finding_type: str, label: int) -> PatchClass:
    """5-class patch label of a finding.

    Args:
        finding_type: ``"mass"`` or ``"calcification"`` (``"calc"`` accepted).
        label: 1 for malignant, 0 for benign.

    Returns:
        The :class:`PatchClass` of the finding.

    Raises:
        ValueError: unknown finding type.
    """
    kind = finding_type.strip().lower()
    if kind in ("calcification", "calc", "calcifications"):
        return PatchClass.CALC_MALIGNANT if label else PatchClass.CALC_BENIGN
    if kind == "mass":
        return PatchClass.MASS_MALIGNANT if label else PatchClass.MASS_BENIGN
    raise ValueError(f"unknown finding type {finding_type!r}; expected one of {FINDING_TYPES}")
