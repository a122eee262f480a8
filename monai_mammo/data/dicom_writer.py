"""Write mammograms as real DICOM files (Digital Mammography X-Ray Image Storage).

Used by the synthetic dataset writers and by the tests that exercise every loader path
(VOI LUT, windows, SIGMOID, MONOCHROME1, padding, FOR PROCESSING, compressed syntaxes).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

from monai_mammo.exceptions import MammoConfigError, MammoDependencyError

__all__ = ["write_mammogram_dicom", "MG_FOR_PRESENTATION", "MG_FOR_PROCESSING", "VIEW_CODES"]

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
MG_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"
UID_PREFIX = "1.2.826.0.1.3680043.10.1234."

# SNOMED-CT codes of the standard mammography views (ViewCodeSequence).
VIEW_CODES = {
    "CC": ("399162004", "cranio-caudal"),
    "MLO": ("399368009", "medio-lateral oblique"),
    "ML": ("399260004", "medio-lateral"),
}

_SYNTAXES = {"explicit": ExplicitVRLittleEndian, "jpeg2000": JPEG2000Lossless, "rle": RLELossless}


def write_mammogram_dicom(
    path: str | os.PathLike,
    pixels: np.ndarray,
    *,
    laterality: str | None = "L",
    view: str | None = "CC",
    patient_id: str = "ANON",
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    bits_stored: int = 16,
    photometric: str = "MONOCHROME2",
    presentation_intent: str | None = "FOR PRESENTATION",
    pixel_spacing: Sequence[float] | None = (0.1, 0.1),
    window: tuple[float | Sequence[float], float | Sequence[float]] | None = None,
    voi_lut_function: str | None = None,
    voi_lut: tuple[Sequence[int], np.ndarray] | None = None,
    rescale: tuple[float, float] | None = None,
    padding_value: int | None = None,
    padding_range_limit: int | None = None,
    laterality_tag: str = "ImageLaterality",
    view_tag: str = "ViewPosition",
    transfer_syntax: str = "explicit",
    series_description: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a 2-D greyscale mammogram as a DICOM file.

    Args:
        path: destination file (parent folders are created).
        pixels: 2-D unsigned integer array in numpy row/column order (rows = height).
        laterality: ``"L"``/``"R"`` or None to omit the tag.
        view: ``"CC"``/``"MLO"``/... or None to omit the view.
        patient_id: PatientID.
        study_uid: StudyInstanceUID (generated when None).
        series_uid: SeriesInstanceUID (generated when None).
        sop_uid: SOPInstanceUID (generated when None).
        bits_stored: BitsStored (8..16); BitsAllocated is 8 or 16 accordingly.
        photometric: ``"MONOCHROME2"`` or ``"MONOCHROME1"``.
        presentation_intent: PresentationIntentType, None to omit it.
        pixel_spacing: (row, column) spacing in mm, None to omit.
        window: (WindowCenter, WindowWidth), single values or sequences (multi-valued).
        voi_lut_function: VOILUTFunction (``"LINEAR"``, ``"SIGMOID"``), None to omit.
        voi_lut: (LUTDescriptor, LUTData) written as a one-item VOILUTSequence.
        rescale: (RescaleSlope, RescaleIntercept), None to omit.
        padding_value: PixelPaddingValue, None to omit.
        padding_range_limit: PixelPaddingRangeLimit, None to omit.
        laterality_tag: ``"ImageLaterality"`` or ``"Laterality"`` (where to store laterality).
        view_tag: ``"ViewPosition"`` or ``"ViewCodeSequence"`` (where to store the view).
        transfer_syntax: ``"explicit"``, ``"jpeg2000"`` (needs the ``dicom-codecs`` extra) or ``"rle"``.
        series_description: SeriesDescription, None to omit.
        extra: further ``keyword -> value`` elements to set.

    Returns:
        The path written.

    Raises:
        MammoConfigError: pixels not 2-D unsigned integers, or an unknown option.
        MammoDependencyError: JPEG 2000 requested without the ``dicom-codecs`` extra.

    Example::

        write_mammogram_dicom("a.dcm", np.zeros((64, 48), np.uint16), laterality="R", view="MLO")
    """
    arr = np.asarray(pixels)
    if arr.ndim != 2 or arr.dtype.kind not in "ui":
        raise MammoConfigError(f"pixels must be a 2-D integer array, got {arr.dtype} {arr.shape}", path)
    if transfer_syntax not in _SYNTAXES:
        raise MammoConfigError(
            f"unknown transfer syntax {transfer_syntax!r}; use one of {sorted(_SYNTAXES)}", path
        )
    if not 1 <= bits_stored <= 16:
        raise MammoConfigError(f"bits_stored must be in 1..16, got {bits_stored}", path)
    bits_allocated = 8 if bits_stored <= 8 else 16
    arr = arr.astype(np.uint8 if bits_allocated == 8 else np.uint16)

    sop_class = MG_FOR_PROCESSING if presentation_intent == "FOR PROCESSING" else MG_FOR_PRESENTATION
    sop_uid = sop_uid or generate_uid(UID_PREFIX)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(UID_PREFIX + "1")

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid or generate_uid(UID_PREFIX)
    ds.SeriesInstanceUID = series_uid or generate_uid(UID_PREFIX)
    ds.Modality = "MG"
    ds.PatientID = patient_id
    ds.PatientName = patient_id
    today = datetime.date(2020, 1, 1).strftime("%Y%m%d")
    ds.StudyDate = today
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    if series_description:
        ds.SeriesDescription = series_description
    if presentation_intent is not None:
        ds.PresentationIntentType = presentation_intent
    if laterality is not None:
        setattr(ds, laterality_tag, laterality)
    if view is not None:
        if view_tag == "ViewCodeSequence":
            code, meaning = VIEW_CODES.get(view, ("", view))
            item = Dataset()
            item.CodeValue = code
            item.CodingSchemeDesignator = "SCT"
            item.CodeMeaning = meaning
            ds.ViewCodeSequence = DicomSequence([item])
        else:
            ds.ViewPosition = view
    ds.Rows, ds.Columns = (int(s) for s in arr.shape)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    if pixel_spacing is not None:
        ds.PixelSpacing = [float(s) for s in pixel_spacing]
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = (float(v) for v in rescale)
        ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_lut_function is not None:
        ds.VOILUTFunction = voi_lut_function
    if voi_lut is not None:
        descriptor, data = voi_lut
        lut = Dataset()
        lut.add_new(0x00283002, "US", [int(v) for v in descriptor])  # LUTDescriptor
        lut.add_new(0x00283006, "US", [int(v) for v in np.asarray(data).ravel()])  # LUTData (US, not OW)
        ds.VOILUTSequence = DicomSequence([lut])
    if padding_value is not None:
        ds.PixelPaddingValue = int(padding_value)
    if padding_range_limit is not None:
        ds.PixelPaddingRangeLimit = int(padding_range_limit)
    for keyword, value in (extra or {}).items():
        setattr(ds, keyword, value)

    ds.PixelData = arr.tobytes()
    syntax = _SYNTAXES[transfer_syntax]
    if syntax != ExplicitVRLittleEndian:
        try:
            ds.compress(syntax, arr)
        except (RuntimeError, ImportError) as exc:  # pydicom raises RuntimeError when no encoder is present
            raise MammoDependencyError(
                f"cannot encode {transfer_syntax}: {exc}; install monai_mammo[dicom-codecs]", path
            ) from exc
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out, enforce_file_format=True)
    return out
