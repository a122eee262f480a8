"""INbreast: the synthetic writer round-trips through the indexer; bad input is counted or raised."""

from __future__ import annotations

import plistlib
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest

from monai_mammo.data.indexers.inbreast import (
    INBREAST_BIRADS_MAP,
    index_inbreast,
    parse_inbreast_xml,
    roi_to_mask,
)
from monai_mammo.data.schema import PatchClass
from monai_mammo.data.synthetic.writers.inbreast import inbreast_cases, write_inbreast
from monai_mammo.exceptions import MammoConfigError, MammoDataError, MammoSkip

N_PATIENTS = 4
SHAPE = (256, 208)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_inbreast(
        tmp_path_factory.mktemp("inbreast"), n_patients=N_PATIENTS, seed=3, image_shape=SHAPE
    )


@pytest.fixture(scope="module")
def small_clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_inbreast(tmp_path_factory.mktemp("clean"), n_patients=2, seed=5, image_shape=(160, 128))


@pytest.fixture(scope="module")
def cases():
    return {case.file_name: case for case in inbreast_cases(N_PATIENTS, 3, SHAPE)}


def test_layout(dataset: Path, cases) -> None:
    lines = (dataset / "INbreast.csv").read_text().splitlines()
    assert lines[0] == "Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads"
    assert all(line.startswith("removed;removed;") for line in lines[1:])
    assert any(";   ;" in line for line in lines[1:])  # blank ACR cells padded with spaces
    names = sorted(p.name for p in (dataset / "AllDICOMs").iterdir())
    assert names == sorted(case.dicom_name for case in cases.values())
    assert any("_MG_L_ML_ANON.dcm" in name for name in names) and not any("_MLO_" in name for name in names)
    ds = pydicom.dcmread(dataset / "AllDICOMs" / names[0])
    assert (ds.BitsStored, ds.PhotometricInterpretation) == (14, "MONOCHROME2")
    assert ds.pixel_array.max() < 2**14
    assert {case.birads for case in cases.values()} >= {"1", "2", "3", "4a", "4b", "4c", "5"}


def test_round_trip(dataset: Path, cases) -> None:
    result = index_inbreast(dataset)
    excluded = [case for case in cases.values() if case.birads == "3"]
    assert excluded and result.summary.skip_counts() == {"birads_3": len(excluded)}
    assert result.summary.rows_read == 4 * N_PATIENTS
    assert result.summary.images == len(result.items) == 4 * N_PATIENTS - len(excluded)
    assert result.summary.findings == sum(len(item["findings"]) for item in result.items)
    positives = set()
    for item in result.items:
        case = cases[item["file_name"]]
        assert Path(item["image"]).name == case.dicom_name
        assert (item["laterality"], item["view"]) == (case.laterality, case.view)
        assert item["patient_id"] == case.patient_hash  # PatientID, or the hash when PatientID is empty
        assert item["density"] == (None if case.acr.strip() == "" else int(case.acr))
        assert item["birads"] == case.birads and item["source"] == "inbreast" and item["split"] is None
        assert item["label"] == (1 if case.birads[0] in "456" else 0)
        if item["label"]:
            positives.add(case.birads)
        assert len(item["findings"]) == len(case.rois)
        for finding in item["findings"]:
            _check_finding(finding, case, item["label"])
    assert positives >= {"4a", "4b", "4c"}
    assert len({item["study_id"] for item in result.items}) == N_PATIENTS


def _check_finding(finding: dict, case, label: int) -> None:
    png = cv2.imread(finding["mask"], cv2.IMREAD_UNCHANGED)
    assert (
        png is not None and png.dtype == np.uint8 and png.shape == SHAPE and set(np.unique(png)) <= {0, 255}
    )
    mask = png > 0
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    assert finding["bbox"] == [rows[0], cols[0], rows[-1] + 1, cols[-1] + 1]
    name, points, truth_index = case.rois[finding["abnormality_id"]]
    assert finding["roi_name"] == name and finding["label"] == label and finding["pathology"] is None
    if truth_index is None:
        assert finding["type"] == name.lower() and finding["class_id"] is None
        return
    truth = case.image.findings[truth_index]
    assert finding["type"] == truth.type
    kind = "MASS" if truth.type == "mass" else "CALC"
    assert finding["class_id"] == PatchClass[f"{kind}_{'MALIGNANT' if label else 'BENIGN'}"]
    if len(points) == 1:
        assert mask.sum() == 1 and truth.mask[mask].all()  # a single pixel inside the cluster
    else:
        assert _dice(mask, truth.mask) > 0.8


def test_custom_birads_map(dataset: Path) -> None:
    result = index_inbreast(dataset, birads_map={**INBREAST_BIRADS_MAP, "3": 0})
    assert result.summary.skipped == [] and len(result.items) == 4 * N_PATIENTS
    result = index_inbreast(dataset, birads_map={"1": 0, "2": 0, "3": None})
    counts = result.summary.skip_counts()
    assert counts["bad_row"] == sum(1 for item in index_inbreast(dataset).items if item["label"] == 1)
    with pytest.raises(MammoDataError, match="INbreast.csv:[0-9]+: unknown BI-RADS"):
        index_inbreast(dataset, birads_map={"1": 0, "2": 0, "3": None}, on_error="raise")


def test_masks_dir(dataset: Path, tmp_path: Path) -> None:
    result = index_inbreast(dataset, masks_dir=tmp_path / "m")
    masks = [f["mask"] for item in result.items for f in item["findings"]]
    assert masks and all(Path(m).parent == tmp_path / "m" and Path(m).is_file() for m in masks)


@pytest.mark.parametrize(
    ("option", "reason", "pattern"),
    [
        ("bad_points", "bad_points", r"\.xml: ROI 0 .*bad Point_px entry"),
        ("point_count_mismatch", "point_count_mismatch", r"\.xml: ROI [0-9]+ .*NumberOfPoints"),
        ("missing_dicom", "missing_dicom", r"INbreast\.csv:[0-9]+: no AllDICOMs/"),
        ("not_plist", "bad_xml", r"\.xml: not an OsiriX plist"),
    ],
)
def test_broken(tmp_path: Path, small_clean, option: str, reason: str, pattern: str) -> None:
    root = write_inbreast(tmp_path, n_patients=2, seed=5, image_shape=(160, 128), broken=(option,))
    clean = index_inbreast(small_clean, masks_dir=tmp_path / "clean_masks")
    result = index_inbreast(root)
    counts = result.summary.skip_counts()
    assert counts.pop(reason) == 1 and counts == clean.summary.skip_counts()
    assert len(result.items) == len(clean.items) - 1
    record = next(r for r in result.summary.skipped if r.reason == reason)
    assert str(root) in record.source
    with pytest.raises(MammoDataError, match=pattern):
        index_inbreast(root, on_error="raise")


def test_all_broken_at_once(tmp_path: Path) -> None:
    root = write_inbreast(
        tmp_path, n_patients=2, seed=1, image_shape=(160, 128), broken=("bad_points", "not_plist")
    )
    assert index_inbreast(root).summary.skip_counts() == {"bad_points": 1, "bad_xml": 1}
    with pytest.raises(MammoConfigError, match="unknown broken"):
        write_inbreast(tmp_path / "x", n_patients=1, broken=("nope",))


def test_truncated_dicom(tmp_path: Path) -> None:
    root = write_inbreast(tmp_path, n_patients=1, seed=2, image_shape=(128, 96))
    path = sorted((root / "AllDICOMs").iterdir())[0]
    path.write_bytes(path.read_bytes()[:4000])
    assert index_inbreast(root).summary.skip_counts() == {"truncated_dicom": 1}
    assert index_inbreast(root, check_files=False).summary.skipped == []
    path.write_bytes(b"not a dicom")
    assert index_inbreast(root).summary.skip_counts() == {"unreadable_dicom": 1}
    with pytest.raises(MammoDataError, match=f"{path.name}: unreadable DICOM"):
        index_inbreast(root, on_error="raise")


def test_bad_csv(tmp_path: Path) -> None:
    root = write_inbreast(tmp_path, n_patients=1, seed=2, image_shape=(128, 96))
    csv_path = root / "INbreast.csv"
    lines = csv_path.read_text().splitlines()
    lines[1] = lines[1].replace(";L;", ";X;")
    lines[2] = lines[2] + ";extra"
    lines[3] = lines[3] + "; "  # trailing blank cells are tolerated
    csv_path.write_text("\n".join(lines) + "\n\n")
    result = index_inbreast(root)
    assert result.summary.skip_counts() == {"bad_row": 2} and len(result.items) == 2
    with pytest.raises(MammoDataError, match="INbreast.csv:2: bad File Name / Laterality / View"):
        index_inbreast(root, on_error="raise")
    csv_path.write_text("Patient ID;Laterality\nremoved;L\n")
    with pytest.raises(MammoDataError, match="missing columns"):
        index_inbreast(root)
    csv_path.unlink()
    with pytest.raises(MammoDataError, match="INbreast.csv not found"):
        index_inbreast(root)
    with pytest.raises(MammoConfigError):
        index_inbreast(root, on_error="ignore")  # type: ignore[arg-type]


def _plist(path: Path, rois: list[dict]) -> Path:
    path.write_bytes(plistlib.dumps({"Images": [{"NumberOfROIs": len(rois), "ROIs": rois}]}))
    return path


def test_xml_parsing_and_masks(tmp_path: Path) -> None:
    rois = [
        {"Name": "Calcification", "NumberOfPoints": 1, "Point_px": ["(3.4, 5.6)"]},
        {"Name": "Point 1", "NumberOfPoints": 2, "Point_px": ["(0, 0)", "(1e1, 2.0)"]},
        {"Name": "Mass", "NumberOfPoints": 4, "Point_px": ["(-5, 2)", "(8, 2)", "(8, 6)", "(-5, 6)"]},
    ]
    parsed = parse_inbreast_xml(_plist(tmp_path / "a.xml", rois))
    assert [name for name, _ in parsed] == ["Calcification", "Point 1", "Mass"]
    np.testing.assert_allclose(parsed[1][1], [[0, 0], [10, 2]])
    single = roi_to_mask(parsed[0][1], (16, 12))
    assert single.sum() == 1 and single[6, 3]
    assert roi_to_mask(parsed[1][1], (16, 12)).sum() == 2
    square = roi_to_mask(parsed[2][1], (16, 12))  # x from -5 clipped at the left edge
    assert square.sum() == 5 * 9 and square[2:7, 0:9].all()
    assert not roi_to_mask(np.array([[50.0, 50.0]]), (16, 12)).any()
    bad = [{"Name": "Mass", "NumberOfPoints": 3, "Point_px": ["(1, 2)", "(3, 4)", "(5,)"]}]
    with pytest.raises(MammoSkip, match=r"b.xml: ROI 0 \('Mass'\): bad Point_px entry '\(5,\)'") as info:
        parse_inbreast_xml(_plist(tmp_path / "b.xml", bad))
    assert info.value.reason == "bad_points"
    (tmp_path / "c.xml").write_bytes(plistlib.dumps({"NoImages": 1}))
    with pytest.raises(MammoSkip, match="no 'Images' list") as info:
        parse_inbreast_xml(tmp_path / "c.xml")
    assert info.value.reason == "bad_xml"


def test_roi_outside_image(tmp_path: Path) -> None:
    root = write_inbreast(tmp_path, n_patients=1, seed=0, image_shape=(128, 96))
    xml_path = sorted((root / "AllXML").iterdir())[0]
    plist = plistlib.loads(xml_path.read_bytes())
    rois = plist["Images"][0]["ROIs"]
    rois.append({"Name": "Unnamed", "NumberOfPoints": 1, "Point_px": ["(500.0, 900.0)"]})
    xml_path.write_bytes(plistlib.dumps(plist))
    result = index_inbreast(root)
    assert result.summary.skip_counts() == {"empty_roi": 1}
    item = next(i for i in result.items if i["file_name"] == xml_path.stem)
    assert len(item["findings"]) == len(rois) - 1
    with pytest.raises(MammoDataError, match=f"{xml_path.name}: ROI {len(rois) - 1} .*outside"):
        index_inbreast(root, on_error="raise")


def test_deterministic(tmp_path: Path) -> None:
    a = write_inbreast(tmp_path / "a", n_patients=1, seed=9, image_shape=(128, 96))
    b = write_inbreast(tmp_path / "b", n_patients=1, seed=9, image_shape=(128, 96))
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
