"""A zoo of ImageNet-style backbones with the transfer-learning heads of the ROI / patch papers.

:class:`ZooClassifier` = optional grey -> RGB repeat -> optional ImageNet normalisation ->
convolutional trunk -> head. The trunks are our :class:`~monai_mammo.networks.vgg.VGG`
(``vgg13``, ``vgg16``, ``vgg19``, with or without batch norm), MONAI ResNet
(``resnet50/101/152``, through :class:`~monai_mammo.networks.patch_classifier.ResNetTrunk`),
MONAI DenseNet (``densenet121/169/201``) and the feature extractor of MONAI's
``EfficientNetBN`` (``efficientnet-b0/b1/b2``, :class:`EfficientNetTrunk`). The heads are
Falconi et al.'s (:class:`FalconiHead`: global average pooling -> FC 4096 -> ReLU ->
dropout 0.2 -> one logit) and a plain one (:class:`LinearHead`: global average pooling ->
dropout -> linear). The network returns logits; the sigmoid / softmax belongs to the loss.

Layer indexing (``list_layers`` / ``ZooClassifier.layers`` / ``freeze_before``)
-----------------------------------------------------------------------------
Falconi et al. fine tune "from layer gamma": Keras layers ``0 .. gamma - 1`` keep their
ImageNet weights, layers ``gamma ..`` train (``vgg16-10-FT``, ``vgg16-8-FT``,
``vgg19-17-FT``). Here every model is an ordered list of layers; index 0 is the input
(with the parameter-free grey -> RGB repeat and normalisation), the trunk's layers follow
in forward order, then the head's:

* VGG (exactly Keras' ``VGG16`` / ``VGG19`` indexing): one index per convolution (with its
  ReLU, and its batch norm in the ``_bn`` variants, which Keras lacks) named
  ``block<b>_conv<i>``, and one per max-pool named ``block<b>_pool``. VGG16: 1–2
  ``block1_conv1/2``, 3 ``block1_pool``, 4–5, 6 ``block2_pool``, 7–9 ``block3_conv1..3``,
  10 ``block3_pool``, 11–13, 14 ``block4_pool``, 15–17, 18 ``block5_pool``; so gamma = 10
  trains blocks 4 and 5 and the head (block3_pool has no weights), gamma = 8 also trains
  ``block3_conv2`` and ``block3_conv3``. VGG19: 17 = ``block5_conv1``.
* ResNet: 1 ``conv1`` (7 x 7 stem convolution + batch norm + ReLU), 2 ``pool1`` (max-pool),
  then one index per residual unit, ``conv<s>_block<u>`` (Keras' stage names: ``conv2`` =
  MONAI/torchvision ``layer1``, …, ``conv5`` = ``layer4``). ResNet50: 3–5 ``conv2_block1..3``,
  6–9 ``conv3``, 10–15 ``conv4``, 16–18 ``conv5_block1..3``. Keras counts every convolution,
  batch norm, activation, padding and addition as a layer (175 for ResNet50), so the paper's
  ResNet gammas (e.g. ``resnet-50-160-FT``, ``-173-FT``: inside ``conv5_block2`` / ``block3``,
  Keras indices 143–174 being conv5) have no exact counterpart; choose the unit instead.
* DenseNet (Keras' DenseNet names): 1 ``conv1`` (conv0 + norm0 + relu0), 2 ``pool1``, then
  one index per dense layer, ``conv<s>_block<j>``, each dense block followed by its
  transition ``pool<s>`` (batch norm, ReLU, 1 x 1 convolution, average pool as one index),
  and finally ``bn`` (norm5 and the final ReLU). DenseNet121: 3–8 ``conv2_block1..6``,
  9 ``pool2``, 10–21 ``conv3``, 22 ``pool3``, 23–46 ``conv4``, 47 ``pool4``, 48–63 ``conv5``,
  64 ``bn``.
* EfficientNet (Keras' EfficientNet names): 1 ``stem_conv`` (3 x 3 stride-2 convolution +
  batch norm + swish), then one index per MBConv block, ``block<s><letter>`` (``block1a``,
  ``block2a``, ``block2b``, …; the whole inverted bottleneck with its squeeze-excitation is
  one index), then ``top_conv`` (1 x 1 convolution to 1280 x width channels + batch norm +
  swish). B0: 2 ``block1a``, 3–4 ``block2a/b``, 5–6, 7–9, 10–12, 13–16, 17 ``block7a``,
  18 ``top_conv``.
* Heads, after the trunk: ``falconi`` = ``gap`` (global average pooling + flatten), ``fc``
  (linear 4096 + ReLU), ``dropout``, ``classifier`` (linear to ``num_outputs``) — the Keras
  model's ``GlobalAveragePooling2D``, ``Dense``, ``Dropout``, ``Dense``; ``linear`` = ``gap``,
  ``dropout``, ``classifier``. ``ZooClassifier.head_start`` is the index of ``gap``:
  ``freeze_before(head_start)`` is transfer learning ("-TL", only the head trains).

:meth:`ZooClassifier.freeze_before` sets ``requires_grad`` per layer (``< gamma`` frozen,
``>= gamma`` trainable) and, by default, keeps the batch norms of the frozen layers in eval
mode even when the model is put in training mode, so their running statistics stay the
ImageNet ones and small fine-tuning batches normalise with them (TF 2 Keras behaviour for
non-trainable batch norms; ``bn_eval=False`` gives the TF 1 behaviour, batch statistics in
training).

Example:
    >>> import torch
    >>> model = build_zoo_classifier("vgg16")
    >>> model(torch.rand(2, 1, 64, 64)).shape
    torch.Size([2, 1])
    >>> [layer.name for layer in model.layers()[9:12]]
    ['block3_conv3', 'block3_pool', 'block4_conv1']
    >>> model.freeze_before(10)[:2]
    ['block3_pool', 'block4_conv1']
    >>> model.model_name(10)
    'vgg16-10-FT'
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from string import ascii_lowercase
from typing import NamedTuple, TypeAlias

import torch
from monai.networks.nets import EfficientNetBN
from torch import nn

from monai_mammo.exceptions import MammoConfigError, MammoDataError
from monai_mammo.networks.patch_classifier import DenseNetTrunk, ResNetTrunk, build_trunk
from monai_mammo.networks.vgg import VGG
from monai_mammo.networks.weights import IMAGENET_MEAN, IMAGENET_STD, load_torchvision_state_dict

__all__ = [
    "ZOO_BACKBONES",
    "ZOO_HEADS",
    "ZooTrunk",
    "ChannelNormalize",
    "EfficientNetTrunk",
    "FalconiHead",
    "GreyToRGB",
    "LayerInfo",
    "LinearHead",
    "ZooClassifier",
    "build_zoo_classifier",
    "list_layers",
    "trunk_output_size",
]

_EFFICIENTNETS = ("efficientnet-b0", "efficientnet-b1", "efficientnet-b2")

#: Backbone names accepted by :class:`ZooClassifier`.
ZOO_BACKBONES: tuple[str, ...] = (
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
    "resnet50",
    "resnet101",
    "resnet152",
    "densenet121",
    "densenet169",
    "densenet201",
    *_EFFICIENTNETS,
)
#: Head names accepted by :class:`ZooClassifier`.
ZOO_HEADS: tuple[str, ...] = ("falconi", "linear")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerInfo:
    """One fine-tuning layer of a :class:`ZooClassifier` (see the module docs for the indexing).

    Attributes:
        index: position from the input (0) to the classification layer.
        name: Keras-style name (``block3_pool``, ``conv5_block3``, ``block2a``, ``fc``, ...).
        kind: ``input``, ``conv``, ``pool``, ``residual``, ``dense``, ``transition``, ``norm``,
            ``mbconv``, ``fc``, ``dropout`` or ``linear``.
        n_params: number of parameters (0 for pooling, dropout and the input).
    """

    index: int
    name: str
    kind: str
    n_params: int


class _Layer(NamedTuple):
    name: str
    kind: str
    modules: list[nn.Module]


class GreyToRGB(nn.Module):
    """Repeat a one-channel batch ``(B, 1, H, W)`` to three channels (a view, no copy).

    Raises:
        MammoDataError: the input does not have exactly one channel.

    Example:
        >>> GreyToRGB()(torch.zeros(2, 1, 4, 4)).shape
        torch.Size([2, 3, 4, 4])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x`` expanded to ``(B, 3, H, W)``."""
        if x.ndim != 4 or x.shape[1] != 1:
            raise MammoDataError(f"expected a grey batch of shape (B, 1, H, W), got {tuple(x.shape)}")
        return x.expand(-1, 3, -1, -1)


class ChannelNormalize(nn.Module):
    """``(x - mean[c]) / std[c]`` per channel; ImageNet's statistics for inputs in [0, 1] by default.

    The statistics are non-persistent buffers: they follow the model's device but are not
    part of its state dict.

    Args:
        mean: per-channel mean.
        std: per-channel standard deviation (all > 0).

    Raises:
        MammoConfigError: ``mean`` and ``std`` differ in length or a ``std`` is not positive.

    Example:
        >>> ChannelNormalize()(torch.full((1, 3, 1, 1), 0.485))[0, 0, 0, 0].item()
        0.0
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise MammoConfigError(f"need as many means as positive stds, got mean={mean}, std={std}")
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the normalised batch ``(B, C, H, W)``."""
        return (x - self.mean) / self.std


class EfficientNetTrunk(nn.Module):
    """The feature extractor of a 2-D MONAI ``EfficientNetBN`` (stem, MBConv blocks, head conv), stride 32.

    MONAI's classifier (average pool, dropout, linear) is dropped. The submodules keep MONAI's
    names (``_conv_stem``, ``_bn0``, ``_blocks.<stage>.<block>``, ``_conv_head``, ``_bn1``).
    MONAI pads TensorFlow-style ("same") with paddings fixed for the variant's native size
    (224 / 240 / 260): other sizes run, and for sizes divisible by 32 the padding is exactly
    "same"; otherwise a stride-2 layer may pad one pixel less than TensorFlow would.

    Args:
        variant: ``"efficientnet-b0"``, ``"efficientnet-b1"`` or ``"efficientnet-b2"``.
        in_channels: input channels.

    Raises:
        MammoConfigError: unsupported variant.

    Example:
        >>> EfficientNetTrunk("efficientnet-b0").out_channels
        1280
    """

    def __init__(self, variant: str = "efficientnet-b0", in_channels: int = 3) -> None:
        super().__init__()
        if variant not in _EFFICIENTNETS:
            raise MammoConfigError(
                f"unsupported EfficientNet {variant!r}; expected one of {list(_EFFICIENTNETS)}"
            )
        net = EfficientNetBN(
            variant, pretrained=False, spatial_dims=2, in_channels=in_channels, num_classes=1
        )
        self.variant = variant
        self.in_channels = in_channels
        self._conv_stem_padding, self._conv_stem, self._bn0 = net._conv_stem_padding, net._conv_stem, net._bn0
        self._blocks = net._blocks
        self._conv_head_padding, self._conv_head, self._bn1 = net._conv_head_padding, net._conv_head, net._bn1
        self._swish = net._swish
        self.out_channels: int = net._bn1.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the feature map ``(B, out_channels, ~H / 32, ~W / 32)``."""
        x = self._swish(self._bn0(self._conv_stem(self._conv_stem_padding(x))))
        x = self._blocks(x)
        return self._swish(self._bn1(self._conv_head(self._conv_head_padding(x))))

    def output_size(self, spatial_size: Sequence[int]) -> tuple[int, int]:
        """Feature-map size for an ``(H, W)`` input (see :func:`trunk_output_size`).

        Args:
            spatial_size: input height and width.

        Returns:
            the output height and width.
        """
        return trunk_output_size(self.variant, spatial_size, self.in_channels)


#: The trunks a :class:`ZooClassifier` uses.
ZooTrunk: TypeAlias = VGG | ResNetTrunk | DenseNetTrunk | EfficientNetTrunk


def _check_backbone(backbone: str) -> str:
    name = backbone.lower()
    if name not in ZOO_BACKBONES:
        raise MammoConfigError(f"unknown zoo backbone {backbone!r}; expected one of {list(ZOO_BACKBONES)}")
    return name


def _build_zoo_trunk(backbone: str, in_channels: int) -> ZooTrunk:
    if backbone.startswith("efficientnet"):
        return EfficientNetTrunk(backbone, in_channels)
    return build_trunk(backbone, in_channels)


def trunk_output_size(backbone: str, spatial_size: Sequence[int], in_channels: int = 3) -> tuple[int, int]:
    """Exact feature-map size of a zoo trunk for an ``(H, W)`` input.

    A fresh trunk of the same configuration runs on ``torch.device("meta")`` tensors in eval
    mode: shapes only, no memory for activations, no arithmetic, so it is cheap even for
    ResNet152 at 674 x 674, and it fails exactly where the real network would (a feature map
    smaller than a kernel, a fixed-size layer).

    Args:
        backbone: one of :data:`ZOO_BACKBONES`.
        spatial_size: input height and width.
        in_channels: input channels of the trunk.

    Returns:
        the output height and width (21 x 21 for VGG16 at 674 x 674).

    Raises:
        MammoConfigError: unknown backbone, or the trunk cannot take an input of that size.

    Example:
        >>> trunk_output_size("resnet50", (674, 674))
        (22, 22)
    """
    name = _check_backbone(backbone)
    h, w = (int(s) for s in spatial_size)
    with torch.device("meta"):
        trunk = _build_zoo_trunk(name, in_channels).eval()
        try:
            out = trunk(torch.empty(1, in_channels, h, w))
        except (RuntimeError, ValueError) as exc:  # negative sizes, feature maps smaller than a kernel
            raise MammoConfigError(f"{name} cannot take {h} x {w} inputs: {exc}") from exc
    return int(out.shape[-2]), int(out.shape[-1])


def _vgg_layers(trunk: VGG) -> list[_Layer]:
    layers: list[_Layer] = []
    block, conv = 1, 0
    for module in trunk.features:
        if isinstance(module, nn.Conv2d):
            conv += 1
            layers.append(_Layer(f"block{block}_conv{conv}", "conv", [module]))
        elif isinstance(module, nn.MaxPool2d):
            layers.append(_Layer(f"block{block}_pool", "pool", [module]))
            block, conv = block + 1, 0
        else:  # batch norm, ReLU: part of the preceding convolution
            layers[-1].modules.append(module)
    return layers


def _resnet_layers(trunk: ResNetTrunk) -> list[_Layer]:
    layers = [
        _Layer("conv1", "conv", [trunk.conv1, trunk.bn1, trunk.act]),
        _Layer("pool1", "pool", [trunk.maxpool]),
    ]
    for stage, units in enumerate((trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4), start=2):
        layers += [
            _Layer(f"conv{stage}_block{u}", "residual", [unit]) for u, unit in enumerate(units, start=1)
        ]
    return layers


def _densenet_layers(trunk: DenseNetTrunk) -> list[_Layer]:
    features = dict(trunk.features.named_children())
    layers = [
        _Layer("conv1", "conv", [features["conv0"], features["norm0"], features["relu0"]]),
        _Layer("pool1", "pool", [features["pool0"]]),
    ]
    for name, module in features.items():
        if name.startswith("denseblock"):
            stage = int(name[len("denseblock") :]) + 1
            layers += [
                _Layer(f"conv{stage}_block{j}", "dense", [layer])
                for j, layer in enumerate(module.children(), 1)
            ]
        elif name.startswith("transition"):
            layers.append(_Layer(f"pool{int(name[len('transition') :]) + 1}", "transition", [module]))
    layers.append(_Layer("bn", "norm", [features["norm5"]]))
    return layers


def _efficientnet_layers(trunk: EfficientNetTrunk) -> list[_Layer]:
    layers = [_Layer("stem_conv", "conv", [trunk._conv_stem_padding, trunk._conv_stem, trunk._bn0])]
    for stage, blocks in enumerate(trunk._blocks.children(), start=1):
        layers += [
            _Layer(f"block{stage}{ascii_lowercase[j]}", "mbconv", [block])
            for j, block in enumerate(blocks.children())
        ]
    layers.append(_Layer("top_conv", "conv", [trunk._conv_head_padding, trunk._conv_head, trunk._bn1]))
    return layers


def _trunk_layers(trunk: ZooTrunk) -> list[_Layer]:
    if isinstance(trunk, VGG):
        return _vgg_layers(trunk)
    if isinstance(trunk, ResNetTrunk):
        return _resnet_layers(trunk)
    if isinstance(trunk, DenseNetTrunk):
        return _densenet_layers(trunk)
    return _efficientnet_layers(trunk)


def _check_dropout(dropout: float) -> None:
    if not 0.0 <= dropout < 1.0:
        raise MammoConfigError(f"dropout must be in [0, 1), got {dropout}")


class FalconiHead(nn.Module):
    """Falconi et al.'s transfer-learning top: GAP -> FC ``hidden`` -> ReLU -> dropout -> linear (logits).

    Args:
        in_channels: channels of the trunk's feature map.
        num_outputs: logits (1 for benign vs malignant with ``BCEWithLogitsLoss``).
        hidden: units of the fully connected layer (4096 in the paper).
        dropout: dropout probability (0.2 in the paper).

    Raises:
        MammoConfigError: a size < 1 or a dropout outside [0, 1).

    Example:
        >>> FalconiHead(512)(torch.zeros(2, 512, 7, 7)).shape
        torch.Size([2, 1])
    """

    def __init__(
        self, in_channels: int, num_outputs: int = 1, hidden: int = 4096, dropout: float = 0.2
    ) -> None:
        super().__init__()
        if min(in_channels, num_outputs, hidden) < 1:
            raise MammoConfigError(
                f"in_channels, num_outputs and hidden must be >= 1, got {in_channels}, {num_outputs}, {hidden}"
            )
        _check_dropout(dropout)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_channels, hidden)
        self.act = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(B, num_outputs)`` for a feature map ``(B, in_channels, h, w)``."""
        x = self.act(self.fc(self.flatten(self.pool(x))))
        return self.classifier(self.dropout(x))

    def _layers(self) -> list[_Layer]:
        return [
            _Layer("gap", "pool", [self.pool, self.flatten]),
            _Layer("fc", "fc", [self.fc, self.act]),
            _Layer("dropout", "dropout", [self.dropout]),
            _Layer("classifier", "linear", [self.classifier]),
        ]


class LinearHead(nn.Module):
    """GAP -> dropout -> linear (logits): the head of Falconi et al.'s ``-FT`` models but VGG16-8-FT.

    Args:
        in_channels: channels of the trunk's feature map.
        num_outputs: logits.
        dropout: dropout probability.

    Raises:
        MammoConfigError: a size < 1 or a dropout outside [0, 1).

    Example:
        >>> LinearHead(512, num_outputs=2)(torch.zeros(2, 512, 7, 7)).shape
        torch.Size([2, 2])
    """

    def __init__(self, in_channels: int, num_outputs: int = 1, dropout: float = 0.2) -> None:
        super().__init__()
        if min(in_channels, num_outputs) < 1:
            raise MammoConfigError(
                f"in_channels and num_outputs must be >= 1, got {in_channels}, {num_outputs}"
            )
        _check_dropout(dropout)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(in_channels, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(B, num_outputs)`` for a feature map ``(B, in_channels, h, w)``."""
        return self.classifier(self.dropout(self.flatten(self.pool(x))))

    def _layers(self) -> list[_Layer]:
        return [
            _Layer("gap", "pool", [self.pool, self.flatten]),
            _Layer("dropout", "dropout", [self.dropout]),
            _Layer("classifier", "linear", [self.classifier]),
        ]


def _unique_params(modules: Iterable[nn.Module]) -> list[nn.Parameter]:
    seen: dict[int, nn.Parameter] = {}
    for module in modules:
        for p in module.parameters():
            seen.setdefault(id(p), p)
    return list(seen.values())


class ZooClassifier(nn.Module):
    """[grey -> RGB] -> [ImageNet normalisation] -> trunk -> head, with Keras-like layer indices.

    Args:
        backbone: one of :data:`ZOO_BACKBONES`.
        head: ``"falconi"`` (:class:`FalconiHead`) or ``"linear"`` (:class:`LinearHead`).
        num_outputs: logits (1 for a binary task with ``BCEWithLogitsLoss``).
        in_channels: channels of the input batch.
        grey_to_rgb: repeat the (single) input channel to the 3 channels of an ImageNet trunk;
            needs ``in_channels=1``.
        imagenet_norm: normalise with :data:`~monai_mammo.networks.weights.IMAGENET_MEAN` /
            ``IMAGENET_STD`` (inputs scaled to [0, 1]); needs a 3-channel trunk input.
        dropout: dropout probability of the head.

    Raises:
        MammoConfigError: unknown backbone or head, ``num_outputs`` or ``in_channels`` < 1,
            ``grey_to_rgb`` with ``in_channels`` != 1, ``imagenet_norm`` without 3 channels, or
            a dropout outside [0, 1).

    Attributes:
        backbone: the backbone name.
        head_type: the head name.
        preprocess: ``nn.Sequential`` of the optional :class:`GreyToRGB` and :class:`ChannelNormalize`.
        trunk: the convolutional trunk (e.g. the Grad-CAM target ``"trunk"``).
        head: the head.
        trunk_in_channels: channels the trunk receives (3 after ``grey_to_rgb``).

    Example:
        >>> import torch
        >>> model = ZooClassifier("densenet121", head="linear", imagenet_norm=True)
        >>> model(torch.rand(2, 1, 64, 64)).shape
        torch.Size([2, 1])
        >>> model.model_name()
        'densenet121-TL'
    """

    def __init__(
        self,
        backbone: str,
        head: str = "falconi",
        num_outputs: int = 1,
        in_channels: int = 1,
        grey_to_rgb: bool = True,
        imagenet_norm: bool = False,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self._bn_frozen_before = 0
        self.backbone = _check_backbone(backbone)
        if head not in ZOO_HEADS:
            raise MammoConfigError(f"unknown head {head!r}; expected one of {list(ZOO_HEADS)}")
        if in_channels < 1:
            raise MammoConfigError(f"in_channels must be >= 1, got {in_channels}")
        if grey_to_rgb and in_channels != 1:
            raise MammoConfigError(
                f"grey_to_rgb needs in_channels=1, got {in_channels} (set grey_to_rgb=False)"
            )
        self.trunk_in_channels = 3 if grey_to_rgb else in_channels
        if imagenet_norm and self.trunk_in_channels != 3:
            raise MammoConfigError(
                f"imagenet_norm needs 3 trunk input channels (grey_to_rgb or in_channels=3), got {in_channels}"
            )
        self.head_type = head
        steps: list[nn.Module] = ([GreyToRGB()] if grey_to_rgb else []) + (
            [ChannelNormalize()] if imagenet_norm else []
        )
        self.preprocess = nn.Sequential(*steps)
        self.trunk: ZooTrunk = _build_zoo_trunk(self.backbone, self.trunk_in_channels)
        channels = self.trunk.out_channels
        self.head: FalconiHead | LinearHead = (
            FalconiHead(channels, num_outputs, dropout=dropout)
            if head == "falconi"
            else LinearHead(channels, num_outputs, dropout=dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(B, num_outputs)`` for a batch ``(B, in_channels, H, W)``."""
        return self.head(self.trunk(self.preprocess(x)))

    def _layer_table(self) -> list[_Layer]:
        return [
            _Layer("input", "input", [self.preprocess]),
            *_trunk_layers(self.trunk),
            *self.head._layers(),
        ]

    def layers(self) -> list[LayerInfo]:
        """The fine-tuning layers from the input (index 0) to the classifier (see the module docs).

        Returns:
            one :class:`LayerInfo` per index.
        """
        return [
            LayerInfo(index, layer.name, layer.kind, sum(p.numel() for p in _unique_params(layer.modules)))
            for index, layer in enumerate(self._layer_table())
        ]

    @property
    def head_start(self) -> int:
        """Index of the head's first layer (``gap``): ``freeze_before(head_start)`` = transfer learning."""
        return len(self._layer_table()) - len(self.head._layers())

    def _check_gamma(self, gamma: int) -> None:
        n_layers = len(self._layer_table())
        if isinstance(gamma, bool) or not isinstance(gamma, int) or not 0 <= gamma <= n_layers:
            raise MammoConfigError(
                f"gamma must be an int in [0, {n_layers}] for {self.backbone}, got {gamma!r}"
            )

    def freeze_before(self, gamma: int, bn_eval: bool = True) -> list[str]:
        """Freeze the layers before index ``gamma``, train those from ``gamma`` on (Falconi's FT).

        Args:
            gamma: first trainable layer index; 0 trains everything, :attr:`head_start` only
                the head, ``len(layers())`` nothing.
            bn_eval: keep the batch norms of the frozen layers in eval mode (stored running
                statistics), also after ``model.train()``; False lets them use batch
                statistics in training mode.

        Returns:
            the names of the layers at index >= ``gamma`` (parameter-free ones included).

        Raises:
            MammoConfigError: ``gamma`` is not an int in ``[0, len(layers())]``.
        """
        self._check_gamma(gamma)
        table = self._layer_table()
        for index, layer in enumerate(table):
            for param in _unique_params(layer.modules):
                param.requires_grad_(index >= gamma)
        self._bn_frozen_before = gamma if bn_eval else 0
        self.train(self.training)
        return [layer.name for layer in table[gamma:]]

    def train(self, mode: bool = True) -> ZooClassifier:
        """Set the training mode; batch norms frozen by :meth:`freeze_before` stay in eval mode.

        Args:
            mode: training (True) or evaluation (False) mode.

        Returns:
            this model.
        """
        super().train(mode)
        for layer in self._layer_table()[: self._bn_frozen_before]:
            for module in layer.modules:
                for sub in module.modules():
                    if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                        sub.train(False)
        return self

    def model_name(self, gamma: int | None = None) -> str:
        """Falconi et al.'s model name: ``"<backbone>-TL"`` or ``"<backbone>-<gamma>-FT"``.

        Args:
            gamma: the fine-tuning index; None for transfer learning.

        Returns:
            e.g. ``"vgg16-TL"``, ``"vgg16-10-FT"``.

        Raises:
            MammoConfigError: ``gamma`` outside ``[0, len(layers())]``.
        """
        if gamma is None:
            return f"{self.backbone}-TL"
        self._check_gamma(gamma)
        return f"{self.backbone}-{gamma}-FT"

    def feature_map_size(self, spatial_size: Sequence[int]) -> tuple[int, int]:
        """The trunk's exact output size for ``(H, W)`` inputs (see :func:`trunk_output_size`).

        Args:
            spatial_size: input height and width.

        Returns:
            the feature map's height and width.

        Raises:
            MammoConfigError: the trunk cannot take inputs of that size.
        """
        return trunk_output_size(self.backbone, spatial_size, self.trunk_in_channels)


def build_zoo_classifier(
    backbone: str,
    head: str = "falconi",
    num_outputs: int = 1,
    in_channels: int = 1,
    grey_to_rgb: bool = True,
    imagenet_norm: bool = False,
    dropout: float = 0.2,
    weights: str | os.PathLike | None = None,
) -> ZooClassifier:
    """Build a :class:`ZooClassifier`, optionally with ImageNet weights from a local file.

    Args:
        backbone: one of :data:`ZOO_BACKBONES`.
        head: ``"falconi"`` or ``"linear"``.
        num_outputs: logits.
        in_channels: channels of the input batch.
        grey_to_rgb: repeat a grey input to 3 channels.
        imagenet_norm: ImageNet normalisation of [0, 1] inputs.
        dropout: head dropout.
        weights: a torchvision-style state-dict file of the same architecture (torchvision's
            ``resnet50``, ``vgg16_bn``, ``densenet121``, ``efficientnet_b0``, ... naming),
            loaded into the trunk strictly by
            :func:`~monai_mammo.networks.weights.load_torchvision_state_dict` (the ImageNet
            classifier is skipped; the head stays randomly initialised).

    Returns:
        the model.

    Raises:
        MammoConfigError: invalid arguments (see :class:`ZooClassifier`).
        MammoDataError: the weight file is unreadable or does not fit the trunk.

    Example:
        >>> model = build_zoo_classifier("resnet50", weights="resnet50-imagenet.pth")  # doctest: +SKIP
    """
    model = ZooClassifier(backbone, head, num_outputs, in_channels, grey_to_rgb, imagenet_norm, dropout)
    if weights is not None:
        report = load_torchvision_state_dict(model, weights, arch=model.backbone)
        logger.info(
            "%s: loaded %d tensors from %s (%d adapted to grey, %d skipped)",
            model.backbone,
            len(report.loaded),
            report.source,
            len(report.adapted),
            len(report.skipped),
        )
    return model


def list_layers(
    backbone: str,
    head: str = "falconi",
    num_outputs: int = 1,
    in_channels: int = 1,
    grey_to_rgb: bool = True,
) -> list[LayerInfo]:
    """The fine-tuning layers of a zoo model, without allocating its weights (built on the meta device).

    Args:
        backbone: one of :data:`ZOO_BACKBONES`.
        head: ``"falconi"`` or ``"linear"``.
        num_outputs: logits.
        in_channels: channels of the input batch.
        grey_to_rgb: repeat a grey input to 3 channels (changes the first convolution's size).

    Returns:
        ``ZooClassifier(...).layers()``.

    Raises:
        MammoConfigError: invalid arguments.

    Example:
        >>> list_layers("vgg16")[10]
        LayerInfo(index=10, name='block3_pool', kind='pool', n_params=0)
    """
    with torch.device("meta"):
        model = ZooClassifier(backbone, head, num_outputs, in_channels, grey_to_rgb)
    return model.layers()
