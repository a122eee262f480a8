"""The heatmap whole-image classifier that Shen et al. compared against (AUC 0.65–0.73).

The patch classifier is applied at every position of the whole image: its trunk gives a
feature map and its linear layer, used as a 1 x 1 convolution (the same weight and bias
tensors, shared), turns every position into class scores, so each heatmap pixel equals the
patch classifier's logits for that receptive field (exactly so where the trunk output is
1 x 1). Then ReLU (the paper's choice; softmax is an option), max-pooling (1 x 1, 2 x 2 or
5 x 5, stride = size), flatten, FC -> ReLU -> FC -> ReLU -> linear, with an optional shortcut
that concatenates the flattened heatmap to the last hidden layer before the output linear.
Flattening needs a fixed input size, hence ``input_shape``.

Paper configurations (pool, FC1, FC2): (5, 64, 32) best; (2, 512, 256); (1, 2048, 1024).

Example:
    >>> import torch
    >>> from monai_mammo.networks.patch_classifier import PatchClassifier
    >>> patch = PatchClassifier("resnet50")
    >>> net = HeatmapClassifier.from_patch_classifier(patch, input_shape=(3, 320, 320), pool_size=5)
    >>> net(torch.zeros(2, 3, 320, 320)).shape
    torch.Size([2, 2])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from monai_mammo.exceptions import MammoConfigError, MammoDataError
from monai_mammo.networks.patch_classifier import PatchClassifier
from monai_mammo.networks.whole_image import he_normal_

__all__ = ["HeatmapClassifier", "feature_map_size"]


def feature_map_size(trunk: nn.Module, input_shape: Sequence[int]) -> tuple[int, int]:
    """Spatial size of a trunk's output for inputs of ``(C, H, W)``.

    Uses the trunk's ``output_size((H, W))`` when it has one (our trunks do), otherwise one
    forward pass of a zero image in eval mode (the trunk's mode is restored afterwards).

    Args:
        trunk: the convolutional trunk.
        input_shape: ``(C, H, W)`` of one input image.

    Returns:
        ``(h, w)`` of the feature map.
    """
    channels, height, width = (int(v) for v in input_shape)
    output_size = getattr(trunk, "output_size", None)
    if callable(output_size):
        h, w = output_size((height, width))
        return int(h), int(w)
    was_training = trunk.training
    trunk.eval()
    try:
        with torch.no_grad():
            out = trunk(torch.zeros(1, channels, height, width))
    finally:
        trunk.train(was_training)
    return int(out.shape[-2]), int(out.shape[-1])


class HeatmapClassifier(nn.Module):
    """Patch classifier heatmap -> max-pool -> FC -> FC -> linear (+ optional heatmap shortcut).

    Args:
        trunk: the patch classifier's trunk (shared).
        classifier: the patch classifier's ``nn.Linear`` (shared; used as a 1 x 1 convolution).
        input_shape: ``(C, H, W)`` of the whole images this network accepts.
        pool_size: max-pool size and stride applied to the heatmap (1 = no pooling).
        fc_sizes: widths of the two hidden fully connected layers.
        shortcut: concatenate the flattened heatmap to the last hidden layer's output.
        num_classes: output classes.
        activation: heatmap activation, ``"relu"`` (paper) or ``"softmax"``.

    Raises:
        MammoConfigError: a non-positive size, an unknown activation, or a heatmap smaller
            than the pool.

    Example:
        >>> from monai_mammo.networks.patch_classifier import PatchClassifier
        >>> p = PatchClassifier("vgg16")
        >>> HeatmapClassifier(p.trunk, p.head.fc, (3, 224, 224), pool_size=2).heatmap_size
        (7, 7)
    """

    def __init__(
        self,
        trunk: nn.Module,
        classifier: nn.Linear,
        input_shape: Sequence[int],
        pool_size: int = 5,
        fc_sizes: Sequence[int] = (64, 32),
        shortcut: bool = True,
        num_classes: int = 2,
        activation: Literal["relu", "softmax"] = "relu",
    ) -> None:
        super().__init__()
        if len(input_shape) != 3 or min(input_shape) < 1:
            raise MammoConfigError(
                f"input_shape must be (C, H, W) with positive sizes, got {tuple(input_shape)}"
            )
        if pool_size < 1 or num_classes < 1 or len(fc_sizes) != 2 or min(fc_sizes) < 1:
            raise MammoConfigError(
                f"pool_size, num_classes and the two fc_sizes must be positive, got {pool_size}, "
                f"{num_classes} and {tuple(fc_sizes)}"
            )
        if activation not in ("relu", "softmax"):
            raise MammoConfigError(f"activation must be 'relu' or 'softmax', got {activation!r}")
        self.trunk = trunk
        self.classifier = classifier
        self.input_shape = tuple(int(v) for v in input_shape)
        self.activation = activation
        self.heatmap_size = feature_map_size(trunk, self.input_shape)
        pooled = (self.heatmap_size[0] // pool_size, self.heatmap_size[1] // pool_size)
        if min(pooled) < 1:
            raise MammoConfigError(
                f"the {self.heatmap_size} heatmap of a {self.input_shape} input is smaller than the pool {pool_size}"
            )
        self.pool: nn.Module = nn.MaxPool2d(pool_size) if pool_size > 1 else nn.Identity()
        flat = classifier.out_features * pooled[0] * pooled[1]
        self.fc = nn.Sequential(
            nn.Linear(flat, fc_sizes[0]),
            nn.ReLU(inplace=True),
            nn.Linear(fc_sizes[0], fc_sizes[1]),
            nn.ReLU(inplace=True),
        )
        self.shortcut = shortcut
        self.out = nn.Linear(fc_sizes[1] + (flat if shortcut else 0), num_classes)
        he_normal_(self.fc)
        he_normal_(self.out)

    @classmethod
    def from_patch_classifier(
        cls,
        patch_model: PatchClassifier,
        input_shape: Sequence[int],
        pool_size: int = 5,
        fc_sizes: Sequence[int] = (64, 32),
        shortcut: bool = True,
        num_classes: int = 2,
        activation: Literal["relu", "softmax"] = "relu",
    ) -> HeatmapClassifier:
        """Build the heatmap classifier on a patch classifier's trunk and linear layer (shared).

        Args:
            patch_model: the trained patch classifier.
            input_shape: ``(C, H, W)`` of the whole images.
            pool_size: see :class:`HeatmapClassifier`.
            fc_sizes: see :class:`HeatmapClassifier`.
            shortcut: see :class:`HeatmapClassifier`.
            num_classes: see :class:`HeatmapClassifier`.
            activation: see :class:`HeatmapClassifier`.

        Returns:
            the heatmap classifier.
        """
        return cls(
            patch_model.trunk,
            patch_model.classifier,
            input_shape,
            pool_size=pool_size,
            fc_sizes=fc_sizes,
            shortcut=shortcut,
            num_classes=num_classes,
            activation=activation,
        )

    def heatmap_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The patch classifier's logits at every position, ``(B, classes, h, w)``.

        Args:
            x: images ``(B, C, H, W)``.

        Returns:
            the heatmap before activation.
        """
        weight = self.classifier.weight[:, :, None, None]
        return F.conv2d(self.trunk(x), weight, self.classifier.bias)

    def heatmap(self, x: torch.Tensor) -> torch.Tensor:
        """The activated heatmap (ReLU or softmax over classes), ``(B, classes, h, w)``."""
        logits = self.heatmap_logits(x)
        return torch.relu(logits) if self.activation == "relu" else torch.softmax(logits, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(B, num_classes)``.

        Raises:
            MammoDataError: the input's ``(C, H, W)`` differs from ``input_shape``.
        """
        if tuple(x.shape[1:]) != self.input_shape:
            raise MammoDataError(
                f"input of shape {tuple(x.shape[1:])} but this heatmap classifier was built for {self.input_shape}"
            )
        flat = torch.flatten(self.pool(self.heatmap(x)), 1)
        hidden = self.fc(flat)
        if self.shortcut:
            hidden = torch.cat([hidden, flat], dim=1)
        return self.out(hidden)
