"""Load NYU's published breast cancer classifier weights (nyukat/breast_cancer_classifier).

Their files (``*.p``) are ``torch.save({"model": state_dict, ...})`` of their view-wise
model (image-only and image + heatmaps) or their image-wise model. Layout of the state dict:

* columns ``four_view_resnet.<alias>.<key>``: the CC column is registered under three module
  names (``cc``, ``l_cc``, ``r_cc``) and the MLO column under three (``mlo``, ``l_mlo``,
  ``r_mlo``), so every column tensor is stored three times. Within a column:
  ``first_conv.weight``, ``layer_list.<stage>.<block>.{bn1,conv1,bn2,conv2}.*``,
  ``layer_list.<stage>.0.downsample.0.weight`` and ``final_bn.*``.
* view-wise heads ``fc1_cc.*``, ``fc1_mlo.*``, ``output_layer_cc.fc_layer.*``,
  ``output_layer_mlo.fc_layer.*``; image-wise heads ``fc1_<v>.*`` and
  ``output_layer_<v>.fc_layer.*`` for ``v`` in ``lcc, rcc, lmlo, rmlo``.

Mapping onto :mod:`monai_mammo.networks.multiview` models (``column.CC.*``, ``column.MLO.*``,
``heads.<head>.fc1.*``, ``heads.<head>.output.*``): ``first_conv`` -> ``conv``,
``layer_list.i.j`` -> ``stages.i.j``, ``bn1``/``bn2`` -> ``norm1``/``norm2``,
``downsample.0`` -> ``projection``, ``final_bn`` -> ``norm``; heads by name (the output rows
are in the same order: view-wise rows are :data:`~monai_mammo.networks.multiview.TARGETS`,
image-wise rows start with the view's benign and malignant targets, our layout).

Safety: a zip (torch >= 1.6) or legacy torch file is read with ``torch.load(...,
weights_only=True)``; any other file is read as a plain pickle with
:func:`~monai_mammo.data.safe_pickle.restricted_load` (builtin containers and numpy arrays
only). Either way a pickle naming any other global (``os.system``, ...) is refused before
anything is called. Every check (aliases identical, keys known, shapes equal) passes before
any tensor is copied.

Example:
    >>> from monai_mammo.networks.multiview import ViewWiseModel
    >>> model = ViewWiseModel(in_channels=3)
    >>> report = load_nyu_state_dict(model, "sample_imageheatmaps_model.p")  # doctest: +SKIP
    >>> report.variant, report.aliases["cc"]  # doctest: +SKIP
    ('view', ['cc', 'l_cc', 'r_cc'])
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from monai_mammo.data.safe_pickle import restricted_load
from monai_mammo.exceptions import MammoConfigError, MammoDataError
from monai_mammo.networks.multiview import MultiViewModel
from monai_mammo.networks.resnet22 import ResNet22

__all__ = ["NYU_COLUMN_ALIASES", "NyuImportReport", "load_nyu_state_dict", "read_nyu_state_dict"]

#: Module names under which their files store each column (canonical name first).
NYU_COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "cc": ("cc", "l_cc", "r_cc"),
    "mlo": ("mlo", "l_mlo", "r_mlo"),
}
_COLUMN_PREFIX = "four_view_resnet."
_ALIAS_ANGLE = {alias: angle for angle, aliases in NYU_COLUMN_ALIASES.items() for alias in aliases}
# their column key -> ours (applied in order, whole-key regular expressions)
_COLUMN_KEYS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^first_conv\.weight$"), "conv.weight"),
    (re.compile(r"^layer_list\.(\d+)\.(\d+)\.bn([12])\.(\w+)$"), r"stages.\1.\2.norm\3.\4"),
    (re.compile(r"^layer_list\.(\d+)\.(\d+)\.conv([12])\.weight$"), r"stages.\1.\2.conv\3.weight"),
    (re.compile(r"^layer_list\.(\d+)\.(\d+)\.downsample\.0\.weight$"), r"stages.\1.\2.projection.weight"),
    (re.compile(r"^final_bn\.(\w+)$"), r"norm.\1"),
)
# file head name -> (variant, our head name)
_HEADS: dict[str, tuple[str, str]] = {
    "cc": ("view", "CC"),
    "mlo": ("view", "MLO"),
    "lcc": ("image", "L-CC"),
    "rcc": ("image", "R-CC"),
    "lmlo": ("image", "L-MLO"),
    "rmlo": ("image", "R-MLO"),
}
_HEAD_KEY = re.compile(r"^(fc1|output_layer)_([a-z]+)\.(?:fc_layer\.)?(weight|bias)$")
_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # first pickle of a legacy (pre-zip) torch.save file


@dataclass
class NyuImportReport:
    """What :func:`load_nyu_state_dict` did.

    Attributes:
        source: the weight file.
        variant: the file's model, ``"view"`` (view-wise) or ``"image"`` (image-wise).
        aliases: ``{"cc": [...], "mlo": [...]}`` the column aliases found (and verified identical).
        loaded: model keys that received a tensor.
        skipped: file keys deliberately not loaded (heads, or the other column).
        missing: model keys the file did not provide (BN ``num_batches_tracked`` of old files,
            heads not loaded).
    """

    source: str
    variant: str
    aliases: dict[str, list[str]] = field(default_factory=dict)
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def _to_tensor(value: Any, key: str, source: Path) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (np.ndarray, np.generic)):
        return torch.from_numpy(np.array(value))  # a C-contiguous copy, 0-d arrays kept 0-d
    raise MammoDataError(f"entry {key!r} is a {type(value).__name__}, not a tensor", source=source)


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # refused globals, corrupt archives
        raise MammoDataError(
            f"cannot be read as weights only (arbitrary pickled objects are refused, never run): {exc}",
            source=path,
        ) from exc


def read_nyu_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a weight file safely into a flat ``{key: tensor}`` state dict.

    Args:
        path: a torch file (zip or legacy) or plain pickle holding a state dict, optionally
            under the key ``"model"`` (NYU's layout; other top-level entries are ignored).

    Returns:
        the state dict (numpy arrays of plain pickles converted to tensors).

    Raises:
        MammoDataError: missing, corrupt or unsafe file (a forbidden global is never called),
            or not a non-empty mapping of string keys to tensors/arrays.

    Example:
        >>> state = read_nyu_state_dict("sample_image_model.p")  # doctest: +SKIP
        >>> state["four_view_resnet.cc.first_conv.weight"].shape  # doctest: +SKIP
        torch.Size([16, 1, 7, 7])
    """
    source = Path(path)
    if not source.is_file():
        raise MammoDataError("weight file not found", source=source)
    if zipfile.is_zipfile(source):
        obj = _torch_load(source)
    else:
        with source.open("rb") as stream:
            obj = restricted_load(stream, allow_numpy=True)
        if isinstance(obj, int) and obj == _TORCH_LEGACY_MAGIC:
            obj = _torch_load(source)
    if isinstance(obj, Mapping) and "model" in obj:
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not obj:
        raise MammoDataError(
            f"not a state dict (a non-empty mapping): got {type(obj).__name__}", source=source
        )
    state: dict[str, torch.Tensor] = {}
    converted: dict[int, torch.Tensor] = {}  # an array pickled under several keys stays one tensor
    for key, value in obj.items():
        if not isinstance(key, str):
            raise MammoDataError(f"not a state dict: key {key!r} is not a string", source=source)
        if id(value) not in converted:
            converted[id(value)] = _to_tensor(value, key, source)
        state[key] = converted[id(value)]
    return state


def _map_column_key(key: str) -> str | None:
    for pattern, replacement in _COLUMN_KEYS:
        if pattern.match(key):
            return pattern.sub(replacement, key)
    return None


def _identical(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same values; a saved state dict of tied modules stores each tensor once (a shared view)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    same_view = (
        a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
        and a.storage_offset() == b.storage_offset()
        and a.stride() == b.stride()
    )
    return same_view or torch.equal(a, b)


def _dedupe_columns(
    state: Mapping[str, torch.Tensor], source: Path
) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, list[str]]]:
    """``{angle: {our column key: tensor}}`` after checking that every alias holds the same tensors."""
    by_alias: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if not key.startswith(_COLUMN_PREFIX):
            continue
        alias, _, rest = key[len(_COLUMN_PREFIX) :].partition(".")
        if alias not in _ALIAS_ANGLE:
            raise MammoDataError(
                f"unknown column {alias!r} (expected one of {sorted(_ALIAS_ANGLE)})", f"{source}: {key}"
            )
        by_alias.setdefault(alias, {})[rest] = value
    columns: dict[str, dict[str, torch.Tensor]] = {}
    aliases: dict[str, list[str]] = {}
    for angle, names in NYU_COLUMN_ALIASES.items():
        present = [a for a in names if a in by_alias]
        if not present:
            raise MammoDataError(
                f"no {angle.upper()} column ({_COLUMN_PREFIX}{{{','.join(names)}}}.*)", source
            )
        first = by_alias[present[0]]
        for alias in present[1:]:
            other = by_alias[alias]
            for rest in sorted(set(first) ^ set(other)):
                holder = present[0] if rest in first else alias
                raise MammoDataError(
                    f"column aliases differ: only {holder!r} has this key",
                    f"{source}: {_COLUMN_PREFIX}{holder}.{rest}",
                )
            for rest, tensor in first.items():
                if not _identical(tensor, other[rest]):
                    raise MammoDataError(
                        f"column aliases differ: {_COLUMN_PREFIX}{alias}.{rest} is not identical to "
                        f"{_COLUMN_PREFIX}{present[0]}.{rest} (not a file of tied L/R columns)",
                        source,
                    )
        mapped = {}
        for rest, tensor in first.items():
            ours = _map_column_key(rest)
            if ours is None:
                raise MammoDataError("unknown column key", f"{source}: {_COLUMN_PREFIX}{present[0]}.{rest}")
            mapped[ours] = tensor
        columns[angle] = mapped
        aliases[angle] = present
    return columns, aliases


def _split_heads(
    state: Mapping[str, torch.Tensor], source: Path
) -> tuple[str, dict[str, dict[str, torch.Tensor]]]:
    """The file's variant and ``{our head: {"fc1.weight": ..., "output.bias": ...}}``."""
    heads: dict[str, dict[str, torch.Tensor]] = {}
    variants = set()
    for key, value in state.items():
        if key.startswith(_COLUMN_PREFIX):
            continue
        match = _HEAD_KEY.match(key)
        if match is None or match.group(2) not in _HEADS:
            raise MammoDataError("unexpected key (neither a column nor a known head)", f"{source}: {key}")
        layer, name, kind = match.groups()
        if (layer == "output_layer") != (".fc_layer." in key):
            raise MammoDataError("unexpected head key layout", f"{source}: {key}")
        variant, head = _HEADS[name]
        variants.add(variant)
        heads.setdefault(head, {})[f"{'fc1' if layer == 'fc1' else 'output'}.{kind}"] = value
    if len(variants) > 1:
        raise MammoDataError("the file mixes view-wise (cc/mlo) and image-wise (lcc/...) heads", source)
    return (variants.pop() if variants else "none"), heads


def _plan(
    target: Mapping[str, torch.Tensor],
    provided: Mapping[str, torch.Tensor],
    prefix: str,
    source: Path,
    report: NyuImportReport,
) -> dict[str, torch.Tensor]:
    """Check one module's tensors against the file's; return ``{model key: tensor}`` to copy."""
    updates = {}
    for key, tensor in provided.items():
        if key not in target:
            raise MammoDataError(f"the model has no {prefix}{key}", source)
        if tensor.shape != target[key].shape:
            hint = (
                " (1 input channel = image-only weights, 3 = image + heatmaps)"
                if key == "conv.weight"
                else ""
            )
            raise MammoDataError(
                f"{prefix}{key}: shape {tuple(tensor.shape)} in the file, {tuple(target[key].shape)} in the model"
                + hint,
                source,
            )
        updates[prefix + key] = tensor
    for key in target:
        if key in provided:
            continue
        if not key.endswith("num_batches_tracked"):
            raise MammoDataError(f"the file has no weight for {prefix}{key}", source)
        report.missing.append(prefix + key)
    return updates


def load_nyu_state_dict(
    model: MultiViewModel | ResNet22,
    path: str | os.PathLike,
    *,
    load_heads: bool = True,
    column: str = "cc",
) -> NyuImportReport:
    """Copy the tensors of one of NYU's weight files into ``model``.

    Args:
        model: a multi-view model (both columns are loaded; heads too, see ``load_heads``)
            or a single :class:`ResNet22` (receives the column named by ``column``).
        path: the weight file (see the module docstring for the formats read).
        load_heads: also load the heads; needs a model of the file's variant
            (:class:`~monai_mammo.networks.multiview.ViewWiseModel` for their view-wise files,
            :class:`~monai_mammo.networks.multiview.ImageWiseModel` for image-wise ones) with
            4 targets and 2 classes. With ``False`` only the columns are loaded (any variant).
        column: ``"cc"`` or ``"mlo"``: the column loaded into a bare :class:`ResNet22`.

    Returns:
        a :class:`NyuImportReport`.

    Raises:
        MammoDataError: unreadable or unsafe file, column aliases that are not identical,
            unknown keys, missing weights or shapes that differ (e.g. a 3-channel file into a
            1-channel model); the message names the file and the key. Nothing is copied then.
        MammoConfigError: ``load_heads`` with a model of another variant than the file's,
            an unknown ``column`` or an unsupported model type.

    Example:
        >>> from monai_mammo.networks.multiview import ImageWiseModel
        >>> report = load_nyu_state_dict(ImageWiseModel(), "ImageOnly__ModeImage_weights.p")  # doctest: +SKIP
    """
    source = Path(path)
    if column not in NYU_COLUMN_ALIASES:
        raise MammoConfigError(f"column must be one of {list(NYU_COLUMN_ALIASES)}, got {column!r}")
    if not isinstance(model, (MultiViewModel, ResNet22)):
        raise MammoConfigError(f"expected a MultiViewModel or a ResNet22, got {type(model).__name__}")
    state = read_nyu_state_dict(source)
    columns, aliases = _dedupe_columns(state, source)
    variant, heads = _split_heads(state, source)
    report = NyuImportReport(source=str(source), variant=variant, aliases=aliases)
    head_keys = sorted(k for k in state if not k.startswith(_COLUMN_PREFIX))

    targets: list[tuple[str, nn.Module, Mapping[str, torch.Tensor]]]
    if isinstance(model, ResNet22):
        targets = [("", model, columns[column])]
        other = next(a for a in NYU_COLUMN_ALIASES if a != column)
        other_prefixes = tuple(f"{_COLUMN_PREFIX}{a}." for a in aliases[other])
        report.skipped = sorted(k for k in state if k.startswith(other_prefixes)) + head_keys
    else:
        targets = [
            (f"column.{angle.upper()}.", model.column[angle.upper()], columns[angle]) for angle in columns
        ]
        if load_heads:
            if variant != model.variant or set(heads) != set(model.heads):
                raise MammoConfigError(
                    f"the file holds {variant}-wise heads {sorted(heads)} but the model is {model.variant}-wise "
                    f"with heads {sorted(model.heads)}; use load_heads=False to load the columns only",
                    source=source,
                )
            targets += [(f"heads.{head}.", model.heads[head], heads[head]) for head in sorted(heads)]
        else:
            report.skipped = head_keys
            report.missing = sorted(k for k in model.state_dict() if k.startswith("heads."))

    updates: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for prefix, module, provided in targets:
        own = module.state_dict()
        for key, tensor in _plan(own, provided, prefix, source, report).items():
            updates[key] = (own[key[len(prefix) :]], tensor)
    with torch.no_grad():
        for destination, tensor in updates.values():
            destination.copy_(tensor)
    report.loaded = sorted(updates)
    report.missing = sorted(report.missing)
    return report
