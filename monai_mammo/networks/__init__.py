"""Pure torch networks: VGG, patch classifiers, whole-image conversion, heatmap variant, weight import."""

from __future__ import annotations

from monai_mammo.networks.heatmap_classifier import (
    HeatmapClassifier,
    feature_map_size,
)
from monai_mammo.networks.patch_classifier import (
    PAPER_TOP_N,
    PATCH_BACKBONES,
    DenseNetTrunk,
    PatchClassifier,
    ResNetTrunk,
    Trunk,
    build_trunk,
)
from monai_mammo.networks.vgg import (
    VGG,
    VGG_CONFIGS,
    vgg11,
    vgg11_bn,
    vgg13,
    vgg13_bn,
    vgg16,
    vgg16_bn,
    vgg19,
    vgg19_bn,
)
from monai_mammo.networks.weights import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    WeightImportReport,
    load_torchvision_state_dict,
)
from monai_mammo.networks.whole_image import (
    RESNET_TOP_BLOCKS,
    VGG_TOP_BLOCKS,
    ResNetTopUnit,
    WholeImageClassifier,
    he_normal_,
)

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
    "PAPER_TOP_N",
    "PATCH_BACKBONES",
    "DenseNetTrunk",
    "PatchClassifier",
    "ResNetTrunk",
    "Trunk",
    "build_trunk",
    "RESNET_TOP_BLOCKS",
    "VGG_TOP_BLOCKS",
    "ResNetTopUnit",
    "WholeImageClassifier",
    "he_normal_",
    "HeatmapClassifier",
    "feature_map_size",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "WeightImportReport",
    "load_torchvision_state_dict",
]
