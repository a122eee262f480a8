"""The backbone zoo: every backbone trains a step, takes 674 / 320 inputs, Keras-like layer indices."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

from monai_mammo.exceptions import MammoConfigError, MammoDataError
from monai_mammo.networks.weights import IMAGENET_MEAN, IMAGENET_STD
from monai_mammo.networks.zoo import (
    ZOO_BACKBONES,
    EfficientNetTrunk,
    FalconiHead,
    LayerInfo,
    LinearHead,
    ZooClassifier,
    build_zoo_classifier,
    list_layers,
    trunk_output_size,
)

#: Number of layers (input + trunk + falconi head) per backbone: the indexing must not drift.
N_LAYERS = {
    "vgg13": 20,
    "vgg13_bn": 20,
    "vgg16": 23,
    "vgg16_bn": 23,
    "vgg19": 26,
    "vgg19_bn": 26,
    "resnet50": 23,
    "resnet101": 40,
    "resnet152": 57,
    "densenet121": 69,
    "densenet169": 93,
    "densenet201": 109,
    "efficientnet-b0": 23,
    "efficientnet-b1": 30,
    "efficientnet-b2": 30,
}
#: Feature-map side at 674 x 674 (VGG floors every pool, ResNet ceils, DenseNet's transitions floor,
#: MONAI's EfficientNet pads for its native size).
SIDE_674 = {"vgg": 21, "resnet": 22, "densenet": 21, "efficientnet": 21}

VGG16_NAMES = [
    "input",
    "block1_conv1",
    "block1_conv2",
    "block1_pool",
    "block2_conv1",
    "block2_conv2",
    "block2_pool",
    "block3_conv1",
    "block3_conv2",
    "block3_conv3",
    "block3_pool",
    "block4_conv1",
    "block4_conv2",
    "block4_conv3",
    "block4_pool",
    "block5_conv1",
    "block5_conv2",
    "block5_conv3",
    "block5_pool",
    "gap",
    "fc",
    "dropout",
    "classifier",
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    # tiny tensors: an intra-op thread pool only adds spin-waiting on the shared CPUs
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _family(backbone: str) -> str:
    return next(f for f in SIDE_674 if backbone.startswith(f))


def _trainable(model: nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("backbone", ZOO_BACKBONES)
def test_every_backbone_trains_one_step_on_cpu(backbone: str) -> None:
    torch.manual_seed(0)
    linear = ZOO_BACKBONES.index(backbone) % 2 == 1  # alternate heads and output counts
    model = ZooClassifier(backbone, head="linear" if linear else "falconi", num_outputs=3 if linear else 1)
    x = torch.rand(2, 1, 32, 32)
    logits = model(x)
    assert logits.shape == (2, 3 if linear else 1)
    assert torch.isfinite(logits).all()
    logits.square().mean().backward()
    first_conv = next(p for p in model.trunk.parameters() if p.ndim == 4)
    assert first_conv.shape[1] == 3  # grey repeated to RGB
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.head.parameters())
    # the layer table covers every parameter exactly once
    layers = model.layers()
    assert len(layers) == N_LAYERS[backbone] - (1 if linear else 0)
    assert sum(layer.n_params for layer in layers) == sum(p.numel() for p in model.parameters())
    assert [layer.index for layer in layers] == list(range(len(layers)))
    assert layers[model.head_start].name == "gap" and layers[-1].name == "classifier"


@pytest.mark.parametrize("backbone", ZOO_BACKBONES)
def test_every_backbone_takes_674_and_320_inputs(backbone: str) -> None:
    # shape-only forward on the meta device: exact and cheap even for ResNet152 at 674 x 674
    side = SIDE_674[_family(backbone)]
    with torch.device("meta"):
        model = ZooClassifier(backbone)
        for size, expected in ((674, side), (320, 10)):
            features = model.trunk(model.preprocess(torch.empty(2, 1, size, size)))
            assert features.shape == (2, model.trunk.out_channels, expected, expected)
            assert model.head(features).shape == (2, 1)
    if not isinstance(model.trunk, EfficientNetTrunk):  # the analytic formulas agree with the network
        assert model.trunk.output_size((674, 320)) == (side, 10)


def test_feature_map_size() -> None:
    assert ZooClassifier("vgg16").feature_map_size((674, 320)) == (21, 10)
    assert trunk_output_size("resnet152", (674, 674)) == (22, 22)
    assert trunk_output_size("efficientnet-b2", (320, 674), in_channels=1) == (10, 21)


def test_too_small_inputs_are_refused() -> None:
    with pytest.raises(MammoConfigError, match=r"vgg16 cannot take 16 x 16"):
        trunk_output_size("vgg16", (16, 16))
    with pytest.raises(MammoConfigError, match="densenet121 cannot take"):
        ZooClassifier("densenet121").feature_map_size((16, 16))
    assert trunk_output_size("vgg16", (32, 32)) == (1, 1)


@pytest.mark.parametrize("size, side", [(320, 10), (674, 21)])
def test_meta_size_matches_a_real_forward(size: int, side: int) -> None:
    torch.manual_seed(0)
    trunk = EfficientNetTrunk("efficientnet-b0").eval()
    with torch.no_grad():
        out = trunk(torch.rand(1, 3, size, size))
    assert out.shape == (1, 1280, side, side)
    assert trunk.output_size((size, size)) == (side, side)


def test_vgg16_indices_are_keras() -> None:
    layers = list_layers("vgg16")
    assert [layer.name for layer in layers] == VGG16_NAMES
    assert layers[10] == LayerInfo(10, "block3_pool", "pool", 0)
    assert layers[1] == LayerInfo(1, "block1_conv1", "conv", 3 * 64 * 9 + 64)
    assert layers[20] == LayerInfo(20, "fc", "fc", 512 * 4096 + 4096)
    assert layers[22] == LayerInfo(22, "classifier", "linear", 4096 + 1)
    assert sum(layer.n_params for layer in layers[1:19]) == 14_714_688  # Keras VGG16 without top
    # batch norm joins its convolution: same indices, more parameters
    bn = list_layers("vgg16_bn")
    assert [layer.name for layer in bn] == VGG16_NAMES
    assert bn[1].n_params == layers[1].n_params + 2 * 64
    assert list_layers("vgg19")[17].name == "block5_conv1"  # Falconi's vgg19-17-FT
    assert list_layers("vgg16", in_channels=1, grey_to_rgb=False)[1].n_params == 64 * 9 + 64
    assert [layer.name for layer in list_layers("vgg16", head="linear")][19:] == [
        "gap",
        "dropout",
        "classifier",
    ]


def test_list_layers_matches_a_real_model() -> None:
    torch.manual_seed(0)
    assert (
        list_layers("vgg13", head="linear", num_outputs=2)
        == ZooClassifier("vgg13", head="linear", num_outputs=2).layers()
    )


def test_other_families_indexing_is_stable() -> None:
    resnet = [(layer.name, layer.kind) for layer in list_layers("resnet50")]
    assert resnet[:4] == [
        ("input", "input"),
        ("conv1", "conv"),
        ("pool1", "pool"),
        ("conv2_block1", "residual"),
    ]
    assert [name for name, _ in resnet[3:19]] == [
        *(f"conv2_block{u}" for u in range(1, 4)),
        *(f"conv3_block{u}" for u in range(1, 5)),
        *(f"conv4_block{u}" for u in range(1, 7)),
        *(f"conv5_block{u}" for u in range(1, 4)),
    ]
    assert [layer.name for layer in list_layers("resnet152")][52] == "conv5_block3"

    dense = list_layers("densenet121")
    named = {layer.index: (layer.name, layer.kind) for layer in dense}
    assert named[1] == ("conv1", "conv") and named[2] == ("pool1", "pool")
    assert named[3] == ("conv2_block1", "dense") and named[8] == ("conv2_block6", "dense")
    assert named[9] == ("pool2", "transition") and named[22] == ("pool3", "transition")
    assert named[47] == ("pool4", "transition") and named[63] == ("conv5_block16", "dense")
    assert named[64] == ("bn", "norm") and named[65] == ("gap", "pool")
    assert dense[64].n_params == 2 * 1024

    eff = [layer.name for layer in list_layers("efficientnet-b0")]
    assert eff[:5] == ["input", "stem_conv", "block1a", "block2a", "block2b"]
    assert eff[13:20] == ["block6a", "block6b", "block6c", "block6d", "block7a", "top_conv", "gap"]
    b2 = [layer.name for layer in list_layers("efficientnet-b2")]
    assert b2[-9:-4] == ["block6d", "block6e", "block7a", "block7b", "top_conv"]  # depth 1.2: 2 x block7


@pytest.fixture(scope="module")
def vgg16_model() -> ZooClassifier:
    torch.manual_seed(0)
    return ZooClassifier("vgg16")


def _vgg16_trainable(conv_indices: list[int]) -> set[str]:
    head = {f"head.{layer}.{p}" for layer in ("fc", "classifier") for p in ("weight", "bias")}
    return head | {f"trunk.features.{i}.{p}" for i in conv_indices for p in ("weight", "bias")}


def test_vgg16_gamma_10_and_8(vgg16_model: ZooClassifier) -> None:
    model = vgg16_model
    names = model.freeze_before(10)
    assert names == VGG16_NAMES[10:]
    # torchvision / our features indices: block4 convs 17, 19, 21; block5 convs 24, 26, 28
    assert _trainable(model) == _vgg16_trainable([17, 19, 21, 24, 26, 28])
    assert model.model_name(10) == "vgg16-10-FT"

    assert model.freeze_before(8)[:3] == ["block3_conv2", "block3_conv3", "block3_pool"]
    assert _trainable(model) == _vgg16_trainable([12, 14, 17, 19, 21, 24, 26, 28])
    assert model.model_name(8) == "vgg16-8-FT"

    assert model.freeze_before(model.head_start) == ["gap", "fc", "dropout", "classifier"]
    assert _trainable(model) == _vgg16_trainable([])
    assert model.model_name() == "vgg16-TL"

    assert model.freeze_before(len(model.layers())) == [] and not _trainable(model)
    model.freeze_before(0)
    assert _trainable(model) == {name for name, _ in model.named_parameters()}


def test_frozen_layers_do_not_move_in_an_optimiser_step(vgg16_model: ZooClassifier) -> None:
    torch.manual_seed(1)
    model = vgg16_model
    model.freeze_before(10)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loss = nn.functional.binary_cross_entropy_with_logits(model(torch.rand(2, 1, 32, 32)), torch.ones(2, 1))
    loss.backward()
    optimiser.step()
    moved = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert moved and moved <= _vgg16_trainable([17, 19, 21, 24, 26, 28])
    assert "trunk.features.0.weight" not in moved and "trunk.features.14.weight" not in moved
    model.freeze_before(0)


def test_gamma_out_of_range(vgg16_model: ZooClassifier) -> None:
    for bad in (-1, 24, 2.5, True):
        with pytest.raises(MammoConfigError, match=r"gamma must be an int in \[0, 23\]"):
            vgg16_model.freeze_before(bad)  # type: ignore[arg-type]
    with pytest.raises(MammoConfigError, match="gamma"):
        vgg16_model.model_name(99)


def test_resnet50_gamma_and_frozen_batch_norms() -> None:
    torch.manual_seed(0)
    model: Any = ZooClassifier("resnet50", head="linear")
    assert model.layers()[17].name == "conv5_block2"
    names = model.freeze_before(17)
    assert names == ["conv5_block2", "conv5_block3", "gap", "dropout", "classifier"]
    expected = {
        n
        for n, _ in model.named_parameters()
        if n.startswith(("trunk.layer4.1.", "trunk.layer4.2.", "head."))
    }
    assert _trainable(model) == expected and len(expected) == 9 + 9 + 2
    model.train()
    assert not model.trunk.bn1.training and not model.trunk.layer4[0].bn3.training
    assert model.trunk.layer4[1].bn1.training and model.head.training
    frozen_stats = model.trunk.layer3[5].bn2.running_mean.clone()
    trained_stats = model.trunk.layer4[2].bn2.running_mean.clone()
    model(torch.rand(2, 1, 32, 32))
    assert torch.equal(model.trunk.layer3[5].bn2.running_mean, frozen_stats)
    assert not torch.equal(model.trunk.layer4[2].bn2.running_mean, trained_stats)
    model.eval()
    assert not model.trunk.layer4[1].bn1.training

    model.freeze_before(17, bn_eval=False)
    model.train()
    assert model.trunk.bn1.training and model.trunk.layer4[0].bn3.training
    assert _trainable(model) == expected
    assert model.model_name(17) == "resnet50-17-FT"


def test_falconi_head_structure() -> None:
    torch.manual_seed(0)
    head = FalconiHead(512)
    assert isinstance(head.fc, nn.Linear) and (head.fc.in_features, head.fc.out_features) == (512, 4096)
    assert isinstance(head.act, nn.ReLU)
    assert isinstance(head.dropout, nn.Dropout) and head.dropout.p == 0.2
    assert (head.classifier.in_features, head.classifier.out_features) == (4096, 1)
    features = torch.randn(2, 512, 3, 3)
    head.eval()
    expected = head.classifier(torch.relu(head.fc(features.mean(dim=(2, 3)))))
    torch.testing.assert_close(head(features), expected)
    head.train()
    assert not torch.equal(head(features), head(features))  # dropout active in training

    with torch.device("meta"):
        model: Any = ZooClassifier("densenet121")
        linear: Any = ZooClassifier("efficientnet-b0", head="linear", num_outputs=2, dropout=0.5)
    assert isinstance(model.head, FalconiHead) and model.head.fc.in_features == 1024
    assert isinstance(linear.head, LinearHead) and linear.head.dropout.p == 0.5
    assert (linear.head.classifier.in_features, linear.head.classifier.out_features) == (1280, 2)


def test_grey_to_rgb_and_imagenet_norm() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 1, 8, 8)
    grey = ZooClassifier("vgg13")
    torch.testing.assert_close(grey.preprocess(x), x.expand(-1, 3, -1, -1))
    norm = ZooClassifier("vgg13", imagenet_norm=True)
    out = norm.preprocess(x)
    for c in range(3):
        torch.testing.assert_close(out[:, c], (x[:, 0] - IMAGENET_MEAN[c]) / IMAGENET_STD[c])
    assert not any(key.startswith("preprocess") for key in norm.state_dict())
    with pytest.raises(MammoDataError, match=r"\(B, 1, H, W\)"):
        norm(torch.rand(2, 3, 32, 32))

    rgb = ZooClassifier("vgg13", in_channels=3, grey_to_rgb=False, imagenet_norm=True)
    y = torch.rand(1, 3, 4, 4)
    torch.testing.assert_close(
        rgb.preprocess(y),
        (y - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
    )
    plain = ZooClassifier("vgg13", grey_to_rgb=False)
    assert len(plain.preprocess) == 0 and plain.trunk_in_channels == 1
    assert plain(torch.rand(2, 1, 32, 32)).shape == (2, 1)


def test_config_errors() -> None:
    with pytest.raises(MammoConfigError, match="unknown zoo backbone 'alexnet'"):
        ZooClassifier("alexnet")
    with pytest.raises(MammoConfigError, match="unknown head"):
        ZooClassifier("vgg13", head="mlp")
    with pytest.raises(MammoConfigError, match="grey_to_rgb needs in_channels=1"):
        ZooClassifier("vgg13", in_channels=3)
    with pytest.raises(MammoConfigError, match="imagenet_norm needs 3"):
        ZooClassifier("vgg13", grey_to_rgb=False, imagenet_norm=True)
    with pytest.raises(MammoConfigError, match="dropout"):
        ZooClassifier("vgg13", dropout=1.0)
    with pytest.raises(MammoConfigError, match="num_outputs"):
        build_zoo_classifier("vgg13", num_outputs=0)
    with pytest.raises(MammoConfigError, match="unsupported EfficientNet"):
        EfficientNetTrunk("efficientnet-b7")
