"""Patient-level stratified splits."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from monai_mammo.data.splits import SPLIT_PRESETS, assert_patient_disjoint, split_by_patient
from monai_mammo.exceptions import MammoConfigError, MammoDataError


def make_items(n_patients: int = 300, seed: int = 0, official: bool = False) -> list[dict[str, Any]]:
    """1-4 images per patient; about 30 % of the patients have a malignant image."""
    rng = np.random.default_rng(seed)
    items = []
    for p in range(n_patients):
        malignant = rng.random() < 0.3
        official_split = "test" if rng.random() < 0.25 else "train"
        n_images = int(rng.integers(1, 5))
        for i in range(n_images):
            label = int(malignant and i == 0)
            items.append(
                {
                    "image": f"/data/P_{p:05d}_{i}.dcm",
                    "patient_id": f"P_{p:05d}",
                    "label": label,
                    "split": official_split if official else None,
                }
            )
    return items


def patients(items: list[dict[str, Any]]) -> set[str]:
    return {item["patient_id"] for item in items}


def positive_fraction(items: list[dict[str, Any]]) -> float:
    by_patient: dict[str, int] = {}
    for item in items:
        by_patient[item["patient_id"]] = max(by_patient.get(item["patient_id"], 0), item["label"])
    return sum(by_patient.values()) / len(by_patient)


def test_patient_disjoint_complete_and_ratios_respected() -> None:
    items = make_items()
    splits = split_by_patient(items, seed=0)
    assert list(splits) == ["training", "validation", "test"]
    assert_patient_disjoint(splits)
    assert sum(len(v) for v in splits.values()) == len(items)
    assert sorted(i["image"] for v in splits.values() for i in v) == sorted(i["image"] for i in items)
    n = len(patients(items))
    for key, ratio in zip(splits, SPLIT_PRESETS["paper"]):
        assert abs(len(patients(splits[key])) - ratio * n) <= 1.5
    assert {i["split"] for i in splits["training"]} == {"train"}
    assert {i["split"] for i in splits["validation"]} == {"val"}
    assert {i["split"] for i in splits["test"]} == {"test"}
    assert all(item["split"] is None for item in items)  # inputs untouched


def test_stratified_label_proportions() -> None:
    items = make_items()
    overall = positive_fraction(items)
    splits = split_by_patient(items, seed=1)
    for key in splits:
        assert abs(positive_fraction(splits[key]) - overall) < 0.05, key


def test_deterministic_per_seed() -> None:
    items = make_items()
    a = split_by_patient(items, seed=7)
    b = split_by_patient(list(items), seed=7)
    c = split_by_patient(items, seed=8)
    assert a == b
    assert patients(a["test"]) != patients(c["test"])


def test_inbreast_preset_has_no_validation_and_unstratified_works() -> None:
    items = make_items(50)
    splits = split_by_patient(items, ratios=SPLIT_PRESETS["inbreast"], stratify_key=None)
    assert splits["validation"] == []
    assert abs(len(patients(splits["test"])) - 15) <= 1


def test_use_official_keeps_test_and_draws_validation_from_train() -> None:
    items = make_items(official=True)
    items.append({"image": "/data/leak.dcm", "patient_id": "P_00000", "label": 0, "split": "test"})
    official_test = {i["patient_id"] for i in items if i["split"] == "test"}
    splits = split_by_patient(items, use_official=True, seed=0)
    assert_patient_disjoint(splits)
    assert patients(splits["test"]) == official_test  # a patient with any official test image is test
    train_patients = patients(items) - official_test
    assert patients(splits["training"]) | patients(splits["validation"]) == train_patients
    expected_val = len(train_patients) * 0.085 / 0.85
    assert abs(len(patients(splits["validation"])) - expected_val) <= 1.5


def test_use_official_needs_official_splits() -> None:
    with pytest.raises(MammoDataError, match="official split None"):
        split_by_patient(make_items(5), use_official=True)


def test_assert_patient_disjoint_names_the_leak() -> None:
    splits = {
        "training": [{"patient_id": "P_1"}, {"patient_id": "P_2"}],
        "validation": [{"patient_id": "P_3"}],
        "test": [{"patient_id": "P_2"}],
        "summary": {"dataset": "x"},
    }
    with pytest.raises(MammoDataError, match=r"1 patient\(s\) .*P_2 in test, training"):
        assert_patient_disjoint(splits)
    assert_patient_disjoint({"training": [{"patient_id": "P_1"}], "test": [{"patient_id": "P_2"}]})


@pytest.mark.parametrize("ratios", [(0.5, 0.5), (0.8, 0.1, 0.2), (1.2, -0.1, -0.1)])
def test_bad_ratios(ratios: tuple[float, ...]) -> None:
    with pytest.raises(MammoConfigError, match="ratios"):
        split_by_patient(make_items(5), ratios=ratios)


def test_item_without_patient_raises() -> None:
    with pytest.raises(MammoDataError, match="/data/x.dcm: item has no patient_id"):
        split_by_patient([{"image": "/data/x.dcm", "patient_id": None, "label": 1}])
