"""Heatmap NIfTI storage and stacking as [image, benign, malignant] channels."""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor, NibabelReader
from monai.transforms import Flipd, LoadImage, LoadImaged

from monai_mammo.exceptions import MammoConfigError, MammoDataError
from monai_mammo.transforms.channels import (
    StackHeatmaps,
    StackHeatmapsD,
    StackHeatmapsd,
    StackHeatmapsDict,
    heatmap_paths,
    image_stem,
    load_heatmap_nifti,
    save_heatmap_nifti,
)

H, W = 7, 5  # non-square so that a transpose cannot go unnoticed


@pytest.fixture
def maps(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    return rng.random((H, W), dtype=np.float32), rng.random((H, W), dtype=np.float32)


@pytest.fixture
def image(rng: np.random.Generator) -> MetaTensor:
    affine = torch.diag(torch.tensor([0.1, 0.2, 1.0, 1.0], dtype=torch.float64))
    return MetaTensor(
        torch.as_tensor(rng.random((1, H, W)) * 1000, dtype=torch.float32),
        affine=affine,
        meta={"filename_or_obj": "/data/images/1.2.840.5_L_CC.dcm"},
    )


def test_naming_convention() -> None:
    assert image_stem("/d/1.2.840.5.dcm") == "1.2.840.5"
    assert image_stem("/d/a.nii.gz") == "a"
    benign, malignant = heatmap_paths("/img/0_L_CC.png", "/hm")
    assert benign == Path("/hm/0_L_CC_benign.nii.gz")
    assert malignant == Path("/hm/0_L_CC_malignant.nii.gz")


def test_nifti_round_trip_has_no_transpose(tmp_path: Path) -> None:
    array = np.arange(H * W, dtype=np.float32).reshape(H, W)  # asymmetric: a[i, j] = i * W + j
    path = save_heatmap_nifti(tmp_path / "sub" / "x_benign.nii.gz", array)
    np.testing.assert_array_equal(load_heatmap_nifti(path), array)
    # the documented convention: the NIfTI data array is the (H, W) map as-is ...
    np.testing.assert_array_equal(np.asarray(nib.Nifti1Image.from_filename(str(path)).dataobj), array)
    # ... and MONAI's LoadImage with NibabelReader returns it unchanged too
    loaded = LoadImage(reader=NibabelReader(), image_only=True)(str(path))
    assert tuple(loaded.shape) == (H, W)
    np.testing.assert_array_equal(np.asarray(loaded), array)
    loaded_d = LoadImaged("hm", reader="NibabelReader", ensure_channel_first=True)({"hm": str(path)})["hm"]
    np.testing.assert_array_equal(np.asarray(loaded_d[0]), array)


def test_save_keeps_reference_affine_and_float32(tmp_path: Path, image: MetaTensor) -> None:
    path = save_heatmap_nifti(tmp_path / "a.nii", torch.ones(1, H, W, dtype=torch.float64), image.meta)
    stored = nib.Nifti1Image.from_filename(str(path))
    np.testing.assert_allclose(stored.affine, np.asarray(image.affine))
    assert stored.get_data_dtype() == np.float32


def test_save_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(MammoConfigError, match="nii"):
        save_heatmap_nifti(tmp_path / "a.png", np.zeros((2, 2)))
    with pytest.raises(MammoDataError, match="2-D"):
        save_heatmap_nifti(tmp_path / "a.nii.gz", np.zeros((2, 2, 2)))


def test_stack_channel_order_and_metadata(image: MetaTensor, maps: tuple[np.ndarray, np.ndarray]) -> None:
    benign, malignant = maps
    out = StackHeatmaps()(image, benign, malignant)
    assert isinstance(out, MetaTensor)
    assert tuple(out.shape) == (3, H, W) and out.dtype == torch.float32
    np.testing.assert_array_equal(out[0].numpy(), image[0].numpy())
    np.testing.assert_array_equal(out[1].numpy(), benign)
    np.testing.assert_array_equal(out[2].numpy(), malignant)
    torch.testing.assert_close(out.affine, image.affine)
    assert out.meta["filename_or_obj"] == image.meta["filename_or_obj"]


def test_stack_numpy_and_torch_inputs(maps: tuple[np.ndarray, np.ndarray]) -> None:
    benign, malignant = maps
    out_np = StackHeatmaps()(np.zeros((1, H, W), dtype=np.uint16), benign, torch.as_tensor(malignant))
    assert isinstance(out_np, np.ndarray) and out_np.dtype == np.float32 and out_np.shape == (3, H, W)
    out_t = StackHeatmaps()(torch.zeros(1, H, W, dtype=torch.float64), benign[None], malignant)
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float64


def test_stackd_from_heatmap_dir(
    tmp_path: Path, image: MetaTensor, maps: tuple[np.ndarray, np.ndarray]
) -> None:
    benign_path, malignant_path = heatmap_paths(image.meta["filename_or_obj"], tmp_path)
    save_heatmap_nifti(benign_path, maps[0], image.meta)
    save_heatmap_nifti(malignant_path, maps[1], image.meta)
    out = StackHeatmapsd("image", heatmap_dir=tmp_path)({"image": image})["image"]
    np.testing.assert_array_equal(out[1].numpy(), maps[0])
    np.testing.assert_array_equal(out[2].numpy(), maps[1])
    assert StackHeatmapsD is StackHeatmapsd and StackHeatmapsDict is StackHeatmapsd


def test_stackd_explicit_keys_win(
    tmp_path: Path, image: MetaTensor, maps: tuple[np.ndarray, np.ndarray]
) -> None:
    path = save_heatmap_nifti(tmp_path / "explicit.nii.gz", maps[1])
    item: dict[Hashable, Any] = {"image": image, "heatmap_benign": maps[0], "heatmap_malignant": str(path)}
    out = StackHeatmapsd("image", heatmap_dir=tmp_path / "unused")(item)
    np.testing.assert_array_equal(out["image"][2].numpy(), maps[1])
    assert out["heatmap_malignant"] == str(path)


def test_geometry_mismatch_names_file_and_shapes(tmp_path: Path, image: MetaTensor) -> None:
    path = save_heatmap_nifti(tmp_path / "wrong_benign.nii.gz", np.zeros((W, H), dtype=np.float32))
    with pytest.raises(MammoDataError) as info:
        StackHeatmaps()(image, str(path), np.zeros((H, W)))
    message = str(info.value)
    assert str(path) in message
    assert f"({W}, {H})" in message and f"({H}, {W})" in message


def test_nan_heatmap_is_rejected(tmp_path: Path, image: MetaTensor) -> None:
    bad = np.zeros((H, W), dtype=np.float32)
    bad[2, 3] = np.nan
    path = tmp_path / "nan_malignant.nii.gz"
    nib.save(nib.Nifti1Image(bad, np.eye(4)), str(path))  # written around our checking writer
    with pytest.raises(MammoDataError, match="NaN") as info:
        StackHeatmaps()(image, np.zeros((H, W)), str(path))
    assert str(path) in str(info.value)
    bad[2, 3] = np.inf
    with pytest.raises(MammoDataError, match="NaN/inf"):
        StackHeatmaps()(image, bad, np.zeros((H, W)))


def test_missing_heatmaps(tmp_path: Path, image: MetaTensor) -> None:
    with pytest.raises(MammoConfigError, match="heatmap_dir"):
        StackHeatmaps()(image)
    with pytest.raises(MammoDataError, match="not found") as info:
        StackHeatmaps(heatmap_dir=tmp_path)(image)
    assert "1.2.840.5_L_CC_benign.nii.gz" in str(info.value)
    with pytest.raises(MammoDataError, match=r"\(1, H, W\)"):
        StackHeatmaps()(torch.zeros(3, H, W), np.zeros((H, W)), np.zeros((H, W)))


def test_spatial_transform_moves_all_channels(image: MetaTensor, maps: tuple[np.ndarray, np.ndarray]) -> None:
    stacked = StackHeatmapsd("image")(
        {"image": image, "heatmap_benign": maps[0], "heatmap_malignant": maps[1]}
    )
    flipped = Flipd("image", spatial_axis=1)(stacked)["image"]
    np.testing.assert_array_equal(flipped[0].numpy(), image[0].numpy()[:, ::-1])
    np.testing.assert_array_equal(flipped[1].numpy(), maps[0][:, ::-1])
    np.testing.assert_array_equal(flipped[2].numpy(), maps[1][:, ::-1])
