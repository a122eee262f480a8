"""Training patches of Wu et al.'s 4-class patch classifier (NYU heatmaps).

The patch classifier of Wu et al. 2019 labels 256 x 256 patches of a mammogram as
``malignant``, ``benign``, ``outside`` (mostly background) or ``negative`` (breast tissue
without lesion); applied with a sliding window it produces the benign and malignant heatmaps
(:mod:`monai_mammo.engines.heatmaps`). The class ids are the positions in
:data:`NYU_PATCH_CLASSES`, which is also the order of the classifier's outputs.

:class:`SampleTissuePatches` / :class:`SampleTissuePatchesd` draw such patches from an image
and its lesion masks:

* ``malignant`` / ``benign``: centred on a random pixel of a malignant / benign lesion, moved
  by a uniform jitter of at most ``jitter`` pixels per axis, then shifted inwards so that the
  patch lies inside the image (the drawn lesion pixel stays inside the patch because
  ``jitter < patch_size / 2``). A benign patch containing any malignant pixel is rejected
  (malignant wins).
* ``outside``: uniform positions whose patch holds at most ``outside_max_breast`` breast
  pixels (fraction) and no lesion pixel.
* ``negative``: uniform positions whose patch holds at least ``negative_min_breast`` breast
  pixels and no lesion pixel.

Patches lie inside the image; along an axis where the image is shorter than the patch the
patch starts at 0 and is zero-padded at the end (the rule of the heatmap sliding window).
The breast comes from :func:`~monai_mammo.transforms.patches.breast_region` unless given.
Each class draws up to ``max_candidates`` random candidates at once (vectorised, summed-area
tables) and keeps the first distinct accepted ones.

Nothing is dropped silently: every sample carries a JSON ``sampling_report`` with one entry
per class (``requested``, ``n_patches``, ``status`` ``ok`` / ``partial`` / ``absent`` (the image
has no lesion of that class: the usual case for most images) / ``exhausted``, ``reason``,
``message``). With ``strict=True`` a shortfall of a class that could be sampled (``partial``
or ``exhausted``) raises :class:`~monai_mammo.exceptions.MammoSkip`; an image that yields no
patch at all always raises one (reason ``no_patches``), as does an image with a finding whose
mask is missing or empty or whose pathology is unknown (reasons ``missing_mask``,
``unknown_pathology``), since lesion-free patches could not be guaranteed.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping, Sequence
from copy import deepcopy
from typing import Any

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import Randomizable, Transform
from monai.utils import MAX_SEED, TransformBackends, convert_to_tensor

from monai_mammo.data.schema import IMAGE_KEY, LABEL_KEY, pathology_to_label
from monai_mammo.exceptions import MammoConfigError, MammoDataError, MammoSkip
from monai_mammo.transforms.breast import extract_window
from monai_mammo.transforms.patches import FindingPatchesd, _mask_2d, _source_of, breast_region

__all__ = [
    "NYU_PATCH_CLASSES",
    "SampleTissuePatches",
    "SampleTissuePatchesd",
    "SampleTissuePatchesD",
    "SampleTissuePatchesDict",
]

NYU_PATCH_CLASSES = ("malignant", "benign", "outside", "negative")
"""Classes of Wu et al.'s patch classifier, in output order (class id = position)."""


class _BoxCounter:
    """Pixels of a mask inside ``size`` x ``size`` boxes, vectorised with a summed-area table."""

    def __init__(self, mask: np.ndarray) -> None:
        self.sat = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
        np.cumsum(np.cumsum(mask, axis=0, dtype=np.int64), axis=1, out=self.sat[1:, 1:])

    def count(self, y0: np.ndarray, x0: np.ndarray, size: int) -> np.ndarray:
        h, w = self.sat.shape[0] - 1, self.sat.shape[1] - 1
        a0, a1 = np.clip(y0, 0, h), np.clip(y0 + size, 0, h)
        b0, b1 = np.clip(x0, 0, w), np.clip(x0 + size, 0, w)
        s = self.sat
        return s[a1, b1] - s[a0, b1] - s[a1, b0] + s[a0, b0]


def _first_distinct(y0: np.ndarray, x0: np.ndarray, ok: np.ndarray, n: int) -> list[tuple[int, int]]:
    """The first ``n`` distinct accepted corners, in draw order."""
    chosen: dict[tuple[int, int], None] = {}
    for y, x in zip(y0[ok].tolist(), x0[ok].tolist()):
        chosen.setdefault((y, x))
        if len(chosen) == n:
            break
    return list(chosen)


def _report_entry(name: str, requested: int, found: int, present: bool) -> dict[str, Any]:
    """The report entry of one class."""
    class_id = NYU_PATCH_CLASSES.index(name)
    if requested == 0 or found == requested:
        status, reason, message = "ok", "", ""
    elif not present:
        status, reason = "absent", f"no_{name}_lesion"
        message = f"the image has no {name} lesion"
    else:
        status, reason = ("partial" if found else "exhausted"), f"{name}_exhausted"
        message = f"only {found} of {requested} {name} patches could be sampled"
    return {
        "class": name,
        "label": class_id,
        "requested": requested,
        "n_patches": found,
        "status": status,
        "reason": reason,
        "message": message,
    }


class SampleTissuePatches(Randomizable, Transform):
    """Sample malignant / benign / outside / negative patches from one image (see the module docs).

    Args:
        patch_size: side of the square patches (Wu et al.: 256).
        counts: patches wanted per class name of :data:`NYU_PATCH_CLASSES` (missing classes: 0);
            default one per class. Lesion classes are sampled only when the image has such a lesion.
        jitter: largest shift in pixels (per axis) of a lesion patch centre from the drawn lesion
            pixel; must be below ``patch_size / 2``. Default ``patch_size // 8`` (32 for 256).
        outside_max_breast: largest fraction of breast pixels in an ``outside`` patch.
        negative_min_breast: smallest fraction of breast pixels in a ``negative`` patch.
        max_candidates: random candidates drawn per class.
        strict: raise :class:`MammoSkip` when a class that could be sampled falls short.

    Raises:
        MammoConfigError: unknown class names, negative counts or out-of-range parameters.

    Example:
        >>> sampler = SampleTissuePatches(patch_size=64, counts={"malignant": 2, "negative": 2})
        >>> sampler.set_random_state(seed=0)  # doctest: +SKIP
        >>> samples = sampler(image, masks=[mask], labels=[1])  # doctest: +SKIP
        >>> [s["label"] for s in samples]  # doctest: +SKIP
        [0, 0, 3, 3]
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        patch_size: int = 256,
        counts: Mapping[str, int] | None = None,
        jitter: int | None = None,
        outside_max_breast: float = 0.5,
        negative_min_breast: float = 0.75,
        max_candidates: int = 4096,
        strict: bool = False,
    ) -> None:
        counts = dict.fromkeys(NYU_PATCH_CLASSES, 1) if counts is None else dict(counts)
        jitter = patch_size // 8 if jitter is None else jitter
        unknown = sorted(set(counts) - set(NYU_PATCH_CLASSES))
        if unknown:
            raise MammoConfigError(
                f"unknown patch classes {unknown}; expected some of {list(NYU_PATCH_CLASSES)}"
            )
        if any(int(n) < 0 for n in counts.values()):
            raise MammoConfigError(f"patch counts must be >= 0, got {counts}")
        if patch_size < 1 or not 0 <= jitter < patch_size / 2:
            raise MammoConfigError(
                f"need patch_size >= 1 and 0 <= jitter < patch_size / 2, got {patch_size}, {jitter}"
            )
        if not (0 <= outside_max_breast <= 1 and 0 <= negative_min_breast <= 1 and max_candidates >= 1):
            raise MammoConfigError("breast fractions must be in [0, 1] and max_candidates >= 1")
        self.patch_size = int(patch_size)
        self.counts = {name: int(counts.get(name, 0)) for name in NYU_PATCH_CLASSES}
        self.jitter = int(jitter)
        self.outside_max_breast = float(outside_max_breast)
        self.negative_min_breast = float(negative_min_breast)
        self.max_candidates = int(max_candidates)
        self.strict = strict
        self._seed = 0

    def randomize(self, data: Any = None) -> None:
        """Draw the call seed from which the per-class generators are derived."""
        self._seed = int(self.R.randint(MAX_SEED, dtype="uint32"))

    def _lesion_starts(
        self, gen: np.random.Generator, lesion: np.ndarray, shape: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-left corners of patches around random lesion pixels (jittered, shifted inside)."""
        ys, xs = np.nonzero(lesion)
        pick = gen.integers(0, ys.size, size=self.max_candidates)
        shift = gen.integers(-self.jitter, self.jitter + 1, size=(2, self.max_candidates))
        half = self.patch_size // 2
        y0 = np.clip(ys[pick] + shift[0] - half, 0, max(shape[0] - self.patch_size, 0))
        x0 = np.clip(xs[pick] + shift[1] - half, 0, max(shape[1] - self.patch_size, 0))
        return y0, x0

    def _uniform_starts(
        self, gen: np.random.Generator, shape: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Uniform top-left corners of patches inside the image."""
        y0 = gen.integers(0, max(shape[0] - self.patch_size, 0) + 1, size=self.max_candidates)
        x0 = gen.integers(0, max(shape[1] - self.patch_size, 0) + 1, size=self.max_candidates)
        return y0, x0

    def sample_boxes(
        self,
        img: NdarrayOrTensor,
        masks: Sequence[NdarrayOrTensor | None],
        labels: Sequence[int | None],
        breast_mask: NdarrayOrTensor | None = None,
        source: str | None = None,
        randomize: bool = True,
    ) -> tuple[list[tuple[int, tuple[int, int]]], list[dict[str, Any]]]:
        """Patch positions of one image, without cropping.

        Args:
            img: channel-first (C, H, W) image (its first channel gives the breast when
                ``breast_mask`` is None).
            masks: one image-sized lesion mask per finding ((1, H, W) or (H, W)).
            labels: per finding 1 = malignant, 0 = benign.
            breast_mask: optional (1, H, W) or (H, W) breast mask.
            source: image name for messages (default: the MetaTensor's ``filename_or_obj``).
            randomize: draw a new call seed first.

        Returns:
            ``[(class id, (y0, x0)), ...]`` grouped by class in :data:`NYU_PATCH_CLASSES` order,
            and the sampling report (one entry per class).

        Raises:
            MammoSkip: a finding without a usable mask (``missing_mask``) or pathology
                (``unknown_pathology``); with ``strict``, a class falling short
                (``<class>_exhausted``).
            MammoDataError: masks and labels differ in number or a mask's shape differs from
                the image's.
            MammoGeometryError: no breast mask given and the image is constant.
        """
        if randomize:
            self.randomize()
        source = _source_of(img) if source is None else source
        shape = (int(img.shape[-2]), int(img.shape[-1]))
        if len(masks) != len(labels):
            raise MammoDataError(f"{len(masks)} lesion masks but {len(labels)} labels", source)
        lesions = {name: np.zeros(shape, dtype=bool) for name in ("malignant", "benign")}
        for index, (mask, label) in enumerate(zip(masks, labels)):
            if label not in (0, 1):
                raise MammoSkip(
                    f"finding {index}: unknown pathology ({label!r})", source, "unknown_pathology"
                )
            plane = None if mask is None else _mask_2d(mask, shape, f"mask of finding {index}", source)
            if plane is None or not plane.any():
                raise MammoSkip(f"finding {index}: missing or empty lesion mask", source, "missing_mask")
            lesions["malignant" if label else "benign"] |= plane
        breast = (
            breast_region(img, source)
            if breast_mask is None
            else _mask_2d(breast_mask, shape, "breast mask", source)
        )
        ps, area = self.patch_size, float(self.patch_size**2)
        malignant = _BoxCounter(lesions["malignant"])
        any_lesion = _BoxCounter(lesions["malignant"] | lesions["benign"])
        in_breast = _BoxCounter(breast)
        boxes: list[tuple[int, tuple[int, int]]] = []
        report = []
        for class_id, name in enumerate(NYU_PATCH_CLASSES):
            wanted = self.counts[name]
            gen = np.random.default_rng([self._seed, class_id])
            present = name not in lesions or bool(lesions[name].any())
            found: list[tuple[int, int]] = []
            if wanted and present:
                if name in lesions:
                    y0, x0 = self._lesion_starts(gen, lesions[name], shape)
                    ok = (
                        np.ones(y0.size, dtype=bool)
                        if name == "malignant"
                        else malignant.count(y0, x0, ps) == 0
                    )
                else:
                    y0, x0 = self._uniform_starts(gen, shape)
                    fraction = in_breast.count(y0, x0, ps) / area
                    inside = (
                        fraction <= self.outside_max_breast
                        if name == "outside"
                        else fraction >= self.negative_min_breast
                    )
                    ok = inside & (any_lesion.count(y0, x0, ps) == 0)
                found = _first_distinct(y0, x0, ok, wanted)
            entry = _report_entry(name, wanted, len(found), present)
            if self.strict and entry["status"] in ("partial", "exhausted"):
                raise MammoSkip(entry["message"], source, entry["reason"])
            report.append(entry)
            boxes.extend((class_id, start) for start in found)
        return boxes, report

    def crop(self, img: NdarrayOrTensor, start: tuple[int, int]) -> torch.Tensor:
        """The patch of ``img`` starting at ``start`` (zero beyond the image).

        Args:
            img: channel-first (C, H, W) image.
            start: ``(y0, x0)`` top-left corner.

        Returns:
            The (C, ps, ps) patch; a MetaTensor keeps the source's metadata with a translated
            affine and ``patch_box`` ``[y0, x0, y1, x1]``.
        """
        src = convert_to_tensor(img, track_meta=get_track_meta())
        y0, x0 = start
        patch = extract_window(src, start, (self.patch_size, self.patch_size))
        if not isinstance(src, MetaTensor):
            return patch
        affine = src.affine.as_tensor().clone() if isinstance(src.affine, MetaTensor) else src.affine.clone()
        affine[:2, -1] += affine[:2, :2] @ torch.tensor([y0, x0], dtype=affine.dtype)
        meta = {k: v for k, v in src.meta.items() if k != "affine"}
        meta["patch_box"] = [y0, x0, y0 + self.patch_size, x0 + self.patch_size]
        data = patch.as_tensor() if isinstance(patch, MetaTensor) else patch
        return MetaTensor(data, affine=affine, meta=meta)

    def __call__(  # type: ignore[override]
        self,
        img: NdarrayOrTensor,
        masks: Sequence[NdarrayOrTensor | None],
        labels: Sequence[int | None],
        breast_mask: NdarrayOrTensor | None = None,
        source: str | None = None,
        randomize: bool = True,
    ) -> list[dict[str, Any]]:
        """Sample the patches of one image.

        Args:
            img: channel-first (C, H, W) image.
            masks: one image-sized lesion mask per finding.
            labels: per finding 1 = malignant, 0 = benign.
            breast_mask: optional breast mask.
            source: image name for messages.
            randomize: draw a new call seed first.

        Returns:
            One dict per patch: ``image`` (C, ps, ps), ``label`` (class id), ``patch_box``
            (int64 ``[y0, x0, y1, x1]``) and ``sampling_report`` (JSON string).

        Raises:
            MammoSkip: no patch at all (``no_patches``), or as :meth:`sample_boxes`.
            MammoDataError: as :meth:`sample_boxes`.
        """
        boxes, report = self.sample_boxes(img, masks, labels, breast_mask, source, randomize)
        if not boxes:
            raise _no_patches(report, source)
        report_json = json.dumps(report)
        return [
            {
                IMAGE_KEY: self.crop(img, start),
                LABEL_KEY: class_id,
                "patch_box": _patch_box(start, self.patch_size),
                "sampling_report": report_json,
            }
            for class_id, start in boxes
        ]


def _patch_box(start: tuple[int, int], size: int) -> np.ndarray:
    """The half-open box ``[y0, x0, y1, x1]`` of a patch as int64."""
    return np.asarray([start[0], start[1], start[0] + size, start[1] + size], dtype=np.int64)


def _no_patches(report: list[dict[str, Any]], source: str | None) -> MammoSkip:
    """The skip of an image that yielded no patch, naming the classes' reasons."""
    reasons = sorted({entry["reason"] for entry in report if entry["reason"]})
    return MammoSkip(
        f"no patch could be sampled ({', '.join(reasons) or 'no patch requested'})", source, "no_patches"
    )


def _finding_label(finding: Mapping[str, Any]) -> int | None:
    """A finding's ``label``, else its pathology's (None when unknown)."""
    label = finding.get("label")
    return pathology_to_label(finding.get("pathology")) if label is None else int(label)


class SampleTissuePatchesd(FindingPatchesd):
    """Dictionary version of :class:`SampleTissuePatches` over the project's findings schema.

    Findings are read from ``data[findings_key]``: each needs a loaded ``mask`` array
    (:class:`~monai_mammo.transforms.findings.LoadFindingMasksd`; a finding with only a
    ``bbox`` uses the box) and a ``label`` (else its ``pathology``). Every key is cropped with
    the same boxes; the first key drives the breast mask and the source name.

    Args:
        keys: image keys to crop.
        findings_key: key of the findings list (absent or empty: a normal image).
        breast_mask_key: key of an optional breast mask.
        label_key: output key of the class id.
        allow_missing_keys: don't raise for missing keys.
        kwargs: the :class:`SampleTissuePatches` parameters (``patch_size``, ``counts``,
            ``jitter``, ``outside_max_breast``, ``negative_min_breast``, ``max_candidates``,
            ``strict``).

    Returns:
        A list with one dict per patch: the other items of the input (deep-copied; the
        findings and breast mask are dropped), each key cropped to (C, ps, ps), ``label_key``,
        ``patch_box`` and ``sampling_report``.

    Raises:
        MammoSkip: as :meth:`SampleTissuePatches.__call__`.
        MammoDataError: no key present, a mask still a path or of the wrong shape.

    Example:
        >>> sampler = SampleTissuePatchesd("image", patch_size=256).set_random_state(seed=0)  # doctest: +SKIP
        >>> samples = sampler({"image": img, "findings": [{"type": "mass", "label": 1, "mask": m}]})  # doctest: +SKIP
        >>> sorted({s["label"] for s in samples})  # doctest: +SKIP
        [0, 2, 3]
    """

    backend = SampleTissuePatches.backend
    sampler_class = SampleTissuePatches

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:  # type: ignore[override]
        """Sample the patches of one item (see the class docstring)."""
        item = self.unpack(data)
        labels = [_finding_label(f) for f in item.findings]
        boxes, report = self.sampler.sample_boxes(item.image, item.masks, labels, item.breast, item.source)
        if not boxes:
            raise _no_patches(report, item.source)
        report_json = json.dumps(report)
        out: list[dict[Hashable, Any]] = []
        for class_id, start in boxes:
            sample: dict[Hashable, Any] = deepcopy(item.rest)
            for key in item.keys:
                sample[key] = self.sampler.crop(item.data[key], start)
            sample[self.label_key] = class_id
            sample["patch_box"] = _patch_box(start, self.sampler.patch_size)
            sample["sampling_report"] = report_json
            out.append(sample)
        return out


SampleTissuePatchesD = SampleTissuePatchesDict = SampleTissuePatchesd
