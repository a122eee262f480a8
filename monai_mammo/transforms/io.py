"""Load mammograms as channel-first MetaTensors: :class:`LoadMammogram` and :class:`LoadMammogramd`.

Both read with :class:`monai_mammo.data.readers.MammogramReader` and build the MetaTensor as
:class:`monai.transforms.LoadImage` does, so their output equals
``LoadImaged(keys, reader=MammogramReader(), ensure_channel_first=True)`` plus a laterality/view
fallback supplied by the caller (e.g. from the datalist).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import DtypeLike, KeysCollection
from monai.data import MetaTensor
from monai.transforms import EnsureChannelFirst, MapTransform, Transform
from monai.utils import TraceKeys, TransformBackends, convert_to_dst_type, ensure_tuple, ensure_tuple_rep

from monai_mammo.data.dicom import normalize_laterality, normalize_view
from monai_mammo.data.readers import MammogramReader
from monai_mammo.data.schema import LATERALITY_KEY, VIEW_KEY
from monai_mammo.exceptions import MammoConfigError

__all__ = ["LoadMammogram", "LoadMammogramd", "LoadMammogramD", "LoadMammogramDict"]

_UNKNOWN = (None, str(TraceKeys.NONE))


class LoadMammogram(Transform):
    """Load a mammogram file (DICOM, PNG, JPEG) as a (1, rows, cols) MetaTensor, never transposed.

    DICOM pixels go through the display pipeline (modality LUT, VOI, MONOCHROME1 inversion,
    padding); see :class:`~monai_mammo.data.readers.MammogramReader` for the metadata keys.
    ``laterality``/``view`` missing from the file (tags and file name) are taken from the
    values given to ``__call__``.

    Args:
        apply_voi: apply the DICOM VOI LUT / window (False: modality values).
        allow_for_processing: accept FOR PROCESSING (raw detector) DICOM images.
        as_mask: load a binary mask (value > 0 -> 1, never windowed).
        dtype: dtype of the output.
        image_only: return only the image, else ``(image, metadata)``.

    Raises:
        MammoDataError: missing, truncated, corrupt or unsupported file; FOR PROCESSING image.
        MammoDependencyError: compressed DICOM without the decoder (names the extra).

    Example::

        image = LoadMammogram()("1_L_CC.png")  # MetaTensor (1, 3328, 2560), meta["laterality"] == "L"
    """

    backend = [TransformBackends.NUMPY]

    def __init__(
        self,
        apply_voi: bool = True,
        allow_for_processing: bool = False,
        as_mask: bool = False,
        dtype: DtypeLike = np.float32,
        image_only: bool = True,
    ) -> None:
        self.reader = MammogramReader(apply_voi, allow_for_processing, as_mask)
        self.dtype = dtype
        self.image_only = image_only

    def __call__(
        self, filename: str | os.PathLike, laterality: str | None = None, view: str | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, dict]:
        """
        Args:
            filename: the image file.
            laterality: fallback laterality (``L``/``R``/``LEFT``/``RIGHT``) when the file has none.
            view: fallback view when the file has none.

        Returns:
            The (1, rows, cols) MetaTensor (a plain tensor under ``set_track_meta(False)``), with its
            metadata dict when ``image_only`` is False.
        """
        arr, meta = self.reader.get_data(self.reader.read(filename))
        for key, fallback in (
            (LATERALITY_KEY, normalize_laterality(laterality)),
            (VIEW_KEY, normalize_view(view)),
        ):
            if meta.get(key) in _UNKNOWN and fallback is not None:
                meta[key] = fallback
        arr = convert_to_dst_type(arr, dst=arr, dtype=self.dtype)[0]
        img = EnsureChannelFirst()(MetaTensor.ensure_torch_and_prune_meta(arr, meta), meta_dict=meta)
        return img if self.image_only else (img, img.meta if isinstance(img, MetaTensor) else meta)


class LoadMammogramd(MapTransform):
    """Dictionary-based :class:`LoadMammogram`.

    The laterality/view fallback comes from the data dict's ``"laterality"``/``"view"`` items
    (the datalist schema), used when the file itself does not tell.

    Args:
        keys: keys of the file names to load.
        apply_voi: apply the DICOM VOI LUT / window (False: modality values).
        allow_for_processing: accept FOR PROCESSING (raw detector) DICOM images.
        as_mask: load binary masks (value > 0 -> 1, never windowed).
        dtype: dtype of the output.
        meta_keys: where to store each metadata dict when ``image_only`` is False (as in
            :class:`monai.transforms.LoadImaged`); None: ``{key}_{meta_key_postfix}``.
        meta_key_postfix: postfix of the default metadata keys.
        overwriting: allow overwriting an existing metadata item.
        image_only: store only the images (the metadata stays on the MetaTensors).
        allow_missing_keys: don't raise if a key is missing.

    Raises:
        MammoConfigError: ``meta_keys`` not matching ``keys``.
        KeyError: a metadata item exists and ``overwriting`` is False.

    Example::

        load = LoadMammogramd(keys=["image", "mask"])
        d = load({"image": "a.dcm", "mask": "a_mask.png", "laterality": "R"})
    """

    backend = LoadMammogram.backend

    def __init__(
        self,
        keys: KeysCollection,
        apply_voi: bool = True,
        allow_for_processing: bool = False,
        as_mask: bool = False,
        dtype: DtypeLike = np.float32,
        meta_keys: KeysCollection | None = None,
        meta_key_postfix: str = "meta_dict",
        overwriting: bool = False,
        image_only: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadMammogram(apply_voi, allow_for_processing, as_mask, dtype, image_only=False)
        self.meta_keys: Sequence[Hashable | None] = (
            ensure_tuple_rep(None, len(self.keys)) if meta_keys is None else ensure_tuple(meta_keys)
        )
        if len(self.meta_keys) != len(self.keys):
            raise MammoConfigError(
                f"meta_keys should have the same length as keys, got {len(self.keys)} and {len(self.meta_keys)}"
            )
        self.meta_key_postfix = meta_key_postfix
        self.overwriting = overwriting
        self.image_only = image_only

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """
        Args:
            data: a dict with file names under ``keys`` (and optional ``laterality``/``view``).

        Returns:
            A copy of ``data`` with the loaded MetaTensors (and metadata dicts when not ``image_only``).
        """
        d = dict(data)
        for key, meta_key in self.key_iterator(d, self.meta_keys):
            img, meta = self.loader(d[key], d.get(LATERALITY_KEY), d.get(VIEW_KEY))
            d[key] = img
            if self.image_only:
                continue
            meta_key = meta_key or f"{key}_{self.meta_key_postfix}"
            if meta_key in d and not self.overwriting:
                raise KeyError(f"Metadata with key {meta_key} already exists and overwriting=False.")
            d[meta_key] = meta
        return d


LoadMammogramD = LoadMammogramDict = LoadMammogramd
