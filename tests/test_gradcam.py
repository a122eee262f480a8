"""Grad-CAM: target layers, maps of a hand-built and of a trained network, PNG overlays, selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.networks.nets import resnet10
from PIL import Image
from torch import nn

from monai_mammo.engines.gradcam import (
    default_target_layer,
    gradcam_maps,
    overlay_cam,
    save_gradcam_overlays,
    select_for_gradcam,
)
from monai_mammo.engines.roi_training import fit_classifier
from monai_mammo.exceptions import MammoConfigError, MammoDataError
from monai_mammo.networks.patch_classifier import PatchClassifier
from monai_mammo.networks.vgg import VGG
from monai_mammo.networks.zoo import ZooClassifier

SIZE = 32


def blob_image(
    center: tuple[int, int], amplitude: float, seed: int, shape: tuple[int, int] = (SIZE, SIZE)
) -> np.ndarray:
    """(1, H, W) noise with a Gaussian blob of the given amplitude at ``center``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    blob = np.exp(-((yy - center[0]) ** 2 + (xx - center[1]) ** 2) / (2 * 4.0**2))
    return (rng.normal(0, 0.05, shape) + amplitude * blob)[None].astype(np.float32)


def blob_items(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    items = []
    for index in range(n):
        center = tuple(int(c) for c in rng.integers(8, SIZE - 8, 2))
        label = index % 2
        items.append(
            {"image": blob_image(center, 1.0 if label else -1.0, seed * 100 + index), "label": label}
        )
        items[-1]["center"] = center
    return items


class BrightnessNet(nn.Module):
    """Hand-built: trunk = identity 1x1 convolution + ReLU, head = mean -> logit.

    The logit's gradient with respect to the feature map is uniform and positive, so its
    Grad-CAM is the ReLU of the image itself.
    """

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, 1))
        with torch.no_grad():
            self.trunk[0].weight.fill_(1.0)
            self.head[2].weight.fill_(1.0)
            self.head[2].bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


class TinyClassifier(nn.Module):
    """Our VGG trunk at toy size -> global average pool -> one logit."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = VGG([8, "M", 16], in_channels=1)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


def _inside(center: tuple[int, int], radius: float = 4.0) -> np.ndarray:
    yy, xx = np.mgrid[:SIZE, :SIZE]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2


def test_default_target_layer_is_the_trunk_or_last_conv_block():
    assert default_target_layer(ZooClassifier("vgg13", head="linear")) == "trunk"
    assert (
        default_target_layer(PatchClassifier("resnet18", num_classes=1, in_channels=1, widen_factor=0.125))
        == "trunk"
    )
    assert default_target_layer(resnet10(spatial_dims=2, n_input_channels=1, num_classes=1)) == "layer4"
    plain = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1)
    )
    assert default_target_layer(plain) == "0"
    assert default_target_layer(nn.DataParallel(BrightnessNet())) == "module.trunk"
    with pytest.raises(MammoConfigError, match="no 2-D convolution"):
        default_target_layer(nn.Sequential(nn.Flatten(), nn.Linear(4, 1)))


def test_hand_built_network_map_is_the_rectified_image():
    image = blob_image((10, 20), 1.0, seed=0)
    (cam,) = gradcam_maps(BrightnessNet(), torch.as_tensor(image)[None])
    expected = np.maximum(image[0], 0)
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    np.testing.assert_allclose(cam, expected, atol=1e-5)
    peak = np.unravel_index(cam.argmax(), cam.shape)
    assert abs(peak[0] - 10) <= 1 and abs(peak[1] - 20) <= 1  # the noise may move it by a pixel


def test_trained_network_looks_at_the_discriminative_blob(tmp_path):
    torch.manual_seed(0)
    network = TinyClassifier()
    fit_classifier(network, blob_items(16, 0), blob_items(16, 1), epochs=3, lr=1e-2, batch_size=4)
    positives = [it for it in blob_items(16, 2) if it["label"] == 1]
    maps = gradcam_maps(network, [it["image"] for it in positives])
    for item, cam in zip(positives, maps):
        inside = _inside(item["center"])
        assert cam.shape == (SIZE, SIZE) and cam.min() >= 0 and cam.max() == pytest.approx(1.0)
        assert cam[inside].mean() > 3 * cam[~inside].mean()
        peak = np.unravel_index(cam.argmax(), cam.shape)
        assert abs(peak[0] - item["center"][0]) <= 2 and abs(peak[1] - item["center"][1]) <= 2


def test_caller_network_is_left_untouched():
    network = TinyClassifier()
    network.trunk.requires_grad_(False)
    network.train()
    before = {k: v.clone() for k, v in network.state_dict().items()}
    maps = gradcam_maps(network, torch.as_tensor(blob_image((16, 16), 1.0, 0))[None])
    assert np.isfinite(maps[0]).all()
    assert network.training and not any(p.requires_grad for p in network.trunk.parameters())
    assert all(not m._forward_hooks and not m._backward_hooks for m in network.modules())
    assert all(torch.equal(v, before[k]) for k, v in network.state_dict().items())


def test_one_logit_explains_the_positive_logit_and_bad_class_index_is_typed():
    network = TinyClassifier()
    image = torch.as_tensor(blob_image((12, 12), 1.0, 1))[None]
    np.testing.assert_allclose(
        gradcam_maps(network, image)[0], gradcam_maps(network, image, class_index=0)[0]
    )
    with pytest.raises(MammoConfigError, match="class_index 3"):
        gradcam_maps(network, image, class_index=3)
    with pytest.raises(MammoConfigError, match="no module named"):
        gradcam_maps(network, image, target_layer="nope")
    with pytest.raises(MammoDataError, match=r"\(N, C, H, W\)"):
        gradcam_maps(network, torch.zeros(1, SIZE, SIZE))


def test_overlays_are_rgb_pngs_of_the_image_size_hot_on_the_blob(tmp_path):
    images = [blob_image((8, 24), 1.0, 0), blob_image((20, 10), 1.0, 1, shape=(28, 44))]
    paths = save_gradcam_overlays(BrightnessNet(), images, ["case/1 CC", "case/2 CC"], tmp_path / "cams")
    assert [p.name for p in paths] == ["case_1_CC.png", "case_2_CC.png"]
    for path, image, center in zip(paths, images, [(8, 24), (20, 10)]):
        with Image.open(path) as png:
            assert png.format == "PNG" and png.mode == "RGB" and png.size == (image.shape[2], image.shape[1])
            rgb = np.asarray(png).astype(int)
        # jet over the grey image: the blob (CAM 1) turns red, the background (CAM ~0) blue
        assert rgb[center][0] > rgb[center][2] + 40
        assert rgb[0, 0][2] > rgb[0, 0][0] + 40


def test_overlay_blend_and_argument_checks(tmp_path):
    image = np.linspace(0, 10, 16, dtype=np.float32).reshape(4, 4)
    cam = np.zeros((4, 4), dtype=np.float32)
    assert np.array_equal(
        overlay_cam(image, cam, alpha=0.0)[..., 0], np.round(image / 10 * 255).astype(np.uint8)
    )
    with pytest.raises(MammoConfigError, match="alpha"):
        overlay_cam(image, cam, alpha=1.5)
    with pytest.raises(MammoConfigError, match="colour map"):
        overlay_cam(image, cam, colormap="no-such-map")
    with pytest.raises(MammoDataError, match="differ in size"):
        overlay_cam(image, np.zeros((3, 3)))
    images = torch.zeros(2, 1, 8, 8)
    with pytest.raises(MammoConfigError, match="2 images but 1 names"):
        save_gradcam_overlays(BrightnessNet(), images, ["a"], tmp_path)
    with pytest.raises(MammoConfigError, match="distinct"):
        save_gradcam_overlays(BrightnessNet(), images, ["a/b", "a b"], tmp_path)


def test_select_for_gradcam():
    labels = [0, 0, 1, 1, 1]
    scores = [0.2, 0.7, 0.9, 0.1, 0.5]
    assert select_for_gradcam(labels, scores).tolist() == [1, 3]
    assert select_for_gradcam(labels, scores, which="false_positive").tolist() == [1]
    assert select_for_gradcam(labels, scores, which="false_negative").tolist() == [3]
    assert select_for_gradcam(labels, scores, which="correct").tolist() == [0, 2, 4]
    assert select_for_gradcam(labels, scores, threshold=0.6, which="misclassified").tolist() == [1, 3, 4]
    assert select_for_gradcam(labels, scores, which="all").tolist() == [0, 1, 2, 3, 4]
    assert select_for_gradcam(labels, scores, which=[4, 0]).tolist() == [4, 0]
    with pytest.raises(MammoConfigError, match="indices"):
        select_for_gradcam(labels, scores, which=[5])
    with pytest.raises(MammoConfigError, match="which"):
        select_for_gradcam(labels, scores, which="wrong")
    with pytest.raises(MammoConfigError, match="labels"):
        select_for_gradcam([0, 2], [0.1, 0.2])
