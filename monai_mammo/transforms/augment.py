"""Training augmentation recipes of the reproduced papers, built from MONAI's transforms.

Each factory returns a MONAI ``Compose`` of dictionary transforms; ``set_random_state(seed)`` on it
seeds every random transform inside, so a recipe is reproducible. ``keys`` are the image keys
(geometric and intensity changes); ``mask_keys`` (optional) follow the same geometric changes with
nearest-neighbour interpolation and no intensity change. The only transform MONAI lacks is
:class:`RandChannelShift` (Keras' ``channel_shift_range``: one offset per channel, clipped to the
image's range; MONAI's ``RandShiftIntensity(channel_wise=True)`` draws per channel but does not clip).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import (
    Compose,
    HistogramNormalized,
    Identityd,
    OneOf,
    RandAffined,
    RandFlipd,
    RandRotated,
    RandScaleIntensityd,
    RandShiftIntensity,
    RandShiftIntensityd,
    RandZoomd,
    ScaleIntensityRanged,
)
from monai.utils import convert_to_tensor, ensure_tuple

from monai_mammo.exceptions import MammoConfigError
from monai_mammo.transforms.intensity import StandardizeImageChanneld

__all__ = [
    "SHEN_ROTATION_DEG",
    "SHEN_SHEAR_RAD",
    "SHEN_ZOOM_RANGE",
    "SHEN_CHANNEL_SHIFT",
    "FALCONI_ROTATION_DEG",
    "FALCONI_SHEAR_DEG",
    "FALCONI_BRIGHTNESS_RANGE",
    "FALCONI_ZOOM_RANGE",
    "RandChannelShift",
    "RandChannelShiftd",
    "RandChannelShiftD",
    "RandChannelShiftDict",
    "shen_augmentation",
    "nyu_augmentation",
    "falconi_augmentation",
]

SHEN_ROTATION_DEG = 25.0
SHEN_SHEAR_RAD = 0.2
SHEN_ZOOM_RANGE = (0.8, 1.2)
SHEN_CHANNEL_SHIFT = 20.0

FALCONI_ROTATION_DEG = 15.0
FALCONI_SHEAR_DEG = 25.0
FALCONI_BRIGHTNESS_RANGE = (0.6, 1.2)
FALCONI_ZOOM_RANGE = (1.0, 1.2)


class RandChannelShift(RandShiftIntensity):
    """Shift each channel by its own random offset, then clip to the input's value range.

    Keras' ``random_channel_shift`` as used by Shen et al.: offsets ``U(-offsets, offsets)`` drawn
    per channel, the result clipped to ``[min, max]`` of the whole input (all channels).
    Integer inputs are converted to float32 first.

    Args:
        offsets: a number ``s`` for ``U(-s, s)`` or a ``(low, high)`` range.
        prob: probability of shifting.
        clip: clip to the input's range.

    Example:
        >>> img = torch.stack([torch.linspace(0.0, 255.0, 16).reshape(4, 4)] * 3)
        >>> out = RandChannelShift(20.0, prob=1.0).set_random_state(0)(img)
        >>> bool(out.min() >= 0 and out.max() <= 255), (out - img)[:, 2, 2].unique().numel()
        (True, 3)
    """

    def __init__(
        self, offsets: tuple[float, float] | float = SHEN_CHANNEL_SHIFT, prob: float = 1.0, clip: bool = True
    ):
        super().__init__(offsets=offsets, prob=prob, channel_wise=True)
        self.clip = clip

    def __call__(
        self, img: NdarrayOrTensor, factor: float | None = None, randomize: bool = True
    ) -> NdarrayOrTensor:
        """Shift the channels of ``img``.

        Args:
            img: channel-first image ``(C, H, W)``, numpy or torch.
            factor: multiplies the random offsets (MONAI's ``RandShiftIntensity`` argument).
            randomize: draw new offsets (False: reuse the last ones, as the dict version does).

        Returns:
            The shifted (Meta)Tensor, floating dtype.
        """
        img_t = convert_to_tensor(img, track_meta=get_track_meta())
        if not img_t.is_floating_point():
            img_t = img_t.to(torch.float32)
        if randomize:
            self.randomize(img_t)
        if not self._do_transform:
            return img_t
        out = convert_to_tensor(
            super().__call__(img_t, factor=factor, randomize=False), track_meta=get_track_meta()
        )
        if self.clip:
            out = torch.clamp(out, float(img_t.min()), float(img_t.max()))
        return out


class RandChannelShiftd(RandShiftIntensityd):
    """Dictionary version of :class:`RandChannelShift`: one draw per item, shared by all keys.

    All keys must have the channel count of the first key (shift images, not masks).

    Args:
        keys: image keys to shift.
        offsets: a number ``s`` for ``U(-s, s)`` or a ``(low, high)`` range.
        prob: probability of shifting.
        clip: clip each key to its input range.
        allow_missing_keys: don't raise when a key is missing.

    Example:
        >>> RandChannelShiftd("image", 20.0, prob=1.0)({"image": np.zeros((3, 2, 2))})["image"].shape
        torch.Size([3, 2, 2])
    """

    def __init__(
        self,
        keys: KeysCollection,
        offsets: tuple[float, float] | float = SHEN_CHANNEL_SHIFT,
        prob: float = 1.0,
        clip: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(
            keys, offsets=offsets, prob=prob, channel_wise=True, allow_missing_keys=allow_missing_keys
        )
        self.shifter: RandChannelShift = RandChannelShift(offsets=offsets, prob=1.0, clip=clip)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        """Shift every key with the same per-channel offsets.

        Args:
            data: the item.

        Returns:
            A copy of the item with the keys shifted (or converted to tensors when not applied).

        Raises:
            MammoConfigError: the keys have different channel counts.
        """
        channels = {int(data[k].shape[0]) for k in self.key_iterator(dict(data))}
        if len(channels) > 1:
            raise MammoConfigError(
                f"RandChannelShiftd keys {self.keys} have different channel counts {channels}"
            )
        return super().__call__(data)


RandChannelShiftD = RandChannelShiftDict = RandChannelShiftd


def _split_keys(keys: KeysCollection, mask_keys: KeysCollection | None) -> tuple[tuple[Hashable, ...], ...]:
    """(image keys, mask keys, all keys), checking that they don't overlap."""
    images = tuple(ensure_tuple(keys))
    masks = tuple(ensure_tuple(mask_keys)) if mask_keys is not None else ()
    if not images or set(images) & set(masks):
        raise MammoConfigError(
            f"need at least one image key and no key in both keys and mask_keys: {images}, {masks}"
        )
    return images, masks, images + masks


def shen_augmentation(
    keys: KeysCollection = "image", prob: float = 1.0, mask_keys: KeysCollection | None = None
) -> Compose:
    """Shen et al.'s training augmentation (Keras ``ImageDataGenerator`` of the reference code).

    Paper/reference numbers:

    * one combined affine about the image centre, nearest interpolation, edge (``"border"``) fill:
      rotation ``U(-25, 25)`` deg; shear angle ``U(-0.2, 0.2)`` rad on one axis (rows displaced in
      proportion to the column, as Keras does), applied as MONAI's shear coefficient in
      ``±tan(0.2)``; zoom ``U(0.8, 1.2)`` drawn independently per axis;
    * channel shift ``U(-20, 20)`` per channel, clipped to the image's range (images only);
    * horizontal and vertical flips, each with probability 0.5.

    The values are in [0, 255] units: apply after scaling (see
    :func:`monai_mammo.transforms.intensity.shen_intensity`; the mean subtraction commutes with
    this recipe).

    Args:
        keys: image keys (``(C, H, W)``, typically the 3-channel grey copy).
        prob: probability of the affine and of the channel shift (1.0 in the reference);
            the flips keep their 0.5.
        mask_keys: keys moved with the images (nearest), never intensity-shifted.

    Returns:
        ``Compose([RandAffined, RandChannelShiftd, RandFlipd(axis 1), RandFlipd(axis 0)])``.

    Raises:
        MammoConfigError: no image key, or a key in both ``keys`` and ``mask_keys``.

    Example:
        >>> aug = shen_augmentation("image", mask_keys="mask").set_random_state(0)
        >>> out = aug({"image": torch.rand(3, 64, 48) * 255, "mask": torch.zeros(1, 64, 48)})
    """
    images, _, every = _split_keys(keys, mask_keys)
    return Compose(
        [
            RandAffined(
                every,
                prob=prob,
                rotate_range=(math.radians(SHEN_ROTATION_DEG),),
                shear_range=(math.tan(SHEN_SHEAR_RAD), 0.0),
                scale_range=(SHEN_ZOOM_RANGE[1] - 1.0, SHEN_ZOOM_RANGE[1] - 1.0),
                mode="nearest",
                padding_mode="border",
            ),
            RandChannelShiftd(images, offsets=SHEN_CHANNEL_SHIFT, prob=prob),
            RandFlipd(every, prob=0.5, spatial_axis=1),
            RandFlipd(every, prob=0.5, spatial_axis=0),
        ]
    )


def nyu_augmentation(keys: KeysCollection = "image", channel: int = 0, **crop_noise_kwargs: Any) -> Compose:
    """Wu et al.'s (NYU) training/test-time augmentation of an ``[image, benign, malignant]`` stack.

    The noisy crop (location noise ``U(-1, 1) * 100`` px per axis, size noise on each border, bicubic
    resize back to the input size, applied jointly to image and heatmaps) is
    :class:`monai_mammo.transforms.nyu_window.RandCropNoised`; it is followed by the per-crop
    standardisation of the image channel only (``(x - mean) / max(std, 1e-5)``, heatmaps untouched).
    The reference's Gaussian input noise (std 0.01, training only) belongs to the network.

    Args:
        keys: keys of the stacked images (stack the heatmaps first, see
            :class:`monai_mammo.transforms.channels.StackHeatmapsd`).
        channel: index of the image channel.
        crop_noise_kwargs: passed to ``RandCropNoised(keys, **crop_noise_kwargs)`` (view, sizes, ...).

    Returns:
        ``Compose([RandCropNoised, StandardizeImageChanneld])``.

    Example:
        >>> aug = nyu_augmentation("image").set_random_state(0)  # doctest: +SKIP
    """
    from monai_mammo.transforms.nyu_window import RandCropNoised  # sibling module, imported when used

    return Compose([RandCropNoised(keys, **crop_noise_kwargs), StandardizeImageChanneld(keys, channel)])


def falconi_augmentation(
    keys: KeysCollection = "image",
    mask_keys: KeysCollection | None = None,
    value_range: tuple[float, float] = (0.0, 255.0),
    padding_mode: str = "border",
) -> Compose:
    """Falconi et al.'s mass-ROI augmentation (paper Table 5), applied in the table's order.

    Paper numbers (operation, probability):

    * rotation ``U(-15, 15)`` deg, p = 0.95;
    * shear up to 25 deg on one randomly chosen axis, p = 0.6 (MONAI shear coefficient ``±tan(25°)``);
    * histogram equalisation to ``value_range`` (MONAI's ``HistogramNormalized``, 256 bins), p = 0.6;
    * horizontal flip, p = 0.7;
    * brightness factor ``U(0.6, 1.2)``, p = 0.8 (``RandScaleIntensityd(factors=(-0.4, 0.2))``),
      then clipped to ``value_range`` as 8-bit images saturate;
    * zoom ``U(1.0, 1.2)`` (same factor on both axes, centre crop back to size), p = 1.0.

    Images are interpolated bilinearly, masks by nearest neighbour. The paper's tool crops the
    rotated/sheared image to avoid empty corners; here the corners are filled by ``padding_mode``.

    Args:
        keys: image keys (``(C, H, W)`` ROI patches in ``value_range`` units).
        mask_keys: keys moved with the images (nearest), no intensity change.
        value_range: the images' ``(min, max)`` (uint8 PNG in the paper: 0..255).
        padding_mode: MONAI grid-sample padding of rotation and shear.

    Returns:
        The ``Compose`` of ``RandRotated``, ``OneOf`` of two one-axis shear ``RandAffined``,
        ``OneOf(HistogramNormalized, Identityd)``, ``RandFlipd``, ``RandScaleIntensityd``,
        ``ScaleIntensityRanged`` (clip), ``RandZoomd``.

    Raises:
        MammoConfigError: no image key, a key in both lists, or an empty ``value_range``.

    Example:
        >>> aug = falconi_augmentation("image").set_random_state(0)
        >>> aug({"image": torch.rand(1, 32, 32) * 255})["image"].shape
        torch.Size([1, 32, 32])
    """
    images, masks, every = _split_keys(keys, mask_keys)
    low, high = float(value_range[0]), float(value_range[1])
    if not high > low:
        raise MammoConfigError(f"value_range must be (min, max) with max > min, got {value_range}")
    modes = ("bilinear",) * len(images) + ("nearest",) * len(masks)
    zoom_modes = ("bilinear",) * len(images) + ("nearest-exact",) * len(masks)
    shear = math.tan(math.radians(FALCONI_SHEAR_DEG))
    shears = [
        RandAffined(every, prob=0.6, shear_range=axes, mode=modes, padding_mode=padding_mode)
        for axes in ((shear, 0.0), (0.0, shear))
    ]
    equalise = HistogramNormalized(images, num_bins=256, min=low, max=high)  # type: ignore[arg-type]
    return Compose(
        [
            RandRotated(
                every,
                range_x=math.radians(FALCONI_ROTATION_DEG),
                prob=0.95,
                keep_size=True,
                mode=modes,
                padding_mode=padding_mode,
            ),
            OneOf(shears),
            OneOf([equalise, Identityd(images)], weights=[0.6, 0.4]),
            RandFlipd(every, prob=0.7, spatial_axis=1),
            RandScaleIntensityd(
                images,
                factors=(FALCONI_BRIGHTNESS_RANGE[0] - 1.0, FALCONI_BRIGHTNESS_RANGE[1] - 1.0),
                prob=0.8,
            ),
            ScaleIntensityRanged(images, a_min=low, a_max=high, b_min=low, b_max=high, clip=True),
            RandZoomd(
                every,
                prob=1.0,
                min_zoom=FALCONI_ZOOM_RANGE[0],
                max_zoom=FALCONI_ZOOM_RANGE[1],
                keep_size=True,
                mode=zoom_modes,
            ),
        ]
    )
