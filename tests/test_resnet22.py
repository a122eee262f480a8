"""ResNet-22 column of the NYU multi-view classifier: sizes, parameter counts, block structure."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from monai_mammo.exceptions import MammoConfigError
from monai_mammo.networks.resnet22 import RESNET22_CHANNELS, PreActBlock, ResNet22


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("in_channels, expected", [(1, 2_799_536), (3, 2_801_104)])
def test_parameter_counts_match_the_paper(in_channels: int, expected: int) -> None:
    assert n_params(ResNet22(in_channels)) == expected


def test_output_size_of_the_paper_inputs() -> None:
    assert ResNet22.output_size((2677, 1942)) == (42, 31)
    assert ResNet22.output_size((2974, 1748)) == (47, 28)
    assert ResNet22.output_size((11, 11)) == (1, 1)
    with pytest.raises(MammoConfigError, match="too small"):
        ResNet22.output_size((10, 64))
    with pytest.raises(MammoConfigError, match=r"\(H, W\)"):
        ResNet22.output_size((64,))


def test_full_size_forward_gives_table_ii_maps() -> None:
    torch.manual_seed(0)
    column = ResNet22(in_channels=1).eval()
    with torch.no_grad():
        cc = column.feature_map(torch.randn(1, 1, 2677, 1942))
        mlo = column.feature_map(torch.randn(1, 1, 2974, 1748))
    assert cc.shape == (1, 256, 42, 31)
    assert mlo.shape == (1, 256, 47, 28)
    assert bool((cc >= 0).all())  # after the final ReLU


@pytest.mark.parametrize("size", [(256, 224), (97, 131)])
def test_small_inputs_match_output_size_and_forward_is_the_spatial_mean(size: tuple[int, int]) -> None:
    torch.manual_seed(1)
    column = ResNet22(in_channels=3).eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        fmap = column.feature_map(x)
        vector = column(x)
    assert fmap.shape == (2, 256, *ResNet22.output_size(size))
    assert vector.shape == (2, ResNet22.out_channels)
    torch.testing.assert_close(vector, fmap.mean(dim=(2, 3)))


def test_architecture_follows_the_spec() -> None:
    column = ResNet22()
    assert (column.conv.kernel_size, column.conv.stride, column.conv.padding) == ((7, 7), (2, 2), (0, 0))
    assert column.conv.out_channels == 16
    assert (column.pool.kernel_size, column.pool.stride, column.pool.padding) == (3, 2, 0)
    assert len(column.stages) == 5
    strides = []
    for stage, channels in zip(column.stages, RESNET22_CHANNELS):
        first, second = stage
        assert isinstance(first, PreActBlock) and isinstance(second, PreActBlock)
        assert first.projection is not None and second.projection is None  # stage 1 included
        assert first.projection.kernel_size == (1, 1)
        assert first.conv2.out_channels == second.conv2.out_channels == channels
        strides.append(first.conv1.stride[0])
        assert second.conv1.stride == (1, 1)
    assert strides == [1, 2, 2, 2, 2]
    assert column.norm.num_features == 256
    assert all(m.bias is None for m in column.modules() if isinstance(m, nn.Conv2d))


def test_projection_sees_the_activated_input() -> None:
    block = PreActBlock(4, 4, stride=1, projection=True).eval()
    with torch.no_grad():
        block.conv2.weight.zero_()  # residual branch contributes nothing
        assert block.projection is not None
        block.projection.weight.copy_(torch.eye(4).view(4, 4, 1, 1))
    negative = -torch.rand(1, 4, 5, 5) - 0.1  # default BN in eval mode is the identity
    positive = torch.rand(1, 4, 5, 5) + 0.1
    with torch.no_grad():
        assert torch.equal(block(negative), torch.zeros_like(negative))  # ReLU before the projection
        torch.testing.assert_close(block(positive), positive)


def test_identity_block_cannot_change_shape() -> None:
    with pytest.raises(MammoConfigError, match="needs a projection"):
        PreActBlock(16, 32, stride=2)
    with pytest.raises(MammoConfigError, match="in_channels"):
        ResNet22(in_channels=0)
