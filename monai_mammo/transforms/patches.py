"""Patch extraction for patch classifiers: Shen et al.'s S1/S10 patch sets and Mračko's lesion-centred crops.

:class:`SamplePatches` / :class:`SamplePatchesd` draw the S1 and S10 patch sets of Shen et al.
(five classes, :class:`~monai_mammo.data.schema.PatchClass` ids) with the overlap rule::

    overlap(centre, cut) = I / |roi| > cut  or  I / |box| > cut

where ``I`` is the number of ROI-mask pixels inside the patch box, ``|roi|`` the number of
mask pixels and ``|box|`` the patch area. Overlap tests use a summed-area table of each mask
(O(1) per candidate) and candidates are drawn in vectorised batches, so S10 sampling costs a
few milliseconds per image.

Two modes:

* ``"improved"`` (default) fixes the known weaknesses of the reference code: background
  centres lie inside the breast and their patches contain no pixel of *any* ROI of the
  image; centres are distinct within a finding's set and within the background set; each
  finding draws from its own generator derived from (call seed, image content, finding
  index), so appending a finding leaves the other findings' patches unchanged, and the same
  image gives the same patches wherever it is stored (the id is a checksum of the pixels,
  not of the file path).
* ``"reference"`` reproduces the published behaviour: background centres uniform over the
  image (patches lie inside the image padded by ``ps/2``) checked against the first
  abnormality's mask only with ``bkg_cutoff``; the generator reseeded with the same
  ``reference_seed`` for every abnormality (identical ROI boxes get identical draws);
  sampling with replacement. It reproduces the behaviour, not the bit-exact random stream.

Both modes zero-pad patches that extend beyond the image (as the reference pads by ``ps/2``)
and report, instead of crashing, findings whose cutoff relaxation reaches zero.

:class:`LesionCenteredCrop` / :class:`LesionCenteredCropd` cut Mračko's native-resolution
patches (674 x 674 by default) centred on a finding and shifted inwards at the image border.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Hashable, Mapping, Sequence
from copy import deepcopy
from typing import Any, NamedTuple

import cv2
import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import (
    BorderPad,
    InvertibleTransform,
    MapTransform,
    Randomizable,
    SpatialCrop,
    Transform,
)
from monai.transforms.croppad.functional import crop_func, pad_func
from monai.transforms.traits import MultiSampleTrait
from monai.utils import MAX_SEED, TraceKeys, TransformBackends, convert_to_tensor

from monai_mammo.data.schema import (
    FINDINGS_KEY,
    IMAGE_KEY,
    LABEL_KEY,
    PatchClass,
    patch_class,
    pathology_to_label,
)
from monai_mammo.exceptions import MammoConfigError, MammoDataError, MammoGeometryError, MammoSkip

__all__ = [
    "FindingPatchesd",
    "FindingItem",
    "PatchDraw",
    "SamplePatches",
    "SamplePatchesd",
    "SamplePatchesD",
    "SamplePatchesDict",
    "LesionCenteredCrop",
    "LesionCenteredCropd",
    "LesionCenteredCropD",
    "LesionCenteredCropDict",
    "breast_region",
]

_BATCH = 256  # candidates drawn per vectorised batch
_MODES = ("improved", "reference")
_PATCH_SETS = {"S1": (1, 1), "S10": (10, 10)}  # (n_roi, n_background)


class PatchDraw(NamedTuple):
    """One accepted patch centre.

    Attributes:
        center: ``(y, x)`` patch centre in source-image pixels.
        label: :class:`PatchClass` id of the patch.
        finding_index: index of the finding in the image's findings (-1 for background).
        cutoff: overlap cutoff the patch was accepted at (NaN for background and S1 centroid patches).
    """

    center: tuple[int, int]
    label: int
    finding_index: int
    cutoff: float


class _Roi:
    """A finding's mask as a summed-area table over its bounding box, plus its largest contour.

    Args:
        mask: (H, W) boolean mask with at least one pixel set.
    """

    def __init__(self, mask: np.ndarray) -> None:
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        self.y0, self.x0 = int(rows[0]), int(cols[0])
        crop = mask[self.y0 : int(rows[-1]) + 1, self.x0 : int(cols[-1]) + 1]
        self.sat = np.zeros((crop.shape[0] + 1, crop.shape[1] + 1), dtype=np.int64)
        np.cumsum(np.cumsum(crop, axis=0, dtype=np.int64), axis=1, out=self.sat[1:, 1:])
        self.area = int(self.sat[-1, -1])
        contours, _ = cv2.findContours(crop.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        largest = max(contours, key=lambda c: (cv2.contourArea(c), len(c)))
        bx, by, bw, bh = cv2.boundingRect(largest)
        #: bounding rect of the largest contour, half-open ``(y0, x0, y1, x1)`` in image pixels
        self.box = (self.y0 + by, self.x0 + bx, self.y0 + by + bh, self.x0 + bx + bw)
        moments = cv2.moments(largest)
        if moments["m00"] > 0:
            cy, cx = moments["m01"] / moments["m00"], moments["m10"] / moments["m00"]
        else:  # degenerate contour (a line or a pixel): centre of its bounding rect
            cy, cx = by + (bh - 1) / 2.0, bx + (bw - 1) / 2.0
        #: centroid of the largest contour (image pixels)
        self.centroid = (self.y0 + cy, self.x0 + cx)

    def count(self, top: np.ndarray, left: np.ndarray, size: int) -> np.ndarray:
        """Mask pixels inside the boxes ``[top, top + size) x [left, left + size)`` (vectorised)."""
        h, w = self.sat.shape[0] - 1, self.sat.shape[1] - 1
        a0 = np.clip(top - self.y0, 0, h)
        a1 = np.clip(top + size - self.y0, 0, h)
        b0 = np.clip(left - self.x0, 0, w)
        b1 = np.clip(left + size - self.x0, 0, w)
        s = self.sat
        return s[a1, b1] - s[a0, b1] - s[a1, b0] + s[a0, b0]

    def overlaps(self, ys: np.ndarray, xs: np.ndarray, size: int, cut: float) -> np.ndarray:
        """The overlap rule ``I/|roi| > cut or I/|box| > cut`` for patches centred at ``(ys, xs)``."""
        inside = self.count(ys - size // 2, xs - size // 2, size)
        return (inside / self.area > cut) | (inside / float(size * size) > cut)


def _as_numpy(data: Any) -> np.ndarray:
    if isinstance(data, MetaTensor):
        data = data.as_tensor()
    if isinstance(data, torch.Tensor):
        return data.detach().cpu().numpy()
    return np.asarray(data)


def _mask_2d(mask: Any, shape: tuple[int, int], what: str, source: str | None) -> np.ndarray:
    """A (H, W) boolean mask from a (H, W) or (C, H, W) array (channels are OR-ed)."""
    arr = _as_numpy(mask)
    if arr.ndim == 3:
        arr = arr[0] if arr.shape[0] == 1 else np.asarray(arr.any(axis=0))
    if arr.ndim != 2 or tuple(arr.shape) != tuple(shape):
        raise MammoDataError(
            f"{what} has shape {tuple(_as_numpy(mask).shape)}, expected (1, {shape[0]}, {shape[1]}) like the image",
            source,
        )
    return arr if arr.dtype == np.bool_ else np.asarray(arr > 0)


def _source_of(img: Any) -> str | None:
    if isinstance(img, MetaTensor):
        name = img.meta.get("filename_or_obj")
        return None if name is None else str(name)
    return None


def _content_id(image: NdarrayOrTensor) -> int:
    """A location-independent image id: CRC-32 of every 8th pixel (float32) of every 8th row."""
    arr = _as_numpy(image)
    return zlib.crc32(np.ascontiguousarray(arr[..., ::8, ::8], dtype=np.float32).tobytes())


def breast_region(image: NdarrayOrTensor, source: str | None = None) -> np.ndarray:
    """Breast mask of a mammogram: threshold at 5% of the intensity range, largest contour filled.

    The threshold is ``min + 0.05 * (max - min)`` of the first channel (5% of the maximum for
    images whose background is zero), as in Shen et al.'s breast segmentation.

    Args:
        image: channel-first (C, H, W) or (H, W) image.
        source: file name used in error messages.

    Returns:
        (H, W) boolean mask of the breast.

    Raises:
        MammoGeometryError: the image is empty or constant (no breast region).
        MammoDataError: the image holds NaN/inf values.

    Example:
        >>> img = np.zeros((1, 64, 48), np.float32); img[0, 10:50, :30] = 1.0
        >>> int(breast_region(img).sum())
        1200
    """
    arr = _as_numpy(image)
    plane = arr[0] if arr.ndim == 3 else arr
    if plane.size == 0:
        raise MammoGeometryError(f"empty image of shape {tuple(arr.shape)}: no breast region", source)
    if plane.dtype.kind == "f" and not np.isfinite(plane).all():
        raise MammoDataError("NaN/inf pixel values: no breast region can be found", source)
    lo, hi = float(plane.min()), float(plane.max())
    if not hi > lo:
        raise MammoGeometryError("constant image: no breast region to sample from", source)
    foreground = (plane > lo + 0.05 * (hi - lo)).astype(np.uint8)
    contours, _ = cv2.findContours(foreground, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    largest = max(contours, key=lambda c: (cv2.contourArea(c), len(c)))
    filled = np.zeros_like(foreground)
    cv2.drawContours(filled, [largest], -1, 1, thickness=cv2.FILLED)
    return filled.view(np.bool_)


def _draw_until(
    draw: Any,
    accept: Any,
    n: int,
    cut: float,
    relax_step: float,
    max_rejections: int,
    unique: bool,
) -> tuple[list[tuple[int, int]], list[float], bool]:
    """Draw candidate centres in batches and accept them in order.

    ``draw(k)`` returns ``(ys, xs)`` integer arrays of k candidates; ``accept(ys, xs, cut)`` a
    boolean array. After ``max_rejections`` consecutive rejections (duplicates count when
    ``unique``) the cut is lowered by ``relax_step``; with ``relax_step <= 0`` or a cut reaching
    zero the search stops.

    Returns:
        the accepted centres, the cut each was accepted at, and whether ``n`` were accepted.
    """
    centres: list[tuple[int, int]] = []
    cuts: list[float] = []
    seen: set[tuple[int, int]] = set()
    rejections = 0
    while True:
        ys, xs = draw(_BATCH)
        ok = accept(ys, xs, cut)
        relax = False
        if not ok.any():  # fast path: the whole batch is rejected
            rejections += len(ok)
            relax = rejections >= max_rejections
        else:
            for y, x, good in zip(ys.tolist(), xs.tolist(), ok.tolist()):
                if good and not (unique and (y, x) in seen):
                    centres.append((y, x))
                    cuts.append(cut)
                    seen.add((y, x))
                    rejections = 0
                    if len(centres) == n:
                        return centres, cuts, True
                else:
                    rejections += 1
                    if rejections >= max_rejections:
                        relax = True
                        break  # the rest of the batch was judged at the old cut
        if relax:
            if relax_step <= 0:
                return centres, cuts, False
            cut = round(cut - relax_step, 10)
            rejections = 0
            if cut <= 0:
                return centres, cuts, False


def _box_sampler(
    rng: np.random.RandomState | np.random.Generator, box: tuple[int, int, int, int]
) -> Callable[[int], tuple[np.ndarray, np.ndarray]]:
    """``draw(k)``: k integer centres uniform in the half-open box ``(y0, x0, y1, x1)``."""
    y0, x0, y1, x1 = box
    if isinstance(rng, np.random.RandomState):
        return lambda k: (rng.randint(y0, y1, size=k), rng.randint(x0, x1, size=k))
    return lambda k: (rng.integers(y0, y1, size=k), rng.integers(x0, x1, size=k))


def _report_entry(
    index: int, class_id: int, status: str, n: int, cuts: Sequence[float], skip: MammoSkip | None = None
) -> dict[str, Any]:
    finite = [c for c in cuts if not math.isnan(c)]
    return {
        "finding_index": index,
        "class_id": class_id,
        "status": status,
        "reason": "" if skip is None else skip.reason,
        "message": "" if skip is None else str(skip),
        "n_patches": n,
        "min_cutoff": min(finite) if finite else None,
    }


class SamplePatches(Randomizable, Transform):
    """Sample Shen et al.'s S1 / S10 patch sets (ROI and background patches) from one image.

    S10: for each finding, centres drawn uniformly inside the ROI box (bounding rect of the
    mask's largest contour) until ``n_roi`` are accepted by the overlap rule with cut
    ``roi_cutoff``; after ``max_rejections`` consecutive rejections the cut is lowered by
    ``relax_step``. A cut reaching zero stops the finding (status ``partial`` or ``skipped``,
    reason ``cutoff_exhausted``) instead of crashing; in improved mode a duplicate centre
    counts as a rejection, so a ROI box with fewer than ``n_roi`` pixels ends ``partial``.
    S1: one patch centred on the ROI centroid (of the largest contour). Then ``n_background`` background patches (see the module docstring for the
    ``"improved"`` and ``"reference"`` rules). In improved mode a background patch must
    contain **zero** pixels of any ROI (stricter than the 0.35 rule; ``bkg_cutoff`` only
    applies in reference mode) and be centred inside the breast; a finding whose mask lies
    entirely outside the breast is skipped (reason ``mask_outside_breast``: a misregistered
    or mirrored annotation would otherwise give lesion-labelled background patches).

    Every finding gets an entry in the sampling report (JSON string under
    ``"sampling_report"`` of every sample, so that batches still collate): ``finding_index``
    (-1 for background), ``class_id``, ``status`` (``ok``, ``relaxed``, ``partial``,
    ``skipped``), ``reason`` (the :class:`MammoSkip` reason code: ``empty_mask``,
    ``unknown_class``, ``mask_outside_breast``, ``cutoff_exhausted``,
    ``background_exhausted``), ``message``, ``n_patches`` and ``min_cutoff``.

    Args:
        patch_size: side of the square patches in pixels.
        patch_set: ``"S10"`` (random centres, overlap rule) or ``"S1"`` (one centroid patch).
        n_roi: patches per finding for S10 (default 10); must be None for S1.
        n_background: background patches per image (default 10 for S10, 1 for S1).
        roi_cutoff: initial overlap cutoff of ROI patches.
        bkg_cutoff: reference mode: a background patch is rejected when it overlaps the first
            abnormality by this cut.
        relax_step: cut decrement after ``max_rejections`` consecutive rejections.
        max_rejections: consecutive rejections before relaxing (ROI) or giving up (background).
        mode: ``"improved"`` or ``"reference"``.
        reference_seed: reference mode: the seed the generator is reset to for every abnormality.

    Raises:
        MammoConfigError: invalid parameters.

    Example:
        >>> sampler = SamplePatches(patch_size=224, patch_set="S10")
        >>> sampler.set_random_state(seed=0)  # doctest: +SKIP
        >>> samples = sampler(image, masks=[mask], classes=[PatchClass.MASS_MALIGNANT])  # doctest: +SKIP
        >>> samples[0]["image"].shape, samples[0]["label"]  # doctest: +SKIP
        (torch.Size([1, 224, 224]), 4)
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        patch_size: int = 224,
        patch_set: str = "S10",
        n_roi: int | None = None,
        n_background: int | None = None,
        roi_cutoff: float = 0.9,
        bkg_cutoff: float = 0.35,
        relax_step: float = 0.05,
        max_rejections: int = 1000,
        mode: str = "improved",
        reference_seed: int = 0,
    ) -> None:
        if patch_set not in _PATCH_SETS:
            raise MammoConfigError(f"patch_set must be one of {sorted(_PATCH_SETS)}, got {patch_set!r}")
        if patch_set == "S1" and n_roi not in (None, 1):
            raise MammoConfigError("S1 takes exactly one centroid patch per finding; leave n_roi unset")
        if mode not in _MODES:
            raise MammoConfigError(f"mode must be one of {_MODES}, got {mode!r}")
        default_roi, default_bkg = _PATCH_SETS[patch_set]
        self.patch_size = int(patch_size)
        self.patch_set = patch_set
        self.n_roi = default_roi if n_roi is None else int(n_roi)
        self.n_background = default_bkg if n_background is None else int(n_background)
        if self.patch_size < 1 or self.n_roi < 1 or self.n_background < 0:
            raise MammoConfigError("patch_size and n_roi must be >= 1 and n_background >= 0")
        if not (0 < roi_cutoff <= 1 and 0 <= bkg_cutoff <= 1 and relax_step > 0 and max_rejections >= 1):
            raise MammoConfigError(
                "expected 0 < roi_cutoff <= 1, 0 <= bkg_cutoff <= 1, relax_step > 0, max_rejections >= 1"
            )
        self.roi_cutoff = float(roi_cutoff)
        self.bkg_cutoff = float(bkg_cutoff)
        self.relax_step = float(relax_step)
        self.max_rejections = int(max_rejections)
        self.mode = mode
        self.reference_seed = int(reference_seed)
        self._seed = 0

    def randomize(self, data: Any = None) -> None:
        """Draw the call seed from which the per-finding generators are derived."""
        self._seed = int(self.R.randint(MAX_SEED, dtype="uint32"))

    def _generator(self, image_id: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self._seed, image_id, stream])

    def sample_centres(
        self,
        img: NdarrayOrTensor,
        masks: Sequence[NdarrayOrTensor | None],
        classes: Sequence[int | None],
        breast_mask: NdarrayOrTensor | None = None,
        source: str | None = None,
        randomize: bool = True,
    ) -> tuple[list[PatchDraw], list[dict[str, Any]]]:
        """Patch centres of one image, without cropping.

        Args:
            img: channel-first (C, H, W) image (used for its shape and, in improved mode
                without ``breast_mask``, for the breast threshold).
            masks: one image-sized mask per finding ((1, H, W) or (H, W); None or empty ->
                ``empty_mask`` skip).
            classes: :class:`PatchClass` id of each finding (1..4; None -> ``unknown_class`` skip).
            breast_mask: optional (1, H, W) breast mask (improved mode); computed when None.
            source: image identifier for error messages and the per-image generators
                (default: the MetaTensor's ``filename_or_obj``).
            randomize: draw a new call seed first.

        Returns:
            the accepted draws (ROI patches finding by finding, then background) and the
            sampling report (one entry per finding, then one with ``finding_index`` -1).

        Raises:
            MammoDataError: masks and classes differ in number, a mask's shape differs from
                the image, a class id is not a finding class, or (improved mode) the image
                holds NaN/inf values.
            MammoGeometryError: improved mode and the image is empty or constant (no breast)
                or the breast mask is empty.
        """
        if randomize:
            self.randomize()
        source = source if source is not None else _source_of(img)
        shape = (int(img.shape[-2]), int(img.shape[-1]))
        if len(masks) != len(classes):
            raise MammoDataError(f"{len(masks)} masks but {len(classes)} classes", source)
        image_id = _content_id(img)
        ps = self.patch_size
        draws: list[PatchDraw] = []
        report: list[dict[str, Any]] = []
        rois: list[_Roi | None] = []
        first_state: np.random.RandomState | None = None  # reference mode: the first abnormality's stream
        planes = [
            None if mask is None else _mask_2d(mask, shape, f"mask of finding {index}", source)
            for index, mask in enumerate(masks)
        ]
        breast = None
        if self.mode == "improved" and (self.n_background or any(p is not None and p.any() for p in planes)):
            breast = self._breast(img, breast_mask, shape, source)
        for index, (plane, class_id) in enumerate(zip(planes, classes)):
            roi = _Roi(plane) if plane is not None and plane.any() else None
            rois.append(roi)
            if class_id is not None and int(class_id) not in range(1, len(PatchClass)):
                raise MammoDataError(
                    f"finding {index}: class id {class_id} is not a finding PatchClass", source
                )
            cid = -1 if class_id is None else int(class_id)
            if roi is None or class_id is None:
                missing = (
                    MammoSkip(f"finding {index}: empty or missing ROI mask", source, reason="empty_mask")
                    if roi is None
                    else MammoSkip(f"finding {index}: unknown class", source, reason="unknown_class")
                )
                report.append(_report_entry(index, cid, "skipped", 0, [], missing))
                continue
            if breast is not None and plane is not None and not (plane & breast).any():
                outside = MammoSkip(
                    f"finding {index}: ROI mask lies entirely outside the breast",
                    source,
                    reason="mask_outside_breast",
                )
                report.append(_report_entry(index, cid, "skipped", 0, [], outside))
                continue
            if self.patch_set == "S1":
                cy, cx = (int(math.floor(c + 0.5)) for c in roi.centroid)
                draws.append(PatchDraw((cy, cx), cid, index, math.nan))
                report.append(_report_entry(index, cid, "ok", 1, []))
                continue
            rng: np.random.RandomState | np.random.Generator
            if self.mode == "reference":
                rng = np.random.RandomState(self.reference_seed)
                if index == 0:
                    first_state = rng
            else:
                rng = self._generator(image_id, index + 1)
            centres, cuts, done = _draw_until(
                _box_sampler(rng, roi.box),
                lambda ys, xs, cut, r=roi: r.overlaps(ys, xs, ps, cut),
                self.n_roi,
                self.roi_cutoff,
                self.relax_step,
                self.max_rejections,
                unique=self.mode == "improved",
            )
            draws.extend(PatchDraw(c, cid, index, cut) for c, cut in zip(centres, cuts))
            if done:
                status = "ok" if min(cuts) >= self.roi_cutoff else "relaxed"
                report.append(_report_entry(index, cid, status, len(centres), cuts))
            else:
                exhausted = MammoSkip(
                    f"finding {index}: overlap cutoff relaxed to zero after {len(centres)} of {self.n_roi} patches",
                    source,
                    reason="cutoff_exhausted",
                )
                report.append(
                    _report_entry(
                        index, cid, "partial" if centres else "skipped", len(centres), cuts, exhausted
                    )
                )
        if self.n_background:
            centres, done = self._background(rois, breast, shape, image_id, first_state)
            draws.extend(PatchDraw(c, int(PatchClass.BACKGROUND), -1, math.nan) for c in centres)
            skip: MammoSkip | None = None
            if not done:
                skip = MammoSkip(
                    f"only {len(centres)} of {self.n_background} background patches found",
                    source,
                    reason="background_exhausted",
                )
            status = "ok" if done else ("partial" if centres else "skipped")
            report.append(_report_entry(-1, int(PatchClass.BACKGROUND), status, len(centres), [], skip))
        return draws, report

    @staticmethod
    def _breast(
        img: NdarrayOrTensor, breast_mask: NdarrayOrTensor | None, shape: tuple[int, int], source: str | None
    ) -> np.ndarray:
        """The (H, W) breast mask: ``breast_mask`` when given, else :func:`breast_region` of ``img``.

        Raises:
            MammoGeometryError: empty breast mask, or an empty or constant image.
            MammoDataError: a breast mask of another shape, or NaN/inf pixel values.
        """
        breast = (
            breast_region(img, source)
            if breast_mask is None
            else _mask_2d(breast_mask, shape, "breast mask", source)
        )
        if not breast.any():
            raise MammoGeometryError("empty breast mask: no breast to sample from", source)
        return breast

    def _background(
        self,
        rois: list[_Roi | None],
        breast: np.ndarray | None,
        shape: tuple[int, int],
        image_id: int,
        first_state: np.random.RandomState | None,
    ) -> tuple[list[tuple[int, int]], bool]:
        ps = self.patch_size
        if self.mode == "reference":
            first = rois[0] if rois else None
            # the background continues the first abnormality's reseeded stream
            state = np.random.RandomState(self.reference_seed) if first_state is None else first_state

            def accept_ref(ys: np.ndarray, xs: np.ndarray, cut: float) -> np.ndarray:
                if first is None:
                    return np.ones(len(ys), dtype=bool)
                return ~first.overlaps(ys, xs, ps, self.bkg_cutoff)

            centres, _, done = _draw_until(
                _box_sampler(state, (0, 0, shape[0], shape[1])),
                accept_ref,
                self.n_background,
                1.0,
                0.0,
                self.max_rejections,
                unique=False,
            )
            return centres, done
        assert breast is not None  # computed by sample_centres in improved mode
        rows = np.flatnonzero(breast.any(axis=1))
        cols = np.flatnonzero(breast.any(axis=0))
        gen = self._generator(image_id, 0)
        valid = [r for r in rois if r is not None]
        half = ps // 2

        def accept(ys: np.ndarray, xs: np.ndarray, cut: float) -> np.ndarray:
            ok = breast[ys, xs]
            for roi in valid:
                ok &= roi.count(ys - half, xs - half, ps) == 0
            return ok

        centres, _, done = _draw_until(
            _box_sampler(gen, (int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)),
            accept,
            self.n_background,
            1.0,
            0.0,
            self.max_rejections,
            unique=True,
        )
        return centres, done

    def crop_patches(self, img: NdarrayOrTensor, centers: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
        """The ``patch_size`` squares centred on ``centers``, zero-padded outside the image.

        Args:
            img: channel-first (C, H, W) image.
            centers: ``(y, x)`` patch centres in image pixels.

        Returns:
            one (C, ps, ps) tensor per centre: a MetaTensor with the source's metadata, a
            translated affine and ``patch_box`` / ``patch_center`` when metadata is tracked.
        """
        ps = self.patch_size
        src = convert_to_tensor(img, track_meta=get_track_meta())
        device = src.device
        # numpy copies: small torch copies are slow when the intra-op thread pool is contended
        data = _as_numpy(src)
        h, w = data.shape[-2:]
        if isinstance(src, MetaTensor):
            base_meta = {k: v for k, v in src.meta.items() if k != "affine"}
            base_affine = src.affine.as_tensor() if isinstance(src.affine, MetaTensor) else src.affine
        patches: list[torch.Tensor] = []
        for cy, cx in centers:
            y0, x0 = int(cy) - ps // 2, int(cx) - ps // 2
            if y0 >= 0 and x0 >= 0 and y0 + ps <= h and x0 + ps <= w:
                cut = data[:, y0 : y0 + ps, x0 : x0 + ps].copy()
            else:
                cut = np.zeros((data.shape[0], ps, ps), dtype=data.dtype)
                sy0, sy1, sx0, sx1 = max(y0, 0), min(y0 + ps, h), max(x0, 0), min(x0 + ps, w)
                if sy1 > sy0 and sx1 > sx0:
                    cut[:, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = data[:, sy0:sy1, sx0:sx1]
            patch = torch.from_numpy(cut).to(device)
            if not isinstance(src, MetaTensor):
                patches.append(patch)
                continue
            affine = base_affine.clone()
            affine[:2, -1] += affine[:2, :2] @ torch.tensor([y0, x0], dtype=affine.dtype)
            meta = dict(base_meta, patch_box=[y0, x0, y0 + ps, x0 + ps], patch_center=[int(cy), int(cx)])
            patches.append(MetaTensor(patch, affine=affine, meta=meta))
        return patches

    def __call__(  # type: ignore[override]
        self,
        img: NdarrayOrTensor,
        masks: Sequence[NdarrayOrTensor | None],
        classes: Sequence[int | None],
        breast_mask: NdarrayOrTensor | None = None,
        source: str | None = None,
        randomize: bool = True,
    ) -> list[dict[str, Any]]:
        """Sample the patch set of one image.

        Args:
            img: channel-first (C, H, W) image (MetaTensor, tensor or ndarray).
            masks: one image-sized mask per finding.
            classes: :class:`PatchClass` id of each finding (None when unknown).
            breast_mask: optional (1, H, W) breast mask for improved mode.
            source: image identifier (default: the MetaTensor's ``filename_or_obj``).
            randomize: draw a new call seed first.

        Returns:
            one dict per patch with ``image`` (C, ps, ps), ``label`` (int), ``patch_center``
            (y, x) and ``patch_box`` (y0, x0, y1, x1) int64 arrays in source pixels,
            ``finding_index`` (-1 for background), ``roi_cutoff_used`` (NaN for background and
            S1) and ``sampling_report`` (JSON string, see the class docstring).

        Raises:
            MammoSkip: (reason ``no_patches``) no patch at all could be sampled.
            MammoDataError: see :meth:`sample_centres`.
            MammoGeometryError: see :meth:`sample_centres`.
        """
        source = source if source is not None else _source_of(img)
        draws, report = self.sample_centres(img, masks, classes, breast_mask, source, randomize)
        if not draws:
            raise _no_patches(report, source)
        patches = self.crop_patches(img, [d.center for d in draws])
        report_json = json.dumps(report)
        return [
            {
                IMAGE_KEY: patch,
                LABEL_KEY: d.label,
                "patch_center": np.asarray(d.center, dtype=np.int64),
                "patch_box": _patch_box(d.center, self.patch_size),
                "finding_index": d.finding_index,
                "roi_cutoff_used": d.cutoff,
                "sampling_report": report_json,
            }
            for d, patch in zip(draws, patches)
        ]


def _no_patches(report: list[dict[str, Any]], source: str | None) -> MammoSkip:
    reasons = sorted({e["reason"] for e in report if e["reason"]})
    return MammoSkip(
        f"no patch could be sampled ({', '.join(reasons) or 'no findings'})", source, "no_patches"
    )


def _patch_box(center: tuple[int, int], size: int) -> np.ndarray:
    y0, x0 = center[0] - size // 2, center[1] - size // 2
    return np.asarray([y0, x0, y0 + size, x0 + size], dtype=np.int64)


def _finding_class(finding: Mapping[str, Any]) -> int | None:
    """PatchClass id of a findings-list entry: ``class_id``, else type + label/pathology."""
    if finding.get("class_id") is not None:
        return int(finding["class_id"])
    label = finding.get("label")
    label = pathology_to_label(finding.get("pathology")) if label is None else label
    kind = finding.get("type")
    if label is None or kind is None:
        return None
    try:
        return int(patch_class(str(kind), int(label)))
    except ValueError:
        return None


def _loaded_mask(finding: Mapping[str, Any], source: str | None) -> NdarrayOrTensor | None:
    """A finding's loaded mask array (None when it has none).

    Raises:
        MammoDataError: the mask is still a file path.
    """
    mask = finding.get("mask")
    if isinstance(mask, (str, bytes)) or hasattr(mask, "__fspath__"):
        raise MammoDataError(f"finding mask {mask!r} is a path: load it first (LoadFindingMasksd)", source)
    return mask


def _finding_mask(
    finding: Mapping[str, Any], shape: tuple[int, int], source: str | None
) -> NdarrayOrTensor | None:
    """A finding's mask array, or its bbox rasterised when it has no mask."""
    mask = _loaded_mask(finding, source)
    if mask is not None:
        return mask
    bbox = finding.get("bbox")
    if bbox is None:
        return None
    y0, x0, y1, x1 = (int(v) for v in bbox)
    raster = np.zeros(shape, dtype=bool)
    raster[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = True
    return raster


class FindingPatchesd(Randomizable, MapTransform, MultiSampleTrait):
    """Base of the dictionary patch samplers that read the project's findings schema.

    Holds the wrapped array sampler (``sampler_class(**kwargs)``), forwards seeding to it and
    unpacks an item: the keys present, the first key's image, its findings' masks (a finding
    with only a ``bbox`` uses the box), the optional breast mask and the other items.
    Subclasses implement ``__call__`` with :meth:`unpack`.

    Args:
        keys: image keys to crop (the first one drives the breast mask and the source name).
        findings_key: key of the findings list.
        breast_mask_key: key of an optional (1, H, W) breast mask.
        label_key: output key of the patch class.
        allow_missing_keys: don't raise for missing keys.
        kwargs: the wrapped sampler's parameters.
    """

    sampler_class: type[Randomizable]

    def __init__(
        self,
        keys: KeysCollection = IMAGE_KEY,
        findings_key: str = FINDINGS_KEY,
        breast_mask_key: str = "breast_mask",
        label_key: str = LABEL_KEY,
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.findings_key = findings_key
        self.breast_mask_key = breast_mask_key
        self.label_key = label_key
        self.sampler: Any = self.sampler_class(**kwargs)

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> FindingPatchesd:
        """Seed the wrapped sampler (see :meth:`monai.transforms.Randomizable.set_random_state`)."""
        super().set_random_state(seed, state)
        self.sampler.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        """Draw a new call seed in the wrapped sampler."""
        self.sampler.randomize(data)

    def unpack(self, data: Mapping[Hashable, Any]) -> FindingItem:
        """Split an item into what the samplers need.

        Raises:
            MammoDataError: none of the keys is present, or a finding's mask is still a path.
        """
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            raise MammoDataError(f"none of the keys {list(self.keys)} is in the data")
        img = d[keys[0]]
        shape = (int(img.shape[-2]), int(img.shape[-1]))
        findings = d.pop(self.findings_key, None) or []
        breast = d.pop(self.breast_mask_key, None)
        source = _source_of(img)
        return FindingItem(
            data=d,
            keys=keys,
            image=img,
            findings=findings,
            masks=[_finding_mask(f, shape, source) for f in findings],
            breast=breast,
            source=source,
            rest={k: v for k, v in d.items() if k not in keys},
        )


class FindingItem(NamedTuple):
    """An item unpacked by :meth:`FindingPatchesd.unpack`."""

    data: dict[Hashable, Any]
    keys: list[Hashable]
    image: Any
    findings: list[Mapping[str, Any]]
    masks: list[Any]
    breast: Any
    source: str | None
    rest: dict[Hashable, Any]


class SamplePatchesd(FindingPatchesd):
    """Dictionary version of :class:`SamplePatches` over the project's findings schema.

    Findings are read from ``data[findings_key]`` (see :mod:`monai_mammo.data.schema`): each
    needs a loaded ``mask`` array (a finding with only a ``bbox`` uses the box as its ROI) and
    a class (``class_id``, else ``type`` with ``label`` or ``pathology``). All ``keys`` are
    cropped with the same patch boxes; the first key is the image used for the breast mask.

    Args:
        keys: image keys to crop (the first one drives the breast mask and the source name).
        findings_key: key of the findings list.
        breast_mask_key: key of an optional (1, H, W) breast mask.
        label_key: output key of the patch class.
        allow_missing_keys: don't raise for missing keys.
        kwargs: the :class:`SamplePatches` parameters (``patch_size``, ``patch_set``, ``n_roi``,
            ``n_background``, ``roi_cutoff``, ``bkg_cutoff``, ``relax_step``,
            ``max_rejections``, ``mode``, ``reference_seed``).

    Returns:
        a list with one dict per patch: the other items of the input (deep-copied; the
        findings and breast mask are dropped), each key cropped to (C, ps, ps), ``label_key``,
        ``patch_center``, ``patch_box``, ``finding_index``, ``roi_cutoff_used`` and
        ``sampling_report`` as in :meth:`SamplePatches.__call__`.

    Raises:
        MammoSkip: (reason ``no_patches``) no patch could be sampled.
        MammoDataError: a finding's mask shape differs from the image.

    Example:
        >>> sampler = SamplePatchesd(keys="image", patch_set="S10").set_random_state(seed=0)  # doctest: +SKIP
        >>> samples = sampler({"image": img, "findings": [{"type": "mass", "label": 1, "mask": m}]})  # doctest: +SKIP
        >>> [s["label"] for s in samples][:2]  # doctest: +SKIP
        [4, 4]
    """

    backend = SamplePatches.backend
    sampler_class = SamplePatches

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:  # type: ignore[override]
        item = self.unpack(data)
        classes = [_finding_class(f) for f in item.findings]
        draws, report = self.sampler.sample_centres(item.image, item.masks, classes, item.breast, item.source)
        if not draws:
            raise _no_patches(report, item.source)
        report_json = json.dumps(report)
        centers = [draw.center for draw in draws]
        patches = {key: self.sampler.crop_patches(item.data[key], centers) for key in item.keys}
        out: list[dict[Hashable, Any]] = []
        for i, draw in enumerate(draws):
            sample: dict[Hashable, Any] = deepcopy(item.rest)
            for key in item.keys:
                sample[key] = patches[key][i]
            sample[self.label_key] = draw.label
            sample["patch_center"] = np.asarray(draw.center, dtype=np.int64)
            sample["patch_box"] = _patch_box(draw.center, self.sampler.patch_size)
            sample["finding_index"] = draw.finding_index
            sample["roi_cutoff_used"] = draw.cutoff
            sample["sampling_report"] = report_json
            out.append(sample)
        return out


def _extent_and_centre(
    shape: tuple[int, int], mask: NdarrayOrTensor | None, bbox: Sequence[int] | None, source: str | None
) -> tuple[tuple[int, int, int, int], tuple[float, float]]:
    """Extent (half-open box) and centre of a finding: bbox centre, else mask centroid."""
    if bbox is not None:
        y0, x0, y1, x1 = (int(v) for v in bbox)
        if not (0 <= y0 < y1 <= shape[0] and 0 <= x0 < x1 <= shape[1]):
            raise MammoGeometryError(f"bbox {list(bbox)} is empty or outside the {shape} image", source)
        return (y0, x0, y1, x1), ((y0 + y1) / 2.0, (x0 + x1) / 2.0)
    if mask is None:
        raise MammoDataError("the finding has neither a mask nor a bbox", source)
    plane = _mask_2d(mask, shape, "finding mask", source)
    ys, xs = np.nonzero(plane)
    if ys.size == 0:
        raise MammoSkip("empty finding mask", source, reason="empty_mask")
    extent = (int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1)
    return extent, (float(ys.mean()) + 0.5, float(xs.mean()) + 0.5)


def _window_start(centre: float, lo: int, hi: int, size: int, length: int) -> int:
    """Start of a ``size`` window centred on ``centre``, holding ``[lo, hi)``, inside ``[0, length)``."""
    if length < size:  # the image is smaller than the patch: symmetric zero padding
        return -((size - length) // 2)
    start = int(math.floor(centre - size / 2.0 + 0.5))
    start = max(min(start, lo), hi - size)
    return min(max(start, 0), length - size)


class LesionCenteredCrop(InvertibleTransform):
    """Crop a native-resolution patch centred on a finding (Mračko et al.), shifted inwards at borders.

    The patch is centred on the bbox centre (when a bbox is given) or the mask centroid, moved
    so that the whole finding stays inside, then shifted inwards so that it lies inside the
    image: no padding, except (zeros, symmetric, recorded) along a dimension where the image
    itself is smaller than the patch. The output's metadata records ``patch_box``
    ``[y0, x0, y1, x1]`` in source pixels (negative / beyond the image where padded). The crop
    is invertible: :meth:`inverse` pads the patch back to the source size.

    Args:
        spatial_size: patch size ``(h, w)`` or one int for a square.

    Raises:
        MammoConfigError: a non-positive size.

    Example:
        >>> crop = LesionCenteredCrop(674)
        >>> patch = crop(image, bbox=[100, 200, 180, 260])  # doctest: +SKIP
        >>> patch.shape[1:], patch.meta["patch_box"]  # doctest: +SKIP
        (torch.Size([674, 674]), [0, 0, 674, 674])
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, spatial_size: int | Sequence[int] = 674) -> None:
        size = (
            (int(spatial_size),) * 2 if isinstance(spatial_size, (int, np.integer)) else tuple(spatial_size)
        )
        if len(size) != 2 or min(size) < 1:
            raise MammoConfigError(f"spatial_size must be a positive int or (h, w), got {spatial_size!r}")
        self.spatial_size = (int(size[0]), int(size[1]))

    def compute_patch_box(
        self,
        spatial_shape: Sequence[int],
        mask: NdarrayOrTensor | None = None,
        bbox: Sequence[int] | None = None,
        source: str | None = None,
    ) -> tuple[int, int, int, int]:
        """The patch box ``(y0, x0, y1, x1)`` in source pixels for a finding.

        Args:
            spatial_shape: image size ``(H, W)``.
            mask: image-sized finding mask (used when ``bbox`` is None).
            bbox: finding box ``[y0, x0, y1, x1]`` (half-open), preferred over the mask.
            source: file name for error messages.

        Returns:
            the patch box; it extends beyond the image only where the image is smaller than the patch.

        Raises:
            MammoSkip: (reason ``finding_too_large``) the finding doesn't fit in the patch;
                (reason ``empty_mask``) the mask is empty.
            MammoDataError: neither mask nor bbox.
            MammoGeometryError: the bbox is empty or outside the image.
        """
        shape = (int(spatial_shape[-2]), int(spatial_shape[-1]))
        (ey0, ex0, ey1, ex1), (cy, cx) = _extent_and_centre(shape, mask, bbox, source)
        ph, pw = self.spatial_size
        if ey1 - ey0 > ph or ex1 - ex0 > pw:
            raise MammoSkip(
                f"finding of {ey1 - ey0} x {ex1 - ex0} px does not fit in a {ph} x {pw} patch",
                source,
                reason="finding_too_large",
            )
        y0 = _window_start(cy, ey0, ey1, ph, shape[0])
        x0 = _window_start(cx, ex0, ex1, pw, shape[1])
        return (y0, x0, y0 + ph, x0 + pw)

    def __call__(  # type: ignore[override]
        self,
        img: NdarrayOrTensor,
        mask: NdarrayOrTensor | None = None,
        bbox: Sequence[int] | None = None,
        patch_box: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Crop (and where needed pad) ``img`` around a finding.

        Args:
            img: channel-first (C, H, W) image.
            mask: image-sized finding mask (when ``bbox`` is None).
            bbox: finding box ``[y0, x0, y1, x1]``.
            patch_box: a precomputed :meth:`compute_patch_box` (then mask and bbox are ignored).

        Returns:
            the (C, h, w) patch (MetaTensor with ``patch_box`` in its metadata when tracked).

        Raises:
            MammoSkip: see :meth:`compute_patch_box`.
            MammoDataError: see :meth:`compute_patch_box`.
        """
        img_t = convert_to_tensor(img, track_meta=get_track_meta())
        h, w = (int(s) for s in img_t.shape[-2:])
        if patch_box is None:
            patch_box = self.compute_patch_box((h, w), mask, bbox, _source_of(img_t))
        y0, x0, y1, x1 = (int(v) for v in patch_box)
        slices = (slice(None), slice(max(y0, 0), min(y1, h)), slice(max(x0, 0), min(x1, w)))
        out = crop_func(img_t, slices, False, self.get_transform_info())
        to_pad = ((0, 0), (max(-y0, 0), max(y1 - h, 0)), (max(-x0, 0), max(x1 - w, 0)))
        if any(p for pair in to_pad for p in pair):
            # MONAI annotates to_pad as a 1-tuple; it takes one pair per dimension
            out = pad_func(out, to_pad, self.get_transform_info(), "constant", False)  # type: ignore[arg-type]
        if isinstance(out, MetaTensor):
            out.meta["patch_box"] = [y0, x0, y1, x1]
        return out

    def inverse(self, data: torch.Tensor) -> torch.Tensor:
        """Pad the patch back to the source image size (zeros outside the patch).

        Args:
            data: a MetaTensor produced by this transform.

        Returns:
            the source-sized image.
        """
        last = self.pop_transform(data)
        crop_op = last
        padded = None
        if "padded" in last[TraceKeys.EXTRA_INFO]:
            padded = last[TraceKeys.EXTRA_INFO]["padded"]
            crop_op = self.pop_transform(data)
        out = data
        if padded is not None:
            ends = [int(s) - int(p[1]) for s, p in zip(data.shape[1:], padded[1:])]
            unpad = SpatialCrop(roi_start=[int(p[0]) for p in padded[1:]], roi_end=ends)
            with unpad.trace_transform(False):
                out = unpad(out)
        restore = BorderPad(crop_op[TraceKeys.EXTRA_INFO]["cropped"])
        with restore.trace_transform(False):
            return restore(out)  # type: ignore[return-value]


def _crop_pad_array(arr: Any, box: Sequence[int]) -> Any:
    """Crop a (..., H, W) array or tensor to ``box`` with zero padding outside it."""
    h, w = arr.shape[-2:]
    y0, x0, y1, x1 = box
    part = arr[..., max(y0, 0) : min(y1, h), max(x0, 0) : min(x1, w)]
    pads = (max(-y0, 0), max(y1 - h, 0), max(-x0, 0), max(x1 - w, 0))
    if not any(pads):
        return part
    if isinstance(arr, torch.Tensor):
        return torch.nn.functional.pad(part, (pads[2], pads[3], pads[0], pads[1]))
    width = [(0, 0)] * (part.ndim - 2) + [(pads[0], pads[1]), (pads[2], pads[3])]
    return np.pad(part, width)


class LesionCenteredCropd(MapTransform, InvertibleTransform):
    """Dictionary version of :class:`LesionCenteredCrop` over the findings schema.

    The patch box comes from ``data[findings_key][finding_index]`` (its ``bbox`` when set,
    else its loaded ``mask``); every key is cropped with the same box; all findings are
    moved into patch coordinates (bboxes shifted and clipped, mask arrays cropped).

    Args:
        keys: image keys to crop.
        findings_key: key of the findings list.
        finding_index: which finding to centre on.
        spatial_size: patch size ``(h, w)`` or one int.
        patch_box_key: output key of the patch box (None: only in the metadata).
        allow_missing_keys: don't raise for missing keys.

    Raises:
        MammoSkip: (reason ``finding_too_large`` / ``empty_mask``) see :class:`LesionCenteredCrop`.
        MammoDataError: no such finding.

    Example:
        >>> crop = LesionCenteredCropd("image", spatial_size=674)
        >>> out = crop({"image": img, "findings": [{"type": "calcification", "bbox": [10, 20, 90, 60]}]})  # doctest: +SKIP
        >>> out["patch_box"]  # doctest: +SKIP
        [0, 0, 674, 674]
    """

    backend = LesionCenteredCrop.backend

    def __init__(
        self,
        keys: KeysCollection = IMAGE_KEY,
        findings_key: str = FINDINGS_KEY,
        finding_index: int = 0,
        spatial_size: int | Sequence[int] = 674,
        patch_box_key: str | None = "patch_box",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.findings_key = findings_key
        self.finding_index = finding_index
        self.patch_box_key = patch_box_key
        self.cropper = LesionCenteredCrop(spatial_size)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return d
        img = d[keys[0]]
        source = _source_of(img)
        findings = d.get(self.findings_key) or []
        if not -len(findings) <= self.finding_index < len(findings):
            raise MammoDataError(f"no finding {self.finding_index} (the image has {len(findings)})", source)
        finding = findings[self.finding_index]
        mask = _loaded_mask(finding, source)
        box = self.cropper.compute_patch_box(img.shape[-2:], mask, finding.get("bbox"), source)
        for key in keys:
            d[key] = self.cropper(d[key], patch_box=box)
        d[self.findings_key] = [_shift_finding(f, box) for f in findings]
        if self.patch_box_key is not None:
            d[self.patch_box_key] = list(box)
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Pad every key back to the source size (findings are left in patch coordinates)."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.cropper.inverse(d[key])
        return d


def _shift_finding(finding: Mapping[str, Any], box: Sequence[int]) -> dict[str, Any]:
    out = dict(finding)
    y0, x0, y1, x1 = box
    if out.get("bbox") is not None:
        by0, bx0, by1, bx1 = (int(v) for v in out["bbox"])
        h, w = y1 - y0, x1 - x0
        out["bbox"] = [
            min(max(by0 - y0, 0), h),
            min(max(bx0 - x0, 0), w),
            min(max(by1 - y0, 0), h),
            min(max(bx1 - x0, 0), w),
        ]
    if hasattr(out.get("mask"), "shape"):
        out["mask"] = _crop_pad_array(out["mask"], box)
    return out


SamplePatchesD = SamplePatchesDict = SamplePatchesd
LesionCenteredCropD = LesionCenteredCropDict = LesionCenteredCropd
