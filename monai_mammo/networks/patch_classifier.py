"""Patch classifiers: a convolutional trunk, global average pooling, dropout and a linear layer.

The patch classifier of Shen et al. (ResNet50 or VGG16 without the fully connected top ->
global average pool -> Dense(5)), generalised to the backbones that the ROI / patch papers
compare (ResNet 18–152, VGG 11–19 with or without batch norm, DenseNet 121/169/201). The
trunks are MONAI networks (ResNet, DenseNet) or our own :class:`~monai_mammo.networks.vgg.VGG`,
built without their classification tops so that the same trunk can later be applied to a
whole mammogram (:mod:`monai_mammo.networks.whole_image`). The network returns logits;
softmax belongs to the loss or the post-processing.

Staged fine tuning (``layer_groups`` / ``set_trainable``): the trainable modules form an
ordered list of named groups, from input to output:

* ResNet: ``stem`` (conv1 + bn1), then one group per residual unit (``layer1.0`` …
  ``layer4.2`` for ResNet50: 16 units), then ``head``.
* VGG: one group per convolution (``conv1_1`` … ``conv5_3`` for VGG16; each with its batch
  norm, ReLU and following max-pool), then ``head``.
* DenseNet: ``stem`` (conv0 + norm0), ``denseblock1``, ``transition1``, …, ``denseblock4``
  (with the final norm5), then ``head``.

"Top N" means the last N groups. The paper unfroze the top 46 Keras layers of ResNet50 and
11 of VGG16 in stage 2. Counted in Keras layers, 46 is the head plus the last stage (conv5:
32 layers) plus the last unit of conv4 (10 layers), i.e. ``top_n=5`` here (``layer3.5``,
``layer4.0``–``layer4.2``, ``head``); 11 is the head plus the last two VGG blocks (4 layers
each including the pool), i.e. ``top_n=7`` here (``conv4_1`` … ``conv5_3``, ``head``). These
are :data:`PAPER_TOP_N`; stage 1 ("only the last layer") is ``top_n=1`` and stage 3 is
``top_n=None`` (everything).

Example:
    >>> import torch
    >>> model = PatchClassifier("resnet50", num_classes=5)
    >>> model(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 5])
    >>> model.set_trainable(PAPER_TOP_N["resnet50"])
    ['layer3.5', 'layer4.0', 'layer4.1', 'layer4.2', 'head']
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import TypeAlias, cast

import torch
from monai.networks.nets import (
    DenseNet121,
    DenseNet169,
    DenseNet201,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
)
from torch import nn

from monai_mammo.exceptions import MammoConfigError
from monai_mammo.networks.vgg import VGG

__all__ = [
    "PAPER_TOP_N",
    "PATCH_BACKBONES",
    "DenseNetTrunk",
    "PatchClassifier",
    "ResNetTrunk",
    "Trunk",
    "build_trunk",
]

_RESNETS = {18: resnet18, 34: resnet34, 50: resnet50, 101: resnet101, 152: resnet152}
_DENSENETS = {121: DenseNet121, 169: DenseNet169, 201: DenseNet201}
_VGGS = ("vgg11", "vgg13", "vgg16", "vgg19")

#: Backbone names accepted by :class:`PatchClassifier` and :func:`build_trunk`.
PATCH_BACKBONES: tuple[str, ...] = (
    *(f"resnet{d}" for d in _RESNETS),
    *_VGGS,
    *(f"{v}_bn" for v in _VGGS),
    *(f"densenet{d}" for d in _DENSENETS),
)

#: ``top_n`` for stage 2 of the paper's patch schedule (46 Keras layers of ResNet50, 11 of VGG16).
PAPER_TOP_N: dict[str, int] = {"resnet50": 5, "vgg16": 7, "vgg16_bn": 7}


def _halve_ceil(n: int) -> int:
    # Output size of a stride-2 convolution / pooling with "same"-style padding (k=3,p=1 or k=7,p=3).
    return (n + 1) // 2


class ResNetTrunk(nn.Module):
    """The convolutional part of a 2-D MONAI ResNet (stem, max-pool, layer1–layer4), stride 32.

    Built like torchvision's ResNet (7 x 7 stride-2 stem, projection shortcuts without bias)
    so that ImageNet weights in torchvision naming load one to one (keys ``conv1.weight``,
    ``layer1.0.conv1.weight``, ...).

    Args:
        depth: 18, 34, 50, 101 or 152.
        in_channels: input channels.
        widen_factor: channel multiplier of every stage (1.0 = the standard network, whose
            ImageNet weights load; e.g. 0.25 for a fast CPU demo trained from scratch).

    Raises:
        MammoConfigError: unsupported depth or a non-positive width.

    Example:
        >>> ResNetTrunk(50).output_size((1152, 896))
        (36, 28)
    """

    def __init__(self, depth: int = 50, in_channels: int = 3, widen_factor: float = 1.0) -> None:
        super().__init__()
        if depth not in _RESNETS:
            raise MammoConfigError(f"unsupported ResNet depth {depth}; expected one of {sorted(_RESNETS)}")
        if widen_factor <= 0:
            raise MammoConfigError(f"widen_factor must be > 0, got {widen_factor}")
        net = _RESNETS[depth](
            pretrained=False,
            spatial_dims=2,
            n_input_channels=in_channels,
            conv1_t_size=7,
            conv1_t_stride=2,
            shortcut_type="B",
            bias_downsample=False,
            feed_forward=False,
            widen_factor=widen_factor,
        )
        self.conv1, self.bn1, self.act, self.maxpool = net.conv1, net.bn1, net.act, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.out_channels = int(512 * widen_factor) * (4 if depth >= 50 else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the feature map ``(B, out_channels, ceil(H / 32), ceil(W / 32))``."""
        x = self.maxpool(self.act(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def output_size(self, spatial_size: Sequence[int]) -> tuple[int, int]:
        """Feature-map size for an ``(H, W)`` input: five stride-2 stages, each ``ceil(n / 2)``.

        Args:
            spatial_size: input height and width.

        Returns:
            the output height and width (36 x 28 for 1152 x 896).
        """
        h, w = (int(s) for s in spatial_size)
        for _ in range(5):
            h, w = _halve_ceil(h), _halve_ceil(w)
        return h, w

    def block_groups(self) -> list[tuple[str, nn.Module]]:
        """``stem`` then one group per residual unit, from input to output."""
        groups: list[tuple[str, nn.Module]] = [("stem", nn.ModuleList([self.conv1, self.bn1]))]
        for stage in ("layer1", "layer2", "layer3", "layer4"):
            for index, unit in enumerate(getattr(self, stage)):
                groups.append((f"{stage}.{index}", unit))
        return groups


class DenseNetTrunk(nn.Module):
    """The ``features`` of a 2-D MONAI DenseNet followed by the final ReLU, stride 32.

    Args:
        depth: 121, 169 or 201.
        in_channels: input channels.

    Raises:
        MammoConfigError: unsupported depth.

    Example:
        >>> DenseNetTrunk(121).out_channels
        1024
    """

    def __init__(self, depth: int = 121, in_channels: int = 3) -> None:
        super().__init__()
        if depth not in _DENSENETS:
            raise MammoConfigError(
                f"unsupported DenseNet depth {depth}; expected one of {sorted(_DENSENETS)}"
            )
        net = _DENSENETS[depth](spatial_dims=2, in_channels=in_channels, out_channels=1, pretrained=False)
        self.features = net.features
        self.out_channels = cast(nn.Linear, net.class_layers.out).in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the feature map ``(B, out_channels, ~H / 32, ~W / 32)``."""
        return torch.relu(self.features(x))

    def output_size(self, spatial_size: Sequence[int]) -> tuple[int, int]:
        """Feature-map size for an ``(H, W)`` input (stem and pool: ``ceil(n/2)``; transitions: ``n // 2``).

        Args:
            spatial_size: input height and width.

        Returns:
            the output height and width.
        """
        h, w = (int(s) for s in spatial_size)
        for _ in range(2):
            h, w = _halve_ceil(h), _halve_ceil(w)
        for _ in range(3):
            h, w = h // 2, w // 2
        return h, w

    def block_groups(self) -> list[tuple[str, nn.Module]]:
        """``stem`` then each dense block and transition (norm5 joins the last block)."""
        children = dict(self.features.named_children())
        groups: list[tuple[str, nn.Module]] = [
            ("stem", nn.ModuleList([children["conv0"], children["norm0"]]))
        ]
        for name, module in children.items():
            if name.startswith(("denseblock", "transition")):
                groups.append((name, module))
        last_name, last_block = groups[-1]
        groups[-1] = (last_name, nn.ModuleList([last_block, children["norm5"]]))
        return groups


#: The trunks :func:`build_trunk` makes; each has ``out_channels``, ``output_size`` and ``block_groups``.
Trunk: TypeAlias = ResNetTrunk | DenseNetTrunk | VGG


def build_trunk(backbone: str, in_channels: int = 3, widen_factor: float = 1.0) -> Trunk:
    """Build a convolutional trunk by name.

    Args:
        backbone: one of :data:`PATCH_BACKBONES` (``"resnet50"``, ``"vgg16"``, ``"vgg16_bn"``, ...).
        in_channels: input channels (1 or 3).
        widen_factor: ResNet channel multiplier (1.0 only for the other families).

    Returns:
        the trunk, with ``out_channels``, ``output_size((H, W))`` and ``block_groups()``.

    Raises:
        MammoConfigError: unknown backbone or ``in_channels`` < 1.

    Example:
        >>> build_trunk("vgg16_bn", in_channels=1).out_channels
        512
    """
    if in_channels < 1:
        raise MammoConfigError(f"in_channels must be >= 1, got {in_channels}")
    name = backbone.lower()
    if name not in PATCH_BACKBONES:
        raise MammoConfigError(f"unknown backbone {backbone!r}; expected one of {list(PATCH_BACKBONES)}")
    if name.startswith("resnet"):
        return ResNetTrunk(int(name[len("resnet") :]), in_channels, widen_factor)
    if widen_factor != 1.0:
        raise MammoConfigError(f"widen_factor is only supported for ResNet backbones, not {backbone!r}")
    if name.startswith("densenet"):
        return DenseNetTrunk(int(name[len("densenet") :]), in_channels)
    depth = name[len("vgg") :].removesuffix("_bn")
    return VGG(depth, in_channels=in_channels, batch_norm=name.endswith("_bn"))


class PatchClassifier(nn.Module):
    """Trunk -> global average pooling -> dropout -> linear (logits).

    Args:
        backbone: one of :data:`PATCH_BACKBONES`; the paper used ``"resnet50"`` and ``"vgg16"``.
        num_classes: output classes (5 for background, calc_mal, calc_ben, mass_mal, mass_ben).
        in_channels: input channels (1 or 3).
        dropout: dropout probability before the linear layer.
        widen_factor: ResNet channel multiplier (see :class:`ResNetTrunk`).

    Raises:
        MammoConfigError: unknown backbone, ``num_classes`` < 1, ``in_channels`` < 1, or a
            dropout outside [0, 1).

    Attributes:
        trunk: the convolutional trunk (feature map ``(B, trunk_channels, h, w)``).
        head: ``nn.Sequential`` of ``pool``, ``flatten``, ``dropout``, ``fc`` (the ``nn.Linear``).
        trunk_channels: channels of the trunk's feature map.

    Example:
        >>> import torch
        >>> PatchClassifier("vgg16", in_channels=1)(torch.zeros(2, 1, 64, 64)).shape
        torch.Size([2, 5])
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        num_classes: int = 5,
        in_channels: int = 3,
        dropout: float = 0.0,
        widen_factor: float = 1.0,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise MammoConfigError(f"num_classes must be >= 1, got {num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise MammoConfigError(f"dropout must be in [0, 1), got {dropout}")
        self.backbone = backbone.lower()
        self.trunk: Trunk = build_trunk(self.backbone, in_channels, widen_factor)
        self.trunk_channels: int = self.trunk.out_channels
        self.head = nn.Sequential(
            OrderedDict(
                pool=nn.AdaptiveAvgPool2d(1),
                flatten=nn.Flatten(),
                dropout=nn.Dropout(dropout),
                fc=nn.Linear(self.trunk_channels, num_classes),
            )
        )

    @property
    def classifier(self) -> nn.Linear:
        """The final linear layer (``head.fc``)."""
        return cast(nn.Linear, self.head.fc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(B, num_classes)`` for patches ``(B, in_channels, H, W)``."""
        return self.head(self.trunk(x))

    def layer_groups(self) -> list[tuple[str, nn.Module]]:
        """The trainable groups from input to output, ending with ``head`` (see the module docs).

        Returns:
            ``[(name, module), ...]``; the modules are views of this model's submodules.
        """
        return [*self.trunk.block_groups(), ("head", self.head)]

    def set_trainable(self, top_n: int | None) -> list[str]:
        """Freeze every parameter except those of the last ``top_n`` layer groups.

        Only ``requires_grad`` changes: batch-norm running statistics of frozen groups still
        update in training mode (as in Keras 2.0, which the paper used).

        Args:
            top_n: number of groups to train, counted from the output (1 = the linear head
                only); ``None`` trains everything. See :data:`PAPER_TOP_N`.

        Returns:
            the names of the trainable groups.

        Raises:
            MammoConfigError: ``top_n`` negative.
        """
        groups = self.layer_groups()
        if top_n is None:
            top_n = len(groups)
        if top_n < 0:
            raise MammoConfigError(f"top_n must be >= 0 or None, got {top_n}")
        self.requires_grad_(False)
        trainable = groups[len(groups) - min(top_n, len(groups)) :]
        for _, module in trainable:
            module.requires_grad_(True)
        return [name for name, _ in trainable]
