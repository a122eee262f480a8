"""Intensity steps of the reproduced papers, on top of MONAI's intensity transforms.

MONAI already provides most of what the papers need (``ScaleIntensityRange``, ``ShiftIntensity``,
``NormalizeIntensity``, ``RepeatChannel`` for grey -> 3 channels); this module adds only

* :class:`ScaleBitDepth` -- ``[0, 2**bits_stored - 1]`` -> ``[0, output_max]`` (Shen: 16 bit -> 255/65535),
* :class:`SubtractMean` -- scalar dataset-mean subtraction without std division (Shen),
* :class:`StandardizeImageChannel` -- NYU per-crop standardisation of channel 0 only, leaving the
  heatmap channels untouched, with the reference's std floor ``max(std, 1e-5)``
  (MONAI's ``NormalizeIntensity`` acts on all channels and replaces a zero std by 1),

and the factories :func:`shen_intensity` and :func:`nyu_intensity`. Each transform has an array
and a dictionary version (``d``/``D``/``Dict``), accepts numpy or torch input and, like MONAI,
returns a torch tensor (a MetaTensor with the input's metadata when meta tracking is on).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import (
    Compose,
    MapTransform,
    RepeatChannel,
    RepeatChanneld,
    ScaleIntensityRange,
    ShiftIntensity,
    Transform,
)
from monai.utils import TransformBackends, convert_to_tensor

from monai_mammo.exceptions import MammoConfigError, MammoDataError

__all__ = [
    "DDSM_MEAN",
    "INBREAST_MEAN",
    "NYU_STD_FLOOR",
    "ScaleBitDepth",
    "ScaleBitDepthd",
    "ScaleBitDepthD",
    "ScaleBitDepthDict",
    "SubtractMean",
    "SubtractMeand",
    "SubtractMeanD",
    "SubtractMeanDict",
    "StandardizeImageChannel",
    "StandardizeImageChanneld",
    "StandardizeImageChannelD",
    "StandardizeImageChannelDict",
    "shen_intensity",
    "nyu_intensity",
]

DDSM_MEAN = 52.18
"""Shen et al.: mean pixel value of the CBIS-DDSM training images after scaling to [0, 255]."""
INBREAST_MEAN = 44.33
"""Shen et al.: mean pixel value of the INbreast training images after scaling to [0, 255]."""
NYU_STD_FLOOR = 1e-5
"""Wu et al.: the std is floored at this value when standardising a crop."""


def _as_float(img: NdarrayOrTensor) -> torch.Tensor:
    """``img`` as a (Meta)Tensor of a floating dtype (integers become float32)."""
    out = convert_to_tensor(img, track_meta=get_track_meta())
    return out if out.is_floating_point() else out.to(torch.float32)


class ScaleBitDepth(ScaleIntensityRange):
    """Scale stored pixel values ``[0, 2**bits_stored - 1]`` linearly to ``[0, output_max]``.

    Shen et al. scale 16-bit images by ``255 / 65535`` (``bits_stored=16, output_max=255``);
    ``output_max=1`` gives ``[0, 1]`` for any bit depth (e.g. 12-bit digital mammograms).
    A thin named wrapper of MONAI's ``ScaleIntensityRange``.

    Args:
        bits_stored: the number of stored bits (1..32).
        output_max: value the largest storable pixel value maps to.
        clip: clip the output to ``[0, output_max]``.

    Raises:
        MammoConfigError: ``bits_stored`` outside 1..32 or ``output_max <= 0``.

    Example:
        >>> ScaleBitDepth(16, 255.0)(np.array([[[0, 65535]]])).tolist()
        [[[0.0, 255.0]]]
    """

    def __init__(self, bits_stored: int = 16, output_max: float = 1.0, clip: bool = False) -> None:
        if not 1 <= int(bits_stored) <= 32:
            raise MammoConfigError(f"bits_stored must be in 1..32, got {bits_stored}")
        if output_max <= 0:
            raise MammoConfigError(f"output_max must be positive, got {output_max}")
        self.bits_stored = int(bits_stored)
        self.output_max = float(output_max)
        super().__init__(
            a_min=0.0,
            a_max=float(2**self.bits_stored - 1),
            b_min=0.0,
            b_max=self.output_max,
            clip=clip,
            dtype=np.float32,
        )


class SubtractMean(ShiftIntensity):
    """Subtract one scalar dataset mean from every pixel (no std division), as Shen et al. do.

    Integer inputs are converted to float32 first (MONAI's ``ShiftIntensity`` keeps the input
    dtype, which would wrap around for unsigned images).

    Args:
        mean: the training-set mean, e.g. :data:`DDSM_MEAN` (52.18) or :data:`INBREAST_MEAN` (44.33).

    Example:
        >>> SubtractMean(DDSM_MEAN)(np.full((1, 2, 2), 52.18)).abs().max().item() < 1e-5
        True
    """

    def __init__(self, mean: float = DDSM_MEAN) -> None:
        self.mean = float(mean)
        super().__init__(offset=-self.mean)

    def __call__(self, img: NdarrayOrTensor, offset: float | None = None) -> torch.Tensor:
        """Subtract the mean.

        Args:
            img: channel-first image, numpy or torch.
            offset: override of ``-mean`` (MONAI's ``ShiftIntensity`` argument).

        Returns:
            The shifted image as a floating (Meta)Tensor.
        """
        return convert_to_tensor(super().__call__(_as_float(img), offset), track_meta=get_track_meta())


class StandardizeImageChannel(Transform):
    """NYU per-crop standardisation of one channel: ``(x - mean) / max(std, eps)``.

    The mean and (population) std are computed over the whole channel, padding included; the
    other channels (the heatmaps of an ``[image, benign, malignant]`` stack) are copied unchanged.

    Args:
        channel: index of the image channel.
        eps: floor of the std (the reference uses ``1e-5``), so a constant crop becomes all zeros.

    Raises:
        MammoConfigError: ``eps <= 0``.

    Example:
        >>> out = StandardizeImageChannel()(torch.stack([torch.arange(4.0).view(2, 2), torch.ones(2, 2)]))
        >>> round(out[0].mean().item(), 6), out[1].tolist()
        (0.0, [[1.0, 1.0], [1.0, 1.0]])
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, channel: int = 0, eps: float = NYU_STD_FLOOR) -> None:
        if eps <= 0:
            raise MammoConfigError(f"eps must be positive, got {eps}")
        self.channel = channel
        self.eps = eps

    def __call__(self, img: NdarrayOrTensor) -> torch.Tensor:
        """Standardise the image channel.

        Args:
            img: channel-first image ``(C, H, W)``, numpy or torch.

        Returns:
            A floating (Meta)Tensor of the same shape.

        Raises:
            MammoDataError: ``img`` has no channel ``channel`` or the channel is not finite (the
                message names the MetaTensor's ``filename_or_obj``).
        """
        out = _as_float(img).clone()
        source = img.meta.get("filename_or_obj") if isinstance(img, MetaTensor) else None
        if out.ndim < 2 or not -out.shape[0] <= self.channel < out.shape[0]:
            raise MammoDataError(
                f"cannot standardise channel {self.channel} of an image of shape {tuple(out.shape)}", source
            )
        x = out[self.channel]
        if not bool(torch.isfinite(x).all()):
            raise MammoDataError(f"channel {self.channel} contains NaN/inf values", source)
        std = torch.clamp(x.std(unbiased=False), min=self.eps)
        out[self.channel] = (x - x.mean()) / std
        return out


class _KeyedTransform(MapTransform):
    """Apply one array transform to each key (the shared body of this module's dict versions)."""

    backend: list[TransformBackends] = []
    transform: Transform

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Apply the array transform to every key.

        Args:
            data: the item.

        Returns:
            A copy of the item with the keys transformed.
        """
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


class ScaleBitDepthd(_KeyedTransform):
    """Dictionary version of :class:`ScaleBitDepth`.

    Args:
        keys: keys to scale.
        bits_stored: the number of stored bits.
        output_max: value of the largest storable pixel value after scaling.
        clip: clip the output to ``[0, output_max]``.
        allow_missing_keys: don't raise when a key is missing.

    Example:
        >>> ScaleBitDepthd("image", 16, 255.0)({"image": np.full((1, 1, 1), 65535)})["image"].item()
        255.0
    """

    backend = ScaleBitDepth.backend

    def __init__(
        self,
        keys: KeysCollection,
        bits_stored: int = 16,
        output_max: float = 1.0,
        clip: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = ScaleBitDepth(bits_stored, output_max, clip)


class SubtractMeand(_KeyedTransform):
    """Dictionary version of :class:`SubtractMean`.

    Args:
        keys: keys to shift.
        mean: the training-set mean.
        allow_missing_keys: don't raise when a key is missing.

    Example:
        >>> SubtractMeand("image", INBREAST_MEAN)({"image": np.full((1, 1, 1), 44.33)})["image"].item()
        0.0
    """

    backend = SubtractMean.backend

    def __init__(
        self, keys: KeysCollection, mean: float = DDSM_MEAN, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = SubtractMean(mean)


class StandardizeImageChanneld(_KeyedTransform):
    """Dictionary version of :class:`StandardizeImageChannel`.

    Args:
        keys: keys to standardise (channel-first ``[image, benign, malignant]`` stacks or grey images).
        channel: index of the image channel.
        eps: floor of the std.
        allow_missing_keys: don't raise when a key is missing.

    Example:
        >>> StandardizeImageChanneld("image")({"image": np.ones((3, 2, 2))})["image"][0].tolist()
        [[0.0, 0.0], [0.0, 0.0]]
    """

    backend = StandardizeImageChannel.backend

    def __init__(
        self,
        keys: KeysCollection,
        channel: int = 0,
        eps: float = NYU_STD_FLOOR,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = StandardizeImageChannel(channel, eps)


ScaleBitDepthD = ScaleBitDepthDict = ScaleBitDepthd
SubtractMeanD = SubtractMeanDict = SubtractMeand
StandardizeImageChannelD = StandardizeImageChannelDict = StandardizeImageChanneld


def shen_intensity(
    keys: KeysCollection | None = "image", dataset_mean: float = DDSM_MEAN, bits_stored: int = 16
) -> Compose:
    """Shen et al.'s intensity pipeline: ``x * 255 / 65535``, grey -> 3 channels, minus the dataset mean.

    Apply it to the resized 1-channel image. Shen's augmentation
    (:func:`monai_mammo.transforms.augment.shen_augmentation`) works in these [0, 255] units and
    commutes with the constant mean subtraction, so it may follow this pipeline.

    Args:
        keys: dict keys to transform; None builds the array version.
        dataset_mean: scalar training mean in [0, 255] units: :data:`DDSM_MEAN` (52.18, CBIS-DDSM)
            or :data:`INBREAST_MEAN` (44.33).
        bits_stored: stored bit depth of the input (Shen: 16, i.e. the 255/65535 factor).

    Returns:
        ``Compose([ScaleBitDepth(d)(bits_stored, 255), RepeatChannel(d)(3), SubtractMean(d)(dataset_mean)])``.

    Example:
        >>> shen_intensity(None)(np.full((1, 2, 2), 65535)).shape
        torch.Size([3, 2, 2])
    """
    if keys is None:
        return Compose([ScaleBitDepth(bits_stored, 255.0), RepeatChannel(3), SubtractMean(dataset_mean)])
    return Compose(
        [
            ScaleBitDepthd(keys, bits_stored, 255.0),
            RepeatChanneld(keys, 3),
            SubtractMeand(keys, dataset_mean),
        ]
    )


def nyu_intensity(keys: KeysCollection | None = "image", channel: int = 0) -> Compose:
    """Wu et al.'s (NYU) per-crop standardisation of the image channel (heatmaps untouched).

    Apply it after the (noisy) crop, to the crop including its zero padding.

    Args:
        keys: dict keys to transform; None builds the array version.
        channel: index of the image channel in the ``[image, benign, malignant]`` stack.

    Returns:
        ``Compose([StandardizeImageChannel(d)(channel, eps=1e-5)])``.

    Example:
        >>> nyu_intensity()({"image": np.ones((3, 4, 4))})["image"][0].abs().max().item()
        0.0
    """
    if keys is None:
        return Compose([StandardizeImageChannel(channel)])
    return Compose([StandardizeImageChanneld(keys, channel)])
