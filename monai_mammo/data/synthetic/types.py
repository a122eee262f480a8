"""Data types shared by the synthetic image generator and the dataset writers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

__all__ = ["FindingSpec", "SyntheticFinding", "SyntheticMammogram", "Style"]

Style = Literal["film", "digital"]


@dataclass(frozen=True)
class FindingSpec:
    """What lesion to draw.

    Args:
        type: ``"mass"`` or ``"calcification"``.
        pathology: ``"BENIGN"``, ``"BENIGN_WITHOUT_CALLBACK"`` or ``"MALIGNANT"``;
            malignant masses are irregular/spiculated, benign round/oval circumscribed;
            malignant calcifications fine pleomorphic clustered, benign coarse/round scattered.
        size_px: approximate lesion diameter (mass) or cluster extent (calcification) in pixels;
            None picks a size proportional to the image.
    """

    type: Literal["mass", "calcification"]
    pathology: str
    size_px: int | None = None


@dataclass
class SyntheticFinding:
    """A drawn lesion with its ground truth.

    Attributes:
        type: ``"mass"`` or ``"calcification"``.
        pathology: as in :class:`FindingSpec`.
        mask: boolean ROI mask of the image's shape.
        descriptors: dataset-style descriptors, e.g. ``{"mass shape": "IRREGULAR",
            "mass margins": "SPICULATED"}`` or ``{"calc type": "PLEOMORPHIC",
            "calc distribution": "CLUSTERED"}``.
        assessment: BI-RADS assessment 0..5.
        subtlety: 1..5.
    """

    type: str
    pathology: str
    mask: np.ndarray
    descriptors: dict[str, str] = field(default_factory=dict)
    assessment: int = 4
    subtlety: int = 3

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """Half-open bounding box (y0, x0, y1, x1) of the mask."""
        rows = np.flatnonzero(self.mask.any(axis=1))
        cols = np.flatnonzero(self.mask.any(axis=0))
        return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


@dataclass
class SyntheticMammogram:
    """A generated mammogram as stored on disk (raw stored values, before any VOI).

    Attributes:
        pixels: 2-D uint16 (or uint8 for 8-bit) stored values, rows x columns.
        bits_stored: 16 (film), 12 or 14 (digital), or 8.
        photometric: ``"MONOCHROME2"`` or ``"MONOCHROME1"`` (then dense tissue is dark in
            stored values and a viewer inverts it).
        laterality: ``"L"`` or ``"R"``; with the NYU convention the breast touches the left
            edge for L and the right edge for R.
        view: ``"CC"`` or ``"MLO"``.
        style: ``"film"`` or ``"digital"``.
        density: ACR density 1..4.
        findings: the lesions drawn (empty for a normal image).
        window: (center, width) a digital system would store, or None.
        pixel_spacing: (row, column) mm.
    """

    pixels: np.ndarray
    bits_stored: int
    photometric: str
    laterality: str
    view: str
    style: str
    density: int
    findings: list[SyntheticFinding] = field(default_factory=list)
    window: tuple[float, float] | None = None
    pixel_spacing: tuple[float, float] = (0.1, 0.1)
