"""Bundle sharing: pack -> MONAI download -> monai.bundle.load gives the original predictions; verify."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, download, load

from monai_mammo.cli import main
from monai_mammo.exceptions import MammoDataError
from monai_mammo.sharing import CHECKSUM_FILE, dummy_inputs, pack_bundle, verify_bundle

REPO = Path(__file__).resolve().parents[1]
SHEN = REPO / "bundles" / "shen_end2end"


def _shen_network() -> torch.nn.Module:
    parser = ConfigParser()
    parser.read_config(str(SHEN / "configs" / "inference.json"))
    parser["bundle_root"] = str(SHEN)
    return parser.get_parsed_content("network_def")


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
