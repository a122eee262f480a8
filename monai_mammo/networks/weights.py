"""Import ImageNet weights from a local torchvision-style state-dict file.

These machines cannot download weights and torchvision cannot be installed, so pretrained
trunks come from a state-dict file saved elsewhere (``torch.save(tv_model.state_dict(), path)``)
and mapped onto our networks:

* ``resnet18/34/50/101/152``: torchvision keys (``conv1.weight``, ``bn1.running_mean``,
  ``layer1.0.conv1.weight``, ``layer1.0.downsample.0.weight``) equal MONAI ResNet keys when
  the ResNet has a 7 x 7 stride-2 stem and ``bias_downsample=False``
  (:class:`~monai_mammo.networks.patch_classifier.ResNetTrunk` does).
* ``vgg11/13/16/19`` and ``*_bn``: ``features.<i>.*`` equal our
  :class:`~monai_mammo.networks.vgg.VGG` keys.
* ``densenet121/169/201``: ``features.denseblock1.denselayer1.norm1.weight`` (and the older
  ``...denselayer1.norm.1.weight``) become MONAI's
  ``features.denseblock1.denselayer1.layers.norm1.weight``; the rest is unchanged.

The target may be the bare network or any model containing it (a
:class:`~monai_mammo.networks.patch_classifier.PatchClassifier` keeps it under ``trunk.``):
the prefix under which most mapped keys exist is used. The classification layers (``fc.*``,
``classifier.*``) are skipped by default since our heads are new. The file is read with
``torch.load(..., weights_only=True)``: arbitrary pickled objects are refused, never executed.

Example:
    >>> from monai_mammo.networks.patch_classifier import PatchClassifier
    >>> model = PatchClassifier("resnet50", in_channels=1)
    >>> report = load_torchvision_state_dict(model, "resnet50-imagenet.pth", arch="resnet50")  # doctest: +SKIP
    >>> report.adapted  # doctest: +SKIP
    ['trunk.conv1.weight']
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from monai_mammo.exceptions import MammoConfigError, MammoDataError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "WeightImportReport", "load_torchvision_state_dict"]

#: Per-channel RGB mean of ImageNet for inputs scaled to [0, 1] (torchvision's normalisation).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
#: Per-channel RGB standard deviation of ImageNet for inputs scaled to [0, 1].
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

_DENSE_LAYER = re.compile(r"^(features\.denseblock\d+\.denselayer\d+)\.(norm|relu|conv)\.?(\d)\.(.+)$")


def _identity(key: str) -> str:
    return key


def _densenet_key(key: str) -> str:
    match = _DENSE_LAYER.match(key)
    if match is None:
        return key
    layer, kind, index, rest = match.groups()
    return f"{layer}.layers.{kind}{index}.{rest}"


# family -> (first convolution key, head key prefix in the file, head key prefix in the model, key map)
_FAMILIES: dict[str, tuple[str, str, str, Callable[[str], str]]] = {
    "resnet": ("conv1.weight", "fc.", "fc.", _identity),
    "vgg": ("features.0.weight", "classifier.", "classifier.", _identity),
    "densenet": ("features.conv0.weight", "classifier.", "class_layers.out.", _densenet_key),
}
_ARCHS = {
    **{f"resnet{d}": "resnet" for d in (18, 34, 50, 101, 152)},
    **{f"vgg{d}{bn}": "vgg" for d in (11, 13, 16, 19) for bn in ("", "_bn")},
    **{f"densenet{d}": "densenet" for d in (121, 169, 201)},
}


@dataclass
class WeightImportReport:
    """What :func:`load_torchvision_state_dict` did; model keys include the target prefix.

    Attributes:
        source: the weight file.
        arch: the architecture named by the caller.
        prefix: where the network sits in the model (``""`` or e.g. ``"trunk."``).
        loaded: model keys that received a tensor.
        adapted: model keys loaded after summing 3 input channels into 1.
        skipped: file keys deliberately not loaded (the classification layer).
        missing: model keys of the network that the file did not provide.
        unexpected: file keys with no counterpart in the model.
        mismatched: ``(model key, file shape, model shape)`` of keys not loaded for their shape.
    """

    source: str
    arch: str
    prefix: str = ""
    loaded: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise MammoDataError("weight file not found", source=path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # refused pickles, corrupt archives, foreign formats
        raise MammoDataError(
            f"cannot be read as a weights-only state dict (arbitrary pickles are refused): {exc}", source=path
        ) from exc
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise MammoDataError(
            f"not a state dict (a non-empty mapping of tensors): got {type(obj).__name__}", source=path
        )
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise MammoDataError(f"not a state dict: entry {key!r} is a {type(value).__name__}", source=path)
    state = dict(obj)
    if all(key.startswith("module.") for key in state):  # saved from nn.DataParallel
        state = {key[len("module.") :]: value for key, value in state.items()}
    return state


def _find_prefix(model_keys: set[str], mapped: list[str], anchor: str) -> str | None:
    candidates = {key[: -len(anchor)] for key in model_keys if key == anchor or key.endswith("." + anchor)}
    if not candidates:
        return None
    return max(sorted(candidates, key=len), key=lambda p: sum(p + k in model_keys for k in mapped))


def load_torchvision_state_dict(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    arch: str,
    strict_trunk: bool = True,
    skip_head: bool = True,
    sum_rgb_to_grey: bool = True,
) -> WeightImportReport:
    """Copy the tensors of a torchvision-style state-dict file into ``model``.

    Nothing is copied unless every check passes.

    Args:
        model: a network of ``arch`` (MONAI ResNet / DenseNet, our VGG) or a model containing
            one (e.g. a ``PatchClassifier``, a ``WholeImageClassifier``).
        path: the local ``.pth`` / ``.pt`` file (a state dict, optionally under ``"state_dict"``,
            optionally with DataParallel's ``module.`` prefix).
        arch: ``resnet18|34|50|101|152``, ``vgg11|13|16|19`` (``_bn``), ``densenet121|169|201``.
        strict_trunk: raise when a network (non-head) key is missing, has no target in the
            model, or has another shape; otherwise such keys are only reported.
            ``num_batches_tracked`` may always be missing (old files lack it).
        skip_head: do not load the classification layer (``fc.*`` / ``classifier.*``); when
            False it is loaded where the model has a same-shaped counterpart (MONAI's ``fc``,
            DenseNet's ``class_layers.out``) and reported otherwise, never raised.
        sum_rgb_to_grey: when the model's first convolution takes 1 channel and the file's 3,
            load the sum over the input channels (the response to a grey image copied to RGB).

    Returns:
        a :class:`WeightImportReport`.

    Raises:
        MammoDataError: the file is missing, unreadable, refused by ``weights_only`` or not a
            state dict; or (``strict_trunk``) a network key is missing, unexpected or of another
            shape (the message names the file and the key).
        MammoConfigError: unknown ``arch``, or the model has no ``arch``-like network.

    Example:
        >>> from monai_mammo.networks.vgg import vgg16
        >>> report = load_torchvision_state_dict(vgg16(), "vgg16.pth", arch="vgg16")  # doctest: +SKIP
    """
    source = Path(path)
    family = _ARCHS.get(arch.lower())
    if family is None:
        raise MammoConfigError(f"unknown arch {arch!r}; expected one of {sorted(_ARCHS)}", source=source)
    anchor, file_head, model_head, map_key = _FAMILIES[family]
    state = _read_state_dict(source)
    report = WeightImportReport(source=str(source), arch=arch)

    trunk_keys = {key: map_key(key) for key in state if not key.startswith(file_head)}
    head_keys = {key: model_head + key[len(file_head) :] for key in state if key.startswith(file_head)}
    target = model.state_dict()
    prefix = _find_prefix(set(target), list(trunk_keys.values()), anchor)
    if prefix is None:
        raise MammoConfigError(
            f"the model has no {anchor!r} parameter: it does not contain a {arch} network", source=source
        )
    report.prefix = prefix

    def fail(message: str, key: str) -> None:
        if strict_trunk:
            raise MammoDataError(f"{message} (key {key!r})", source=source)

    updates: dict[str, torch.Tensor] = {}
    pairs = [(k, v, True) for k, v in trunk_keys.items()]
    if skip_head:
        report.skipped = sorted(head_keys)
    else:
        pairs += [(k, v, False) for k, v in head_keys.items()]
    for file_key, mapped, is_trunk in pairs:
        model_key = prefix + mapped
        tensor = state[file_key]
        if model_key not in target:
            report.unexpected.append(file_key)
            if is_trunk:
                fail("the model has no counterpart for this weight", file_key)
            continue
        want = tuple(target[model_key].shape)
        if tuple(tensor.shape) == want:
            updates[model_key] = tensor
            continue
        grey = want[:1] + (1,) + want[2:]
        if (
            mapped == anchor
            and sum_rgb_to_grey
            and want == grey
            and tensor.ndim == 4
            and tensor.shape[1] == 3
        ):
            updates[model_key] = tensor.sum(dim=1, keepdim=True)
            report.adapted.append(model_key)
            continue
        report.mismatched.append((model_key, tuple(tensor.shape), want))
        if is_trunk:
            fail(f"shape {tuple(tensor.shape)} in the file but {want} in the model", file_key)

    provided = {prefix + v for v in trunk_keys.values()}
    for model_key in sorted(target):
        name = model_key[len(prefix) :]
        if not model_key.startswith(prefix) or model_key in provided or name.startswith(model_head):
            continue
        report.missing.append(model_key)
        if not name.endswith("num_batches_tracked"):
            hint = (
                " (build the ResNet with bias_downsample=False)" if name.endswith("downsample.0.bias") else ""
            )
            fail(f"the file has no weight for this model parameter{hint}", model_key)

    with torch.no_grad():
        for model_key, tensor in updates.items():
            target[model_key].copy_(tensor)
    report.loaded = sorted(updates)
    return report
