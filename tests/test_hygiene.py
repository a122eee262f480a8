"""Data hygiene: duplicate images across splits and patient leakage, on real DICOM/PNG files."""

from __future__ import annotations

import copy
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image

from monai_mammo.data.dicom_writer import write_mammogram_dicom
from monai_mammo.data.hygiene import check_datalist, find_duplicates
from monai_mammo.data.prepare import prepare_datalist
from monai_mammo.data.synthetic.writers import write_dataset
from monai_mammo.exceptions import MammoConfigError, MammoDataError

RATIOS = (0.5, 0.25, 0.25)
SPLITS = ("training", "validation", "test")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A 4-patient synthetic CBIS-DDSM tree and its prepared datalist (no duplicates)."""
    root = tmp_path_factory.mktemp("hygiene")
    write_dataset("cbis-ddsm", root / "cbis", n_patients=4, seed=0, image_shape=(128, 96))
    body = prepare_datalist(root / "cbis", "cbis-ddsm", root / "datalist.json", ratios=RATIOS, seed=0)
    assert all(body[name] for name in SPLITS)
    return root, body


def splits_of(body: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return copy.deepcopy({name: body[name] for name in SPLITS})


def test_clean_datalist_summary(dataset: tuple[Path, dict[str, Any]]) -> None:
    root, body = dataset
    hygiene = body["summary"]["hygiene"]
    assert hygiene["duplicates"]["n_pairs"] == 0
    assert hygiene["duplicates"]["images"] == sum(len(body[name]) for name in SPLITS)
    assert hygiene["images"] == {name: len(body[name]) for name in SPLITS}
    assert hygiene["patients"] == {name: len({i["patient_id"] for i in body[name]}) for name in SPLITS}
    on_disk = json.loads((root / "datalist.json").read_text())
    assert on_disk["summary"]["hygiene"] == hygiene
    assert check_datalist(root / "datalist.json", on_duplicate="raise").duplicates.pairs == []


def test_copy_and_reencoded_copy_found(dataset: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    _, body = dataset
    splits = splits_of(body)
    source = splits["training"][0]
    test_patient = splits["test"][0]["patient_id"]
    val_patient = splits["validation"][0]["patient_id"]
    copied = tmp_path / "copied.dcm"
    shutil.copyfile(source["image"], copied)  # same SOP Instance UID and pixels
    original = pydicom.dcmread(source["image"])
    reencoded = write_mammogram_dicom(  # new UID, RLE-compressed: same pixel values only
        tmp_path / "reencoded.dcm", original.pixel_array, patient_id=val_patient, transfer_syntax="rle"
    )
    inside = tmp_path / "inside.dcm"
    shutil.copyfile(source["image"], inside)  # a duplicate within one split is not reported
    splits["test"].append({**source, "image": str(copied), "patient_id": test_patient})
    splits["validation"].append({**source, "image": str(reencoded), "patient_id": val_patient})
    splits["training"].append({**source, "image": str(inside)})

    report = find_duplicates(splits)
    found = {(p.split_a, Path(p.path_a).name, p.split_b, Path(p.path_b).name): p.by for p in report.pairs}
    name = Path(source["image"]).name
    # pairs are sorted by (split, path): "test" < "training" < "validation"
    assert found == {
        ("test", "copied.dcm", "training", name): ("sop_instance_uid", "pixel_hash"),
        ("test", "copied.dcm", "training", "inside.dcm"): ("sop_instance_uid", "pixel_hash"),
        ("test", "copied.dcm", "validation", "reencoded.dcm"): ("pixel_hash",),
        ("training", name, "validation", "reencoded.dcm"): ("pixel_hash",),
        ("training", "inside.dcm", "validation", "reencoded.dcm"): ("pixel_hash",),
    }
    assert report.counts() == {
        "pixel_hash": 5,
        "sop_instance_uid": 2,
        "test/training": 2,
        "test/validation": 1,
        "training/validation": 2,
    }
    assert report.images == sum(len(v) for v in splits.values())
    summary = report.to_dict(max_pairs=2)
    assert summary["n_pairs"] == 5 and len(summary["pairs"]) == 2

    by_uid = find_duplicates(splits, by=("sop_instance_uid",))
    assert {p.by for p in by_uid.pairs} == {("sop_instance_uid",)} and len(by_uid.pairs) == 2
    stored_bytes = find_duplicates(splits, read_pixels=False)  # RLE bytes differ from raw ones
    assert all("reencoded.dcm" not in p.path_b for p in stored_bytes.pairs)
    assert len(stored_bytes.pairs) == 2


def test_png_pixels_versus_file_bytes(tmp_path: Path) -> None:
    pixels = (np.arange(48 * 32, dtype=np.uint16).reshape(48, 32) * 37) % 4096
    Image.fromarray(pixels).save(tmp_path / "a.png", compress_level=1)
    Image.fromarray(pixels).save(tmp_path / "b.png", compress_level=9)
    Image.fromarray(pixels[::-1].copy()).save(tmp_path / "c.png")
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "b.png").read_bytes()
    splits = {
        "training": [{"image": str(tmp_path / "a.png"), "patient_id": "A"}],
        "test": [{"image": str(tmp_path / "b.png"), "patient_id": "B"}],
        "validation": [{"image": str(tmp_path / "c.png"), "patient_id": "C"}],
        "summary": {"ignored": True},
    }
    report = find_duplicates(splits)
    assert [(p.split_a, Path(p.path_a).name, p.split_b, Path(p.path_b).name, p.by) for p in report.pairs] == [
        ("test", "b.png", "training", "a.png", ("pixel_hash",))
    ]
    assert find_duplicates(splits, read_pixels=False).pairs == []


def test_patient_leakage_names_patient(dataset: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    _, body = dataset
    splits = splits_of(body)
    leaked = splits["training"][0]["patient_id"]
    splits["test"][0]["patient_id"] = leaked
    with pytest.raises(MammoDataError, match=rf"{leaked} in test, training"):
        check_datalist(splits, on_duplicate="ignore")
    path = tmp_path / "leaky.json"
    path.write_text(json.dumps(splits))
    with pytest.raises(MammoDataError, match=leaked):
        check_datalist(path)
    del splits["validation"][0]["patient_id"]
    with pytest.raises(MammoDataError, match=r"validation\[0\] has no patient_id"):
        check_datalist(splits)


def test_check_datalist_policies(
    dataset: tuple[Path, dict[str, Any]], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, body = dataset
    splits = splits_of(body)
    copied = tmp_path / "copied.dcm"
    shutil.copyfile(splits["training"][0]["image"], copied)
    splits["test"].append({**splits["test"][0], "image": str(copied)})
    with caplog.at_level(logging.WARNING, logger="monai_mammo.data.hygiene"):
        report = check_datalist(splits)
    assert len(report.duplicates.pairs) == 1
    assert "1 duplicate image pair(s) across splits" in caplog.text and "copied.dcm" in caplog.text
    with pytest.raises(MammoDataError, match="copied.dcm"):
        check_datalist(splits, on_duplicate="raise")
    assert check_datalist(splits, on_duplicate="ignore").duplicates.pairs == []
    with pytest.raises(MammoConfigError, match="on_duplicate"):
        check_datalist(splits, on_duplicate="skip")
    with pytest.raises(MammoConfigError, match="subset"):
        find_duplicates(splits, by=("md5",))


def test_unreadable_image(tmp_path: Path) -> None:
    broken = tmp_path / "broken.dcm"  # missing file
    splits = {"training": [{"image": str(broken), "patient_id": "A"}], "test": []}
    report = find_duplicates(splits)
    assert [path for path, _ in report.unreadable] == [str(broken)]
    with pytest.raises(MammoDataError, match="broken.dcm"):
        find_duplicates(splits, on_error="raise")


def test_prepare_datalist_records_and_raises(dataset: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    root, body = dataset
    tree = tmp_path / "cbis"
    shutil.copytree(root / "cbis", tree)
    rel = {name: [Path(i["image"]).relative_to(root / "cbis") for i in body[name]] for name in SPLITS}
    # the first test image now holds the pixels of the first training image (own header and UID)
    target = pydicom.dcmread(tree / rel["test"][0])
    source = pydicom.dcmread(tree / rel["training"][0])
    target.Rows, target.Columns, target.PixelData = source.Rows, source.Columns, source.PixelData
    target.save_as(tree / rel["test"][0])

    prepared = prepare_datalist(tree, "cbis-ddsm", tmp_path / "datalist.json", ratios=RATIOS, seed=0)
    duplicates = prepared["summary"]["hygiene"]["duplicates"]
    assert duplicates["n_pairs"] == 1
    pair = duplicates["pairs"][0]
    assert pair["by"] == ["pixel_hash"]
    assert (pair["split_a"], Path(pair["path_a"]).relative_to(tree)) == ("test", rel["test"][0])
    assert (pair["split_b"], Path(pair["path_b"]).relative_to(tree)) == ("training", rel["training"][0])
    on_disk = json.loads((tmp_path / "datalist.json").read_text())
    assert on_disk["summary"]["hygiene"]["duplicates"] == duplicates
    headers_only = prepare_datalist(
        tree, "cbis-ddsm", tmp_path / "uids.json", ratios=RATIOS, seed=0, duplicate_by=("sop_instance_uid",)
    )
    assert headers_only["summary"]["hygiene"]["duplicates"]["n_pairs"] == 0  # new pixels, own UID

    with pytest.raises(MammoDataError, match="duplicate image pair"):
        prepare_datalist(
            tree, "cbis-ddsm", tmp_path / "strict.json", ratios=RATIOS, seed=0, on_duplicate="raise"
        )
    assert not (tmp_path / "strict.json").exists()
