"""Generic DICOM + bounding-box CSV source: synthetic writer, indexer, OMI-DB filter, inversion detection."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from monai_mammo.cli import main
from monai_mammo.data.dicom_writer import write_mammogram_dicom
from monai_mammo.data.indexers import INDEXERS, index_dataset
from monai_mammo.data.indexers.bbox_csv import (
    BBOX_CSV_COLUMNS,
    FILTER_REASONS,
    index_bbox_csv,
    looks_inverted,
    omidb_filter,
)
from monai_mammo.data.synthetic.phantom import synthesize_mammogram
from monai_mammo.data.synthetic.writers import WRITERS, write_dataset
from monai_mammo.data.synthetic.writers.bbox_csv import BBOX_CSV_BROKEN, bbox_csv_cases
from monai_mammo.exceptions import MammoConfigError, MammoDataError, MammoSkip

N_PATIENTS = 12
SHAPE = (160, 128)
# filter reason expected for each kind of image the writer draws (None: kept)
KIND_REASONS = {
    "calc_benign": None,
    "calc_malignant": None,
    "mass": "not_calcification",
    "two_boxes": "multiple_bboxes",
    "calc_unknown": "ambiguous_pathology",
    "normal": "no_bbox",
    "calc_no_box": "no_bbox",
    "empty_box": "empty_bbox",
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bbox") / "omi"
    return write_dataset(
        "bbox-csv", root, n_patients=N_PATIENTS, seed=3, image_shape=SHAPE, broken=BBOX_CSV_BROKEN
    )


def test_registered_in_both_registries() -> None:
    assert INDEXERS["bbox-csv"].endswith(":index_bbox_csv")
    assert WRITERS["bbox-csv"].endswith(":write_bbox_csv")


def test_index_counts_match_the_injected_problems(dataset: Path) -> None:
    cases = bbox_csv_cases(N_PATIENTS, 3, SHAPE, BBOX_CSV_BROKEN)
    good = [case for case in cases if case.broken is None]
    result = index_dataset("bbox-csv", dataset)
    summary = result.summary
    assert summary.skip_counts() == {problem: 1 for problem in BBOX_CSV_BROKEN}
    assert summary.rows_read == sum(len(case.rows) for case in cases)
    assert [Path(item["image"]).relative_to(dataset).as_posix() for item in result.items] == [
        c.image for c in good
    ]
    assert summary.images == len(good) and summary.findings == sum(len(c.mammogram.findings) for c in good)
    # pixel-inverted MONOCHROME2 images are flagged, MONOCHROME1 ones (upright after the reader) are not
    assert [item["inverted"] for item in result.items] == [case.inverted for case in good]
    assert summary.inverted == sum(case.inverted for case in good) >= 2
    assert any(case.photometric == "MONOCHROME1" for case in good)
    assert (
        summary.to_dict()["inverted"] == summary.inverted and "inverted images detected" in summary.format()
    )
    item, case = result.items[0], good[0]
    assert (item["patient_id"], item["study_id"], item["laterality"], item["view"]) == (
        case.patient_id,
        case.study_id,
        case.laterality,
        case.view,
    )
    assert item["source"] == "bbox-csv" and item["findings"][0]["mask"] is None


def test_omidb_filter_counts_per_reason(dataset: Path) -> None:
    cases = bbox_csv_cases(N_PATIENTS, 3, SHAPE, BBOX_CSV_BROKEN)
    good = [case for case in cases if case.broken is None]
    kept, skipped = omidb_filter(index_bbox_csv(dataset).items)
    expected = Counter(KIND_REASONS[case.kind] for case in good)
    kept_cases = [case for case in good if KIND_REASONS[case.kind] is None]
    assert len(kept) == expected.pop(None) == len(kept_cases)
    assert Counter(record.reason for record in skipped) == expected
    assert set(expected) == set(FILTER_REASONS)  # every rule has work
    for item, case in zip(kept, kept_cases):
        (finding,) = item["findings"]
        assert finding["type"] == "calcification" and finding["bbox"] == list(case.mammogram.findings[0].bbox)
        assert item["label"] == finding["label"] == int(case.kind == "calc_malignant")


def _item(*findings: dict) -> dict:
    return {"image": "x.dcm", "label": None, "findings": list(findings)}


def _finding(kind: str = "calcification", pathology: str | None = "BENIGN", bbox=(10, 10, 20, 30)) -> dict:
    label = {"MALIGNANT": 1, "BENIGN": 0, "BENIGN_WITHOUT_CALLBACK": 0}.get(str(pathology))
    return {
        "type": kind,
        "pathology": pathology,
        "label": label,
        "bbox": None if bbox is None else list(bbox),
    }


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        (_item(), "no_bbox"),
        (_item(_finding(bbox=None)), "no_bbox"),
        (_item(_finding(bbox=(10, 10, 10, 30))), "empty_bbox"),
        (_item(_finding(), _finding(pathology="MALIGNANT")), "multiple_bboxes"),
        (_item(_finding(kind="mass")), "not_calcification"),
        (_item(_finding(kind="architectural distortion")), "not_calcification"),
        (_item(_finding(pathology=None)), "ambiguous_pathology"),
        # the box count comes first: a mass box beside a calcification box is "multiple_bboxes"
        (_item(_finding(kind="mass"), _finding(pathology=None)), "multiple_bboxes"),
    ],
)
def test_filter_rules(item: dict, reason: str) -> None:
    kept, skipped = omidb_filter([item])
    assert kept == [] and [(r.source, r.reason) for r in skipped] == [("x.dcm", reason)]


def test_filter_keeps_the_boxed_calcification_only() -> None:
    unboxed = _finding(kind="mass", pathology="MALIGNANT", bbox=None)
    empty = _finding(pathology="MALIGNANT", bbox=(5, 5, 5, 9))
    boxed = _finding(pathology="BENIGN_WITHOUT_CALLBACK")
    item = _item(unboxed, empty, boxed)
    kept, skipped = omidb_filter([item])
    assert skipped == [] and kept[0]["findings"] == [boxed] and kept[0]["label"] == 0
    assert kept[0] is not item and len(item["findings"]) == 3  # the input is not modified


def _write_csv(path: Path, rows: list[list[str]], header: tuple[str, ...] = BBOX_CSV_COLUMNS) -> None:
    lines = [",".join(header)] + [",".join(row) for row in rows]
    path.write_text("\n".join(lines) + "\n")


def test_csv_conventions_and_row_errors(tmp_path: Path) -> None:
    head = ["a.dcm", "P1", "S1", "LEFT", "cc"]
    rows = [
        [*head, "Micro-calcifications", "malignant", "10.4", "20.6", "30.2", "40.9", "2", "Train"],
        [*head, "Mass", "benign without callback", "1", "2", "3", "4", "", "train"],
        ["b.dcm", "P2", "", "R", "MLO", "", "", "", "", "", "", "", ""],  # an image without findings
        ["c.dcm", "P3", "S3", "R", "CC", "asymmetry", "Mixed", "", "", "", "", "", ""],
        ["d.dcm", "P4", "S4", "R", "CC", "calcification", "Probably benign", "1", "1", "5", "5", "", ""],
        [
            "e.dcm",
            "P5",
            "S5",
            "R",
            "CC",
            "calcification",
            "Benign",
            "9",
            "1",
            "5",
            "5",
            "",
            "",
        ],  # xmax < xmin
        [
            "f.dcm",
            "P6",
            "S6",
            "R",
            "CC",
            "calcification",
            "Benign",
            "1",
            "1",
            "",
            "5",
            "",
            "",
        ],  # partly empty
        ["g.dcm", "P7", "S7", "X", "CC", "calcification", "Benign", "", "", "", "", "", ""],
        ["h.dcm", "P8", "S8", "L", "CC", "", "Benign", "", "", "", "", "", ""],  # pathology without a lesion
        ["i.dcm", "P9", "S9", "L", "CC", "calcification", "Benign", "", "", "", "", "x", ""],
        ["j.dcm", "P10", "S10", "L", "CC", "calcification", "Benign", "", "", "", "", "", "holdout"],
        ["k.dcm", "P11", "S11", "L", "CC"],  # wrong number of cells
        ["l.dcm", "P12", "S12", "L", "CC", "mass", "Malignant", "", "", "", "", "", ""],
        ["l.dcm", "P99", "S12", "L", "CC", "mass", "Malignant", "", "", "", "", "", ""],  # another patient
        ["", "P13", "S13", "L", "CC", "mass", "Malignant", "", "", "", "", "", ""],
    ]
    _write_csv(tmp_path / "boxes.csv", rows, (*BBOX_CSV_COLUMNS, "lesion_id", "split"))
    result = index_bbox_csv(tmp_path, csv="boxes.csv", check_files=False, source="omi-db")
    assert result.summary.skip_counts() == {
        "unknown_pathology": 1,
        "bad_box": 2,
        "bad_row": 6,
        "inconsistent_row": 1,
    }
    assert result.summary.rows_read == len(rows)
    a, b, c = result.items
    assert a["image"] == str(tmp_path / "a.dcm") and (a["laterality"], a["view"], a["split"]) == (
        "L",
        "CC",
        "train",
    )
    calc, mass = a["findings"]
    assert calc["type"] == "calcification" and calc["bbox"] == [20, 10, 41, 31]  # floor minima, ceil maxima
    assert (calc["pathology"], calc["label"], calc["class_id"], calc["abnormality_id"]) == (
        "MALIGNANT",
        1,
        2,
        2,
    )
    assert mass["pathology"] == "BENIGN_WITHOUT_CALLBACK" and mass["label"] == 0 and a["label"] == 1
    assert b["findings"] == [] and b["label"] == 0 and b["study_id"] is None and b["source"] == "omi-db"
    (other,) = c["findings"]
    assert other["type"] == "asymmetry" and other["pathology"] is None and other["histology"] == "MIXED"
    assert other["class_id"] is None and c["label"] is None
    assert not any(item["inverted"] for item in result.items)


def test_csv_errors_raise(tmp_path: Path) -> None:
    _write_csv(tmp_path / "annotations.csv", [["a.dcm", "P1"]], ("image", "patient_id"))
    with pytest.raises(MammoDataError, match="missing columns"):
        index_bbox_csv(tmp_path)
    with pytest.raises(MammoDataError, match="not found"):
        index_bbox_csv(tmp_path / "nowhere")
    row = ["a.dcm", "P1", "S1", "L", "CC", "calcification", "Benign", "1", "1", "0", "5"]
    _write_csv(tmp_path / "annotations.csv", [row])
    with pytest.raises(MammoSkip, match=r"annotations.csv:row 2") as caught:
        index_bbox_csv(tmp_path, on_error="raise", check_files=False)
    assert caught.value.reason == "bad_box"
    with pytest.raises(MammoConfigError):
        index_bbox_csv(tmp_path, on_error="ignore")


def test_box_beyond_the_image_and_header_fallbacks(tmp_path: Path) -> None:
    pixels = np.zeros((64, 48), np.uint16)
    pixels[8:56, :30] = 3000
    write_mammogram_dicom(tmp_path / "in.dcm", pixels, laterality="R", view="MLO", bits_stored=12)
    write_mammogram_dicom(tmp_path / "out.dcm", pixels, bits_stored=12)
    rows = [
        ["in.dcm", "P1", "S1", "", "", "calcification", "Benign", "0", "0", "48", "64"],  # the whole image
        ["out.dcm", "P2", "S2", "L", "CC", "calcification", "Benign", "0", "0", "49", "10"],
    ]
    _write_csv(tmp_path / "annotations.csv", rows)
    result = index_bbox_csv(tmp_path)
    assert [(r.source, r.reason) for r in result.summary.skipped] == [("annotations.csv:row 3", "bad_box")]
    (item,) = result.items
    assert (item["laterality"], item["view"], item["inverted"]) == (
        "R",
        "MLO",
        False,
    )  # from the DICOM header


@pytest.mark.parametrize("view", ["CC", "MLO"])
@pytest.mark.parametrize("laterality", ["L", "R"])
def test_looks_inverted_on_phantoms(view: str, laterality: str) -> None:
    for seed in range(4):
        image = synthesize_mammogram(
            seed, shape=(192, 144), laterality=laterality, view=view, density=1 + seed
        )
        center, width = image.window or (0.0, 1.0)
        shown = np.clip((image.pixels - center) / width + 0.5, 0.0, 1.0)
        if image.photometric == "MONOCHROME1":
            shown = 1.0 - shown
        assert not looks_inverted(shown)
        assert looks_inverted(1.0 - shown) and looks_inverted((1.0 - shown)[None])
    assert not looks_inverted(np.ones((32, 32)))  # constant: nothing to tell
    with pytest.raises(MammoConfigError):
        looks_inverted(np.zeros((2, 8, 8)))


def test_detect_inverted_off(dataset: Path) -> None:
    result = index_bbox_csv(dataset, detect_inverted=False)
    assert result.summary.inverted == 0 and not any(item["inverted"] for item in result.items)
    assert result.summary.skip_counts()["corrupt_file"] == 1  # the truncated file is still caught


def test_cli_synth_and_index(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "omi"
    args = ["synth", "--format", "bbox-csv", str(root), "--patients", "4", "--size", "128", "96"]
    assert main([*args, "--broken", "bad_box"]) == 0
    out = tmp_path / "datalist.json"
    assert main(["index", "--format", "bbox-csv", str(root), "--out", str(out)]) == 0
    assert "bad_box: 1" in capsys.readouterr().out
    body = json.loads(out.read_text())
    assert body["summary"]["skip_counts"] == {"bad_box": 1} and "inverted" in body["summary"]
    assert (
        len(body["training"] + body["validation"] + body["test"]) == len(bbox_csv_cases(4, 0, (128, 96))) - 1
    )
