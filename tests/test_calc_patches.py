"""Lesion-centred calcification patches: size, border shifting without padding, exclusions, masks, cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from monai_mammo.data.dicom_writer import write_mammogram_dicom
from monai_mammo.data.indexers import index_dataset
from monai_mammo.data.indexers.bbox_csv import omidb_filter
from monai_mammo.data.synthetic.writers import write_dataset
from monai_mammo.engines.calc_patches import calc_patch_transform, extract_calc_patches, load_patch
from monai_mammo.exceptions import MammoConfigError

ROWS, COLS = 900, 760


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A 900 x 760 12-bit DICOM with distinct pixels, and its [0, 1]-normalised values."""
    folder = tmp_path_factory.mktemp("calc")
    pixels = (np.arange(ROWS * COLS, dtype=np.int64).reshape(ROWS, COLS) * 7919 % 4001 + 50).astype(np.uint16)
    path = write_mammogram_dicom(folder / "full.dcm", pixels, bits_stored=12)
    values = pixels.astype(np.float64)
    return path, (values - values.min()) / (values.max() - values.min())


def _calc(bbox=None, mask=None, pathology="MALIGNANT", kind="calcification") -> dict:
    return {"type": kind, "pathology": pathology, "bbox": bbox, "mask": mask}


def _item(path: Path, *findings: dict, **extra) -> dict:
    return {"image": str(path), "patient_id": "P1", "source": "test", "findings": list(findings), **extra}


@pytest.mark.parametrize(
    ("bbox", "expected_box"),
    [
        ([430, 350, 470, 400], [450 - 337, 375 - 337, 450 + 337, 375 + 337]),  # centred on the box
        ([0, 0, 20, 30], [0, 0, 674, 674]),  # top-left corner: shifted inwards
        ([880, 740, 900, 760], [ROWS - 674, COLS - 674, ROWS, COLS]),  # bottom-right corner
        ([5, 60, 600, 700], [0, 380 - 337, 674, 380 + 337]),  # a large lesion still fits
    ],
)
def test_patch_size_position_and_content(image, tmp_path: Path, bbox, expected_box) -> None:
    path, values = image
    result = extract_calc_patches([_item(path, _calc(bbox=bbox))], tmp_path)
    (sample,) = result["samples"]
    y0, x0, y1, x1 = sample["patch_box"]
    assert [y0, x0, y1, x1] == expected_box
    assert (
        (y1 - y0, x1 - x0) == (674, 674) and 0 <= y0 and 0 <= x0 and y1 <= ROWS and x1 <= COLS
    )  # never padded
    assert y0 <= bbox[0] and x0 <= bbox[1] and bbox[2] <= y1 and bbox[3] <= x1  # the lesion is inside
    patch = np.load(sample["image"])
    assert patch.shape == (1, 674, 674) and patch.dtype == np.float16
    np.testing.assert_allclose(patch[0], values[y0:y1, x0:x1], atol=1e-3)
    assert sample["label"] == 1 and sample["finding_id"] == f"{path}#0" and sample["image_path"] == str(path)
    assert sample["source"] == "test" and sample["lesion_box"] == bbox
    assert result["report"]["patches"] == 1 and result["report"]["skip_counts"] == {}


def test_exclusions_are_counted_by_reason(image, tmp_path: Path) -> None:
    path, _ = image
    items = [
        _item(
            path,
            _calc(bbox=[10, 10, 20, 20], pathology="BENIGN"),
            _calc(bbox=[10, 10, 700, 40]),  # 690 rows > 674
            _calc(bbox=[10, 10, 10, 40]),  # zero area
            _calc(bbox=[10, 10, 20, 800]),  # beyond the image
            _calc(),  # neither box nor mask
            _calc(bbox=[10, 10, 20, 20], kind="mass"),
            _calc(bbox=[10, 10, 20, 20], pathology=None),
        ),
        _item(tmp_path / "missing.dcm", _calc(bbox=[1, 1, 5, 5])),
    ]
    report = extract_calc_patches(items, tmp_path / "cache")["report"]
    assert report["patches"] == 1 and report["images"] == 2 and report["findings"] == 8
    assert report["skip_counts"] == {
        "lesion_larger_than_patch": 1,
        "empty_bbox": 1,
        "bad_bbox": 1,
        "no_location": 1,
        "not_calcification": 1,
        "no_pathology": 1,
        "unreadable_image": 1,
    }
    too_large = next(r for r in report["skipped"] if r["reason"] == "lesion_larger_than_patch")
    assert too_large["finding_id"] == f"{path}#1" and "690x30" in too_large["message"]
    small = extract_calc_patches([_item(path, _calc(bbox=[1, 1, 5, 5]))], tmp_path / "c2", patch_size=800)
    assert small["samples"] == [] and small["report"]["skip_counts"] == {"image_smaller_than_patch": 1}


def test_masks_rescaled_or_rejected_by_aspect_ratio(tmp_path: Path) -> None:
    pixels = np.full((120, 80), 1000, np.uint16)
    pixels[:, :4] = 0
    full = write_mammogram_dicom(tmp_path / "full.dcm", pixels, bits_stored=12)
    mask = np.zeros((120, 80), np.uint8)
    mask[40:50, 30:46] = 255
    same = write_mammogram_dicom(tmp_path / "same.dcm", mask, bits_stored=8)
    half = write_mammogram_dicom(tmp_path / "half.dcm", mask[::2, ::2], bits_stored=8)  # 60 x 40: same aspect
    other = write_mammogram_dicom(tmp_path / "other.dcm", mask[:100], bits_stored=8)  # 100 x 80
    empty = write_mammogram_dicom(tmp_path / "empty.dcm", np.zeros((120, 80), np.uint8), bits_stored=8)
    findings = [
        _calc(mask=str(p), pathology="BENIGN") for p in (same, half, other, empty, tmp_path / "no.dcm")
    ]
    result = extract_calc_patches([_item(full, *findings)], tmp_path / "cache", patch_size=32)
    report = result["report"]
    assert report["rescaled_masks"] == 1
    assert report["skip_counts"] == {"mask_aspect_mismatch": 1, "empty_mask": 1, "unreadable_mask": 1}
    by_mask, by_rescaled = result["samples"]
    assert by_mask["lesion_box"] == by_rescaled["lesion_box"] == [40, 30, 50, 46]
    assert by_mask["patch_box"] == [29, 22, 61, 54] and by_mask["label"] == 0
    np.testing.assert_array_equal(load_patch(by_mask["image"]), load_patch(by_rescaled["image"]))


def test_inverted_images_are_re_inverted(tmp_path: Path) -> None:
    pixels = np.zeros((96, 80), np.uint16)
    pixels[10:90, :50] = np.arange(50, dtype=np.uint16) * 60 + 500
    normal = write_mammogram_dicom(tmp_path / "normal.dcm", pixels, bits_stored=12)
    stored_inverted = write_mammogram_dicom(tmp_path / "inv.dcm", 4095 - pixels, bits_stored=12)
    monochrome1 = write_mammogram_dicom(
        tmp_path / "m1.dcm", 4095 - pixels, bits_stored=12, photometric="MONOCHROME1"
    )
    box = [40, 40, 50, 60]
    items = [
        _item(normal, _calc(bbox=box)),
        _item(stored_inverted, _calc(bbox=box), inverted=True),
        _item(monochrome1, _calc(bbox=box)),
    ]
    result = extract_calc_patches(items, tmp_path / "cache", patch_size=48)
    patches = [load_patch(sample["image"]) for sample in result["samples"]]
    assert result["report"]["reinverted_images"] == 1
    assert patches[0][0, 0, -1] == 0.0 and patches[0].max() == 1.0  # background dark, tissue bright
    np.testing.assert_allclose(patches[1], patches[0], atol=1e-3)
    np.testing.assert_allclose(patches[2], patches[0], atol=1e-3)


def test_cache_is_reused_and_keyed_by_inputs(tmp_path: Path) -> None:
    pixels = np.tile(np.arange(64, dtype=np.uint16) * 50, (64, 1))
    path = write_mammogram_dicom(tmp_path / "img.dcm", pixels, bits_stored=12)
    items = [_item(path, _calc(bbox=[20, 20, 30, 30]))]
    first = extract_calc_patches(items, tmp_path / "cache", patch_size=32)
    path.unlink()  # a cache hit reads no image
    again = extract_calc_patches(items, tmp_path / "cache", patch_size=32)
    assert again == first and json.loads((Path(first["folder"]) / "index.json").read_text()) == first
    other = extract_calc_patches(items, tmp_path / "cache", patch_size=16)
    assert other["folder"] != first["folder"] and other["report"]["skip_counts"] == {"unreadable_image": 1}
    with pytest.raises(MammoConfigError):
        extract_calc_patches(items, tmp_path / "cache", patch_size=0)


def test_both_sources_end_to_end_with_workers(tmp_path: Path) -> None:
    cbis = index_dataset("cbis-ddsm", write_dataset("cbis-ddsm", tmp_path / "cbis", n_patients=4, seed=1))
    omi = index_dataset("bbox-csv", write_dataset("bbox-csv", tmp_path / "omi", n_patients=8, seed=1))
    kept, _ = omidb_filter(omi.items)
    calcs = [f for item in cbis.items for f in item["findings"] if f["type"] == "calcification"]
    serial = extract_calc_patches(cbis.items + kept, tmp_path / "serial", patch_size=64)
    parallel = extract_calc_patches(cbis.items + kept, tmp_path / "parallel", patch_size=64, num_workers=2)
    assert len(serial["samples"]) == len(calcs) + len(kept) > 0
    assert serial["report"]["skip_counts"] == {
        "not_calcification": sum(len(i["findings"]) for i in cbis.items) - len(calcs)
    }
    assert {s["source"] for s in serial["samples"]} == {"cbis-ddsm", "bbox-csv"}
    strip = [{k: v for k, v in s.items() if k != "image"} for s in serial["samples"]]
    assert strip == [{k: v for k, v in s.items() if k != "image"} for s in parallel["samples"]]
    item = calc_patch_transform()(serial["samples"][0])
    assert set(item) == {"image", "label"} and tuple(item["image"].shape) == (1, 64, 64)
    assert float(item["image"].min()) >= 0.0 and float(item["image"].max()) <= 1.0
