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
* ``efficientnet_b0/b1/b2`` (also spelled ``efficientnet-b0``): torchvision's
  ``features.0.{0,1}`` (stem convolution, batch norm) become MONAI ``EfficientNetBN``'s
  ``_conv_stem`` / ``_bn0``; the last ``features.<n>.{0,1}`` (1 x 1 head convolution) become
  ``_conv_head`` / ``_bn1``; MBConv block ``features.<s>.<i>.block.<j>`` becomes
  ``_blocks.<s - 1>.<k>`` with ``k`` the block's position counted over all stages, its parts
  ``[expand,] depthwise, squeeze-excitation, project`` becoming ``_expand_conv`` + ``_bn0``,
  ``_depthwise_conv`` + ``_bn1``, ``_se_reduce`` / ``_se_expand`` (``fc1`` / ``fc2``) and
  ``_project_conv`` + ``_bn2`` (blocks without expansion have three parts); ``classifier.1``
  is MONAI's ``_fc``. The tensors fit one to one, but the networks differ slightly in
  arithmetic: MONAI pads stride-2 convolutions TensorFlow-style (asymmetrically) where
  torchvision pads symmetrically, and its batch norms use ``eps=1e-3`` (torchvision B0–B2:
  ``1e-5``), so outputs are close to, not equal to, torchvision's.

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
from collections.abc import Callable, Collection, Mapping
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
_EFFNET_STAGE = re.compile(r"^features\.(\d+)\.(.+)$")
_EFFNET_BLOCK = re.compile(r"^features\.(\d+)\.(\d+)\.block\.(\d+)\.(.+)$")
_EFFNET_CONV_BN = re.compile(r"^([01])\.(.+)$")
# MBConv parts in torchvision order -> MONAI (convolution, batch norm) names; "se" = squeeze-excitation
_EFFNET_PARTS = {
    True: ("expand", "depthwise", "se", "project"),
    False: ("depthwise", "se", "project"),
}
_EFFNET_NAMES = {
    "expand": ("_expand_conv", "_bn0"),
    "depthwise": ("_depthwise_conv", "_bn1"),
    "project": ("_project_conv", "_bn2"),
}
_EFFNET_SE = {"fc1": "_se_reduce", "fc2": "_se_expand"}

_KeyMap = Callable[[str], str]


def _identity(key: str) -> str:
    return key


def _identity_map(keys: Collection[str]) -> _KeyMap:
    return _identity


def _densenet_key(key: str) -> str:
    match = _DENSE_LAYER.match(key)
    if match is None:
        return key
    layer, kind, index, rest = match.groups()
    return f"{layer}.layers.{kind}{index}.{rest}"


def _densenet_map(keys: Collection[str]) -> _KeyMap:
    return _densenet_key


def _conv_bn_key(rest: str, conv: str, bn: str) -> str | None:
    # torchvision's Conv2dNormActivation: "0.*" = the convolution, "1.*" = the batch norm
    match = _EFFNET_CONV_BN.match(rest)
    if match is None:
        return None
    return f"{conv if match.group(1) == '0' else bn}.{match.group(2)}"


def _efficientnet_map(keys: Collection[str]) -> _KeyMap:
    """torchvision ``efficientnet_b*`` keys -> MONAI ``EfficientNetBN`` keys (unknown keys unchanged).

    The block numbering over all stages and which blocks have an expansion convolution are
    read from the file's keys (a block with an expansion has four parts, ``block.0`` to ``block.3``).
    """
    stages = [int(m.group(1)) for k in keys if (m := _EFFNET_STAGE.match(k))]
    last = max(stages, default=0)
    blocks: set[tuple[int, int]] = set()
    expanded: set[tuple[int, int]] = set()
    for key in keys:
        if m := _EFFNET_BLOCK.match(key):
            block = (int(m.group(1)), int(m.group(2)))
            blocks.add(block)
            if m.group(3) == "3":
                expanded.add(block)
    flat = {block: k for k, block in enumerate(sorted(blocks))}

    def block_key(stage: int, index: int, part: int, rest: str) -> str | None:
        parts = _EFFNET_PARTS[(stage, index) in expanded]
        if part >= len(parts):
            return None
        prefix = f"_blocks.{stage - 1}.{flat[(stage, index)]}."
        if parts[part] == "se":
            fc, _, tail = rest.partition(".")
            return prefix + f"{_EFFNET_SE[fc]}.{tail}" if fc in _EFFNET_SE and tail else None
        mapped = _conv_bn_key(rest, *_EFFNET_NAMES[parts[part]])
        return None if mapped is None else prefix + mapped

    def key_map(key: str) -> str:
        mapped: str | None = None
        if m := _EFFNET_BLOCK.match(key):
            stage, index, part, rest = int(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4)
            if 0 < stage < last:
                mapped = block_key(stage, index, part, rest)
        elif m := _EFFNET_STAGE.match(key):
            stage, rest = int(m.group(1)), m.group(2)
            if stage == 0:
                mapped = _conv_bn_key(rest, "_conv_stem", "_bn0")
            elif stage == last:
                mapped = _conv_bn_key(rest, "_conv_head", "_bn1")
        return key if mapped is None else mapped

    return key_map


# family -> (first convolution key in the model, head key prefix in the file, head key prefix
# in the model, key map factory: the file's keys -> key map)
_FAMILIES: dict[str, tuple[str, str, str, Callable[[Collection[str]], _KeyMap]]] = {
    "resnet": ("conv1.weight", "fc.", "fc.", _identity_map),
    "vgg": ("features.0.weight", "classifier.", "classifier.", _identity_map),
    "densenet": ("features.conv0.weight", "classifier.", "class_layers.out.", _densenet_map),
    "efficientnet": ("_conv_stem.weight", "classifier.1.", "_fc.", _efficientnet_map),
}
_ARCHS = {
    **{f"resnet{d}": "resnet" for d in (18, 34, 50, 101, 152)},
    **{f"vgg{d}{bn}": "vgg" for d in (11, 13, 16, 19) for bn in ("", "_bn")},
    **{f"densenet{d}": "densenet" for d in (121, 169, 201)},
    **{f"efficientnet_b{v}": "efficientnet" for v in (0, 1, 2)},
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
        model: a network of ``arch`` (MONAI ResNet / DenseNet / EfficientNetBN, our VGG) or a
            model containing one (e.g. a ``PatchClassifier``, a ``WholeImageClassifier``, a
            ``ZooClassifier``).
        path: the local ``.pth`` / ``.pt`` file (a state dict, optionally under ``"state_dict"``,
            optionally with DataParallel's ``module.`` prefix).
        arch: ``resnet18|34|50|101|152``, ``vgg11|13|16|19`` (``_bn``), ``densenet121|169|201``,
            ``efficientnet_b0|b1|b2`` (``-`` and ``_`` are interchangeable).
        strict_trunk: raise when a network (non-head) key is missing, has no target in the
            model, or has another shape; otherwise such keys are only reported.
            ``num_batches_tracked`` may always be missing (old files lack it).
        skip_head: do not load the classification layer (``fc.*`` / ``classifier.*``); when
            False it is loaded where the model has a same-shaped counterpart (MONAI's ``fc``,
            DenseNet's ``class_layers.out``, EfficientNet's ``_fc``) and reported otherwise,
            never raised.
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
    family = _ARCHS.get(arch.lower().replace("-", "_"))
    if family is None:
        raise MammoConfigError(f"unknown arch {arch!r}; expected one of {sorted(_ARCHS)}", source=source)
    anchor, file_head, model_head, key_map_factory = _FAMILIES[family]
    state = _read_state_dict(source)
    map_key = key_map_factory(list(state))
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
