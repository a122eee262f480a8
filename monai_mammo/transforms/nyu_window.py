"""Classifier input window of the NYU multi-view model: optimal centre, crop and crop noise.

Runs on the output of :class:`~monai_mammo.transforms.breast.CropBreast` followed by
:class:`~monai_mammo.transforms.breast.OrientBreast` (breast facing right, chest wall at
column 0), using the ``rightmost_points`` and ``bottommost_points`` that CropBreast recorded.

Optimal centre (NYU, input size H x W: CC 2677 x 1942, MLO 2974 x 1748):

- CC: ``x = rightmost_x - W // 2 - 1``; ``y`` maximises the number of foreground pixels in the
  window over every feasible centre (ties: nearest the image centre); an image shorter than the
  window gets ``y = height // 2``.
- MLO: ``b = min(bottommost_y, last foreground row of the rightmost W columns)``,
  centre ``(b - H // 2 - 1, rightmost_x - W // 2 - 1)``.

Window placement: the window is placed at the centre; when the image is smaller than the window
plus the noise margin it is zero-padded (CC: top and bottom; MLO: bottom only; x: right only),
then the window is shifted inside the padded image. :class:`RandCropNoise` adds NYU's location
and size noise and resizes (bicubic) back to the input size.

Metadata written: ``best_center`` ``(y, x)`` and ``input_window`` ``(top, bottom, left, right)``
(the cropped region, in input pixels; it may reach outside the image where zeros were padded).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import InvertibleTransform, Randomizable
from monai.utils import TraceKeys, TransformBackends, convert_to_tensor

from monai_mammo.exceptions import MammoConfigError, MammoGeometryError
from monai_mammo.transforms.breast import (
    BOTTOMMOST_POINTS_KEY,
    BREAST_THRESHOLD_KEY,
    RIGHTMOST_POINTS_KEY,
    SharedGeometryd,
    _channel_2d,
    _meta_of,
    _rank,
    _spatial_shape,
    chest_wall_side_from_meta,
    extract_window,
)

__all__ = [
    "CC_INPUT_SIZE",
    "MLO_INPUT_SIZE",
    "BEST_CENTER_KEY",
    "INPUT_WINDOW_KEY",
    "CropWindow",
    "view_kind",
    "optimal_center",
    "place_window",
    "BestCenterCrop",
    "BestCenterCropd",
    "BestCenterCropD",
    "BestCenterCropDict",
    "RandCropNoise",
    "RandCropNoised",
    "RandCropNoiseD",
    "RandCropNoiseDict",
]

CC_INPUT_SIZE = (2677, 1942)
MLO_INPUT_SIZE = (2974, 1748)
BEST_CENTER_KEY = "best_center"
INPUT_WINDOW_KEY = "input_window"

ViewKind = Literal["CC", "MLO"]

_CC_VIEWS = ("CC", "XCCL", "XCCM", "FB")
_MLO_VIEWS = ("MLO", "ML", "LM", "LMO", "SIO")


@dataclass(frozen=True)
class CropWindow:
    """A classifier input window in input pixels.

    Attributes:
        start: ``(y, x)`` of the cropped region's top-left corner (may be negative: zero padding).
        size: ``(height, width)`` of the cropped region.
        out_size: ``(height, width)`` of the output (the region is resized to it when they differ).
        center: the optimal centre ``(y, x)`` the window was placed at.
    """

    start: tuple[int, int]
    size: tuple[int, int]
    out_size: tuple[int, int]
    center: tuple[int, int]

    def as_meta(self) -> dict[str, Any]:
        """The metadata entries written by the transforms (``best_center``, ``input_window``)."""
        (y, x), (h, w) = self.start, self.size
        return {BEST_CENTER_KEY: self.center, INPUT_WINDOW_KEY: (y, y + h, x, x + w)}


def view_kind(view: Any, source: Any = None) -> ViewKind:
    """Map a view code to the NYU input kind.

    Args:
        view: view code (CC, MLO, ML, XCCL, ...), any case.
        source: image name for error messages.

    Returns:
        ``"CC"`` or ``"MLO"``.

    Raises:
        MammoGeometryError: missing or unsupported view.

    Example:
        >>> view_kind("ml")
        'MLO'
    """
    text = "" if view is None else str(view).strip().upper()
    if text in _CC_VIEWS:
        return "CC"
    if text in _MLO_VIEWS:
        return "MLO"
    raise MammoGeometryError(
        f"unsupported or missing view {view!r} for the NYU input window; expected one of "
        f"{_CC_VIEWS + _MLO_VIEWS} (or pass view= to the transform)",
        source,
    )


def optimal_center(
    image: np.ndarray,
    kind: ViewKind,
    rightmost_x: int,
    bottommost_y: int,
    size: Sequence[int],
    threshold: float = 0.0,
) -> tuple[int, int]:
    """NYU optimal centre of the classifier window on a right-facing breast crop.

    Args:
        image: 2D right-facing crop (H, W).
        kind: ``"CC"`` or ``"MLO"``.
        rightmost_x: x of ``rightmost_points`` (from CropBreast).
        bottommost_y: y of ``bottommost_points`` (from CropBreast).
        size: window ``(height, width)``.
        threshold: pixels strictly above it count as foreground (NYU: nonzero).

    Returns:
        The centre ``(y, x)``.

    Example:
        >>> img = np.zeros((100, 60)); img[10:30, :40] = 1
        >>> optimal_center(img, "CC", 39, 29, (40, 30))
        (30, 23)
    """
    height, width = image.shape
    win_h, win_w = int(size[0]), int(size[1])
    center_x = int(rightmost_x) - win_w // 2 - 1
    if kind == "MLO":
        rows = np.flatnonzero((image[:, max(width - win_w, 0) :] > threshold).any(axis=1))
        bottom = min(int(bottommost_y), int(rows[-1])) if rows.size else int(bottommost_y)
        return bottom - win_h // 2 - 1, center_x
    if height < win_h:
        return height // 2, center_x
    left = min(max(center_x - win_w // 2, 0), width)
    right = min(max(center_x - win_w // 2 + win_w, 0), width)
    row_counts = (image[:, left:right] > threshold).sum(axis=1)
    cumulative = np.concatenate(([0], np.cumsum(row_counts)))
    tops = np.arange(height - win_h + 1)
    counts = cumulative[tops + win_h] - cumulative[tops]
    centers = tops[counts == counts.max()] + win_h // 2
    return int(centers[np.argmin(np.abs(centers - height // 2))]), center_x


def place_window(
    shape: Sequence[int],
    center: Sequence[int],
    size: Sequence[int],
    kind: ViewKind,
    margin: Sequence[int] = (0, 0),
) -> tuple[tuple[int, int], int, tuple[int, int]]:
    """Place a window at ``center`` with NYU's zero-padding rules.

    The image is (virtually) zero-padded when smaller than the window plus ``margin`` on each
    side: CC in y on both sides (the odd pixel at the bottom), MLO in y at the bottom only, x on
    the right only; the window is then shifted inside the padded image.

    Args:
        shape: image ``(H, W)``.
        center: window centre ``(y, x)``.
        size: window ``(height, width)``.
        kind: ``"CC"`` or ``"MLO"``.
        margin: room for noise ``(y, x)`` required on each side.

    Returns:
        ``((top, left), pad_top, (padded_h, padded_w))``: the window corner in padded coordinates,
        the rows padded above the image, and the padded image size.

    Example:
        >>> place_window((90, 50), (45, 10), (100, 60), "CC")
        ((0, 0), 5, (100, 60))
    """
    height, width = int(shape[0]), int(shape[1])
    win_h, win_w = int(size[0]), int(size[1])
    extra_h = max(win_h + 2 * int(margin[0]) - height, 0)
    pad_top = extra_h // 2 if kind == "CC" else 0
    padded = (height + extra_h, max(width, win_w + 2 * int(margin[1])))
    top = min(max(int(center[0]) + pad_top - win_h // 2, 0), padded[0] - win_h)
    left = min(max(int(center[1]) - win_w // 2, 0), padded[1] - win_w)
    return (top, left), pad_top, padded


def _affine(rank: int, window: CropWindow) -> torch.Tensor:
    """Input-pixel affine of a window crop resized to ``out_size`` (half-pixel centres)."""
    xform = torch.eye(rank + 1, dtype=torch.float64)
    for axis in range(2):
        scale = window.size[axis] / window.out_size[axis]
        xform[axis, axis] = scale
        xform[axis, -1] = window.start[axis] + 0.5 * scale - 0.5
    return xform


def _resize(img: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bicubic resize of a (C, H, W) tensor to ``size`` (float32; identity when sizes match)."""
    if tuple(int(s) for s in img.shape[1:]) == tuple(int(s) for s in size):
        return img
    data = img.as_tensor() if isinstance(img, MetaTensor) else img
    out = F.interpolate(
        data.float()[None], size=tuple(int(s) for s in size), mode="bicubic", align_corners=False
    )[0]
    if isinstance(img, MetaTensor):
        result = MetaTensor(out)
        result.copy_meta_from(img)
        return result
    return out


def _apply_window(transform: InvertibleTransform, img: Any, window: CropWindow) -> torch.Tensor:
    """Crop (zero-filled outside), resize, trace and record ``window`` on ``img``."""
    img_t = convert_to_tensor(img, track_meta=get_track_meta())
    orig = _spatial_shape(img_t)
    out = _resize(extract_window(img_t, window.start, window.size), window.out_size)
    out = transform.push_transform(
        out,
        orig_size=orig,
        affine=_affine(_rank(img_t), window),
        extra_info={"start": list(window.start), "size": list(window.size)},
    )
    if isinstance(out, MetaTensor):
        out.meta.update(window.as_meta())
    return out


def _invert_window(transform: InvertibleTransform, img: torch.Tensor) -> torch.Tensor:
    """Undo :func:`_apply_window`: resize back and place the region in a zero image of the input size."""
    info = transform.pop_transform(img)
    extra = info[TraceKeys.EXTRA_INFO]
    start, size = tuple(int(v) for v in extra["start"]), tuple(int(v) for v in extra["size"])
    window = CropWindow(start, size, _spatial_shape(img), (0, 0))  # type: ignore[arg-type]
    out = extract_window(_resize(img, size), [-v for v in start], [int(v) for v in info[TraceKeys.ORIG_SIZE]])
    with transform.trace_transform(False):
        return transform.push_transform(out, affine=torch.linalg.inv(_affine(_rank(img), window)))


class BestCenterCrop(InvertibleTransform):
    """Crop the NYU classifier input window at the optimal centre (deterministic, no noise).

    Needs ``rightmost_points`` and ``bottommost_points`` from CropBreast in the metadata and a
    right-facing image (OrientBreast). The foreground for the centre search is pixels above the
    ``breast_threshold`` CropBreast recorded (0 by default, NYU's nonzero rule). The view comes
    from ``view`` or the metadata.

    Args:
        view: view code overriding the metadata (``"CC"``, ``"MLO"``, ...).
        cc_size: CC input size (NYU: 2677 x 1942).
        mlo_size: MLO input size (NYU: 2974 x 1748).
        channel: channel used for the centre search.

    Raises:
        MammoConfigError: invalid sizes.

    Example:
        >>> meta = {"view": "CC", "rightmost_points": ((20, 30), 39), "bottommost_points": (49, (0, 0))}
        >>> img = MetaTensor(torch.zeros(1, 100, 60), meta=meta)
        >>> out = BestCenterCrop(cc_size=(40, 30))(img)
        >>> tuple(out.shape), out.meta["best_center"]
        ((1, 40, 30), (50, 23))
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        view: str | None = None,
        cc_size: Sequence[int] = CC_INPUT_SIZE,
        mlo_size: Sequence[int] = MLO_INPUT_SIZE,
        channel: int = 0,
    ) -> None:
        sizes = {"CC": tuple(int(v) for v in cc_size), "MLO": tuple(int(v) for v in mlo_size)}
        if any(len(s) != 2 or min(s) < 1 for s in sizes.values()):
            raise MammoConfigError(f"input sizes must be two positive integers, got {sizes}")
        self.view = view
        self.sizes: dict[str, tuple[int, int]] = sizes  # type: ignore[assignment]
        self.channel = channel

    def compute_center(
        self, img: Any, meta: Mapping[str, Any] | None = None
    ) -> tuple[ViewKind, tuple[int, int], tuple[int, int]]:
        """Optimal centre of ``img``.

        Args:
            img: right-facing breast crop (C, H, W) with CropBreast metadata.
            meta: metadata to use instead of ``img.meta``.

        Returns:
            ``(kind, (y, x), (height, width))``: view kind, centre and input size.

        Raises:
            MammoGeometryError: missing CropBreast metadata, unknown view, or an image whose chest
                wall is on the right according to its metadata (apply OrientBreast first).
        """
        meta = _meta_of(img) if meta is None else dict(meta)
        source = meta.get("filename_or_obj")
        _spatial_shape(img)
        kind = view_kind(self.view if self.view is not None else meta.get("view"), source)
        if meta.get(RIGHTMOST_POINTS_KEY) is None or meta.get(BOTTOMMOST_POINTS_KEY) is None:
            raise MammoGeometryError(
                "the NYU input window needs rightmost_points and bottommost_points in the metadata: "
                "apply CropBreast (then OrientBreast) first",
                source,
            )
        if chest_wall_side_from_meta(meta) == "right":
            raise MammoGeometryError(
                "the breast faces left (chest wall on the right); apply OrientBreast first", source
            )
        size = self.sizes[kind]
        center = optimal_center(
            _channel_2d(img, self.channel),
            kind,
            int(meta[RIGHTMOST_POINTS_KEY][1]),
            int(meta[BOTTOMMOST_POINTS_KEY][0]),
            size,
            float(meta.get(BREAST_THRESHOLD_KEY, 0.0)),
        )
        return kind, center, size

    def compute_window(self, img: Any, meta: Mapping[str, Any] | None = None) -> CropWindow:
        """The input window of ``img`` (optimal centre, NYU padding rules, no noise).

        Args:
            img: right-facing breast crop (C, H, W) with CropBreast metadata.
            meta: metadata to use instead of ``img.meta``.

        Returns:
            The :class:`CropWindow`.

        Raises:
            MammoGeometryError: see :meth:`compute_center`.
        """
        kind, center, size = self.compute_center(img, meta)
        (top, left), pad_top, _ = place_window(_spatial_shape(img), center, size, kind)
        return CropWindow((top - pad_top, left), size, size, center)

    def apply_window(self, img: Any, window: CropWindow) -> torch.Tensor:
        """Crop ``img`` (image, mask, heatmap of the same size) to ``window``.

        Args:
            img: channel-first image (C, H, W).
            window: from :meth:`compute_window`.

        Returns:
            The window (zero where it leaves the image).
        """
        return _apply_window(self, img, window)

    def __call__(self, img: Any) -> torch.Tensor:
        """Crop the input window of ``img``.

        Args:
            img: right-facing breast crop (C, H, W) with CropBreast metadata.

        Returns:
            The input window, with ``best_center`` and ``input_window`` in its metadata.

        Raises:
            MammoGeometryError: see :meth:`compute_center`.
        """
        return self.apply_window(img, self.compute_window(img))

    def inverse(self, data: torch.Tensor) -> torch.Tensor:
        """Put the window back in a zero image of the input size.

        Args:
            data: output of this transform.

        Returns:
            The image in the input geometry.
        """
        return _invert_window(self, data)


class BestCenterCropd(SharedGeometryd):
    """Dictionary version of :class:`BestCenterCrop`: one window for several keys.

    Args:
        keys: keys to crop (image, masks, heatmaps of the same size).
        source_key: key whose image/metadata defines the window (default: first of ``keys``).
        view: see :class:`BestCenterCrop`.
        cc_size: see :class:`BestCenterCrop`.
        mlo_size: see :class:`BestCenterCrop`.
        channel: see :class:`BestCenterCrop`.
        allow_missing_keys: skip missing keys instead of raising.

    Example:
        >>> meta = {"view": "CC", "rightmost_points": ((20, 30), 39), "bottommost_points": (49, (0, 0))}
        >>> d = {"image": MetaTensor(torch.zeros(1, 100, 60), meta=meta), "mask": torch.zeros(1, 100, 60)}
        >>> tuple(BestCenterCropd(["image", "mask"], cc_size=(40, 30))(d)["mask"].shape)
        (1, 40, 30)
    """

    backend = BestCenterCrop.backend

    transform: BestCenterCrop

    def __init__(
        self,
        keys: KeysCollection,
        source_key: str | None = None,
        view: str | None = None,
        cc_size: Sequence[int] = CC_INPUT_SIZE,
        mlo_size: Sequence[int] = MLO_INPUT_SIZE,
        channel: int = 0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, source_key, allow_missing_keys)
        self.transform = BestCenterCrop(view, cc_size, mlo_size, channel)

    def compute(self, img: Any, meta: Mapping[str, Any]) -> CropWindow:
        return self.transform.compute_window(img, meta)

    def apply(self, img: Any, geometry: CropWindow) -> torch.Tensor:
        return self.transform.apply_window(img, geometry)


class RandCropNoise(Randomizable, InvertibleTransform):
    """NYU training/test-time crop: optimal-centre window with location and size noise.

    The window of :class:`BestCenterCrop` (placed with a margin of ``max_crop_noise +
    max_crop_size_noise`` per side, zero padding by NYU's rules) is moved by ``U(-1, 1) *
    max_crop_noise`` pixels per axis (towards the image when the window touches a border, and
    clipped to the room left), then each border moves by ``U(-1, 1)`` times
    ``min(max_crop_size_noise, margins)`` on the long axis and that amount scaled by W/H on the
    short one; the region is resized (bicubic, float32) back to the input size. Six uniforms are
    drawn per call from ``self.R`` (location y, x, then top, bottom, left, right).

    Args:
        max_crop_noise: maximal location noise ``(y, x)`` in pixels (NYU: 100, 100).
        max_crop_size_noise: maximal size noise per border in pixels (NYU: 100).
        view: see :class:`BestCenterCrop`.
        cc_size: see :class:`BestCenterCrop`.
        mlo_size: see :class:`BestCenterCrop`.
        channel: see :class:`BestCenterCrop`.

    Raises:
        MammoConfigError: negative noise or invalid sizes.

    Example:
        >>> meta = {"view": "CC", "rightmost_points": ((20, 30), 39), "bottommost_points": (49, (0, 0))}
        >>> img = MetaTensor(torch.rand(1, 100, 60), meta=meta)
        >>> crop = RandCropNoise((5, 5), 5, cc_size=(40, 30)).set_random_state(0)
        >>> tuple(crop(img).shape)
        (1, 40, 30)
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        max_crop_noise: Sequence[int] = (100, 100),
        max_crop_size_noise: int = 100,
        view: str | None = None,
        cc_size: Sequence[int] = CC_INPUT_SIZE,
        mlo_size: Sequence[int] = MLO_INPUT_SIZE,
        channel: int = 0,
    ) -> None:
        noise = tuple(int(v) for v in max_crop_noise)
        if len(noise) != 2 or min(noise) < 0 or max_crop_size_noise < 0:
            raise MammoConfigError(
                f"crop noise must be >= 0: max_crop_noise={max_crop_noise}, max_crop_size_noise={max_crop_size_noise}"
            )
        self.max_crop_noise: tuple[int, int] = noise  # type: ignore[assignment]
        self.max_crop_size_noise = int(max_crop_size_noise)
        self.centerer = BestCenterCrop(view, cc_size, mlo_size, channel)
        self._location = np.zeros(2)
        self._size = np.zeros(4)

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> RandCropNoise:
        """Seed the noise.

        Args:
            seed: seed of a new RandomState.
            state: a RandomState to use instead.

        Returns:
            self.
        """
        super().set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        """Draw the location (2) and size (4) noise multipliers from ``U(-1, 1)``."""
        self._location = self.R.uniform(-1.0, 1.0, size=2)
        self._size = self.R.uniform(-1.0, 1.0, size=4)

    def compute_window(self, img: Any, meta: Mapping[str, Any] | None = None) -> CropWindow:
        """The noisy window of ``img`` for the current random draws (call :meth:`randomize` first).

        Args:
            img: right-facing breast crop (C, H, W) with CropBreast metadata.
            meta: metadata to use instead of ``img.meta``.

        Returns:
            The :class:`CropWindow` (``size`` differs from ``out_size`` by the size noise).

        Raises:
            MammoGeometryError: see :meth:`BestCenterCrop.compute_center`.
        """
        kind, center, (win_h, win_w) = self.centerer.compute_center(img, meta)
        margin = [n + self.max_crop_size_noise for n in self.max_crop_noise]
        (top, left), pad_top, (padded_h, padded_w) = place_window(
            _spatial_shape(img), center, (win_h, win_w), kind, margin
        )
        location = self._location.copy()
        for axis, (corner, length, extent) in enumerate(((top, win_h, padded_h), (left, win_w, padded_w))):
            if corner == 0:
                location[axis] = abs(location[axis])
            elif corner + length == extent:
                location[axis] = -abs(location[axis])
        top += int(np.clip(np.round(location[0] * self.max_crop_noise[0]), -top, padded_h - win_h - top))
        left += int(np.clip(np.round(location[1] * self.max_crop_noise[1]), -left, padded_w - win_w - left))
        room = min(self.max_crop_size_noise, top, padded_h - win_h - top, left, padded_w - win_w - left)
        if win_h >= win_w:
            noise_y, noise_x = float(room), float(np.round(room * win_w / win_h))
        else:
            noise_y, noise_x = float(np.round(room * win_h / win_w)), float(room)
        dt, db, dl, dr = (
            int(np.round(a * m)) for a, m in zip(self._size, (noise_y, noise_y, noise_x, noise_x))
        )
        start = (top + dt - pad_top, left + dl)
        size = (win_h + db - dt, win_w + dr - dl)
        return CropWindow(start, size, (win_h, win_w), center)

    def apply_window(self, img: Any, window: CropWindow) -> torch.Tensor:
        """Crop ``img`` to ``window`` and resize it to the input size (same as other keys).

        Args:
            img: channel-first image (C, H, W): image, mask or heatmaps.
            window: from :meth:`compute_window`.

        Returns:
            The resized window (float32 when resized).
        """
        return _apply_window(self, img, window)

    def __call__(self, img: Any, randomize: bool = True) -> torch.Tensor:
        """Crop a noisy input window of ``img``.

        Args:
            img: right-facing breast crop (C, H, W) with CropBreast metadata; extra channels
                (heatmaps) are cropped with the image.
            randomize: draw new noise (False reuses the last draw).

        Returns:
            The input-size window, with ``best_center`` and ``input_window`` in its metadata.

        Raises:
            MammoGeometryError: see :meth:`BestCenterCrop.compute_center`.
        """
        if randomize:
            self.randomize()
        return self.apply_window(img, self.compute_window(img))

    def inverse(self, data: torch.Tensor) -> torch.Tensor:
        """Resize back and place the region in a zero image of the input size (approximate: resampled).

        Args:
            data: output of this transform.

        Returns:
            The image in the input geometry.
        """
        return _invert_window(self, data)


class RandCropNoised(Randomizable, SharedGeometryd):
    """Dictionary version of :class:`RandCropNoise`: one random window for image and heatmap keys.

    Args:
        keys: keys to crop (image, heatmaps, masks of the same size).
        source_key: key whose image/metadata defines the window (default: first of ``keys``).
        max_crop_noise: see :class:`RandCropNoise`.
        max_crop_size_noise: see :class:`RandCropNoise`.
        view: see :class:`BestCenterCrop`.
        cc_size: see :class:`BestCenterCrop`.
        mlo_size: see :class:`BestCenterCrop`.
        channel: see :class:`BestCenterCrop`.
        allow_missing_keys: skip missing keys instead of raising.

    Example:
        >>> meta = {"view": "CC", "rightmost_points": ((20, 30), 39), "bottommost_points": (49, (0, 0))}
        >>> d = {"image": MetaTensor(torch.rand(1, 100, 60), meta=meta), "heatmaps": torch.rand(2, 100, 60)}
        >>> crop = RandCropNoised(["image", "heatmaps"], max_crop_noise=(5, 5), max_crop_size_noise=5, cc_size=(40, 30))
        >>> tuple(crop.set_random_state(0)(d)["heatmaps"].shape)
        (2, 40, 30)
    """

    backend = RandCropNoise.backend

    transform: RandCropNoise

    def __init__(
        self,
        keys: KeysCollection,
        source_key: str | None = None,
        max_crop_noise: Sequence[int] = (100, 100),
        max_crop_size_noise: int = 100,
        view: str | None = None,
        cc_size: Sequence[int] = CC_INPUT_SIZE,
        mlo_size: Sequence[int] = MLO_INPUT_SIZE,
        channel: int = 0,
        allow_missing_keys: bool = False,
    ) -> None:
        SharedGeometryd.__init__(self, keys, source_key, allow_missing_keys)
        self.transform = RandCropNoise(max_crop_noise, max_crop_size_noise, view, cc_size, mlo_size, channel)

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> RandCropNoised:
        """Seed this transform and its inner :class:`RandCropNoise`.

        Args:
            seed: seed of a new RandomState.
            state: a RandomState to use instead.

        Returns:
            self.
        """
        super().set_random_state(seed, state)
        self.transform.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        """Draw the noise of the next call (delegated to the inner cropper)."""
        self.transform.randomize(data)

    def __call__(self, data: Mapping[Any, Any]) -> dict[Hashable, Any]:
        """Crop every key to one random window of the source key (resized back to the input size).

        Args:
            data: sample dict.

        Returns:
            A new dict with the cropped, resized entries.
        """
        self.randomize()
        return super().__call__(data)

    def compute(self, img: Any, meta: Mapping[str, Any]) -> CropWindow:
        return self.transform.compute_window(img, meta)

    def apply(self, img: Any, geometry: CropWindow) -> torch.Tensor:
        return self.transform.apply_window(img, geometry)


BestCenterCropD = BestCenterCropDict = BestCenterCropd
RandCropNoiseD = RandCropNoiseDict = RandCropNoised
