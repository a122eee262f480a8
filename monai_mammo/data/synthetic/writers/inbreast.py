"""Write a synthetic dataset in INbreast's on-disk layout (see :mod:`monai_mammo.data.indexers.inbreast`).

Each patient has four 14-bit MONOCHROME2 DICOMs (L/R x CC/ML) named
``AllDICOMs/<FileName>_<hash>_MG_<L|R>_<CC|ML>_ANON.dcm``; annotated images get an OsiriX
plist ``AllXML/<FileName>.xml`` whose ROIs trace the synthetic lesion masks; ``INbreast.csv``
lists every image with ``removed`` ids, blank ACR cells padded with spaces and BI-RADS
values 1, 2, 3, 4, 4a, 4b, 4c, 5 and 6.
"""

from __future__ import annotations

import os
import plistlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid
from skimage.measure import find_contours

from monai_mammo.data.dicom_writer import write_mammogram_dicom
from monai_mammo.data.indexers.inbreast import INBREAST_CSV_COLUMNS
from monai_mammo.data.synthetic.phantom import random_findings, synthesize_mammogram
from monai_mammo.data.synthetic.types import FindingSpec, SyntheticMammogram
from monai_mammo.exceptions import MammoConfigError

__all__ = ["write_inbreast", "INBREAST_BROKEN", "InbreastCase", "inbreast_cases"]

INBREAST_BROKEN = ("bad_points", "point_count_mismatch", "missing_dicom", "not_plist")
"""Broken-data options: each damages one distinct annotated, labelled image."""

# BI-RADS of consecutive breasts: every value (3 and 4a/4b/4c included) appears within 8 breasts.
_BIRADS_CYCLE = ("1", "4a", "2", "4b", "3", "5", "2", "4c", "1", "6", "4", "2")
_BITS = 14


@dataclass
class InbreastCase:
    """One synthetic INbreast image and its annotations (the writer's ground truth).

    Attributes:
        file_name: the CSV ``File Name`` (8 digits).
        patient_hash: the per-patient hash of the DICOM file name.
        patient_id: the DICOM PatientID written ("" for every second patient, as when the
            tag is empty, so that indexers fall back to the hash).
        laterality: ``"L"`` or ``"R"``.
        view: ``"CC"`` or ``"MLO"`` (``ML`` in the file name).
        birads: as written in the CSV.
        acr: ACR density as written in the CSV (``"   "`` when blank).
        date: the CSV acquisition date.
        image: the synthetic mammogram (14-bit stored values).
        rois: ``(name, points, finding index or None)`` with ``points`` the ``(x, y)`` array.
    """

    file_name: str
    patient_hash: str
    patient_id: str
    laterality: str
    view: str
    birads: str
    acr: str
    date: str
    image: SyntheticMammogram
    rois: list[tuple[str, np.ndarray, int | None]] = field(default_factory=list)

    @property
    def dicom_name(self) -> str:
        """The file name in ``AllDICOMs``."""
        view = "ML" if self.view == "MLO" else self.view
        return f"{self.file_name}_{self.patient_hash}_MG_{self.laterality}_{view}_ANON.dcm"


def _findings_for(rng: np.random.Generator, birads: str) -> list[FindingSpec]:
    """Lesions consistent with a BI-RADS category."""
    if birads == "1":
        return []
    if birads == "3":
        return [FindingSpec("mass", "BENIGN")]
    return random_findings(rng, malignant_fraction=0.0 if birads == "2" else 1.0, max_findings=2)


def _to_bits(pixels: np.ndarray, bits: int, target: int) -> np.ndarray:
    """Rescale stored values from ``bits`` to ``target`` bits (rounded)."""
    scale = ((1 << target) - 1) / ((1 << bits) - 1)
    return np.rint(pixels.astype(np.float64) * scale).astype(np.uint16)


def _contour(mask: np.ndarray) -> np.ndarray:
    """The ``(x, y)`` vertices of the longest outer contour of a mask (level 0.5)."""
    padded = np.pad(mask.astype(np.float32), 1)
    contour = max(find_contours(padded, 0.5), key=len)[:-1] - 1.0
    return contour[:, ::-1]


def _calcification_points(
    pixels: np.ndarray, mask: np.ndarray, count: int = 4, spacing: int = 3
) -> np.ndarray:
    """``(x, y)`` of the brightest, mutually distant pixels of a cluster (the calcifications)."""
    rows, cols = np.nonzero(mask)
    order = np.argsort(-pixels[rows, cols].astype(np.int64), kind="stable")
    chosen: list[tuple[int, int]] = []
    for r, c in zip(rows[order], cols[order]):
        if all(abs(r - r0) + abs(c - c0) >= spacing for r0, c0 in chosen):
            chosen.append((int(r), int(c)))
            if len(chosen) == count:
                break
    return np.array([(c, r) for r, c in chosen], dtype=np.float64)


def inbreast_cases(
    n_patients: int = 8, seed: int = 0, image_shape: tuple[int, int] = (256, 208)
) -> list[InbreastCase]:
    """The synthetic INbreast images and ROIs that :func:`write_inbreast` writes (same arguments).

    Args:
        n_patients: number of patients (4 images each).
        seed: seed of everything drawn.
        image_shape: (rows, columns) of every image.

    Returns:
        The cases in CSV order.

    Raises:
        MammoConfigError: ``n_patients < 1`` or an image shape the generator rejects.

    Example::

        cases = inbreast_cases(2, seed=1)
    """
    if n_patients < 1:
        raise MammoConfigError(f"n_patients must be at least 1, got {n_patients}")
    rng = np.random.default_rng(seed)
    file_numbers = rng.choice(np.arange(20_000_000, 54_000_000), size=4 * n_patients, replace=False)
    cases: list[InbreastCase] = []
    for patient in range(n_patients):
        patient_hash = "".join(f"{b:02x}" for b in rng.integers(0, 256, 8))
        date = f"20{int(rng.integers(8, 11)):02d}{int(rng.integers(1, 13)):02d}"
        for side_index, side in enumerate(("L", "R")):
            birads = _BIRADS_CYCLE[(2 * patient + side_index) % len(_BIRADS_CYCLE)]
            specs = _findings_for(rng, birads)
            for view in ("CC", "MLO"):
                number = len(cases)
                image = synthesize_mammogram(
                    int(rng.integers(2**31)),
                    shape=image_shape,
                    laterality=side,
                    view=view,
                    style="digital",
                    findings=specs,
                    photometric="MONOCHROME2",
                )
                image.pixels = _to_bits(image.pixels, image.bits_stored, _BITS)
                if image.window is not None:
                    factor = ((1 << _BITS) - 1) / ((1 << image.bits_stored) - 1)
                    image.window = (round(image.window[0] * factor, 1), round(image.window[1] * factor, 1))
                image.bits_stored = _BITS
                case = InbreastCase(
                    file_name=str(file_numbers[number]),
                    patient_hash=patient_hash,
                    patient_id=patient_hash if patient % 2 == 0 else "",
                    laterality=side,
                    view=view,
                    birads=birads,
                    acr="   " if number % 5 == 3 else str(image.density),
                    date=date,
                    image=image,
                )
                for index, finding in enumerate(image.findings):
                    if finding.type == "mass":
                        name = (
                            "Spiculated Region" if finding.pathology == "MALIGNANT" and number % 2 else "Mass"
                        )
                        case.rois.append((name, _contour(finding.mask), index))
                    else:
                        case.rois.append(("Cluster", _contour(finding.mask), index))
                        for point in _calcification_points(image.pixels, finding.mask):
                            case.rois.append(("Calcification", point[None], index))
                if number % 7 == 3:
                    centre = np.array(image_shape[::-1], dtype=np.float64) / 2
                    angles = np.linspace(0, 2 * np.pi, 12, endpoint=False)
                    ring = centre + 6 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
                    case.rois.append(("Asymmetry", ring, None))
                cases.append(case)
    return cases


def _roi_dict(index: int, name: str, points: np.ndarray, spacing: tuple[float, float]) -> dict:
    """An OsiriX ROI entry (only ``Name``, ``NumberOfPoints`` and ``Point_px`` are read back)."""
    kind = 19 if len(points) <= 2 else 15  # OsiriX t2DPoint / tPencil
    centre = points.mean(axis=0)
    return {
        "Area": float(len(points)),
        "Center": f"({centre[0] * spacing[1]:.6f}, {centre[1] * spacing[0]:.6f}, 0.000000)",
        "Dev": 0.0,
        "IndexInImage": index,
        "Max": 0.0,
        "Mean": 0.0,
        "Min": 0.0,
        "Name": name,
        "NumberOfPoints": len(points),
        "Point_mm": [f"({x * spacing[1]:.6f}, {y * spacing[0]:.6f}, 0.000000)" for x, y in points],
        "Point_px": [f"({x:.6f}, {y:.6f})" for x, y in points],
        "Total": 0.0,
        "Type": kind,
    }


def write_inbreast(
    root: str | os.PathLike,
    *,
    n_patients: int = 8,
    seed: int = 0,
    image_shape: tuple[int, int] = (256, 208),
    broken: Sequence[str] = (),
) -> Path:
    """Write a synthetic INbreast-style dataset (deterministic per seed).

    Args:
        root: destination folder (created).
        n_patients: number of patients, 4 images each (L/R x CC/ML).
        seed: seed of everything drawn.
        image_shape: (rows, columns) of every image.
        broken: damage to include, each on a different annotated image whose BI-RADS is
            not excluded: ``"bad_points"`` (a ``Point_px`` entry that is not ``"(x, y)"``),
            ``"point_count_mismatch"`` (``NumberOfPoints`` one too many), ``"missing_dicom"``
            (a CSV row without its DICOM), ``"not_plist"`` (an XML that is not a plist).

    Returns:
        ``root``.

    Raises:
        MammoConfigError: an unknown broken option, too few annotated images for the broken
            options asked, or invalid sizes.

    Example::

        root = write_inbreast("/tmp/inbreast", n_patients=4, broken=("missing_dicom",))
    """
    unknown = sorted(set(broken) - set(INBREAST_BROKEN))
    if unknown:
        raise MammoConfigError(f"unknown broken options {unknown}; expected some of {INBREAST_BROKEN}")
    cases = inbreast_cases(n_patients, seed, image_shape)
    targets = [case for case in cases if case.rois and case.birads not in ("0", "3")]
    if len(targets) < len(set(broken)):
        raise MammoConfigError(
            f"only {len(targets)} annotated images for broken options {sorted(set(broken))}"
        )
    damaged = {option: targets[i].file_name for i, option in enumerate(INBREAST_BROKEN) if option in broken}
    root = Path(root)
    (root / "AllXML").mkdir(parents=True, exist_ok=True)
    lines = [";".join(INBREAST_CSV_COLUMNS)]
    for case in cases:
        lines.append(
            ";".join(
                [
                    "removed",
                    "removed",
                    case.laterality,
                    case.view,
                    case.date,
                    case.file_name,
                    case.acr,
                    case.birads,
                ]
            )
        )
        uid_seed = ["inbreast", str(seed), case.patient_hash]
        if damaged.get("missing_dicom") != case.file_name:
            write_mammogram_dicom(
                root / "AllDICOMs" / case.dicom_name,
                case.image.pixels,
                laterality=case.laterality,
                view=case.view,
                patient_id=case.patient_id,
                study_uid=generate_uid(entropy_srcs=uid_seed + [case.date]),
                series_uid=generate_uid(entropy_srcs=uid_seed + [case.file_name, "series"]),
                sop_uid=generate_uid(entropy_srcs=uid_seed + [case.file_name, "sop"]),
                bits_stored=_BITS,
                pixel_spacing=case.image.pixel_spacing,
                window=case.image.window,
                series_description=f"{case.laterality}{case.view}",
            )
        if not case.rois:
            continue
        xml_path = root / "AllXML" / f"{case.file_name}.xml"
        if damaged.get("not_plist") == case.file_name:
            xml_path.write_text("<html><body>this is not an OsiriX plist</body></html>\n")
            continue
        rois = [
            _roi_dict(i, name, points, case.image.pixel_spacing)
            for i, (name, points, _) in enumerate(case.rois)
        ]
        if damaged.get("bad_points") == case.file_name:
            rois[0]["Point_px"][0] = rois[0]["Point_px"][0].replace(",", ";") + " px"
        if damaged.get("point_count_mismatch") == case.file_name:
            rois[-1]["NumberOfPoints"] += 1
        plist = {"Images": [{"ImageIndex": 0, "NumberOfROIs": len(rois), "ROIs": rois}]}
        xml_path.write_bytes(plistlib.dumps(plist, fmt=plistlib.FMT_XML))
    (root / "INbreast.csv").write_text("\n".join(lines) + "\n")
    return root
