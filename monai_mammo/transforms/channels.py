"""Stack patch-classifier heatmaps onto a mammogram as extra channels (NYU image+heatmaps input).

Wu et al. feed the classifier a 3-channel crop ``[image, benign heatmap, malignant heatmap]``.
The heatmaps are computed once per image, stored as NIfTI files, and stacked onto the loaded
image *before* any spatial transform, so that crops, flips, resizes and affines move the image
and both maps together.

Storage convention (decided here, used by every writer and reader of heatmaps in monai_mammo):

* A heatmap is a 2-D float32 array of shape ``(H, W)`` in the numpy row/column order of the
  image it belongs to (row 0 = top row of the image array, column 0 = its left column).
* It is stored **as-is** as the NIfTI data array: NIfTI voxel axis ``i`` = image row,
  axis ``j`` = image column. Nothing is transposed or flipped on writing or reading.
* The NIfTI affine is informational only (the reference image's affine when known, identity
  otherwise). Readers must not reorient the data: ``nibabel.load(p).get_fdata()``,
  :func:`load_heatmap_nifti` and MONAI's ``LoadImage(reader=NibabelReader())`` (its default
  ``as_closest_canonical=False``) all return the stored ``(H, W)`` array unchanged, so
  ``LoadImaged`` + ``EnsureChannelFirstd`` can be used for heatmaps too.
  Beware that MONAI's ``PILReader`` returns PNG images as ``(W, H)`` by default
  (``reverse_indexing=True``): heatmaps follow the image array the project's readers return.
* File naming next to an image ``/any/dir/<stem>.<ext>``: ``<heatmap_dir>/<stem>_benign.nii.gz``
  and ``<heatmap_dir>/<stem>_malignant.nii.gz`` (:func:`heatmap_paths`). ``<stem>`` is the file
  name without its last suffix (and without ``.gz`` first): ``1.2.3.dcm`` -> ``1.2.3``,
  ``a.nii.gz`` -> ``a``. A datalist may instead name the files explicitly per item under the
  keys ``heatmap_benign`` and ``heatmap_malignant`` (the datalist is then the manifest).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type
from monai.utils.type_conversion import convert_data_type

from monai_mammo.exceptions import MammoConfigError, MammoDataError

__all__ = [
    "BENIGN_SUFFIX",
    "MALIGNANT_SUFFIX",
    "HEATMAP_BENIGN_KEY",
    "HEATMAP_MALIGNANT_KEY",
    "image_stem",
    "heatmap_paths",
    "save_heatmap_nifti",
    "load_heatmap_nifti",
    "StackHeatmaps",
    "StackHeatmapsd",
    "StackHeatmapsD",
    "StackHeatmapsDict",
]

BENIGN_SUFFIX = "_benign.nii.gz"
MALIGNANT_SUFFIX = "_malignant.nii.gz"
HEATMAP_BENIGN_KEY = "heatmap_benign"
HEATMAP_MALIGNANT_KEY = "heatmap_malignant"

HeatmapSource = str | os.PathLike | NdarrayOrTensor


def image_stem(path: str | os.PathLike) -> str:
    """File name of an image without its extension, as used to name its heatmaps.

    Args:
        path: the image file (any extension; ``.gz`` is stripped before the last suffix).

    Returns:
        The stem: ``"/d/1.2.3.dcm"`` -> ``"1.2.3"``, ``"/d/a.nii.gz"`` -> ``"a"``.

    Example:
        >>> image_stem("/data/P_00001_LEFT_CC.dcm")
        'P_00001_LEFT_CC'
    """
    name = Path(path).name
    if name.lower().endswith(".gz"):
        name = name[:-3]
    return Path(name).stem


def heatmap_paths(image_path: str | os.PathLike, heatmap_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Benign and malignant heatmap files of an image under the project's naming convention.

    Args:
        image_path: the image file the heatmaps were computed for.
        heatmap_dir: the folder holding the heatmaps.

    Returns:
        ``(heatmap_dir/<stem>_benign.nii.gz, heatmap_dir/<stem>_malignant.nii.gz)``.

    Example:
        >>> [p.name for p in heatmap_paths("/img/0_L_CC.png", "/hm")]
        ['0_L_CC_benign.nii.gz', '0_L_CC_malignant.nii.gz']
    """
    stem = image_stem(image_path)
    folder = Path(heatmap_dir)
    return folder / f"{stem}{BENIGN_SUFFIX}", folder / f"{stem}{MALIGNANT_SUFFIX}"


def _check_map(array: np.ndarray, source: str) -> np.ndarray:
    """A heatmap as a finite 2-D float32 array (a leading or trailing singleton axis is dropped)."""
    if array.ndim == 3 and 1 in (array.shape[0], array.shape[-1]):
        array = array[0] if array.shape[0] == 1 else array[..., 0]
    if array.ndim != 2:
        raise MammoDataError(f"a heatmap must be a 2-D (H, W) map, got shape {tuple(array.shape)}", source)
    array = np.asarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        bad = int(array.size - np.isfinite(array).sum())
        raise MammoDataError(f"heatmap contains {bad} NaN/inf value(s)", source)
    return array


def _affine_4x4(reference_meta: Mapping[str, Any] | None) -> np.ndarray:
    """The NIfTI affine: the reference's affine promoted to 4 x 4, or identity."""
    affine = np.eye(4)
    ref = None if reference_meta is None else reference_meta.get("affine")
    if ref is None:
        return affine
    ref_np = np.asarray(convert_data_type(ref, np.ndarray)[0], dtype=np.float64)
    if ref_np.shape == (4, 4):
        return ref_np
    if ref_np.shape == (3, 3):  # a 2-D affine: rows/cols + translation
        affine[:2, :2] = ref_np[:2, :2]
        affine[:2, 3] = ref_np[:2, 2]
        return affine
    raise MammoConfigError(f"reference affine must be 3 x 3 or 4 x 4, got shape {ref_np.shape}")


def save_heatmap_nifti(
    path: str | os.PathLike, array: NdarrayOrTensor, reference_meta: Mapping[str, Any] | None = None
) -> Path:
    """Write a 2-D heatmap as NIfTI following the module's storage convention (no transpose).

    Args:
        path: output file ending in ``.nii`` or ``.nii.gz``; parent folders are created.
        array: the ``(H, W)`` map (a singleton channel axis ``(1, H, W)`` is accepted), numpy or torch.
        reference_meta: optional metadata of the image (e.g. ``image.meta``); its ``"affine"``
            (3 x 3 for 2-D or 4 x 4) is stored as the NIfTI affine. Identity otherwise.

    Returns:
        The written path.

    Raises:
        MammoConfigError: the path does not end in ``.nii``/``.nii.gz`` or the affine is malformed.
        MammoDataError: the array is not 2-D or contains NaN/inf.

    Example:
        >>> save_heatmap_nifti(tmp / "a_benign.nii.gz", np.zeros((4, 3)))  # doctest: +SKIP
    """
    out = Path(path)
    if not (out.name.endswith(".nii") or out.name.endswith(".nii.gz")):
        raise MammoConfigError("heatmap files must end in .nii or .nii.gz", out)
    data = _check_map(np.asarray(convert_data_type(array, np.ndarray)[0]), str(out))
    image = nib.Nifti1Image(data, _affine_4x4(reference_meta))
    image.set_data_dtype(np.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(out))
    return out


def load_heatmap_nifti(path: str | os.PathLike) -> np.ndarray:
    """Read a heatmap written by :func:`save_heatmap_nifti` (or any 2-D NIfTI) as stored.

    Args:
        path: the NIfTI file.

    Returns:
        The ``(H, W)`` float32 array, in the stored order (no reorientation).

    Raises:
        MammoDataError: the file is missing or unreadable, not 2-D, or contains NaN/inf.

    Example:
        >>> load_heatmap_nifti("/hm/0_L_CC_benign.nii.gz").shape  # doctest: +SKIP
        (2677, 1942)
    """
    source = str(path)
    if not Path(path).is_file():
        raise MammoDataError("heatmap file not found", source)
    try:
        data = np.asarray(nib.load(source).dataobj, dtype=np.float32)  # type: ignore[attr-defined]
    except Exception as exc:  # nibabel raises many types on corrupt files
        raise MammoDataError(f"cannot read heatmap NIfTI ({type(exc).__name__}: {exc})", source) from exc
    return _check_map(data, source)


class StackHeatmaps(Transform):
    """Append the benign and malignant heatmaps to a 1-channel image: ``[image, benign, malignant]``.

    The output keeps the image's type; a MetaTensor keeps its metadata and affine, so later
    spatial transforms move the three channels together. Its dtype is the image dtype promoted
    with float32.

    Args:
        heatmap_dir: folder used to find heatmaps that are not passed explicitly, via
            :func:`heatmap_paths` and the image's ``meta["filename_or_obj"]``.

    Example:
        >>> stack = StackHeatmaps(heatmap_dir="/hm")
        >>> out = stack(image)  # image: MetaTensor (1, H, W) loaded from /img/<stem>.png  # doctest: +SKIP
        >>> out.shape  # doctest: +SKIP
        torch.Size([3, H, W])
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, heatmap_dir: str | os.PathLike | None = None) -> None:
        self.heatmap_dir = heatmap_dir

    def _default_paths(self, img: NdarrayOrTensor) -> tuple[Path, Path]:
        filename = img.meta.get("filename_or_obj") if isinstance(img, MetaTensor) else None
        if self.heatmap_dir is None or not filename:
            raise MammoConfigError(
                "heatmaps not given: pass them explicitly, or set heatmap_dir and load the image "
                "as a MetaTensor whose meta['filename_or_obj'] names its file"
            )
        return heatmap_paths(str(filename), self.heatmap_dir)

    @staticmethod
    def _load(heatmap: HeatmapSource, name: str, shape: tuple[int, ...], image_name: str) -> np.ndarray:
        if isinstance(heatmap, (str, os.PathLike)):
            source = str(heatmap)
            array = load_heatmap_nifti(heatmap)
        else:
            source = f"{name} heatmap array for the image{image_name}"
            array = _check_map(np.asarray(convert_data_type(heatmap, np.ndarray)[0]), source)
        if tuple(array.shape) != shape:
            raise MammoDataError(
                f"{name} heatmap shape (H, W) = {tuple(array.shape)} does not match the image{image_name} "
                f"shape (H, W) = {shape}",
                source,
            )
        return array

    def __call__(
        self,
        img: NdarrayOrTensor,
        benign: HeatmapSource | None = None,
        malignant: HeatmapSource | None = None,
    ) -> NdarrayOrTensor:
        """Stack the heatmaps onto ``img``.

        Args:
            img: channel-first image of shape ``(1, H, W)`` (numpy, torch or MetaTensor).
            benign: benign heatmap: a NIfTI path, an ``(H, W)`` array, or None to derive the path.
            malignant: malignant heatmap, as ``benign``.

        Returns:
            The ``(3, H, W)`` image of the same type as ``img``.

        Raises:
            MammoDataError: the image is not ``(1, H, W)``, a heatmap is unreadable, not 2-D,
                contains NaN/inf, or its shape differs from the image's (message names the file
                and both shapes).
            MammoConfigError: a heatmap is not given and cannot be derived.
        """
        filename = img.meta.get("filename_or_obj") if isinstance(img, MetaTensor) else None
        if img.ndim != 3 or img.shape[0] != 1:
            raise MammoDataError(
                f"expected a channel-first (1, H, W) image, got shape {tuple(img.shape)}", filename
            )
        image_name = f" {filename}" if filename else ""
        if benign is None or malignant is None:
            default_benign, default_malignant = self._default_paths(img)
            benign = default_benign if benign is None else benign
            malignant = default_malignant if malignant is None else malignant
        shape = tuple(int(s) for s in img.shape[1:])
        maps = [
            self._load(h, n, shape, image_name) for h, n in ((benign, "benign"), (malignant, "malignant"))
        ]
        img_t = img if isinstance(img, torch.Tensor) else torch.as_tensor(img)
        dtype = torch.promote_types(img_t.dtype, torch.float32)
        # torch.cat keeps a MetaTensor's metadata (MONAI's ConcatItemsd needs items of one type)
        heat = torch.as_tensor(np.stack(maps), dtype=dtype, device=img_t.device)
        stacked = torch.cat([img_t.to(dtype), heat], dim=0)
        out, *_ = convert_to_dst_type(stacked, img, dtype=stacked.dtype)
        return out


class StackHeatmapsd(MapTransform):
    """Dictionary version of :class:`StackHeatmaps`.

    Each heatmap is taken from the item (``benign_key``/``malignant_key``: a NIfTI path or an
    array, e.g. from the datalist) when present and not None, otherwise derived from
    ``heatmap_dir`` and the image's file name. The heatmap keys are left in the item.

    Args:
        keys: image key(s) to stack onto (each must be ``(1, H, W)``).
        benign_key: item key holding the benign heatmap (path or array).
        malignant_key: item key holding the malignant heatmap (path or array).
        heatmap_dir: fallback folder (naming of :func:`heatmap_paths`).
        allow_missing_keys: don't raise when an image key is missing.

    Example:
        >>> pipeline = Compose([LoadImaged("image", ensure_channel_first=True),  # doctest: +SKIP
        ...                     StackHeatmapsd("image", heatmap_dir="/hm"), RandFlipd("image", prob=0.5)])
    """

    backend = StackHeatmaps.backend

    def __init__(
        self,
        keys: KeysCollection,
        benign_key: str = HEATMAP_BENIGN_KEY,
        malignant_key: str = HEATMAP_MALIGNANT_KEY,
        heatmap_dir: str | os.PathLike | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.benign_key = benign_key
        self.malignant_key = malignant_key
        self.stacker = StackHeatmaps(heatmap_dir=heatmap_dir)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Stack the heatmaps onto every image key.

        Args:
            data: the item.

        Returns:
            A copy of the item with each image key replaced by its ``(3, H, W)`` stack.

        Raises:
            MammoDataError: as :meth:`StackHeatmaps.__call__`.
            MammoConfigError: as :meth:`StackHeatmaps.__call__`.
        """
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.stacker(d[key], d.get(self.benign_key), d.get(self.malignant_key))
        return d


StackHeatmapsD = StackHeatmapsDict = StackHeatmapsd
