"""Load the ROI masks of a datalist item's findings, aligned with its (possibly resized) image."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import TransformBackends

from monai_mammo.exceptions import MammoDataError
from monai_mammo.transforms.io import LoadMammogram

__all__ = ["LoadFindingMasksd", "LoadFindingMasksD", "LoadFindingMasksDict"]


class LoadFindingMasksd(MapTransform):
    """Load every finding's ``mask`` file as a binary (1, H, W) tensor at the image's current size.

    Run it after the image was loaded (and resized): each mask is checked against the image's
    original size (``image.meta["spatial_shape"]``), then resized with nearest-neighbour
    interpolation to the image's current spatial shape. Findings without a mask file are kept
    with ``mask`` None (their bounding box, if any, still locates them).

    Args:
        keys: the findings list key(s) (default ``"findings"``).
        image_key: the loaded image whose geometry the masks follow.
        mask_key: the key of the mask path inside each finding.
        allow_missing_keys: do not fail when a findings key is absent.

    Raises:
        MammoDataError: a mask whose original size differs from the image's, naming both files.

    Example::

        Compose([LoadMammogramd("image"), Resized("image", (288, 224)), LoadFindingMasksd("findings")])
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        keys: KeysCollection = "findings",
        image_key: str = "image",
        mask_key: str = "mask",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key
        self.mask_key = mask_key
        self.loader = LoadMammogram(as_mask=True)

    def _load(self, path: Any, image: torch.Tensor) -> torch.Tensor:
        mask = torch.as_tensor(self.loader(path))
        meta = getattr(image, "meta", {})
        original = tuple(int(s) for s in np.asarray(meta.get("spatial_shape", image.shape[1:])).ravel())
        if tuple(mask.shape[1:]) != original:
            raise MammoDataError(
                f"mask size {tuple(mask.shape[1:])} differs from its image's {original} "
                f"({meta.get('filename_or_obj', 'image')})",
                path,
            )
        current = tuple(image.shape[1:])
        data = mask.float()
        if tuple(data.shape[1:]) != current:
            data = F.interpolate(data[None], size=current, mode="nearest")[0]
        return (data > 0.5).float()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = d[self.image_key]
        for key in self.key_iterator(d):
            findings = []
            for finding in d[key]:
                finding = dict(finding)
                path = finding.get(self.mask_key)
                if isinstance(path, (str, bytes)) or hasattr(path, "__fspath__"):
                    finding[self.mask_key] = self._load(path, image)
                findings.append(finding)
            d[key] = findings
        return d


LoadFindingMasksD = LoadFindingMasksDict = LoadFindingMasksd
