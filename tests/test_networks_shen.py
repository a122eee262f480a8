"""Networks of the Shen et al. end-to-end pipeline: VGG, patch, whole-image and heatmap classifiers."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from monai_mammo.exceptions import MammoConfigError, MammoDataError
from monai_mammo.networks.heatmap_classifier import HeatmapClassifier, feature_map_size
from monai_mammo.networks.patch_classifier import (
    PAPER_TOP_N,
    PATCH_BACKBONES,
    PatchClassifier,
    build_trunk,
)
from monai_mammo.networks.vgg import VGG, vgg11, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn
from monai_mammo.networks.whole_image import RESNET_TOP_BLOCKS, VGG_TOP_BLOCKS, WholeImageClassifier


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def resnet_patch() -> PatchClassifier:
    torch.manual_seed(1)
    return PatchClassifier("resnet50").eval()


# ---------------------------------------------------------------------------------------- VGG


def _torchvision_conv_indices(cfg: list, batch_norm: bool) -> list[int]:
    """Indices of the convolutions in torchvision's ``features`` (conv, [bn], relu; 'M' = pool)."""
    indices, i = [], 0
    for v in cfg:
        if v == "M":
            i += 1
        else:
            indices.append(i)
            i += 3 if batch_norm else 2
    return indices


@pytest.mark.parametrize(
    ("factory", "length", "bn"),
    [(vgg11, 21, False), (vgg13_bn, 35, True), (vgg16, 31, False), (vgg16_bn, 44, True), (vgg19, 37, False)],
)
def test_vgg_features_follow_torchvision_indices(factory, length: int, bn: bool) -> None:
    net: Any = factory()
    assert len(net.features) == length
    convs = [i for i, m in enumerate(net.features) if isinstance(m, nn.Conv2d)]
    assert convs == _torchvision_conv_indices(net.config, bn)
    if bn:
        assert all(isinstance(net.features[i + 1], nn.BatchNorm2d) for i in convs)
    assert net.out_channels == 512


def test_vgg_forward_shape_and_output_size() -> None:
    net: Any = VGG("16", in_channels=1).eval()
    with torch.no_grad():
        out = net(torch.zeros(1, 1, 70, 100))
    assert out.shape == (1, 512, 2, 3)
    assert net.output_size((70, 100)) == (2, 3)
    assert net.output_size((1152, 896)) == (36, 28)


def test_vgg_block_groups_cover_every_parameter_once() -> None:
    net: Any = vgg19_bn()
    groups = net.block_groups()
    assert [name for name, _ in groups][:3] == ["conv1_1", "conv1_2", "conv2_1"]
    assert groups[-1][0] == "conv5_4" and len(groups) == 16
    ids = [id(p) for _, module in groups for p in module.parameters()]
    assert sorted(ids) == sorted(id(p) for p in net.parameters())


def test_vgg_custom_config_and_errors() -> None:
    assert VGG([8, "M", 16], in_channels=1).out_channels == 16
    bad_configs: list[Any] = ["17", ["M", 8], [8, 0], [8, "X"]]
    for bad in bad_configs:
        with pytest.raises(MammoConfigError):
            VGG(bad)
    with pytest.raises(MammoConfigError):
        VGG("16", in_channels=0)


# --------------------------------------------------------------------------- patch classifier


def test_resnet50_patch_classifier_at_224(resnet_patch: PatchClassifier) -> None:
    with torch.no_grad():
        features = resnet_patch.trunk(torch.randn(1, 3, 224, 224))
        logits = resnet_patch.head(features)
    assert features.shape == (1, 2048, 7, 7)
    assert logits.shape == (1, 5)
    assert resnet_patch.trunk_channels == 2048


@pytest.mark.parametrize(("backbone", "channels"), [("vgg16", 512), ("vgg16_bn", 512), ("densenet121", 1024)])
def test_patch_classifier_shapes(backbone: str, channels: int) -> None:
    model: Any = PatchClassifier(backbone, num_classes=5, in_channels=1, dropout=0.5).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 1, 64, 64))
    assert logits.shape == (2, 5)
    assert model.trunk_channels == channels
    assert isinstance(model.head.fc, nn.Linear) and model.head.fc.in_features == channels


def test_resnet50_trunk_is_36_by_28_at_1152_by_896(resnet_patch: PatchClassifier) -> None:
    with torch.no_grad():
        features = resnet_patch.trunk(torch.randn(1, 3, 1152, 896))
    assert features.shape == (1, 2048, 36, 28)
    assert resnet_patch.trunk.output_size((1152, 896)) == (36, 28)


@pytest.mark.parametrize("backbone", ["resnet18", "vgg11", "densenet121"])
def test_trunk_output_size_matches_forward_on_odd_sizes(backbone: str) -> None:
    trunk: Any = build_trunk(backbone).eval()
    with torch.no_grad():
        out = trunk(torch.zeros(1, 3, 97, 70))
    assert tuple(out.shape[2:]) == trunk.output_size((97, 70))


def test_layer_groups_resnet50_and_paper_top_n(resnet_patch: PatchClassifier) -> None:
    groups = resnet_patch.layer_groups()
    names = [name for name, _ in groups]
    assert names[0] == "stem" and names[-1] == "head" and len(names) == 18
    ids = [id(p) for _, module in groups for p in module.parameters()]
    assert sorted(ids) == sorted(id(p) for p in resnet_patch.parameters())
    model: Any = PatchClassifier("resnet50")
    assert model.set_trainable(PAPER_TOP_N["resnet50"]) == [
        "layer3.5",
        "layer4.0",
        "layer4.1",
        "layer4.2",
        "head",
    ]
    assert model.trunk.layer3[5].conv1.weight.requires_grad
    assert not model.trunk.layer3[4].conv1.weight.requires_grad
    assert not model.trunk.conv1.weight.requires_grad


def test_set_trainable_stages_vgg16() -> None:
    model: Any = PatchClassifier("vgg16")
    assert model.set_trainable(1) == ["head"]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"head.fc.weight", "head.fc.bias"}
    names = model.set_trainable(PAPER_TOP_N["vgg16"])
    assert names == ["conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3", "head"]
    assert model.set_trainable(None)[0] == "conv1_1"
    assert all(p.requires_grad for p in model.parameters())
    assert model.set_trainable(0) == [] and not any(p.requires_grad for p in model.parameters())
    with pytest.raises(MammoConfigError):
        model.set_trainable(-1)


def test_patch_classifier_errors() -> None:
    assert "resnet50" in PATCH_BACKBONES and "vgg16_bn" in PATCH_BACKBONES
    with pytest.raises(MammoConfigError):
        PatchClassifier("alexnet")
    with pytest.raises(MammoConfigError):
        PatchClassifier("vgg11", num_classes=0)
    with pytest.raises(MammoConfigError):
        PatchClassifier("vgg11", dropout=1.0)
    with pytest.raises(MammoConfigError):
        build_trunk("vgg11", in_channels=0)


# ---------------------------------------------------------------------------- whole image


def test_whole_image_resnet_top_forward_and_sharing(resnet_patch: PatchClassifier) -> None:
    model: Any = WholeImageClassifier.from_patch_classifier(resnet_patch, top="resnet").eval()
    assert model.trunk is resnet_patch.trunk
    patch_ptrs = {p.data_ptr() for p in resnet_patch.trunk.parameters()}
    assert {p.data_ptr() for p in model.trunk_parameters()} == patch_ptrs
    with torch.no_grad():
        out = model(torch.randn(1, 3, 128, 96))
    assert out.shape == (1, 2)
    # default = the paper's best [512-512-1024] x 2, twice
    assert RESNET_TOP_BLOCKS == ((512, 512, 1024, 2), (512, 512, 1024, 2))
    assert [len(block) for block in model.top] == [2, 2]
    assert model.head.fc.in_features == 1024


def test_whole_image_parameter_groups_are_disjoint(resnet_patch: PatchClassifier) -> None:
    model: Any = WholeImageClassifier.from_patch_classifier(resnet_patch, top="vgg")
    new = {id(p) for p in model.new_parameters()}
    trunk: Any = {id(p) for p in model.trunk_parameters()}
    assert new and trunk and not new & trunk
    assert new | trunk == {id(p) for p in model.parameters()}
    model.set_trunk_trainable(False)
    assert not any(p.requires_grad for p in model.trunk_parameters())
    assert all(p.requires_grad for p in model.new_parameters())
    model.set_trunk_trainable(True)


def test_whole_image_vgg_top_trains_any_size() -> None:
    patch = PatchClassifier("vgg16")
    model: Any = WholeImageClassifier.from_patch_classifier(patch, top="vgg", blocks=VGG_TOP_BLOCKS)
    out = model(torch.randn(2, 3, 128, 128))
    assert out.shape == (2, 2)
    out.sum().backward()
    assert model.trunk.features[0].weight.grad is not None
    assert model.head.fc.in_features == 128


def test_whole_image_he_normal_init() -> None:
    torch.manual_seed(3)
    model: Any = WholeImageClassifier(nn.Identity(), 2048, top="resnet", blocks=((512, 512, 2048, 1),))
    conv = model.top[0][0].conv1
    fan_in = conv.weight.shape[1] * conv.weight.shape[2] * conv.weight.shape[3]
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2.0 / fan_in), rel=0.05)
    conv3 = model.top[0][0].conv2
    assert conv3.weight.std().item() == pytest.approx(math.sqrt(2.0 / (512 * 9)), rel=0.05)
    assert torch.all(model.top[0][0].bn1.weight == 1)


def test_whole_image_errors() -> None:
    with pytest.raises(MammoConfigError):
        WholeImageClassifier(nn.Identity(), 8, top="dense")  # type: ignore[arg-type]
    with pytest.raises(MammoConfigError):
        WholeImageClassifier(nn.Identity(), 8, top="resnet", blocks=((8, 8, 8),))
    with pytest.raises(MammoConfigError):
        WholeImageClassifier(nn.Identity(), 8, top="vgg", blocks=((8, 0),))
    with pytest.raises(MammoConfigError):
        WholeImageClassifier(nn.Identity(), 0)


# ------------------------------------------------------------------------------- heatmap


@pytest.mark.parametrize("backbone", ["resnet50", "vgg16"])
def test_heatmap_equals_patch_classifier_on_1x1_trunk_map(
    backbone: str, resnet_patch: PatchClassifier
) -> None:
    patch = resnet_patch if backbone == "resnet50" else PatchClassifier(backbone).eval()
    model: Any = HeatmapClassifier.from_patch_classifier(patch, input_shape=(3, 32, 32), pool_size=1).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        heat = model.heatmap_logits(x)
        expected = patch(x)
        assert heat.shape == (2, 5, 1, 1)
        torch.testing.assert_close(heat[:, :, 0, 0], expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(model.heatmap(x), torch.relu(heat))
    assert model.classifier is patch.head.fc  # shared weights


def test_heatmap_classifier_pooling_fc_and_shortcut(resnet_patch: PatchClassifier) -> None:
    model: Any = HeatmapClassifier.from_patch_classifier(
        resnet_patch, input_shape=(3, 160, 192), pool_size=5, fc_sizes=(64, 32)
    ).eval()
    assert model.heatmap_size == (5, 6)
    assert model.out.in_features == 32 + 5 * 1 * 1
    with torch.no_grad():
        assert model(torch.randn(1, 3, 160, 192)).shape == (1, 2)
    plain = HeatmapClassifier.from_patch_classifier(
        resnet_patch,
        input_shape=(3, 160, 192),
        pool_size=2,
        fc_sizes=(16, 8),
        shortcut=False,
        activation="softmax",
    )
    assert plain.out.in_features == 8 and plain.fc[0].in_features == 5 * 2 * 3
    with pytest.raises(MammoDataError):
        model(torch.randn(1, 3, 160, 160))


def test_heatmap_classifier_custom_trunk_and_errors() -> None:
    trunk: Any = nn.Sequential(nn.Conv2d(1, 4, kernel_size=4, stride=4), nn.BatchNorm2d(4))
    trunk.train()
    assert feature_map_size(trunk, (1, 40, 24)) == (10, 6)
    assert trunk.training and trunk[1].num_batches_tracked.item() == 0
    model: Any = HeatmapClassifier(trunk, nn.Linear(4, 3), (1, 40, 24), pool_size=2, fc_sizes=(8, 4))
    assert model(torch.randn(2, 1, 40, 24)).shape == (2, 2)
    with pytest.raises(MammoConfigError):
        HeatmapClassifier(trunk, nn.Linear(4, 3), (1, 8, 8), pool_size=5)
    with pytest.raises(MammoConfigError):
        HeatmapClassifier(trunk, nn.Linear(4, 3), (40, 24))
    with pytest.raises(MammoConfigError):
        HeatmapClassifier(trunk, nn.Linear(4, 3), (1, 40, 24), activation="sigmoid")  # type: ignore[arg-type]
    with pytest.raises(MammoConfigError):
        HeatmapClassifier(trunk, nn.Linear(4, 3), (1, 40, 24), fc_sizes=(8,))
