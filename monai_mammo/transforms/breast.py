"""Breast geometry: NYU breast cropping and left-right orientation of mammograms.

:class:`CropBreast` re-implements the breast cropping of Wu et al. 2019 (NYU multi-view
classifier) from its specification: foreground mask, erosion by an L1 ball of radius 100
(the same as 100 iterations of a 3x3 cross with border value 0), largest 4-connected
component, dilation by the same ball, bounding box plus buffers. The morphology uses exact
L1 distance transforms (OpenCV), which makes a 3328 x 2560 image take tens of milliseconds.
A robust ``"otsu"`` foreground mode handles images whose background is not exactly zero.

:class:`OrientBreast` flips images left-right so that every breast faces the same way (chest
wall at column 0 by default, the NYU "right-facing" convention) and records ``flipped_lr``.

Orientation convention (NYU): with ``horizontal_flip == "NO"`` the chest wall of an L image
is on the image's left edge and that of an R image on its right edge; ``"YES"`` swaps this.
A ``flipped_lr`` flag in the metadata (written by :class:`OrientBreast`) swaps it again.

Metadata written by :class:`CropBreast` (coordinates relative to the crop, mirrored so the
breast faces right when its chest wall is on the right, as NYU records them):

- ``window_location``: ``(top, bottom, left, right)`` of the crop in input pixels (end exclusive)
- ``rightmost_points``: ``((y_first, y_last), x)``, nipple-side extreme in the bottom 2/3 of the crop
- ``bottommost_points``: ``(y, (x_first, x_last))``, last row of the breast mask
- ``distance_from_starting_side``: gap between the chest-wall edge of the mask and the image border
- ``breast_threshold``: the foreground threshold used (pixels strictly above it are foreground)
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import InvertibleTransform, MapTransform
from monai.transforms.utils import create_translate
from monai.utils import TraceKeys, TransformBackends, convert_to_tensor

from monai_mammo.exceptions import MammoConfigError, MammoDataError, MammoGeometryError

__all__ = [
    "WINDOW_LOCATION_KEY",
    "RIGHTMOST_POINTS_KEY",
    "BOTTOMMOST_POINTS_KEY",
    "DISTANCE_FROM_STARTING_SIDE_KEY",
    "BREAST_THRESHOLD_KEY",
    "FLIPPED_LR_KEY",
    "BreastGeometry",
    "foreground_threshold",
    "open_largest_component",
    "chest_wall_side_from_meta",
    "find_breast",
    "extract_window",
    "SharedGeometryd",
    "CropBreast",
    "CropBreastd",
    "CropBreastD",
    "CropBreastDict",
    "OrientBreast",
    "OrientBreastd",
    "OrientBreastD",
    "OrientBreastDict",
]

WINDOW_LOCATION_KEY = "window_location"
RIGHTMOST_POINTS_KEY = "rightmost_points"
BOTTOMMOST_POINTS_KEY = "bottommost_points"
DISTANCE_FROM_STARTING_SIDE_KEY = "distance_from_starting_side"
BREAST_THRESHOLD_KEY = "breast_threshold"
FLIPPED_LR_KEY = "flipped_lr"

ForegroundMode = Literal["nyu", "otsu"]
SideSource = Literal["auto", "metadata", "pixels"]
Side = Literal["left", "right"]

_OTSU_STRIDE = 4  # subsampling used to estimate the Otsu threshold (a histogram does not need every pixel)
_OTSU_LOG_GAIN = (
    1000.0  # log1p(gain * x) on intensities scaled to [0, 1]: compresses bright frames and tissue
)
_META_FALLBACK_KEYS = ("laterality", "view", "horizontal_flip", "filename_or_obj")


@dataclass(frozen=True)
class BreastGeometry:
    """Where the breast is in an image, as found by :func:`find_breast`.

    Attributes:
        window_location: ``(top, bottom, left, right)`` of the crop in input pixels, end exclusive.
        rightmost_points: ``((y_first, y_last), x)`` in the right-facing crop.
        bottommost_points: ``(y, (x_first, x_last))`` in the right-facing crop.
        distance_from_starting_side: pixels between the chest-wall edge of the mask and the border.
        chest_wall: ``"left"`` or ``"right"``: the image side of the chest wall (input orientation).
        threshold: foreground threshold used (foreground = pixels strictly above it).
    """

    window_location: tuple[int, int, int, int]
    rightmost_points: tuple[tuple[int, int], int]
    bottommost_points: tuple[int, tuple[int, int]]
    distance_from_starting_side: int
    chest_wall: Side
    threshold: float

    def as_meta(self) -> dict[str, Any]:
        """The metadata entries that :class:`CropBreast` writes (see the module docstring)."""
        return {
            WINDOW_LOCATION_KEY: self.window_location,
            RIGHTMOST_POINTS_KEY: self.rightmost_points,
            BOTTOMMOST_POINTS_KEY: self.bottommost_points,
            DISTANCE_FROM_STARTING_SIDE_KEY: self.distance_from_starting_side,
            BREAST_THRESHOLD_KEY: self.threshold,
        }


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values``: the upper edge of the last bin of the dark class."""
    hist, edges = np.histogram(values, bins=bins)
    hist = hist.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    s0 = np.cumsum(hist * centres)
    w1 = w0[-1] - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = w0 * w1 * (s0 / w0 - (s0[-1] - s0) / w1) ** 2
    return float(edges[int(np.nanargmax(between[:-1])) + 1])


def foreground_threshold(image: np.ndarray, mode: ForegroundMode = "nyu") -> float:
    """Threshold above which a pixel belongs to the foreground (breast, markers, frame).

    Args:
        image: 2D image (H, W).
        mode: ``"nyu"``: 0, NYU's rule (a strictly zero background is assumed). ``"otsu"``: Otsu's
            threshold on log-scaled intensities clipped to the 0.5-99.5 percentiles (estimated on a
            4x subsampled image), robust to noisy, non-zero backgrounds and bright frames.

    Returns:
        The threshold in the image's intensity units.

    Raises:
        MammoConfigError: unknown mode.

    Example:
        >>> img = np.zeros((64, 64)); img[:, :20] = 1000.0
        >>> 0 < foreground_threshold(img + 5.0, "otsu") < 1000
        True
    """
    if mode == "nyu":
        return 0.0
    if mode != "otsu":
        raise MammoConfigError(f"unknown foreground mode {mode!r}; expected 'nyu' or 'otsu'")
    sample = np.asarray(image[::_OTSU_STRIDE, ::_OTSU_STRIDE], dtype=np.float64)
    lo, hi = (float(v) for v in np.percentile(sample, (0.5, 99.5)))
    if hi <= lo:
        return lo
    scaled = np.log1p(_OTSU_LOG_GAIN * (np.clip(sample, lo, hi) - lo) / (hi - lo))
    return lo + float(np.expm1(_otsu(scaled))) / _OTSU_LOG_GAIN * (hi - lo)


def _check_pixels(image: np.ndarray, source: Any) -> None:
    """Reject an empty image (no pixels) or a float image holding NaN/inf, naming ``source``."""
    if image.size == 0:
        raise MammoGeometryError(f"empty image of shape {tuple(image.shape)}: no pixels", source)
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        bad = int(image.size - np.count_nonzero(np.isfinite(image)))
        raise MammoDataError(f"{bad} non-finite (NaN/inf) pixel value(s)", source)


def open_largest_component(mask: np.ndarray, radius: int) -> tuple[tuple[int, int], np.ndarray] | None:
    """NYU morphology: erode, keep the largest 4-connected component, dilate.

    Equivalent to ``radius`` iterations of ``scipy.ndimage.binary_erosion`` with the 3x3 cross
    and ``border_value=0``, ``scipy.ndimage.label`` (4-connectivity), then ``radius`` iterations
    of ``binary_dilation``, computed with two exact L1 (taxicab) distance transforms.

    Args:
        mask: 2D boolean foreground mask.
        radius: erosion/dilation radius in pixels (L1 ball).

    Returns:
        ``((y0, x0), dilated)``: the dilated component as a boolean array covering its own bounding
        box, whose top-left corner is ``(y0, x0)`` in ``mask``; ``None`` when nothing survives erosion.

    Example:
        >>> m = np.zeros((40, 40), bool); m[5:30, 0:25] = True
        >>> (y0, x0), comp = open_largest_component(m, 3)
        >>> (y0, x0, comp.shape)
        (5, 0, (25, 25))
    """
    height, width = mask.shape
    padded = np.zeros((height + 2, width + 2), dtype=np.uint8)  # zero border: NYU's border_value=0
    padded[1:-1, 1:-1] = mask
    # 8-bit distances saturate at 255, which is enough to compare with radius < 255 (and 4x lighter)
    depth = cv2.distanceTransform(padded, cv2.DIST_L1, 3, dstType=cv2.CV_8U if radius < 255 else cv2.CV_32F)
    eroded = (depth > radius)[1:-1, 1:-1]
    rows, cols = np.flatnonzero(eroded.any(axis=1)), np.flatnonzero(eroded.any(axis=0))
    if rows.size == 0:
        return None
    # label only the bounding box of what survived (OpenCV's labelling without stats is the fast one)
    ey, ex = int(rows[0]), int(cols[0])
    box = np.ascontiguousarray(eroded[ey : rows[-1] + 1, ex : cols[-1] + 1]).view(np.uint8)
    _, labels = cv2.connectedComponents(box, connectivity=4, ltype=cv2.CV_32S)
    areas = np.bincount(labels.ravel())
    component = labels == 1 + int(np.argmax(areas[1:]))
    comp_rows, comp_cols = np.flatnonzero(component.any(axis=1)), np.flatnonzero(component.any(axis=0))
    component = component[comp_rows[0] : comp_rows[-1] + 1, comp_cols[0] : comp_cols[-1] + 1]
    cy, cx = ey + int(comp_rows[0]), ex + int(comp_cols[0])
    # the dilated component lies within its bounding box grown by radius (an L1 ball reaches that far)
    y0, y1 = max(cy - radius, 0), min(cy + component.shape[0] + radius, height)
    x0, x1 = max(cx - radius, 0), min(cx + component.shape[1] + radius, width)
    outside = np.ones((y1 - y0, x1 - x0), dtype=np.uint8)
    outside[cy - y0 : cy - y0 + component.shape[0], cx - x0 : cx - x0 + component.shape[1]][component] = 0
    return (y0, x0), cv2.distanceTransform(outside, cv2.DIST_L1, 3) <= radius


def _normalise_laterality(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip().upper()
    return {"L": "L", "LEFT": "L", "R": "R", "RIGHT": "R"}.get(text)


def _as_flag(value: Any, name: str, source: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    text = str(value).strip().upper()
    if text in ("YES", "Y", "TRUE", "1"):
        return True
    if text in ("NO", "N", "FALSE", "0", "NONE", ""):
        return False
    raise MammoGeometryError(f"unrecognised {name} value {value!r}; expected YES/NO or a boolean", source)


def chest_wall_side_from_meta(meta: Mapping[str, Any]) -> Side | None:
    """Image side of the chest wall from ``laterality``, ``horizontal_flip`` and ``flipped_lr``.

    Args:
        meta: image metadata; ``laterality`` L/R (or LEFT/RIGHT), optional ``horizontal_flip``
            (NYU exam flag, default "NO") and ``flipped_lr`` (set by :class:`OrientBreast`).

    Returns:
        ``"left"`` or ``"right"``, or ``None`` when the laterality is missing or unrecognised.

    Raises:
        MammoGeometryError: ``horizontal_flip`` or ``flipped_lr`` has an unrecognised value.

    Example:
        >>> chest_wall_side_from_meta({"laterality": "R", "horizontal_flip": "NO"})
        'right'
    """
    laterality = _normalise_laterality(meta.get("laterality"))
    if laterality is None:
        return None
    source = meta.get("filename_or_obj")
    on_left = laterality == "L"
    on_left ^= _as_flag(meta.get("horizontal_flip", "NO"), "horizontal_flip", source)
    on_left ^= _as_flag(meta.get(FLIPPED_LR_KEY, False), FLIPPED_LR_KEY, source)
    return "left" if on_left else "right"


def _side_from_column_mass(column_mass: np.ndarray, source: Any) -> Side:
    """Chest-wall side from a foreground column profile: the half holding more tissue."""
    half = column_mass.size // 2
    left, right = float(column_mass[:half].sum()), float(column_mass[column_mass.size - half :].sum())
    if left == right:
        raise MammoGeometryError(
            "cannot tell the chest-wall side from the pixels (the foreground is left-right balanced); "
            "give the laterality in the metadata",
            source,
        )
    return "left" if left > right else "right"


def _resolve_side(source_mode: SideSource, meta: Mapping[str, Any]) -> Side | None:
    """Chest-wall side from metadata, or ``None`` when the pixels must decide."""
    if source_mode not in ("auto", "metadata", "pixels"):
        raise MammoConfigError(
            f"unknown side source {source_mode!r}; expected 'auto', 'metadata' or 'pixels'"
        )
    if source_mode == "pixels":
        return None
    side = chest_wall_side_from_meta(meta)
    if side is None and source_mode == "metadata":
        raise MammoGeometryError(
            f"laterality missing or unrecognised ({meta.get('laterality')!r}); "
            "use side='pixels' or 'auto' to decide from the image",
            meta.get("filename_or_obj"),
        )
    return side


def find_breast(
    image: np.ndarray,
    chest_wall: Side | None = None,
    mode: ForegroundMode = "nyu",
    radius: int = 100,
    buffer: int = 50,
    nyu_mirror: bool = True,
    source: Any = None,
) -> BreastGeometry:
    """Locate the breast of a 2D mammogram with the NYU cropping algorithm.

    Args:
        image: 2D image (H, W).
        chest_wall: image side of the chest wall; ``None`` decides from the breast mask (the half
            of the image holding more of it).
        mode: foreground rule, see :func:`foreground_threshold`.
        radius: erosion/dilation radius (NYU: 100).
        buffer: margin added to the box: top and bottom, and on the nipple side (NYU: 50).
        nyu_mirror: for a chest wall on the right, mirror x coordinates as ``width - x`` like NYU's
            reference (one pixel beyond the exact mirror ``width - 1 - x``); needed to reproduce
            their numbers and best centres.
        source: name of the image for error messages.

    Returns:
        The :class:`BreastGeometry`.

    Raises:
        MammoGeometryError: not a 2D image, an empty image, no foreground, nothing left after erosion,
            or a chest-wall side that cannot be told from the pixels.
        MammoDataError: NaN/inf pixel values.

    Example:
        >>> img = np.zeros((600, 500), np.uint16); img[100:500, :300] = 1000
        >>> find_breast(img, "left").window_location
        (50, 550, 0, 350)
    """
    if image.ndim != 2:
        raise MammoGeometryError(f"expected a 2D image, got shape {tuple(image.shape)}", source)
    _check_pixels(image, source)
    height, width = image.shape
    threshold = foreground_threshold(image, mode)
    foreground = image > threshold
    if not foreground.any():
        raise MammoGeometryError(
            f"no breast found: no pixel above the foreground threshold {threshold:g} (blank image?)", source
        )
    opened = open_largest_component(foreground, radius)
    if opened is None:
        raise MammoGeometryError(
            f"no breast found: nothing is left of the foreground after erosion by {radius} px "
            f"(image {height}x{width}; the breast must be wider than {2 * radius} px)",
            source,
        )
    (y0, x0), breast = opened
    y1, x1 = y0 + breast.shape[0], x0 + breast.shape[1]
    if chest_wall is None:
        column_mass = np.zeros(width)
        column_mass[x0:x1] = breast.sum(axis=0)
        chest_wall = _side_from_column_mass(column_mass, source)
    top, bottom = max(y0 - buffer, 0), min(y1 + buffer, height)
    if chest_wall == "left":
        distance, left, right = x0, x0, min(x1 + buffer, width)
    else:
        distance, left, right = width - x1, max(x0 - buffer, 0), x1
    crop_mask = np.zeros((bottom - top, right - left), dtype=bool)
    crop_mask[y0 - top : y1 - top, x0 - left : x1 - left] = breast
    shift = 0
    if chest_wall == "right":
        crop_mask = crop_mask[:, ::-1]
        shift = int(nyu_mirror)
    first_row = crop_mask.shape[0] // 3
    search = crop_mask[first_row:]
    rightmost_x = int(np.flatnonzero(search.any(axis=0))[-1])
    rightmost_ys = np.flatnonzero(search[:, rightmost_x]) + first_row
    bottom_y = int(np.flatnonzero(crop_mask.any(axis=1))[-1])
    bottom_xs = np.flatnonzero(crop_mask[bottom_y])
    return BreastGeometry(
        window_location=(int(top), int(bottom), int(left), int(right)),
        rightmost_points=((int(rightmost_ys[0]), int(rightmost_ys[-1])), rightmost_x + shift),
        bottommost_points=(bottom_y, (int(bottom_xs[0]) + shift, int(bottom_xs[-1]) + shift)),
        distance_from_starting_side=int(distance),
        chest_wall=chest_wall,
        threshold=float(threshold),
    )


def _spatial_shape(img: Any) -> tuple[int, int]:
    if img.ndim != 3 or 0 in tuple(img.shape[1:]):
        raise MammoGeometryError(
            f"expected a channel-first 2D image (C, H, W) with pixels, got shape {tuple(img.shape)}",
            _meta_of(img).get("filename_or_obj"),
        )
    return int(img.shape[1]), int(img.shape[2])


def _meta_of(img: Any) -> dict[str, Any]:
    return dict(img.meta) if isinstance(img, MetaTensor) else {}


def _merged_meta(data: Mapping[Any, Any], key: Hashable) -> dict[str, Any]:
    """Metadata of ``data[key]`` completed with item-level keys (laterality, view, ...) of the dict."""
    meta = _meta_of(data[key])
    for name in _META_FALLBACK_KEYS:
        if meta.get(name) is None and data.get(name) is not None:
            meta[name] = data[name]
    return meta


def _channel_2d(img: Any, channel: int) -> np.ndarray:
    """One channel of a (C, H, W) image as a numpy array (uint8/uint16 kept, others as float32)."""
    plane = img[channel]
    if isinstance(plane, torch.Tensor):
        plane = plane.detach().cpu()
        if plane.dtype not in (torch.uint8, torch.uint16, torch.int16, torch.int32, torch.float32):
            plane = plane.float()
        return np.asarray(plane.numpy())
    return np.asarray(plane)


def _rank(img: torch.Tensor) -> int:
    return int(img.peek_pending_rank()) if isinstance(img, MetaTensor) else 2


def extract_window(img: torch.Tensor, start: Sequence[int], size: Sequence[int]) -> torch.Tensor:
    """The ``size`` window of a (C, H, W) image starting at ``start``, zero outside the image.

    The window may extend beyond the image (or start at negative coordinates): those pixels are
    zero. Metadata of a MetaTensor is copied; the affine is not changed (callers trace it).

    Args:
        img: channel-first 2D image.
        start: ``(y, x)`` of the window's top-left corner in image pixels.
        size: ``(height, width)`` of the window.

    Returns:
        A tensor of shape (C, height, width), same dtype and type as ``img``.

    Example:
        >>> extract_window(torch.ones(1, 2, 2), (-1, 0), (3, 2))[0, :, 0].tolist()
        [0.0, 1.0, 1.0]
    """
    height, width = int(img.shape[1]), int(img.shape[2])
    (y, x), (h, w) = (int(v) for v in start), (int(v) for v in size)
    data = img.as_tensor() if isinstance(img, MetaTensor) else img
    ys, ye, xs, xe = max(y, 0), min(y + h, height), max(x, 0), min(x + w, width)
    if (ys, ye, xs, xe) == (y, y + h, x, x + w):
        out = data[:, ys:ye, xs:xe].clone()
    else:
        out = data.new_zeros((data.shape[0], h, w))
        if ye > ys and xe > xs:
            out[:, ys - y : ye - y, xs - x : xe - x] = data[:, ys:ye, xs:xe]
    if isinstance(img, MetaTensor):
        result = MetaTensor(out)
        result.copy_meta_from(img)
        return result
    return out


def _apply_traced_window(
    transform: InvertibleTransform, img: Any, start: Sequence[int], size: Sequence[int], meta: dict[str, Any]
) -> torch.Tensor:
    """Crop/pad ``img`` to a window, trace it on ``transform`` for inversion, add ``meta``."""
    img_t = convert_to_tensor(img, track_meta=get_track_meta())
    orig = _spatial_shape(img_t)
    out = extract_window(img_t, start, size)
    out = transform.push_transform(
        out,
        orig_size=orig,
        affine=create_translate(_rank(img_t), [int(v) for v in start]),
        extra_info={"start": [int(v) for v in start]},
    )
    if isinstance(out, MetaTensor):
        out.meta.update(meta)
    return out


def _invert_traced_window(transform: InvertibleTransform, img: torch.Tensor) -> torch.Tensor:
    """Undo :func:`_apply_traced_window`: put the window back in a zero image of the original size."""
    info = transform.pop_transform(img)
    start = [-int(v) for v in info[TraceKeys.EXTRA_INFO]["start"]]
    out = extract_window(img, start, [int(v) for v in info[TraceKeys.ORIG_SIZE]])
    with transform.trace_transform(False):
        return transform.push_transform(out, affine=create_translate(_rank(img), start))


class CropBreast(InvertibleTransform):
    """Crop a mammogram to its breast with the NYU algorithm; record the breast geometry.

    The crop is ``image[top:bottom, left:right]`` of the raw, unmasked pixels; the geometry is
    computed on one channel and written to the metadata (see the module docstring). The chest-wall
    side (which side gets no x buffer) comes from the metadata (laterality, ``horizontal_flip``,
    ``flipped_lr``) or from the pixels. Apply it before :class:`OrientBreast` to reproduce NYU's
    numbers (their points are mirrored as ``width - x``, see ``nyu_mirror``).

    Args:
        mode: foreground rule: ``"nyu"`` (image > 0) or ``"otsu"`` (robust threshold, for backgrounds
            that are not exactly zero).
        side: where the chest-wall side comes from: ``"metadata"``, ``"pixels"`` or ``"auto"``
            (metadata when the laterality is known, else pixels).
        radius: erosion/dilation radius in pixels (NYU: 100).
        buffer: crop margin at the top, bottom and nipple side (NYU: 50).
        nyu_mirror: mirror x of breasts with the chest wall on the right as ``width - x`` (NYU).
        channel: channel the geometry is computed on.

    Raises:
        MammoConfigError: invalid arguments.

    Example:
        >>> img = MetaTensor(torch.zeros(1, 600, 500), meta={"laterality": "L"})
        >>> img[:, 100:500, :300] = 1.0
        >>> out = CropBreast()(img)
        >>> tuple(out.shape), out.meta["window_location"]
        ((1, 500, 350), (50, 550, 0, 350))
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        mode: ForegroundMode = "nyu",
        side: SideSource = "auto",
        radius: int = 100,
        buffer: int = 50,
        nyu_mirror: bool = True,
        channel: int = 0,
    ) -> None:
        if mode not in ("nyu", "otsu"):
            raise MammoConfigError(f"unknown foreground mode {mode!r}; expected 'nyu' or 'otsu'")
        if side not in ("auto", "metadata", "pixels"):
            raise MammoConfigError(f"unknown side source {side!r}; expected 'auto', 'metadata' or 'pixels'")
        if radius < 0 or buffer < 0:
            raise MammoConfigError(f"radius and buffer must be >= 0, got {radius} and {buffer}")
        self.mode: ForegroundMode = mode
        self.side: SideSource = side
        self.radius = radius
        self.buffer = buffer
        self.nyu_mirror = nyu_mirror
        self.channel = channel

    def compute_geometry(self, img: Any, meta: Mapping[str, Any] | None = None) -> BreastGeometry:
        """Find the breast in ``img`` without cropping.

        Args:
            img: channel-first image (C, H, W).
            meta: metadata to use instead of ``img.meta`` (dict transforms pass merged metadata).

        Returns:
            The :class:`BreastGeometry`.

        Raises:
            MammoGeometryError: no breast found, not a 2D image, an empty image, or missing
                laterality with ``side="metadata"``; the message names ``filename_or_obj``.
            MammoDataError: NaN/inf pixel values (naming ``filename_or_obj``).
        """
        meta = _meta_of(img) if meta is None else dict(meta)
        source = meta.get("filename_or_obj")
        _spatial_shape(img)
        return find_breast(
            _channel_2d(img, self.channel),
            chest_wall=_resolve_side(self.side, meta),
            mode=self.mode,
            radius=self.radius,
            buffer=self.buffer,
            nyu_mirror=self.nyu_mirror,
            source=source,
        )

    def apply_geometry(self, img: Any, geometry: BreastGeometry) -> torch.Tensor:
        """Crop ``img`` (image, mask or heatmap of the same size) to ``geometry.window_location``.

        Args:
            img: channel-first image (C, H, W).
            geometry: from :meth:`compute_geometry`, usually of another key of the same sample.

        Returns:
            The crop (MetaTensor with the geometry in its metadata when metadata is tracked).
        """
        top, bottom, left, right = geometry.window_location
        return _apply_traced_window(self, img, (top, left), (bottom - top, right - left), geometry.as_meta())

    def __call__(self, img: Any) -> torch.Tensor:
        """Crop ``img`` to its breast.

        Args:
            img: channel-first image (C, H, W).

        Returns:
            The cropped image.

        Raises:
            MammoGeometryError: see :meth:`compute_geometry`.
        """
        return self.apply_geometry(img, self.compute_geometry(img))

    def inverse(self, data: torch.Tensor) -> torch.Tensor:
        """Pad the crop back to the original size (zeros outside the window).

        Args:
            data: output of this transform (MetaTensor with its trace).

        Returns:
            The image in the original geometry.
        """
        return _invert_traced_window(self, data)


class SharedGeometryd(MapTransform, InvertibleTransform):
    """Base of the dict geometry transforms: one geometry, computed from the source key, for every key.

    Subclasses set ``self.transform`` (the invertible array transform) and implement
    :meth:`compute` and :meth:`apply`; image, masks and heatmaps then move together and
    ``inverse`` undoes each key.

    Args:
        keys: keys to transform (all must share the source key's spatial size).
        source_key: key whose pixels and metadata decide the geometry (default: the first key).
        allow_missing_keys: do not fail on absent keys.

    Raises:
        MammoGeometryError: a key whose spatial size differs from the source key's.
    """

    transform: InvertibleTransform

    def __init__(
        self, keys: KeysCollection, source_key: str | None = None, allow_missing_keys: bool = False
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.source_key = source_key

    def compute(self, img: Any, meta: Mapping[str, Any]) -> Any:
        """The geometry of the source image (crop window, flip, ...)."""
        raise NotImplementedError

    def apply(self, img: Any, geometry: Any) -> Any:
        """Apply a geometry from :meth:`compute` to one key."""
        raise NotImplementedError

    def __call__(self, data: Mapping[Any, Any]) -> dict[Hashable, Any]:
        """Apply the source key's geometry to every key.

        Args:
            data: sample dict.

        Returns:
            A new dict with the transformed entries.
        """
        d = dict(data)
        source = self.source_key or self.first_key(d)
        geometry = self.compute(d[source], _merged_meta(d, source))
        shape = _spatial_shape(d[source])
        for key in self.key_iterator(d):
            if _spatial_shape(d[key]) != shape:
                raise MammoGeometryError(
                    f"key {key!r} has spatial size {_spatial_shape(d[key])}, {source!r} has {shape}",
                    _merged_meta(d, source).get("filename_or_obj"),
                )
            d[key] = self.apply(d[key], geometry)
        return d

    def inverse(self, data: Mapping[Any, Any]) -> dict[Hashable, Any]:
        """Undo the transform on every key.

        Args:
            data: output of this transform.

        Returns:
            A new dict in the input geometry.
        """
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform.inverse(d[key])
        return d


class CropBreastd(SharedGeometryd):
    """Dictionary version of :class:`CropBreast`: one breast window for several keys.

    The geometry is computed once from ``source_key`` (default: the first of ``keys``) and the
    same crop applied to every key (image, masks, heatmaps of the same size). Item-level
    ``laterality``/``view``/``horizontal_flip`` entries of the dict complete missing metadata.

    Args:
        keys: keys to crop.
        source_key: key whose image defines the geometry (default: first of ``keys``).
        mode: see :class:`CropBreast`.
        side: see :class:`CropBreast`.
        radius: see :class:`CropBreast`.
        buffer: see :class:`CropBreast`.
        nyu_mirror: see :class:`CropBreast`.
        channel: see :class:`CropBreast`.
        allow_missing_keys: skip missing keys instead of raising.

    Raises:
        MammoGeometryError: no breast, or a key whose size differs from the source's.

    Example:
        >>> img = MetaTensor(torch.zeros(1, 600, 500), meta={"laterality": "L"})
        >>> img[:, 100:500, :300] = 1.0
        >>> out = CropBreastd(["image", "mask"])({"image": img, "mask": torch.ones(1, 600, 500)})
        >>> tuple(out["mask"].shape)
        (1, 500, 350)
    """

    backend = CropBreast.backend

    transform: CropBreast

    def __init__(
        self,
        keys: KeysCollection,
        source_key: str | None = None,
        mode: ForegroundMode = "nyu",
        side: SideSource = "auto",
        radius: int = 100,
        buffer: int = 50,
        nyu_mirror: bool = True,
        channel: int = 0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, source_key, allow_missing_keys)
        self.transform = CropBreast(mode, side, radius, buffer, nyu_mirror, channel)

    def compute(self, img: Any, meta: Mapping[str, Any]) -> BreastGeometry:
        return self.transform.compute_geometry(img, meta)

    def apply(self, img: Any, geometry: BreastGeometry) -> torch.Tensor:
        return self.transform.apply_geometry(img, geometry)


class OrientBreast(InvertibleTransform):
    """Flip a mammogram left-right so that the breast faces a fixed direction.

    Default: chest wall at column 0, nipple towards larger x (NYU "right-facing"). The side comes
    from the metadata (laterality + ``horizontal_flip`` + earlier ``flipped_lr``, NYU convention)
    or from the pixels (the image half holding more foreground). ``flipped_lr`` in the metadata
    records the flip state (toggled by each flip, restored by :meth:`inverse`), so applying the
    transform twice flips once, and heatmaps or saliency maps can be flipped back.

    Args:
        chest_wall: target side of the chest wall: ``"left"`` (column 0) or ``"right"``.
        side: ``"metadata"``, ``"pixels"`` or ``"auto"`` (metadata when the laterality is known).
        foreground: foreground rule for the pixel decision (see :func:`foreground_threshold`).
        channel: channel used for the pixel decision.

    Raises:
        MammoConfigError: invalid arguments.

    Example:
        >>> img = MetaTensor(torch.zeros(1, 4, 6), meta={"laterality": "R"})
        >>> out = OrientBreast()(img)
        >>> out.meta["flipped_lr"]
        True
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        chest_wall: Side = "left",
        side: SideSource = "auto",
        foreground: ForegroundMode = "otsu",
        channel: int = 0,
    ) -> None:
        if chest_wall not in ("left", "right"):
            raise MammoConfigError(f"chest_wall must be 'left' or 'right', got {chest_wall!r}")
        if side not in ("auto", "metadata", "pixels"):
            raise MammoConfigError(f"unknown side source {side!r}; expected 'auto', 'metadata' or 'pixels'")
        if foreground not in ("nyu", "otsu"):
            raise MammoConfigError(f"unknown foreground mode {foreground!r}; expected 'nyu' or 'otsu'")
        self.chest_wall: Side = chest_wall
        self.side: SideSource = side
        self.foreground: ForegroundMode = foreground
        self.channel = channel

    def chest_wall_side(self, img: Any, meta: Mapping[str, Any] | None = None) -> Side:
        """Current image side of the chest wall of ``img``.

        Args:
            img: channel-first image (C, H, W).
            meta: metadata to use instead of ``img.meta``.

        Returns:
            ``"left"`` or ``"right"``.

        Raises:
            MammoGeometryError: missing laterality with ``side="metadata"``, an empty image, or
                in pixel mode a blank image or an undecidable side.
            MammoDataError: NaN/inf pixel values in pixel mode (naming ``filename_or_obj``).
        """
        meta = _meta_of(img) if meta is None else dict(meta)
        _spatial_shape(img)
        side = _resolve_side(self.side, meta)
        if side is not None:
            return side
        plane = _channel_2d(img, self.channel)
        _check_pixels(plane, meta.get("filename_or_obj"))
        foreground = plane > foreground_threshold(plane, self.foreground)
        if not foreground.any():
            raise MammoGeometryError(
                "cannot orient a blank image (no foreground)", meta.get("filename_or_obj")
            )
        return _side_from_column_mass(foreground.sum(axis=0), meta.get("filename_or_obj"))

    def compute_flip(self, img: Any, meta: Mapping[str, Any] | None = None) -> bool:
        """Whether ``img`` must be flipped to put its chest wall on the ``chest_wall`` side.

        Args:
            img: channel-first image (C, H, W).
            meta: metadata to use instead of ``img.meta``.

        Returns:
            True when a left-right flip is needed.
        """
        return self.chest_wall_side(img, meta) != self.chest_wall

    def apply_flip(self, img: Any, flip: bool) -> torch.Tensor:
        """Flip ``img`` left-right when ``flip``; trace it and update ``flipped_lr``.

        Args:
            img: channel-first image (C, H, W): image, mask or heatmap.
            flip: from :meth:`compute_flip`, usually of another key of the same sample.

        Returns:
            The (possibly) flipped image.
        """
        img_t = convert_to_tensor(img, track_meta=get_track_meta())
        out = self.push_transform(self._flip(img_t, flip), extra_info={"flipped": bool(flip)})
        if isinstance(out, MetaTensor):
            out.meta.setdefault(FLIPPED_LR_KEY, False)
        return out

    def _flip(self, img: torch.Tensor, flip: bool) -> torch.Tensor:
        """Flip the last axis and the affine; toggle ``flipped_lr`` (no tracing)."""
        if not flip:  # a new MetaTensor sharing the pixels, so that the input's metadata stays untouched
            if not isinstance(img, MetaTensor):
                return img
            view = MetaTensor(img.as_tensor())
            view.copy_meta_from(img)
            return view
        width = _spatial_shape(img)[1]
        xform = torch.eye(_rank(img) + 1, dtype=torch.float64)
        xform[1, 1], xform[1, -1] = -1.0, float(width - 1)
        # index_select rather than torch.flip, which has no kernel for uint16 images
        flipped = img.index_select(-1, torch.arange(width - 1, -1, -1, device=img.device))
        with self.trace_transform(False):
            out = self.push_transform(flipped, affine=xform)
        if isinstance(out, MetaTensor):
            out.meta[FLIPPED_LR_KEY] = not _as_flag(
                out.meta.get(FLIPPED_LR_KEY, False), FLIPPED_LR_KEY, out.meta.get("filename_or_obj")
            )
        return out

    def __call__(self, img: Any) -> torch.Tensor:
        """Orient ``img``.

        Args:
            img: channel-first image (C, H, W).

        Returns:
            The oriented image; ``flipped_lr`` in its metadata.

        Raises:
            MammoGeometryError: see :meth:`chest_wall_side`.
        """
        return self.apply_flip(img, self.compute_flip(img))

    def inverse(self, data: torch.Tensor) -> torch.Tensor:
        """Undo the flip (if one was applied).

        Args:
            data: output of this transform.

        Returns:
            The image in its original orientation.
        """
        info = self.pop_transform(data)
        return self._flip(data, bool(info[TraceKeys.EXTRA_INFO]["flipped"]))


class OrientBreastd(SharedGeometryd):
    """Dictionary version of :class:`OrientBreast`: one flip decision for several keys.

    Args:
        keys: keys to orient (image, masks, heatmaps).
        source_key: key whose image/metadata decides the flip (default: first of ``keys``).
        chest_wall: see :class:`OrientBreast`.
        side: see :class:`OrientBreast`.
        foreground: see :class:`OrientBreast`.
        channel: see :class:`OrientBreast`.
        allow_missing_keys: skip missing keys instead of raising.

    Example:
        >>> d = {"image": MetaTensor(torch.zeros(1, 4, 6), meta={"laterality": "R"}), "mask": torch.zeros(1, 4, 6)}
        >>> OrientBreastd(["image", "mask"])(d)["mask"].meta["flipped_lr"]
        True
    """

    backend = OrientBreast.backend

    transform: OrientBreast

    def __init__(
        self,
        keys: KeysCollection,
        source_key: str | None = None,
        chest_wall: Side = "left",
        side: SideSource = "auto",
        foreground: ForegroundMode = "otsu",
        channel: int = 0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, source_key, allow_missing_keys)
        self.transform = OrientBreast(chest_wall, side, foreground, channel)

    def compute(self, img: Any, meta: Mapping[str, Any]) -> bool:
        return self.transform.compute_flip(img, meta)

    def apply(self, img: Any, geometry: bool) -> torch.Tensor:
        return self.transform.apply_flip(img, geometry)


CropBreastD = CropBreastDict = CropBreastd
OrientBreastD = OrientBreastDict = OrientBreastd
