"""Deterministic synthetic mammograms with ground-truth lesion masks.

The generator draws a compressed breast (CC or MLO, left or right) with a skin line, a
pectoral muscle (MLO), power-law (1/f^beta) parenchyma whose glandular fraction follows the
ACR density, a noisy background with burned-in text markers, and optional lesions:

* benign masses: round/oval/lobulated, circumscribed (smooth boundary);
* malignant masses: irregular core with radiating spicules;
* benign calcifications: few, coarse, round, scattered over a larger area;
* malignant calcifications: many, small, pleomorphic or linear, tightly clustered.

Two acquisition styles make domain-shift studies possible: ``"film"`` (CBIS-DDSM-like:
16-bit, film grain, lower contrast, scanner streaks and a film-edge band) and ``"digital"``
(FFDM-like: 12/14-bit, clean, brighter periphery, a stored window, sometimes MONOCHROME1).

Everything is drawn from one seed: the same seed and arguments give bit-identical images.
The seed is split into independent streams (setup, anatomy, lesions, acquisition, text), so the
same seed with and without findings (or with the other style, or another explicit density)
gives the same breast: the difference image isolates the lesions, for counterfactual and
domain-shift studies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import scipy.fft

from monai_mammo.data.schema import FINDING_TYPES, PATHOLOGIES
from monai_mammo.data.synthetic.types import FindingSpec, SyntheticFinding, SyntheticMammogram
from monai_mammo.exceptions import MammoConfigError

__all__ = ["synthesize_mammogram", "random_findings", "MIN_SHAPE"]

MIN_SHAPE = (128, 96)
VIEWS = ("CC", "MLO")
STYLES = ("film", "digital")
LATERALITIES = ("L", "R")
PHOTOMETRICS = ("MONOCHROME2", "MONOCHROME1")

_TEXTURE_ROWS = 576  # rows of the low-resolution grid for smooth fields (outline, parenchyma)
_MAX_BREAST_WIDTH = 0.80  # the breast never extends past this fraction of the width
_DENSITY_PRIOR = (0.1, 0.4, 0.4, 0.1)  # ACR 1..4 prevalence when density is random
_GLAND_FRACTION = {1: (0.08, 0.2), 2: (0.25, 0.45), 3: (0.5, 0.7), 4: (0.75, 0.9)}


@dataclass(frozen=True)
class _Anatomy:
    """The breast geometry in the canonical frame (chest wall at column 0).

    Smooth fields live on a low-resolution grid (``scale`` full-resolution pixels per cell);
    only the breast outline and the skin distance are kept at full resolution.

    Attributes:
        breast: boolean breast region (pectoral included), full resolution.
        skin_dist: full-resolution distance to the skin line in pixels (0 outside the breast).
        breast_lr: boolean breast region, low resolution.
        pectoral_lr: soft pectoral muscle weight in [0, 1] (zeros for CC), low resolution.
        place_dist: low-resolution distance (in full-resolution pixels) to the skin, the
            pectoral muscle or the image border, used to place lesions away from all three.
        scale: full-resolution pixels per low-resolution pixel.
    """

    breast: np.ndarray
    skin_dist: np.ndarray
    breast_lr: np.ndarray
    pectoral_lr: np.ndarray
    place_dist: np.ndarray
    scale: float


@dataclass(frozen=True)
class _Lesion:
    """A lesion drawn in a local patch of the canonical frame.

    Attributes:
        layer: float32 brightness increment in [0, 1] of the patch.
        mask: boolean ROI mask of the patch.
        top_left: (row, column) of the patch in the image (may be negative: clipped on paste).
        finding: the finding record (its mask is filled on paste).
        contrast: brightness scale applied to ``layer``.
    """

    layer: np.ndarray
    mask: np.ndarray
    top_left: tuple[int, int]
    finding: SyntheticFinding
    contrast: float


def synthesize_mammogram(
    seed: int | np.random.Generator,
    *,
    shape: tuple[int, int] = (1152, 896),
    laterality: str = "L",
    view: str = "CC",
    style: str = "digital",
    density: int | None = None,
    findings: Sequence[FindingSpec] = (),
    photometric: str | None = None,
    text_markers: bool = True,
) -> SyntheticMammogram:
    """Generate one synthetic mammogram with the ground truth of its lesions.

    Args:
        seed: an integer seed or a generator (its seed sequence spawns the streams); the same
            seed and arguments give bit-identical output, and the breast (outline and
            texture) does not depend on ``findings``, ``style``, ``photometric`` or ``text_markers``.
        shape: (rows, columns), at least :data:`MIN_SHAPE`.
        laterality: ``"L"`` (breast touches the left image edge, pointing right) or ``"R"``
            (touches the right edge).
        view: ``"CC"`` or ``"MLO"`` (MLO adds the pectoral muscle at the top chest-wall corner).
        style: ``"film"`` (CBIS-DDSM-like, 16 bits, MONOCHROME2) or ``"digital"`` (FFDM-like,
            12 or 14 bits, stored window).
        density: ACR density 1..4; drawn from a screening prior when None.
        findings: the lesions to draw; empty for a normal image.
        photometric: ``"MONOCHROME2"`` or ``"MONOCHROME1"``; None picks MONOCHROME2 for film
            and MONOCHROME1 with probability 0.2 for digital. MONOCHROME1 stores inverted values.
        text_markers: burn a laterality/view marker (e.g. ``"L CC"``) into the background
            corner away from the breast.

    Returns:
        The image (uint16 stored values) with its findings, density and acquisition metadata.

    Raises:
        MammoConfigError: unknown laterality, view, style or photometric, a shape below
            :data:`MIN_SHAPE`, a density outside 1..4, or an invalid finding.

    Example:
        >>> spec = FindingSpec("mass", "MALIGNANT")
        >>> image = synthesize_mammogram(0, shape=(576, 448), laterality="R", findings=[spec])
        >>> image.pixels.shape, image.findings[0].descriptors["mass margins"] in ("SPICULATED", "ILL_DEFINED")
        ((576, 448), True)
    """
    rows, cols = _check_arguments(shape, laterality, view, style, density, findings, photometric)
    setup, anatomy_rng, lesion_rng, acquisition, marker_rng = _as_generator(seed).spawn(5)
    density = int(setup.choice(4, p=_DENSITY_PRIOR)) + 1 if density is None else density
    if photometric is None:
        monochrome1 = style == "digital" and setup.random() < 0.2
        photometric = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    anatomy = _breast_anatomy(anatomy_rng, (rows, cols), view)
    brightness = _parenchyma(anatomy_rng, anatomy, density, style)
    found = _paste_lesions(brightness, _draw_findings(lesion_rng, anatomy, findings, density), anatomy.breast)
    breast = anatomy.breast
    if laterality == "R":
        brightness, breast = np.ascontiguousarray(brightness[:, ::-1]), np.ascontiguousarray(breast[:, ::-1])
        for finding in found:
            finding.mask = np.ascontiguousarray(finding.mask[:, ::-1])
    edge = _film_artefacts(acquisition, brightness, laterality) if style == "film" else 0
    if text_markers:
        marker = laterality + str(marker_rng.choice(["", " "])) + view
        _burn_text(marker_rng, brightness, breast, marker, laterality, edge)
    pixels, bits = _to_stored(acquisition, brightness, style)
    if photometric == "MONOCHROME1":
        pixels = ((1 << bits) - 1 - pixels).astype(np.uint16)
    window = _stored_window(pixels, breast) if style == "digital" else None
    spacing = (240.0 if style == "digital" else 250.0) / rows
    return SyntheticMammogram(
        pixels=pixels,
        bits_stored=bits,
        photometric=photometric,
        laterality=laterality,
        view=view,
        style=style,
        density=density,
        findings=found,
        window=window,
        pixel_spacing=(spacing, spacing),
    )


def random_findings(
    rng: np.random.Generator,
    *,
    malignant_fraction: float = 0.5,
    max_findings: int = 2,
    kinds: Sequence[str] = ("mass", "calcification"),
) -> list[FindingSpec]:
    """Draw 1..``max_findings`` lesion specifications with independent pathologies.

    Benign findings are ``BENIGN`` or, less often, ``BENIGN_WITHOUT_CALLBACK`` (more often
    for calcifications, as in CBIS-DDSM). Sizes are left to the generator (``size_px=None``).

    Args:
        rng: the generator to draw from.
        malignant_fraction: probability that each finding is malignant, in [0, 1].
        max_findings: the largest number of findings (at least 1).
        kinds: finding types to draw from (``"mass"``, ``"calcification"``).

    Returns:
        A non-empty list of :class:`FindingSpec`.

    Raises:
        MammoConfigError: a fraction outside [0, 1], ``max_findings < 1`` or an unknown kind.

    Example:
        >>> specs = random_findings(np.random.default_rng(0), max_findings=1, kinds=("mass",))
        >>> len(specs), specs[0].type
        (1, 'mass')
    """
    if not 0.0 <= malignant_fraction <= 1.0:
        raise MammoConfigError(f"malignant_fraction must be in [0, 1], got {malignant_fraction}")
    if max_findings < 1:
        raise MammoConfigError(f"max_findings must be at least 1, got {max_findings}")
    if not kinds or any(kind not in FINDING_TYPES for kind in kinds):
        raise MammoConfigError(f"kinds must be a non-empty subset of {FINDING_TYPES}, got {tuple(kinds)}")
    specs = []
    for _ in range(int(rng.integers(1, max_findings + 1))):
        kind = str(kinds[int(rng.integers(len(kinds)))])
        if rng.random() < malignant_fraction:
            pathology = "MALIGNANT"
        else:
            without_callback = rng.random() < (0.4 if kind == "calcification" else 0.15)
            pathology = "BENIGN_WITHOUT_CALLBACK" if without_callback else "BENIGN"
        specs.append(FindingSpec(kind, pathology))  # type: ignore[arg-type]
    return specs


def _check_arguments(
    shape: tuple[int, int],
    laterality: str,
    view: str,
    style: str,
    density: int | None,
    findings: Sequence[FindingSpec],
    photometric: str | None,
) -> tuple[int, int]:
    """Validate the generator's arguments and return the shape as two ints.

    Raises:
        MammoConfigError: the first invalid argument.
    """
    if len(shape) != 2 or int(shape[0]) < MIN_SHAPE[0] or int(shape[1]) < MIN_SHAPE[1]:
        raise MammoConfigError(f"shape must be (rows, columns) of at least {MIN_SHAPE}, got {shape}")
    for name, value, allowed in (
        ("laterality", laterality, LATERALITIES),
        ("view", view, VIEWS),
        ("style", style, STYLES),
    ):
        if value not in allowed:
            raise MammoConfigError(f"unknown {name} {value!r}; expected one of {allowed}")
    if photometric is not None and photometric not in PHOTOMETRICS:
        raise MammoConfigError(f"unknown photometric {photometric!r}; expected one of {PHOTOMETRICS}")
    if density is not None and density not in (1, 2, 3, 4):
        raise MammoConfigError(f"density must be an ACR category 1..4 or None, got {density!r}")
    for spec in findings:
        _check_finding(spec, (int(shape[0]), int(shape[1])))
    return int(shape[0]), int(shape[1])


def _check_finding(spec: FindingSpec, shape: tuple[int, int]) -> None:
    """Validate one finding specification against the image shape.

    Raises:
        MammoConfigError: unknown type or pathology, or a size outside [4, min(shape) / 3].
    """
    if not isinstance(spec, FindingSpec):
        raise MammoConfigError(f"findings must be FindingSpec instances, got {type(spec).__name__}")
    if spec.type not in FINDING_TYPES:
        raise MammoConfigError(f"unknown finding type {spec.type!r}; expected one of {FINDING_TYPES}")
    if spec.pathology not in PATHOLOGIES:
        raise MammoConfigError(f"unknown pathology {spec.pathology!r}; expected one of {PATHOLOGIES}")
    largest = min(shape) // 3
    if spec.size_px is not None and not 4 <= spec.size_px <= largest:
        raise MammoConfigError(
            f"finding size_px must be in [4, {largest}] for shape {shape}, got {spec.size_px}"
        )


def _as_generator(seed: int | np.random.Generator) -> np.random.Generator:
    """Return ``seed`` itself when it is a generator, else a PCG64 generator seeded with it.

    Raises:
        MammoConfigError: the seed is neither an integer nor a generator.
    """
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return np.random.default_rng(int(seed))
    raise MammoConfigError(f"seed must be an int or a numpy Generator, got {type(seed).__name__}")


def _low_res_shape(shape: tuple[int, int]) -> tuple[tuple[int, int], float]:
    """Shape of the low-resolution grid for smooth fields and its scale factor."""
    scale = max(1.0, shape[0] / _TEXTURE_ROWS)
    return (max(8, round(shape[0] / scale)), max(8, round(shape[1] / scale))), scale


def _upsample(field: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float32 field to ``shape`` (rows, columns)."""
    if field.shape == shape:
        return field
    return cv2.resize(field, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def _breast_anatomy(rng: np.random.Generator, shape: tuple[int, int], view: str) -> _Anatomy:
    """Draw the breast outline (and pectoral muscle for MLO) in the canonical frame.

    The outline is a half ellipse centred on the chest wall (column 0) whose radius is
    modulated by a few low-order harmonics; MLO breasts are taller and reach the top edge.
    """
    (h, w), scale = _low_res_shape(shape)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if view == "CC":
        cy, a_top, a_bottom = (
            rng.uniform(0.45, 0.55) * h,
            rng.uniform(0.36, 0.44) * h,
            rng.uniform(0.36, 0.44) * h,
        )
        b = rng.uniform(0.58, 0.72) * w
    else:
        cy, a_top, a_bottom = (
            rng.uniform(0.36, 0.44) * h,
            rng.uniform(0.55, 0.7) * h,
            rng.uniform(0.45, 0.52) * h,
        )
        b = rng.uniform(0.56, 0.7) * w
    dy = (yy - cy) / np.where(yy < cy, a_top, a_bottom).astype(np.float32)
    dx = xx / np.float32(b)
    theta = np.arctan2(dy, dx)
    radius = np.ones_like(theta)
    for order in range(2, 6):
        amplitude = rng.uniform(0.0, 0.05) / order
        radius += np.float32(amplitude) * np.cos(order * theta + np.float32(rng.uniform(0, 2 * np.pi)))
    norm = np.sqrt(dy * dy + dx * dx) / radius
    norm = np.maximum(norm, xx / np.float32(_MAX_BREAST_WIDTH * w))
    breast_lr = norm < 1.0
    pectoral_lr = np.zeros((h, w), np.float32)
    if view == "MLO":
        pw, ph = rng.uniform(0.18, 0.3) * w, rng.uniform(0.3, 0.48) * h
        bend = np.float32(rng.uniform(-0.35, 0.35))
        level = xx / np.float32(pw) + yy / np.float32(ph)
        level = level + bend * (xx / np.float32(pw)) * (yy / np.float32(ph))
        pectoral_lr = np.clip((1.0 - level) / 0.08 + 0.5, 0.0, 1.0).astype(np.float32) * breast_lr
    breast = _upsample(norm.astype(np.float32), shape) < 1.0
    skin_dist = cv2.distanceTransform(breast.astype(np.uint8), cv2.DIST_L2, 3)
    free_lr = cv2.copyMakeBorder(
        (breast_lr & (pectoral_lr < 0.05)).astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT
    )
    place_dist = (cv2.distanceTransform(free_lr, cv2.DIST_L2, 3)[1:-1, 1:-1] - 1.0) * np.float32(scale)
    return _Anatomy(breast, skin_dist, breast_lr, pectoral_lr, place_dist, scale)


def _power_noise(rng: np.random.Generator, shape: tuple[int, int], beta: float, stretch: float) -> np.ndarray:
    """Zero-mean, unit-variance 1/f^beta noise, elongated along the columns by ``stretch``.

    The field is synthesised on an FFT-friendly grid at least as large as ``shape`` and cropped.

    Args:
        rng: the generator.
        shape: (rows, columns) of the field.
        beta: spectral exponent of the power spectrum (2.5..3.5 looks like parenchyma).
        stretch: > 1 penalises horizontal frequencies, elongating structures towards the nipple.

    Returns:
        float32 field of ``shape``.
    """
    grid = (scipy.fft.next_fast_len(shape[0], real=True), scipy.fft.next_fast_len(shape[1], real=True))
    spectrum = scipy.fft.rfft2(rng.standard_normal(grid, dtype=np.float32))
    fy = np.fft.fftfreq(grid[0]).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(grid[1]).astype(np.float32)[None, :] * np.float32(stretch)
    freq = fy * fy + fx * fx
    freq[0, 0] = np.inf
    spectrum *= freq ** np.float32(-beta / 4.0)
    field = scipy.fft.irfft2(spectrum, s=grid)[: shape[0], : shape[1]]
    return ((field - field.mean()) / max(float(field.std()), 1e-12)).astype(np.float32)


def _parenchyma(rng: np.random.Generator, anatomy: _Anatomy, density: int, style: str) -> np.ndarray:
    """Brightness (MONOCHROME2, roughly [0, 1]) of background, tissue, skin and pectoral.

    The glandular fraction of the breast follows the ACR density (a 1/f^beta field thresholded
    at the matching quantile, biased towards the breast centre); the tissue brightness falls
    off towards the skin with the compressed thickness (less so for the equalised digital
    style); a finer power-law texture at up to twice the low resolution adds detail.
    """
    shape = anatomy.breast.shape
    lr_shape = anatomy.breast_lr.shape
    gland_noise = _power_noise(rng, lr_shape, rng.uniform(2.5, 3.5), rng.uniform(1.2, 1.8))
    depth = cv2.distanceTransform(anatomy.breast_lr.astype(np.uint8), cv2.DIST_L2, 3)
    score = gland_noise + np.float32(2.0) * np.sqrt(depth / np.float32(max(float(depth.max()), 1.0)))
    inside = score[anatomy.breast_lr]
    threshold = np.quantile(inside, 1.0 - rng.uniform(*_GLAND_FRACTION[density])) if inside.size else 0.0
    gland = 1.0 / (1.0 + np.exp((np.float32(threshold) - score) / np.float32(0.3)))
    fat, dense = (0.32, 0.62) if style == "digital" else (0.38, 0.6)
    heterogeneity = _power_noise(rng, lr_shape, rng.uniform(1.8, 2.4), 1.0)
    tissue = fat + (dense - fat) * gland * (np.float32(1.0) + np.float32(0.15) * heterogeneity)
    tissue += anatomy.pectoral_lr * (np.float32(rng.uniform(0.72, 0.8)) - tissue)
    falloff, floor = (0.06, 0.45) if style == "digital" else (0.1, 0.2)
    edge = np.minimum(depth * np.float32(anatomy.scale / (falloff * shape[1])), 1.0)
    thickness = np.float32(floor) + np.float32(1.0 - floor) * np.sqrt(edge * (2.0 - edge))
    background = np.float32(rng.uniform(0.02, 0.05))
    brightness = _upsample((thickness * tissue).astype(np.float32), shape)
    detail_shape = (min(shape[0], 2 * lr_shape[0]), min(shape[1], 2 * lr_shape[1]))
    brightness += _upsample(
        _power_noise(rng, detail_shape, rng.uniform(1.8, 2.4), 1.0) * np.float32(0.03), shape
    )
    skin = anatomy.skin_dist * np.float32(-1.0 / max(1.0, shape[0] / 450.0))
    skin += np.float32(1.0)
    np.maximum(skin, 0.0, out=skin)
    skin *= np.float32(0.18)
    brightness += skin
    brightness += background
    np.copyto(brightness, background, where=~anatomy.breast)
    return brightness


def _draw_findings(
    rng: np.random.Generator, anatomy: _Anatomy, findings: Sequence[FindingSpec], density: int
) -> list[_Lesion]:
    """Draw every finding at a free place inside the breast, away from skin and pectoral."""
    rows = anatomy.breast.shape[0]
    taken: list[tuple[float, float, float]] = []
    lesions = []
    for spec in findings:
        malignant = spec.pathology == "MALIGNANT"
        if spec.type == "mass":
            size = spec.size_px or rng.uniform(0.06, 0.1) * rows
            extent = 0.5 * size * (2.3 if malignant else 1.05)
        else:
            size = spec.size_px or rng.uniform(0.06, 0.085 if malignant else 0.12) * rows
            extent = 0.5 * size * 1.15
        center, shrink = _place(rng, anatomy, extent, taken, margin=0.02 * rows)
        taken.append((center[0], center[1], extent * shrink))
        draw = _draw_mass if spec.type == "mass" else _draw_calcifications
        lesions.append(draw(rng, spec, center, 0.5 * size * shrink, rows, density))
    return lesions


def _place(
    rng: np.random.Generator,
    anatomy: _Anatomy,
    extent: float,
    taken: list[tuple[float, float, float]],
    margin: float,
) -> tuple[tuple[float, float], float]:
    """Pick a lesion centre whose ``extent`` stays ``margin`` inside the breast.

    Centres overlapping earlier lesions are avoided when possible. When the breast is too
    small for the lesion, the deepest point is used and the lesion shrunk to fit.

    Returns:
        ((row, column) full-resolution centre, shrink factor <= 1).
    """
    dist = anatomy.place_dist
    ys, xs = np.nonzero(dist >= extent + margin)
    if ys.size == 0:
        y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
        return (float(y) * anatomy.scale, float(x) * anatomy.scale), max(0.2, (dist[y, x] - margin) / extent)
    cy, cx = ys * anatomy.scale, xs * anatomy.scale
    free = np.ones(ys.size, bool)
    for ty, tx, textent in taken:
        free &= np.hypot(cy - ty, cx - tx) > textent + extent + margin
    pool = np.flatnonzero(free) if free.any() else np.arange(ys.size)
    pick = int(pool[rng.integers(pool.size)])
    return (float(cy[pick]), float(cx[pick])), 1.0


def _assessment(rng: np.random.Generator, malignant: bool) -> int:
    """BI-RADS assessment: 4-5 for malignant findings, 2-4 for benign ones."""
    if malignant:
        return int(rng.choice([4, 5], p=[0.45, 0.55]))
    return int(rng.choice([2, 3, 4], p=[0.3, 0.3, 0.4]))


def _subtlety(conspicuity: float, density: int) -> int:
    """Subtlety 1 (subtle) .. 5 (obvious) from the drawn contrast and the breast density."""
    return int(np.clip(round(1 + 4 * conspicuity - 0.5 * (density - 2.5)), 1, 5))


def _patch_grid(center: tuple[float, float], half: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Local (row, column) offsets from the centre over a square patch of side 2*half+1."""
    top, left = round(center[0]) - half, round(center[1]) - half
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    yy += np.float32(top + half - center[0])
    xx += np.float32(left + half - center[1])
    return yy, xx, (top, left)


def _draw_mass(
    rng: np.random.Generator,
    spec: FindingSpec,
    center: tuple[float, float],
    radius: float,
    rows: int,
    density: int,
) -> _Lesion:
    """Draw a mass: smooth round/oval/lobulated (benign) or irregular spiculated (malignant)."""
    malignant = spec.pathology == "MALIGNANT"
    half = int(math.ceil(radius * (2.4 if malignant else 1.2))) + 2
    yy, xx, top_left = _patch_grid(center, half)
    if malignant:
        layer, mask, descriptors = _malignant_mass(rng, yy, xx, radius, rows)
    else:
        layer, mask, descriptors = _benign_mass(rng, yy, xx, radius)
    conspicuity = rng.random()
    contrast = (0.26 if malignant else 0.18) + 0.14 * conspicuity  # malignant masses: high density
    finding = SyntheticFinding(
        type="mass",
        pathology=spec.pathology,
        mask=mask,
        descriptors=descriptors,
        assessment=_assessment(rng, malignant),
        subtlety=_subtlety(conspicuity, density),
    )
    return _Lesion(layer, mask, top_left, finding, contrast)


def _benign_mass(
    rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """Smooth dome-shaped round, oval or lobulated mass with a circumscribed boundary."""
    lobes = 1 if rng.random() < 0.75 else int(rng.integers(2, 4))
    norm = np.full(yy.shape, np.inf, np.float32)
    ratio = 1.0
    for lobe in range(lobes):
        ratio = rng.uniform(0.6, 1.0)
        angle = rng.uniform(0, np.pi)
        shift = 0.0 if lobe == 0 else 0.45 * radius
        oy, ox = shift * math.sin(angle + lobe), shift * math.cos(angle + lobe)
        cos, sin = np.float32(math.cos(angle)), np.float32(math.sin(angle))
        u, v = (xx - ox) * cos + (yy - oy) * sin, (yy - oy) * cos - (xx - ox) * sin
        lobe_radius = radius * (1.0 if lobe == 0 else rng.uniform(0.55, 0.75))
        norm = np.minimum(norm, np.sqrt((u / lobe_radius) ** 2 + (v / (lobe_radius * ratio)) ** 2))
    mask = norm < 1.0
    layer = np.sqrt(np.clip(1.0 - norm * norm, 0.0, 1.0)) ** 0.5
    obscured = rng.random() < 0.15
    layer = cv2.GaussianBlur(layer.astype(np.float32), (0, 0), max(0.5, radius * (0.1 if obscured else 0.03)))
    shape = "LOBULATED" if lobes > 1 else ("ROUND" if ratio > 0.85 else "OVAL")
    return layer, mask, {"mass shape": shape, "mass margins": "OBSCURED" if obscured else "CIRCUMSCRIBED"}


def _malignant_mass(
    rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, radius: float, rows: int
) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """Irregular mass core with radiating spicules (or ill-defined with short strands)."""
    theta = np.arctan2(yy, xx)
    boundary = np.ones_like(theta)
    for order in range(2, 9):
        amplitude = np.float32(rng.uniform(0.03, 0.12) * (3.0 / (order + 1)))
        boundary += amplitude * np.cos(order * theta + np.float32(rng.uniform(0, 2 * np.pi)))
    boundary = np.maximum(boundary, 0.45) * np.float32(radius)
    norm = np.sqrt(yy * yy + xx * xx) / boundary
    core = np.sqrt(np.clip(1.0 - norm * norm, 0.0, 1.0)) ** 0.5
    spiculated = rng.random() < 0.75
    core = cv2.GaussianBlur(
        core.astype(np.float32), (0, 0), max(0.5, radius * (0.04 if spiculated else 0.12))
    )
    count = int(rng.integers(12, 22)) if spiculated else int(rng.integers(6, 11))
    reach = (0.3, 1.2) if spiculated else (0.0, 0.35)
    spicules = _spicules(rng, core.shape, radius, count, reach, width=max(1.0, rows / 320.0))
    fade = np.clip(np.float32(1.4) - np.sqrt(yy * yy + xx * xx) / np.float32(2.4 * radius), 0.35, 1.0)
    layer = np.maximum(core, spicules * fade * np.float32(rng.uniform(0.6, 0.85)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    mask = cv2.morphologyEx(((norm < 1.0) | (spicules > 0.35)).astype(np.uint8), cv2.MORPH_CLOSE, kernel) > 0
    shape = "IRREGULAR" if rng.random() < 0.85 else "IRREGULAR-ARCHITECTURAL_DISTORTION"
    return layer, mask, {"mass shape": shape, "mass margins": "SPICULATED" if spiculated else "ILL_DEFINED"}


def _spicules(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    radius: float,
    count: int,
    reach: tuple[float, float],
    width: float,
) -> np.ndarray:
    """Thin, tapered, slightly curved lines radiating from the patch centre.

    Args:
        rng: the generator.
        shape: patch shape (square, odd side).
        radius: core radius in pixels; spicules start at 0.6 radius.
        count: number of spicules (their angles are evenly spread, then jittered).
        reach: (min, max) length beyond the core, as a fraction of the radius.
        width: half-width of a spicule at its root in pixels.

    Returns:
        float32 layer of ``shape`` in [0, 1].
    """
    canvas = np.zeros(shape[:2], np.uint8)
    half = (shape[0] - 1) / 2.0
    start = rng.uniform(0, 2 * np.pi)
    steps = np.linspace(0.0, 1.0, 6)[:, None]
    for index in range(count):
        angle = start + 2 * np.pi * (index + rng.uniform(-0.35, 0.35)) / count
        bend = np.cumsum(rng.normal(0.0, 0.06, steps.shape[0]))[:, None]
        directions = np.concatenate([np.cos(angle + bend), np.sin(angle + bend)], axis=1)
        length = radius * (0.4 + rng.uniform(*reach))
        path = half + 0.6 * radius * directions[:1] + np.cumsum(directions * length / steps.shape[0], axis=0)
        normals = np.stack([-directions[:, 1], directions[:, 0]], axis=1)
        widths = width * rng.uniform(0.7, 1.3) * (1.0 - 0.85 * steps)
        polygon = np.concatenate([path + widths * normals, (path - widths * normals)[::-1]])
        cv2.fillPoly(canvas, [np.round(polygon * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    return canvas.astype(np.float32) / np.float32(255.0)


def _draw_calcifications(
    rng: np.random.Generator,
    spec: FindingSpec,
    center: tuple[float, float],
    radius: float,
    rows: int,
    density: int,
) -> _Lesion:
    """Draw a calcification cluster; its mask is the dilated convex hull of the calcifications.

    Benign: 3..8 coarse round (or lucent-centred) calcifications scattered over the extent.
    Malignant: 15..35 small pleomorphic or fine linear calcifications, tightly clustered.
    """
    malignant = spec.pathology == "MALIGNANT"
    half = int(math.ceil(radius * 1.2)) + 4
    canvas = np.zeros((2 * half + 1, 2 * half + 1), np.uint8)
    origin = np.array([half + center[1] - round(center[1]), half + center[0] - round(center[0])])
    top_left = (round(center[0]) - half, round(center[1]) - half)
    if malignant:
        descriptors = _malignant_calcs(rng, canvas, origin, radius, rows)
    else:
        descriptors = _benign_calcs(rng, canvas, origin, radius, rows)
    layer = cv2.GaussianBlur(canvas.astype(np.float32) / np.float32(255.0), (0, 0), max(0.4, rows / 2500.0))
    points = cv2.findNonZero(canvas)
    mask_canvas = np.zeros_like(canvas)
    cv2.fillConvexPoly(mask_canvas, cv2.convexHull(points), 1)
    grow = max(2, round(0.12 * radius))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
    mask = cv2.dilate(mask_canvas, kernel) > 0
    conspicuity = rng.random()
    finding = SyntheticFinding(
        type="calcification",
        pathology=spec.pathology,
        mask=mask,
        descriptors=descriptors,
        assessment=_assessment(rng, malignant),
        subtlety=_subtlety(conspicuity, density),
    )
    return _Lesion(layer, mask, top_left, finding, 0.4 + 0.2 * conspicuity)


def _scatter(
    rng: np.random.Generator, count: int, radius: float, spread: float, spacing: float
) -> np.ndarray:
    """Up to ``count`` (x, y) offsets within ``radius``, Gaussian of std ``spread * radius``,
    at least ``spacing`` apart (rejection sampling, bounded tries)."""
    points: list[np.ndarray] = []
    for _ in range(count * 30):
        if len(points) == count:
            break
        point = rng.normal(0.0, spread * radius, 2) if spread > 0 else rng.uniform(-radius, radius, 2)
        if np.hypot(*point) > radius or any(np.hypot(*(point - p)) < spacing for p in points):
            continue
        points.append(point)
    return np.array(points).reshape(-1, 2)


def _benign_calcs(
    rng: np.random.Generator, canvas: np.ndarray, origin: np.ndarray, radius: float, rows: int
) -> dict[str, str]:
    """Few coarse round calcifications scattered over the extent (drawn into ``canvas``)."""
    kind = str(rng.choice(["ROUND_AND_REGULAR", "COARSE", "LUCENT_CENTER"], p=[0.45, 0.35, 0.2]))
    size = max(1.6, rows * rng.uniform(0.0022, 0.0035))  # radius: >= 3 px diameter at 1152 rows
    points = _scatter(rng, int(rng.integers(3, 9)), radius, 0.0, spacing=6 * size)
    for point in points:
        calc_radius = size * rng.uniform(0.8, 1.25) * (1.4 if kind == "COARSE" else 1.0)
        value = int(rng.integers(200, 256))
        blobs = int(rng.integers(2, 4)) if kind == "COARSE" else 1
        for _ in range(blobs):
            jitter = rng.normal(0, 0.4 * calc_radius, 2) if blobs > 1 else np.zeros(2)
            xy = tuple(int(v) for v in np.round((origin + point + jitter) * 16))
            thickness = max(1, round(calc_radius * 0.45)) if kind == "LUCENT_CENTER" else -1
            cv2.circle(canvas, xy, round(calc_radius * 16), value, thickness, cv2.LINE_AA, shift=4)
    distribution = "SCATTERED" if rng.random() < 0.6 else "REGIONAL"
    return {"calc type": kind, "calc distribution": distribution}


def _malignant_calcs(
    rng: np.random.Generator, canvas: np.ndarray, origin: np.ndarray, radius: float, rows: int
) -> dict[str, str]:
    """Many small pleomorphic (or fine linear branching) calcifications clustered tightly."""
    linear = rng.random() < 0.3
    size = max(0.9, rows * rng.uniform(0.0011, 0.0016))
    points = _scatter(rng, int(rng.integers(15, 36)), radius, 0.4, spacing=2.5 * size)
    axes = rng.uniform(0, np.pi, int(rng.integers(1, 4)))
    for point in points:
        value = int(rng.integers(190, 256))
        centre = origin + point
        if linear:
            angle = axes[int(rng.integers(axes.size))] + rng.normal(0, 0.25)
            half_length = size * rng.uniform(1.5, 3.0)
            step = half_length * np.array([math.cos(angle), math.sin(angle)])
            ends = np.round(np.stack([centre - step, centre + step]) * 16).astype(np.int32)
            thickness = max(1, round(size * 1.2))
            cv2.line(canvas, tuple(ends[0]), tuple(ends[1]), value, thickness, cv2.LINE_AA, shift=4)
        else:
            vertices = int(rng.integers(3, 7))
            angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
            radii = size * rng.uniform(0.5, 1.5, vertices)
            polygon = centre + np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
            cv2.fillConvexPoly(canvas, np.round(polygon * 16).astype(np.int32), value, cv2.LINE_AA, shift=4)
    kind = "FINE_LINEAR_BRANCHING" if linear else "PLEOMORPHIC"
    distribution = "LINEAR" if linear and rng.random() < 0.3 else "CLUSTERED"
    return {"calc type": kind, "calc distribution": distribution}


def _paste_lesions(
    brightness: np.ndarray, lesions: Sequence[_Lesion], breast: np.ndarray
) -> list[SyntheticFinding]:
    """Add each lesion's layer to ``brightness`` (in place) and set its full-size mask.

    Returns:
        The findings, with image-sized boolean masks restricted to the breast.
    """
    rows, cols = brightness.shape
    found = []
    for lesion in lesions:
        top, left = lesion.top_left
        y0, x0 = max(top, 0), max(left, 0)
        y1, x1 = min(top + lesion.layer.shape[0], rows), min(left + lesion.layer.shape[1], cols)
        local = (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))
        brightness[y0:y1, x0:x1] += np.float32(lesion.contrast) * lesion.layer[local]
        mask = np.zeros((rows, cols), bool)
        mask[y0:y1, x0:x1] = lesion.mask[local]
        lesion.finding.mask = mask & breast
        found.append(lesion.finding)
    return found


def _film_artefacts(rng: np.random.Generator, brightness: np.ndarray, laterality: str) -> int:
    """Add scanner streaks and a bright film-edge band on the side away from the breast.

    Returns:
        The band width in pixels (the text marker keeps clear of it).
    """
    rows, cols = brightness.shape
    streaks = np.cumsum(rng.normal(0.0, 0.0015, cols)).astype(np.float32)
    brightness += (streaks - streaks.mean())[None, :]
    band = max(2, round(cols * rng.uniform(0.008, 0.025)))
    ragged = np.clip(band + np.cumsum(rng.normal(0.0, 0.3, rows)), 1, 2 * band).astype(np.int32)
    level = np.float32(rng.uniform(0.55, 0.85))
    columns = np.arange(cols)[None, :]
    inside = columns >= cols - ragged[:, None] if laterality == "L" else columns < ragged[:, None]
    brightness[inside] = level
    return int(ragged.max())


def _burn_text(
    rng: np.random.Generator,
    brightness: np.ndarray,
    breast: np.ndarray,
    text: str,
    laterality: str,
    edge: int,
) -> None:
    """Burn ``text`` (bright, in place) into the top or bottom background corner away from the breast.

    The corner that does not touch the (dilated) breast is used; when both do, the marker is
    skipped rather than drawn over tissue.
    """
    rows, cols = brightness.shape
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = rows * 0.035 / 22.0
    thickness = max(1, round(scale * 2))
    (width, height), baseline = cv2.getTextSize(text, font, scale, thickness)
    margin = max(2, round(0.02 * cols)) + edge
    x = cols - margin - width if laterality == "L" else margin
    corners = [round(0.03 * rows) + height, rows - round(0.03 * rows) - baseline]
    if rng.random() < 0.5:
        corners.reverse()
    pad = max(2, round(0.02 * rows))
    for y in corners:
        box = breast[max(0, y - height - pad) : y + baseline + pad, max(0, x - pad) : x + width + pad]
        if x >= 0 and not box.any():
            canvas = np.zeros(brightness.shape, np.uint8)
            cv2.putText(canvas, text, (x, y), font, scale, 255, thickness, cv2.LINE_AA)
            region = canvas > 0
            value = np.float32(rng.uniform(0.85, 0.98))
            brightness[region] += (value - brightness[region]) * canvas[region] / np.float32(255.0)
            return


def _to_stored(rng: np.random.Generator, brightness: np.ndarray, style: str) -> tuple[np.ndarray, int]:
    """Apply the style's characteristic curve and noise, then quantise (MONOCHROME2 values).

    Film: lower contrast, offset, strong correlated grain, 16 bits.
    Digital: gamma-lifted, mild quantum noise, 12 or 14 bits.

    Returns:
        (uint16 stored values, bits stored).
    """
    noise = rng.standard_normal(brightness.shape, dtype=np.float32)
    np.clip(brightness, 0.0, 1.0, out=brightness)
    if style == "film":
        bits = 16
        grain = cv2.GaussianBlur(noise, (0, 0), 0.8)
        low, span = rng.uniform(0.03, 0.08), rng.uniform(0.65, 0.8)
        values = np.float32(low) + np.float32(span) * brightness ** np.float32(rng.uniform(1.15, 1.4))
        values += np.float32(0.012) * grain * (np.float32(0.5) + values)
    else:
        bits = int(rng.choice([12, 14]))
        values = brightness ** np.float32(rng.uniform(0.7, 0.85)) * np.float32(rng.uniform(0.85, 0.95))
        values += np.float32(0.004) * noise
    top = (1 << bits) - 1
    values *= np.float32(top)
    return np.clip(np.rint(values), 0, top).astype(np.uint16), bits


def _stored_window(pixels: np.ndarray, breast: np.ndarray) -> tuple[float, float]:
    """(center, width) spanning the breast's stored values (0.5..99.5 percentiles, 10% wider)."""
    sample = pixels[::4, ::4][breast[::4, ::4]]
    low, high = np.percentile(sample, [0.5, 99.5]) if sample.size else (0.0, float(pixels.max()))
    return float(round((low + high) / 2.0)), float(max(1.0, round((high - low) * 1.1)))
