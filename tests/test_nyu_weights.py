"""Import of NYU's weight files (written here in their key layout with random tensors)."""

from __future__ import annotations

import functools
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from monai_mammo.exceptions import MammoConfigError, MammoDataError
from monai_mammo.networks.multiview import BreastWiseModel, ImageWiseModel, ViewWiseModel
from monai_mammo.networks.nyu_weights import load_nyu_state_dict, read_nyu_state_dict
from monai_mammo.networks.resnet22 import ResNet22

State = dict[str, torch.Tensor]
CHANNELS = (16, 32, 64, 128, 256)


def _bn(sd: State, name: str, n: int, gen: torch.Generator) -> None:
    sd[f"{name}.weight"] = torch.rand(n, generator=gen) + 0.5
    sd[f"{name}.bias"] = torch.randn(n, generator=gen) * 0.1
    sd[f"{name}.running_mean"] = torch.randn(n, generator=gen) * 0.1
    sd[f"{name}.running_var"] = torch.rand(n, generator=gen) + 0.5
    sd[f"{name}.num_batches_tracked"] = torch.tensor(11)


def their_column(in_channels: int, gen: torch.Generator) -> State:
    """Keys and shapes of one of their ResNet-22 columns (``ViewResNetV2`` with ``BasicBlockV2``)."""
    sd: State = {"first_conv.weight": torch.randn(16, in_channels, 7, 7, generator=gen) * 0.1}
    inplanes = 16
    for i, planes in enumerate(CHANNELS):
        for j in range(2):
            p = f"layer_list.{i}.{j}"
            _bn(sd, f"{p}.bn1", inplanes, gen)
            sd[f"{p}.conv1.weight"] = torch.randn(planes, inplanes, 3, 3, generator=gen) * 0.05
            _bn(sd, f"{p}.bn2", planes, gen)
            sd[f"{p}.conv2.weight"] = torch.randn(planes, planes, 3, 3, generator=gen) * 0.05
            if j == 0:
                sd[f"{p}.downsample.0.weight"] = torch.randn(planes, inplanes, 1, 1, generator=gen) * 0.1
            inplanes = planes
    _bn(sd, "final_bn", 256, gen)
    return sd


@functools.cache
def _their_state(in_channels: int, variant: str) -> State:
    gen = torch.Generator().manual_seed(in_channels + len(variant))
    sd: State = {}
    for aliases in (("cc", "l_cc", "r_cc"), ("mlo", "l_mlo", "r_mlo")):
        column = their_column(in_channels, gen)
        for alias in aliases:  # one module under three names: the same tensors, as in their files
            sd.update({f"four_view_resnet.{alias}.{k}": v for k, v in column.items()})
    names, width = (("cc", "mlo"), 512) if variant == "view" else (("lcc", "rcc", "lmlo", "rmlo"), 256)
    for name in names:
        sd[f"fc1_{name}.weight"] = torch.randn(width, width, generator=gen)
        sd[f"fc1_{name}.bias"] = torch.randn(width, generator=gen)
        sd[f"output_layer_{name}.fc_layer.weight"] = torch.randn(8, width, generator=gen)
        sd[f"output_layer_{name}.fc_layer.bias"] = torch.randn(8, generator=gen)
    return sd


def their_state(in_channels: int = 1, variant: str = "view") -> State:
    """A state dict as their models' ``state_dict()``: columns under six aliases, then the heads.

    Cached (generating it is the slow part); the returned dict is a copy, its tensors are shared:
    replace entries, never modify them in place.
    """
    return dict(_their_state(in_channels, variant))


def save(tmp_path: Path, sd: State, name: str = "model.p", legacy: bool = False) -> Path:
    path = tmp_path / name
    torch.save({"model": sd}, path, _use_new_zipfile_serialization=not legacy)
    return path


def their_column_forward(sd: State, prefix: str, x: torch.Tensor) -> torch.Tensor:
    """Their column in eval mode, written from their key names (pre-activation blocks)."""

    def bn(h: torch.Tensor, name: str) -> torch.Tensor:
        g = lambda s: sd[f"{prefix}{name}.{s}"]  # noqa: E731
        return F.batch_norm(h, g("running_mean"), g("running_var"), g("weight"), g("bias"), False)

    h = F.max_pool2d(F.conv2d(x, sd[f"{prefix}first_conv.weight"], stride=2), 3, stride=2)
    for i in range(5):
        for j in range(2):
            p = f"layer_list.{i}.{j}"
            stride = 2 if (i > 0 and j == 0) else 1
            out = F.relu(bn(h, f"{p}.bn1"))
            residual = F.conv2d(out, sd[f"{prefix}{p}.downsample.0.weight"], stride=stride) if j == 0 else h
            out = F.conv2d(out, sd[f"{prefix}{p}.conv1.weight"], stride=stride, padding=1)
            out = F.conv2d(F.relu(bn(out, f"{p}.bn2")), sd[f"{prefix}{p}.conv2.weight"], padding=1)
            h = out + residual
    return F.relu(bn(h, "final_bn")).mean(dim=(2, 3))


def snapshot(model: torch.nn.Module) -> State:
    return {k: v.clone() for k, v in model.state_dict().items()}


def unchanged(model: torch.nn.Module, before: State) -> bool:
    return all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("legacy", [False, True])
def test_view_wise_file_loads_columns_and_heads(tmp_path: Path, legacy: bool) -> None:
    sd = their_state(in_channels=3)
    path = save(tmp_path, sd, legacy=legacy)
    model = ViewWiseModel(in_channels=3).eval()
    report = load_nyu_state_dict(model, path)

    assert report.variant == "view"
    assert report.aliases == {"cc": ["cc", "l_cc", "r_cc"], "mlo": ["mlo", "l_mlo", "r_mlo"]}
    assert report.loaded == sorted(model.state_dict()) and report.missing == [] and report.skipped == []
    column = model.column["CC"]
    assert torch.equal(column.conv.weight, sd["four_view_resnet.cc.first_conv.weight"])
    assert torch.equal(
        column.stages[3][0].norm1.running_var, sd["four_view_resnet.r_cc.layer_list.3.0.bn1.running_var"]
    )
    assert torch.equal(
        column.stages[4][0].projection.weight, sd["four_view_resnet.cc.layer_list.4.0.downsample.0.weight"]
    )
    assert torch.equal(model.column["MLO"].norm.bias, sd["four_view_resnet.mlo.final_bn.bias"])
    assert torch.equal(model.heads["MLO"].fc1.weight, sd["fc1_mlo.weight"])
    assert torch.equal(model.heads["CC"].output.bias, sd["output_layer_cc.fc_layer.bias"])

    x = torch.randn(2, 3, 64, 56)
    with torch.no_grad():
        torch.testing.assert_close(
            model.column["MLO"](x), their_column_forward(sd, "four_view_resnet.mlo.", x)
        )
        vectors = torch.cat([model.column["CC"](x), model.column["CC"](x.flip(0))], dim=1)
        logits = F.linear(
            F.relu(F.linear(vectors, sd["fc1_cc.weight"], sd["fc1_cc.bias"])),
            sd["output_layer_cc.fc_layer.weight"],
            sd["output_layer_cc.fc_layer.bias"],
        )
        expected = F.log_softmax(logits.view(2, 4, 2), dim=-1)
        got = model({"L-CC": x, "R-CC": x.flip(0), "L-MLO": x, "R-MLO": x})["CC"]
    torch.testing.assert_close(got, expected)


def test_plain_pickle_of_numpy_arrays(tmp_path: Path) -> None:
    sd = their_state(in_channels=1)
    path = tmp_path / "weights.pkl"
    with path.open("wb") as stream:
        arrays = {id(v): v.numpy() for v in sd.values()}  # aliases pickled once (pickle's memo)
        pickle.dump({"model": {k: arrays[id(v)] for k, v in sd.items()}, "epoch": 3}, stream, protocol=2)
    assert read_nyu_state_dict(path)["fc1_cc.bias"].dtype == torch.float32
    model = ViewWiseModel()
    load_nyu_state_dict(model, path)
    assert torch.equal(
        model.column["MLO"].stages[1][1].conv2.weight,
        sd["four_view_resnet.l_mlo.layer_list.1.1.conv2.weight"],
    )


def test_image_wise_file_and_single_column(tmp_path: Path) -> None:
    sd = their_state(in_channels=1, variant="image")
    path = save(tmp_path, sd)
    model = ImageWiseModel()
    report = load_nyu_state_dict(model, path)
    assert report.variant == "image"
    assert torch.equal(model.heads["R-MLO"].output.weight, sd["output_layer_rmlo.fc_layer.weight"])
    assert torch.equal(model.heads["L-CC"].fc1.bias, sd["fc1_lcc.bias"])

    column = ResNet22()
    report = load_nyu_state_dict(column, path, column="mlo")
    assert report.loaded == sorted(column.state_dict())
    assert torch.equal(column.conv.weight, sd["four_view_resnet.mlo.first_conv.weight"])
    assert "four_view_resnet.cc.first_conv.weight" in report.skipped and "fc1_lcc.weight" in report.skipped


def test_columns_only_into_another_variant(tmp_path: Path) -> None:
    sd = their_state()
    path = save(tmp_path, sd)
    model = BreastWiseModel()
    heads_before = {k: v.clone() for k, v in model.heads.state_dict().items()}
    with pytest.raises(MammoConfigError, match="load_heads=False"):
        load_nyu_state_dict(model, path)
    report = load_nyu_state_dict(model, path, load_heads=False)
    assert all(torch.equal(v, heads_before[k]) for k, v in model.heads.state_dict().items())
    assert report.skipped == sorted(k for k in sd if not k.startswith("four_view_resnet."))
    assert report.missing == sorted(f"heads.{k}" for k in heads_before)
    assert torch.equal(model.column["CC"].conv.weight, sd["four_view_resnet.cc.first_conv.weight"])


def test_old_files_without_num_batches_tracked(tmp_path: Path) -> None:
    sd = {k: v for k, v in their_state().items() if not k.endswith("num_batches_tracked")}
    report = load_nyu_state_dict(ViewWiseModel(), save(tmp_path, sd))
    assert report.missing and all(k.endswith("num_batches_tracked") for k in report.missing)


@pytest.mark.parametrize(
    "corrupt, error, match",
    [
        ("alias_values", MammoDataError, "aliases differ: four_view_resnet.r_cc.layer_list.2.1.conv1.weight"),
        ("alias_keys", MammoDataError, "only 'cc' has this key"),
        ("channels", MammoDataError, "image-only weights"),
        ("unknown_key", MammoDataError, "unexpected key"),
        ("unknown_alias", MammoDataError, "unknown column 'x_cc'"),
        ("no_mlo", MammoDataError, "no MLO column"),
        ("image_heads", MammoConfigError, "image-wise heads"),
    ],
)
def test_bad_files_are_refused_before_anything_is_copied(
    tmp_path: Path, corrupt: str, error: type, match: str
) -> None:
    sd = their_state()
    if corrupt == "alias_values":
        key = "four_view_resnet.r_cc.layer_list.2.1.conv1.weight"
        sd[key] = sd[key] + 1e-3
    elif corrupt == "alias_keys":
        del sd["four_view_resnet.l_cc.final_bn.bias"]
    elif corrupt == "channels":
        sd = their_state(in_channels=3)
    elif corrupt == "unknown_key":
        sd["fc2_cc.weight"] = torch.zeros(1)
    elif corrupt == "unknown_alias":
        sd["four_view_resnet.x_cc.first_conv.weight"] = torch.zeros(1)
    elif corrupt == "no_mlo":
        sd = {k: v for k, v in sd.items() if "mlo" not in k}
    else:
        sd = their_state(variant="image")
    model = ViewWiseModel()
    before = snapshot(model)
    with pytest.raises(error, match=match):
        load_nyu_state_dict(model, save(tmp_path, sd))
    assert unchanged(model, before)


class _Shell:
    """Pickles as a call to ``os.system`` (what a malicious weight file does)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_malicious_pickles_are_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = {"model": {"fc1_cc.weight": _Shell(f"touch {marker}")}}
    plain = tmp_path / "evil.p"
    plain.write_bytes(pickle.dumps(payload))
    with pytest.raises(MammoDataError, match="forbidden global"):
        load_nyu_state_dict(ViewWiseModel(), plain)
    zipped = tmp_path / "evil_zip.p"
    torch.save(payload, zipped)
    with pytest.raises(MammoDataError, match="weights only"):
        load_nyu_state_dict(ViewWiseModel(), zipped)
    legacy = tmp_path / "evil_legacy.p"
    torch.save(payload, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(MammoDataError, match="weights only"):
        load_nyu_state_dict(ViewWiseModel(), legacy)
    assert not marker.exists()


def test_unreadable_inputs(tmp_path: Path) -> None:
    with pytest.raises(MammoDataError, match="not found"):
        read_nyu_state_dict(tmp_path / "missing.p")
    not_a_dict = tmp_path / "list.p"
    torch.save({"model": [torch.zeros(1)]}, not_a_dict)
    with pytest.raises(MammoDataError, match="not a state dict"):
        read_nyu_state_dict(not_a_dict)
    strings = tmp_path / "strings.p"
    strings.write_bytes(pickle.dumps({"fc1_cc.weight": "abc"}))
    with pytest.raises(MammoDataError, match="not a tensor"):
        read_nyu_state_dict(strings)
    with pytest.raises(MammoConfigError, match="column must be"):
        load_nyu_state_dict(ResNet22(), strings, column="lcc")
    array = tmp_path / "array.p"
    array.write_bytes(pickle.dumps(np.zeros(3)))  # numpy arrays are allowed, but this is no state dict
    with pytest.raises(MammoDataError, match="not a state dict"):
        read_nyu_state_dict(array)
    with pytest.raises(MammoDataError, match="not a state dict"):
        read_nyu_state_dict(save(tmp_path, {}, name="empty.p"))
