"""The corpus of broken inputs: every kind of damaged input a user can feed the package.

Every input is generated here (tiny images written by pydicom / OpenCV / nibabel, CSVs, plists
and pickles written on the fly): no stored binaries. Each case goes through a public entry
point (``LoadMammogram(d)``, the geometry, patch, ROI, heatmap and intensity transforms,
``index_dataset``, the patch extractors) and checks the exact outcome: the project error type,
the file / row / key it names and the problem (a phrase of its message), or, for documented
skips, the skip counted with its reason code.
"""

from __future__ import annotations

import json
import pickle
import plistlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor
from pydicom.encaps import encapsulate

from monai_mammo.data.dicom_writer import write_mammogram_dicom
from monai_mammo.data.indexers import index_dataset
from monai_mammo.data.indexers.cbis_ddsm import MASS_COLUMNS
from monai_mammo.data.synthetic.writers.cbis_ddsm import write_cbis_ddsm
from monai_mammo.engines.calc_patches import extract_calc_patches
from monai_mammo.engines.patches import extract_patch_dataset
from monai_mammo.exceptions import MammoDataError, MammoError, MammoGeometryError, MammoSkip
from monai_mammo.transforms import (
    BoundingBoxROI,
    CropBreast,
    LesionCenteredCrop,
    LoadFindingMasksd,
    LoadMammogram,
    LoadMammogramd,
    OrientBreast,
    ResizeAreaCubic,
    SamplePatches,
    SamplePatchesd,
    SkipAwareCompose,
    StackHeatmaps,
    StandardizeImageChannel,
    load_heatmap_nifti,
    mass_roi_pipeline,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
]

SOURCE = "/data/case_7/scan.dcm"  # filename_or_obj of the in-memory images (names no side or view)
H, W = 48, 40


def _meta_image(pixels: np.ndarray, laterality: str | None = "L") -> MetaTensor:
    """A (1, H, W) float32 MetaTensor as LoadMammogram makes it."""
    arr = np.asarray(pixels, dtype=np.float32)
    return MetaTensor(
        torch.as_tensor(arr[None] if arr.ndim == 2 else arr),
        meta={"filename_or_obj": SOURCE, "laterality": laterality},
    )


def _breast(shape: tuple[int, int] = (H, W)) -> np.ndarray:
    """A breast-like image: bright half-disc against the left edge, zero background."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    inside = ((yy - shape[0] / 2) / (shape[0] * 0.45)) ** 2 + (xx / (shape[1] * 0.7)) ** 2 <= 1
    return np.where(inside, 800.0 + 4.0 * yy, 0.0).astype(np.float32)


def _mask(box: tuple[int, int, int, int], shape: tuple[int, int] = (H, W)) -> np.ndarray:
    """A (1, H, W) boolean mask of the half-open box ``(y0, x0, y1, x1)``."""
    mask = np.zeros((1, *shape), bool)
    mask[0, box[0] : box[2], box[1] : box[3]] = True
    return mask


def _raises(call: Callable[[], Any], error: type[MammoError], phrase: str, source: str | None) -> MammoError:
    """Run ``call``; it must raise exactly ``error`` whose message names ``source`` and ``phrase``."""
    with pytest.raises(MammoError) as info:
        call()
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    assert phrase in info.value.problem, info.value.problem
    if source is not None:
        assert info.value.source is not None and source in info.value.source, info.value.source
        assert str(info.value).startswith(info.value.source)
    return info.value


# ---------------------------------------------------------------------------------------------
# DICOM files: truncated, corrupt, unsupported, FOR PROCESSING, empty, non-finite
# ---------------------------------------------------------------------------------------------

PIXELS = (np.arange(H * W, dtype=np.uint16).reshape(H, W) % 4096).astype(np.uint16)


def _valid(path: Path, **kwargs: Any) -> Path:
    kwargs.setdefault("bits_stored", 12)
    return write_mammogram_dicom(path, PIXELS, **kwargs)


def _edit(path: Path, edit: Callable[[pydicom.Dataset], None]) -> Path:
    """A valid file whose dataset ``edit`` changes (then written back as is)."""
    ds = pydicom.dcmread(_valid(path))
    edit(ds)
    ds.save_as(path)
    return path


def _cut(path: Path, keep: int) -> Path:
    """A valid file cut to ``data[:keep]`` (negative: that many bytes lost at the end)."""
    data = _valid(path).read_bytes()
    path.write_bytes(data[:keep])
    return path


def _overwrite(path: Path, start: int, garbage: bytes) -> Path:
    """A valid file with ``garbage`` written over its bytes from ``start``."""
    data = bytearray(_valid(path).read_bytes())
    data[start : start + len(garbage)] = garbage
    path.write_bytes(bytes(data))
    return path


def _bad_vr(path: Path) -> Path:
    """PhotometricInterpretation's VR ``CS`` damaged to ``C\\0`` (an unknown value representation)."""
    raw = _valid(path).read_bytes()
    assert raw.count(b"\x28\x00\x04\x00CS") == 1
    path.write_bytes(raw.replace(b"\x28\x00\x04\x00CS", b"\x28\x00\x04\x00C\x00"))
    return path


def _set(**values: Any) -> Callable[[pydicom.Dataset], None]:
    def edit(ds: pydicom.Dataset) -> None:
        for keyword, value in values.items():
            setattr(ds, keyword, value)

    return edit


def _delete(keyword: str) -> Callable[[pydicom.Dataset], None]:
    return lambda ds: delattr(ds, keyword)


def _transfer_syntax(uid: str) -> Callable[[pydicom.Dataset], None]:
    def edit(ds: pydicom.Dataset) -> None:
        ds.file_meta.TransferSyntaxUID = uid
        ds.PixelData = encapsulate([ds.PixelData])  # a compressed syntax needs encapsulated frames

    return edit


def _float_pixels(ds: pydicom.Dataset) -> None:
    del ds.PixelData
    ds.FloatPixelData = np.full((H, W), np.nan, np.float32).tobytes()


def _empty_pixels(ds: pydicom.Dataset) -> None:
    ds.Rows = 0
    ds.PixelData = b""


DICOM_CASES = {
    "truncated_pixel_data": (lambda p: _cut(p, -500), "cannot decode the pixel data (truncated or corrupt?)"),
    "truncated_header": (lambda p: _cut(p, 200), "no PixelData element"),
    "zero_byte_file": (lambda p: (p.write_bytes(b""), p)[1], "not a DICOM file"),
    "garbage_after_preamble": (lambda p: _overwrite(p, 132, b"\xff" * 64), "no PixelData element"),
    "unknown_value_representation": (_bad_vr, "unreadable DICOM file (truncated or corrupt?)"),
    "not_dicom_at_all": (lambda p: (p.write_bytes(b"%PDF-1.4 " * 40), p)[1], "not a DICOM file"),
    "photometric_rgb": (
        lambda p: _edit(p, _set(PhotometricInterpretation="RGB")),
        "unsupported PhotometricInterpretation 'RGB'",
    ),
    "photometric_palette": (
        lambda p: _edit(p, _set(PhotometricInterpretation="PALETTE COLOR")),
        "unsupported PhotometricInterpretation 'PALETTE COLOR'",
    ),
    "photometric_missing": (
        lambda p: _edit(p, _delete("PhotometricInterpretation")),
        "unsupported PhotometricInterpretation ''",
    ),
    "transfer_syntax_unknown_uid": (
        lambda p: _edit(p, _transfer_syntax("1.2.826.0.1.3680043.99.1")),
        "unsupported transfer syntax",
    ),
    "transfer_syntax_mpeg2_video": (
        lambda p: _edit(p, _transfer_syntax("1.2.840.10008.1.2.4.100")),
        "unsupported transfer syntax",
    ),
    "transfer_syntax_missing": (
        lambda p: _edit(p, lambda ds: delattr(ds.file_meta, "TransferSyntaxUID")),
        "TransferSyntaxUID",
    ),
    "for_processing_intent": (
        lambda p: _valid(p, presentation_intent="FOR PROCESSING"),
        "FOR PROCESSING image",
    ),
    "for_processing_sop_class": (
        lambda p: _edit(p, _set(SOPClassUID="1.2.840.10008.5.1.4.1.1.1.2.1", PresentationIntentType="")),
        "FOR PROCESSING image",
    ),
    "zero_rows": (lambda p: _edit(p, _empty_pixels), "'Rows' value of '0' is invalid"),
    "multi_frame": (lambda p: _edit(p, _set(NumberOfFrames=3)), "3 frames"),
    "rescale_slope_nan": (
        lambda p: _edit(p, _set(RescaleSlope="NaN", RescaleIntercept="0")),
        "non-finite (NaN/inf) pixel values",
    ),
    "rescale_slope_inf": (
        lambda p: _edit(p, _set(RescaleSlope="inf", RescaleIntercept="0")),
        "non-finite (NaN/inf) pixel values",
    ),
    "window_center_nan": (
        lambda p: _edit(p, _set(WindowCenter="NaN", WindowWidth="400")),
        "non-finite (NaN/inf) pixel values",
    ),
    "float_pixel_data_nan": (lambda p: _edit(p, _float_pixels), "float pixel data"),
}


@pytest.mark.parametrize("entry", ["array", "dict"])
@pytest.mark.parametrize("case", sorted(DICOM_CASES))
def test_broken_dicom(tmp_path: Path, case: str, entry: str) -> None:
    make, phrase = DICOM_CASES[case]
    path = make(tmp_path / f"{case}.dcm")
    load: Callable[[], Any] = (
        (lambda: LoadMammogram()(path))
        if entry == "array"
        else (lambda: LoadMammogramd("image")({"image": str(path)}))
    )
    _raises(load, MammoDataError, phrase, str(path))


def test_missing_file_and_truncated_png(tmp_path: Path) -> None:
    _raises(lambda: LoadMammogram()(tmp_path / "absent.dcm"), MammoDataError, "file not found", "absent.dcm")
    png = tmp_path / "cut.png"
    cv2.imwrite(str(png), (PIXELS * 16).astype(np.uint16))
    png.write_bytes(png.read_bytes()[:60])
    _raises(
        lambda: LoadMammogram()(png), MammoDataError, "unreadable image (truncated or corrupt?)", str(png)
    )


def test_for_processing_allowed_on_request(tmp_path: Path) -> None:
    path = _valid(tmp_path / "raw.dcm", presentation_intent="FOR PROCESSING")
    image = LoadMammogram(allow_for_processing=True)(path)
    assert image.meta["presentation_intent"] == "FOR PROCESSING"
    np.testing.assert_array_equal(image[0].numpy(), PIXELS)


# ---------------------------------------------------------------------------------------------
# wrong or missing tags: laterality, view (photometric: see test_broken_dicom)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("laterality", [None, "B", "U"])
@pytest.mark.parametrize("transform", ["CropBreast", "OrientBreast"])
def test_unknown_laterality(tmp_path: Path, laterality: str | None, transform: str) -> None:
    path = write_mammogram_dicom(
        tmp_path / "scan.dcm", (_breast() * 4).astype(np.uint16), laterality=laterality
    )
    image = LoadMammogram()(path)
    assert image.meta["laterality"] == "none"  # unknown: MONAI's "none", never a guess
    step = (
        CropBreast(side="metadata", radius=2, buffer=1)
        if transform == "CropBreast"
        else OrientBreast(side="metadata")
    )
    _raises(lambda: step(image), MammoGeometryError, "laterality missing or unrecognised", str(path))
    # the documented fallbacks: the caller's value, or the pixels
    assert LoadMammogram()(path, laterality="RIGHT").meta["laterality"] == "R"
    assert OrientBreast(side="auto").chest_wall_side(image) == "left"


@pytest.mark.parametrize(
    ("view", "tag", "expected"), [(None, "ViewPosition", "none"), ("XCCL", "ViewPosition", "XCCL")]
)
def test_missing_or_unusual_view(tmp_path: Path, view: str | None, tag: str, expected: str) -> None:
    path = write_mammogram_dicom(tmp_path / "scan.dcm", PIXELS, view=view, view_tag=tag)
    assert LoadMammogram()(path).meta["view"] == expected
    assert LoadMammogram()(path, view="MLO").meta["view"] == ("MLO" if view is None else expected)


# ---------------------------------------------------------------------------------------------
# degenerate pixels: 0-size, 1-pixel, all-zero and all-max images
# ---------------------------------------------------------------------------------------------

IMAGES = {
    "0x0": np.zeros((0, 0), np.float32),
    "0xN": np.zeros((0, W), np.float32),
    "1x1": np.ones((1, 1), np.float32),
    "all_zero": np.zeros((H, W), np.float32),
    "all_max": np.full((H, W), 65535.0, np.float32),
}


def _sample(image: MetaTensor, mask: np.ndarray | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    mask = np.ones(image.shape, bool) if mask is None else mask
    kwargs = {"patch_size": 8, "n_background": 2, "max_rejections": 20, **kwargs}
    return SamplePatches(**kwargs).set_random_state(seed=0)(image, [mask], [4])  # type: ignore[no-any-return]


def _roi(image: MetaTensor, mask: np.ndarray | None = None) -> dict[str, Any]:
    mask = np.ones(image.shape, bool) if mask is None else mask
    pipeline = mass_roi_pipeline(keys="image", mask_key="mask", resize_size=16, crop_size=12)
    return pipeline({"image": image, "mask": mask})  # type: ignore[no-any-return]


STEPS: dict[str, Callable[[MetaTensor], Any]] = {
    "CropBreast": lambda img: CropBreast()(img),
    "CropBreast_otsu": lambda img: CropBreast(mode="otsu")(img),
    "OrientBreast_pixels": lambda img: OrientBreast(side="pixels")(img),
    "SamplePatches": _sample,
    "mass_roi_pipeline": _roi,
    "ResizeAreaCubic": lambda img: ResizeAreaCubic(8)(img),
}

DEGENERATE = [
    ("0x0", "CropBreast", MammoGeometryError, "with pixels"),
    ("0xN", "CropBreast_otsu", MammoGeometryError, "with pixels"),
    ("0x0", "OrientBreast_pixels", MammoGeometryError, "with pixels"),
    ("0xN", "SamplePatches", MammoGeometryError, "empty image"),
    ("0x0", "mass_roi_pipeline", MammoDataError, "empty image"),
    ("0xN", "ResizeAreaCubic", MammoDataError, "empty image"),
    ("1x1", "CropBreast", MammoGeometryError, "nothing is left of the foreground after erosion"),
    ("1x1", "CropBreast_otsu", MammoGeometryError, "no pixel above the foreground threshold"),
    ("1x1", "OrientBreast_pixels", MammoGeometryError, "cannot orient a blank image"),
    ("1x1", "SamplePatches", MammoGeometryError, "constant image"),
    ("all_zero", "CropBreast", MammoGeometryError, "no pixel above the foreground threshold 0"),
    ("all_zero", "OrientBreast_pixels", MammoGeometryError, "cannot orient a blank image"),
    ("all_zero", "SamplePatches", MammoGeometryError, "constant image"),
    ("all_max", "CropBreast", MammoGeometryError, "nothing is left of the foreground after erosion"),
    ("all_max", "CropBreast_otsu", MammoGeometryError, "no pixel above the foreground threshold 65535"),
    ("all_max", "OrientBreast_pixels", MammoGeometryError, "cannot orient a blank image"),
    ("all_max", "SamplePatches", MammoGeometryError, "constant image"),
]


@pytest.mark.parametrize(("kind", "step", "error", "phrase"), DEGENERATE)
def test_degenerate_images(kind: str, step: str, error: type[MammoError], phrase: str) -> None:
    _raises(lambda: STEPS[step](_meta_image(IMAGES[kind])), error, phrase, SOURCE)


@pytest.mark.parametrize("kind", ["1x1", "all_zero", "all_max"])
def test_degenerate_images_documented_outputs(kind: str) -> None:
    """Where no decision rests on the intensities, the documented result comes out (no error)."""
    image = _meta_image(IMAGES[kind])
    roi = _roi(image)["image"]  # a constant image min-max normalises to all zeros
    assert roi.shape == (1, 12, 12) and float(roi.abs().max()) == 0.0
    mask = np.ones(image.shape, bool) if kind == "1x1" else _mask(LESION)
    patch = LesionCenteredCrop(8)(image, mask=mask)
    assert patch.shape == (1, 8, 8)
    if kind == "1x1":  # smaller than the patch: symmetric zero padding, recorded
        assert patch.meta["patch_box"] == [-3, -3, 5, 5]
        assert float(patch.sum()) == 1.0 and float(patch[0, 3, 3]) == 1.0


def test_zero_size_dicom_file(tmp_path: Path) -> None:
    path = write_mammogram_dicom(tmp_path / "empty.dcm", np.ones((0, 0), np.uint16))
    _raises(lambda: LoadMammogram()(path), MammoDataError, "'Columns' value of '0' is invalid", str(path))


def test_one_pixel_dicom_file(tmp_path: Path) -> None:
    """One pixel loads (a valid file); every transform that needs a breast then names the file."""
    path = write_mammogram_dicom(tmp_path / "dot.dcm", np.full((1, 1), 900, np.uint16))
    image = LoadMammogram()(path)
    assert image.shape == (1, 1, 1) and float(image) == 900.0
    _raises(lambda: CropBreast()(image), MammoGeometryError, "erosion", str(path))
    _raises(lambda: OrientBreast(side="pixels")(image), MammoGeometryError, "blank image", str(path))
    _raises(lambda: _sample(image), MammoGeometryError, "constant image", str(path))


# ---------------------------------------------------------------------------------------------
# NaN / inf in float inputs
# ---------------------------------------------------------------------------------------------


def _with(value: float) -> np.ndarray:
    pixels = _breast()
    pixels[10, 5] = value
    return pixels


def _stack_array(img: MetaTensor) -> Any:
    benign = np.zeros(img.shape[1:], np.float32)
    benign[3, 3] = float(img[0, 10, 5])
    return StackHeatmaps()(img.nan_to_num(0.0), benign, np.zeros_like(benign))


NON_FINITE = [
    ("CropBreast", MammoDataError, "1 non-finite (NaN/inf) pixel value(s)"),
    ("CropBreast_otsu", MammoDataError, "1 non-finite (NaN/inf) pixel value(s)"),
    ("OrientBreast_pixels", MammoDataError, "1 non-finite (NaN/inf) pixel value(s)"),
    ("SamplePatches", MammoDataError, "NaN/inf pixel values"),
    ("mass_roi_pipeline", MammoDataError, "MinMaxToUint8 got NaN/inf pixel values"),
    ("ResizeAreaCubic", MammoDataError, "NaN/inf pixel values"),
    ("StandardizeImageChannel", MammoDataError, "channel 0 contains NaN/inf values"),
    ("StackHeatmaps_array", MammoDataError, "heatmap contains 1 NaN/inf value(s)"),
]
NON_FINITE_STEPS: dict[str, Callable[[MetaTensor], Any]] = {
    **STEPS,
    "StandardizeImageChannel": lambda img: StandardizeImageChannel()(img),
    "StackHeatmaps_array": _stack_array,
}


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize(("step", "error", "phrase"), NON_FINITE)
def test_non_finite_float_images(step: str, error: type[MammoError], phrase: str, value: float) -> None:
    _raises(lambda: NON_FINITE_STEPS[step](_meta_image(_with(value))), error, phrase, SOURCE)


@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
def test_non_finite_nifti_heatmaps(tmp_path: Path, value: float) -> None:
    heatmap = np.zeros((H, W), np.float32)
    heatmap[4, 7] = value
    nib.save(nib.Nifti1Image(heatmap, np.eye(4)), str(tmp_path / "scan_benign.nii.gz"))
    nib.save(
        nib.Nifti1Image(np.zeros((H, W), np.float32), np.eye(4)), str(tmp_path / "scan_malignant.nii.gz")
    )
    benign = str(tmp_path / "scan_benign.nii.gz")
    _raises(lambda: load_heatmap_nifti(benign), MammoDataError, "heatmap contains 1 NaN/inf value(s)", benign)
    image = _meta_image(_breast())
    _raises(
        lambda: StackHeatmaps(tmp_path)(image), MammoDataError, "heatmap contains 1 NaN/inf value(s)", benign
    )


def test_heatmap_of_wrong_shape_names_both(tmp_path: Path) -> None:
    image = _meta_image(_breast())
    wrong = np.zeros((H, W + 1), np.float32)
    error = _raises(
        lambda: StackHeatmaps()(image, wrong, np.zeros((H, W))),
        MammoDataError,
        "does not match the image",
        SOURCE,
    )
    assert f"({H}, {W + 1})" in error.problem and f"({H}, {W})" in error.problem


# ---------------------------------------------------------------------------------------------
# masks: wrong size or aspect ratio, empty, outside the breast
# ---------------------------------------------------------------------------------------------

LESION = (20, 6, 26, 12)
MASKS = {
    "smaller": np.zeros((1, H // 2, W // 2), bool),
    "other_aspect": np.zeros((1, H, W // 2), bool),
    "transposed": np.zeros((1, W, H), bool),
}


@pytest.mark.parametrize("kind", sorted(MASKS))
def test_masks_of_the_wrong_size(kind: str) -> None:
    image, mask = _meta_image(_breast()), MASKS[kind]
    mask[0, :4, :4] = True
    shape = str(tuple(mask.shape))
    error = _raises(lambda: _sample(image, mask), MammoDataError, "mask of finding 0 has shape", SOURCE)
    assert shape in error.problem
    _raises(lambda: LesionCenteredCrop(8)(image, mask=mask), MammoDataError, "finding mask has shape", SOURCE)
    _raises(lambda: BoundingBoxROI()(image, mask), MammoDataError, "differs from image", SOURCE)
    _raises(lambda: _roi(image, mask), MammoDataError, "differs from image", SOURCE)
    sampler = SamplePatchesd(keys="image", patch_size=8).set_random_state(seed=0)
    item = {"image": image, "findings": [{"type": "mass", "label": 1, "mask": mask}]}
    _raises(lambda: sampler(item), MammoDataError, "mask of finding 0 has shape", SOURCE)


def test_mask_file_of_another_size(tmp_path: Path) -> None:
    image = write_mammogram_dicom(tmp_path / "scan.dcm", (_breast() * 4).astype(np.uint16))
    mask = tmp_path / "scan_mask.png"
    cv2.imwrite(str(mask), np.full((H, W // 2), 255, np.uint8))
    load = SkipAwareCompose([LoadMammogramd("image"), LoadFindingMasksd("findings")])
    item = {"image": str(image), "findings": [{"type": "mass", "label": 1, "mask": str(mask)}]}
    error = _raises(
        lambda: load(item), MammoDataError, "mask size (48, 20) differs from its image's (48, 40)", str(mask)
    )
    assert str(image) in error.problem


def test_empty_masks() -> None:
    image, empty = _meta_image(_breast()), np.zeros((1, H, W), bool)
    skip = _raises(
        lambda: _sample(image, empty, n_background=0),
        MammoSkip,
        "no patch could be sampled (empty_mask)",
        SOURCE,
    )
    assert skip.reason == "no_patches"
    samples = _sample(image, empty)  # the background is still sampled; the finding is reported
    report = json.loads(samples[0]["sampling_report"])
    assert [(e["finding_index"], e["status"], e["reason"]) for e in report] == [
        (0, "skipped", "empty_mask"),
        (-1, "ok", ""),
    ]
    assert {s["label"] for s in samples} == {0}
    for call in (
        lambda: LesionCenteredCrop(8)(image, mask=empty),
        lambda: BoundingBoxROI()(image, empty),
        lambda: _roi(image, empty),
    ):
        assert _raises(call, MammoSkip, "empty", SOURCE).reason == "empty_mask"  # type: ignore[attr-defined]


def test_mask_outside_the_breast_is_a_counted_skip() -> None:
    image = _meta_image(_breast())
    outside = _mask((40, 32, 46, 38))  # the bottom-right background corner
    assert float(image[0][outside[0]].max()) == 0.0
    inside = _mask(LESION)
    samples = SamplePatches(patch_size=8, n_background=2).set_random_state(seed=0)(
        image, [outside, inside], [4, 2]
    )
    report = json.loads(samples[0]["sampling_report"])
    assert [(e["finding_index"], e["reason"], e["n_patches"]) for e in report] == [
        (0, "mask_outside_breast", 0),
        (1, "", 10),
        (-1, "", 2),
    ]
    assert report[0]["status"] == "skipped"
    assert "finding 0: ROI mask lies entirely outside the breast" in report[0]["message"]
    assert sorted({(s["finding_index"], s["label"]) for s in samples}) == [(-1, 0), (1, 2)]
    skip = _raises(
        lambda: SamplePatches(patch_size=8, n_background=0)(image, [outside], [4]),
        MammoSkip,
        "no patch could be sampled (mask_outside_breast)",
        SOURCE,
    )
    assert skip.reason == "no_patches"  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# lesions at every border, images smaller than a patch
# ---------------------------------------------------------------------------------------------

BORDERS = {
    "top": (0, 14, 4, 20),
    "bottom": (H - 4, 14, H, 20),
    "left": (20, 0, 26, 4),
    "right": (20, W - 4, 26, W),
    "top_left": (0, 0, 5, 5),
    "bottom_right": (H - 5, W - 5, H, W),
}


@pytest.mark.parametrize("border", sorted(BORDERS))
def test_lesions_at_every_border(border: str) -> None:
    y0, x0, y1, x1 = box = BORDERS[border]
    image = _meta_image(np.full((H, W), 500.0, np.float32))
    patch = LesionCenteredCrop(16)(image, mask=_mask(box))
    py0, px0, py1, px1 = patch.meta["patch_box"]
    assert (py1 - py0, px1 - px0) == (16, 16)
    assert (
        0 <= py0 <= y0 and y1 <= py1 <= H and 0 <= px0 <= x0 and x1 <= px1 <= W
    )  # shifted inwards, never padded
    assert float(patch.min()) == 500.0
    sampler = SamplePatches(patch_size=8, n_background=0).set_random_state(seed=1)
    samples = sampler(image, [_mask(box)], [3], breast_mask=np.ones((1, H, W), bool))
    report = json.loads(samples[0]["sampling_report"])
    assert report[0]["status"] in ("ok", "relaxed") and len(samples) == 10
    for sample in samples:  # each patch holds lesion pixels; outside the image it is zero-padded
        sy0, sx0, sy1, sx1 = sample["patch_box"].tolist()
        assert max(sy0, y0) < min(sy1, y1) and max(sx0, x0) < min(sx1, x1)
        inside = sample["image"][0, max(-sy0, 0) : 8 - max(sy1 - H, 0), max(-sx0, 0) : 8 - max(sx1 - W, 0)]
        assert float(inside.min()) == 500.0 and float(sample["image"].sum()) == 500.0 * inside.numel()


def _calc_item(
    tmp_path: Path, name: str, shape: tuple[int, int], findings: list[dict[str, Any]]
) -> dict[str, Any]:
    image = write_mammogram_dicom(tmp_path / f"{name}.dcm", (_breast(shape) * 4).astype(np.uint16))
    return {"image": str(image), "patient_id": name, "findings": findings}


def _calc(**extra: Any) -> dict[str, Any]:
    return {"type": "calcification", "pathology": "MALIGNANT", **extra}


def test_calc_patches_at_borders_and_small_images(tmp_path: Path) -> None:
    border = _calc_item(tmp_path, "border", (H, W), [_calc(bbox=list(b)) for b in BORDERS.values()])
    small = _calc_item(tmp_path, "small", (12, 10), [_calc(bbox=[2, 2, 5, 5])])
    out = extract_calc_patches([border, small], tmp_path / "cache", patch_size=16)
    boxes = [s["patch_box"] for s in out["samples"]]
    assert len(boxes) == len(BORDERS)
    for (y0, x0, y1, x1), (py0, px0, py1, px1) in zip(BORDERS.values(), boxes):
        assert (py1 - py0, px1 - px0) == (16, 16)
        assert 0 <= py0 <= y0 and y1 <= py1 <= H and 0 <= px0 <= x0 and x1 <= px1 <= W
    assert out["report"]["skip_counts"] == {"image_smaller_than_patch": 1}
    record = out["report"]["skipped"][0]
    assert (
        record["finding_id"] == f"{small['image']}#0" and "smaller than the 16 px patch" in record["message"]
    )


def test_images_smaller_than_a_patch() -> None:
    image = _meta_image(_breast((20, 24)))
    crop = LesionCenteredCrop(32)
    patch = crop(image, mask=_mask((8, 2, 12, 6), (20, 24)))
    assert patch.shape == (1, 32, 32) and patch.meta["patch_box"] == [-6, -4, 26, 28]
    np.testing.assert_array_equal(patch[0, 6:26, 4:28].numpy(), image[0].numpy())
    assert float(patch[0, :6].abs().sum() + patch[0, 26:].abs().sum()) == 0.0
    np.testing.assert_array_equal(crop.inverse(patch).numpy(), image.numpy())
    # background patches of a 32 px patch all cover the lesion of a 20 x 24 image: counted, not crashed
    samples = SamplePatches(patch_size=32, n_background=2, max_rejections=50).set_random_state(seed=0)(
        image, [_mask((8, 2, 12, 6), (20, 24))], [1]
    )
    report = json.loads(samples[0]["sampling_report"])
    assert report[-1]["finding_index"] == -1 and report[-1]["reason"] == "background_exhausted"
    assert report[-1]["status"] == "skipped" and {s["label"] for s in samples} == {1}


# ---------------------------------------------------------------------------------------------
# calcification patches and the patch-set extractor: counted skips
# ---------------------------------------------------------------------------------------------


def _png_mask(path: Path, shape: tuple[int, int], box: tuple[int, int, int, int] | None) -> str:
    mask = np.zeros(shape, np.uint8)
    if box is not None:
        mask[box[0] : box[2], box[1] : box[3]] = 255
    cv2.imwrite(str(path), mask)
    return str(path)


def test_calc_patch_mask_problems_are_counted(tmp_path: Path) -> None:
    findings = [
        _calc(
            mask=_png_mask(tmp_path / "half.png", (H // 2, W // 2), (10, 5, 13, 8))
        ),  # same aspect: rescaled
        _calc(mask=_png_mask(tmp_path / "aspect.png", (H, W // 2), (10, 5, 13, 8))),
        _calc(mask=_png_mask(tmp_path / "empty.png", (H, W), None)),
        _calc(mask=str(tmp_path / "absent.png")),
        _calc(bbox=[40, 30, 60, 50]),
        _calc(bbox=[10, 10, 10, 20]),
        _calc(),
        _calc(bbox=[0, 0, 30, 30]),
        {"type": "mass", "pathology": "MALIGNANT", "bbox": [1, 1, 4, 4]},
        _calc(pathology="UNKNOWN", bbox=[1, 1, 4, 4]),
    ]
    out = extract_calc_patches(
        [_calc_item(tmp_path, "masks", (H, W), findings)], tmp_path / "cache", patch_size=16
    )
    assert out["report"]["skip_counts"] == {
        "mask_aspect_mismatch": 1,
        "empty_mask": 1,
        "unreadable_mask": 1,
        "bad_bbox": 1,
        "empty_bbox": 1,
        "no_location": 1,
        "lesion_larger_than_patch": 1,
        "not_calcification": 1,
        "no_pathology": 1,
    }
    assert out["report"]["rescaled_masks"] == 1 and out["samples"][0]["lesion_box"] == [20, 10, 26, 16]
    ids = {record["reason"]: record["finding_id"].rsplit("#", 1)[1] for record in out["report"]["skipped"]}
    assert ids["mask_aspect_mismatch"] == "1" and ids["bad_bbox"] == "4" and ids["no_pathology"] == "9"


def test_patch_extractor_counts_images_without_patches(tmp_path: Path) -> None:
    good = write_mammogram_dicom(tmp_path / "good.dcm", (_breast() * 4).astype(np.uint16))
    blank = write_mammogram_dicom(tmp_path / "blank.dcm", np.zeros((H, W), np.uint16))
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(good.read_bytes()[:300])
    loader = LoadMammogramd("image")

    def preprocess(item: dict[str, Any]) -> dict[str, Any]:
        return {**loader(item), "findings": [{"type": "mass", "label": 1, "mask": _mask(item["box"])}]}

    items = [
        {"image": str(good), "box": LESION},
        {"image": str(good), "box": (0, 0, 0, 0)},  # an empty mask
        {"image": str(blank), "box": LESION},
        {"image": str(broken), "box": LESION},
    ]
    sampler = SamplePatchesd(keys="image", patch_size=8, n_roi=2, n_background=0)
    out = extract_patch_dataset(items, tmp_path / "cache", preprocess, sampler, {"case": "broken"})
    assert [(s["source"], s["label"]) for s in out["samples"]] == [(str(good), 4), (str(good), 4)]
    assert [(r["source"], r["reason"]) for r in out["skipped"]] == [
        (str(good), "no_patches"),
        (str(blank), "MammoGeometryError"),
        (str(broken), "MammoDataError"),
    ]
    assert "constant image" in out["skipped"][1]["message"] and "no PixelData" in out["skipped"][2]["message"]


# ---------------------------------------------------------------------------------------------
# malformed CBIS-DDSM CSVs
# ---------------------------------------------------------------------------------------------

CBIS_CSV = "mass_case_description_train_set.csv"
CBIS_ROW = {
    "patient_id": "P_00001",
    "breast_density": "3",
    "left or right breast": "LEFT",
    "image view": "CC",
    "abnormality id": "1",
    "abnormality type": "mass",
    "mass shape": "OVAL",
    "mass margins": "CIRCUMSCRIBED",
    "assessment": "4",
    "pathology": "MALIGNANT",
    "subtlety": "3",
    "image file path": "Mass-Training_P_00001_LEFT_CC/1.2.3/1.2.3.4/000000.dcm",
    "cropped image file path": "Mass-Training_P_00001_LEFT_CC_1/1.2.5/1.2.5.6/000000.dcm",
    "ROI mask file path": "Mass-Training_P_00001_LEFT_CC_1/1.2.5/1.2.5.6/000001.dcm",
}


def _cbis(root: Path, header: list[str], rows: list[list[str]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    lines = [",".join(header)] + [",".join(f'"{cell}"' for cell in row) for row in rows]
    (root / CBIS_CSV).write_text("\n".join(lines) + "\n")
    return root


def _row(**changes: str) -> list[str]:
    return [changes.get(column.replace(" ", "_"), CBIS_ROW[column]) for column in MASS_COLUMNS]


CBIS_FILE_ERRORS = {
    "missing_column": ([c for c in MASS_COLUMNS if c != "pathology"], "missing columns ['pathology']"),
    "extra_column": ([*MASS_COLUMNS, "comment"], "unexpected columns ['comment']"),
    "duplicate_column": ([*MASS_COLUMNS, "subtlety"], "duplicate columns ['subtlety']"),
    "renamed_column": (["patient id", *MASS_COLUMNS[1:]], "missing columns ['patient_id']"),
    "empty_file": ([], "empty CSV (no header row)"),
}


@pytest.mark.parametrize("case", sorted(CBIS_FILE_ERRORS))
def test_cbis_csv_of_the_wrong_shape(tmp_path: Path, case: str) -> None:
    header, phrase = CBIS_FILE_ERRORS[case]
    root = _cbis(tmp_path / "cbis", header, [_row()] if header else [])
    if not header:
        (root / CBIS_CSV).write_text("")
    _raises(
        lambda: index_dataset("cbis-ddsm", root, check_files=False),
        MammoDataError,
        phrase,
        str(root / CBIS_CSV),
    )


CBIS_ROW_SKIPS = {
    "bad_pathology": ([_row(pathology="MAYBE")], "bad_value", 2, "bad value 'MAYBE' in column 'pathology'"),
    "bad_side": ([_row(left_or_right_breast="MIDDLE")], "bad_value", 2, "column 'left or right breast'"),
    "bad_view": ([_row(image_view="AXIAL")], "bad_value", 2, "column 'image view' (expected CC or MLO)"),
    "bad_density": ([_row(breast_density="7")], "bad_value", 2, "column 'breast_density'"),
    "bad_abnormality_id": ([_row(abnormality_id="one")], "bad_value", 2, "column 'abnormality id'"),
    "bad_assessment": ([_row(assessment="4a")], "bad_value", 2, "column 'assessment'"),
    "missing_patient": ([_row(patient_id="")], "bad_value", 2, "column 'patient_id'"),
    "missing_cells": ([_row()[:-2]], "bad_row", 2, "12 cells, expected 14"),
    "extra_cells": ([[*_row(), "x"]], "bad_row", 2, "15 cells, expected 14"),
    "duplicate_row": ([_row(), _row()], "duplicate_row", 3, f"duplicate of {CBIS_CSV}:row 2"),
    "inconsistent_row": (
        [_row(), _row(abnormality_id="2", image_view="MLO")],
        "inconsistent_row",
        3,
        "differ from",
    ),
}


@pytest.mark.parametrize("case", sorted(CBIS_ROW_SKIPS))
def test_cbis_csv_bad_rows(tmp_path: Path, case: str) -> None:
    rows, reason, row_no, phrase = CBIS_ROW_SKIPS[case]
    root = _cbis(
        tmp_path / "cbis",
        list(MASS_COLUMNS),
        [*rows, _row(patient_id="P_00002", image_file_path="Mass-Training_P_00002_LEFT_CC/9/9/000000.dcm")],
    )
    summary = index_dataset("cbis-ddsm", root, check_files=False).summary
    assert summary.skip_counts() == {reason: 1}
    assert summary.images == 2 - int(case not in ("duplicate_row", "inconsistent_row"))
    record = summary.skipped[0]
    assert record.source == f"{CBIS_CSV}:row {row_no}" and phrase in record.message
    skip = _raises(
        lambda: index_dataset("cbis-ddsm", root, check_files=False, on_error="raise"),
        MammoSkip,
        phrase,
        f"{CBIS_CSV}:row {row_no}",
    )
    assert skip.reason == reason  # type: ignore[attr-defined]


def test_cbis_mask_of_another_size_is_counted(tmp_path: Path) -> None:
    root = write_cbis_ddsm(
        tmp_path / "cbis", n_patients=1, seed=4, image_shape=(128, 96), broken=["mask_size_mismatch"]
    )
    summary = index_dataset("cbis-ddsm", root).summary
    assert summary.skip_counts() == {"mask_size_mismatch": 1}
    record = summary.skipped[0]
    assert record.source.startswith("mass_case_description") or record.source.startswith(
        "calc_case_description"
    )
    assert "but the image is 128x96; excluded (not stretched)" in record.message


# ---------------------------------------------------------------------------------------------
# malformed INbreast XML
# ---------------------------------------------------------------------------------------------

INBREAST_FILE = "22670001"
TRIANGLE = ["(10.0, 12.0)", "(20.0, 12.0)", "(15.0, 22.0)"]


def _inbreast(root: Path, xml: bytes | list[dict[str, Any]]) -> Path:
    (root / "AllDICOMs").mkdir(parents=True)
    (root / "AllXML").mkdir()
    write_mammogram_dicom(
        root / "AllDICOMs" / f"{INBREAST_FILE}_abcd_MG_L_CC_ANON.dcm", (_breast() * 4).astype(np.uint16)
    )
    header = "Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads"
    (root / "INbreast.csv").write_text(f"{header}\nremoved;50;L;CC;200101;{INBREAST_FILE};2;4\n")
    body = xml if isinstance(xml, bytes) else plistlib.dumps({"Images": [{"ROIs": xml}]})
    (root / "AllXML" / f"{INBREAST_FILE}.xml").write_bytes(body)
    return root


def _roi_dict(points: list[str], count: int | None = None, name: str = "Mass") -> dict[str, Any]:
    return {"Name": name, "NumberOfPoints": len(points) if count is None else count, "Point_px": points}


INBREAST_CASES = {
    "bad_point_text": (
        [_roi_dict([*TRIANGLE[:2], "(15.0; 22.0)"])],
        "bad_points",
        "ROI 0 ('Mass'): bad Point_px entry '(15.0; 22.0)'",
    ),
    "point_not_a_string": (
        [{**_roi_dict(TRIANGLE), "Point_px": [*TRIANGLE[:2], 15]}],
        "bad_points",
        "bad Point_px entry 15",
    ),
    "infinite_point": ([_roi_dict([*TRIANGLE[:2], "(1e400, 3.0)"])], "bad_points", "non-finite point"),
    "far_point": ([_roi_dict([*TRIANGLE[:2], "(1e7, 3.0)"])], "bad_points", "point coordinate beyond"),
    "count_too_high": (
        [_roi_dict(TRIANGLE, count=4)],
        "point_count_mismatch",
        "NumberOfPoints 4 but 3 Point_px entries",
    ),
    "count_missing": (
        [{k: v for k, v in _roi_dict(TRIANGLE).items() if k != "NumberOfPoints"}],
        "point_count_mismatch",
        "NumberOfPoints None",
    ),
    "no_point_list": ([{"Name": "Mass", "NumberOfPoints": 3}], "bad_xml", "ROI 0 has no 'Point_px' list"),
    "rois_not_a_list": (plistlib.dumps({"Images": [{"ROIs": "none"}]}), "bad_xml", "is not a list"),
    "no_images": (plistlib.dumps({"Patient": 1}), "bad_xml", "no 'Images' list"),
    "not_a_plist": (b"<html><body>annotations</body></html>", "bad_xml", "not an OsiriX plist"),
    "truncated_xml": (
        plistlib.dumps({"Images": [{"ROIs": [_roi_dict(TRIANGLE)]}]})[:150],
        "bad_xml",
        "not an OsiriX plist",
    ),
}


@pytest.mark.parametrize("case", sorted(INBREAST_CASES))
def test_inbreast_malformed_xml(tmp_path: Path, case: str) -> None:
    xml, reason, phrase = INBREAST_CASES[case]
    root = _inbreast(tmp_path / "inbreast", xml)
    source = str(root / "AllXML" / f"{INBREAST_FILE}.xml")
    result = index_dataset("inbreast", root)
    assert result.items == [] and result.summary.skip_counts() == {
        reason: 1
    }  # the whole image: never half-annotated
    record = result.summary.skipped[0]
    assert record.source == source and phrase in record.message
    _raises(lambda: index_dataset("inbreast", root, on_error="raise"), MammoDataError, phrase, source)


def test_inbreast_roi_outside_the_image(tmp_path: Path) -> None:
    outside = _roi_dict(["(100.0, 120.0)", "(110.0, 120.0)", "(105.0, 130.0)"])
    root = _inbreast(tmp_path / "inbreast", [outside, _roi_dict(TRIANGLE, name="Calcification")])
    result = index_dataset("inbreast", root)
    assert result.summary.skip_counts() == {"empty_roi": 1}
    assert [f["roi_name"] for f in result.items[0]["findings"]] == ["Calcification"]  # the rest is kept
    assert f"ROI 0 ('Mass') lies outside the {H}x{W} image" in result.summary.skipped[0].message
    _raises(
        lambda: index_dataset("inbreast", root, on_error="raise"),
        MammoDataError,
        "lies outside",
        f"{INBREAST_FILE}.xml",
    )


# ---------------------------------------------------------------------------------------------
# NYU exam-list pickles with unexpected content
# ---------------------------------------------------------------------------------------------

EXAM = {
    "horizontal_flip": "NO",
    "L-CC": ["0_L_CC"],
    "R-CC": ["0_R_CC"],
    "L-MLO": ["0_L_MLO"],
    "R-MLO": ["0_R_MLO"],
}


class _Evil:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (print, ("pwned",))


NYU_EXAM_SKIPS = {
    "exam_not_a_dict": ("0_L_CC", "exam is a str, not a dict"),
    "unknown_key": ({**EXAM, "weird": 1}, "unknown keys ['weird']"),
    "bad_flip": ({**EXAM, "horizontal_flip": "MAYBE"}, "horizontal_flip must be 'YES' or 'NO'"),
    "view_not_a_list": ({**EXAM, "L-CC": "0_L_CC"}, "L-CC must be a list of image names"),
    "no_images": ({"horizontal_flip": "NO", "L-CC": []}, "no images in any view"),
    "metadata_mismatch": ({**EXAM, "best_center": {"L-CC": [(1, 2), (3, 4)]}}, "best_center"),
    "bad_cancer_label": ({**EXAM, "cancer_label": {"left_benign": 2}}, "cancer_label must map"),
    "bad_birads": ({**EXAM, "birads": 7}, "birads must be one of [0, 1, 2]"),
    "bad_finding": (
        {**EXAM, "findings": {"L-CC": [[{"type": "tumour", "pathology": "BENIGN", "mask": "m.png"}]]}},
        "finding type must be one of",
    ),
    "bad_bbox": (
        {
            **EXAM,
            "findings": {
                "L-CC": [[{"type": "mass", "pathology": "BENIGN", "mask": "m.png", "bbox": [5, 5, 1, 1]}]]
            },
        },
        "finding bbox must be",
    ),
}


@pytest.mark.parametrize("case", sorted(NYU_EXAM_SKIPS))
def test_nyu_unexpected_exam_content(tmp_path: Path, case: str) -> None:
    exam, phrase = NYU_EXAM_SKIPS[case]
    (tmp_path / "exam_list.pkl").write_bytes(pickle.dumps([EXAM, exam]))
    result = index_dataset("nyu", tmp_path, check_files=False)
    assert result.summary.rows_read == 2 and result.summary.images == 4
    assert result.summary.skip_counts() == {"unexpected_content": 1}
    record = result.summary.skipped[0]
    source = f"{tmp_path / 'exam_list.pkl'}[exam 1]"
    assert record.source == source and phrase in record.message
    _raises(
        lambda: index_dataset("nyu", tmp_path, check_files=False, on_error="raise"),
        MammoDataError,
        phrase,
        source,
    )


NYU_FILE_ERRORS = {
    "not_a_list": (pickle.dumps({"exams": [EXAM]}), "an exam list must be a list of exam dicts, got a dict"),
    "forbidden_global": (pickle.dumps([EXAM, _Evil()]), "forbidden global builtins.print"),
    "truncated": (pickle.dumps([EXAM] * 3)[:-20], "corrupt or truncated pickle"),
    "not_a_pickle": (b"exam,view\n0,L-CC\n", "pickle"),
    "empty_file": (b"", "pickle"),
}


@pytest.mark.parametrize("case", sorted(NYU_FILE_ERRORS))
def test_nyu_unreadable_pickles(tmp_path: Path, case: str) -> None:
    data, phrase = NYU_FILE_ERRORS[case]
    (tmp_path / "exam_list.pkl").write_bytes(data)
    _raises(
        lambda: index_dataset("nyu", tmp_path, check_files=False),
        MammoDataError,
        phrase,
        str(tmp_path / "exam_list.pkl"),
    )


def test_nyu_missing_images_are_counted(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "0_L_CC.png"), np.zeros((8, 8), np.uint16))
    (tmp_path / "exam_list.pkl").write_bytes(pickle.dumps([EXAM]))
    result = index_dataset("nyu", tmp_path)
    assert [item["view_key"] for item in result.items] == ["L-CC"]
    assert result.summary.skip_counts() == {"missing_image": 3}
    assert "R-CC image '0_R_CC' not found" in result.summary.skipped[0].message
