"""Bundle sharing: pack -> MONAI download -> monai.bundle.load / run give the original predictions; verify."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, download, load, run

from monai_mammo.cli import main
from monai_mammo.data.dicom_writer import write_mammogram_dicom
from monai_mammo.engines.workflow import load_checkpoint
from monai_mammo.exceptions import MammoConfigError, MammoDataError
from monai_mammo.sharing import (
    CHECKSUM_FILE,
    checkpoint_references,
    dummy_inputs,
    pack_bundle,
    packed_checkpoint,
    sha256_file,
    verify_bundle,
)

REPO = Path(__file__).resolve().parents[1]
SHEN = REPO / "bundles" / "shen_end2end"
NYU = REPO / "bundles" / "nyu_multiview"


def _parser(bundle: Path) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    return parser


def _shen_network() -> torch.nn.Module:
    return _parser(SHEN).get_parsed_content("network_def")


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("share")
    torch.manual_seed(0)
    network = _shen_network()
    for p in network.parameters():
        p.data.normal_(0, 0.05)
    ckpt = tmp / "trained.pt"
    torch.save({"network": network.state_dict(), "optimizer": {}}, ckpt)
    zip_path = pack_bundle(SHEN, tmp / "dist", checkpoint=ckpt)
    return tmp, network.eval(), zip_path


def test_pack_layout_has_one_top_folder_with_checkpoint_and_checksums(packed):
    _, _, zip_path = packed
    names = zipfile.ZipFile(zip_path).namelist()
    assert {n.split("/")[0] for n in names} == {"shen_end2end"}
    for required in (
        "configs/metadata.json",
        "configs/inference.json",
        "models/model.pt",
        CHECKSUM_FILE,
        "docs/README.md",
    ):
        assert f"shen_end2end/{required}" in names
    listing = zipfile.ZipFile(zip_path).read(f"shen_end2end/{CHECKSUM_FILE}").decode().splitlines()
    assert len(listing) == len(names) - 1  # every file but the listing itself


def test_download_with_monai_then_load_gives_the_original_predictions(packed):
    tmp, network, zip_path = packed
    bundle_dir = tmp / "downloaded"
    download(name="shen_end2end", url=zip_path.as_uri(), bundle_dir=str(bundle_dir))
    loaded = load("shen_end2end", bundle_dir=str(bundle_dir), workflow_type="inference", device="cpu").eval()
    x = torch.randn(3, 1, 288, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), network(x), rtol=0, atol=0)


def test_verify_accepts_the_packed_bundle_and_runs_the_declared_shape(packed):
    _, _, zip_path = packed
    report = verify_bundle(zip_path)
    assert report.ok, report.errors
    assert report.output_shape == (2, 2)
    assert report.files_checked > 5


def test_verify_reports_a_tampered_file_and_skips_the_config(packed, tmp_path):
    _, _, zip_path = packed
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(tmp_path)
    root = tmp_path / "shen_end2end"
    weights = torch.load(root / "models" / "model.pt", weights_only=True)
    next(iter(weights.values())).add_(1)
    torch.save(weights, root / "models" / "model.pt")
    (root / "configs" / "extra.json").write_text("{}")
    report = verify_bundle(root)
    assert not report.ok
    assert "models/model.pt does not match its checksum" in report.errors
    assert "configs/extra.json is not listed in checksums.sha256" in report.errors
    assert report.output_shape is None  # no config was evaluated


def test_verify_reports_metadata_that_breaks_the_schema(packed, tmp_path):
    _, _, zip_path = packed
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(tmp_path)
    root = tmp_path / "shen_end2end"
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    del meta["network_data_format"]
    (root / "configs" / "metadata.json").write_text(json.dumps(meta))
    (root / CHECKSUM_FILE).unlink()
    report = verify_bundle(root, forward=False)
    assert any("metadata does not match the bundle schema" in e for e in report.errors)
    assert "checksums.sha256 is missing" in report.errors


def test_pack_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(MammoDataError, match="train the bundle first"):
        pack_bundle(SHEN, tmp_path, checkpoint=tmp_path / "none.pt")


def test_dummy_inputs_for_multi_input_networks():
    meta = {
        "network_data_format": {
            "inputs": {v: {"num_channels": 3, "spatial_shape": [8, 6]} for v in ("L-CC", "R-CC")}
        }
    }
    inputs = dummy_inputs(meta, batch_size=2)
    assert set(inputs) == {"L-CC", "R-CC"} and inputs["L-CC"].shape == (2, 3, 8, 6)


def test_cli_pack_and_verify(packed, tmp_path, capsys):
    tmp, _, _ = packed
    assert (
        main(["bundle", "pack", str(SHEN), "--checkpoint", str(tmp / "trained.pt"), "--out", str(tmp_path)])
        == 0
    )
    assert main(["bundle", "verify", str(tmp_path / "shen_end2end.zip")]) == 0
    assert capsys.readouterr().out.strip().endswith("OK")


def test_verify_lists_the_code_the_configs_would_run(packed, capsys):
    _, _, zip_path = packed
    report = verify_bundle(zip_path, forward=False)
    ids = {(file, cid) for file, cid, _ in report.expressions}
    assert ("configs/inference.json", "network_def") in ids
    assert any(text.startswith("$") for _, _, text in report.expressions)
    assert main(["bundle", "verify", str(zip_path), "--no-forward", "--show-code"]) == 0
    out = capsys.readouterr().out
    assert "run only bundles you trust" in out and "configs/inference.json:network_def: $" in out


def test_pack_can_ship_a_torchscript_module_with_the_same_outputs(packed, tmp_path):
    tmp, network, _ = packed
    zip_path = pack_bundle(SHEN, tmp_path, checkpoint=tmp / "trained.pt", torchscript=True)
    with zipfile.ZipFile(zip_path) as archive:
        archive.extract("shen_end2end/models/model.ts", tmp_path)
    scripted = torch.jit.load(str(tmp_path / "shen_end2end" / "models" / "model.ts"))
    x = torch.randn(2, 1, 288, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), network(x), rtol=1e-5, atol=1e-6)
    assert verify_bundle(zip_path, forward=False).ok


def _random_weights(network: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        k: torch.randn(v.shape, generator=generator) * 0.05 if v.is_floating_point() else v
        for k, v in network.state_dict().items()
    }


def _run_inference(config_file: Path, output_csv: Path, **overrides: object) -> str:
    """MONAI's bundle runner on an inference config (``python -m monai.bundle run`` in-process); the CSV's text."""
    run(config_file=str(config_file), output_csv=str(output_csv), num_workers=0, **overrides)
    return output_csv.read_text()


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scans")
    rng = np.random.default_rng(0)
    for k in range(3):
        pixels = rng.integers(0, 4096, size=(320, 256), dtype=np.uint16)
        write_mammogram_dicom(folder / f"case{k}.dcm", pixels, bits_stored=12)
    return folder


def test_downloaded_bundle_runs_its_inference_config_out_of_the_box(packed, scans, tmp_path, monkeypatch):
    tmp, _, zip_path = packed
    original = json.loads((SHEN / "configs" / "inference.json").read_text())
    staged = json.loads(zipfile.ZipFile(zip_path).read("shen_end2end/configs/inference.json"))
    assert staged == {**original, "checkpoint": packed_checkpoint("model.pt")}

    monkeypatch.setenv("MONAI_MAMMO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    elsewhere = tmp_path / "elsewhere"
    download(name="shen_end2end", url=zip_path.as_uri(), bundle_dir=str(elsewhere))
    monkeypatch.chdir(elsewhere)
    config = elsewhere / "shen_end2end" / "configs" / "inference.json"
    got = _run_inference(config, tmp_path / "got.csv", input_dir=str(scans))  # no checkpoint override
    expected = _run_inference(
        SHEN / "configs" / "inference.json",
        tmp_path / "expected.csv",
        input_dir=str(scans),
        checkpoint=str(tmp / "trained.pt"),
    )
    assert got == expected
    assert [line.split(",")[0].rsplit("/", 1)[-1] for line in got.splitlines()[1:]] == [
        f"case{k}.dcm" for k in range(3)
    ]


@pytest.fixture(scope="module")
def nyu_packed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nyu")
    parser = _parser(NYU)
    cancer = _random_weights(parser.get_parsed_content("network_def"), seed=1)
    patch = _random_weights(parser.get_parsed_content("patch_network_def"), seed=2)
    torch.save({"network": cancer}, tmp / "cancer.pt")
    torch.save(patch, tmp / "patch.pt")
    args = ["bundle", "pack", str(NYU), "--checkpoint", str(tmp / "cancer.pt"), "--out", str(tmp / "dist")]
    assert main([*args, "--extra-checkpoint", f"patch_checkpoint={tmp / 'patch.pt'}"]) == 0
    return tmp, cancer, patch, tmp / "dist" / "nyu_multiview.zip"


def test_extra_checkpoint_is_shipped_checksummed_and_wired_into_inference(nyu_packed, tmp_path):
    tmp, cancer, patch, zip_path = nyu_packed
    archive = zipfile.ZipFile(zip_path)
    staged = json.loads(archive.read("nyu_multiview/configs/inference.json"))
    assert checkpoint_references(staged) == {
        "checkpoint": "models/model.pt",
        "patch_checkpoint": "models/patch_checkpoint.pt",
    }
    listing = archive.read(f"nyu_multiview/{CHECKSUM_FILE}").decode()
    assert "  models/patch_checkpoint.pt\n" in listing and "  models/model.pt\n" in listing
    assert verify_bundle(zip_path, forward=False).ok

    download(name="nyu_multiview", url=zip_path.as_uri(), bundle_dir=str(tmp_path))
    parser = _parser(tmp_path / "nyu_multiview")
    for network_id, checkpoint_id, weights in (
        ("network_def", "checkpoint", cancer),
        ("patch_network_def", "patch_checkpoint", patch),
    ):
        path = Path(parser.get_parsed_content(checkpoint_id))
        assert path.parent == tmp_path / "nyu_multiview" / "models"
        loaded = load_checkpoint(parser.get_parsed_content(network_id), path).state_dict()
        assert all(torch.equal(loaded[k], weights[k]) for k in weights)


def test_pack_refuses_a_checkpoint_key_it_would_not_ship(nyu_packed, tmp_path):
    tmp, _, _, _ = nyu_packed
    with pytest.raises(
        MammoConfigError, match="'patch_checkpoint' names a checkpoint the package would not ship"
    ):
        pack_bundle(NYU, tmp_path, checkpoint=tmp / "cancer.pt")
    with pytest.raises(MammoConfigError, match="no key 'patch_checkpoint'"):
        pack_bundle(
            SHEN,
            tmp_path,
            checkpoint=tmp / "patch.pt",
            extra_checkpoints={"patch_checkpoint": tmp / "patch.pt"},
        )
    with pytest.raises(MammoConfigError, match="extra checkpoint key 'model'"):
        pack_bundle(
            NYU, tmp_path, checkpoint=tmp / "cancer.pt", extra_checkpoints={"model": tmp / "patch.pt"}
        )
    with pytest.raises(MammoDataError, match="extra checkpoint 'patch_checkpoint' not found"):
        pack_bundle(
            NYU, tmp_path, checkpoint=tmp / "cancer.pt", extra_checkpoints={"patch_checkpoint": "none.pt"}
        )
    with pytest.raises(SystemExit) as exit_info:
        main(["bundle", "pack", str(NYU), "--extra-checkpoint", "patch_checkpoint"])
    assert exit_info.value.code == 2
    assert not list(tmp_path.iterdir())  # nothing written


def test_verify_refuses_an_inference_config_naming_a_missing_checkpoint(packed, tmp_path, capsys):
    _, _, zip_path = packed
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(tmp_path)
    root = tmp_path / "shen_end2end"
    config_file = root / "configs" / "inference.json"
    config = json.loads(config_file.read_text())
    config.update(checkpoint=packed_checkpoint("other.pt"), patch_checkpoint="$@ckpt_dir + '/patch/model.pt'")
    old_digest = sha256_file(config_file)
    config_file.write_text(json.dumps(config))
    listing = root / CHECKSUM_FILE
    listing.write_text(
        listing.read_text().replace(old_digest, sha256_file(config_file))
    )  # checksums still pass
    report = verify_bundle(root)
    assert report.errors == [
        "configs/inference.json key 'checkpoint' names models/other.pt, which the package lacks",
        "configs/inference.json key 'patch_checkpoint' names a checkpoint outside the package: "
        "$@ckpt_dir + '/patch/model.pt'",
    ]
    assert report.output_shape is None  # no config was evaluated
    assert main(["bundle", "verify", str(root)]) == 1
    assert capsys.readouterr().out.strip().endswith("FAILED")
