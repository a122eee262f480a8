"""Falconi et al.'s mass ROI preprocessing as small composable MONAI transforms.

The pipeline (:func:`mass_roi_pipeline`) applied to a full mammogram and its mass mask::

    full image min-max -> uint8           MinMaxToUint8 (MONAI ScaleIntensity + rounding)
    CLAHE (clip 2.0, 8 x 8 tiles)          CLAHE (OpenCV)
    ROI = bounding box of the mass mask    BoundingBoxROI
    keep 0.4 <= w/h <= 1.5                 AspectRatioFilter (MammoSkip reason "aspect_ratio")
    second min-max on the ROI -> uint8     MinMaxToUint8
    resize to 328 x 328                    ResizeAreaCubic (cubic up, area down; OpenCV)
    centre crop 320 x 320                  MONAI CenterSpatialCrop
    fast non-local-means denoising         NLMeansDenoise (OpenCV)
    -> float32 in [0, 1]                   MONAI ScaleIntensityRange (or uint8 kept)

The paper does not give the denoising strength; ``h`` defaults to OpenCV's 3.0. The aspect
ratio is checked before the second normalisation (same output, earlier exit).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.data.utils import to_affine_nd
from monai.transforms import (
    CenterSpatialCropd,
    Compose,
    Crop,
    MapTransform,
    ScaleIntensity,
    ScaleIntensityRanged,
    Transform,
)
from monai.transforms.utils import scale_affine
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

from monai_mammo.data.schema import FINDINGS_KEY, IMAGE_KEY
from monai_mammo.exceptions import MammoConfigError, MammoDataError, MammoError, MammoSkip
from monai_mammo.transforms.patches import _loaded_mask

__all__ = [
    "MinMaxToUint8",
    "MinMaxToUint8d",
    "CLAHE",
    "CLAHEd",
    "BoundingBoxROI",
    "BoundingBoxROId",
    "AspectRatioFilter",
    "AspectRatioFilterd",
    "ResizeAreaCubic",
    "ResizeAreaCubicd",
    "NLMeansDenoise",
    "NLMeansDenoised",
    "SkipAwareCompose",
    "mass_roi_pipeline",
    "MinMaxToUint8D",
    "MinMaxToUint8Dict",
    "CLAHED",
    "CLAHEDict",
    "BoundingBoxROID",
    "BoundingBoxROIDict",
    "AspectRatioFilterD",
    "AspectRatioFilterDict",
    "ResizeAreaCubicD",
    "ResizeAreaCubicDict",
    "NLMeansDenoiseD",
    "NLMeansDenoiseDict",
]


def _source(img: Any) -> str | None:
    if isinstance(img, MetaTensor) and img.meta.get("filename_or_obj") is not None:
        return str(img.meta["filename_or_obj"])
    return None


def _to_numpy(img: NdarrayOrTensor) -> np.ndarray:
    if isinstance(img, MetaTensor):
        img = img.as_tensor()
    return img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)


def _per_channel(img: NdarrayOrTensor, fn: Any) -> NdarrayOrTensor:
    """Apply ``fn`` (2-D array -> 2-D array) to every channel, keeping the input's type and metadata."""
    arr = _to_numpy(img)
    out = np.stack([fn(np.ascontiguousarray(ch)) for ch in arr])
    return convert_to_dst_type(out, img, dtype=out.dtype)[0]


def _require_pixels(img: NdarrayOrTensor, what: str) -> None:
    """Reject an image without pixels or with NaN/inf values (OpenCV and min-max would crash or spread them)."""
    if 0 in tuple(img.shape[-2:]):
        raise MammoDataError(f"{what} got an empty image of shape {tuple(img.shape)}", _source(img))
    data = img if isinstance(img, torch.Tensor) else torch.as_tensor(np.asarray(img))
    if data.is_floating_point() and not bool(torch.isfinite(data).all()):
        raise MammoDataError(f"{what} got NaN/inf pixel values", _source(img))


def _require_uint8(img: NdarrayOrTensor, what: str, allow_uint16: bool = False) -> None:
    dtype = str(img.dtype).replace("torch.", "")
    allowed = ("uint8", "uint16") if allow_uint16 else ("uint8",)
    if dtype not in allowed:
        raise MammoDataError(
            f"{what} needs {' or '.join(allowed)} input, got {dtype}; apply MinMaxToUint8 first", _source(img)
        )


class MinMaxToUint8(Transform):
    """Min-max normalise to [0, 255] and round to uint8 (MONAI :class:`ScaleIntensity` + cast).

    A constant image becomes all zeros.

    Raises:
        MammoDataError: (on call) an empty image or NaN/inf values (naming ``filename_or_obj``).

    Example:
        >>> MinMaxToUint8()(np.array([[[0.0, 2.0, 4.0]]])).tolist()
        [[[0, 128, 255]]]
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self) -> None:
        self._scale = ScaleIntensity(minv=0.0, maxv=255.0, dtype=np.float32)

    def __call__(self, img: NdarrayOrTensor) -> torch.Tensor:
        """Args:
            img: channel-first image.

        Returns:
            the uint8 image (a MetaTensor keeping the metadata when tracked).
        """
        _require_pixels(img, "MinMaxToUint8")
        scaled = convert_to_tensor(self._scale(img), track_meta=get_track_meta())
        return torch.round(scaled).clamp_(0, 255).to(torch.uint8)


class CLAHE(Transform):
    """Contrast limited adaptive histogram equalisation (OpenCV), channel by channel.

    Args:
        clip_limit: OpenCV contrast limit.
        tile_grid_size: tiles ``(rows, columns)``.

    Raises:
        MammoConfigError: non-positive parameters.
        MammoDataError: (on call) input is not uint8 / uint16, or an empty image.

    Example:
        >>> out = CLAHE(clip_limit=2.0)(MinMaxToUint8()(np.random.rand(1, 64, 64)))
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, clip_limit: float = 2.0, tile_grid_size: Sequence[int] = (8, 8)) -> None:
        if clip_limit <= 0 or len(tile_grid_size) != 2 or min(tile_grid_size) < 1:
            raise MammoConfigError(f"invalid CLAHE parameters {clip_limit}, {tile_grid_size}")
        self.clip_limit = float(clip_limit)
        self.tile_grid_size = (int(tile_grid_size[0]), int(tile_grid_size[1]))

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Args:
            img: channel-first uint8 or uint16 image.

        Returns:
            the equalised image, same type and dtype.
        """
        _require_uint8(img, "CLAHE", allow_uint16=True)
        _require_pixels(img, "CLAHE")
        # OpenCV's tile grid is (columns, rows)
        clahe = cv2.createCLAHE(clipLimit=self.clip_limit, tileGridSize=self.tile_grid_size[::-1])
        return _per_channel(img, clahe.apply)


class BoundingBoxROI(Crop):
    """Crop an image to the bounding box of a mask (or to a given box); invertible like MONAI's crops.

    The output's metadata records ``roi_box`` ``[y0, x0, y1, x1]`` (half-open, source pixels).

    Raises:
        MammoSkip: (reason ``empty_mask``) the mask is empty.
        MammoDataError: no mask or box, or the mask's size differs from the image.

    Example:
        >>> mask = np.zeros((1, 8, 8), bool); mask[0, 2:5, 3:7] = True
        >>> BoundingBoxROI()(np.ones((1, 8, 8)), mask).shape
        torch.Size([1, 3, 4])
    """

    @staticmethod
    def compute_box(
        spatial_shape: Sequence[int],
        mask: NdarrayOrTensor | None = None,
        box: Sequence[int] | None = None,
        source: str | None = None,
    ) -> tuple[int, int, int, int]:
        """The ROI box ``(y0, x0, y1, x1)``: the mask's bounding box, else ``box``.

        Args:
            spatial_shape: image size ``(H, W)``.
            mask: (1, H, W) or (H, W) mask.
            box: ``[y0, x0, y1, x1]`` used when ``mask`` is None.
            source: file name for error messages.

        Returns:
            the half-open box in image pixels.
        """
        if mask is not None:
            arr = _to_numpy(mask)
            plane = arr.reshape(arr.shape[-2:]) if arr.ndim == 3 and arr.shape[0] == 1 else arr
            if plane.shape != tuple(spatial_shape[-2:]):
                raise MammoDataError(
                    f"mask shape {arr.shape} differs from image {tuple(spatial_shape)}", source
                )
            rows = np.flatnonzero(plane.any(axis=1))
            cols = np.flatnonzero(plane.any(axis=0))
            if rows.size == 0:
                raise MammoSkip("empty mass mask: no ROI", source, reason="empty_mask")
            return (int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)
        if box is None:
            raise MammoDataError("BoundingBoxROI needs a mask or a box", source)
        y0, x0, y1, x1 = (int(v) for v in box)
        return (y0, x0, y1, x1)

    def __call__(  # type: ignore[override]
        self, img: NdarrayOrTensor, mask: NdarrayOrTensor | None = None, box: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Args:
            img: channel-first (C, H, W) image.
            mask: (1, H, W) or (H, W) mask (its nonzero pixels' bounding box is used).
            box: ``[y0, x0, y1, x1]`` used when ``mask`` is None.

        Returns:
            the ROI crop.
        """
        y0, x0, y1, x1 = self.compute_box(img.shape[-2:], mask, box, _source(img))
        out = super().__call__(img, (slice(y0, y1), slice(x0, x1)))  # type: ignore[arg-type]
        if isinstance(out, MetaTensor):
            out.meta["roi_box"] = [y0, x0, y1, x1]
        return out


class AspectRatioFilter(Transform):
    """Exclude images whose aspect ratio ``w / h`` is outside ``[min_ratio, max_ratio]``.

    Records ``aspect_ratio`` in the metadata of the (unchanged) image.

    Args:
        min_ratio: smallest accepted ``w / h``.
        max_ratio: largest accepted ``w / h``.

    Raises:
        MammoSkip: (reason ``aspect_ratio``, on call) the ratio is outside the range.

    Example:
        >>> AspectRatioFilter()(np.zeros((1, 100, 60))).shape
        torch.Size([1, 100, 60])
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, min_ratio: float = 0.4, max_ratio: float = 1.5) -> None:
        if not 0 < min_ratio <= max_ratio:
            raise MammoConfigError(f"invalid aspect ratio range [{min_ratio}, {max_ratio}]")
        self.min_ratio = float(min_ratio)
        self.max_ratio = float(max_ratio)

    def __call__(self, img: NdarrayOrTensor) -> torch.Tensor:
        """Args:
            img: channel-first (C, H, W) image.

        Returns:
            the image (a MetaTensor with ``aspect_ratio`` when tracked).
        """
        h, w = (int(s) for s in img.shape[-2:])
        ratio = w / h if h else float("inf")
        if not self.min_ratio <= ratio <= self.max_ratio:
            raise MammoSkip(
                f"ROI aspect ratio w/h = {w}/{h} = {ratio:.3f} outside [{self.min_ratio}, {self.max_ratio}]",
                _source(img),
                reason="aspect_ratio",
            )
        out = convert_to_tensor(img, track_meta=get_track_meta())
        if isinstance(out, MetaTensor):
            out.meta["aspect_ratio"] = ratio
        return out


class ResizeAreaCubic(Transform):
    """Resize with OpenCV: bicubic when enlarging, area averaging when shrinking.

    Enlarging means the output has more pixels than the input (``h' * w' > h * w``). The
    chosen ``interpolation`` (``"cubic"`` / ``"area"``) is recorded in the metadata and the
    affine is scaled like MONAI's ``Resize``.

    Args:
        spatial_size: output ``(h, w)`` or one int for a square.

    Raises:
        MammoConfigError: a non-positive size.
        MammoDataError: (on call) an empty image or NaN/inf values.

    Example:
        >>> ResizeAreaCubic(328)(np.zeros((1, 100, 120), np.uint8)).shape
        torch.Size([1, 328, 328])
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, spatial_size: int | Sequence[int] = 328) -> None:
        size = (
            (int(spatial_size),) * 2 if isinstance(spatial_size, (int, np.integer)) else tuple(spatial_size)
        )
        if len(size) != 2 or min(size) < 1:
            raise MammoConfigError(f"spatial_size must be a positive int or (h, w), got {spatial_size!r}")
        self.spatial_size = (int(size[0]), int(size[1]))

    def __call__(self, img: NdarrayOrTensor) -> torch.Tensor:
        """Args:
            img: channel-first (C, H, W) image.

        Returns:
            the resized image (tensor; MetaTensor with updated affine when tracked).
        """
        _require_pixels(img, "ResizeAreaCubic")
        in_size = (int(img.shape[-2]), int(img.shape[-1]))
        oh, ow = self.spatial_size
        upsampling = oh * ow > in_size[0] * in_size[1]
        flag = cv2.INTER_CUBIC if upsampling else cv2.INTER_AREA
        arr = _to_numpy(img)
        out = np.stack([cv2.resize(np.ascontiguousarray(ch), (ow, oh), interpolation=flag) for ch in arr])
        img_t = convert_to_tensor(img, track_meta=get_track_meta())
        if not isinstance(img_t, MetaTensor):
            return torch.as_tensor(out)
        scale = scale_affine(in_size, self.spatial_size)
        affine = img_t.affine @ to_affine_nd(
            img_t.affine.shape[0] - 1, torch.as_tensor(scale, dtype=torch.float64)
        )
        meta = {k: v for k, v in img_t.meta.items() if k != "affine"}
        meta["interpolation"] = "cubic" if upsampling else "area"
        return MetaTensor(torch.as_tensor(out), affine=affine, meta=meta)


class NLMeansDenoise(Transform):
    """OpenCV fast non-local-means denoising (``cv2.fastNlMeansDenoising``), channel by channel.

    Args:
        h: filter strength (OpenCV's default 3.0; larger removes more noise and detail).
        template_window_size: odd patch size.
        search_window_size: odd search window size.

    Raises:
        MammoDataError: (on call) input is not uint8, or an empty image.

    Example:
        >>> out = NLMeansDenoise(h=10)(np.random.randint(0, 255, (1, 32, 32), dtype=np.uint8))
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, h: float = 3.0, template_window_size: int = 7, search_window_size: int = 21) -> None:
        if h <= 0 or template_window_size % 2 == 0 or search_window_size % 2 == 0:
            raise MammoConfigError("h must be > 0 and the window sizes odd")
        self.h = float(h)
        self.template_window_size = int(template_window_size)
        self.search_window_size = int(search_window_size)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Args:
            img: channel-first uint8 image.

        Returns:
            the denoised image, same type and dtype.
        """
        _require_uint8(img, "NLMeansDenoise")
        _require_pixels(img, "NLMeansDenoise")
        return _per_channel(
            img,
            lambda ch: cv2.fastNlMeansDenoising(
                ch, None, self.h, self.template_window_size, self.search_window_size
            ),
        )


class _KeysWrapper(MapTransform):
    """Apply one array transform to every key."""

    transform: Transform

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


class MinMaxToUint8d(_KeysWrapper):
    """Dictionary version of :class:`MinMaxToUint8`.

    Args:
        keys: keys to normalise.
        allow_missing_keys: don't raise for missing keys.
    """

    backend = MinMaxToUint8.backend

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = MinMaxToUint8()


class CLAHEd(_KeysWrapper):
    """Dictionary version of :class:`CLAHE`.

    Args:
        keys: keys to equalise.
        clip_limit: OpenCV contrast limit.
        tile_grid_size: tiles ``(rows, columns)``.
        allow_missing_keys: don't raise for missing keys.
    """

    backend = CLAHE.backend

    def __init__(
        self,
        keys: KeysCollection,
        clip_limit: float = 2.0,
        tile_grid_size: Sequence[int] = (8, 8),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = CLAHE(clip_limit, tile_grid_size)


class AspectRatioFilterd(_KeysWrapper):
    """Dictionary version of :class:`AspectRatioFilter`.

    Args:
        keys: keys to check.
        min_ratio: smallest accepted ``w / h``.
        max_ratio: largest accepted ``w / h``.
        allow_missing_keys: don't raise for missing keys.
    """

    backend = AspectRatioFilter.backend

    def __init__(
        self,
        keys: KeysCollection,
        min_ratio: float = 0.4,
        max_ratio: float = 1.5,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = AspectRatioFilter(min_ratio, max_ratio)


class ResizeAreaCubicd(_KeysWrapper):
    """Dictionary version of :class:`ResizeAreaCubic`.

    Args:
        keys: keys to resize.
        spatial_size: output ``(h, w)`` or one int.
        allow_missing_keys: don't raise for missing keys.
    """

    backend = ResizeAreaCubic.backend

    def __init__(
        self, keys: KeysCollection, spatial_size: int | Sequence[int] = 328, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = ResizeAreaCubic(spatial_size)


class NLMeansDenoised(_KeysWrapper):
    """Dictionary version of :class:`NLMeansDenoise`.

    Args:
        keys: keys to denoise.
        h: filter strength.
        template_window_size: odd patch size.
        search_window_size: odd search window size.
        allow_missing_keys: don't raise for missing keys.
    """

    backend = NLMeansDenoise.backend

    def __init__(
        self,
        keys: KeysCollection,
        h: float = 3.0,
        template_window_size: int = 7,
        search_window_size: int = 21,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = NLMeansDenoise(h, template_window_size, search_window_size)


class BoundingBoxROId(MapTransform):
    """Dictionary version of :class:`BoundingBoxROI`.

    The box comes from ``data[mask_key]`` when ``mask_key`` is set, else from finding
    ``finding_index`` of ``data[findings_key]`` (its loaded ``mask``, else its ``bbox``).
    Every key is cropped with the same box (the mask key too, when listed in ``keys``).

    Args:
        keys: keys to crop.
        mask_key: key of an image-sized mask.
        findings_key: key of the findings list (used when ``mask_key`` is None).
        finding_index: which finding.
        allow_missing_keys: don't raise for missing keys.

    Raises:
        MammoSkip: (reason ``empty_mask``) the mask is empty.
        MammoDataError: no mask, box or finding.
    """

    backend = BoundingBoxROI.backend

    def __init__(
        self,
        keys: KeysCollection,
        mask_key: str | None = None,
        findings_key: str = FINDINGS_KEY,
        finding_index: int = 0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_key = mask_key
        self.findings_key = findings_key
        self.finding_index = finding_index
        self.cropper = BoundingBoxROI()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return d
        source = _source(d[keys[0]])
        mask: Any = None
        box = None
        if self.mask_key is not None:
            if self.mask_key not in d:
                raise MammoDataError(f"no mask under key {self.mask_key!r}", source)
            mask = d[self.mask_key]
        else:
            findings = d.get(self.findings_key) or []
            if not -len(findings) <= self.finding_index < len(findings):
                raise MammoDataError(
                    f"no finding {self.finding_index} (the image has {len(findings)})", source
                )
            finding = findings[self.finding_index]
            mask = _loaded_mask(finding, source)
            box = finding.get("bbox")
        roi_box = self.cropper.compute_box(d[keys[0]].shape[-2:], mask, box, source)
        for key in keys:
            d[key] = self.cropper(d[key], box=roi_box)
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Pad every key back to its size before the crop."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.cropper.inverse(d[key])
        return d


class SkipAwareCompose(Compose):
    """A MONAI :class:`Compose` that re-raises the project's errors instead of MONAI's wrapper.

    ``Compose`` wraps an exception raised inside a transform in a ``RuntimeError``; this
    subclass re-raises the original :class:`~monai_mammo.exceptions.MammoError` (e.g. a
    :class:`MammoSkip` with its ``reason``) so that callers can count skips.
    """

    def __call__(
        self,
        input_: Any,
        start: int = 0,
        end: int | None = None,
        threading: bool = False,
        lazy: bool | None = None,
    ) -> Any:
        try:
            return super().__call__(input_, start=start, end=end, threading=threading, lazy=lazy)
        except RuntimeError as exc:
            cause: BaseException | None = exc
            while cause is not None and not isinstance(cause, MammoError):
                cause = cause.__cause__
            if cause is None:
                raise
            raise cause from exc


def mass_roi_pipeline(
    keys: KeysCollection = IMAGE_KEY,
    mask_key: str | None = None,
    findings_key: str = FINDINGS_KEY,
    finding_index: int = 0,
    clip_limit: float = 2.0,
    tile_grid_size: Sequence[int] = (8, 8),
    min_aspect: float = 0.4,
    max_aspect: float = 1.5,
    resize_size: int = 328,
    crop_size: int = 320,
    nlm_h: float = 3.0,
    output_uint8: bool = False,
) -> SkipAwareCompose:
    """Falconi et al.'s mass ROI preprocessing as a dictionary pipeline.

    Args:
        keys: image key(s) (the ROI box comes from the mask, see :class:`BoundingBoxROId`).
        mask_key: key of the image-sized mass mask; None: the finding's mask or bbox.
        findings_key: key of the findings list.
        finding_index: which finding.
        clip_limit: CLAHE contrast limit.
        tile_grid_size: CLAHE tiles.
        min_aspect: smallest accepted ROI ``w / h``.
        max_aspect: largest accepted ROI ``w / h``.
        resize_size: square size the ROI is resized to.
        crop_size: square centre crop after the resize.
        nlm_h: non-local-means filter strength.
        output_uint8: keep uint8 [0, 255] instead of float32 [0, 1].

    Returns:
        the pipeline; the output image is (C, crop_size, crop_size) with ``roi_box``,
        ``aspect_ratio`` and ``interpolation`` in its metadata.

    Raises:
        MammoSkip: (on call; reason ``aspect_ratio`` or ``empty_mask``) the ROI is excluded.

    Example:
        >>> pipeline = mass_roi_pipeline(keys="image", mask_key="mask")
        >>> out = pipeline({"image": image, "mask": mask})  # doctest: +SKIP
        >>> out["image"].shape, out["image"].dtype  # doctest: +SKIP
        (torch.Size([1, 320, 320]), torch.float32)
    """
    steps: list[Any] = [
        MinMaxToUint8d(keys),
        CLAHEd(keys, clip_limit, tile_grid_size),
        BoundingBoxROId(keys, mask_key, findings_key, finding_index),
        AspectRatioFilterd(keys, min_aspect, max_aspect),
        MinMaxToUint8d(keys),
        ResizeAreaCubicd(keys, resize_size),
        CenterSpatialCropd(keys, crop_size),
        NLMeansDenoised(keys, nlm_h),
    ]
    if not output_uint8:
        steps.append(ScaleIntensityRanged(keys, 0.0, 255.0, 0.0, 1.0, clip=True, dtype=np.float32))
    return SkipAwareCompose(steps, log_stats=False)


MinMaxToUint8D = MinMaxToUint8Dict = MinMaxToUint8d
CLAHED = CLAHEDict = CLAHEd
BoundingBoxROID = BoundingBoxROIDict = BoundingBoxROId
AspectRatioFilterD = AspectRatioFilterDict = AspectRatioFilterd
ResizeAreaCubicD = ResizeAreaCubicDict = ResizeAreaCubicd
NLMeansDenoiseD = NLMeansDenoiseDict = NLMeansDenoised
