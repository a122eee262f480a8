"""Share trained bundles: pack a bundle with its checkpoint and checksums, verify a packed bundle.

A packed bundle is a zip holding one folder ``<name>/`` (the layout MONAI's
``python -m monai.bundle download --url file:///.../<name>.zip`` extracts), with:

- ``configs/`` (every config, ``metadata.json`` verified offline against the schema shipped in
  :mod:`monai_mammo.resources`), ``docs/``, and ``LICENSE`` / ``large_files.yml`` when present;
- ``models/model.pt``: the chosen checkpoint as a bare state dict, which is what
  ``monai.bundle.load(name, bundle_dir=..., workflow_type="inference")`` loads into the
  ``network_def`` of ``configs/inference.json``;
- ``models/<key>.pt`` for every extra checkpoint (e.g. ``patch_checkpoint``: the patch
  classifier ``nyu_multiview``'s heatmaps need), also bare state dicts;
- ``models/model.ts`` optionally (TorchScript, for networks that can be traced);
- ``checksums.sha256``: the SHA-256 of every other file (``sha256sum -c`` format). MONAI's
  download checks no hash of its own; :func:`verify_bundle` checks these before it parses any
  config, because bundle configs are code (MONAI ``eval``'s them): only run trusted bundles.

The staged ``configs/inference.json`` points its ``checkpoint`` key (and each extra key) at the
shipped file, ``"$@bundle_root + '/models/model.pt'"``, so ``python -m monai.bundle run
--config_file <bundle>/configs/inference.json`` runs in a downloaded bundle without
``--checkpoint``; the bundle folder itself is never changed. Packing refuses a bundle whose
inference config names a checkpoint (``checkpoint`` or ``*_checkpoint``) the package would not
ship.

Example::

    zip_path = pack_bundle("bundles/shen_end2end", "dist", checkpoint="models/whole_image/model.pt")
    zip_path = pack_bundle(
        "bundles/nyu_multiview", "dist", checkpoint="models/cancer/model.pt",
        extra_checkpoints={"patch_checkpoint": "models/patch/model.pt"},
    )
    report = verify_bundle(zip_path)
    assert report.ok, report.errors
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from monai_mammo.exceptions import MammoConfigError, MammoDataError

__all__ = [
    "CHECKSUM_FILE",
    "CHECKPOINT_KEY",
    "VerifyReport",
    "sha256_file",
    "pack_bundle",
    "verify_bundle",
    "dummy_inputs",
    "config_code",
    "packed_checkpoint",
    "checkpoint_references",
]

CHECKSUM_FILE = "checksums.sha256"
_OPTIONAL_FILES = ("LICENSE", "large_files.yml", "large_files.yaml", "large_files.json")
_NETWORK_KEYS = ("network", "state_dict", "model")
CHECKPOINT_KEY = "checkpoint"
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PACKED = re.compile(r"\$@bundle_root \+ '/(models/[A-Za-z0-9_][A-Za-z0-9_.-]*)'")


def _schema_path() -> Path:
    return Path(str(resources.files("monai_mammo.resources") / "meta_schema.json"))


def sha256_file(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _state_dict(checkpoint: Path) -> dict[str, torch.Tensor]:
    """A checkpoint file -> the network's bare state dict (``weights_only`` loading: no code runs)."""
    try:
        content = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file becomes one typed error
        raise MammoDataError(f"cannot read the checkpoint ({type(exc).__name__}: {exc})", checkpoint) from exc
    if isinstance(content, Mapping):
        for key in _NETWORK_KEYS:
            if isinstance(content.get(key), Mapping):
                content = content[key]
                break
    if not isinstance(content, Mapping) or not all(isinstance(v, torch.Tensor) for v in content.values()):
        raise MammoDataError("the checkpoint holds no network state dict", checkpoint)
    return {str(k).removeprefix("module."): v for k, v in content.items()}


def _verify_metadata(meta_file: Path) -> None:
    from monai.bundle import verify_metadata

    try:
        verify_metadata(meta_file=str(meta_file), filepath=str(_schema_path()))
    except Exception as exc:  # noqa: BLE001 - ValidationError and friends
        raise MammoConfigError(f"metadata does not match the bundle schema: {exc}", meta_file) from exc


def _write_checksums(root: Path) -> None:
    lines = [
        f"{sha256_file(path)}  {path.relative_to(root).as_posix()}"
        for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != CHECKSUM_FILE)
    ]
    (root / CHECKSUM_FILE).write_text("\n".join(lines) + "\n")


def packed_checkpoint(filename: str) -> str:
    """The config expression of a checkpoint shipped as ``models/<filename>`` in a packed bundle.

    Example:
        >>> packed_checkpoint("model.pt")
        "$@bundle_root + '/models/model.pt'"
    """
    return f"$@bundle_root + '/models/{filename}'"


def checkpoint_references(config: Mapping[str, Any]) -> dict[str, str | None]:
    """The checkpoints an inference config names, read without evaluating it.

    A top-level key names a checkpoint when it is ``checkpoint`` or ends with ``_checkpoint``
    and holds a string, or when it holds a :func:`packed_checkpoint` expression.

    Args:
        config: a parsed ``configs/inference.json``.

    Returns:
        Key -> the package file it names (``models/...``), or None when it points elsewhere.

    Example:
        >>> checkpoint_references({"checkpoint": "$@bundle_root + '/models/model.pt'", "x": 1})
        {'checkpoint': 'models/model.pt'}
    """
    found: dict[str, str | None] = {}
    for key, value in config.items():
        if not isinstance(value, str):
            continue
        match = _PACKED.fullmatch(value)
        if match or key == CHECKPOINT_KEY or key.endswith(f"_{CHECKPOINT_KEY}"):
            found[key] = match.group(1) if match else None
    return found


def _point_checkpoints(config: dict[str, Any], files: Mapping[str, str], source: Path) -> dict[str, Any]:
    """``config`` with each key of ``files`` set to its :func:`packed_checkpoint` expression.

    Args:
        config: the bundle's parsed inference config (changed in place).
        files: config key -> file name under ``models/``; ``checkpoint`` is skipped when the
            config has no such key (the network is then only loaded by ``monai.bundle.load``).
        source: the config file, for error messages.

    Returns:
        ``config``.

    Raises:
        MammoConfigError: an extra key the config lacks, no ``bundle_root`` to resolve the paths
            from, or a checkpoint key left pointing at a file the package does not ship.
    """
    for key, filename in files.items():
        if key not in config:
            if key == CHECKPOINT_KEY:
                continue
            raise MammoConfigError(f"no key {key!r} to point at the extra checkpoint", source)
        if "bundle_root" not in config:
            raise MammoConfigError("defines no bundle_root to locate the shipped checkpoints from", source)
        config[key] = packed_checkpoint(filename)
    for key, shipped in checkpoint_references(config).items():
        if shipped is None:
            raise MammoConfigError(
                f"key {key!r} names a checkpoint the package would not ship ({config[key]}): "
                f"ship it with --extra-checkpoint {key}=FILE (extra_checkpoints={{{key!r}: FILE}})",
                source,
            )
    return config


def _checkpoint_file(bundle: Path, path: str | os.PathLike, missing: str) -> Path:
    """``path`` (relative to ``bundle`` unless absolute), which must be a file (else ``missing`` is raised)."""
    file = Path(path)
    file = file if file.is_absolute() else bundle / file
    if not file.is_file():
        raise MammoDataError(missing, file)
    return file


def _network(bundle: Path, device: str = "cpu") -> torch.nn.Module:
    """``network_def`` of the bundle's ``configs/inference.json`` (evaluates the config: trusted bundles only)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    try:
        network = parser.get_parsed_content("network_def", instantiate=True)
    except Exception as exc:  # noqa: BLE001 - config errors of any kind
        raise MammoConfigError(
            f"cannot build network_def: {exc}", bundle / "configs" / "inference.json"
        ) from exc
    return network.to(device)


def dummy_inputs(metadata: Mapping[str, Any], batch_size: int = 1) -> torch.Tensor | dict[str, torch.Tensor]:
    """Zero inputs of the shapes ``network_data_format.inputs`` declares.

    One input named ``image`` gives a tensor ``(B, C, *spatial_shape)``; several inputs (e.g. the
    four views of ``nyu_multiview``) give a dict of such tensors keyed by input name.

    Raises:
        MammoConfigError: an input without integer ``num_channels`` / ``spatial_shape``.
    """
    inputs = metadata.get("network_data_format", {}).get("inputs", {})
    tensors = {}
    for name, spec in inputs.items():
        shape = spec.get("spatial_shape", [])
        if (
            not isinstance(spec.get("num_channels"), int)
            or not all(isinstance(s, int) for s in shape)
            or not shape
        ):
            raise MammoConfigError(f"input {name!r} needs integer num_channels and spatial_shape, got {spec}")
        tensors[name] = torch.zeros(batch_size, spec["num_channels"], *shape)
    if not tensors:
        raise MammoConfigError("metadata declares no network_data_format inputs")
    return tensors["image"] if list(tensors) == ["image"] else tensors


def _export_torchscript(network: torch.nn.Module, metadata: Mapping[str, Any], path: Path) -> None:
    example = dummy_inputs(metadata)
    if isinstance(example, dict):
        raise MammoConfigError(
            "TorchScript export supports single-input networks only (this one takes several)"
        )
    try:
        traced = torch.jit.trace(network.eval(), example, check_trace=False)
        torch.jit.save(traced, str(path))
    except Exception as exc:  # noqa: BLE001 - tracing failures of any kind
        raise MammoConfigError(f"the network cannot be exported to TorchScript: {exc}") from exc


def pack_bundle(
    bundle_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    extra_checkpoints: Mapping[str, str | os.PathLike] | None = None,
    name: str | None = None,
    torchscript: bool = False,
) -> Path:
    """Pack a bundle folder and its checkpoints into ``<out_dir>/<name>.zip`` (see the module docs).

    Args:
        bundle_dir: the bundle (``configs/metadata.json`` and ``configs/inference.json`` required).
        out_dir: where the zip is written (created).
        checkpoint: the weights to ship as ``models/model.pt`` (a bare state dict or a dict
            holding it under ``network``); relative paths are taken from ``bundle_dir``;
            default ``models/model.pt``. The staged inference config's ``checkpoint`` points at it.
        extra_checkpoints: inference-config key -> more weights, shipped as ``models/<key>.pt``
            with that key pointed at them, e.g. ``{"patch_checkpoint": "models/patch/model.pt"}``.
        name: bundle name (default: the folder name).
        torchscript: also ship ``models/model.ts`` traced with the declared input shape.

    Returns:
        The zip's path.

    Raises:
        MammoConfigError: missing configs, metadata not matching the schema, an extra key that is
            not a plain name of the inference config, a checkpoint key of the inference config
            the package would not ship, a network that cannot be built or traced.
        MammoDataError: a missing or unreadable checkpoint.
    """
    bundle = Path(bundle_dir).resolve()
    name = name or bundle.name
    for required in ("metadata.json", "inference.json"):
        if not (bundle / "configs" / required).is_file():
            raise MammoConfigError(f"a bundle needs configs/{required}", bundle)
    ckpt = _checkpoint_file(
        bundle,
        checkpoint or "models/model.pt",
        "checkpoint not found: train the bundle first or pass --checkpoint",
    )
    extras = dict(extra_checkpoints or {})
    for key in extras:
        if not _KEY.fullmatch(key) or key in (CHECKPOINT_KEY, "model"):
            raise MammoConfigError(
                f"extra checkpoint key {key!r} must be a top-level inference config key other than "
                f"{CHECKPOINT_KEY!r} and 'model'"
            )
    files = {CHECKPOINT_KEY: "model.pt", **{key: f"{key}.pt" for key in extras}}
    _verify_metadata(bundle / "configs" / "metadata.json")
    inference_file = bundle / "configs" / "inference.json"
    inference = _point_checkpoints(json.loads(inference_file.read_text()), files, inference_file)
    states = {"model.pt": _state_dict(ckpt)}
    for key, path in extras.items():
        states[files[key]] = _state_dict(
            _checkpoint_file(bundle, path, f"extra checkpoint {key!r} not found")
        )
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / name
        shutil.copytree(bundle / "configs", stage / "configs")
        (stage / "configs" / "inference.json").write_text(
            json.dumps(inference, indent=4, ensure_ascii=False) + "\n"
        )
        if (bundle / "docs").is_dir():
            shutil.copytree(bundle / "docs", stage / "docs")
        for extra in _OPTIONAL_FILES:
            if (bundle / extra).is_file():
                shutil.copy2(bundle / extra, stage / extra)
        (stage / "models").mkdir()
        for filename, state in states.items():
            torch.save(state, stage / "models" / filename)
        if torchscript:
            network = _network(stage)
            network.load_state_dict(states["model.pt"])
            metadata = json.loads((stage / "configs" / "metadata.json").read_text())
            _export_torchscript(network, metadata, stage / "models" / "model.ts")
        _write_checksums(stage)
        zip_path = out / f"{name}.zip"
        with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(stage.rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(stage.parent).as_posix())
    return zip_path


@dataclass
class VerifyReport:
    """What :func:`verify_bundle` checked.

    Attributes:
        name: bundle name.
        files_checked: files whose checksum matched.
        errors: problems found (empty when the bundle is sound).
        output_shape: the forward pass's output shape (a dict per output for multi-output networks).
        expressions: every ``$``-expression and ``_target_`` of the configs as ``(file, config
            id, text)``: the code MONAI would run for this bundle, for review before running it.
    """

    name: str
    files_checked: int = 0
    errors: list[str] = field(default_factory=list)
    output_shape: Any = None
    expressions: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.errors


def _check_checksums(root: Path, report: VerifyReport) -> None:
    listing = root / CHECKSUM_FILE
    if not listing.is_file():
        report.errors.append(f"{CHECKSUM_FILE} is missing")
        return
    listed = {}
    for number, line in enumerate(listing.read_text().splitlines(), 1):
        digest, _, rel = line.partition("  ")
        if len(digest) != 64 or not rel:
            report.errors.append(f"{CHECKSUM_FILE} line {number} is malformed: {line!r}")
            continue
        listed[rel] = digest
    present = {
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != CHECKSUM_FILE
    }
    for rel in sorted(present - set(listed)):
        report.errors.append(f"{rel} is not listed in {CHECKSUM_FILE}")
    for rel, digest in sorted(listed.items()):
        path = root / rel
        if not path.is_file():
            report.errors.append(f"{rel} is listed but missing")
        elif sha256_file(path) != digest:
            report.errors.append(f"{rel} does not match its checksum")
        else:
            report.files_checked += 1


def config_code(config: Any, prefix: str = "") -> list[tuple[str, str]]:
    """The code a MONAI config runs: ``(id, text)`` of every ``$``-expression and ``_target_``.

    Args:
        config: a parsed JSON config (dicts, lists, scalars).
        prefix: id of ``config`` (``""`` for the root); ids use MONAI's ``#`` separator.

    Returns:
        Pairs in document order.

    Example:
        >>> config_code({"a": "$print(1)", "b": {"_target_": "Dataset"}, "c": 1})
        [('a', '$print(1)'), ('b#_target_', 'Dataset')]
    """
    found: list[tuple[str, str]] = []
    items = (
        config.items() if isinstance(config, dict) else enumerate(config) if isinstance(config, list) else ()
    )
    for key, value in items:
        path = f"{prefix}#{key}" if prefix else str(key)
        if isinstance(value, str) and (value.startswith("$") or key == "_target_"):
            found.append((path, value))
        elif isinstance(value, (dict, list)):
            found.extend(config_code(value, path))
    return found


def _collect_code(root: Path, report: VerifyReport) -> None:
    for path in sorted((root / "configs").glob("*.json")):
        try:
            content = json.loads(path.read_text())
        except ValueError as exc:
            report.errors.append(f"configs/{path.name} is not valid JSON: {exc}")
            continue
        report.expressions.extend((f"configs/{path.name}", cid, text) for cid, text in config_code(content))


def _check_checkpoints(root: Path, report: VerifyReport) -> None:
    config_file = root / "configs" / "inference.json"
    if not config_file.is_file():
        report.errors.append("configs/inference.json is missing")
        return
    try:
        config = json.loads(config_file.read_text())
    except ValueError:
        return  # reported by _collect_code
    for key, shipped in checkpoint_references(config).items():
        if shipped is None:
            report.errors.append(
                f"configs/inference.json key {key!r} names a checkpoint outside the package: {config[key]}"
            )
        elif not (root / shipped).is_file():
            report.errors.append(
                f"configs/inference.json key {key!r} names {shipped}, which the package lacks"
            )


def _check_forward(root: Path, report: VerifyReport) -> None:
    metadata = json.loads((root / "configs" / "metadata.json").read_text())
    network = _network(root)
    network.load_state_dict(_state_dict(root / "models" / "model.pt"))
    network.eval()
    with torch.no_grad():
        output = network(dummy_inputs(metadata, batch_size=2))
    outputs = metadata.get("network_data_format", {}).get("outputs", {})
    if isinstance(output, torch.Tensor):
        report.output_shape = tuple(output.shape)
        expected = outputs.get("pred", {}).get("num_channels")
        if output.shape[0] != 2 or (isinstance(expected, int) and output.shape[1] != expected):
            report.errors.append(
                f"forward pass gave {tuple(output.shape)}; metadata declares {expected} channels"
            )
    elif isinstance(output, Mapping):
        report.output_shape = {k: tuple(v.shape) for k, v in output.items()}
    else:
        report.errors.append(f"forward pass returned a {type(output).__name__}")


def verify_bundle(path: str | os.PathLike, *, forward: bool = True) -> VerifyReport:
    """Check a packed bundle (zip) or an unpacked one (folder): checksums, checkpoints, metadata, forward pass.

    The checksums are checked first; every checkpoint ``configs/inference.json`` names (see
    :func:`checkpoint_references`; read as JSON, not evaluated) must be a file of the package;
    the configs are parsed (and so evaluated) only when all that holds, the metadata verifies
    and ``forward`` is True.

    Args:
        path: ``<name>.zip`` as made by :func:`pack_bundle`, or the extracted ``<name>/`` folder.
        forward: build ``network_def`` from ``configs/inference.json``, load ``models/model.pt``
            and run a batch of two zero inputs of the declared shape.

    Returns:
        The report; ``report.ok`` is False when anything failed.

    Raises:
        MammoDataError: ``path`` is neither a zip with one top folder nor a folder.
    """
    source = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        if source.is_file() and zipfile.is_zipfile(source):
            with zipfile.ZipFile(source) as archive:
                names = archive.namelist()
                tops = {n.split("/", 1)[0] for n in names}
                if len(tops) != 1 or any(n.startswith("/") or ".." in Path(n).parts for n in names):
                    raise MammoDataError(
                        "a packed bundle must hold exactly one top folder and no absolute paths", source
                    )
                archive.extractall(tmp)
            root = Path(tmp) / tops.pop()
        elif source.is_dir():
            root = source
        else:
            raise MammoDataError("not a bundle zip or folder", source)
        report = VerifyReport(name=root.name)
        _check_checksums(root, report)
        _collect_code(root, report)
        _check_checkpoints(root, report)
        if not (root / "configs" / "metadata.json").is_file():
            report.errors.append("configs/metadata.json is missing")
            return report
        try:
            _verify_metadata(root / "configs" / "metadata.json")
        except MammoConfigError as exc:
            report.errors.append(str(exc))
        if forward and report.ok:
            try:
                _check_forward(root, report)
            except (MammoConfigError, MammoDataError, RuntimeError) as exc:
                report.errors.append(f"forward check failed: {exc}")
        return report
