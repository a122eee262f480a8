"""All-convolutional whole-image classifier built on a patch classifier's trunk (Shen et al.).

``h(M) = g(f(M))``: the patch classifier's convolutional trunk ``f`` is applied to the whole
mammogram (ResNet50: a 36 x 28 x 2048 map at 1152 x 896), two new top blocks ``g`` follow,
then global average pooling and a linear layer (logits; softmax in the loss). No heatmap sits
between trunk and top (the paper found it a bottleneck), and the network accepts any input
size.

Top blocks:

* ``top="resnet"``: each block ``(L, M, N, K)`` is ``[L-M-N] x K`` bottleneck units. The
  first unit downsamples: conv1x1(L, stride 2) -> BN -> ReLU, conv3x3(M) -> BN -> ReLU,
  conv1x1(N) -> BN, plus a projection shortcut conv1x1(N, stride 2) -> BN, add, ReLU; the
  other units have stride 1 and an identity shortcut. Default: the paper's best
  ``[512-512-1024] x 2`` twice (:data:`RESNET_TOP_BLOCKS`); its other best,
  ``[512-512-2048] x 1`` twice, is ``((512, 512, 2048, 1),) * 2``.
* ``top="vgg"``: each block ``(N, K)`` is K x (conv3x3(N) -> BN -> ReLU) then a 2 x 2
  max-pool. Default: the paper's best ``256 x 1`` then ``128 x 1`` (:data:`VGG_TOP_BLOCKS`).

New layers (top blocks and the linear layer) get He-normal initialisation (Keras
``he_normal``: fan-in, std ``sqrt(2 / fan_in)``, here not truncated), zero biases, and BN
weights 1. :meth:`WholeImageClassifier.new_parameters` and
:meth:`WholeImageClassifier.trunk_parameters` give the two parameter sets of the 2-stage
schedule (stage 1: new layers only, lr 1e-4, weight decay 0.001; stage 2: all, lr 1e-5,
weight decay 0.01).

Example:
    >>> import torch
    >>> from monai_mammo.networks.patch_classifier import PatchClassifier
    >>> patch = PatchClassifier("resnet50")
    >>> model = WholeImageClassifier.from_patch_classifier(patch, top="vgg").eval()
    >>> model(torch.zeros(1, 3, 128, 128)).shape
    torch.Size([1, 2])
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Literal

import torch
from torch import nn

from monai_mammo.exceptions import MammoConfigError
from monai_mammo.networks.patch_classifier import PatchClassifier

__all__ = ["RESNET_TOP_BLOCKS", "VGG_TOP_BLOCKS", "ResNetTopUnit", "WholeImageClassifier", "he_normal_"]

#: Paper's best ResNet top: two blocks of [512-512-1024] x 2 (L, M, N, K).
RESNET_TOP_BLOCKS: tuple[tuple[int, int, int, int], ...] = ((512, 512, 1024, 2), (512, 512, 1024, 2))
#: Paper's best VGG top: 256 x 1 then 128 x 1 (N, K).
VGG_TOP_BLOCKS: tuple[tuple[int, int], ...] = ((256, 1), (128, 1))


class ResNetTopUnit(nn.Module):
    """One bottleneck unit of a top block (stride on the first 1 x 1 convolution).

    Args:
        in_channels: input channels.
        depths: ``(L, M, N)``, the output channels of the 1x1, 3x3 and 1x1 convolutions.
        stride: 2 for the first unit of a block (with a projection shortcut), else 1.

    Example:
        >>> import torch
        >>> ResNetTopUnit(64, (32, 32, 128), stride=2)(torch.zeros(2, 64, 8, 8)).shape
        torch.Size([2, 128, 4, 4])
    """

    def __init__(self, in_channels: int, depths: Sequence[int], stride: int = 1) -> None:
        super().__init__()
        low, mid, out = depths
        self.conv1 = nn.Conv2d(in_channels, low, kernel_size=1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(low)
        self.conv2 = nn.Conv2d(low, mid, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``relu(residual(x) + shortcut(x))``."""
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + self.shortcut(x))


def _positive_ints(block: Sequence[int], length: int) -> bool:
    return len(block) == length and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in block
    )


def _resnet_top(in_channels: int, blocks: Sequence[Sequence[int]]) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    channels = in_channels
    for block in blocks:
        if not _positive_ints(block, 4):
            raise MammoConfigError(
                f"a ResNet top block must be (L, M, N, K) positive ints, got {tuple(block)}"
            )
        *depths, units = block
        unit_layers = []
        for index in range(units):
            unit_layers.append(ResNetTopUnit(channels, depths, stride=2 if index == 0 else 1))
            channels = depths[2]
        layers.append(nn.Sequential(*unit_layers))
    return nn.Sequential(*layers), channels


def _vgg_top(in_channels: int, blocks: Sequence[Sequence[int]]) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    channels = in_channels
    for block in blocks:
        if not _positive_ints(block, 2):
            raise MammoConfigError(f"a VGG top block must be (N, K) positive ints, got {tuple(block)}")
        depth, convs = block
        block_layers: list[nn.Module] = []
        for _ in range(convs):
            block_layers += [
                nn.Conv2d(channels, depth, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(depth),
                nn.ReLU(inplace=True),
            ]
            channels = depth
        block_layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        layers.append(nn.Sequential(*block_layers))
    return nn.Sequential(*layers), channels


def he_normal_(module: nn.Module) -> None:
    """He-normal (fan-in) initialisation of every conv / linear in ``module``; zero biases, BN 1/0.

    Args:
        module: the module whose layers are (re-)initialised in place.

    Example:
        >>> layer = nn.Conv2d(512, 64, kernel_size=3)
        >>> he_normal_(layer)
        >>> round(float(layer.weight.std()), 2)  # sqrt(2 / (512 * 9))
        0.02
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class WholeImageClassifier(nn.Module):
    """Trunk -> two top blocks -> global average pooling -> linear (logits).

    Args:
        trunk: convolutional trunk producing ``(B, trunk_channels, h, w)`` (shared, not copied).
        trunk_channels: channels of the trunk's output.
        top: ``"resnet"`` (bottleneck blocks) or ``"vgg"`` (conv-BN-ReLU blocks with max-pool).
        blocks: top block configuration, ``(L, M, N, K)`` per block for ``"resnet"``, ``(N, K)``
            for ``"vgg"``; ``None`` for the paper's best (:data:`RESNET_TOP_BLOCKS`,
            :data:`VGG_TOP_BLOCKS`).
        num_classes: output classes (2: benign or normal / malignant).

    Raises:
        MammoConfigError: unknown ``top``, malformed ``blocks``, or non-positive sizes.

    Attributes:
        trunk: the trunk; top: ``nn.Sequential`` of the new blocks; head: ``pool``,
        ``flatten``, ``fc``.

    Example:
        >>> import torch
        >>> from monai_mammo.networks.vgg import vgg16
        >>> net = WholeImageClassifier(vgg16(), 512, top="resnet", blocks=((64, 64, 128, 1),)).eval()
        >>> net(torch.zeros(1, 3, 128, 96)).shape
        torch.Size([1, 2])
    """

    def __init__(
        self,
        trunk: nn.Module,
        trunk_channels: int,
        top: Literal["resnet", "vgg"] = "resnet",
        blocks: Sequence[Sequence[int]] | None = None,
        num_classes: int = 2,
    ) -> None:
        super().__init__()
        if trunk_channels < 1 or num_classes < 1:
            raise MammoConfigError(
                f"trunk_channels and num_classes must be >= 1, got {trunk_channels} and {num_classes}"
            )
        if top == "resnet":
            self.top, channels = _resnet_top(trunk_channels, RESNET_TOP_BLOCKS if blocks is None else blocks)
        elif top == "vgg":
            self.top, channels = _vgg_top(trunk_channels, VGG_TOP_BLOCKS if blocks is None else blocks)
        else:
            raise MammoConfigError(f"top must be 'resnet' or 'vgg', got {top!r}")
        self.top_kind = top
        self.trunk = trunk
        self.trunk_channels = trunk_channels
        self.head = nn.Sequential(
            OrderedDict(
                pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(), fc=nn.Linear(channels, num_classes)
            )
        )
        he_normal_(self.top)
        he_normal_(self.head)

    @classmethod
    def from_patch_classifier(
        cls,
        patch_model: PatchClassifier,
        top: Literal["resnet", "vgg"] = "resnet",
        blocks: Sequence[Sequence[int]] | None = None,
        num_classes: int = 2,
    ) -> WholeImageClassifier:
        """Build a whole-image classifier on a (trained) patch classifier's trunk.

        The trunk module is shared, not copied: its parameters are the same tensors.

        Args:
            patch_model: the patch classifier (its ``trunk`` and ``trunk_channels`` are used).
            top: see :class:`WholeImageClassifier`.
            blocks: see :class:`WholeImageClassifier`.
            num_classes: output classes.

        Returns:
            the whole-image classifier.
        """
        return cls(
            patch_model.trunk, patch_model.trunk_channels, top=top, blocks=blocks, num_classes=num_classes
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(B, num_classes)`` for images ``(B, C, H, W)`` of any size."""
        return self.head(self.top(self.trunk(x)))

    def new_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the newly added layers (top blocks and the linear head)."""
        yield from self.top.parameters()
        yield from self.head.parameters()

    def trunk_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the trunk taken from the patch classifier."""
        return self.trunk.parameters()

    def set_trunk_trainable(self, trainable: bool) -> None:
        """Freeze (stage 1) or unfreeze (stage 2) the trunk's parameters.

        Args:
            trainable: the ``requires_grad`` flag for every trunk parameter.
        """
        self.trunk.requires_grad_(trainable)
