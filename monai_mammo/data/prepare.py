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

__all__ = ["SYNTHETIC_MARKER", "ensure_synthetic_dataset", "prepare_datalist", "datalist_digest"]

logger = logging.getLogger(__name__)

SYNTHETIC_MARKER = ".monai_mammo_synthetic.json"


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

    Args:
        dataset_dir: the dataset root.
        dataset_format: indexer name.
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

    result = index_dataset(dataset_format, dataset_dir, on_error=on_error)
    items = result.items
    if require_label:
        for item in items:
            if item.get("label") is None:
                result.summary.skip(item.get("image", "?"), "no_label", "image has no binary label")
        items = [item for item in items if item.get("label") is not None]
    if not items:
        raise MammoDataError(f"no labelled image indexed ({result.summary.format()})", dataset_dir)
    logger.info(result.summary.format())
    splits = split_by_patient(items, ratios=tuple(ratios), seed=seed, use_official=use_official)
    body: dict[str, Any] = {name: splits.get(name, []) for name in ("training", "validation", "test")}
    hygiene = check_datalist(body, on_duplicate=on_duplicate, by=duplicate_by)
    body["summary"] = result.summary.to_dict() | {"hygiene": hygiene.to_dict()}
    body["digest"] = datalist_digest(items)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(body, indent=1, default=str))
    return body
