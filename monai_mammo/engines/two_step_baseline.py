"""The two-step baseline of Shen et al.: heatmap region features and a random forest (AUC 0.73).

Step 1 (elsewhere): the patch classifier is swept over the image to give a heatmap of class
probabilities (softmax), ``(C, H, W)``, or a single malignancy map ``(H, W)``.
Step 2 (here): every selected channel is binarised at each threshold (``>=``, paper: 0.3,
0.5, 0.7, 0.9); the connected regions (8-connectivity) give

* per threshold: region count, total area (pixels), maximum probability in the regions;
* per region, for the ``top_k`` largest regions (by area, ties by maximum probability):
  area, solidity, eccentricity, extent, major and minor axis lengths, maximum and mean
  probability — zeros where there are fewer regions,

concatenated channel by channel, threshold by threshold, into a fixed-length vector
(:func:`heatmap_feature_names` names its entries). A scikit-learn random forest is trained on
these vectors (paper: 500 trees, max depth 9, min samples split 300).

Example:
    >>> import numpy as np
    >>> heatmap = np.zeros((32, 32)); heatmap[10:20, 10:20] = 0.8
    >>> heatmap_features(heatmap, top_k=2).shape
    (76,)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from skimage.measure import label, regionprops
from sklearn.ensemble import RandomForestClassifier

from monai_mammo.exceptions import MammoConfigError, MammoDataError

__all__ = [
    "DEFAULT_THRESHOLDS",
    "REGION_PROPERTIES",
    "TwoStepBaseline",
    "heatmap_feature_names",
    "heatmap_features",
]

#: The paper's binarisation thresholds.
DEFAULT_THRESHOLDS: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9)
#: Per-region properties (scikit-image ``regionprops`` names), in feature order.
REGION_PROPERTIES: tuple[str, ...] = (
    "area",
    "solidity",
    "eccentricity",
    "extent",
    "axis_major_length",
    "axis_minor_length",
    "intensity_max",
    "intensity_mean",
)
_GLOBAL = ("count", "total_area", "max_prob")


def _check_settings(thresholds: Sequence[float], top_k: int) -> None:
    if not thresholds or not all(0.0 < float(t) < 1.0 for t in thresholds):
        raise MammoConfigError(f"thresholds must be a non-empty sequence in (0, 1), got {tuple(thresholds)}")
    if top_k < 0:
        raise MammoConfigError(f"top_k must be >= 0, got {top_k}")


def heatmap_feature_names(
    n_channels: int = 1, thresholds: Sequence[float] = DEFAULT_THRESHOLDS, top_k: int = 3
) -> list[str]:
    """Names of the entries of :func:`heatmap_features`, e.g. ``c0_t0.5_r1_solidity``.

    Args:
        n_channels: number of heatmap channels used.
        thresholds: binarisation thresholds.
        top_k: regions described per channel and threshold.

    Returns:
        the feature names, in vector order.
    """
    _check_settings(thresholds, top_k)
    names = []
    for c in range(n_channels):
        for t in thresholds:
            names += [f"c{c}_t{t:g}_{g}" for g in _GLOBAL]
            names += [f"c{c}_t{t:g}_r{r + 1}_{p}" for r in range(top_k) for p in REGION_PROPERTIES]
    return names


def _channel_features(prob: np.ndarray, thresholds: Sequence[float], top_k: int) -> list[float]:
    values: list[float] = []
    for t in thresholds:
        mask = prob >= t
        regions = regionprops(label(mask, connectivity=2), intensity_image=prob)
        regions.sort(key=lambda r: (-r.area, -r.intensity_max, r.label))
        values += [float(len(regions)), float(mask.sum()), float(prob[mask].max()) if regions else 0.0]
        for index in range(top_k):
            if index < len(regions):
                values += [float(regions[index][p]) for p in REGION_PROPERTIES]
            else:
                values += [0.0] * len(REGION_PROPERTIES)
    return values


def heatmap_features(
    heatmap: np.ndarray,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    top_k: int = 3,
    channels: Sequence[int] | None = None,
) -> np.ndarray:
    """Fixed-length region features of one heatmap.

    Args:
        heatmap: ``(H, W)`` malignancy probabilities or ``(C, H, W)`` class probabilities.
        thresholds: binarisation thresholds in (0, 1).
        top_k: regions described per channel and threshold (largest first).
        channels: channels of a ``(C, H, W)`` heatmap to use (default: all); must be ``None``
            for an ``(H, W)`` map.

    Returns:
        float64 vector of length ``n_channels * len(thresholds) * (3 + 8 * top_k)``.

    Raises:
        MammoDataError: a heatmap that is not 2-D or 3-D, empty, or not finite.
        MammoConfigError: bad thresholds, ``top_k`` or channel indices.
    """
    _check_settings(thresholds, top_k)
    array = np.asarray(heatmap, dtype=np.float64)
    if array.ndim not in (2, 3) or array.size == 0:
        raise MammoDataError(
            f"heatmap must be a non-empty (H, W) or (C, H, W) array, got shape {array.shape}"
        )
    if not np.isfinite(array).all():
        raise MammoDataError("heatmap contains NaN or infinite values")
    if array.ndim == 2:
        if channels is not None:
            raise MammoConfigError("channels was given for a single-channel (H, W) heatmap")
        array = array[None]
    elif channels is not None:
        bad = [c for c in channels if not 0 <= c < array.shape[0]]
        if bad or not channels:
            raise MammoConfigError(
                f"channels {tuple(channels)} invalid for a heatmap with {array.shape[0]} channels"
            )
        array = array[list(channels)]
    values: list[float] = []
    for prob in array:
        values += _channel_features(prob, thresholds, top_k)
    return np.asarray(values, dtype=np.float64)


class TwoStepBaseline:
    """Heatmap region features -> random forest.

    Args:
        thresholds: binarisation thresholds.
        top_k: regions described per channel and threshold.
        channels: heatmap channels used (``None``: all).
        n_estimators: trees (paper: 500).
        max_depth: maximum tree depth (paper: 9).
        min_samples_split: minimum samples to split a node (paper: 300).
        random_state: seed of the forest.
        n_jobs: parallel jobs for scikit-learn.

    Raises:
        MammoConfigError: bad thresholds or ``top_k``.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> maps = [rng.random((16, 16)) * s for s in (0.2, 1.0) * 10]
        >>> model = TwoStepBaseline(n_estimators=10, min_samples_split=2).fit(maps, [0, 1] * 10)
        >>> model.predict_proba(maps[:2]).shape
        (2, 2)
    """

    def __init__(
        self,
        thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
        top_k: int = 3,
        channels: Sequence[int] | None = None,
        n_estimators: int = 500,
        max_depth: int | None = 9,
        min_samples_split: int = 300,
        random_state: int | None = 0,
        n_jobs: int | None = None,
    ) -> None:
        _check_settings(thresholds, top_k)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.top_k = top_k
        self.channels = None if channels is None else tuple(channels)
        self.forest = RandomForestClassifier(
            n_estimators=n_estimators,
            max_depth=max_depth,
            min_samples_split=min_samples_split,
            random_state=random_state,
            n_jobs=n_jobs,
        )

    def features(self, heatmaps: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Feature matrix ``(N, F)`` of N heatmaps (see :func:`heatmap_features`)."""
        return np.stack([heatmap_features(h, self.thresholds, self.top_k, self.channels) for h in heatmaps])

    def fit(
        self, heatmaps: Sequence[np.ndarray] | np.ndarray, labels: Sequence[int] | np.ndarray
    ) -> TwoStepBaseline:
        """Train the forest.

        Args:
            heatmaps: N heatmaps (sizes may differ).
            labels: N image labels (e.g. 0 benign or normal, 1 malignant).

        Returns:
            ``self``.

        Raises:
            MammoDataError: heatmap and label counts differ, or a heatmap is invalid.
        """
        y = np.asarray(labels)
        if len(heatmaps) != len(y):
            raise MammoDataError(f"{len(heatmaps)} heatmaps but {len(y)} labels")
        self.forest.fit(self.features(heatmaps), y)
        return self

    def predict_proba(self, heatmaps: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Class probabilities ``(N, n_classes)`` (columns in ``self.forest.classes_`` order)."""
        return self.forest.predict_proba(self.features(heatmaps))
