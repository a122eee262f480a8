"""VinDr-Mammo: the synthetic writer round-trips through the indexer; bad rows are counted or raised."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest

from monai_mammo.data.indexers.vindr import VINDR_BREAST_COLUMNS, VINDR_FINDING_COLUMNS, index_vindr
from monai_mammo.data.schema import PatchClass
from monai_mammo.data.synthetic.writers.vindr import vindr_cases, write_vindr
from monai_mammo.exceptions import MammoConfigError, MammoDataError

N_STUDIES = 4
SHAPE = (192, 160)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_vindr(tmp_path_factory.mktemp("vindr"), n_studies=N_STUDIES, seed=6, image_shape=SHAPE)


@pytest.fixture(scope="module")
def cases():
    return {case.image_id: case for case in vindr_cases(N_STUDIES, 6, SHAPE)}


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def _write_rows(path: Path, rows: list[dict[str, str]], columns) -> None:
    with open(path, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def test_layout(dataset: Path, cases) -> None:
    header = (dataset / "breast-level_annotations.csv").read_text().splitlines()[0]
    assert (
        header
        == "study_id,series_id,image_id,laterality,view_position,height,width,breast_birads,breast_density,split"
    )
    columns = (dataset / "finding_annotations.csv").read_text().splitlines()[0].split(",")
    assert set(columns) == set(VINDR_FINDING_COLUMNS)
    photometrics = set()
    for case in cases.values():
        ds = pydicom.dcmread(dataset / case.path)
        assert ds.BitsStored == 12 and ds.pixel_array.max() < 4096
        np.testing.assert_array_equal(ds.pixel_array, case.image.pixels)
        photometrics.add(ds.PhotometricInterpretation)
    assert photometrics == {"MONOCHROME1", "MONOCHROME2"}
    findings = _rows(dataset / "finding_annotations.csv")
    assert any(r["finding_categories"] == "['No Finding']" and r["xmin"] == "" for r in findings)
    assert any(r["finding_categories"] == "['Mass']" for r in findings)


def test_round_trip(dataset: Path, cases) -> None:
    result = index_vindr(dataset)
    excluded = [case for case in cases.values() if case.birads == "3"]
    assert excluded and result.summary.skip_counts() == {"birads_3": len(excluded)}
    assert len(result.items) == result.summary.images == 4 * N_STUDIES - len(excluded)
    assert result.summary.rows_read == len(_rows(dataset / "breast-level_annotations.csv")) + len(
        _rows(dataset / "finding_annotations.csv")
    )
    for item in result.items:
        case = cases[item["image_id"]]
        assert item["image"] == str(dataset / case.path)
        assert item["patient_id"] == item["study_id"] == case.study_id
        assert (item["laterality"], item["view"]) == (case.laterality, case.view)
        assert item["density"] == case.image.density and item["birads"] == case.birads
        assert item["label"] == (1 if case.birads in "45" else 0)
        assert item["split"] == ("train" if case.split == "training" else "test")
        assert len(item["findings"]) == len(case.image.findings)
        for finding, truth, birads in zip(item["findings"], case.image.findings, case.finding_birads):
            assert finding["type"] == truth.type and finding["bbox"] == list(truth.bbox)
            assert finding["birads"] == birads and finding["mask"] is None and finding["pathology"] is None
            label = {"2": 0, "4": 1, "5": 1}[birads]
            kind = "MASS" if truth.type == "mass" else "CALC"
            assert finding["label"] == label
            assert finding["class_id"] == PatchClass[f"{kind}_{'MALIGNANT' if label else 'BENIGN'}"]
    assert {item["split"] for item in result.items} == {"train", "test"}
    assert {item["label"] for item in result.items} == {0, 1}


def test_missing_image(tmp_path: Path) -> None:
    root = write_vindr(tmp_path, n_studies=2, seed=1, image_shape=(128, 96), broken=("missing_image",))
    result = index_vindr(root)
    counts = result.summary.skip_counts()
    assert counts.pop("missing_image") == 1 and set(counts) <= {"birads_3"}
    missing = next(r for r in result.summary.skipped if r.reason == "missing_image")
    assert missing.source.endswith(".dicom") and not Path(missing.source).exists()
    with pytest.raises(MammoDataError, match=r"\.dicom: image file not found"):
        index_vindr(root, on_error="raise")
    assert len(index_vindr(root, check_files=False).items) == len(result.items) + 1
    with pytest.raises(MammoConfigError, match="unknown broken"):
        write_vindr(tmp_path / "x", n_studies=1, broken=("missing_dicom",))


def test_bad_rows(tmp_path: Path) -> None:
    root = write_vindr(tmp_path, n_studies=2, seed=2, image_shape=(128, 96))
    clean = index_vindr(root)
    breast = _rows(root / "breast-level_annotations.csv")
    findings = _rows(root / "finding_annotations.csv")
    breast[0]["breast_birads"] = "BI-RADS 7"
    breast[1]["breast_density"] = "DENSITY E"
    breast[2]["split"] = "validation"
    _write_rows(root / "breast-level_annotations.csv", breast, VINDR_BREAST_COLUMNS)
    damaged = {breast[i]["image_id"] for i in range(3)}
    target = next(r for r in findings if r["xmin"] and r["image_id"] not in damaged)
    target["finding_categories"] = "Mass"  # not a list literal
    orphan = dict(findings[0], image_id="unknown-image")
    _write_rows(root / "finding_annotations.csv", findings + [orphan], VINDR_FINDING_COLUMNS)
    result = index_vindr(root)
    counts = result.summary.skip_counts()
    assert counts.pop("bad_row") == 3 and counts.pop("bad_finding") == 1 and counts.pop("orphan_finding") == 1
    assert counts == clean.summary.skip_counts()
    assert len(result.items) == len(clean.items) - 4
    with pytest.raises(MammoDataError, match=r"breast-level_annotations.csv:2: bad BI-RADS 'BI-RADS 7'"):
        index_vindr(root, on_error="raise")


@pytest.mark.parametrize(
    ("cells", "reason", "expected"),
    [
        ({"xmin": "10.5", "ymin": "3.2", "xmax": "20.01", "ymax": "9.0"}, None, [3, 10, 9, 21]),
        ({"xmin": "-4", "ymin": "-1", "xmax": "500", "ymax": "20"}, None, [0, 0, 20, 96]),
        ({"xmin": "", "ymin": "", "xmax": "", "ymax": ""}, None, None),
        ({"xmin": "a", "ymin": "1", "xmax": "2", "ymax": "3"}, "bad_box", None),
        ({"xmin": "5", "ymin": "5", "xmax": "5", "ymax": "9"}, "bad_box", None),
    ],
)
def test_boxes(tmp_path: Path, cells: dict[str, str], reason: str | None, expected) -> None:
    root = write_vindr(tmp_path, n_studies=1, seed=0, image_shape=(128, 96))
    breast = _rows(root / "breast-level_annotations.csv")
    row = next(r for r in breast if r["breast_birads"] != "BI-RADS 3")
    finding = {
        **row,
        "finding_categories": "['Architectural Distortion', 'Focal Asymmetry']",
        "finding_birads": "BI-RADS 4",
        **cells,
    }
    _write_rows(root / "finding_annotations.csv", [finding], VINDR_FINDING_COLUMNS)
    result = index_vindr(root)
    if reason is not None:
        assert result.summary.skip_counts().get(reason) == 1
        return
    item = next(i for i in result.items if i["image_id"] == row["image_id"])
    (only,) = item["findings"]
    assert (
        only["bbox"] == expected and only["type"] == "architectural distortion" and only["class_id"] is None
    )
    assert only["categories"] == ["Architectural Distortion", "Focal Asymmetry"] and only["label"] == 1


def test_missing_csv(tmp_path: Path) -> None:
    root = write_vindr(tmp_path, n_studies=1, seed=0, image_shape=(128, 96))
    (root / "finding_annotations.csv").write_text("image_id,study_id\n")
    with pytest.raises(MammoDataError, match="finding_annotations.csv: missing columns"):
        index_vindr(root)
    (root / "finding_annotations.csv").unlink()
    with pytest.raises(MammoDataError, match="finding_annotations.csv: VinDr annotation CSV not found"):
        index_vindr(root)


def test_deterministic(tmp_path: Path) -> None:
    a = write_vindr(tmp_path / "a", n_studies=1, seed=3, image_shape=(128, 96))
    b = write_vindr(tmp_path / "b", n_studies=1, seed=3, image_shape=(128, 96))
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 6 and all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
