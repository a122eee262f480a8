"""Write a synthetic dataset in the NYU exam-list layout (see :mod:`monai_mammo.data.indexers.nyu`).

``<root>/images/<exam>_<L|R>_<CC|MLO>.png`` are 16-bit PNGs holding 12-bit data rescaled
as NYU does (value = round(k * 65535 / 4095)), oriented per NYU's ``horizontal_flip`` 'NO'
convention (L breasts on the left edge pointing right, R breasts on the right edge).
``<root>/exam_list.pkl`` (pickle protocol 4, builtin types only) lists the exams with a
``cancer_label`` each; every second exam also carries the per-view preprocessing metadata
(approximate values from an Otsu breast mask, in NYU's format and orientation).

Our extensions of NYU's exam format (read by :func:`~monai_mammo.data.indexers.nyu.index_nyu`):

* ``"birads"``: the exam's screening BI-RADS class of Wu et al.'s pretraining task (0, 1 or 2),
  derived from the drawn lesions: an exam with a malignant lesion -> 0 (incomplete: recalled
  for further imaging), benign lesions only -> 2 (benign), no lesion -> 1 (negative).
* ``"findings"``: ``{view key: [[finding, ...] per image of the view]}``; a finding is
  ``{"type": "mass" | "calcification", "pathology": "MALIGNANT" | "BENIGN" |
  "BENIGN_WITHOUT_CALLBACK", "mask": "masks/<image name>_<finding index>.png",
  "bbox": [y0, x0, y1, x1]}`` (mask path relative to ``<root>``, half-open box in pixels).
  The masks are 8-bit PNGs of the image's size (255 = lesion).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from skimage.filters import threshold_otsu
from skimage.measure import label as connected_components

from monai_mammo.data.indexers.nyu import NYU_VIEWS
from monai_mammo.data.synthetic.phantom import random_findings, synthesize_mammogram
from monai_mammo.data.synthetic.types import FindingSpec, SyntheticMammogram
from monai_mammo.exceptions import MammoConfigError, MammoDataError

__all__ = ["write_nyu", "nyu_exams", "NyuExam", "NYU_BROKEN", "to_nyu_png_values", "exam_birads"]

NYU_BROKEN = ("unexpected_content", "missing_image", "missing_mask")
"""Broken-data options: an extra exam whose ``L-CC`` is a string, not a list; exam 0's L-CC PNG not
written; the first lesion mask of the first image with a lesion not written."""

# (left, right) breast status of consecutive exams: None, "benign" or "malignant".
_STATUS_CYCLE = ((None, None), ("malignant", None), (None, "benign"), ("benign", "malignant"))


@dataclass
class NyuExam:
    """One synthetic exam (the writer's ground truth).

    Attributes:
        exam: the exam dict as pickled.
        images: image name -> the synthetic mammogram (12-bit stored values).
    """

    exam: dict[str, Any]
    images: dict[str, SyntheticMammogram]


def to_nyu_png_values(pixels: np.ndarray, bits_stored: int) -> np.ndarray:
    """Stored values -> NYU's 16-bit PNG values: to 12 bits, then round(k * 65535 / 4095).

    Args:
        pixels: stored values with ``bits_stored`` bits.
        bits_stored: their bit depth.

    Returns:
        uint16 values, multiples of 65535 / 4095 rounded.

    Example::

        to_nyu_png_values(np.array([0, 4095]), 12)  # [0, 65535]
    """
    k = np.rint(pixels.astype(np.float64) * 4095 / ((1 << bits_stored) - 1))
    return np.rint(k * 65535 / 4095).astype(np.uint16)


def _specs(rng: np.random.Generator, status: str | None) -> list[FindingSpec]:
    """Lesions of a breast with the given status."""
    if status is None:
        return []
    return random_findings(rng, malignant_fraction=1.0 if status == "malignant" else 0.0, max_findings=1)


def exam_birads(specs: Sequence[FindingSpec]) -> int:
    """Screening BI-RADS class (Wu et al.'s 3 classes) of an exam from its lesions.

    Args:
        specs: every lesion of the exam (both breasts).

    Returns:
        0 (incomplete, recalled) with a malignant lesion, 2 (benign) with benign lesions only,
        1 (negative) without lesions.

    Example::

        exam_birads([FindingSpec("mass", "BENIGN")])  # 2
    """
    if any(spec.pathology == "MALIGNANT" for spec in specs):
        return 0
    return 2 if specs else 1


def _mask_path(name: str, index: int) -> str:
    """Mask file of finding ``index`` of image ``name``, relative to the dataset root."""
    return f"masks/{name}_{index}.png"


def _findings(name: str, image: SyntheticMammogram) -> list[dict[str, Any]]:
    """The exam-list findings of one image (type, pathology, mask path, bbox)."""
    findings = []
    for index, finding in enumerate(image.findings):
        if not finding.mask.any():
            raise MammoDataError(f"synthetic finding {index} has an empty mask", name)
        findings.append(
            {
                "type": finding.type,
                "pathology": finding.pathology,
                "mask": _mask_path(name, index),
                "bbox": list(finding.bbox),
            }
        )
    return findings


def _metadata(pixels: np.ndarray, side: str) -> dict[str, Any]:
    """NYU-format crop metadata of one image from its largest Otsu component (breast facing right)."""
    components = connected_components(pixels > threshold_otsu(pixels), connectivity=1)
    if components.max() == 0:
        raise MammoDataError("synthetic image has no breast region")
    mask = components == np.argmax(np.bincount(components.ravel())[1:]) + 1
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    left, right = (0, int(cols[-1]) + 1) if side == "L" else (int(cols[0]), mask.shape[1])
    crop = mask[top:bottom, left:right]
    crop = crop if side == "L" else crop[:, ::-1]
    x = int(np.flatnonzero(crop.any(axis=0))[-1])
    ys = np.flatnonzero(crop[:, x])
    y = int(np.flatnonzero(crop.any(axis=1))[-1])
    xs = np.flatnonzero(crop[y])
    return {
        "window_location": (top, bottom, left, right),
        "rightmost_points": ((int(ys[0]), int(ys[-1])), x),
        "bottommost_points": (y, (int(xs[0]), int(xs[-1]))),
        "distance_from_starting_side": 0,
        "best_center": ((bottom - top) // 2, x // 2),
    }


def nyu_exams(n_exams: int = 6, seed: int = 0, image_shape: tuple[int, int] = (256, 208)) -> list[NyuExam]:
    """The synthetic exams that :func:`write_nyu` writes (same arguments).

    Args:
        n_exams: number of four-view exams.
        seed: seed of everything drawn.
        image_shape: (rows, columns) of every image.

    Returns:
        The exams in exam-list order.

    Raises:
        MammoConfigError: ``n_exams < 1`` or an image shape the generator rejects.

    Example::

        exams = nyu_exams(2, seed=3)
    """
    if n_exams < 1:
        raise MammoConfigError(f"n_exams must be at least 1, got {n_exams}")
    rng = np.random.default_rng(seed)
    exams = []
    for index in range(n_exams):
        status = dict(zip("LR", _STATUS_CYCLE[index % len(_STATUS_CYCLE)]))
        specs = {side: _specs(rng, status[side]) for side in "LR"}
        exam: dict[str, Any] = {"horizontal_flip": "NO"}
        images = {}
        metadata: dict[str, dict[str, list[Any]]] = {}
        findings: dict[str, list[list[dict[str, Any]]]] = {}
        for view_key in NYU_VIEWS:
            side, view = view_key.split("-")
            name = f"{index}_{side}_{view}"
            image = synthesize_mammogram(
                int(rng.integers(2**31)),
                shape=image_shape,
                laterality=side,
                view=view,
                style="digital",
                findings=specs[side],
                photometric="MONOCHROME2",
            )
            image.pixels = np.rint(image.pixels * (4095 / ((1 << image.bits_stored) - 1))).astype(np.uint16)
            image.bits_stored, image.window = 12, None
            exam[view_key] = [name]
            images[name] = image
            findings[view_key] = [_findings(name, image)]
            if index % 2 == 1:
                for key, value in _metadata(image.pixels, side).items():
                    metadata.setdefault(key, {})[view_key] = [value]
        exam.update(metadata)
        exam["cancer_label"] = {
            f"{'left' if side == 'L' else 'right'}_{kind}": int(
                any((spec.pathology == "MALIGNANT") == (kind == "malignant") for spec in specs[side])
            )
            for side in "LR"
            for kind in ("benign", "malignant")
        }
        exam["birads"] = exam_birads(specs["L"] + specs["R"])
        exam["findings"] = findings
        exams.append(NyuExam(exam=exam, images=images))
    return exams


def _write_png(path: Path, pixels: np.ndarray) -> None:
    """Write a PNG or raise a :class:`MammoDataError` naming it."""
    if not cv2.imwrite(str(path), pixels):
        raise MammoDataError("cannot write PNG", path)


def write_nyu(
    root: str | os.PathLike,
    *,
    n_exams: int = 6,
    seed: int = 0,
    image_shape: tuple[int, int] = (256, 208),
    broken: Sequence[str] = (),
) -> Path:
    """Write a synthetic NYU-style dataset: ``images/*.png``, ``masks/*.png`` and ``exam_list.pkl``.

    Deterministic per seed. One mask PNG per lesion (``masks/<image name>_<finding index>.png``),
    referenced by the exam's ``"findings"``; the exam's ``"birads"`` follows :func:`exam_birads`.

    Args:
        root: destination folder (created).
        n_exams: number of four-view exams.
        seed: seed of everything drawn.
        image_shape: (rows, columns) of every image.
        broken: damage to include: ``"unexpected_content"`` (an extra exam whose ``L-CC``
            is a string instead of a list), ``"missing_image"`` (exam 0's L-CC PNG is not
            written) and/or ``"missing_mask"`` (the first lesion mask is not written).

    Returns:
        ``root``.

    Raises:
        MammoConfigError: an unknown broken option or invalid sizes.
        MammoDataError: a PNG cannot be written.

    Example::

        root = write_nyu("/tmp/nyu", n_exams=4)
    """
    unknown = sorted(set(broken) - set(NYU_BROKEN))
    if unknown:
        raise MammoConfigError(f"unknown broken options {unknown}; expected some of {NYU_BROKEN}")
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    exams = nyu_exams(n_exams, seed, image_shape)
    masks = [
        (_mask_path(name, index), finding.mask)
        for record in exams
        for name, image in record.images.items()
        for index, finding in enumerate(image.findings)
    ]
    for path, mask in masks[1:] if "missing_mask" in broken else masks:
        _write_png(root / path, mask.astype(np.uint8) * 255)
    for number, record in enumerate(exams):
        for name, image in record.images.items():
            if "missing_image" in broken and number == 0 and name.endswith("_L_CC"):
                continue
            _write_png(root / "images" / f"{name}.png", to_nyu_png_values(image.pixels, image.bits_stored))
    exam_list = [record.exam for record in exams]
    if "unexpected_content" in broken:
        extra = dict(exam_list[0])
        extra["L-CC"] = f"{n_exams}_L_CC"
        exam_list.append(extra)
    (root / "exam_list.pkl").write_bytes(pickle.dumps(exam_list, protocol=4))
    return root
