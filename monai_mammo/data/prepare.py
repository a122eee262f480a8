"""Dataset preparation for bundles: synthetic dataset on first use, indexing, patient-level splits."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai_mammo.exceptions import MammoConfigError, MammoDataError

__all__ = [
    "SYNTHETIC_MARKER",
    "DATALIST_FORMAT",
    "ensure_synthetic_dataset",
    "prepare_datalist",
    "datalist_digest",
    "load_user_datalist",
]

logger = logging.getLogger(__name__)

SYNTHETIC_MARKER = ".monai_mammo_synthetic.json"
#: ``dataset_format`` of a datalist JSON the user brings (already split) instead of a dataset folder
DATALIST_FORMAT = "datalist"
_SPLITS = ("training", "validation", "test")


def ensure_synthetic_dataset(root: str | os.PathLike, dataset_format: str, **params: Any) -> Path:
    """Generate a synthetic dataset in ``root`` unless the same one is already there (a cache).

    A marker file records the writer's parameters. The dataset is written to a ``.partial``
    sibling first and renamed when complete, so an interrupted generation is never mistaken for a
    finished one. A folder that holds anything else is never written into.

    Args:
        root: destination folder.
        dataset_format: writer name (``cbis-ddsm``, ``inbreast``, ``nyu``, ``vindr``).
        params: the writer's keyword arguments (``n_patients``, ``seed``, ``image_shape``...).

    Returns:
        ``root``.

    Raises:
        MammoConfigError: ``root`` holds another dataset (other parameters, or not synthetic).
    """
    from monai_mammo.data.synthetic.writers import write_dataset

    folder = Path(root)
    marker = folder / SYNTHETIC_MARKER
    wanted = {
        "format": dataset_format,
        **{k: list(v) if isinstance(v, tuple) else v for k, v in params.items()},
    }
    if marker.is_file():
        found = json.loads(marker.read_text())
        if found == wanted:
            return folder
        raise MammoConfigError(
            f"holds a synthetic dataset made with {found}, not {wanted}; use another folder", folder
        )
    if folder.is_dir() and any(folder.iterdir()):
        raise MammoConfigError(
            "exists and is not a synthetic dataset made by monai_mammo; refusing to write", folder
        )
    logger.info(
        "generating synthetic %s dataset in %s (first use; cached afterwards)", dataset_format, folder
    )
    partial = folder.with_name(folder.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    write_dataset(dataset_format, partial, **params)
    (partial / SYNTHETIC_MARKER).write_text(json.dumps(wanted))
    if folder.is_dir():
        folder.rmdir()  # empty (checked above)
    partial.replace(folder)
    return folder


def datalist_digest(items: Sequence[Mapping[str, Any]]) -> str:
    """A short content digest of a datalist (image paths, labels, patients), stable across runs."""
    keys = ("image", "label", "patient_id", "laterality", "view")
    rows = sorted(json.dumps({k: item.get(k) for k in keys}, sort_keys=True, default=str) for item in items)
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]


def _resolve(path: Any, base: Path) -> Any:
    """A relative path string resolved against ``base``; anything else unchanged."""
    if isinstance(path, str) and path and not os.path.isabs(path):
        return str(base / path)
    return path


def _user_item(item: Any, base: Path, source: str, where: str) -> dict[str, Any]:
    """One datalist item with its image (and finding mask) paths resolved against the JSON's folder."""
    from monai_mammo.data.schema import FINDINGS_KEY, IMAGE_KEY, MASK_KEY

    if not isinstance(item, Mapping) or not isinstance(item.get(IMAGE_KEY), str):
        raise MammoDataError(f"{where}: an item must be an object with an {IMAGE_KEY!r} path", source)
    out = dict(item)
    out[IMAGE_KEY] = _resolve(item[IMAGE_KEY], base)
    findings = item.get(FINDINGS_KEY)
    if isinstance(findings, list):
        out[FINDINGS_KEY] = [
            {**f, MASK_KEY: _resolve(f.get(MASK_KEY), base)} if isinstance(f, Mapping) else f
            for f in findings
        ]
    return out


def load_user_datalist(
    path: str | os.PathLike, require_label: bool = True, on_error: str = "skip"
) -> tuple[dict[str, list[dict[str, Any]]], Any]:
    """Read a datalist JSON the user brings (MONAI style, already split into patients' sets).

    ``{"training": [...], "validation": [...], "test": [...]}`` with items of the
    :mod:`~monai_mammo.data.schema` (``image``, ``label``, ``patient_id``, ...). Relative image
    and finding-mask paths are resolved against the JSON file's folder, as MONAI's
    ``load_decathlon_datalist`` does. ``training`` is required; the other splits may be absent.

    Args:
        path: the datalist JSON.
        require_label: drop (and count) items without a binary ``label``.
        on_error: an item whose image file is missing: ``"skip"`` (counted) or ``"raise"``.

    Returns:
        The splits and the :class:`~monai_mammo.data.indexers.IndexSummary` of what was kept
        and skipped.

    Raises:
        MammoDataError: unreadable JSON, no ``training`` list, an item without an image path, a
            missing image with ``on_error="raise"``, or nothing usable left.
        MammoConfigError: unknown ``on_error``.

    Example::

        splits, summary = load_user_datalist("my_split.json")
        print(summary.format())
    """
    from monai_mammo.data.indexers import IndexSummary
    from monai_mammo.data.schema import IMAGE_KEY, LABEL_KEY

    if on_error not in ("skip", "raise"):
        raise MammoConfigError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    source = str(path)
    try:
        body = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise MammoDataError(f"cannot read datalist JSON: {err}", source) from err
    if not isinstance(body, Mapping) or not isinstance(body.get("training"), list):
        raise MammoDataError("a datalist JSON must be an object with a 'training' list", source)
    base = Path(path).resolve().parent
    summary = IndexSummary(DATALIST_FORMAT, source)
    splits: dict[str, list[dict[str, Any]]] = {}
    for name in _SPLITS:
        raw = body.get(name, [])
        if not isinstance(raw, list):
            raise MammoDataError(f"{name!r} must be a list of items", source)
        kept = []
        for i, entry in enumerate(raw):
            summary.rows_read += 1
            item = _user_item(entry, base, source, f"{name}[{i}]")
            if not os.path.isfile(item[IMAGE_KEY]):
                if on_error == "raise":
                    raise MammoDataError(f"{name}[{i}]: image file not found", item[IMAGE_KEY])
                summary.skip(item[IMAGE_KEY], "missing_file", f"{name}[{i}]: image file not found")
                continue
            if require_label and item.get(LABEL_KEY) is None:
                summary.skip(item[IMAGE_KEY], "no_label", f"{name}[{i}]: image has no binary label")
                continue
            kept.append(item)
        splits[name] = kept
    summary.images = sum(len(v) for v in splits.values())
    if not splits["training"]:
        raise MammoDataError(f"no usable training item ({summary.format()})", source)
    return splits, summary


def prepare_datalist(
    dataset_dir: str | os.PathLike,
    dataset_format: str,
    out_path: str | os.PathLike,
    ratios: Sequence[float] = (0.765, 0.085, 0.15),
    seed: int = 0,
    use_official: bool = False,
    require_label: bool = True,
    on_error: str = "skip",
    on_duplicate: str = "warn",
    duplicate_by: Sequence[str] = ("sop_instance_uid", "pixel_hash"),
) -> dict[str, Any]:
    """Index a dataset folder, split it by patient (stratified) and write the datalist JSON.

    With ``dataset_format="datalist"``, ``dataset_dir`` is instead a datalist JSON the user
    brings, already split (see :func:`load_user_datalist`): its splits are kept as they are
    (``ratios``, ``seed`` and ``use_official`` do not apply) and go through the same guards.
    Every datalist a bundle consumes is checked here, at run start: no patient in two splits,
    duplicate images across splits reported.

    Args:
        dataset_dir: the dataset root, or the datalist JSON (``dataset_format="datalist"``).
        dataset_format: indexer name, or ``"datalist"``.
        out_path: where the datalist JSON (with ``summary`` and ``digest``) is written.
        ratios: train/validation/test fractions of patients.
        seed: split seed.
        use_official: keep the dataset's official test split (CBIS-DDSM) and draw validation from training.
        require_label: drop (and count) images without a binary label.
        on_error: indexer policy, ``skip`` or ``raise``.
        on_duplicate: the same image in two splits (same SOP Instance UID or pixel hash, see
            :func:`~monai_mammo.data.hygiene.find_duplicates`): ``"warn"`` (log the pairs),
            ``"raise"``, or ``"ignore"`` (no scan, no image read). The report (counts and
            first pairs) is stored under ``summary["hygiene"]``.
        duplicate_by: duplicate criteria; ``("sop_instance_uid",)`` reads only the DICOM
            headers (much faster on a large dataset than hashing every image's pixels).

    Returns:
        ``{"training": [...], "validation": [...], "test": [...], "summary": {...}, "digest": str}``.

    Raises:
        MammoDataError: nothing usable was indexed, a patient appears in two splits, or
            duplicate images across splits with ``on_duplicate="raise"``.
        MammoConfigError: unknown ``on_duplicate``.

    Example::

        body = prepare_datalist("/data/cbis", "cbis-ddsm", "out/datalist.json", use_official=True)
        print(body["summary"]["hygiene"]["duplicates"]["n_pairs"])
    """
    from monai_mammo.data.hygiene import check_datalist
    from monai_mammo.data.indexers import index_dataset
    from monai_mammo.data.splits import split_by_patient

    if dataset_format == DATALIST_FORMAT:
        user_splits, summary = load_user_datalist(dataset_dir, require_label=require_label, on_error=on_error)
        body: dict[str, Any] = dict(user_splits)
        items = [item for name in _SPLITS for item in user_splits[name]]
    else:
        result = index_dataset(dataset_format, dataset_dir, on_error=on_error)
        summary, items = result.summary, result.items
        if require_label:
            for item in items:
                if item.get("label") is None:
                    summary.skip(item.get("image", "?"), "no_label", "image has no binary label")
            items = [item for item in items if item.get("label") is not None]
        if not items:
            raise MammoDataError(f"no labelled image indexed ({summary.format()})", dataset_dir)
        splits = split_by_patient(items, ratios=tuple(ratios), seed=seed, use_official=use_official)
        body = {name: splits.get(name, []) for name in _SPLITS}
    logger.info(summary.format())
    hygiene = check_datalist(body, on_duplicate=on_duplicate, by=duplicate_by)
    body["summary"] = summary.to_dict() | {"hygiene": hygiene.to_dict()}
    body["digest"] = datalist_digest(items)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(body, indent=1, default=str))
    return body
