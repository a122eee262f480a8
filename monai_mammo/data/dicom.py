"""DICOM-correct pixel values and metadata of a mammogram.

Pure functions on a :class:`pydicom.dataset.Dataset`. The display pipeline follows the
DICOM grayscale standard display order::

    stored values -> modality LUT (RescaleSlope/Intercept or ModalityLUTSequence)
                  -> VOI (VOILUTSequence preferred over WindowCenter/Width; LINEAR or SIGMOID;
                          the first of several windows)
                  -> MONOCHROME1 inversion (within the VOI output range)
                  -> pixel padding (PixelPaddingValue/RangeLimit on the stored values) set to
                     the minimum of the output range (black)

so that dense tissue is bright whatever the photometric interpretation. MONAI's
``PydicomReader`` applies only the rescale; these functions are the reference for
:class:`monai_mammo.data.readers.MammogramReader`.

Laterality and view are read from the standard tags with documented fallbacks
(file name, then caller-supplied values) and normalised to ``"L"``/``"R"`` and
``"CC"``/``"MLO"``/``"ML"`` (other views as upper-case strings).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder
from pydicom.uid import JPEG2000TransferSyntaxes

from monai_mammo.exceptions import MammoDataError, MammoDependencyError

__all__ = [
    "CODECS_EXTRA",
    "FOR_PROCESSING_SOP_CLASSES",
    "is_dicom_file",
    "read_dicom",
    "presentation_intent",
    "check_presentation_intent",
    "stored_pixels",
    "modality_output_range",
    "display_pixels",
    "normalize_laterality",
    "normalize_view",
    "laterality_from_filename",
    "view_from_filename",
    "dicom_laterality",
    "dicom_view",
    "pixel_spacing",
    "dicom_metadata",
]

CODECS_EXTRA = 'pip install "monai_mammo[dicom-codecs]"'

# SOP classes of raw detector images (the same as PresentationIntentType FOR PROCESSING).
FOR_PROCESSING_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1.2.1": "Digital Mammography X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
}
_FOR_PRESENTATION_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.1.2", "1.2.840.10008.5.1.4.1.1.1.1")

# SNOMED-CT view codes (ViewCodeSequence CodeValue) and their CodeMeaning spellings.
_VIEW_CODES = {"399162004": "CC", "399368009": "MLO", "399260004": "ML"}
_VIEW_MEANINGS = {"craniocaudal": "CC", "mediolateraloblique": "MLO", "mediolateral": "ML"}
_LATERALITIES = {"L": "L", "LEFT": "L", "R": "R", "RIGHT": "R"}

# "<laterality><sep?><view>" as a whole token of a file name: 1_L_CC, P_00001_LEFT_CC, x_MG_R_MLO_ANON, LCC.
_NAME_PATTERN = re.compile(
    r"(?<![A-Za-z0-9])(LEFT|RIGHT|L|R)[_\- ]?(MLO|CC|ML)(?![A-Za-z0-9])", flags=re.IGNORECASE
)
_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")


def is_dicom_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a DICOM Part 10 file (the ``DICM`` marker after the 128-byte preamble).

    Args:
        path: the file to test.

    Returns:
        True when the file starts with a DICOM preamble; False otherwise or when unreadable.
    """
    try:
        with open(path, "rb") as stream:
            header = stream.read(132)
    except OSError:
        return False
    return header[128:132] == b"DICM"


def _decode_all_elements(ds: Dataset) -> None:
    """Convert every raw data element now (pydicom decodes lazily, on first access).

    A damaged element (unknown VR, undecodable value, broken sequence) then fails here, inside
    :func:`read_dicom`'s error handling, instead of on some later attribute access.
    """
    ds.walk(lambda _dataset, _element: None)
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is not None:
        file_meta.walk(lambda _dataset, _element: None)


def read_dicom(path: str | os.PathLike, stop_before_pixels: bool = False) -> Dataset:
    """Read a DICOM Part 10 file (pixel data included, not decoded yet) with every element decoded.

    Args:
        path: the ``.dcm`` file.
        stop_before_pixels: read the header only (no Pixel Data element).

    Returns:
        The dataset; all its data elements are already converted, so attribute access cannot
        fail later on a damaged element.

    Raises:
        MammoDataError: missing file, not a DICOM file, a truncated/corrupt header or a data
            element that cannot be decoded (e.g. an unknown value representation).

    Example::

        ds = read_dicom("1-1.dcm")
    """
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
        _decode_all_elements(ds)
    except FileNotFoundError as exc:
        raise MammoDataError("file not found", path) from exc
    except InvalidDicomError as exc:
        raise MammoDataError(f"not a DICOM file (no DICM preamble / file meta): {exc}", path) from exc
    except Exception as exc:  # pydicom raises EOFError, struct.error, NotImplementedError, ... on damage
        raise MammoDataError(f"unreadable DICOM file (truncated or corrupt?): {exc!r}", path) from exc
    return ds


def _sop_class(ds: Dataset) -> str:
    file_meta = getattr(ds, "file_meta", Dataset())
    return str(ds.get("SOPClassUID") or file_meta.get("MediaStorageSOPClassUID") or "")


def presentation_intent(ds: Dataset) -> str | None:
    """The presentation intent: PresentationIntentType, else implied by the SOP class.

    Args:
        ds: the dataset.

    Returns:
        ``"FOR PRESENTATION"``, ``"FOR PROCESSING"`` or None when neither tag nor SOP class tell.
    """
    value = str(ds.get("PresentationIntentType") or "").strip().upper()
    if value:
        return value
    sop_class = _sop_class(ds)
    if sop_class in FOR_PROCESSING_SOP_CLASSES:
        return "FOR PROCESSING"
    if sop_class in _FOR_PRESENTATION_SOP_CLASSES:
        return "FOR PRESENTATION"
    return None


def check_presentation_intent(
    ds: Dataset, allow_for_processing: bool = False, source: str | os.PathLike | None = None
) -> None:
    """Reject raw detector images (FOR PROCESSING) unless explicitly allowed.

    Args:
        ds: the dataset.
        allow_for_processing: accept FOR PROCESSING images.
        source: the file, named in the error.

    Raises:
        MammoDataError: PresentationIntentType FOR PROCESSING or a For Processing SOP class.
    """
    sop_class = _sop_class(ds)
    if allow_for_processing or (
        presentation_intent(ds) != "FOR PROCESSING" and sop_class not in FOR_PROCESSING_SOP_CLASSES
    ):
        return
    raise MammoDataError(
        "FOR PROCESSING image (raw detector data, SOP class "
        f"{sop_class or 'unknown'}): its intensities are not those of a displayed mammogram; "
        "use the FOR PRESENTATION image or pass allow_for_processing=True",
        source,
    )


def _check_decoder(ds: Dataset, source: str | os.PathLike | None) -> None:
    tsyntax = getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID")
    if tsyntax is None:
        raise MammoDataError("no TransferSyntaxUID in the file meta information", source)
    try:
        compressed = tsyntax.is_compressed
        decoder = get_decoder(tsyntax) if compressed else None
    except (ValueError, NotImplementedError) as exc:
        raise MammoDataError(
            f"unsupported transfer syntax {tsyntax} ({tsyntax.name}): {exc}", source
        ) from exc
    if decoder is None or decoder.is_available:
        return
    if tsyntax in JPEG2000TransferSyntaxes:
        hint = f"install the codecs with: {CODECS_EXTRA}"
    else:
        hint = "install one of: " + "; ".join(decoder.missing_dependencies)
    raise MammoDependencyError(
        f"no decoder available for transfer syntax {tsyntax.name} ({tsyntax}); {hint}", source
    )


def stored_pixels(ds: Dataset, source: str | os.PathLike | None = None) -> np.ndarray:
    """Decode the stored values of a single-frame greyscale image.

    Args:
        ds: the dataset.
        source: the file, named in errors.

    Returns:
        2-D integer array (rows, columns) of stored values.

    Raises:
        MammoDependencyError: compressed pixel data without an available decoder (the message
            names the transfer syntax and, for JPEG 2000, the ``dicom-codecs`` extra).
        MammoDataError: no integer pixel data (absent, or float pixel data), not greyscale,
            multi-frame, or truncated/corrupt pixel data.
    """
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise MammoDataError(
                "float pixel data (FloatPixelData/DoubleFloatPixelData) is not supported: "
                "a mammogram stores integer values in PixelData",
                source,
            )
        raise MammoDataError("no PixelData element (not an image, or a truncated file)", source)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric not in _MONOCHROME or int(ds.get("SamplesPerPixel", 1)) != 1:
        raise MammoDataError(
            f"unsupported PhotometricInterpretation {photometric!r} with {ds.get('SamplesPerPixel')} "
            "samples per pixel: a mammogram must be MONOCHROME1 or MONOCHROME2",
            source,
        )
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames != 1:
        raise MammoDataError(f"{frames} frames (e.g. tomosynthesis): expected a single 2-D image", source)
    _check_decoder(ds, source)
    try:
        arr = ds.pixel_array
    except Exception as exc:  # pydicom raises ValueError/AttributeError/RuntimeError on bad pixel data
        raise MammoDataError(f"cannot decode the pixel data (truncated or corrupt?): {exc}", source) from exc
    if arr.ndim != 2:
        raise MammoDataError(f"pixel data has shape {arr.shape}, expected (rows, columns)", source)
    return arr


def modality_output_range(ds: Dataset) -> tuple[float, float]:
    """The range of the modality LUT output (the range a window maps onto, as pydicom does).

    Args:
        ds: the dataset.

    Returns:
        ``(low, high)``: the stored range (from BitsStored and PixelRepresentation) through
        RescaleSlope/Intercept, or ``[0, 2**n - 1]`` for an n-bit ModalityLUTSequence.
    """
    if ds.get("ModalityLUTSequence"):
        bits = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    bits = int(ds.BitsStored)
    if int(ds.get("PixelRepresentation", 0)) == 0:
        low, high = 0.0, float(2**bits - 1)
    else:
        low, high = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        low, high = low * float(slope) + float(intercept), high * float(slope) + float(intercept)
    return min(low, high), max(low, high)


def _voi_lut_item(ds: Dataset) -> Dataset | None:
    sequence = ds.get("VOILUTSequence")
    if not sequence:
        return None
    item = sequence[0]
    if item.get("LUTDescriptor") is None or item.get("LUTData") is None:
        return None
    return item


def _has_window(ds: Dataset) -> bool:
    return ds.get("WindowCenter") not in (None, "") and ds.get("WindowWidth") not in (None, "")


def _apply_voi(
    values: np.ndarray, ds: Dataset, source: str | os.PathLike | None
) -> tuple[np.ndarray, tuple[float, float]]:
    """VOI LUT (preferred) or window of the modality values, with the output range."""
    item = _voi_lut_item(ds)
    try:
        if item is not None:
            entries, first_map, bits = (int(v) for v in item.LUTDescriptor)
            entries = entries or 2**16
            # pydicom indexes the LUT with the input; give it integers inside the LUT domain.
            indices = np.clip(np.rint(values), first_map, first_map + entries - 1).astype(np.int64)
            return apply_voi_lut(indices, ds, prefer_lut=True), (0.0, float(2**bits - 1))
        return apply_voi_lut(values, ds, prefer_lut=True), modality_output_range(ds)
    except (ValueError, TypeError, NotImplementedError, AttributeError, IndexError) as exc:
        raise MammoDataError(f"invalid VOI LUT / window: {exc}", source) from exc


def _padding_mask(ds: Dataset, stored: np.ndarray) -> np.ndarray | None:
    value = ds.get("PixelPaddingValue")
    if value is None:
        return None
    limit = ds.get("PixelPaddingRangeLimit")
    if limit is None:
        return stored == int(value)
    low, high = sorted((int(value), int(limit)))
    return (stored >= low) & (stored <= high)


def display_pixels(
    ds: Dataset, apply_voi: bool = True, source: str | os.PathLike | None = None
) -> np.ndarray:
    """Pixel values of a mammogram as displayed: modality LUT, VOI, MONOCHROME1 inversion, padding.

    Args:
        ds: the dataset (single-frame MONOCHROME1/MONOCHROME2).
        apply_voi: apply the VOI LUT or window; False keeps the modality values (the inversion
            of MONOCHROME1 and the padding still apply, within the modality output range).
        source: the file, named in errors.

    Returns:
        2-D float64 array (rows, columns); MONOCHROME1 images inverted so that dense tissue is
        bright; padding pixels set to the minimum of the output range.

    Raises:
        MammoDependencyError: compressed pixel data without an available decoder.
        MammoDataError: unreadable pixel data, an invalid VOI LUT / window, or a rescale or
            window that turns pixel values into NaN/inf.

    Example::

        img = display_pixels(pydicom.dcmread("1-1.dcm"))  # VOI applied, MONOCHROME1 inverted
    """
    stored = stored_pixels(ds, source)
    try:
        values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
        low, high = modality_output_range(ds)
    except (ValueError, TypeError, AttributeError, IndexError) as exc:
        raise MammoDataError(f"invalid modality LUT / rescale: {exc}", source) from exc
    if apply_voi and (_voi_lut_item(ds) is not None or _has_window(ds)):
        voi_values, (low, high) = _apply_voi(values, ds, source)
        values = np.asarray(voi_values, dtype=np.float64)
    if str(ds.PhotometricInterpretation).strip() == "MONOCHROME1":
        values = (low + high) - values
    if not (math.isfinite(low) and math.isfinite(high) and np.isfinite(values).all()):
        raise MammoDataError(
            "non-finite (NaN/inf) pixel values after the modality LUT / VOI: check RescaleSlope, "
            "RescaleIntercept, WindowCenter and WindowWidth",
            source,
        )
    padding = _padding_mask(ds, stored)
    if padding is not None:
        values[padding] = low
    return values


def normalize_laterality(value: Any) -> str | None:
    """``"L"``/``"R"`` from ``L``, ``R``, ``LEFT``, ``RIGHT`` (any case); None otherwise.

    Args:
        value: a tag value, CSV cell or None.

    Returns:
        ``"L"``, ``"R"`` or None (unknown, ``"B"``, ``"U"``, empty).
    """
    if value is None:
        return None
    return _LATERALITIES.get(str(value).strip().upper())


def normalize_view(value: Any) -> str | None:
    """``"CC"``/``"MLO"``/``"ML"`` from a ViewPosition, SNOMED code or CodeMeaning.

    Args:
        value: ``"CC"``, ``"cranio-caudal"``, ``"399368009"``, ``"XCCL"``, ... or None.

    Returns:
        ``"CC"``, ``"MLO"``, ``"ML"``, another view as a stripped upper-case string, or None when empty.

    Example::

        normalize_view("medio-lateral oblique")  # "MLO"
    """
    text = "" if value is None else str(value).strip()
    if not text:
        return None
    if text in _VIEW_CODES:
        return _VIEW_CODES[text]
    key = re.sub(r"[^a-z]", "", text.lower())
    return _VIEW_MEANINGS.get(key, text.upper())


def _name_match(filename: str | os.PathLike | None) -> re.Match[str] | None:
    if filename is None:
        return None
    return _NAME_PATTERN.search(Path(filename).name)


def laterality_from_filename(filename: str | os.PathLike | None) -> str | None:
    """Laterality in a file name such as ``1_L_CC.png``, ``P_00001_LEFT_CC``, ``x_MG_R_MLO_ANON.dcm``.

    Args:
        filename: the path (only its last component is read).

    Returns:
        ``"L"``, ``"R"`` or None.
    """
    match = _name_match(filename)
    return normalize_laterality(match.group(1)) if match else None


def view_from_filename(filename: str | os.PathLike | None) -> str | None:
    """View in a file name such as ``1_L_CC.png``, ``RIGHT_MLO``, ``x_MG_L_ML_ANON.dcm``.

    Args:
        filename: the path (only its last component is read).

    Returns:
        ``"CC"``, ``"MLO"``, ``"ML"`` or None.
    """
    match = _name_match(filename)
    return normalize_view(match.group(2)) if match else None


def dicom_laterality(
    ds: Dataset | None, filename: str | os.PathLike | None = None, fallback: Any = None
) -> str | None:
    """Laterality from ImageLaterality, else Laterality, else the file name, else ``fallback``.

    Args:
        ds: the dataset (None for non-DICOM images).
        filename: the file whose name is parsed when the tags are absent or unusable.
        fallback: caller-supplied laterality (e.g. from a CSV), used last.

    Returns:
        ``"L"``, ``"R"`` or None.
    """
    tags = () if ds is None else (ds.get("ImageLaterality"), ds.get("Laterality"))
    for candidate in (*tags, laterality_from_filename(filename), fallback):
        laterality = normalize_laterality(candidate)
        if laterality is not None:
            return laterality
    return None


def dicom_view(
    ds: Dataset | None, filename: str | os.PathLike | None = None, fallback: Any = None
) -> str | None:
    """View from ViewPosition, else ViewCodeSequence[0] (CodeValue / CodeMeaning), else file name, else ``fallback``.

    Args:
        ds: the dataset (None for non-DICOM images).
        filename: the file whose name is parsed when the tags are absent.
        fallback: caller-supplied view, used last.

    Returns:
        ``"CC"``, ``"MLO"``, ``"ML"``, another view string, or None.
    """
    candidates: list[Any] = []
    if ds is not None:
        candidates.append(ds.get("ViewPosition"))
        codes = ds.get("ViewCodeSequence")
        if codes:
            code_value = str(codes[0].get("CodeValue") or "").strip()
            candidates.append(_VIEW_CODES.get(code_value) or codes[0].get("CodeMeaning"))
    candidates += [view_from_filename(filename), fallback]
    for candidate in candidates:
        view = normalize_view(candidate)
        if view is not None:
            return view
    return None


def pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    """(row, column) spacing in mm: PixelSpacing, else ImagerPixelSpacing (at the detector).

    Args:
        ds: the dataset.

    Returns:
        Two positive floats, or None when absent or invalid.
    """
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        try:
            row, col = (float(v) for v in value)
        except (TypeError, ValueError):
            continue
        if all(math.isfinite(v) and v > 0 for v in (row, col)):
            return row, col
    return None


def _text(value: Any) -> str | None:
    text = "" if value is None else str(value).strip()
    return text or None


def dicom_metadata(ds: Dataset, filename: str | os.PathLike | None = None) -> dict[str, Any]:
    """The mammogram metadata of a dataset, as plain Python values.

    Args:
        ds: the dataset.
        filename: the source file (laterality/view fallback from its name).

    Returns:
        dict with ``laterality``, ``view``, ``patient_id``, ``study_instance_uid``,
        ``series_instance_uid``, ``sop_instance_uid``, ``pixel_spacing`` ((row, col) mm),
        ``bits_stored``, ``photometric_interpretation`` (as stored) and ``presentation_intent``;
        None where unknown.
    """
    bits_stored = ds.get("BitsStored")
    return {
        "laterality": dicom_laterality(ds, filename),
        "view": dicom_view(ds, filename),
        "patient_id": _text(ds.get("PatientID")),
        "study_instance_uid": _text(ds.get("StudyInstanceUID")),
        "series_instance_uid": _text(ds.get("SeriesInstanceUID")),
        "sop_instance_uid": _text(ds.get("SOPInstanceUID")),
        "pixel_spacing": pixel_spacing(ds),
        "bits_stored": None if bits_stored is None else int(bits_stored),
        "photometric_interpretation": _text(ds.get("PhotometricInterpretation")),
        "presentation_intent": presentation_intent(ds),
    }
