"""Load the ROI masks of a datalist item's findings, aligned with its (possibly resized) image."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.utils import TransformBackends

from monai_mammo.exceptions import MammoConfigError, MammoDataError
from monai_mammo.transforms.io import LoadMammogram

__all__ = [
    "LoadFindingMasksd",
    "LoadFindingMasksD",
    "LoadFindingMasksDict",
    "StackFindingMasksd",
    "StackFindingMasksD",
    "StackFindingMasksDict",
    "UnstackFindingMasksd",
    "UnstackFindingMasksD",
    "UnstackFindingMasksDict",
]

# transforms after which masks can still be loaded: they only resample the whole image
_RESAMPLING_ONLY = {"Resize", "Resized"}


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
        MammoConfigError: the image went through a crop or flip already (masks cannot replay it:
            load them first and move them with :class:`StackFindingMasksd`).

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
        for op in getattr(image, "applied_operations", []):
            if op.get("class") not in _RESAMPLING_ONLY:
                raise MammoConfigError(
                    f"the image went through {op.get('class')} before its finding masks were loaded; "
                    "load masks right after the image and move them with StackFindingMasksd",
                    path,
                )
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


class StackFindingMasksd(MapTransform):
    """Move the findings' loaded masks into one ``(n_findings, H, W)`` key, so geometry transforms move them.

    MONAI dict transforms act on top-level keys; masks inside the ``findings`` list would be left
    behind by a crop or flip. Stack them, list the stacked key in the geometry transforms' keys
    (nearest interpolation), then put them back with :class:`UnstackFindingMasksd`. Findings
    without a mask get an empty channel.

    Args:
        keys: the findings list key (default ``"findings"``).
        image_key: the image whose spatial shape empty channels take.
        output_key: the stacked mask key.

    Example::

        Compose([LoadMammogramd("image"), LoadFindingMasksd("findings"), StackFindingMasksd("findings"),
                 CropBreastd(["image", "finding_masks"]), OrientBreastd(["image", "finding_masks"]),
                 UnstackFindingMasksd("findings")])
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self, keys: KeysCollection = "findings", image_key: str = "image", output_key: str = "finding_masks"
    ):
        super().__init__(keys)
        self.image_key = image_key
        self.output_key = output_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        shape = tuple(d[self.image_key].shape[1:])
        for key in self.key_iterator(d):
            findings = [dict(f) for f in d[key]]
            masks = [
                torch.as_tensor(f["mask"], dtype=torch.float32).reshape(1, *shape)
                if f.get("mask") is not None and not isinstance(f["mask"], (str, bytes))
                else torch.zeros((1, *shape))
                for f in findings
            ]
            image = d[self.image_key]
            stacked = torch.cat(masks) if masks else torch.zeros((0, *shape))
            if isinstance(image, MetaTensor):
                stacked = MetaTensor(
                    stacked, meta=dict(image.meta), applied_operations=list(image.applied_operations)
                )
            d[self.output_key] = stacked
            for f in findings:
                f["mask"] = None
            d[key] = findings
        return d


class UnstackFindingMasksd(MapTransform):
    """Put the stacked masks (moved by geometry transforms) back into their findings as binary (1, H, W)."""

    backend = [TransformBackends.TORCH]

    def __init__(self, keys: KeysCollection = "findings", stacked_key: str = "finding_masks"):
        super().__init__(keys)
        self.stacked_key = stacked_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        masks = torch.as_tensor(d.pop(self.stacked_key))
        for key in self.key_iterator(d):
            findings = [dict(f) for f in d[key]]
            if len(findings) != masks.shape[0]:
                raise MammoConfigError(f"{masks.shape[0]} stacked masks for {len(findings)} findings")
            for i, f in enumerate(findings):
                f["mask"] = (masks[i : i + 1] > 0.5).float()
            d[key] = findings
        return d


StackFindingMasksD = StackFindingMasksDict = StackFindingMasksd
UnstackFindingMasksD = UnstackFindingMasksDict = UnstackFindingMasksd
