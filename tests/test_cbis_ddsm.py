"""CBIS-DDSM: synthetic writer -> indexer round trip, quirks, broken files and error reporting."""

from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from monai_mammo.data.indexers.cbis_ddsm import CALC_COLUMNS, MASS_COLUMNS, index_cbis_ddsm
from monai_mammo.data.schema import PatchClass
from monai_mammo.data.synthetic.writers.cbis_ddsm import BROKEN_CASES, write_cbis_ddsm
from monai_mammo.exceptions import MammoConfigError, MammoDataError

SHAPE = (128, 96)
N_PATIENTS = 8
CSV_NAMES = [
    "calc_case_description_test_set.csv",
    "calc_case_description_train_set.csv",
    "mass_case_description_test_set.csv",
    "mass_case_description_train_set.csv",
]


@pytest.fixture(scope="module")
def nbia_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cbis_ddsm(tmp_path_factory.mktemp("nbia"), n_patients=N_PATIENTS, seed=3, image_shape=SHAPE)


@pytest.fixture(scope="module")
def legacy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cbis_ddsm(
        tmp_path_factory.mktemp("legacy"), n_patients=N_PATIENTS, seed=3, image_shape=SHAPE, layout="legacy"
    )


def read_rows(root: Path) -> list[dict[str, str]]:
    """Every CSV row, stripped, with its file name (an independent reading of the CSVs)."""
    rows = []
    for name in CSV_NAMES:
        with open(root / name, newline="") as fh:
            for row in csv.DictReader(fh):
                rows.append({key: value.strip() for key, value in row.items()} | {"csv": name})
    return rows


def pixels(path: str | Path) -> np.ndarray:
    return pydicom.dcmread(path).pixel_array


def is_mask_of(path: str | Path, shape: tuple[int, ...]) -> bool:
    arr = pixels(path)
    return arr.shape == shape and set(np.unique(arr).tolist()) <= {0, 255} and arr.max() == 255


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_round_trip_every_image_and_finding(nbia_root: Path) -> None:
    rows = read_rows(nbia_root)
    result = index_cbis_ddsm(nbia_root)
    summary = result.summary
    assert summary.skipped == []
    assert summary.rows_read == len(rows)
    by_image: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_image.setdefault(row["image file path"], []).append(row)
    assert summary.images == len(result.items) == len(by_image)
    assert summary.findings == len(rows)
    items_by_subject = {
        Path(item["image"]).relative_to(nbia_root / "CBIS-DDSM").parts[0]: item for item in result.items
    }
    for image_rel, image_rows in by_image.items():
        item = items_by_subject[image_rel.split("/")[0]]
        first = image_rows[0]
        assert item["patient_id"] == first["patient_id"]
        assert item["laterality"] == first["left or right breast"][0]
        assert item["view"] == first["image view"]
        density = first.get("breast_density") or first["breast density"]
        assert item["density"] == int(density)
        assert item["study_id"] == image_rel.split("/")[1]
        assert item["split"] == ("test" if "test" in first["csv"] else "train")
        assert item["source"] == "cbis-ddsm"
        assert item["birads"] == str(max(int(r["assessment"]) for r in image_rows))
        assert "full mammogram images" in item["image"]
        image = pixels(item["image"])
        assert image.shape == SHAPE
        findings = {f["abnormality_id"]: f for f in item["findings"]}
        assert sorted(findings) == sorted(int(r["abnormality id"]) for r in image_rows)
        for row in image_rows:
            finding = findings[int(row["abnormality id"])]
            label = 1 if row["pathology"] == "MALIGNANT" else 0
            assert finding["type"] == row["abnormality type"]
            assert finding["pathology"] == row["pathology"]
            assert finding["label"] == label
            kind = "MASS" if finding["type"] == "mass" else "CALC"
            assert finding["class_id"] == PatchClass[f"{kind}_{'MALIGNANT' if label else 'BENIGN'}"]
            assert finding["bbox"] is None
            assert is_mask_of(finding["mask"], image.shape)
        assert item["label"] == max(f["label"] for f in item["findings"])


def test_writer_content_is_balanced_and_has_quirks(nbia_root: Path) -> None:
    rows = read_rows(nbia_root)
    kinds = {(r["abnormality type"], r["pathology"] == "MALIGNANT") for r in rows}
    assert kinds == {("mass", True), ("mass", False), ("calcification", True), ("calcification", False)}
    assert {r["csv"] for r in rows} == set(CSV_NAMES)
    headers = {name: (nbia_root / name).read_text().splitlines()[0].split(",") for name in CSV_NAMES}
    assert headers["mass_case_description_train_set.csv"] == list(MASS_COLUMNS)
    assert headers["calc_case_description_test_set.csv"] == list(CALC_COLUMNS)
    raw = (nbia_root / "mass_case_description_train_set.csv").read_text()
    assert '.dcm\n"' in raw  # newline inside the quoted path cells
    assert ",N/A," in (nbia_root / "calc_case_description_train_set.csv").read_text()
    assert ",NA," in (nbia_root / "calc_case_description_test_set.csv").read_text()
    assert (nbia_root / "metadata.csv").is_file()
    assert list((nbia_root / "CBIS-DDSM").glob("*/*-DDSM-*/1.000000-full mammogram images-*/1-1.dcm"))
    assert list((nbia_root / "CBIS-DDSM").glob("*_[0-9]/*-DDSM-*/1.000000-ROI mask images-*/1-2.dcm"))


def test_index_items_have_no_trailing_newlines_and_na_rows_kept(nbia_root: Path) -> None:
    result = index_cbis_ddsm(nbia_root)
    for item in result.items:
        assert "\n" not in item["image"]
        assert all("\n" not in f["mask"] for f in item["findings"])
    calc_test = [r for r in read_rows(nbia_root) if r["csv"] == "calc_case_description_test_set.csv"]
    kept = {
        (i["patient_id"], f["abnormality_id"])
        for i in result.items
        if "Calc-Test" in i["image"]
        for f in i["findings"]
    }
    assert {(r["patient_id"], int(r["abnormality id"])) for r in calc_test} <= kept


def test_crop_mask_swaps_resolved_by_content(legacy_root: Path) -> None:
    rows = read_rows(legacy_root)
    base = legacy_root / "CBIS-DDSM"
    swapped = [r for r in rows if not is_mask_of(base / r["ROI mask file path"], SHAPE)]
    straight = [r for r in rows if is_mask_of(base / r["ROI mask file path"], SHAPE)]
    assert swapped and straight  # the writer swaps some rows, like the real data
    result = index_cbis_ddsm(legacy_root)
    assert result.summary.skipped == []
    masks = {(i["image"], f["abnormality_id"]): f["mask"] for i in result.items for f in i["findings"]}
    for row in swapped:
        mask = masks[str(base / row["image file path"]), int(row["abnormality id"])]
        assert mask == str(base / row["cropped image file path"])
    for row in straight:
        mask = masks[str(base / row["image file path"]), int(row["abnormality id"])]
        assert mask == str(base / row["ROI mask file path"])


def test_every_broken_case_is_reported(tmp_path: Path) -> None:
    root = write_cbis_ddsm(tmp_path / "broken", n_patients=4, seed=5, image_shape=SHAPE, broken=BROKEN_CASES)
    n_images = len({r["image file path"] for r in read_rows(root)})
    result = index_cbis_ddsm(root)
    counts = result.summary.skip_counts()
    assert counts == {
        "mask_size_mismatch": 1,
        "missing_mask": 1,
        "for_processing": 1,
        "corrupt_file": 1,
    }
    assert result.summary.images == len(result.items) == n_images - 2  # FOR PROCESSING and corrupt images
    by_reason = {record.reason: record for record in result.summary.skipped}
    assert ".csv:row " in by_reason["mask_size_mismatch"].source
    assert "excluded" in by_reason["mask_size_mismatch"].message
    assert by_reason["for_processing"].source.endswith("1-1.dcm")
    assert "truncated" in by_reason["corrupt_file"].message
    text = result.summary.format()
    assert "mask_size_mismatch: 1" in text and "missing_mask: 1" in text


def test_on_error_raise_names_the_row(tmp_path: Path) -> None:
    root = write_cbis_ddsm(
        tmp_path / "raise", n_patients=2, seed=5, image_shape=SHAPE, broken=["missing_mask"]
    )
    with pytest.raises(MammoDataError, match=r"case_description_\w+_set\.csv:row \d+: no binary ROI mask"):
        index_cbis_ddsm(root, on_error="raise")


def _rewrite_csv(path: Path, edit) -> None:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    rows = edit(rows)
    with open(path, "w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows(rows)


def test_bad_values_skipped_or_raised_naming_file_row_and_column(tmp_path: Path, nbia_root: Path) -> None:
    root = copy_tree(nbia_root, tmp_path / "bad")
    name = "mass_case_description_train_set.csv"

    def edit(rows: list[list[str]]) -> list[list[str]]:
        rows[1][9] = "MAYBE"  # pathology of row 2
        rows[2][1] = "3.5"  # density of row 3
        return rows

    _rewrite_csv(root / name, edit)
    result = index_cbis_ddsm(root)
    bad = [r for r in result.summary.skipped if r.reason == "bad_value"]
    assert [r.source for r in bad] == [f"{name}:row 2", f"{name}:row 3"]
    assert "'MAYBE'" in bad[0].message and "'pathology'" in bad[0].message
    assert "'3.5'" in bad[1].message and "'breast_density'" in bad[1].message
    with pytest.raises(MammoDataError, match=rf"{name}:row 2: bad value 'MAYBE' in column 'pathology'"):
        index_cbis_ddsm(root, on_error="raise")


@pytest.mark.parametrize(
    ("rename", "missing", "extra"),
    [("pathology", "pathology", "diagnosis"), ("ROI mask file path", "ROI mask file path", "mask path")],
)
def test_missing_and_extra_columns_raise(
    tmp_path: Path, nbia_root: Path, rename: str, missing: str, extra: str
) -> None:
    root = copy_tree(nbia_root, tmp_path / "cols")
    name = "calc_case_description_train_set.csv"
    _rewrite_csv(root / name, lambda rows: [[extra if c == rename else c for c in rows[0]], *rows[1:]])
    with pytest.raises(MammoDataError, match=name) as info:
        index_cbis_ddsm(root, on_error="skip")
    assert f"missing columns ['{missing}']" in str(info.value)
    assert f"unexpected columns ['{extra}']" in str(info.value)


def test_duplicate_rows_reported(tmp_path: Path, nbia_root: Path) -> None:
    root = copy_tree(nbia_root, tmp_path / "dup")
    name = "mass_case_description_train_set.csv"
    _rewrite_csv(root / name, lambda rows: [*rows, rows[1]])
    n_rows = len(read_rows(root))
    result = index_cbis_ddsm(root)
    assert result.summary.skip_counts() == {"duplicate_row": 1}
    record = result.summary.skipped[0]
    assert record.source == f"{name}:row {n_rows_in(root / name)}"
    assert f"duplicate of {name}:row 2" in record.message
    assert result.summary.rows_read == n_rows
    assert result.summary.findings == n_rows - 1


def n_rows_in(path: Path) -> int:
    with open(path, newline="") as fh:
        return sum(1 for _ in csv.reader(fh))


def test_missing_full_image_reported(tmp_path: Path, nbia_root: Path) -> None:
    root = copy_tree(nbia_root, tmp_path / "missing")
    subject = next((root / "CBIS-DDSM").glob("Mass-Training_*_CC"))
    shutil.rmtree(subject)
    result = index_cbis_ddsm(root)
    assert result.summary.skip_counts() == {"missing_file": 1}
    assert subject.name in result.summary.skipped[0].message


def test_metadata_csv_resolution(tmp_path: Path, nbia_root: Path) -> None:
    root = copy_tree(nbia_root, tmp_path / "meta")
    base = root / "CBIS-DDSM"
    metadata = (root / "metadata.csv").read_text()
    for index, folder in enumerate(sorted(p for p in base.iterdir() if p.is_dir())):
        new = f"series_{index:03d}"
        folder.rename(base / new)
        metadata = metadata.replace(f"./CBIS-DDSM/{folder.name}/", f"./CBIS-DDSM/{new}/")
    (root / "metadata.csv").write_text(metadata)
    result = index_cbis_ddsm(root)
    assert result.summary.skipped == []
    assert len(result.items) == len(index_cbis_ddsm(nbia_root).items)
    assert all("series_" in item["image"] for item in result.items)
    (root / "metadata.csv").unlink()
    without = index_cbis_ddsm(root)
    assert without.items == [] and set(without.summary.skip_counts()) == {"missing_file"}


def test_paths_only_mode_on_a_tiny_csv(tmp_path: Path) -> None:
    rows = [
        ["P_00001", "3", "LEFT", "CC", "1", "mass", "IRREGULAR", "SPICULATED", "4", "MALIGNANT", "4",
         "Mass-Training_P_00001_LEFT_CC/1.2/1.3/000000.dcm", "Mass-Training_P_00001_LEFT_CC_1/1.4/1.5/000000.dcm\n",
         "Mass-Training_P_00001_LEFT_CC_1/1.4/1.5/000001.dcm\n"],
        ["P_00001", "3", "LEFT", "CC", "2", "mass", "OVAL", "N/A", "3", "BENIGN", "2",
         "Mass-Training_P_00001_LEFT_CC/1.2/1.3/000000.dcm", "Mass-Training_P_00001_LEFT_CC_2/1.6/1.7/000000.dcm",
         "Mass-Training_P_00001_LEFT_CC_2/1.6/1.7/000001.dcm"],
        ["P_00002", "2", "RIGHT", "MLO", "1", "mass", "ROUND", "NA", "2", "BENIGN_WITHOUT_CALLBACK", "1",
         "Mass-Training_P_00002_RIGHT_MLO/1.8/1.9/000000.dcm", "x/000000.dcm", "x/000001.dcm"],
    ]  # fmt: skip
    with open(tmp_path / "mass_case_description_train_set.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(MASS_COLUMNS)
        writer.writerows(rows)
    result = index_cbis_ddsm(tmp_path, check_files=False)
    assert result.summary.skipped == [] and result.summary.rows_read == 3
    first, second = result.items
    assert first["image"] == str(tmp_path / "Mass-Training_P_00001_LEFT_CC/1.2/1.3/000000.dcm")
    assert (first["label"], first["birads"], first["density"], first["study_id"]) == (1, "4", 3, "1.2")
    assert [f["class_id"] for f in first["findings"]] == [PatchClass.MASS_MALIGNANT, PatchClass.MASS_BENIGN]
    assert first["findings"][0]["mask"] == str(
        tmp_path / "Mass-Training_P_00001_LEFT_CC_1/1.4/1.5/000001.dcm"
    )
    assert (second["patient_id"], second["laterality"], second["view"], second["label"]) == (
        "P_00002",
        "R",
        "MLO",
        0,
    )
    assert second["findings"][0]["pathology"] == "BENIGN_WITHOUT_CALLBACK"
    assert {item["split"] for item in result.items} == {"train"}
    explicit = index_cbis_ddsm(
        tmp_path / "elsewhere",
        check_files=False,
        csv_files=[tmp_path / "mass_case_description_train_set.csv"],
    )
    assert explicit.items[0]["image"].startswith(str(tmp_path / "elsewhere"))


def test_no_csv_and_missing_root_raise(tmp_path: Path) -> None:
    with pytest.raises(MammoDataError, match="no CBIS-DDSM description CSVs"):
        index_cbis_ddsm(tmp_path)
    with pytest.raises(MammoDataError, match="dataset folder not found"):
        index_cbis_ddsm(tmp_path / "absent")


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_writer_is_deterministic_and_validates_options(tmp_path: Path) -> None:
    a = write_cbis_ddsm(tmp_path / "a", n_patients=2, seed=11, image_shape=SHAPE)
    b = write_cbis_ddsm(tmp_path / "b", n_patients=2, seed=11, image_shape=SHAPE)
    c = write_cbis_ddsm(tmp_path / "c", n_patients=2, seed=12, image_shape=SHAPE)
    assert tree_digest(a) == tree_digest(b) != tree_digest(c)
    with pytest.raises(MammoConfigError, match="unknown broken"):
        write_cbis_ddsm(tmp_path / "d", broken=["flooded"])
    with pytest.raises(MammoConfigError, match="once"):
        write_cbis_ddsm(tmp_path / "d", broken=["missing_mask", "missing_mask"])
    with pytest.raises(MammoConfigError, match="layout"):
        write_cbis_ddsm(tmp_path / "d", layout="zip")  # type: ignore[arg-type]
    with pytest.raises(MammoConfigError, match="too few"):
        write_cbis_ddsm(tmp_path / "d", n_patients=1, seed=3, image_shape=SHAPE, broken=BROKEN_CASES)


def test_bad_and_inconsistent_rows_and_broken_roi_files(tmp_path: Path, nbia_root: Path) -> None:
    root = copy_tree(nbia_root, tmp_path / "rows")
    name = "mass_case_description_train_set.csv"

    def edit(rows: list[list[str]]) -> list[list[str]]:
        short = rows[1][:5]
        other_patient = [*rows[1][:4], "9", *rows[1][5:]]
        other_patient[0] = "P_99999"
        return [*rows, short, other_patient]

    _rewrite_csv(root / name, edit)
    n_lines = n_rows_in(root / name)
    with open(root / name, newline="") as fh:
        rows = list(csv.DictReader(fh))
    # truncate the mask of the first row's finding, delete the ROI folder of the second row
    base = root / "CBIS-DDSM"
    first_roi = base / (rows[0]["ROI mask file path"].strip().split("/")[0])
    for dcm in first_roi.rglob("*.dcm"):
        if is_mask_of(dcm, SHAPE):
            dcm.write_bytes(dcm.read_bytes()[:-1000])
    shutil.rmtree(base / rows[1]["ROI mask file path"].strip().split("/")[0])
    result = index_cbis_ddsm(root)
    records = {(r.reason, r.source): r.message for r in result.summary.skipped}
    assert ("bad_row", f"{name}:row {n_lines - 1}") in records
    assert "5 cells, expected 14" in records["bad_row", f"{name}:row {n_lines - 1}"]
    assert ("inconsistent_row", f"{name}:row {n_lines}") in records
    assert "P_99999" in records["inconsistent_row", f"{name}:row {n_lines}"]
    assert ("corrupt_file", f"{name}:row 2") in records
    assert "truncated" in records["corrupt_file", f"{name}:row 2"]
    assert ("missing_file", f"{name}:row 3") in records
    assert result.summary.skip_counts() == {
        "bad_row": 1,
        "inconsistent_row": 1,
        "corrupt_file": 1,
        "missing_file": 1,
    }
