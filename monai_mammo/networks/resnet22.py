"""ResNet-22: the single-view column of the NYU multi-view classifier (Wu et al. 2019).

A pre-activation ResNet balanced for very large inputs: few channels at high resolution,
more channels later.

* stem: conv 7 x 7, stride 2, padding 0, no bias, 16 channels -> max-pool 3, stride 2,
  padding 0 (no normalisation or activation in between: the first block starts with BN);
* 5 stages x 2 :class:`PreActBlock`, channels 16, 32, 64, 128, 256, strides 1, 2, 2, 2, 2;
  the first block of every stage (stage 1 included) has a 1 x 1 projection shortcut;
* BN(256) -> ReLU gives the feature map; its spatial mean is the 256-d view representation.

No convolution has a bias (every one is followed by a BN, directly or in the next block),
which gives exactly the paper's counts: 2,799,536 parameters for 1 input channel,
2,801,104 for 3 (image + benign and malignant heatmaps).

Feature maps (H x W): 2677 x 1942 (CC) -> 42 x 31; 2974 x 1748 (MLO) -> 47 x 28.

Example:
    >>> import torch
    >>> column = ResNet22(in_channels=1).eval()
    >>> column.output_size((2677, 1942))
    (42, 31)
    >>> column(torch.zeros(2, 1, 256, 224)).shape
    torch.Size([2, 256])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from monai_mammo.exceptions import MammoConfigError

__all__ = ["PreActBlock", "ResNet22", "RESNET22_CHANNELS", "RESNET22_STRIDES"]

#: Output channels of the five stages.
RESNET22_CHANNELS: tuple[int, ...] = (16, 32, 64, 128, 256)
#: Stride of the first block of each stage.
RESNET22_STRIDES: tuple[int, ...] = (1, 2, 2, 2, 2)
_BLOCKS_PER_STAGE = 2


class PreActBlock(nn.Module):
    """Pre-activation basic block: BN -> ReLU -> conv3x3(stride) -> BN -> ReLU -> conv3x3 -> add.

    With ``projection=True`` the shortcut is a 1 x 1 convolution (stride ``stride``, no bias)
    of the *activated* input (after the first BN -> ReLU); otherwise the raw input is added.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the first 3 x 3 convolution and of the projection.
        projection: use a 1 x 1 projection shortcut (required when the shape changes).

    Raises:
        MammoConfigError: the shape changes (channels or stride) without a projection.

    Example:
        >>> import torch
        >>> PreActBlock(16, 32, stride=2, projection=True)(torch.zeros(1, 16, 8, 8)).shape
        torch.Size([1, 32, 4, 4])
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, projection: bool = False
    ) -> None:
        super().__init__()
        if not projection and (in_channels != out_channels or stride != 1):
            raise MammoConfigError(
                f"a block from {in_channels} to {out_channels} channels with stride {stride} needs a projection"
            )
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.relu = nn.ReLU()
        self.projection = (
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False) if projection else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.relu(self.norm1(x))
        shortcut = x if self.projection is None else self.projection(activated)
        out = self.conv1(activated)
        out = self.conv2(self.relu(self.norm2(out)))
        return out + shortcut


class ResNet22(nn.Module):
    """One ResNet-22 column (see the module docstring for the architecture).

    Args:
        in_channels: input channels (1 = image, 3 = image + benign and malignant heatmaps).

    Attributes:
        out_channels: channels of the feature map and length of the output vector (256).

    Example:
        >>> import torch
        >>> column = ResNet22().eval()
        >>> column.feature_map(torch.zeros(1, 1, 256, 224)).shape
        torch.Size([1, 256, 4, 4])
    """

    out_channels: int = RESNET22_CHANNELS[-1]

    def __init__(self, in_channels: int = 1) -> None:
        super().__init__()
        if in_channels < 1:
            raise MammoConfigError(f"in_channels must be >= 1, got {in_channels}")
        self.in_channels = in_channels
        self.conv = nn.Conv2d(in_channels, RESNET22_CHANNELS[0], 7, stride=2, padding=0, bias=False)
        self.pool = nn.MaxPool2d(3, stride=2, padding=0)
        stages = []
        channels = RESNET22_CHANNELS[0]
        for out_channels, stride in zip(RESNET22_CHANNELS, RESNET22_STRIDES):
            blocks = [PreActBlock(channels, out_channels, stride, projection=True)]
            blocks += [PreActBlock(out_channels, out_channels) for _ in range(_BLOCKS_PER_STAGE - 1)]
            stages.append(nn.Sequential(*blocks))
            channels = out_channels
        self.stages = nn.ModuleList(stages)
        self.norm = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The final feature map after BN -> ReLU.

        Args:
            x: images ``(B, in_channels, H, W)``.

        Returns:
            ``(B, 256, h, w)`` with ``(h, w) = self.output_size((H, W))``.
        """
        h = self.pool(self.conv(x))
        for stage in self.stages:
            h = stage(h)
        return self.relu(self.norm(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The view representation: spatial mean of :meth:`feature_map`.

        Args:
            x: images ``(B, in_channels, H, W)``.

        Returns:
            ``(B, 256)``.
        """
        return self.feature_map(x).mean(dim=(-2, -1))

    @staticmethod
    def output_size(spatial_size: Sequence[int]) -> tuple[int, int]:
        """Spatial size of the feature map for an input of ``(H, W)`` (no forward pass).

        Args:
            spatial_size: ``(H, W)`` of the input.

        Returns:
            ``(h, w)``: ``(42, 31)`` for 2677 x 1942, ``(47, 28)`` for 2974 x 1748.

        Raises:
            MammoConfigError: the input is smaller than the stem's 7 x 7 convolution and
                3 x 3 pooling need (at least 11 pixels per axis).
        """
        if len(spatial_size) != 2:
            raise MammoConfigError(f"spatial_size must be (H, W), got {tuple(spatial_size)}")
        sizes = []
        for n in spatial_size:
            if int(n) < 11:
                raise MammoConfigError(
                    f"input size {tuple(spatial_size)} is too small for ResNet-22 (min 11)"
                )
            n = (int(n) - 7) // 2 + 1  # conv 7x7, stride 2, no padding
            n = (n - 3) // 2 + 1  # max-pool 3, stride 2, no padding
            for stride in RESNET22_STRIDES:
                n = (n - 1) // stride + 1  # conv 3x3 padding 1 (and 1x1 projection) with this stride
            sizes.append(n)
        return sizes[0], sizes[1]
