"""A datalist JSON the user brings (``dataset_format="datalist"``): paths, skips and the run-start guards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from monai_mammo.data.dicom_writer import write_mammogram_dicom
from monai_mammo.data.prepare import load_user_datalist, prepare_datalist
from monai_mammo.exceptions import MammoConfigError, MammoDataError

CONFIGS = Path(__file__).resolve().parents[1] / "bundles" / "shen_end2end" / "configs"


def _image(folder: Path, name: str, seed: int) -> str:
    pixels = np.random.default_rng(seed).integers(0, 4096, (32, 24), dtype=np.uint16)
    write_mammogram_dicom(folder / "images" / name, pixels, bits_stored=12)
    return f"images/{name}"


def _item(image: str, patient: str, label: int | None = 0) -> dict:
    return {
        "image": image,
        "patient_id": patient,
        "label": label,
        "laterality": "L",
        "view": "CC",
        "findings": [],
    }


@pytest.fixture
def user_json(tmp_path: Path) -> Path:
    """A split datalist with relative paths: 2 training patients, 1 validation, 1 test."""
    names = [_image(tmp_path, f"{i}.dcm", i) for i in range(4)]
    body = {
        "training": [_item(names[0], "A", 1), _item(names[1], "B", 0)],
        "validation": [_item(names[2], "C", 0)],
        "test": [_item(names[3], "D", 1)],
    }
    path = tmp_path / "my_split.json"
    path.write_text(json.dumps(body))
    return path


def _rewrite(path: Path, edit) -> Path:
    body = json.loads(path.read_text())
    edit(body)
    path.write_text(json.dumps(body))
    return path


def test_relative_paths_resolved_and_splits_kept(user_json: Path, tmp_path: Path):
    body = prepare_datalist(user_json, "datalist", tmp_path / "out" / "datalist.json")
    assert [i["patient_id"] for i in body["training"]] == ["A", "B"]
    assert [i["patient_id"] for i in body["validation"]] == ["C"] and [
        i["patient_id"] for i in body["test"]
    ] == ["D"]
    assert body["training"][0]["image"] == str(tmp_path / "images" / "0.dcm")
    assert body["summary"]["hygiene"]["duplicates"]["n_pairs"] == 0
    written = json.loads((tmp_path / "out" / "datalist.json").read_text())
    assert written["digest"] == body["digest"] and written["training"] == body["training"]


def test_patient_in_two_splits_stops_the_run(user_json: Path, tmp_path: Path):
    _rewrite(user_json, lambda b: b["test"][0].update(patient_id="A"))
    with pytest.raises(MammoDataError, match="patient.* appear in more than one split: A in test, training"):
        prepare_datalist(user_json, "datalist", tmp_path / "datalist.json")
    assert not (tmp_path / "datalist.json").exists()


def test_same_image_in_two_splits_reported(user_json: Path, tmp_path: Path):
    _rewrite(user_json, lambda b: b["test"][0].update(image=b["training"][0]["image"]))
    body = prepare_datalist(user_json, "datalist", tmp_path / "datalist.json")
    assert body["summary"]["hygiene"]["duplicates"]["n_pairs"] == 1
    with pytest.raises(MammoDataError, match="duplicate"):
        prepare_datalist(user_json, "datalist", tmp_path / "datalist.json", on_duplicate="raise")


def test_missing_image_and_missing_label_are_counted_skips(user_json: Path, tmp_path: Path):
    def edit(body):
        body["training"].append(_item("images/absent.dcm", "E"))
        body["training"][1]["label"] = None

    _rewrite(user_json, edit)
    splits, summary = load_user_datalist(user_json)
    assert [i["patient_id"] for i in splits["training"]] == ["A"]
    assert summary.skip_counts() == {"missing_file": 1, "no_label": 1}
    assert summary.rows_read == 5 and summary.images == 3
    with pytest.raises(MammoDataError, match="image file not found") as info:
        load_user_datalist(user_json, on_error="raise")
    assert info.value.source == str(tmp_path / "images" / "absent.dcm")


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        ("{not json", "cannot read datalist JSON"),
        ("[]", "'training' list"),
        ('{"validation": []}', "'training' list"),
        ('{"training": [{"label": 1}]}', r"training\[0\]: an item must be an object with an 'image' path"),
        ('{"training": [], "test": {}}', "'test' must be a list"),
        ('{"training": []}', "no usable training item"),
    ],
)
def test_malformed_datalist_names_the_file(tmp_path: Path, content: str, phrase: str):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(MammoDataError, match=phrase) as info:
        load_user_datalist(path)
    assert info.value.source == str(path)


def test_unknown_error_policy(user_json: Path):
    with pytest.raises(MammoConfigError, match="on_error"):
        load_user_datalist(user_json, on_error="ignore")


def test_bundle_checks_a_user_datalist_at_run_start(user_json: Path, tmp_path: Path):
    """The shen_end2end config takes ``--dataset_format datalist --dataset_dir my.json`` and guards it."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.update(
        {"dataset_format": "datalist", "dataset_dir": str(user_json), "bundle_root": str(tmp_path / "b")}
    )
    body = parser.get_parsed_content("datalist")
    assert len(body["training"]) == 2 and body["summary"]["dataset"] == "datalist"
    assert parser.get_parsed_content("dataset_name") == "my_split.json"

    _rewrite(user_json, lambda b: b["validation"][0].update(patient_id="B"))
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.update(
        {"dataset_format": "datalist", "dataset_dir": str(user_json), "bundle_root": str(tmp_path / "c")}
    )
    with pytest.raises(RuntimeError) as info:  # MONAI wraps errors of config expressions
        parser.get_parsed_content("datalist")
    assert isinstance(info.value.__cause__, MammoDataError)
    assert "B in training, validation" in str(info.value.__cause__)
