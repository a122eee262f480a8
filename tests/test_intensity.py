"""Intensity steps of Shen et al. and Wu et al. (NYU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import RepeatChannel, RepeatChanneld

from monai_mammo.exceptions import MammoConfigError, MammoDataError
from monai_mammo.transforms.intensity import (
    DDSM_MEAN,
    INBREAST_MEAN,
    ScaleBitDepth,
    ScaleBitDepthD,
    ScaleBitDepthd,
    StandardizeImageChannel,
    StandardizeImageChanneld,
    StandardizeImageChannelDict,
    SubtractMean,
    SubtractMeand,
    nyu_intensity,
    shen_intensity,
)


def _meta_image(array: np.ndarray) -> MetaTensor:
    affine = torch.diag(torch.tensor([0.07, 0.05, 1.0, 1.0], dtype=torch.float64))
    return MetaTensor(torch.as_tensor(array), affine=affine, meta={"filename_or_obj": "/x/a.dcm"})


@pytest.mark.parametrize("as_torch", [False, True])
def test_scale_bit_depth_16_bit_to_255(as_torch: bool) -> None:
    raw = np.array([[[0, 32768, 65535]]], dtype=np.uint16)
    img = torch.as_tensor(raw.astype(np.int32)) if as_torch else raw
    out = ScaleBitDepth(16, 255.0)(img)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), [[[0.0, 32768 * 255 / 65535, 255.0]]], rtol=1e-6)


def test_scale_bit_depth_to_unit_range_and_meta() -> None:
    out = ScaleBitDepth(bits_stored=12)(_meta_image(np.array([[[0, 4095]]], dtype=np.int16)))
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "/x/a.dcm"
    np.testing.assert_allclose(out.numpy(), [[[0.0, 1.0]]])
    assert out.affine[0, 0].item() == pytest.approx(0.07)
    with pytest.raises(MammoConfigError):
        ScaleBitDepth(bits_stored=0)
    d = ScaleBitDepthd("image", 16, 255.0)({"image": np.full((1, 2, 2), 65535, dtype=np.uint16)})
    assert d["image"].max().item() == pytest.approx(255.0)
    assert ScaleBitDepthD is ScaleBitDepthd


def test_subtract_mean_constants_and_dtypes() -> None:
    assert (DDSM_MEAN, INBREAST_MEAN) == (52.18, 44.33)
    out = SubtractMean()(np.array([[[0, 255]]], dtype=np.uint8))  # no wrap-around of unsigned input
    np.testing.assert_allclose(out.numpy(), [[[-52.18, 255 - 52.18]]], rtol=1e-6)
    out_t = SubtractMean(INBREAST_MEAN)(torch.full((1, 2, 2), 44.33, dtype=torch.float64))
    assert out_t.dtype == torch.float64 and out_t.abs().max().item() < 1e-12
    d = SubtractMeand("image", mean=10.0)({"image": _meta_image(np.full((1, 2, 2), 12.0, dtype=np.float32))})
    assert isinstance(d["image"], MetaTensor) and torch.allclose(d["image"], torch.full((1, 2, 2), 2.0))


def test_standardize_only_image_channel(rng: np.random.Generator) -> None:
    stack = np.stack([rng.random((6, 4)) * 900 + 50, rng.random((6, 4)), rng.random((6, 4))]).astype(
        np.float32
    )
    original = stack.copy()
    out = StandardizeImageChannel()(stack)
    x = stack[0].astype(np.float64)
    np.testing.assert_allclose(
        out[0].numpy(), (x - x.mean()) / x.std(), rtol=1e-4, atol=1e-5
    )  # population std
    np.testing.assert_array_equal(out[1:].numpy(), stack[1:])  # heatmaps untouched
    np.testing.assert_array_equal(stack, original)  # input not modified in place


def test_standardize_std_floor_on_constant_image() -> None:
    out = StandardizeImageChannel()(torch.full((3, 5, 5), 7.0))
    assert torch.equal(out[0], torch.zeros(5, 5))
    assert torch.equal(out[1:], torch.full((2, 5, 5), 7.0))
    # a tiny nonzero std is floored at 1e-5 (MONAI's NormalizeIntensity would divide by it)
    tiny = torch.zeros(1, 1, 2, dtype=torch.float64)
    tiny[0, 0, 1] = 2e-7  # std 1e-7
    out = StandardizeImageChannel()(tiny)
    torch.testing.assert_close(out[0, 0], torch.tensor([-1e-7, 1e-7], dtype=torch.float64) / 1e-5)


def test_standardize_torch_meta_and_dict() -> None:
    img = _meta_image(np.arange(12, dtype=np.int32).reshape(1, 3, 4))
    out = StandardizeImageChanneld("image")({"image": img})["image"]
    assert isinstance(out, MetaTensor) and out.dtype == torch.float32
    assert out.meta["filename_or_obj"] == "/x/a.dcm"
    assert out[0].mean().abs().item() < 1e-6 and out[0].std(unbiased=False).item() == pytest.approx(
        1.0, rel=1e-5
    )
    assert StandardizeImageChannelDict is StandardizeImageChanneld
    with pytest.raises(MammoDataError, match="channel 3"):
        StandardizeImageChannel(channel=3)(np.zeros((3, 2, 2)))
    with pytest.raises(MammoDataError, match="NaN"):
        StandardizeImageChannel()(np.full((1, 2, 2), np.nan))
    with pytest.raises(MammoConfigError):
        StandardizeImageChannel(eps=0.0)


def test_shen_intensity_factory() -> None:
    raw = np.full((1, 2, 3), 65535, dtype=np.uint16)
    raw[0, 0, 0] = 0
    out = shen_intensity(None)(raw)
    assert tuple(out.shape) == (3, 2, 3)
    np.testing.assert_allclose(out[:, 0, 0].numpy(), [-DDSM_MEAN] * 3, rtol=1e-6)
    np.testing.assert_allclose(out[:, 1, 2].numpy(), [255.0 - DDSM_MEAN] * 3, rtol=1e-6)
    pipeline = shen_intensity("image", dataset_mean=INBREAST_MEAN)
    kinds = [type(t) for t in pipeline.transforms]
    assert kinds == [ScaleBitDepthd, RepeatChanneld, SubtractMeand]
    assert [type(t) for t in shen_intensity(None).transforms][1] is RepeatChannel
    d = pipeline({"image": _meta_image(raw)})["image"]
    assert isinstance(d, MetaTensor) and d.meta["filename_or_obj"] == "/x/a.dcm"
    assert d[2, 1, 2].item() == pytest.approx(255.0 - INBREAST_MEAN, rel=1e-6)


def test_nyu_intensity_factory(rng: np.random.Generator) -> None:
    stack = torch.as_tensor(rng.random((3, 8, 6)) * 100, dtype=torch.float32)
    out = nyu_intensity()({"image": stack})["image"]
    assert torch.equal(out[1:], stack[1:])
    assert out[0].mean().abs().item() < 1e-5
    torch.testing.assert_close(nyu_intensity(None)(stack), out)
