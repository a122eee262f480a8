"""NYU exam lists: the synthetic writer round-trips through the indexer; bad lists are counted or raised."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from monai_mammo.data.indexers.nyu import NYU_VIEWS, group_exams, index_nyu
from monai_mammo.data.synthetic.writers.nyu import nyu_exams, to_nyu_png_values, write_nyu
from monai_mammo.exceptions import MammoConfigError, MammoDataError

N_EXAMS = 4
SHAPE = (160, 128)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_nyu(tmp_path_factory.mktemp("nyu"), n_exams=N_EXAMS, seed=4, image_shape=SHAPE)


def _breast_side(image: np.ndarray) -> str:
    """Which half holds more signal: the breast touches that edge."""
    half = image.shape[1] // 2
    return "L" if image[:, :half].astype(float).sum() > image[:, half:].astype(float).sum() else "R"


def test_images_and_pickle(dataset: Path) -> None:
    exams = nyu_exams(N_EXAMS, 4, SHAPE)
    for record in exams:
        for name, truth in record.images.items():
            png = cv2.imread(str(dataset / "images" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
            assert png is not None and png.dtype == np.uint16 and png.shape == SHAPE
            k = np.rint(png.astype(np.float64) * 4095 / 65535)
            np.testing.assert_array_equal(np.rint(k * 65535 / 4095), png)  # 12-bit data in 16 bits
            np.testing.assert_array_equal(k, truth.pixels)
            assert _breast_side(png) == name.split("_")[1]  # horizontal_flip NO orientation
    with open(dataset / "exam_list.pkl", "rb") as stream:
        assert pickle.load(stream) == [record.exam for record in exams]
    assert (dataset / "exam_list.pkl").read_bytes()[:2] == b"\x80\x04"  # protocol 4
    np.testing.assert_array_equal(
        to_nyu_png_values(np.array([0, 4095, 16383]), 14), [0, round(1024 * 65535 / 4095), 65535]
    )


def test_round_trip(dataset: Path) -> None:
    exams = nyu_exams(N_EXAMS, 4, SHAPE)
    result = index_nyu(dataset)
    assert result.summary.skipped == [] and result.summary.rows_read == N_EXAMS
    assert result.summary.images == len(result.items) == 4 * N_EXAMS
    seen = set()
    for item in result.items:
        exam = exams[item["exam_index"]].exam
        side, view = item["laterality"], item["view"]
        assert item["view_key"] == f"{side}-{view}" and view in ("CC", "MLO")
        assert Path(item["image"]) == dataset / "images" / f"{item['exam_index']}_{side}_{view}.png"
        prefix = "left" if side == "L" else "right"
        assert item["benign"] == exam["cancer_label"][f"{prefix}_benign"]
        assert item["label"] == item["malignant"] == exam["cancer_label"][f"{prefix}_malignant"]
        assert item["horizontal_flip"] == "NO" and item["source"] == "nyu"
        assert item["patient_id"] == f"exam_{item['exam_index']}"
        if "window_location" in exam:
            top, bottom, left, right = item["window_location"]
            assert 0 <= top < bottom <= SHAPE[0] and 0 <= left < right <= SHAPE[1]
            assert item["best_center"] == list(exam["best_center"][item["view_key"]][0])
            assert isinstance(item["rightmost_points"][0], list)
        else:
            assert "window_location" not in item
        seen.add((item["exam_index"], item["view_key"]))
    assert len(seen) == 4 * N_EXAMS
    labels = {(i["laterality"], i["malignant"], i["benign"]) for i in result.items}
    assert ("L", 1, 0) in labels and ("R", 0, 1) in labels and ("L", 0, 0) in labels


def test_group_exams(dataset: Path) -> None:
    items = index_nyu(dataset).items
    grouped = group_exams(items)
    assert [g["exam_index"] for g in grouped] == list(range(N_EXAMS))
    exams = nyu_exams(N_EXAMS, 4, SHAPE)
    for record, exam in zip(grouped, exams):
        assert all(Path(record[view]).stem == exam.exam[view][0] for view in NYU_VIEWS)
        labels = exam.exam["cancer_label"]
        assert record["label"] == [
            labels[k] for k in ("left_benign", "right_benign", "left_malignant", "right_malignant")
        ]
    partial = group_exams([i for i in items if i["view_key"] != "R-MLO" or i["exam_index"] != 0])
    assert partial[0]["R-MLO"] is None and partial[0]["images"]["R-MLO"] == []
    with pytest.raises(MammoDataError, match=r"items\[0\]"):
        group_exams([{"image": "x.png"}])


def test_broken(tmp_path: Path) -> None:
    root = write_nyu(
        tmp_path, n_exams=2, seed=1, image_shape=(128, 96), broken=("unexpected_content", "missing_image")
    )
    result = index_nyu(root)
    assert result.summary.skip_counts() == {"unexpected_content": 1, "missing_image": 1}
    assert len(result.items) == 7 and result.summary.rows_read == 3
    sources = {r.reason: r.source for r in result.summary.skipped}
    assert sources["unexpected_content"] == f"{root / 'exam_list.pkl'}[exam 2]"
    with pytest.raises(MammoDataError, match=r"exam_list.pkl\[exam 0\]: L-CC image '0_L_CC' not found"):
        index_nyu(root, on_error="raise")
    assert len(index_nyu(root, check_files=False).items) == 8
    with pytest.raises(MammoDataError, match=r"exam_list.pkl\[exam 2\]: L-CC must be a list"):
        index_nyu(root, on_error="raise", check_files=False)


BASE = {"horizontal_flip": "NO", "L-CC": ["a"], "R-CC": ["b"], "L-MLO": ["c"], "R-MLO": ["d"]}


@pytest.mark.parametrize(
    ("exam", "problem"),
    [
        (["not", "a", "dict"], "not a dict"),
        ({**BASE, "L-ML": ["e"]}, "unknown keys"),
        ({k: v for k, v in BASE.items() if k != "horizontal_flip"}, "horizontal_flip"),
        ({**BASE, "horizontal_flip": "MAYBE"}, "horizontal_flip"),
        ({**BASE, "R-CC": [3]}, "R-CC must be a list"),
        ({"horizontal_flip": "NO", "L-CC": []}, "no images"),
        ({**BASE, "best_center": {"L-CC": [(1, 2)]}}, r"best_center\['R-CC'\]"),
        ({**BASE, "window_location": {v: [(1, 2, 3)] for v in NYU_VIEWS}}, "window_location"),
        ({**BASE, "cancer_label": {"left_benign": 2}}, "cancer_label"),
    ],
)
def test_unexpected_content(tmp_path: Path, exam, problem: str) -> None:
    path = tmp_path / "list.pkl"
    path.write_bytes(pickle.dumps([BASE, exam]))
    result = index_nyu(tmp_path, exam_list="list.pkl", check_files=False)
    assert result.summary.skip_counts() == {"unexpected_content": 1} and len(result.items) == 4
    with pytest.raises(MammoDataError, match=rf"list.pkl\[exam 1\]: .*{problem}"):
        index_nyu(tmp_path, exam_list=path, on_error="raise", check_files=False)


def test_numpy_metadata_and_absolute_paths(tmp_path: Path) -> None:
    exam = {
        **BASE,
        "best_center": {v: [np.array([5, 6])] for v in NYU_VIEWS},
        "distance_from_starting_side": {v: [np.int64(0)] for v in NYU_VIEWS},
        "cancer_label": {
            "left_benign": np.int64(1),
            "right_benign": 0,
            "left_malignant": 0,
            "right_malignant": 1,
        },
    }
    (tmp_path / "l.pkl").write_bytes(pickle.dumps([exam]))
    result = index_nyu(
        tmp_path / "elsewhere", exam_list=tmp_path / "l.pkl", image_dir=tmp_path, check_files=False
    )
    item = result.items[0]
    assert item["best_center"] == [5, 6] and type(item["distance_from_starting_side"]) is int
    assert item["image"] == str(tmp_path / "a.png") and item["benign"] == 1 and item["label"] == 0


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_or_bad_pickles(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (tmp_path / "exam_list.pkl").write_bytes(pickle.dumps([BASE, {"horizontal_flip": _Evil(marker)}]))
    with pytest.raises(MammoDataError, match="exam_list.pkl: forbidden global"):
        index_nyu(tmp_path)
    assert not marker.exists()
    (tmp_path / "exam_list.pkl").write_bytes(pickle.dumps({"exams": [BASE]}))
    with pytest.raises(MammoDataError, match="must be a list"):
        index_nyu(tmp_path)
    (tmp_path / "exam_list.pkl").write_bytes(pickle.dumps([BASE])[:-5])
    with pytest.raises(MammoDataError, match="corrupt or truncated"):
        index_nyu(tmp_path)
    with pytest.raises(MammoConfigError):
        index_nyu(tmp_path, on_error="warn")  # type: ignore[arg-type]


def test_deterministic(tmp_path: Path) -> None:
    a = write_nyu(tmp_path / "a", n_exams=1, seed=2, image_shape=(128, 96))
    b = write_nyu(tmp_path / "b", n_exams=1, seed=2, image_shape=(128, 96))
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 5 and all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_findings_and_birads_round_trip(dataset: Path) -> None:
    exams = nyu_exams(N_EXAMS, 4, SHAPE)
    result = index_nyu(dataset)
    assert result.summary.findings == sum(len(i["findings"]) for i in result.items) > 0
    for item in result.items:
        record = exams[item["exam_index"]]
        truth = record.images[Path(item["image"]).stem].findings
        assert item["birads"] == record.exam["birads"]
        assert len(item["findings"]) == len(truth)
        for index, (finding, drawn) in enumerate(zip(item["findings"], truth)):
            assert Path(finding["mask"]).is_absolute()
            assert finding["mask"] == str(dataset / "masks" / f"{Path(item['image']).stem}_{index}.png")
            mask = cv2.imread(finding["mask"], cv2.IMREAD_UNCHANGED)
            np.testing.assert_array_equal(mask > 0, drawn.mask)
            assert finding["type"] == drawn.type and finding["pathology"] == drawn.pathology
            assert (
                finding["label"] == int(drawn.pathology == "MALIGNANT") and finding["abnormality_id"] == index
            )
            assert finding["class_id"] == {("mass", 1): 4, ("mass", 0): 3, ("calcification", 1): 2}.get(
                (drawn.type, finding["label"]), 1
            )
            assert finding["bbox"] == list(drawn.bbox)
        # a breast's findings agree with its cancer label
        assert item["malignant"] == int(any(f["label"] == 1 for f in item["findings"]))
        assert item["benign"] == int(any(f["label"] == 0 for f in item["findings"]))
    # status cycle: normal, L malignant, R benign, L benign + R malignant
    assert [e.exam["birads"] for e in exams] == [1, 0, 2, 0]
    assert [g["birads"] for g in group_exams(result.items)] == [1, 0, 2, 0]


def test_missing_mask_and_old_lists(tmp_path: Path) -> None:
    root = write_nyu(tmp_path / "d", n_exams=2, seed=3, image_shape=(128, 96), broken=("missing_mask",))
    result = index_nyu(root)
    assert result.summary.skip_counts() == {"missing_mask": 1} and len(result.items) == 8
    skipped = result.summary.skipped[0]
    assert "exam_list.pkl[exam 1] L-CC '1_L_CC'" in skipped.source and "1_L_CC_0.png" in skipped.message
    assert [len(i["findings"]) for i in result.items if i["exam_index"] == 1] == [0, 0, 1, 0]
    with pytest.raises(MammoDataError, match="mask 'masks/1_L_CC_0.png' not found"):
        index_nyu(root, on_error="raise")
    assert sum(len(i["findings"]) for i in index_nyu(root, check_files=False).items) == 2
    # an exam list without our extension keys stays valid
    (tmp_path / "old.pkl").write_bytes(pickle.dumps([BASE]))
    old = index_nyu(tmp_path, exam_list="old.pkl", check_files=False)
    assert old.summary.skipped == [] and all(i["birads"] is None and i["findings"] == [] for i in old.items)
    assert group_exams(old.items)[0]["birads"] is None


FINDING = {"type": "mass", "pathology": "BENIGN", "mask": "m.png"}


@pytest.mark.parametrize(
    ("extension", "problem"),
    [
        ({"birads": 3}, "birads must be one of"),
        ({"birads": True}, "birads must be one of"),
        ({"findings": {"L-ML": [[]]}}, "findings must be a dict over the exam's views"),
        ({"findings": {"L-CC": []}}, r"findings\['L-CC'\] must list one list"),
        ({"findings": {"L-CC": [FINDING]}}, r"findings\['L-CC'\]\[0\] must be a list"),
        ({"findings": {"L-CC": [[{**FINDING, "type": "cyst"}]]}}, r"\[0\]\[0\]: finding type"),
        ({"findings": {"L-CC": [[{**FINDING, "pathology": "benign"}]]}}, "finding pathology"),
        ({"findings": {"L-CC": [[{**FINDING, "mask": None}]]}}, "finding mask must be a file path"),
        ({"findings": {"L-CC": [[{**FINDING, "bbox": [5, 1, 2, 9]}]]}}, "finding bbox"),
        ({"findings": {"L-CC": [[{**FINDING, "score": 1}]]}}, "unknown finding keys"),
    ],
)
def test_bad_extensions(tmp_path: Path, extension, problem: str) -> None:
    good = {**BASE, "birads": np.int64(2), "findings": {"R-CC": [[{**FINDING, "bbox": (1, 2, 3, 4)}]]}}
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([good, {**BASE, **extension}]))
    result = index_nyu(tmp_path, exam_list="list.pkl", check_files=False)
    assert result.summary.skip_counts() == {"unexpected_content": 1} and len(result.items) == 4
    finding = next(i for i in result.items if i["view_key"] == "R-CC")["findings"][0]
    assert finding == {
        "type": "mass",
        "pathology": "BENIGN",
        "label": 0,
        "class_id": 3,
        "mask": str(tmp_path / "m.png"),
        "bbox": [1, 2, 3, 4],
        "abnormality_id": 0,
    }
    assert {i["birads"] for i in result.items} == {2}
    with pytest.raises(MammoDataError, match=rf"list.pkl\[exam 1\]: .*{problem}"):
        index_nyu(tmp_path, exam_list="list.pkl", on_error="raise", check_files=False)
