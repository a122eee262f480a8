"""LoadMammogram / LoadMammogramd: options, fallbacks, MONAI dict conventions, and the real NYU PNGs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image

from monai_mammo.data.dicom_writer import write_mammogram_dicom
from monai_mammo.exceptions import MammoConfigError, MammoDataError
from monai_mammo.transforms.io import LoadMammogram, LoadMammogramD, LoadMammogramd, LoadMammogramDict


def _pixels() -> np.ndarray:
    arr = np.arange(30 * 20, dtype=np.uint16).reshape(30, 20) * 6  # 12-bit ramp, rows x cols
    arr[:5, :4] = 4095
    return arr


def test_load_mammogram_dicom(tmp_path):
    pixels = _pixels()
    path = write_mammogram_dicom(tmp_path / "a.dcm", pixels, bits_stored=12, laterality="R", view="MLO")
    img = LoadMammogram()(path)
    assert isinstance(img, MetaTensor)
    assert img.shape == (1, 30, 20) and img.dtype == torch.float32
    np.testing.assert_array_equal(img[0].numpy(), pixels)
    assert (img.meta["laterality"], img.meta["view"], img.meta["bits_stored"]) == ("R", "MLO", 12)
    assert img.meta["filename_or_obj"] == str(path)


def test_apply_voi_option(tmp_path):
    pixels = _pixels()
    path = write_mammogram_dicom(tmp_path / "a.dcm", pixels, bits_stored=12, window=(100, 2))
    windowed = LoadMammogram()(path)[0].numpy()
    assert set(np.unique(windowed)) == {0.0, 4095.0}
    np.testing.assert_array_equal(LoadMammogram(apply_voi=False)(path)[0].numpy(), pixels)


def test_for_processing_option(tmp_path):
    path = write_mammogram_dicom(tmp_path / "raw.dcm", _pixels(), presentation_intent="FOR PROCESSING")
    with pytest.raises(MammoDataError, match="allow_for_processing"):
        LoadMammogram()(path)
    assert LoadMammogram(allow_for_processing=True)(path).shape == (1, 30, 20)


def test_mask_option_and_dtype(tmp_path):
    mask = np.zeros((30, 20), np.uint8)
    mask[10:20, 5:15] = 255
    Image.fromarray(mask).save(tmp_path / "roi.png")
    out = LoadMammogram(as_mask=True, dtype=np.uint8)(tmp_path / "roi.png")
    assert out.dtype == torch.uint8
    np.testing.assert_array_equal(out[0].numpy(), mask > 0)


def test_image_only_false_returns_metadata(tmp_path):
    path = write_mammogram_dicom(tmp_path / "a.dcm", _pixels(), laterality=None, view=None)
    img, meta = LoadMammogram(image_only=False)(path, laterality="LEFT", view="cranio-caudal")
    assert meta is img.meta
    assert (meta["laterality"], meta["view"]) == ("L", "CC")


def test_fallbacks_only_fill_unknown_values(tmp_path):
    path = write_mammogram_dicom(tmp_path / "a.dcm", _pixels(), laterality="L", view=None)
    img = LoadMammogram()(path, laterality="R", view="MLO")
    assert (img.meta["laterality"], img.meta["view"]) == ("L", "MLO")
    img = LoadMammogram()(path)
    assert img.meta["view"] == "none"


def test_dict_fallback_from_data_dict(tmp_path):
    path = write_mammogram_dicom(tmp_path / "a.dcm", _pixels(), laterality=None, view=None)
    mask = tmp_path / "mask.png"
    Image.fromarray(np.full((30, 20), 255, np.uint8)).save(mask)
    data = {"image": str(path), "mask": str(mask), "laterality": "RIGHT", "view": "MLO", "label": 1}
    out = LoadMammogramd(keys=["image", "mask"])(data)
    assert out["label"] == 1 and out["laterality"] == "RIGHT"  # other items untouched
    for key in ("image", "mask"):
        assert out[key].shape == (1, 30, 20)
        assert (out[key].meta["laterality"], out[key].meta["view"]) == ("R", "MLO")
    assert data["image"] == str(path)  # the input dict is not modified


def test_dict_file_tags_win_over_data_dict(tmp_path):
    path = write_mammogram_dicom(tmp_path / "a.dcm", _pixels(), laterality="L", view="CC")
    out = LoadMammogramd(keys="image")({"image": path, "laterality": "R", "view": "MLO"})
    assert (out["image"].meta["laterality"], out["image"].meta["view"]) == ("L", "CC")


def test_dict_meta_keys(tmp_path):
    path = write_mammogram_dicom(tmp_path / "a.dcm", _pixels())
    out = LoadMammogramd(keys="image", image_only=False)({"image": path})
    assert out["image_meta_dict"]["laterality"] == "L"
    out = LoadMammogramd(keys="image", image_only=False, meta_keys="hdr")({"image": path})
    assert "hdr" in out and "image_meta_dict" not in out
    with pytest.raises(KeyError, match="overwriting"):
        LoadMammogramd(keys="image", image_only=False)({"image": path, "image_meta_dict": {}})
    out = LoadMammogramd(keys="image", image_only=False, overwriting=True)(
        {"image": path, "image_meta_dict": {}}
    )
    assert out["image_meta_dict"]["view"] == "CC"
    with pytest.raises(MammoConfigError, match="meta_keys"):
        LoadMammogramd(keys=["image", "mask"], meta_keys=["only_one"])


def test_dict_allow_missing_keys(tmp_path):
    path = write_mammogram_dicom(tmp_path / "a.dcm", _pixels())
    out = LoadMammogramd(keys=["image", "mask"], allow_missing_keys=True)({"image": path})
    assert "mask" not in out and out["image"].shape == (1, 30, 20)
    with pytest.raises(KeyError):
        LoadMammogramd(keys=["image", "mask"])({"image": path})


def test_aliases():
    assert LoadMammogramD is LoadMammogramd and LoadMammogramDict is LoadMammogramd


def test_bad_file_raises_typed_error(tmp_path):
    path = tmp_path / "broken.dcm"
    path.write_bytes(b"DICM" * 10)
    with pytest.raises(MammoDataError) as info:
        LoadMammogramd(keys="image")({"image": path})
    assert info.value.source == str(path)


@pytest.mark.parametrize("name, side", [("1_L_CC.png", "left"), ("1_R_CC.png", "right")])
def test_real_nyu_pngs(nyu_sample_dir, name, side):
    img = LoadMammogram()(nyu_sample_dir / name)
    assert img.shape == (1, 3328, 2560) and img.dtype == torch.float32
    arr = img[0].numpy()
    assert arr.min() >= 0 and arr.max() <= 65535
    levels = np.round(arr.astype(np.float64) * 4095 / 65535)  # 12-bit data scaled to 16 bits (float64:
    np.testing.assert_array_equal(
        np.round(levels * 65535 / 4095), arr
    )  # float32 would round k + 1/2 wrongly)
    assert arr[0, 0] == arr[-1, 0] == arr[0, -1] == arr[-1, -1] == 0  # background corners
    column_sums = arr.sum(axis=0, dtype=np.float64)
    left, right = column_sums[:1280].sum(), column_sums[1280:].sum()
    assert (left > 5 * right) if side == "left" else (right > 5 * left)  # the breast keeps its side
    assert img.meta["laterality"] == name[2] and img.meta["view"] == "CC"
    assert img.meta["bits_stored"] == 16
