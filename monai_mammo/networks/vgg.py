"""VGG convolutional trunks (VGG-11/13/16/19, with or without batch normalisation).

Our own implementation from the VGG paper's configurations. The ``features`` container has
the same layer order and indices as torchvision's ``vgg*`` models (conv, [batch norm], ReLU,
..., 2 x 2 max-pool), so a torchvision state dict's ``features.<i>.*`` keys load unchanged
(see :func:`monai_mammo.networks.weights.load_torchvision_state_dict`). The trunk has no
fully connected top: heads (global average pooling + linear, whole-image top blocks) are
separate modules.

Example:
    >>> import torch
    >>> net = vgg16(in_channels=1)
    >>> net(torch.zeros(1, 1, 64, 64)).shape
    torch.Size([1, 512, 2, 2])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from monai_mammo.exceptions import MammoConfigError

__all__ = [
    "VGG",
    "VGG_CONFIGS",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
]

#: Layer configurations by depth: an int is a 3 x 3 convolution with that many output
#: channels (followed by ReLU), ``"M"`` a 2 x 2 max-pool with stride 2.
VGG_CONFIGS: dict[str, list[int | str]] = {
    "11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "19": [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
        "M",
    ],
}
_LETTERS = {"A": "11", "B": "13", "D": "16", "E": "19"}


def _resolve_config(cfg: str | Sequence[int | str]) -> list[int | str]:
    if isinstance(cfg, str):
        key = _LETTERS.get(cfg.upper(), cfg)
        if key not in VGG_CONFIGS:
            raise MammoConfigError(
                f"unknown VGG configuration {cfg!r}; expected one of {sorted(VGG_CONFIGS)} or "
                f"{sorted(_LETTERS)}, or a sequence of channel counts and 'M'"
            )
        return list(VGG_CONFIGS[key])
    items = list(cfg)
    if not items or items[0] == "M":
        raise MammoConfigError(f"VGG configuration {items!r} must start with a convolution")
    for v in items:
        if not (v == "M" or (isinstance(v, int) and not isinstance(v, bool) and v > 0)):
            raise MammoConfigError(f"VGG configuration entry {v!r} is neither a positive int nor 'M'")
    return items


class VGG(nn.Module):
    """A 2-D VGG convolutional trunk without the fully connected top.

    Args:
        cfg: ``"11"``, ``"13"``, ``"16"``, ``"19"`` (or the paper's letters ``"A"``, ``"B"``,
            ``"D"``, ``"E"``), or a sequence of output channel counts and ``"M"`` (max-pool).
        in_channels: channels of the input image (1 for grey, 3 for grey copied to RGB or
            ImageNet weights).
        batch_norm: insert a batch normalisation after every convolution (``vgg*_bn``).

    Raises:
        MammoConfigError: unknown configuration or ``in_channels`` < 1.

    Attributes:
        features: ``nn.Sequential`` whose indices match torchvision's ``vgg*.features``.
        out_channels: channels of the output feature map.

    Example:
        >>> net = VGG("16", in_channels=3, batch_norm=True)
        >>> net.out_channels
        512
    """

    def __init__(
        self, cfg: str | Sequence[int | str], in_channels: int = 3, batch_norm: bool = False
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise MammoConfigError(f"in_channels must be >= 1, got {in_channels}")
        self.config = _resolve_config(cfg)
        self.batch_norm = batch_norm
        layers: list[nn.Module] = []
        channels = in_channels
        for v in self.config:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            assert isinstance(v, int)
            layers.append(nn.Conv2d(channels, v, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(v))
            layers.append(nn.ReLU(inplace=True))
            channels = v
        self.features = nn.Sequential(*layers)
        self.out_channels = channels
        self._init_weights()

    def _init_weights(self) -> None:
        # The same scheme as torchvision's VGG: He-normal (fan_out) convolutions, zero bias.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the feature map ``(B, out_channels, H / 2**P, W / 2**P)`` (P = number of pools)."""
        return self.features(x)

    def output_size(self, spatial_size: Sequence[int]) -> tuple[int, int]:
        """Spatial size of the feature map for an input of ``(H, W)`` (each pool floors the halving).

        Args:
            spatial_size: input height and width.

        Returns:
            the output height and width.
        """
        h, w = (int(s) for s in spatial_size)
        for v in self.config:
            if v == "M":
                h, w = h // 2, w // 2
        return h, w

    def block_groups(self) -> list[tuple[str, nn.Module]]:
        """The convolutional layers as trainable groups, from input to output.

        Each group holds one convolution, its batch norm (``_bn`` variants) and ReLU, plus the
        max-pool that follows it, if any. Names follow the VGG paper: ``conv<block>_<index>``.

        Returns:
            ``[(name, module), ...]``; the modules are views of :attr:`features`.
        """
        groups: list[tuple[str, list[nn.Module]]] = []
        block, index = 1, 0
        for module in self.features:
            if isinstance(module, nn.Conv2d):
                index += 1
                groups.append((f"conv{block}_{index}", [module]))
                continue
            groups[-1][1].append(module)
            if isinstance(module, nn.MaxPool2d):
                block, index = block + 1, 0
        return [(name, nn.ModuleList(modules)) for name, modules in groups]


def vgg11(in_channels: int = 3) -> VGG:
    """VGG-11 trunk (configuration A). See :class:`VGG`."""
    return VGG("11", in_channels=in_channels)


def vgg11_bn(in_channels: int = 3) -> VGG:
    """VGG-11 trunk with batch normalisation. See :class:`VGG`."""
    return VGG("11", in_channels=in_channels, batch_norm=True)


def vgg13(in_channels: int = 3) -> VGG:
    """VGG-13 trunk (configuration B). See :class:`VGG`."""
    return VGG("13", in_channels=in_channels)


def vgg13_bn(in_channels: int = 3) -> VGG:
    """VGG-13 trunk with batch normalisation. See :class:`VGG`."""
    return VGG("13", in_channels=in_channels, batch_norm=True)


def vgg16(in_channels: int = 3) -> VGG:
    """VGG-16 trunk (configuration D). See :class:`VGG`."""
    return VGG("16", in_channels=in_channels)


def vgg16_bn(in_channels: int = 3) -> VGG:
    """VGG-16 trunk with batch normalisation. See :class:`VGG`."""
    return VGG("16", in_channels=in_channels, batch_norm=True)


def vgg19(in_channels: int = 3) -> VGG:
    """VGG-19 trunk (configuration E). See :class:`VGG`."""
    return VGG("19", in_channels=in_channels)


def vgg19_bn(in_channels: int = 3) -> VGG:
    """VGG-19 trunk with batch normalisation. See :class:`VGG`."""
    return VGG("19", in_channels=in_channels, batch_norm=True)
