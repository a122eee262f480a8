"""extract_patch_dataset leaves torch's global random state alone (cache miss and hit alike).

A MONAI DataLoader draws from the global generator when it is built; if only a cache miss
built one, a run in a fresh MONAI_MAMMO_HOME would initialise and shuffle its model differently
from a rerun with the patches cached.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_mammo.data.dicom_writer import write_mammogram_dicom
from monai_mammo.engines.patches import extract_patch_dataset
from monai_mammo.transforms import LoadMammogramd, SamplePatchesd

H, W = 48, 40
LESION = (20, 10, 28, 18)


def _breast() -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return np.where(((yy - H / 2) / (H / 2)) ** 2 + (xx / W) ** 2 < 1, 1000 + 10 * xx, 0).astype(np.uint16)


def _extract(root: Path, cache: Path) -> dict[str, Any]:
    image = write_mammogram_dicom(root / "image.dcm", _breast())
    mask = np.zeros((H, W), np.uint8)
    mask[LESION[0] : LESION[2], LESION[1] : LESION[3]] = 1
    loader = LoadMammogramd("image")

    def preprocess(item: dict[str, Any]) -> dict[str, Any]:
        return {**loader(item), "findings": [{"type": "mass", "label": 1, "mask": mask}]}

    sampler = SamplePatchesd(keys="image", patch_size=8, n_roi=2, n_background=1)
    return extract_patch_dataset([{"image": str(image)}], cache, preprocess, sampler, {"case": "rng"})


def test_cutting_and_reading_the_cache_leave_the_random_state(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    torch.manual_seed(123)
    expected = torch.rand(3)
    for attempt in ("miss", "hit"):
        torch.manual_seed(123)
        out = _extract(tmp_path / "data", tmp_path / "cache")
        assert torch.equal(torch.rand(3), expected), attempt
        assert len(out["samples"]) == 3
