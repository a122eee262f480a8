"""Write a synthetic dataset in VinDr-Mammo's layout (see :mod:`monai_mammo.data.indexers.vindr`).

Each study has four 12-bit DICOMs ``images/<study_id>/<image_id>.dicom`` (every third study
MONOCHROME1); ``breast-level_annotations.csv`` has one row per image and
``finding_annotations.csv`` one row per finding (boxes from the lesion masks' bounding
boxes, with fractional pixel edges as in the real files) or a ``['No Finding']`` row.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from monai_mammo.data.dicom_writer import write_mammogram_dicom
from monai_mammo.data.indexers.vindr import VINDR_BREAST_COLUMNS, VINDR_FINDING_COLUMNS
from monai_mammo.data.synthetic.phantom import random_findings, synthesize_mammogram
from monai_mammo.data.synthetic.types import FindingSpec, SyntheticMammogram
from monai_mammo.exceptions import MammoConfigError

__all__ = ["write_vindr", "vindr_cases", "VindrCase", "VINDR_BROKEN"]

VINDR_BROKEN = ("missing_image",)
"""Broken-data options: the DICOM of the first image whose BI-RADS is not 3 is not written."""

# breast BI-RADS of consecutive breasts (every value appears within 6 breasts)
_BIRADS_CYCLE = ("1", "4", "2", "3", "5", "1", "2", "4")
_DENSITY_NAMES = "ABCD"
_BITS = 12


@dataclass
class VindrCase:
    """One synthetic VinDr image (the writer's ground truth).

    Attributes:
        study_id: the study (and patient) id.
        series_id: the series id.
        image_id: the image id.
        laterality: ``"L"`` or ``"R"``.
        view: ``"CC"`` or ``"MLO"``.
        birads: breast-level BI-RADS digit.
        split: ``"training"`` or ``"test"``.
        image: the synthetic mammogram (12-bit stored values).
        finding_birads: the BI-RADS digit written for each finding of ``image``.
    """

    study_id: str
    series_id: str
    image_id: str
    laterality: str
    view: str
    birads: str
    split: str
    image: SyntheticMammogram
    finding_birads: list[str]

    @property
    def path(self) -> str:
        """The image's path relative to the dataset root."""
        return f"images/{self.study_id}/{self.image_id}.dicom"


def _findings_for(rng: np.random.Generator, birads: str) -> list[FindingSpec]:
    """Lesions consistent with a breast BI-RADS category."""
    if birads == "1":
        return []
    if birads == "3":
        return [FindingSpec("mass", "BENIGN")]
    return random_findings(rng, malignant_fraction=0.0 if birads == "2" else 1.0, max_findings=2)


def _hex_id(rng: np.random.Generator) -> str:
    """A 32-digit hexadecimal id like VinDr's."""
    return "".join(f"{b:02x}" for b in rng.integers(0, 256, 16))


def vindr_cases(
    n_studies: int = 8, seed: int = 0, image_shape: tuple[int, int] = (256, 208)
) -> list[VindrCase]:
    """The synthetic VinDr images that :func:`write_vindr` writes (same arguments).

    Args:
        n_studies: number of four-image studies.
        seed: seed of everything drawn.
        image_shape: (rows, columns) of every image.

    Returns:
        The cases in breast-level CSV order.

    Raises:
        MammoConfigError: ``n_studies < 1`` or an image shape the generator rejects.

    Example::

        cases = vindr_cases(2)
    """
    if n_studies < 1:
        raise MammoConfigError(f"n_studies must be at least 1, got {n_studies}")
    rng = np.random.default_rng(seed)
    cases = []
    for study in range(n_studies):
        study_id = _hex_id(rng)
        split = "test" if study % 4 == 3 else "training"
        photometric = "MONOCHROME1" if study % 3 == 1 else "MONOCHROME2"
        for side_index, side in enumerate(("L", "R")):
            birads = _BIRADS_CYCLE[(2 * study + side_index) % len(_BIRADS_CYCLE)]
            specs = _findings_for(rng, birads)
            for view in ("CC", "MLO"):
                image = synthesize_mammogram(
                    int(rng.integers(2**31)),
                    shape=image_shape,
                    laterality=side,
                    view=view,
                    style="digital",
                    findings=specs,
                    photometric=photometric,
                )
                factor = ((1 << _BITS) - 1) / ((1 << image.bits_stored) - 1)
                image.pixels = np.rint(image.pixels * factor).astype(np.uint16)
                if image.window is not None:
                    image.window = (round(image.window[0] * factor, 1), round(image.window[1] * factor, 1))
                image.bits_stored = _BITS
                finding_birads = [
                    "3" if birads == "3" else ("2" if finding.pathology != "MALIGNANT" else birads)
                    for finding in image.findings
                ]
                cases.append(
                    VindrCase(
                        study_id, _hex_id(rng), _hex_id(rng), side, view, birads, split, image, finding_birads
                    )
                )
    return cases


def write_vindr(
    root: str | os.PathLike,
    *,
    n_studies: int = 8,
    seed: int = 0,
    image_shape: tuple[int, int] = (256, 208),
    broken: Sequence[str] = (),
) -> Path:
    """Write a synthetic VinDr-Mammo-style dataset (deterministic per seed).

    Args:
        root: destination folder (created).
        n_studies: number of studies, 4 images each (L/R x CC/MLO).
        seed: seed of everything drawn.
        image_shape: (rows, columns) of every image.
        broken: ``"missing_image"``: the first image whose BI-RADS is not 3 keeps its CSV
            rows but its DICOM is not written.

    Returns:
        ``root``.

    Raises:
        MammoConfigError: an unknown broken option or invalid sizes.

    Example::

        root = write_vindr("/tmp/vindr", n_studies=4)
    """
    unknown = sorted(set(broken) - set(VINDR_BROKEN))
    if unknown:
        raise MammoConfigError(f"unknown broken options {unknown}; expected some of {VINDR_BROKEN}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    cases = vindr_cases(n_studies, seed, image_shape)
    missing = (
        next(case.image_id for case in cases if case.birads != "3") if "missing_image" in broken else None
    )
    breast_rows, finding_rows = [], []
    for case in cases:
        image = case.image
        height, width = image.pixels.shape
        row = {
            "study_id": case.study_id,
            "series_id": case.series_id,
            "image_id": case.image_id,
            "laterality": case.laterality,
            "view_position": case.view,
            "height": height,
            "width": width,
            "breast_birads": f"BI-RADS {case.birads}",
            "breast_density": f"DENSITY {_DENSITY_NAMES[image.density - 1]}",
            "split": case.split,
        }
        breast_rows.append(row)
        empty = {"finding_birads": "", "xmin": "", "ymin": "", "xmax": "", "ymax": ""}
        if not image.findings:
            finding_rows.append({**row, "finding_categories": "['No Finding']", **empty})
        for finding, birads in zip(image.findings, case.finding_birads):
            y0, x0, y1, x1 = finding.bbox
            category = "Mass" if finding.type == "mass" else "Suspicious Calcification"
            finding_rows.append(
                {
                    **row,
                    "finding_categories": str([category]),
                    "finding_birads": f"BI-RADS {birads}",
                    "xmin": f"{x0 + 0.25:.2f}",
                    "ymin": f"{y0 + 0.25:.2f}",
                    "xmax": f"{x1 - 0.25:.2f}",
                    "ymax": f"{y1 - 0.25:.2f}",
                }
            )
        if case.image_id == missing:
            continue
        write_mammogram_dicom(
            root / case.path,
            image.pixels,
            laterality=case.laterality,
            view=case.view,
            patient_id=case.study_id,
            study_uid=generate_uid(entropy_srcs=["vindr", str(seed), case.study_id]),
            series_uid=generate_uid(entropy_srcs=["vindr", str(seed), case.series_id]),
            sop_uid=generate_uid(entropy_srcs=["vindr", str(seed), case.image_id]),
            bits_stored=_BITS,
            photometric=image.photometric,
            pixel_spacing=image.pixel_spacing,
            window=image.window,
        )
    for name, columns, rows in (
        ("breast-level_annotations.csv", VINDR_BREAST_COLUMNS, breast_rows),
        ("finding_annotations.csv", VINDR_FINDING_COLUMNS, finding_rows),
    ):
        with open(root / name, "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=list(columns))
            writer.writeheader()
            writer.writerows(rows)
    return root
