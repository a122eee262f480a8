"""MammogramReader: DICOM/PNG/JPEG in row/column order, metadata, and use inside MONAI's LoadImaged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor, list_data_collate
from monai.transforms import LoadImaged, Spacingd
from PIL import Image

from monai_mammo.data.dicom_writer import write_mammogram_dicom
from monai_mammo.data.readers import MammogramReader, mammogram_affine
from monai_mammo.exceptions import MammoDataError
from monai_mammo.transforms.io import LoadMammogramd

META_KEYS = {
    "laterality",
    "view",
    "patient_id",
    "study_instance_uid",
    "series_instance_uid",
    "sop_instance_uid",
    "pixel_spacing",
    "bits_stored",
    "photometric_interpretation",
    "presentation_intent",
    "filename_or_obj",
    "spatial_shape",
    "original_channel_dim",
    "affine",
    "original_affine",
}


def _asymmetric(dtype=np.uint16, high: int = 4095) -> np.ndarray:
    """A 40 x 24 image, bright block at the top left, mid-grey column band on the right."""
    arr = np.zeros((40, 24), dtype=dtype)
    arr[:10, :6] = high
    arr[:, 20:] = high // 2
    return arr


def _load(path: Path, **kwargs) -> tuple[np.ndarray, dict]:
    reader = MammogramReader(**kwargs)
    return reader.get_data(reader.read(path))


def test_verify_suffix(tmp_path):
    reader = MammogramReader()
    uid_named = write_mammogram_dicom(tmp_path / "1.2.840.113619.2.55", _asymmetric())
    no_suffix = write_mammogram_dicom(tmp_path / "image", _asymmetric())
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    for name in ("a.dcm", "b.DICOM", "c.png", "d.jpg", "e.JPEG", uid_named, no_suffix, [no_suffix, "c.png"]):
        assert reader.verify_suffix(name), name
    assert not reader.verify_suffix(text)
    assert not reader.verify_suffix(["a.dcm", text])


@pytest.mark.parametrize("name", ["img.dcm", "img.dicom", "img"])
def test_dicom_rows_columns_not_transposed(tmp_path, name):
    pixels = _asymmetric()
    path = write_mammogram_dicom(tmp_path / name, pixels, bits_stored=12, pixel_spacing=(0.07, 0.05))
    arr, meta = _load(path)
    assert arr.dtype == np.float32 and arr.shape == (40, 24)
    np.testing.assert_array_equal(arr, pixels)
    assert META_KEYS <= set(meta)
    np.testing.assert_array_equal(meta["spatial_shape"], (40, 24))
    assert meta["original_channel_dim"] == "no_channel"
    assert meta["pixel_spacing"] == (0.07, 0.05)
    np.testing.assert_allclose(meta["affine"], np.diag([0.07, 0.05, 1.0, 1.0]))
    assert meta["filename_or_obj"] == str(path)


def test_dicom_display_pipeline_applied(tmp_path):
    pixels = _asymmetric()
    path = write_mammogram_dicom(tmp_path / "m1.dcm", pixels, bits_stored=12, photometric="MONOCHROME1")
    arr, meta = _load(path)
    np.testing.assert_array_equal(arr, 4095 - pixels)
    assert meta["photometric_interpretation"] == "MONOCHROME1"  # as stored in the file


def test_png_8_bit(tmp_path):
    pixels = _asymmetric(np.uint8, 255)
    Image.fromarray(pixels).save(tmp_path / "p_R_MLO.png")
    arr, meta = _load(tmp_path / "p_R_MLO.png")
    assert arr.dtype == np.float32 and arr.shape == (40, 24)
    np.testing.assert_array_equal(arr, pixels)
    assert meta["bits_stored"] == 8
    assert (meta["laterality"], meta["view"]) == ("R", "MLO")
    assert meta["photometric_interpretation"] == "MONOCHROME2"
    assert meta["pixel_spacing"] == "none" and meta["patient_id"] == "none"  # MONAI's TraceKeys.NONE
    np.testing.assert_allclose(meta["affine"], np.eye(4))


def test_png_16_bit(tmp_path):
    pixels = _asymmetric(np.uint16, 65535)
    Image.fromarray(pixels).save(tmp_path / "p.png")
    arr, meta = _load(tmp_path / "p.png")
    np.testing.assert_array_equal(arr, pixels)
    assert meta["bits_stored"] == 16


def test_png_12_bit_in_16_bit(tmp_path, rng):
    levels = rng.integers(0, 4096, size=(40, 24))
    pixels = np.round(levels * 65535 / 4095).astype(np.uint16)  # NYU's scaling
    Image.fromarray(pixels).save(tmp_path / "1_L_CC.png")
    arr, meta = _load(tmp_path / "1_L_CC.png")
    np.testing.assert_array_equal(arr, pixels)
    levels = np.round(arr.astype(np.float64) * 4095 / 65535)
    np.testing.assert_array_equal(np.round(levels * 65535 / 4095), arr)
    assert meta["bits_stored"] == 16 and (meta["laterality"], meta["view"]) == ("L", "CC")


def test_colour_png_converted_to_grey(tmp_path):
    pixels = _asymmetric(np.uint8, 255)
    Image.fromarray(np.stack([pixels] * 3, axis=-1)).save(tmp_path / "rgb.png")
    arr, _ = _load(tmp_path / "rgb.png")
    np.testing.assert_array_equal(arr, pixels)


def test_jpeg(tmp_path):
    pixels = np.zeros((40, 24), np.uint8)
    pixels[:20] = 200  # smooth halves: JPEG at quality 95 stays close
    Image.fromarray(pixels).save(tmp_path / "x_LEFT_CC.jpg", quality=95)
    arr, meta = _load(tmp_path / "x_LEFT_CC.jpg")
    assert arr.shape == (40, 24) and arr.dtype == np.float32
    assert np.abs(arr - pixels).max() <= 8
    assert meta["bits_stored"] == 8 and meta["laterality"] == "L"


def test_mask_is_binary_and_never_windowed(tmp_path):
    mask = np.zeros((40, 24), np.uint16)
    mask[5:15, 3:9] = 255
    path = write_mammogram_dicom(tmp_path / "mask.dcm", mask, bits_stored=8, window=(1000, 10))
    arr, _ = _load(path, as_mask=True)
    np.testing.assert_array_equal(arr, mask > 0)
    assert arr.dtype == np.float32 and set(np.unique(arr)) == {0.0, 1.0}
    Image.fromarray(mask.astype(np.uint8)).save(tmp_path / "mask.png")
    np.testing.assert_array_equal(_load(tmp_path / "mask.png", as_mask=True)[0], mask > 0)


def test_several_files_are_stacked(tmp_path):
    pixels = _asymmetric(np.uint8, 255)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    Image.fromarray(255 - pixels).save(tmp_path / "b.png")
    arr, meta = _load([tmp_path / "a.png", tmp_path / "b.png"])
    assert arr.shape == (2, 40, 24) and meta["original_channel_dim"] == 0
    np.testing.assert_array_equal(arr[1], 255 - pixels)
    Image.fromarray(pixels[:30]).save(tmp_path / "c.png")
    with pytest.raises(MammoDataError, match="different shapes"):
        _load([tmp_path / "a.png", tmp_path / "c.png"])


@pytest.mark.parametrize("name", ["bad.png", "bad.dcm", "bad"])
def test_corrupt_files_name_the_file(tmp_path, name):
    source = tmp_path / "src.png"
    Image.fromarray(_asymmetric(np.uint8, 255)).save(source)
    path = tmp_path / name
    path.write_bytes(source.read_bytes()[:60])
    with pytest.raises(MammoDataError) as info:
        _load(path)
    assert info.value.source == str(path)


def test_missing_file(tmp_path):
    with pytest.raises(MammoDataError, match="file not found"):
        _load(tmp_path / "absent.png")


def test_for_processing_option(tmp_path):
    path = write_mammogram_dicom(tmp_path / "raw.dcm", _asymmetric(), presentation_intent="FOR PROCESSING")
    with pytest.raises(MammoDataError, match="FOR PROCESSING"):
        _load(path)
    arr, meta = _load(path, allow_for_processing=True)
    assert arr.shape == (40, 24) and meta["presentation_intent"] == "FOR PROCESSING"


@pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader")  # MONAI's LoadImage registers all its readers
@pytest.mark.parametrize("make", ["dicom", "png"])
def test_inside_monai_loadimaged_equals_loadmammogramd(tmp_path, make):
    pixels = _asymmetric()
    if make == "dicom":
        path = write_mammogram_dicom(tmp_path / "img.dcm", pixels, bits_stored=12, window=(2000, 3000))
    else:
        path = tmp_path / "img.png"
        Image.fromarray(pixels).save(path)
    monai_out = LoadImaged(keys="image", reader=MammogramReader(), ensure_channel_first=True)(
        {"image": str(path)}
    )
    ours = LoadMammogramd(keys="image")({"image": str(path)})
    a, b = monai_out["image"], ours["image"]
    assert isinstance(a, MetaTensor) and a.shape == (1, 40, 24) and a.dtype == torch.float32
    torch.testing.assert_close(a.as_tensor(), b.as_tensor())
    torch.testing.assert_close(a.affine, b.affine)
    for key in META_KEYS - {"affine", "original_affine", "spatial_shape"}:
        assert a.meta[key] == b.meta[key], key
    assert a[0, 0, 0] > a[0, -1, 0]  # the bright block stays at the top left


@pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader")  # MONAI's LoadImage registers all its readers
def test_errors_propagate_through_loadimaged(tmp_path):
    path = tmp_path / "garbage.dcm"
    path.write_bytes(b"\x00" * 1000)
    with pytest.raises(MammoDataError, match="not a DICOM file"):
        LoadImaged(keys="image", reader=MammogramReader())({"image": str(path)})


def test_affine_works_with_monai_spacing(tmp_path):
    path = write_mammogram_dicom(tmp_path / "img.dcm", _asymmetric(), pixel_spacing=(0.1, 0.1))
    d = LoadMammogramd(keys="image")({"image": path})
    out = Spacingd(keys="image", pixdim=(0.2, 0.2), mode="nearest")(d)["image"]
    assert out.shape == (1, 20, 12)
    assert out[0, 0, 0] > 0 and out[0, -1, 0] == 0  # orientation kept
    np.testing.assert_allclose(out.affine[:2, :2].numpy(), np.diag([0.2, 0.2]))


def test_batches_collate_with_unknown_values(tmp_path):
    Image.fromarray(_asymmetric(np.uint8, 255)).save(tmp_path / "a.png")
    item = LoadMammogramd(keys="image")({"image": tmp_path / "a.png"})
    batch = list_data_collate([item, item])
    assert batch["image"].shape == (2, 1, 40, 24)
    assert batch["image"].meta["laterality"] == ["none", "none"]


def test_mammogram_affine():
    np.testing.assert_allclose(mammogram_affine((0.07, 0.05)), np.diag([0.07, 0.05, 1, 1]))
    np.testing.assert_allclose(mammogram_affine(None), np.eye(4))
