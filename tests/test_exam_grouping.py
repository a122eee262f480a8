"""Exam records from standard datalist items: grouping by patient/study, views, breast labels, DICOM exams."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pydicom
import pytest
import torch

from monai_mammo.data.indexers.exams import (
    group_exams_by_format,
    group_image_exams,
    image_breast_labels,
    read_image_items,
)
from monai_mammo.data.indexers.inbreast import index_inbreast
from monai_mammo.data.indexers.nyu import NYU_VIEWS, group_exams, index_nyu
from monai_mammo.data.synthetic.writers.inbreast import write_inbreast
from monai_mammo.data.synthetic.writers.nyu import write_nyu
from monai_mammo.engines.multiview import LoadExam
from monai_mammo.exceptions import MammoDataError

SMALL = {"cc_size": (64, 48), "mlo_size": (72, 40), "crop_mode": "otsu", "crop_radius": 20, "crop_buffer": 10}


def _item(
    image: str, patient: str = "P1", study: str | None = "S1", side: str = "L", view: str = "CC", **kw: Any
):
    return {"image": image, "patient_id": patient, "study_id": study, "laterality": side, "view": view, **kw}


def _finding(label: int | None = None, pathology: str | None = None) -> dict[str, Any]:
    return {"type": "mass", "pathology": pathology, "label": label}


@pytest.fixture(scope="module")
def inbreast(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_inbreast(tmp_path_factory.mktemp("inbreast"), n_patients=2, seed=0)


def test_exams_are_keyed_by_patient_and_study() -> None:
    items = [
        _item("a.dcm"),
        _item("b.dcm", side="R"),
        _item("c.dcm", study="S2"),
        _item("d.dcm", patient="P2", study=None),
        _item("e.dcm", patient="P2", study=None, side="R", view="MLO"),
        _item("f.dcm", side="left", view="medio-lateral oblique"),  # normalised: L-MLO
        _item("g.dcm", view="CC"),  # a second L-CC image of P1/S1
    ]
    exams = group_image_exams(items).exams
    assert [e["exam_id"] for e in exams] == ["P1/S1", "P1/S2", "P2"]
    assert [e["exam_index"] for e in exams] == [0, 1, 2]
    first = exams[0]
    assert (first["L-CC"], first["R-CC"], first["L-MLO"], first["R-MLO"]) == ("a.dcm", "b.dcm", "f.dcm", None)
    assert first["images"]["L-CC"] == ["a.dcm", "g.dcm"] and first["horizontal_flip"] == "NO"
    assert (exams[2]["study_id"], exams[2]["L-CC"], exams[2]["R-MLO"]) == (None, "d.dcm", "e.dcm")


def test_other_views_and_unknown_sides_are_counted_not_dropped(caplog: pytest.LogCaptureFixture) -> None:
    items = [_item("a.dcm"), _item("b.dcm", view="ML"), _item("c.dcm", view="XCCL"), _item("d.dcm", side="B")]
    grouping = group_image_exams(items)
    assert [s.reason for s in grouping.skipped] == ["unused_view", "unused_view", "unknown_laterality"]
    assert "b.dcm" in grouping.skipped[0].source and "'ML'" in grouping.skipped[0].message
    assert "3 image(s) not used" in caplog.text
    assert grouping.exams[0]["L-MLO"] is None
    aliased = group_image_exams(items, view_aliases={"ML": "MLO"})
    assert aliased.exams[0]["L-MLO"] == "b.dcm" and len(aliased.skipped) == 2


def test_image_evidence_rules() -> None:
    assert image_breast_labels({"label": 0, "findings": []}) == (0, 0)  # negative for both
    assert image_breast_labels({"label": 1, "findings": []}) == (0, 1)
    assert image_breast_labels({"label": None, "findings": []}) == (None, None)
    assert image_breast_labels({"label": 0, "findings": [_finding(pathology="BENIGN")]}) == (1, 0)
    assert image_breast_labels({"label": None, "findings": [_finding(label=1)]}) == (None, 1)
    assert image_breast_labels({"label": 1, "findings": [_finding(pathology="MALIGNANT")]}) == (0, 1)
    assert image_breast_labels({"label": 0, "findings": [_finding()]}) == (None, 0)  # unknown pathology
    assert image_breast_labels({"label": 0, "findings": [_finding(0, "BENIGN_WITHOUT_CALLBACK")]}) == (1, 0)


def test_breast_labels_combine_the_images_of_each_breast() -> None:
    items = [
        _item("lcc.dcm", label=0, findings=[_finding(label=0)]),
        _item("lmlo.dcm", view="MLO", label=1, findings=[_finding(label=1)]),
        _item("rcc.dcm", side="R", label=0, findings=[]),
        _item("rmlo.dcm", side="R", view="MLO", label=None, findings=[]),
        _item("x.dcm", patient="P2", label=0, findings=[], birads="1"),
        _item("y.dcm", patient="P2", side="R", label=0, findings=[], birads="2"),
    ]
    first, second = group_image_exams(items).exams
    assert (first["left_benign"], first["left_malignant"]) == (1, 1)
    assert (first["right_benign"], first["right_malignant"]) == (None, None)  # one image unknown
    assert first["label"] == [1, None, 1, None] and first["birads"] is None  # known targets kept
    assert second["label"] == [0, 0, 0, 0] and second["birads"] == 2  # negative + benign breasts
    only_left = group_image_exams(items[:2]).exams[0]
    assert only_left["right_malignant"] is None  # a breast without images is unknown


@pytest.mark.parametrize(
    ("left", "right", "expected"),
    [("1", "1", 1), ("2", "1", 2), ("0", "2", 0), ("4a", "1", None), ("1", None, None), ("3", "0", None)],
)
def test_birads_class_of_the_pretraining_task(left: str, right: str | None, expected: int | None) -> None:
    items = [_item("a.dcm", birads=left), _item("b.dcm", side="R", birads=right)]
    assert group_image_exams(items).exams[0]["birads"] == expected


def test_items_without_patient_or_image_are_errors() -> None:
    with pytest.raises(MammoDataError, match=r"items\[1\].*patient_id"):
        group_image_exams([_item("a.dcm"), _item("b.dcm", patient=None)])
    with pytest.raises(MammoDataError, match=r"items\[0\].*'image'"):
        group_image_exams([{"patient_id": "P1", "laterality": "L", "view": "CC"}])


def test_the_format_selects_the_grouping(tmp_path: Path) -> None:
    nyu_items = index_nyu(write_nyu(tmp_path / "nyu", n_exams=2, image_shape=(160, 128))).items
    assert group_exams_by_format(nyu_items, "nyu") == group_exams(nyu_items)
    assert [e["exam_id"] for e in group_exams_by_format([_item("a.dcm")], "vindr")] == ["P1/S1"]
    with pytest.raises(MammoDataError, match="not an NYU image item"):
        group_exams_by_format([_item("a.dcm")], "nyu")


def test_dicom_exams_group_and_load_four_views_facing_right(inbreast: Path) -> None:
    items = index_inbreast(inbreast, on_error="raise").items
    exams = group_image_exams(items).exams
    assert len(exams) == 2 and all(all(e[v] for v in NYU_VIEWS) for e in exams)
    for exam in exams:
        for view in NYU_VIEWS:
            tags = pydicom.dcmread(exam[view], stop_before_pixels=True)
            assert (tags.PatientID or exam["patient_id"]) == exam["patient_id"]
            assert tags.StudyInstanceUID == exam["study_id"] and tags.ImageLaterality == view[0]
    # the synthetic INbreast labels: BI-RADS >= 4 breasts have malignant lesions, 2 benign ones
    truth = {(i["patient_id"], i["laterality"]): i["label"] for i in items}
    for exam in exams:
        assert exam["left_malignant"] == truth[(exam["patient_id"], "L")]
        assert exam["right_malignant"] == truth[(exam["patient_id"], "R")]
    loader = LoadExam(**SMALL)
    prepared = loader.prepare_views(exams[0])
    sample = loader.crop_views(prepared, exams[0])
    assert sample["exam_id"] == exams[0]["exam_id"] and sample["label"].tolist() == exams[0]["label"]
    for view in NYU_VIEWS:
        crop = prepared[view]["image"]
        assert bool(crop.meta["flipped_lr"]) is view.startswith("R")
        # breast facing right: the chest wall at column 0, the background beyond the nipple on the right
        columns = crop[0].mean(dim=0)
        assert float(columns[:4].mean()) > 2 * float(columns[-4:].mean()), view
        assert sample[view].shape[1:] == (SMALL["cc_size"] if "CC" in view else SMALL["mlo_size"])
        assert sample[view].dtype == torch.float32


def test_read_image_items_of_a_folder_and_of_a_user_datalist(inbreast: Path, tmp_path: Path) -> None:
    items = read_image_items(inbreast, "inbreast")
    assert len(items) == 8 and all(Path(i["image"]).suffix == ".dcm" for i in items)
    datalist = tmp_path / "mine.json"
    keep = ("image", "patient_id", "study_id", "laterality", "view")
    datalist.write_text(
        json.dumps(
            {
                "training": [{k: i[k] for k in keep} for i in items[:4]],
                "test": [{k: items[4][k] for k in keep}],
            }
        )
    )
    user = read_image_items(datalist, "datalist")
    assert [i["image"] for i in user] == [i["image"] for i in items[:5]]
    exams = group_exams_by_format(user, "datalist")
    assert sum(len(e["images"][v]) for e in exams for v in NYU_VIEWS) == 5
    assert all(e["label"] is None for e in exams)  # no labels: unknown, not negative
