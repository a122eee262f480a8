"""Tests of the deterministic synthetic mammogram generator."""

from __future__ import annotations

import functools

import cv2
import numpy as np
import pytest
from skimage.measure import label, regionprops

from monai_mammo.data.schema import PATHOLOGIES
from monai_mammo.data.synthetic.phantom import random_findings, synthesize_mammogram
from monai_mammo.data.synthetic.types import FindingSpec, SyntheticMammogram
from monai_mammo.exceptions import MammoConfigError

SMALL = (384, 288)
MASS_B, MASS_M = FindingSpec("mass", "BENIGN"), FindingSpec("mass", "MALIGNANT")
CALC_B, CALC_M = FindingSpec("calcification", "BENIGN"), FindingSpec("calcification", "MALIGNANT")


def presentation(image: SyntheticMammogram) -> np.ndarray:
    """Stored values as a viewer shows them (MONOCHROME1 inverted), scaled to [0, 1]."""
    values = image.pixels.astype(np.float64) / ((1 << image.bits_stored) - 1)
    return 1.0 - values if image.photometric == "MONOCHROME1" else values


def background_patch(shown: np.ndarray, laterality: str = "L") -> np.ndarray:
    """Mid-height patch near the far edge (away from the breast and the film-edge band)."""
    rows, cols = shown.shape
    far = (
        slice(int(0.86 * cols), int(0.94 * cols))
        if laterality == "L"
        else slice(int(0.06 * cols), int(0.14 * cols))
    )
    return shown[int(0.35 * rows) : int(0.65 * rows), far]


@functools.lru_cache(maxsize=8)
def normal_presentation(seed: int, shape: tuple[int, int]) -> np.ndarray:
    """Presentation image of the seed's breast without findings (cached: shared by both classes)."""
    return presentation(synthesize_mammogram(seed, shape=shape, photometric="MONOCHROME2"))


def lesion_difference(
    seed: int, spec: FindingSpec, shape: tuple[int, int]
) -> tuple[np.ndarray, SyntheticMammogram]:
    """Presentation image with the lesion minus the same seed without it, and the lesion image."""
    with_lesion = synthesize_mammogram(seed, shape=shape, photometric="MONOCHROME2", findings=[spec])
    return presentation(with_lesion) - normal_presentation(seed, shape), with_lesion


def auc(negatives: list[float], positives: list[float]) -> float:
    """Probability that a positive scores higher than a negative (ties count half)."""
    neg, pos = np.asarray(negatives)[:, None], np.asarray(positives)[None, :]
    return float(np.mean((pos > neg) + 0.5 * (pos == neg)))


def test_same_seed_is_bit_identical_and_other_seed_differs():
    kwargs = {"shape": SMALL, "view": "MLO", "style": "film", "findings": [MASS_M, CALC_B]}
    first, second = synthesize_mammogram(7, **kwargs), synthesize_mammogram(7, **kwargs)
    assert np.array_equal(first.pixels, second.pixels)
    assert (first.density, first.photometric, first.bits_stored) == (
        second.density,
        second.photometric,
        second.bits_stored,
    )
    for a, b in zip(first.findings, second.findings, strict=True):
        assert np.array_equal(a.mask, b.mask) and a.descriptors == b.descriptors
    assert not np.array_equal(first.pixels, synthesize_mammogram(8, **kwargs).pixels)
    from_generator = synthesize_mammogram(np.random.default_rng(7), **kwargs)
    assert np.array_equal(
        from_generator.pixels, synthesize_mammogram(np.random.default_rng(7), **kwargs).pixels
    )


def test_findings_change_only_their_region():
    with_lesions = synthesize_mammogram(3, shape=SMALL, findings=[MASS_B, CALC_M], photometric="MONOCHROME2")
    normal = synthesize_mammogram(3, shape=SMALL, photometric="MONOCHROME2")
    assert normal.findings == []
    changed = with_lesions.pixels != normal.pixels
    union = np.logical_or.reduce([finding.mask for finding in with_lesions.findings]).astype(np.uint8)
    near = cv2.dilate(union, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (25, 25))) > 0
    assert changed.any() and not (changed & ~near).any()
    assert (changed & (union > 0)).sum() > 0.75 * changed.sum()  # blurred margins spill a little


@pytest.mark.parametrize("style", ["film", "digital"])
def test_dtype_bits_and_window_per_style(style):
    for seed in range(4):
        image = synthesize_mammogram(seed, shape=SMALL, style=style)
        assert image.pixels.dtype == np.uint16 and image.pixels.shape == SMALL
        assert image.bits_stored == 16 if style == "film" else image.bits_stored in (12, 14)
        assert int(image.pixels.max()) < 2**image.bits_stored
        assert image.density in (1, 2, 3, 4) and image.style == style
        if style == "film":
            assert image.photometric == "MONOCHROME2" and image.window is None
        else:
            assert image.window is not None
            center, width = image.window
            assert 0 < center < 2**image.bits_stored and 0 < width <= 2**image.bits_stored


def test_digital_photometric_is_sometimes_monochrome1():
    photometrics = {synthesize_mammogram(seed, shape=(128, 96)).photometric for seed in range(30)}
    assert photometrics == {"MONOCHROME1", "MONOCHROME2"}
    image = synthesize_mammogram(0, shape=SMALL, photometric="MONOCHROME1")
    shown = presentation(image)
    assert shown[:, : SMALL[1] // 5].mean() > shown[:, -SMALL[1] // 5 :].mean() + 0.2


@pytest.mark.parametrize("view", ["CC", "MLO"])
@pytest.mark.parametrize("laterality", ["L", "R"])
def test_breast_touches_the_laterality_edge(laterality, view):
    for seed in range(3):
        shown = presentation(synthesize_mammogram(seed, shape=SMALL, laterality=laterality, view=view))
        tissue = shown[:, : int(0.9 * SMALL[1])] if laterality == "L" else shown[:, int(0.1 * SMALL[1]) :]
        profile = tissue.sum(axis=0)
        centre_of_mass = (profile * np.arange(profile.size)).sum() / profile.sum() / profile.size
        chest_wall = shown[SMALL[0] // 3 : 2 * SMALL[0] // 3, 0 if laterality == "L" else -1]
        far_edge = shown[
            SMALL[0] // 3 : 2 * SMALL[0] // 3, int(0.88 * SMALL[1]) * (1 if laterality == "L" else -1)
        ]
        assert chest_wall.min() > far_edge.max()
        assert centre_of_mass < 0.45 if laterality == "L" else centre_of_mass > 0.55


@pytest.mark.parametrize("laterality", ["L", "R"])
def test_mlo_has_a_bright_pectoral_corner(laterality):
    rows, cols = int(0.08 * SMALL[0]), int(0.06 * SMALL[1])
    corner = (slice(0, rows), slice(0, cols) if laterality == "L" else slice(-cols, None))
    for seed in range(4):
        kwargs = {"shape": SMALL, "laterality": laterality, "style": "digital", "photometric": "MONOCHROME2"}
        mlo = presentation(synthesize_mammogram(seed, view="MLO", **kwargs))
        cc = presentation(synthesize_mammogram(seed, view="CC", **kwargs))
        assert mlo[corner].mean() > cc[corner].mean() + 0.2
        assert mlo[corner].mean() > np.median(mlo[SMALL[0] // 3 : 2 * SMALL[0] // 3, corner[1]])


@pytest.mark.parametrize(
    ("style", "photometric"), [("film", None), ("digital", "MONOCHROME2"), ("digital", "MONOCHROME1")]
)
def test_background_is_noisy_but_far_darker_than_breast(style, photometric):
    for seed in range(3):
        image = synthesize_mammogram(seed, shape=SMALL, style=style, photometric=photometric)
        shown = presentation(image)
        middle = slice(int(0.35 * SMALL[0]), int(0.65 * SMALL[0]))
        background = background_patch(shown)
        breast = shown[middle, int(0.02 * SMALL[1]) : int(0.2 * SMALL[1])]
        assert background.min() > 0 and background.std() > 0
        assert background.mean() < 0.3 * breast.mean()


@pytest.mark.parametrize("laterality", ["L", "R"])
def test_text_marker_is_burned_in_the_background_corner(laterality):
    kwargs = {"shape": SMALL, "laterality": laterality, "style": "film", "view": "MLO"}
    with_text = presentation(synthesize_mammogram(5, **kwargs))
    without = presentation(synthesize_mammogram(5, text_markers=False, **kwargs))
    changed = np.argwhere(with_text != without)
    assert changed.size and (with_text - without).max() > 0.4 + background_patch(without, laterality).mean()
    rows, cols = changed[:, 0], changed[:, 1]
    assert (rows.max() < 0.15 * SMALL[0]) or (rows.min() > 0.85 * SMALL[0])
    assert cols.min() > 0.6 * SMALL[1] if laterality == "L" else cols.max() < 0.4 * SMALL[1]


def test_masks_are_inside_the_breast_with_consistent_bboxes():
    rng = np.random.default_rng(11)
    for seed in range(12):
        view, laterality = ("CC", "MLO")[seed % 2], ("L", "R")[seed // 2 % 2]
        image = synthesize_mammogram(
            seed, shape=SMALL, view=view, laterality=laterality, findings=random_findings(rng)
        )
        shown = presentation(image)
        breast = (shown > background_patch(shown, laterality).max() + 0.03).astype(np.uint8)
        inner = cv2.erode(breast, np.ones((5, 5), np.uint8)) > 0
        assert image.findings
        for finding in image.findings:
            mask = finding.mask
            assert mask.dtype == bool and mask.shape == SMALL and mask.any()
            assert not (mask & ~inner).any()
            y0, x0, y1, x1 = finding.bbox
            ys, xs = np.nonzero(mask)
            assert (y0, x0, y1, x1) == (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)
            assert not mask[[0, -1], :].any() and not mask[:, [0, -1]].any()


def test_descriptors_assessment_and_subtlety():
    for seed, spec in enumerate([MASS_B, MASS_M, CALC_B, CALC_M] * 3):
        (finding,) = synthesize_mammogram(seed, shape=SMALL, findings=[spec]).findings
        assert finding.type == spec.type and finding.pathology == spec.pathology
        assert 1 <= finding.subtlety <= 5
        assert finding.assessment in ((4, 5) if spec.pathology == "MALIGNANT" else (2, 3, 4))
        if spec.type == "mass":
            shape, margins = finding.descriptors["mass shape"], finding.descriptors["mass margins"]
            if spec.pathology == "MALIGNANT":
                assert shape.startswith("IRREGULAR") and margins in ("SPICULATED", "ILL_DEFINED")
            else:
                assert shape in ("ROUND", "OVAL", "LOBULATED") and margins in ("CIRCUMSCRIBED", "OBSCURED")
        else:
            kind, distribution = finding.descriptors["calc type"], finding.descriptors["calc distribution"]
            if spec.pathology == "MALIGNANT":
                assert kind in ("PLEOMORPHIC", "FINE_LINEAR_BRANCHING") and distribution in (
                    "CLUSTERED",
                    "LINEAR",
                )
            else:
                assert kind in ("ROUND_AND_REGULAR", "COARSE", "LUCENT_CENTER")
                assert distribution in ("SCATTERED", "REGIONAL")


def test_size_px_sets_the_mass_diameter():
    (finding,) = synthesize_mammogram(
        2, shape=SMALL, findings=[FindingSpec("mass", "BENIGN", size_px=60)]
    ).findings
    diameter = 2 * np.sqrt(finding.mask.sum() / np.pi)
    assert 40 < diameter < 66


def test_malignant_masks_are_less_compact_than_benign():
    solidity: dict[str, list[float]] = {"BENIGN": [], "MALIGNANT": []}
    for seed in range(20):
        for spec in (MASS_B, MASS_M):
            (finding,) = synthesize_mammogram(seed, shape=SMALL, findings=[spec]).findings
            solidity[spec.pathology].append(regionprops(finding.mask.astype(np.uint8))[0].solidity)
    assert min(solidity["BENIGN"]) > 0.9 and np.median(solidity["MALIGNANT"]) < 0.75
    assert auc(solidity["MALIGNANT"], solidity["BENIGN"]) > 0.95


def test_mass_morphology_survives_quarter_resolution():
    """Learnability check: a hand-crafted shape feature separates the classes at 288 x 224."""
    solidity: dict[str, list[float]] = {"BENIGN": [], "MALIGNANT": []}
    for seed in range(8):
        for spec in (MASS_B, MASS_M):
            difference, _ = lesion_difference(seed, spec, (576, 448))
            small = cv2.resize(difference.astype(np.float32), (224, 288), interpolation=cv2.INTER_AREA)
            blob = max(regionprops(label(small > 0.5 * small.max())), key=lambda region: region.area)
            solidity[spec.pathology].append(blob.solidity)
    assert auc(solidity["MALIGNANT"], solidity["BENIGN"]) >= 0.9


def test_malignant_calcifications_are_more_numerous_and_smaller():
    counts: dict[str, list[int]] = {"BENIGN": [], "MALIGNANT": []}
    areas: dict[str, list[float]] = {"BENIGN": [], "MALIGNANT": []}
    for seed in range(5):
        for spec in (CALC_B, CALC_M):
            difference, image = lesion_difference(seed, spec, (1152, 896))
            assert not difference[~image.findings[0].mask].any()
            regions = regionprops(label(difference > 0.04))
            counts[spec.pathology].append(len(regions))
            areas[spec.pathology].append(float(np.median([region.area for region in regions])))
    assert min(counts["BENIGN"]) >= 2 and max(counts["BENIGN"]) <= 8
    assert np.mean(counts["MALIGNANT"]) > 2 * np.mean(counts["BENIGN"])
    assert auc(areas["MALIGNANT"], areas["BENIGN"]) > 0.9
    assert min(areas["BENIGN"]) >= 7  # coarse calcifications are >= 3 px across at 1152 rows


def test_large_image():
    image = synthesize_mammogram(0, shape=(3328, 2560), view="MLO", findings=[MASS_M])
    assert image.pixels.shape == (3328, 2560) and image.findings[0].mask.shape == (3328, 2560)
    assert image.pixel_spacing[0] == pytest.approx(240.0 / 3328)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"view": "ML"},
        {"style": "cr"},
        {"laterality": "B"},
        {"shape": (100, 80)},
        {"shape": (512,)},
        {"photometric": "RGB"},
        {"density": 5},
        {"findings": [FindingSpec("mass", "UNKNOWN")]},
        {"findings": [FindingSpec("lesion", "BENIGN")]},  # type: ignore[arg-type]
        {"findings": [FindingSpec("mass", "BENIGN", size_px=2)]},
        {"findings": [FindingSpec("mass", "BENIGN", size_px=500)]},
        {"findings": [("mass", "BENIGN")]},
    ],
)
def test_bad_arguments_raise(kwargs):
    with pytest.raises(MammoConfigError):
        synthesize_mammogram(0, **{"shape": SMALL, **kwargs})


def test_bad_seed_raises():
    with pytest.raises(MammoConfigError):
        synthesize_mammogram("0", shape=SMALL)  # type: ignore[arg-type]


def test_random_findings():
    rng = np.random.default_rng(0)
    drawn = [random_findings(rng, max_findings=3) for _ in range(200)]
    assert {len(specs) for specs in drawn} == {1, 2, 3}
    flat = [spec for specs in drawn for spec in specs]
    assert {spec.type for spec in flat} == {"mass", "calcification"}
    assert {spec.pathology for spec in flat} == set(PATHOLOGIES)
    assert all(spec.size_px is None for spec in flat)
    assert {s.pathology for s in random_findings(rng, malignant_fraction=1.0, max_findings=5)} == {
        "MALIGNANT"
    }
    only_masses = random_findings(rng, malignant_fraction=0.0, kinds=("mass",))
    assert {s.type for s in only_masses} == {"mass"} and "MALIGNANT" not in {s.pathology for s in only_masses}


@pytest.mark.parametrize(
    "kwargs",
    [{"malignant_fraction": 1.5}, {"max_findings": 0}, {"kinds": ()}, {"kinds": ("mass", "distortion")}],
)
def test_random_findings_bad_arguments(kwargs):
    with pytest.raises(MammoConfigError):
        random_findings(np.random.default_rng(0), **kwargs)
