"""Import of torchvision-style state dicts (written here by torchvision's naming scheme)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from monai.networks.nets import DenseNet121, EfficientNetBN, resnet50

from monai_mammo.exceptions import MammoConfigError, MammoDataError
from monai_mammo.networks.patch_classifier import PatchClassifier
from monai_mammo.networks.vgg import vgg16
from monai_mammo.networks.weights import IMAGENET_MEAN, IMAGENET_STD, load_torchvision_state_dict
from monai_mammo.networks.zoo import ZooClassifier, build_zoo_classifier

State = dict[str, torch.Tensor]


def _conv(sd: State, name: str, out: int, inp: int, k: int, bias: bool = False) -> None:
    sd[f"{name}.weight"] = torch.randn(out, inp, k, k)
    if bias:
        sd[f"{name}.bias"] = torch.randn(out)


def _bn(sd: State, name: str, n: int) -> None:
    sd[f"{name}.weight"] = torch.rand(n) + 0.5
    sd[f"{name}.bias"] = torch.randn(n)
    sd[f"{name}.running_mean"] = torch.randn(n)
    sd[f"{name}.running_var"] = torch.rand(n) + 0.5
    sd[f"{name}.num_batches_tracked"] = torch.tensor(7)


def torchvision_resnet50() -> State:
    """Keys and shapes of torchvision's ``resnet50().state_dict()``."""
    sd: State = {}
    _conv(sd, "conv1", 64, 3, 7)
    _bn(sd, "bn1", 64)
    inplanes = 64
    for stage, (planes, units) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)], start=1):
        for unit in range(units):
            p = f"layer{stage}.{unit}"
            _conv(sd, f"{p}.conv1", planes, inplanes, 1)
            _bn(sd, f"{p}.bn1", planes)
            _conv(sd, f"{p}.conv2", planes, planes, 3)
            _bn(sd, f"{p}.bn2", planes)
            _conv(sd, f"{p}.conv3", planes * 4, planes, 1)
            _bn(sd, f"{p}.bn3", planes * 4)
            if unit == 0:
                _conv(sd, f"{p}.downsample.0", planes * 4, inplanes, 1)
                _bn(sd, f"{p}.downsample.1", planes * 4)
            inplanes = planes * 4
    sd["fc.weight"] = torch.randn(1000, 2048)
    sd["fc.bias"] = torch.randn(1000)
    return sd


def torchvision_vgg16() -> State:
    """Keys and shapes of torchvision's ``vgg16().state_dict()`` (classifier shrunk: it is skipped)."""
    sd: State = {}
    index, inp = 0, 3
    for v in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]:
        if v == "M":
            index += 1
            continue
        assert isinstance(v, int)
        _conv(sd, f"features.{index}", v, inp, 3, bias=True)
        index, inp = index + 2, v
    for i, (out, inp_fc) in enumerate([(64, 25088), (64, 64), (1000, 64)]):
        sd[f"classifier.{3 * i}.weight"] = torch.randn(out, inp_fc)
        sd[f"classifier.{3 * i}.bias"] = torch.randn(out)
    return sd


def torchvision_densenet121(old_style: bool = False) -> State:
    """Keys and shapes of torchvision's ``densenet121().state_dict()`` (or the pre-0.3 ``norm.1`` style)."""
    sd: State = {}
    _conv(sd, "features.conv0", 64, 3, 7)
    _bn(sd, "features.norm0", 64)
    channels = 64
    for block, layers in enumerate((6, 12, 24, 16), start=1):
        for layer in range(1, layers + 1):
            p = f"features.denseblock{block}.denselayer{layer}"
            sep = "." if old_style else ""
            _bn(sd, f"{p}.norm{sep}1", channels)
            _conv(sd, f"{p}.conv{sep}1", 128, channels, 1)
            _bn(sd, f"{p}.norm{sep}2", 128)
            _conv(sd, f"{p}.conv{sep}2", 32, 128, 3)
            channels += 32
        if block < 4:
            _bn(sd, f"features.transition{block}.norm", channels)
            _conv(sd, f"features.transition{block}.conv", channels // 2, channels, 1)
            channels //= 2
    _bn(sd, "features.norm5", channels)
    sd["classifier.weight"] = torch.randn(1000, channels)
    sd["classifier.bias"] = torch.randn(1000)
    return sd


def _make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's channel rounding (``torchvision.models._utils._make_divisible``)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def torchvision_efficientnet(width: float = 1.0, depth: float = 1.0) -> State:
    """Keys and shapes of torchvision's ``efficientnet_b*().state_dict()`` (B0: 1.0, 1.0; B2: 1.1, 1.2)."""
    # (expand ratio, kernel, stride, in, out, blocks) of torchvision's EfficientNet-B table
    setting = [(1, 3, 32, 16, 1), (6, 3, 16, 24, 2), (6, 5, 24, 40, 2), (6, 3, 40, 80, 3)]
    setting += [(6, 5, 80, 112, 3), (6, 5, 112, 192, 4), (6, 3, 192, 320, 1)]
    sd: State = {}
    stem = _make_divisible(32 * width)
    _conv(sd, "features.0.0", stem, 3, 3)
    _bn(sd, "features.0.1", stem)
    for stage, (expand, k, cin, cout, blocks) in enumerate(setting, start=1):
        cin, cout = _make_divisible(cin * width), _make_divisible(cout * width)
        for index in range(int(math.ceil(blocks * depth))):
            inp = cin if index == 0 else cout
            hidden = _make_divisible(inp * expand)
            p, part = f"features.{stage}.{index}.block", 0
            if hidden != inp:
                _conv(sd, f"{p}.0.0", hidden, inp, 1)
                _bn(sd, f"{p}.0.1", hidden)
                part = 1
            _conv(sd, f"{p}.{part}.0", hidden, 1, k)  # depthwise
            _bn(sd, f"{p}.{part}.1", hidden)
            squeeze = max(1, inp // 4)
            _conv(sd, f"{p}.{part + 1}.fc1", squeeze, hidden, 1, bias=True)
            _conv(sd, f"{p}.{part + 1}.fc2", hidden, squeeze, 1, bias=True)
            _conv(sd, f"{p}.{part + 2}.0", cout, hidden, 1)
            _bn(sd, f"{p}.{part + 2}.1", cout)
    last_in = _make_divisible(320 * width)
    _conv(sd, "features.8.0", 4 * last_in, last_in, 1)
    _bn(sd, "features.8.1", 4 * last_in)
    sd["classifier.1.weight"] = torch.randn(1000, 4 * last_in)
    sd["classifier.1.bias"] = torch.randn(1000)
    return sd


@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, State]:
    torch.manual_seed(0)
    sd = torchvision_resnet50()
    path = tmp_path_factory.mktemp("weights") / "resnet50.pth"
    torch.save(sd, path)
    return path, sd


def _save(sd: object, path: Path) -> Path:
    torch.save(sd, path)
    return path


def test_imagenet_constants() -> None:
    assert IMAGENET_MEAN == (0.485, 0.456, 0.406)
    assert IMAGENET_STD == (0.229, 0.224, 0.225)


def test_resnet50_into_patch_classifier(resnet50_file: tuple[Path, State]) -> None:
    path, sd = resnet50_file
    model: Any = PatchClassifier("resnet50")
    head_before = model.head.fc.weight.clone()
    report = load_torchvision_state_dict(model, path, arch="resnet50")
    assert report.prefix == "trunk."
    assert report.skipped == ["fc.bias", "fc.weight"]
    assert not (report.missing or report.unexpected or report.mismatched or report.adapted)
    assert len(report.loaded) == len(sd) - 2
    trunk: Any = model.trunk
    assert torch.equal(trunk.conv1.weight, sd["conv1.weight"])
    assert torch.equal(trunk.bn1.running_mean, sd["bn1.running_mean"])
    assert torch.equal(trunk.layer3[4].conv2.weight, sd["layer3.4.conv2.weight"])
    assert torch.equal(trunk.layer4[0].downsample[0].weight, sd["layer4.0.downsample.0.weight"])
    assert torch.equal(trunk.layer4[0].downsample[1].running_var, sd["layer4.0.downsample.1.running_var"])
    for key, tensor in sd.items():
        if not key.startswith("fc."):
            assert torch.equal(model.state_dict()[f"trunk.{key}"], tensor), key
    assert torch.equal(model.head.fc.weight, head_before)


def test_resnet50_rgb_weights_into_grey_model(resnet50_file: tuple[Path, State]) -> None:
    path, sd = resnet50_file
    model: Any = PatchClassifier("resnet50", in_channels=1)
    report = load_torchvision_state_dict(model, path, arch="resnet50")
    assert report.adapted == ["trunk.conv1.weight"]
    torch.testing.assert_close(model.trunk.conv1.weight, sd["conv1.weight"].sum(dim=1, keepdim=True))
    with pytest.raises(MammoDataError, match="conv1.weight"):
        load_torchvision_state_dict(
            PatchClassifier("resnet50", in_channels=1), path, arch="resnet50", sum_rgb_to_grey=False
        )


def test_resnet50_head_into_bare_monai_resnet(resnet50_file: tuple[Path, State]) -> None:
    path, sd = resnet50_file
    net: Any = resnet50(
        spatial_dims=2, n_input_channels=3, conv1_t_stride=2, bias_downsample=False, num_classes=1000
    )
    report = load_torchvision_state_dict(net, path, arch="resnet50", skip_head=False)
    assert report.prefix == "" and not report.skipped and not report.missing
    assert torch.equal(net.fc.weight, sd["fc.weight"])
    assert torch.equal(net.layer2[3].bn3.bias, sd["layer2.3.bn3.bias"])


def test_monai_resnet_with_downsample_bias_is_named(resnet50_file: tuple[Path, State]) -> None:
    path, _ = resnet50_file
    net: Any = resnet50(spatial_dims=2, n_input_channels=3, conv1_t_stride=2, num_classes=2)
    with pytest.raises(MammoDataError, match=r"bias_downsample=False.*layer1\.0\.downsample\.0\.bias"):
        load_torchvision_state_dict(net, path, arch="resnet50")
    report = load_torchvision_state_dict(net, path, arch="resnet50", strict_trunk=False)
    assert "layer1.0.downsample.0.bias" in report.missing


def test_vgg16_into_vgg_and_patch_classifier(tmp_path: Path) -> None:
    torch.manual_seed(1)
    sd = torchvision_vgg16()
    path = _save(sd, tmp_path / "vgg16.pth")
    net: Any = vgg16()
    report = load_torchvision_state_dict(net, path, arch="vgg16")
    assert report.prefix == "" and len(report.loaded) == 26 and len(report.skipped) == 6
    assert not (report.missing or report.unexpected or report.mismatched)
    for key, tensor in sd.items():
        if key.startswith("features."):
            assert torch.equal(net.state_dict()[key], tensor), key
    assert torch.equal(net.features[28].weight, sd["features.28.weight"])

    model: Any = PatchClassifier("vgg16", in_channels=1)
    report = load_torchvision_state_dict(model, path, arch="vgg16")
    assert report.prefix == "trunk." and report.adapted == ["trunk.features.0.weight"]
    assert torch.equal(model.trunk.features[10].bias, sd["features.10.bias"])

    # the same file against a BN model: the BN parameters are missing, the indices shifted
    with pytest.raises(MammoDataError, match="vgg16.pth"):
        load_torchvision_state_dict(PatchClassifier("vgg16_bn"), path, arch="vgg16_bn")


@pytest.mark.parametrize("old_style", [False, True])
def test_densenet121_into_monai_densenet(tmp_path: Path, old_style: bool) -> None:
    torch.manual_seed(2)
    sd = torchvision_densenet121(old_style)
    path = _save(sd, tmp_path / "densenet121.pth")
    net: Any = DenseNet121(spatial_dims=2, in_channels=3, out_channels=1000)
    report = load_torchvision_state_dict(net, path, arch="densenet121", skip_head=False)
    assert not (report.missing or report.unexpected or report.mismatched)
    target = net.state_dict()
    for key, tensor in sd.items():
        mapped = re.sub(r"(denselayer\d+)\.(norm|conv)\.?(\d)\.", r"\1.layers.\2\3.", key)
        mapped = mapped.replace("classifier.", "class_layers.out.")
        assert torch.equal(target[mapped], tensor), key
    layer = net.features.denseblock3.denselayer7.layers
    suffix = "norm.2" if old_style else "norm2"
    assert torch.equal(
        layer.norm2.running_mean, sd[f"features.denseblock3.denselayer7.{suffix}.running_mean"]
    )
    assert torch.equal(net.features.transition2.conv.weight, sd["features.transition2.conv.weight"])


def test_densenet121_into_patch_classifier(tmp_path: Path) -> None:
    sd = torchvision_densenet121()
    path = _save(sd, tmp_path / "densenet121.pth")
    model: Any = PatchClassifier("densenet121")
    report = load_torchvision_state_dict(model, path, arch="densenet121")
    assert report.prefix == "trunk." and report.skipped == ["classifier.bias", "classifier.weight"]
    assert not report.missing
    assert torch.equal(model.trunk.features.norm5.weight, sd["features.norm5.weight"])


def test_malicious_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": Evil()}, path)
    with pytest.raises(MammoDataError, match="evil.pth"):
        load_torchvision_state_dict(vgg16(), path, arch="vgg16")
    assert not marker.exists()


def test_unreadable_and_non_state_dict_files(tmp_path: Path) -> None:
    with pytest.raises(MammoDataError, match="not found"):
        load_torchvision_state_dict(vgg16(), tmp_path / "absent.pth", arch="vgg16")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(MammoDataError, match="junk.pth"):
        load_torchvision_state_dict(vgg16(), tmp_path / "junk.pth", arch="vgg16")
    with pytest.raises(MammoDataError, match="not a state dict"):
        load_torchvision_state_dict(vgg16(), _save([torch.zeros(1)], tmp_path / "list.pth"), arch="vgg16")
    with pytest.raises(MammoDataError, match="not a state dict"):
        load_torchvision_state_dict(
            vgg16(), _save({"features.0.weight": 3}, tmp_path / "int.pth"), arch="vgg16"
        )


def test_wrapped_and_dataparallel_state_dicts(tmp_path: Path) -> None:
    sd = torchvision_vgg16()
    wrapped = {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}
    path = _save(wrapped, tmp_path / "ckpt.pth")
    net: Any = vgg16()
    report = load_torchvision_state_dict(net, path, arch="vgg16")
    assert len(report.loaded) == 26
    assert torch.equal(net.features[0].weight, sd["features.0.weight"])


def test_shape_mismatch_names_file_and_key(resnet50_file: tuple[Path, State], tmp_path: Path) -> None:
    _, sd = resnet50_file
    bad = dict(sd)
    bad["layer2.1.conv2.weight"] = torch.randn(128, 128, 1, 1)
    path = _save(bad, tmp_path / "bad_resnet.pth")
    model: Any = PatchClassifier("resnet50")
    before = model.trunk.conv1.weight.clone()
    with pytest.raises(MammoDataError, match=r"bad_resnet\.pth.*layer2\.1\.conv2\.weight") as info:
        load_torchvision_state_dict(model, path, arch="resnet50")
    assert info.value.source == str(path)
    assert torch.equal(model.trunk.conv1.weight, before)  # nothing copied on failure
    report = load_torchvision_state_dict(model, path, arch="resnet50", strict_trunk=False)
    assert report.mismatched == [("trunk.layer2.1.conv2.weight", (128, 128, 1, 1), (128, 128, 3, 3))]
    assert torch.equal(model.trunk.conv1.weight, sd["conv1.weight"])


def test_missing_and_unexpected_keys(resnet50_file: tuple[Path, State], tmp_path: Path) -> None:
    _, sd = resnet50_file
    partial = {
        k: v for k, v in sd.items() if not k.startswith("layer4.2.") and not k.endswith("num_batches_tracked")
    }
    partial["layer5.0.conv1.weight"] = torch.randn(4, 4, 1, 1)
    path = _save(partial, tmp_path / "partial.pth")
    with pytest.raises(MammoDataError, match="layer5.0.conv1.weight"):
        load_torchvision_state_dict(PatchClassifier("resnet50"), path, arch="resnet50")
    report = load_torchvision_state_dict(
        PatchClassifier("resnet50"), path, arch="resnet50", strict_trunk=False
    )
    assert report.unexpected == ["layer5.0.conv1.weight"]
    assert "trunk.layer4.2.conv3.weight" in report.missing
    assert "trunk.bn1.num_batches_tracked" in report.missing


def test_old_files_without_num_batches_tracked_load_strictly(tmp_path: Path) -> None:
    sd = {k: v for k, v in torchvision_densenet121().items() if not k.endswith("num_batches_tracked")}
    path = _save(sd, tmp_path / "old.pth")
    report = load_torchvision_state_dict(PatchClassifier("densenet121"), path, arch="densenet121")
    assert report.missing and all(k.endswith("num_batches_tracked") for k in report.missing)


def test_arch_errors(tmp_path: Path) -> None:
    path = _save(torchvision_vgg16(), tmp_path / "vgg16.pth")
    with pytest.raises(MammoConfigError, match="unknown arch"):
        load_torchvision_state_dict(vgg16(), path, arch="alexnet")
    with pytest.raises(MammoConfigError, match="densenet121"):
        load_torchvision_state_dict(vgg16(), path, arch="densenet121")


def _bytes(tensor: torch.Tensor) -> bytes:
    return tensor.numpy().tobytes()


def test_efficientnet_b0_into_zoo_classifier(tmp_path: Path) -> None:
    torch.manual_seed(3)
    sd = torchvision_efficientnet()
    path = _save(sd, tmp_path / "efficientnet_b0.pth")
    model: Any = ZooClassifier("efficientnet-b0")
    report = load_torchvision_state_dict(model, path, arch="efficientnet_b0")
    assert report.prefix == "trunk." and report.skipped == ["classifier.1.bias", "classifier.1.weight"]
    assert not (report.missing or report.unexpected or report.mismatched or report.adapted)
    assert len(report.loaded) == len(sd) - 2
    target = model.state_dict()
    expected = {  # torchvision key -> MONAI EfficientNetBN key (B0 blocks per stage: 1, 2, 2, 3, 3, 4, 1)
        "features.0.0.weight": "_conv_stem.weight",
        "features.0.1.running_var": "_bn0.running_var",
        "features.1.0.block.0.0.weight": "_blocks.0.0._depthwise_conv.weight",
        "features.1.0.block.0.1.bias": "_blocks.0.0._bn1.bias",
        "features.1.0.block.1.fc1.weight": "_blocks.0.0._se_reduce.weight",
        "features.1.0.block.1.fc2.bias": "_blocks.0.0._se_expand.bias",
        "features.1.0.block.2.0.weight": "_blocks.0.0._project_conv.weight",
        "features.1.0.block.2.1.running_mean": "_blocks.0.0._bn2.running_mean",
        "features.2.1.block.0.0.weight": "_blocks.1.2._expand_conv.weight",
        "features.2.1.block.0.1.weight": "_blocks.1.2._bn0.weight",
        "features.2.1.block.1.0.weight": "_blocks.1.2._depthwise_conv.weight",
        "features.2.1.block.1.1.running_var": "_blocks.1.2._bn1.running_var",
        "features.6.3.block.2.fc1.bias": "_blocks.5.14._se_reduce.bias",
        "features.6.3.block.2.fc2.weight": "_blocks.5.14._se_expand.weight",
        "features.6.3.block.3.0.weight": "_blocks.5.14._project_conv.weight",
        "features.6.3.block.3.1.bias": "_blocks.5.14._bn2.bias",
        "features.7.0.block.1.0.weight": "_blocks.6.15._depthwise_conv.weight",
        "features.8.0.weight": "_conv_head.weight",
        "features.8.1.running_mean": "_bn1.running_mean",
    }
    for file_key, model_key in expected.items():
        assert torch.equal(target[f"trunk.{model_key}"], sd[file_key]), file_key
    # every trunk tensor received exactly one (random, hence unique) file tensor
    by_value = {_bytes(v): k for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    sources = [by_value.get(_bytes(v)) for k, v in target.items() if k.startswith("trunk.")]
    sources = [k for k in sources if k is not None]
    assert len(sources) == len(set(sources)) == len(by_value) - 2


def test_efficientnet_b2_widths_and_depths_load_strictly(tmp_path: Path) -> None:
    sd = torchvision_efficientnet(width=1.1, depth=1.2)
    path = _save(sd, tmp_path / "efficientnet_b2.pth")
    model: Any = build_zoo_classifier("efficientnet-b2", head="linear", weights=path)
    target = model.state_dict()
    assert torch.equal(
        target["trunk._blocks.6.22._bn2.running_var"], sd["features.7.1.block.3.1.running_var"]
    )
    assert torch.equal(target["trunk._conv_head.weight"], sd["features.8.0.weight"])
    assert model.head.classifier.in_features == 1408


def test_efficientnet_head_grey_and_wrong_variant(tmp_path: Path) -> None:
    sd = torchvision_efficientnet()
    path = _save(sd, tmp_path / "efficientnet_b0.pth")
    net: Any = EfficientNetBN("efficientnet-b0", pretrained=False, spatial_dims=2, num_classes=1000)
    report = load_torchvision_state_dict(net, path, arch="efficientnet-b0", skip_head=False)
    assert report.prefix == "" and not (report.skipped or report.missing or report.unexpected)
    assert torch.equal(net._fc.weight, sd["classifier.1.weight"])

    grey: Any = ZooClassifier("efficientnet-b0", grey_to_rgb=False)
    report = load_torchvision_state_dict(grey, path, arch="efficientnet_b0")
    assert report.adapted == ["trunk._conv_stem.weight"]
    torch.testing.assert_close(
        grey.trunk._conv_stem.weight, sd["features.0.0.weight"].sum(dim=1, keepdim=True)
    )

    with pytest.raises(MammoDataError, match="efficientnet_b0.pth"):  # B0 file, B1 network: blocks missing
        build_zoo_classifier("efficientnet-b1", weights=path)


def test_vgg16_resnet50_densenet121_into_zoo(resnet50_file: tuple[Path, State], tmp_path: Path) -> None:
    torch.manual_seed(4)
    vgg_sd = torchvision_vgg16()
    vgg: Any = build_zoo_classifier("vgg16", weights=_save(vgg_sd, tmp_path / "vgg16.pth"))
    for key, tensor in vgg_sd.items():
        if key.startswith("features."):
            assert torch.equal(vgg.state_dict()[f"trunk.{key}"], tensor), key
    assert vgg.head.fc.weight.shape == (4096, 512)  # the head is new, not torchvision's classifier

    path, res_sd = resnet50_file
    resnet: Any = build_zoo_classifier("resnet50", head="linear", imagenet_norm=True, weights=path)
    for key, tensor in res_sd.items():
        if not key.startswith("fc."):
            assert torch.equal(resnet.state_dict()[f"trunk.{key}"], tensor), key

    dense_sd = torchvision_densenet121()
    dense: Any = build_zoo_classifier(
        "densenet121", grey_to_rgb=False, weights=_save(dense_sd, tmp_path / "densenet121.pth")
    )
    target = dense.state_dict()
    for key, tensor in dense_sd.items():
        if key.startswith("classifier."):
            continue
        mapped = "trunk." + re.sub(r"(denselayer\d+)\.(norm|conv)(\d)\.", r"\1.layers.\2\3.", key)
        if key == "features.conv0.weight":  # grey model: the RGB filters summed
            torch.testing.assert_close(target[mapped], tensor.sum(dim=1, keepdim=True))
        else:
            assert torch.equal(target[mapped], tensor), key
