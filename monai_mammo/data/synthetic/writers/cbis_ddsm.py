"""Write a synthetic dataset in the CBIS-DDSM on-disk layout (with its quirks).

The tree written under ``root``::

    mass_case_description_train_set.csv   calc_case_description_train_set.csv
    mass_case_description_test_set.csv    calc_case_description_test_set.csv
    metadata.csv                          (NBIA retriever, ``layout="nbia"`` only)
    CBIS-DDSM/<subject>/<date>-DDSM-<n>/1.000000-full mammogram images-<n>/1-1.dcm
    CBIS-DDSM/<subject>_<abnormality id>/<date>-DDSM-<n>/1.000000-ROI mask images-<n>/1-1.dcm, 1-2.dcm

with ``<subject>`` like ``Mass-Training_P_00001_LEFT_CC``. With ``layout="legacy"`` the DICOM
files sit exactly at the CSV paths (``<subject>/<study UID>/<series UID>/000000.dcm``), as
older retrievers wrote them.

Quirks reproduced: the density column is ``breast_density`` (mass) / ``breast density``
(calc); the ROI path cells end with a newline inside the quotes; missing calc descriptors
read ``N/A`` in calc train and ``NA`` in calc test; the CSV names the crop ``000000.dcm`` and
the mask ``000001.dcm`` (calc test: the other way round) while about a third of the ROI
series hold them swapped; an image with a mass and a calcification is stored twice, once in
the Mass and once in the Calc collection; only images with findings are listed.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from monai_mammo.data.dicom_writer import MG_FOR_PRESENTATION, MG_FOR_PROCESSING, write_mammogram_dicom
from monai_mammo.data.indexers.cbis_ddsm import CALC_COLUMNS, MASS_COLUMNS
from monai_mammo.data.synthetic.phantom import random_findings, synthesize_mammogram
from monai_mammo.data.synthetic.types import Style, SyntheticFinding, SyntheticMammogram
from monai_mammo.exceptions import MammoConfigError

__all__ = ["write_cbis_ddsm", "BROKEN_CASES", "LAYOUTS", "METADATA_COLUMNS"]

BROKEN_CASES = ("mask_size_mismatch", "missing_mask", "for_processing", "corrupt_file")
LAYOUTS = ("nbia", "legacy")
METADATA_COLUMNS = (
    "Series UID",
    "Collection",
    "3rd Party Analysis",
    "Data Description URI",
    "Subject ID",
    "Study UID",
    "Study Description",
    "Study Date",
    "Series Description",
    "Manufacturer",
    "Modality",
    "SOP Class Name",
    "SOP Class UID",
    "Number of Images",
    "File Size",
    "File Location",
    "Download Timestamp",
)
_UID_ROOT = "1.3.6.1.4.1.9590.100.1.2."
_VIEWS = (("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO"))
_SIDE_NAMES = {"L": "LEFT", "R": "RIGHT"}
_SWAP_FRACTION = 0.3  # ROI series whose crop and mask are stored the other way round
_MISSING_DESCRIPTOR_FRACTION = 0.2  # calc rows with a missing distribution
_MISSIZED_MASK_SCALE = (0.87, 0.8)  # (rows, columns) scale of the "mask_size_mismatch" mask
_STUDY_DATES = ("07-20-2016", "08-29-2017")
_DOI = "https://doi.org/10.7937/K9/TCIA.2016.7O02S9CY"


@dataclass
class _Subject:
    """One full image as stored in one collection (Mass or Calc) with its findings."""

    name: str
    collection: str  # "Mass" or "Calc"
    split: str  # "Training" or "Test"
    patient_id: str
    laterality: str
    view: str
    image: SyntheticMammogram
    findings: list[SyntheticFinding]
    broken: set[str] = field(default_factory=set)


def _uid(rng: np.random.Generator) -> str:
    return f"{_UID_ROOT}{int(rng.integers(10**17, 10**18))}{int(rng.integers(10**17, 10**18))}"


def _plan(
    rng: np.random.Generator, n_patients: int, image_shape: tuple[int, int], style: Style
) -> list[_Subject]:
    """Draw the patients, their images and findings, split by collection (Mass/Calc)."""
    subjects = []
    number = 0
    for index in range(n_patients):
        number += int(rng.integers(1, 4))
        patient_id = f"P_{number:05d}"
        split = "Test" if index % 4 == 3 else "Training"
        n_images = int(rng.integers(1, 5))
        chosen = sorted(rng.choice(len(_VIEWS), size=n_images, replace=False))
        for view_index in chosen:
            laterality, view = _VIEWS[int(view_index)]
            specs = random_findings(rng, malignant_fraction=0.5, max_findings=2)
            image = synthesize_mammogram(
                int(rng.integers(2**31)),
                shape=image_shape,
                laterality=laterality,
                view=view,
                style=style,
                findings=specs,
            )
            for collection, kind in (("Mass", "mass"), ("Calc", "calcification")):
                findings = [f for f in image.findings if f.type == kind]
                if findings:
                    name = f"{collection}-{split}_{patient_id}_{_SIDE_NAMES[laterality]}_{view}"
                    subjects.append(
                        _Subject(name, collection, split, patient_id, laterality, view, image, findings)
                    )
    return subjects


def _crop(pixels: np.ndarray, finding: SyntheticFinding) -> np.ndarray:
    """The cropped image of a finding: its bounding box with a margin of a quarter of its size."""
    y0, x0, y1, x1 = finding.bbox
    margin = max(4, (y1 - y0 + x1 - x0) // 8)
    rows, cols = pixels.shape
    return pixels[max(0, y0 - margin) : min(rows, y1 + margin), max(0, x0 - margin) : min(cols, x1 + margin)]


def _mask(finding: SyntheticFinding, missized: bool) -> np.ndarray:
    """The 0/255 ROI mask, resampled (nearest) to another size and aspect when ``missized``."""
    mask = finding.mask.astype(np.uint8) * 255
    if not missized:
        return mask
    rows, cols = mask.shape
    new_rows, new_cols = round(rows * _MISSIZED_MASK_SCALE[0]), round(cols * _MISSIZED_MASK_SCALE[1])
    r = (np.arange(new_rows) * rows) // new_rows
    c = (np.arange(new_cols) * cols) // new_cols
    return np.ascontiguousarray(mask[r][:, c])


class _TreeWriter:
    """Writes the DICOM files of the subjects and collects the CSV and metadata rows."""

    def __init__(self, root: Path, layout: str, rng: np.random.Generator) -> None:
        self.root = root
        self.layout = layout
        self.rng = rng
        self.csv_rows: dict[str, list[list[str]]] = {}
        self.metadata_rows: list[list[str]] = []

    def _folders(self, subject: str, description: str) -> tuple[str, str]:
        """(NBIA folder relative to ``CBIS-DDSM``, study date) of a new series."""
        date = _STUDY_DATES[int(self.rng.integers(len(_STUDY_DATES)))]
        study = f"{date}-DDSM-{int(self.rng.integers(10000, 99999))}"
        series = f"1.000000-{description}-{int(self.rng.integers(10000, 99999))}"
        return f"{subject}/{study}/{series}", date

    def _series(
        self,
        subject: str,
        description: str,
        files: list[tuple[str, np.ndarray, int, dict]],
    ) -> list[str]:
        """Write one series (``files``: CSV file name, pixels, bits stored, writer options).

        Returns:
            The CSV paths of the files (``<subject>/<study UID>/<series UID>/<name>``).
        """
        study_uid, series_uid = _uid(self.rng), _uid(self.rng)
        nbia_folder, date = self._folders(subject, description)
        csv_paths, sizes = [], 0
        for number, (csv_name, pixels, bits, options) in enumerate(files, start=1):
            csv_path = f"{subject}/{study_uid}/{series_uid}/{csv_name}"
            csv_paths.append(csv_path)
            if pixels.size == 0:
                continue  # a file that the dataset lacks (listed in the CSV, not on disk)
            rel = csv_path if self.layout == "legacy" else f"{nbia_folder}/1-{number}.dcm"
            path = write_mammogram_dicom(
                self.root / "CBIS-DDSM" / rel,
                pixels,
                laterality=None,
                view=None,
                patient_id=subject,
                study_uid=study_uid,
                series_uid=series_uid,
                sop_uid=_uid(self.rng),
                bits_stored=bits,
                series_description=description,
                extra={"InstanceNumber": number, "BodyPartExamined": "BREAST"},
                **options,
            )
            sizes += path.stat().st_size
        written = sum(1 for _, pixels, _, _ in files if pixels.size)
        for_processing = any(opts.get("presentation_intent") == "FOR PROCESSING" for *_, opts in files)
        sop_class = MG_FOR_PROCESSING if for_processing else MG_FOR_PRESENTATION
        self.metadata_rows.append(
            [
                series_uid,
                "CBIS-DDSM",
                "NO",
                _DOI,
                subject,
                study_uid,
                "",
                date,
                description,
                "",
                "MG",
                "Digital Mammography X-Ray Image Storage - For "
                + ("Processing" if for_processing else "Presentation"),
                sop_class,
                str(written),
                f"{sizes / 1e6:.2f} MB",
                f"./CBIS-DDSM/{nbia_folder}",
                "2024-01-01T00:00:00.000",
            ]
        )
        return csv_paths

    def subject(self, subject: _Subject) -> None:
        """Write a subject's full image and ROI series and add its CSV rows."""
        image = subject.image
        full_options: dict = {
            "photometric": image.photometric,
            "presentation_intent": "FOR PROCESSING" if "for_processing" in subject.broken else None,
            "pixel_spacing": image.pixel_spacing,
            "window": image.window,
        }
        (image_path,) = self._series(
            subject.name,
            "full mammogram images",
            [("000000.dcm", image.pixels, image.bits_stored, full_options)],
        )
        if "corrupt_file" in subject.broken:
            self._truncate_full_image(subject.name, image_path)
        calc_test = subject.collection == "Calc" and subject.split == "Test"
        crop_name, mask_name = ("000001.dcm", "000000.dcm") if calc_test else ("000000.dcm", "000001.dcm")
        missing = "NA" if calc_test else "N/A"
        split = "test" if subject.split == "Test" else "train"
        file_name = f"{subject.collection.lower()}_case_description_{split}_set.csv"
        rows = self.csv_rows.setdefault(file_name, [])
        no_pixels = np.zeros((0, 0), np.uint8)
        for abnormality, finding in enumerate(subject.findings, start=1):
            first = abnormality == 1
            crop = _crop(image.pixels, finding)
            mask = _mask(finding, missized=first and "mask_size_mismatch" in subject.broken)
            if first and "missing_mask" in subject.broken:
                mask = no_pixels
            roi = {crop_name: (crop, image.bits_stored), mask_name: (mask, 8)}
            if self.rng.random() < _SWAP_FRACTION:
                roi = {crop_name: roi[mask_name], mask_name: roi[crop_name]}
            files = [(name, *roi[name], {"pixel_spacing": image.pixel_spacing}) for name in sorted(roi)]
            paths = dict(
                zip(sorted(roi), self._series(f"{subject.name}_{abnormality}", "ROI mask images", files))
            )
            descriptors = [
                finding.descriptors.get(column) or missing
                for column in (
                    ("mass shape", "mass margins")
                    if subject.collection == "Mass"
                    else ("calc type", "calc distribution")
                )
            ]
            if subject.collection == "Calc" and self.rng.random() < _MISSING_DESCRIPTOR_FRACTION:
                descriptors[1] = missing
            rows.append(
                [
                    subject.patient_id,
                    str(image.density),
                    _SIDE_NAMES[subject.laterality],
                    subject.view,
                    str(abnormality),
                    finding.type,
                    *descriptors,
                    str(finding.assessment),
                    finding.pathology,
                    str(finding.subtlety),
                    image_path,
                    paths[crop_name] + "\n",
                    paths[mask_name] + "\n",
                ]
            )

    def _truncate_full_image(self, subject: str, csv_path: str) -> None:
        """Cut the subject's full image file to half its size (an interrupted download)."""
        if self.layout == "legacy":
            path = self.root / "CBIS-DDSM" / csv_path
        else:
            (path,) = (self.root / "CBIS-DDSM" / subject).rglob("1-1.dcm")
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])

    def finish(self) -> None:
        """Write the four description CSVs (sorted like the real ones) and ``metadata.csv``."""
        for collection, columns in (("mass", MASS_COLUMNS), ("calc", CALC_COLUMNS)):
            for split in ("train", "test"):
                name = f"{collection}_case_description_{split}_set.csv"
                rows = sorted(self.csv_rows.get(name, []), key=lambda r: (r[0], r[2], r[3], int(r[4])))
                if collection == "calc" and rows:  # every calc CSV shows its missing-descriptor marker
                    rows[0][7] = "NA" if split == "test" else "N/A"
                with open(self.root / name, "w", newline="") as fh:
                    writer = csv.writer(fh, lineterminator="\n")
                    writer.writerow(columns)
                    writer.writerows(rows)
        if self.layout == "nbia":
            with open(self.root / "metadata.csv", "w", newline="") as fh:
                writer = csv.writer(fh, lineterminator="\n")
                writer.writerow(METADATA_COLUMNS)
                writer.writerows(self.metadata_rows)


def write_cbis_ddsm(
    root: str | os.PathLike,
    *,
    n_patients: int = 12,
    seed: int = 0,
    image_shape: tuple[int, int] = (288, 224),
    style: Style = "film",
    layout: Literal["nbia", "legacy"] = "nbia",
    broken: Sequence[str] = (),
) -> Path:
    """Write a synthetic CBIS-DDSM-style dataset (CSVs, DICOM tree, ``metadata.csv``).

    Every fourth patient is in the official test split. Each patient has 1-4 images (L/R,
    CC/MLO) with 1-2 findings each (masses and calcifications, benign and malignant in
    about equal numbers); the output is byte-identical for a given seed.

    Args:
        root: destination folder (created).
        n_patients: number of patients.
        seed: random seed.
        image_shape: (rows, columns) of the full images (at least the phantom's ``MIN_SHAPE``).
        style: ``"film"`` (16-bit, like CBIS-DDSM) or ``"digital"``.
        layout: ``"nbia"`` (current NBIA retriever folders, with ``metadata.csv``) or
            ``"legacy"`` (files at the CSV paths, ``000000.dcm``/``000001.dcm``).
        broken: problems to inject, each once and in a different image, in this order:
            ``"mask_size_mismatch"`` (a mask at another resolution and aspect ratio),
            ``"missing_mask"`` (a ROI series with only the crop), ``"for_processing"``
            (a FOR PROCESSING full image), ``"corrupt_file"`` (a truncated full image).

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        MammoConfigError: unknown layout or broken case, a repeated broken case, fewer images
            than broken cases, ``n_patients < 1`` or an invalid image shape/style.

    Example::

        root = write_cbis_ddsm("/tmp/cbis", n_patients=4, image_shape=(128, 96), broken=["missing_mask"])
        result = index_cbis_ddsm(root)   # one "missing_mask" skip
    """
    if layout not in LAYOUTS:
        raise MammoConfigError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    unknown = [case for case in broken if case not in BROKEN_CASES]
    if unknown:
        raise MammoConfigError(f"unknown broken cases {unknown}; expected some of {BROKEN_CASES}")
    if len(set(broken)) != len(broken):
        raise MammoConfigError(f"each broken case can be injected once, got {list(broken)}")
    if n_patients < 1:
        raise MammoConfigError(f"n_patients must be at least 1, got {n_patients}")
    rng = np.random.default_rng(seed)
    subjects = _plan(rng, n_patients, (int(image_shape[0]), int(image_shape[1])), style)
    if len(subjects) < len(broken):
        raise MammoConfigError(
            f"{len(subjects)} images are too few to inject {len(broken)} broken cases; use more patients"
        )
    for subject, case in zip(subjects, broken):
        subject.broken.add(case)
    out = Path(root)
    out.mkdir(parents=True, exist_ok=True)
    tree = _TreeWriter(out, layout, rng)
    for subject in subjects:
        tree.subject(subject)
    tree.finish()
    return out
