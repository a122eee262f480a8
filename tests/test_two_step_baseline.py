"""Two-step baseline: heatmap region features and a random forest."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from monai_mammo.engines.two_step_baseline import (
    DEFAULT_THRESHOLDS,
    REGION_PROPERTIES,
    TwoStepBaseline,
    heatmap_feature_names,
    heatmap_features,
)
from monai_mammo.exceptions import MammoConfigError, MammoDataError

PER_THRESHOLD = 3 + len(REGION_PROPERTIES) * 3  # top_k = 3


def _named(vector: np.ndarray, **kwargs) -> dict[str, float]:
    n_channels = kwargs.pop("n_channels", 1)
    return dict(zip(heatmap_feature_names(n_channels, **kwargs), vector.tolist(), strict=True))


def test_empty_heatmap_gives_zeros_of_fixed_length() -> None:
    features = heatmap_features(np.zeros((20, 30)))
    assert features.shape == (len(DEFAULT_THRESHOLDS) * PER_THRESHOLD,)
    assert features.dtype == np.float64 and not features.any()


def test_square_blob_properties() -> None:
    heatmap = np.zeros((32, 32))
    heatmap[10:20, 5:15] = 0.8
    heatmap[25, 25] = 0.95
    f = _named(heatmap_features(heatmap, top_k=2), top_k=2)
    assert f["c0_t0.5_count"] == 2 and f["c0_t0.5_total_area"] == 101
    assert f["c0_t0.5_max_prob"] == pytest.approx(0.95)
    assert f["c0_t0.5_r1_area"] == 100  # largest region first
    assert f["c0_t0.5_r1_solidity"] == pytest.approx(1.0)
    assert f["c0_t0.5_r1_extent"] == pytest.approx(1.0)
    assert f["c0_t0.5_r1_eccentricity"] == pytest.approx(0.0, abs=1e-6)
    assert f["c0_t0.5_r1_intensity_mean"] == pytest.approx(0.8)
    assert f["c0_t0.5_r1_axis_major_length"] == pytest.approx(f["c0_t0.5_r1_axis_minor_length"])
    assert f["c0_t0.5_r2_area"] == 1 and f["c0_t0.5_r2_intensity_max"] == pytest.approx(0.95)
    assert f["c0_t0.9_count"] == 1 and f["c0_t0.9_r1_area"] == 1 and f["c0_t0.9_r2_area"] == 0


def test_multichannel_and_channel_selection() -> None:
    heatmap = np.zeros((5, 16, 16))
    heatmap[3, 2:6, 2:6] = 0.6
    all_channels = heatmap_features(heatmap, thresholds=(0.5,), top_k=1)
    assert all_channels.shape == (5 * (3 + len(REGION_PROPERTIES)),)
    picked = heatmap_features(heatmap, thresholds=(0.5,), top_k=1, channels=[3])
    f = _named(picked, thresholds=(0.5,), top_k=1)
    assert f["c0_t0.5_count"] == 1 and f["c0_t0.5_r1_area"] == 16
    assert len(heatmap_feature_names(5, (0.5,), 1)) == all_channels.size


@settings(max_examples=25, deadline=None)
@given(
    height=st.integers(1, 24),
    width=st.integers(1, 24),
    seed=st.integers(0, 2**16),
    top_k=st.integers(0, 4),
)
def test_feature_length_is_fixed(height: int, width: int, seed: int, top_k: int) -> None:
    heatmap = np.random.default_rng(seed).random((height, width))
    features = heatmap_features(heatmap, top_k=top_k)
    assert features.shape == (len(DEFAULT_THRESHOLDS) * (3 + len(REGION_PROPERTIES) * top_k),)
    assert np.isfinite(features).all()


def test_feature_errors() -> None:
    with pytest.raises(MammoDataError):
        heatmap_features(np.zeros(5))
    with pytest.raises(MammoDataError):
        heatmap_features(np.full((4, 4), np.nan))
    with pytest.raises(MammoConfigError):
        heatmap_features(np.zeros((4, 4)), thresholds=(0.5, 1.0))
    with pytest.raises(MammoConfigError):
        heatmap_features(np.zeros((4, 4)), top_k=-1)
    with pytest.raises(MammoConfigError):
        heatmap_features(np.zeros((4, 4)), channels=[0])
    with pytest.raises(MammoConfigError):
        heatmap_features(np.zeros((2, 4, 4)), channels=[2])


def _synthetic_heatmaps(rng: np.random.Generator, n: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Malignant: one big bright blob; benign: a few small faint blobs; both on low noise."""
    yy, xx = np.mgrid[:48, :48]
    maps, labels = [], []
    for i in range(n):
        heatmap = rng.random((48, 48)) * 0.2
        malignant = i % 2
        blobs = [(rng.uniform(8, 12), rng.uniform(0.85, 0.99))] if malignant else []
        blobs += [(rng.uniform(1, 2.5), rng.uniform(0.35, 0.65)) for _ in range(rng.integers(1, 4))]
        for radius, peak in blobs:
            cy, cx = rng.uniform(radius, 48 - radius, size=2)
            heatmap[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = peak
        maps.append(heatmap)
        labels.append(malignant)
    return maps, np.asarray(labels)


def test_random_forest_separates_synthetic_heatmaps(rng: np.random.Generator) -> None:
    train_maps, train_labels = _synthetic_heatmaps(rng, 60)
    test_maps, test_labels = _synthetic_heatmaps(rng, 40)
    model = TwoStepBaseline(n_estimators=50, max_depth=4, min_samples_split=4, random_state=0)
    model.fit(train_maps, train_labels)
    proba = model.predict_proba(test_maps)
    assert proba.shape == (40, 2)
    assert roc_auc_score(test_labels, proba[:, 1]) > 0.9


def test_baseline_defaults_and_errors() -> None:
    model = TwoStepBaseline()
    params = model.forest.get_params()
    assert (params["n_estimators"], params["max_depth"], params["min_samples_split"]) == (500, 9, 300)
    assert model.thresholds == DEFAULT_THRESHOLDS
    with pytest.raises(MammoDataError):
        TwoStepBaseline(n_estimators=5, min_samples_split=2).fit([np.zeros((4, 4))] * 3, [0, 1])
    with pytest.raises(MammoConfigError):
        TwoStepBaseline(thresholds=())
