"""A MONAI image reader for mammograms: DICOM (display pipeline), PNG and JPEG, never transposed.

MONAI's ``PydicomReader`` applies only the rescale (no VOI, no MONOCHROME1 inversion) and,
like ``PILReader``, swaps the two axes of 2-D images. :class:`MammogramReader` returns the
array in numpy row/column order (axis 0 = rows, top to bottom; axis 1 = columns, left to
right), exactly as a viewer shows the image, with the DICOM display pipeline of
:func:`monai_mammo.data.dicom.display_pixels`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import ImageReader
from monai.utils import MetaKeys, TraceKeys, ensure_tuple

from monai_mammo.data.dicom import (
    check_presentation_intent,
    dicom_laterality,
    dicom_metadata,
    dicom_view,
    display_pixels,
    is_dicom_file,
    read_dicom,
)
from monai_mammo.exceptions import MammoDataError

__all__ = ["MammogramReader", "MammogramFile", "RASTER_SUFFIXES", "DICOM_SUFFIXES", "mammogram_affine"]

DICOM_SUFFIXES = (".dcm", ".dicom")
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I")


@dataclass(frozen=True)
class MammogramFile:
    """The image object returned by :meth:`MammogramReader.read`: a file, decoded by ``get_data``.

    Decoding is deferred so that any error on a file raises from ``get_data`` as a typed
    project error instead of being swallowed by ``LoadImage``'s fall-back to other readers.
    """

    path: str


def mammogram_affine(spacing: Sequence[float] | None) -> np.ndarray:
    """MONAI's 4x4 affine of a 2-D image in row/column order: ``diag(row_mm, col_mm, 1, 1)``.

    Args:
        spacing: (row, column) pixel spacing in mm, None for 1 mm (pixel units).

    Returns:
        float64 (4, 4) array; axis 0 of the image (rows) maps to the first world axis.
    """
    row, col = (1.0, 1.0) if spacing is None else (float(spacing[0]), float(spacing[1]))
    return np.diag([row, col, 1.0, 1.0])


def _read_raster(path: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Greyscale pixels of a PNG/JPEG (colour converted to luma) and their bit depth."""
    from PIL import Image  # imported here: DICOM-only use must not need Pillow's codecs

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in _SIXTEEN_BIT_MODES:
                bits, arr = 16, np.asarray(img)
            else:
                bits, arr = 8, np.asarray(img if img.mode == "L" else img.convert("L"))
    except FileNotFoundError as exc:
        raise MammoDataError("file not found", path) from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise MammoDataError(f"unreadable image (truncated or corrupt?): {exc}", path) from exc
    meta = {
        "laterality": dicom_laterality(None, path),
        "view": dicom_view(None, path),
        "patient_id": None,
        "study_instance_uid": None,
        "series_instance_uid": None,
        "sop_instance_uid": None,
        "pixel_spacing": None,
        "bits_stored": bits,
        "photometric_interpretation": "MONOCHROME2",
        "presentation_intent": None,
    }
    return arr.astype(np.float32), meta


class MammogramReader(ImageReader):
    """Read a mammogram (DICOM, PNG, JPEG) as float32 in row/column order, with its metadata.

    DICOM files (``.dcm``, ``.dicom`` or any name with a ``DICM`` preamble) go through the
    display pipeline (modality LUT, VOI LUT or window, MONOCHROME1 inversion, padding set to
    black); FOR PROCESSING images are rejected unless allowed. PNG (8/16-bit, e.g. NYU's 12-bit
    data scaled to 16 bits) and JPEG values are returned unchanged; colour images are converted
    to greyscale. Nothing is transposed: axis 0 is the rows, as in a viewer.

    Metadata (``get_data``): ``laterality`` (``"L"``/``"R"``), ``view`` (``"CC"``/``"MLO"``/...),
    ``patient_id``, ``study_instance_uid``, ``series_instance_uid``, ``sop_instance_uid``,
    ``pixel_spacing`` ((row, col) mm), ``bits_stored``, ``photometric_interpretation``
    (as stored), ``presentation_intent``, ``filename_or_obj``, ``spatial_shape`` ((rows, cols)),
    ``original_channel_dim`` (``"no_channel"``), ``affine``/``original_affine``
    (:func:`mammogram_affine`). Unknown values are MONAI's ``"none"`` string
    (``TraceKeys.NONE``), as in MONAI's readers, so that batches collate.

    Args:
        apply_voi: apply the DICOM VOI LUT / window (False: modality values).
        allow_for_processing: accept FOR PROCESSING (raw detector) DICOM images.
        as_mask: load a binary mask: value > 0 (after the modality LUT and MONOCHROME1
            inversion, never windowed) -> 1.0, else 0.0.

    Raises:
        MammoDataError: (from ``get_data``) missing, truncated, corrupt or unsupported file,
            FOR PROCESSING image, or files of different shapes stacked together.
        MammoDependencyError: compressed DICOM without the decoder (names the extra).

    Example::

        loader = LoadImaged(keys="image", reader=MammogramReader(), ensure_channel_first=True)
        image = loader({"image": "1_L_CC.png"})["image"]  # (1, H, W) float32 MetaTensor
    """

    def __init__(
        self, apply_voi: bool = True, allow_for_processing: bool = False, as_mask: bool = False
    ) -> None:
        super().__init__()
        self.apply_voi = apply_voi
        self.allow_for_processing = allow_for_processing
        self.as_mask = as_mask

    def verify_suffix(self, filename: Sequence[os.PathLike | str] | os.PathLike | str) -> bool:
        """Whether every file is a ``.dcm``/``.dicom``/``.png``/``.jpg``/``.jpeg`` or has a DICM preamble.

        Args:
            filename: file name or a list of file names.

        Returns:
            True when this reader can read all of them.
        """
        known = DICOM_SUFFIXES + RASTER_SUFFIXES
        return all(
            Path(name).suffix.lower() in known or is_dicom_file(name) for name in ensure_tuple(filename)
        )

    def read(
        self, data: Sequence[os.PathLike | str] | os.PathLike | str, **kwargs: Any
    ) -> MammogramFile | list[MammogramFile]:
        """Wrap the file name(s); decoding and validation happen in :meth:`get_data`.

        Args:
            data: file name or a list of file names (stacked as channels by ``get_data``).
            kwargs: not used; the options are set in the constructor.

        Returns:
            One :class:`MammogramFile` or a list of them.
        """
        files = [MammogramFile(str(name)) for name in ensure_tuple(data)]
        return files if len(files) > 1 else files[0]

    def get_data(self, img: MammogramFile | Sequence[MammogramFile]) -> tuple[np.ndarray, dict]:
        """Decode the image(s): a (rows, cols) float32 array, or (n, rows, cols) for several files.

        Args:
            img: the object(s) returned by :meth:`read`.

        Returns:
            The array and the metadata dict of the first file (see the class docstring).

        Raises:
            MammoDataError: unreadable or unsupported file, or several files of different shapes.
            MammoDependencyError: compressed DICOM without the decoder.
        """
        loaded = [self._load(item.path) for item in ensure_tuple(img)]
        arrays = [arr for arr, _ in loaded]
        meta = loaded[0][1]
        if len(arrays) == 1:
            return arrays[0], meta
        shapes = {arr.shape for arr in arrays}
        if len(shapes) > 1:
            raise MammoDataError(
                f"cannot stack images of different shapes {sorted(shapes)}", meta["filename_or_obj"]
            )
        meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
        return np.stack(arrays, axis=0), meta

    def _load(self, path: str) -> tuple[np.ndarray, dict[str, Any]]:
        if Path(path).suffix.lower() in RASTER_SUFFIXES:
            arr, meta = _read_raster(path)
        else:
            ds = read_dicom(path)
            check_presentation_intent(ds, self.allow_for_processing, path)
            arr = display_pixels(ds, apply_voi=self.apply_voi and not self.as_mask, source=path)
            meta = dicom_metadata(ds, path)
        if self.as_mask:
            arr = arr > 0
        affine = mammogram_affine(meta["pixel_spacing"])
        meta = {key: str(TraceKeys.NONE) if value is None else value for key, value in meta.items()}
        meta.update(
            {
                "filename_or_obj": path,
                MetaKeys.SPATIAL_SHAPE: np.asarray(arr.shape),
                MetaKeys.ORIGINAL_CHANNEL_DIM: "no_channel",
                MetaKeys.AFFINE: affine,
                MetaKeys.ORIGINAL_AFFINE: affine.copy(),
            }
        )
        return np.asarray(arr, dtype=np.float32), meta
