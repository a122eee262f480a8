"""``monai-mammo synth`` and ``monai-mammo index`` end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from monai_mammo.cli import main
from monai_mammo.data.splits import assert_patient_disjoint


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "cbis"
    cmd = [sys.executable, "-m", "monai_mammo", "synth", "--format", "cbis-ddsm", str(out)]
    cmd += ["--patients", "8", "--seed", "2", "--size", "128", "96", "--broken", "missing_mask"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "wrote a synthetic cbis-ddsm dataset" in done.stdout
    return out


def test_index_writes_datalist_with_splits_and_summary(
    synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "datalist.json"
    code = main(["index", "--format", "cbis-ddsm", str(synth_root), "--out", str(out), "--seed", "1"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "missing_mask: 1" in printed and f"wrote {out}" in printed
    body = json.loads(out.read_text())
    assert set(body) == {"training", "validation", "test", "summary"}
    assert_patient_disjoint(body)
    items = body["training"] + body["validation"] + body["test"]
    summary = body["summary"]
    assert summary["dataset"] == "cbis-ddsm" and summary["images"] == len(items) > 0
    assert summary["skip_counts"] == {"missing_mask": 1}
    assert all(Path(item["image"]).is_file() for item in items)
    assert {item["split"] for item in body["training"]} == {"train"}
    assert body["test"] and {item["split"] for item in body["test"]} == {"test"}


def test_index_official_split_and_paths_only(synth_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "official.json"
    args = ["index", "--format", "cbis-ddsm", str(synth_root), "--out", str(out), "--official-split"]
    assert main([*args, "--no-check-files", "--ratios", "0.8", "0.2", "0.0"]) == 0
    body = json.loads(out.read_text())
    assert all("Test" in Path(item["image"]).parts[-4] for item in body["test"])
    assert all("Training" in Path(item["image"]).parts[-4] for item in body["training"] + body["validation"])
    assert body["summary"]["skip_counts"] == {}  # no file is opened in paths-only mode


def test_index_bad_folder_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere"
    code = main(["index", "--format", "cbis-ddsm", str(missing), "--out", str(tmp_path / "x.json")])
    assert code == 1
    err = capsys.readouterr().err
    assert "monai-mammo index: error:" in err and f"{missing}: dataset folder not found" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["index", "--format", "cbis-ddsm", str(empty), "--out", str(tmp_path / "x.json")]) == 1
    assert "no CBIS-DDSM description CSVs" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_index_on_error_raise_exits_1(
    synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["index", "--format", "cbis-ddsm", str(synth_root), "--out", str(tmp_path / "x.json")]
    assert main([*args, "--on-error", "raise"]) == 1
    assert "no binary ROI mask" in capsys.readouterr().err


def test_synth_errors_exit_1(synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["synth", "--format", "cbis-ddsm", str(synth_root)]) == 1
    assert "not an empty folder" in capsys.readouterr().err
    assert main(["synth", "--format", "cbis-ddsm", str(tmp_path / "new"), "--broken", "flooded"]) == 1
    assert "unknown broken cases ['flooded']" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["inbreast", "nyu", "vindr"])
def test_synth_and_index_dispatch_to_every_format(fmt: str, tmp_path: Path) -> None:
    root, out = tmp_path / fmt, tmp_path / f"{fmt}.json"
    assert main(["synth", "--format", fmt, str(root), "--patients", "3", "--seed", "1"]) == 0
    assert main(["index", "--format", fmt, str(root), "--out", str(out), "--split-preset", "inbreast"]) == 0
    body = json.loads(out.read_text())
    assert body["summary"]["dataset"] == fmt
    assert body["training"] and body["validation"] == []
    assert_patient_disjoint(body)
