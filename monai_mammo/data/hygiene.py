"""Data hygiene checks of split datalists: patient leakage and duplicate images across splits.

A model evaluated on an image it was trained on (the same file copied into two folders, or the
same pixels re-exported under a new SOP Instance UID) reports an optimistic score. These checks
find such images across the ``"training"``/``"validation"``/``"test"`` splits of a datalist:

- :func:`find_duplicates`: images sharing a SOP Instance UID (DICOM header, read without the
  pixels) or a pixel hash (raw ``PixelData`` bytes of uncompressed DICOM, decoded pixels
  otherwise; decoded pixels or file bytes for PNG and other files).
- :func:`check_datalist`: the guard for a datalist (prepared or user supplied): a patient in
  two splits is an error, duplicates are warned about or raised as configured.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from monai_mammo.exceptions import MammoConfigError, MammoDataError

__all__ = [
    "DUPLICATE_CRITERIA",
    "ON_DUPLICATE",
    "DuplicatePair",
    "DuplicateReport",
    "HygieneReport",
    "find_duplicates",
    "check_datalist",
    "image_keys",
]

logger = logging.getLogger(__name__)

DUPLICATE_CRITERIA = ("sop_instance_uid", "pixel_hash")
ON_DUPLICATE = ("warn", "raise", "ignore")
_PNG_SUFFIXES = (".png",)


@dataclass(frozen=True)
class DuplicatePair:
    """Two images in different splits that are the same image.

    Attributes:
        by: the criteria they share (``"sop_instance_uid"`` and/or ``"pixel_hash"``).
        split_a: split of the first image (datalist key, e.g. ``"training"``).
        path_a: first image.
        split_b: split of the second image.
        path_b: second image.
    """

    by: tuple[str, ...]
    split_a: str
    path_a: str
    split_b: str
    path_b: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "by": list(self.by),
            "split_a": self.split_a,
            "path_a": self.path_a,
            "split_b": self.split_b,
            "path_b": self.path_b,
        }


@dataclass
class DuplicateReport:
    """Duplicate images found across splits by :func:`find_duplicates`.

    Attributes:
        pairs: every cross-split pair, sorted by paths.
        images: number of distinct images examined.
        criteria: criteria used.
        unreadable: ``(path, reason)`` of images that could not be read (skipped).
    """

    pairs: list[DuplicatePair] = field(default_factory=list)
    images: int = 0
    criteria: tuple[str, ...] = DUPLICATE_CRITERIA
    unreadable: list[tuple[str, str]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Number of pairs per criterion and per pair of splits (``"training/test"``...)."""
        out: dict[str, int] = defaultdict(int)
        for pair in self.pairs:
            for criterion in pair.by:
                out[criterion] += 1
            out["/".join(sorted((pair.split_a, pair.split_b)))] += 1
        return dict(sorted(out.items()))

    def to_dict(self, max_pairs: int = 20) -> dict[str, Any]:
        """JSON-ready summary: counts and the first ``max_pairs`` pairs.

        Args:
            max_pairs: number of pairs listed (all are counted).

        Returns:
            ``{"images", "criteria", "n_pairs", "counts", "pairs", "unreadable"}``.
        """
        return {
            "images": self.images,
            "criteria": list(self.criteria),
            "n_pairs": len(self.pairs),
            "counts": self.counts(),
            "pairs": [pair.to_dict() for pair in self.pairs[:max_pairs]],
            "unreadable": [list(entry) for entry in self.unreadable[:max_pairs]],
        }

    def format(self, max_pairs: int = 5) -> str:
        """One line per pair (the first ``max_pairs``), for logs and error messages."""
        lines = [f"{len(self.pairs)} duplicate image pair(s) across splits ({self.counts()})"]
        lines += [
            f"  {p.split_a}:{p.path_a} == {p.split_b}:{p.path_b} (same {', '.join(p.by)})"
            for p in self.pairs[:max_pairs]
        ]
        if len(self.pairs) > max_pairs:
            lines.append(f"  ... and {len(self.pairs) - max_pairs} more")
        return "\n".join(lines)

    def enforce(self, on_duplicate: str, source: str | os.PathLike | None = None) -> None:
        """Apply a duplicate policy: log a warning, raise, or do nothing.

        Args:
            on_duplicate: ``"warn"``, ``"raise"`` or ``"ignore"``.
            source: the datalist or dataset named in the message.

        Raises:
            MammoDataError: ``on_duplicate="raise"`` and there are pairs (the message lists them).
            MammoConfigError: unknown policy.
        """
        _check_policy(on_duplicate)
        if not self.pairs or on_duplicate == "ignore":
            return
        if on_duplicate == "raise":
            raise MammoDataError(self.format(), source)
        logger.warning("%s%s", f"{source}: " if source else "", self.format())


@dataclass
class HygieneReport:
    """Result of :func:`check_datalist`.

    Attributes:
        patients: number of patients per split.
        images: number of items per split.
        duplicates: the cross-split duplicate report.
    """

    patients: dict[str, int]
    images: dict[str, int]
    duplicates: DuplicateReport

    def to_dict(self, max_pairs: int = 20) -> dict[str, Any]:
        """JSON-ready form (stored under ``summary["hygiene"]`` of prepared datalists)."""
        return {
            "patients": dict(self.patients),
            "images": dict(self.images),
            "patient_leakage": 0,
            "duplicates": self.duplicates.to_dict(max_pairs),
        }


def _check_policy(on_duplicate: str) -> None:
    if on_duplicate not in ON_DUPLICATE:
        raise MammoConfigError(f"on_duplicate must be one of {ON_DUPLICATE}, got {on_duplicate!r}")


def image_keys(splits: Mapping[str, Any], image_key: str = "image") -> list[tuple[str, str]]:
    """``(split, path)`` of every item of the list-valued entries of ``splits``.

    Args:
        splits: split name -> items; other values (``"summary"``, ``"digest"``) are ignored.
        image_key: item key holding the image path.

    Returns:
        The pairs in datalist order (an item without the key is left out).

    Example::

        image_keys({"training": [{"image": "a.dcm"}], "summary": {}})  # [("training", "a.dcm")]
    """
    out = []
    for name, items in splits.items():
        if not isinstance(items, (list, tuple)):
            continue
        for item in items:
            path = item.get(image_key) if isinstance(item, Mapping) else None
            if path:
                out.append((str(name), str(path)))
    return out


def _array_digest(arr: np.ndarray) -> str:
    arr = np.ascontiguousarray(arr)
    head = f"{arr.shape}|{arr.dtype.kind}{arr.dtype.itemsize}|".encode()
    return hashlib.sha256(head + arr.astype(arr.dtype.newbyteorder("<")).tobytes()).hexdigest()


def _dicom_signature(path: Path, criteria: Sequence[str], read_pixels: bool) -> dict[str, str]:
    from monai_mammo.data.dicom import read_dicom

    if "pixel_hash" not in criteria:
        ds = read_dicom(path, stop_before_pixels=True)
        uid = ds.get("SOPInstanceUID")
        return {"sop_instance_uid": str(uid)} if uid else {}
    ds = read_dicom(path)
    out = {}
    uid = ds.get("SOPInstanceUID")
    if uid and "sop_instance_uid" in criteria:
        out["sop_instance_uid"] = str(uid)
    if "PixelData" not in ds:
        return out
    syntax = ds.file_meta.get("TransferSyntaxUID")
    bits = int(ds.get("BitsAllocated", 0))
    native = syntax is not None and not syntax.is_compressed and syntax.is_little_endian
    if native and bits in (8, 16, 32):
        # uncompressed little-endian: the raw bytes are the pixel values, no decoding needed
        dtype = np.dtype(f"<{'i' if int(ds.get('PixelRepresentation', 0)) else 'u'}{bits // 8}")
        shape = [int(ds.get("NumberOfFrames", 1) or 1), int(ds.Rows), int(ds.Columns)]
        shape.append(int(ds.get("SamplesPerPixel", 1)))
        count = int(np.prod(shape))
        arr = np.frombuffer(ds.PixelData, dtype=dtype, count=count)
        out["pixel_hash"] = _array_digest(arr.reshape([s for s in shape if s > 1] or [1]))
    elif read_pixels:
        out["pixel_hash"] = _array_digest(ds.pixel_array)
    else:
        out["pixel_hash"] = hashlib.sha256(bytes(ds.PixelData)).hexdigest()
    return out


def _other_signature(path: Path, criteria: Sequence[str], read_pixels: bool) -> dict[str, str]:
    if "pixel_hash" not in criteria:
        return {}
    if read_pixels and path.suffix.lower() in _PNG_SUFFIXES:
        from PIL import Image

        with Image.open(path) as image:
            return {"pixel_hash": _array_digest(np.asarray(image))}
    return {"pixel_hash": hashlib.sha256(path.read_bytes()).hexdigest()}


def _signature(path: Path, criteria: Sequence[str], read_pixels: bool) -> dict[str, str]:
    from pydicom.misc import is_dicom

    if path.suffix.lower() not in _PNG_SUFFIXES and is_dicom(path):
        return _dicom_signature(path, criteria, read_pixels)
    return _other_signature(path, criteria, read_pixels)


def find_duplicates(
    splits: Mapping[str, Any],
    *,
    by: Sequence[str] = DUPLICATE_CRITERIA,
    read_pixels: bool = True,
    image_key: str = "image",
    on_error: str = "skip",
) -> DuplicateReport:
    """Find images that appear in two different splits.

    Two images are the same when they share any criterion of ``by``:

    - ``"sop_instance_uid"``: the DICOM SOP Instance UID (header read without the pixels when
      no pixel hash is wanted; non-DICOM files have none);
    - ``"pixel_hash"``: a hash of the pixel values (shape, type and values): the raw
      ``PixelData`` bytes of uncompressed DICOM (no decoding), the decoded array of compressed
      DICOM and of PNG. So a copy re-encoded (another transfer syntax, a new UID) is found.

    Duplicates within one split are not reported (e.g. CBIS-DDSM stores an image with a mass
    and a calcification twice, both of the same patient hence of the same split).

    Args:
        splits: split name -> datalist items (e.g. a loaded datalist; values that are not
            lists, like ``"summary"``, are ignored).
        by: criteria, a subset of :data:`DUPLICATE_CRITERIA`.
        read_pixels: decode compressed DICOM and PNG pixels for the pixel hash; False hashes
            the stored bytes instead (cheaper, but a copy stored with another compression is
            then not recognised).
        image_key: item key holding the image path.
        on_error: ``"skip"`` (an unreadable image is listed in ``unreadable``) or ``"raise"``.

    Returns:
        The report: cross-split pairs (one per pair of paths, with every criterion they
        share), the number of images examined and the unreadable ones.

    Raises:
        MammoConfigError: unknown criterion, empty ``by`` or unknown ``on_error``.
        MammoDataError: with ``on_error="raise"``, an unreadable image (naming it).

    Example::

        report = find_duplicates(json.load(open("datalist.json")))
        for pair in report.pairs:
            print(pair.split_a, pair.path_a, "==", pair.split_b, pair.path_b, pair.by)
    """
    criteria = tuple(by)
    unknown = [c for c in criteria if c not in DUPLICATE_CRITERIA]
    if not criteria or unknown:
        raise MammoConfigError(f"by must be a non-empty subset of {DUPLICATE_CRITERIA}, got {criteria}")
    if on_error not in ("skip", "raise"):
        raise MammoConfigError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    entries = sorted(set(image_keys(splits, image_key)))
    groups: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    signatures: dict[str, dict[str, str]] = {}
    unreadable = []
    for split, path in entries:
        if path not in signatures:
            try:
                signatures[path] = _signature(Path(path), criteria, read_pixels)
            except Exception as err:  # any reader failure: the file is named, not fatal by default
                if on_error == "raise":
                    raise MammoDataError(f"cannot read image for duplicate check: {err}", path) from err
                signatures[path] = {}
                unreadable.append((path, f"{type(err).__name__}: {err}"))
        for criterion, value in signatures[path].items():
            groups[(criterion, value)].append((split, path))
    shared: dict[tuple[tuple[str, str], tuple[str, str]], set[str]] = defaultdict(set)
    for (criterion, _), members in groups.items():
        for i, first in enumerate(members):
            for second in members[i + 1 :]:
                if first[0] != second[0]:
                    shared[(first, second)].add(criterion)
    pairs = [
        DuplicatePair(tuple(c for c in criteria if c in by_), a[0], a[1], b[0], b[1])
        for (a, b), by_ in sorted(shared.items())
    ]
    return DuplicateReport(pairs=pairs, images=len(signatures), criteria=criteria, unreadable=unreadable)


def check_datalist(
    datalist: Mapping[str, Any] | str | os.PathLike,
    *,
    on_duplicate: str = "warn",
    by: Sequence[str] = DUPLICATE_CRITERIA,
    read_pixels: bool = True,
    image_key: str = "image",
) -> HygieneReport:
    """Guard a datalist before training: no patient in two splits, duplicates reported.

    Args:
        datalist: a datalist mapping (``"training"``, ``"validation"``, ``"test"``, other
            keys ignored) or the path of its JSON file.
        on_duplicate: ``"warn"`` (log the pairs), ``"raise"`` or ``"ignore"`` (no scan).
        by: duplicate criteria (see :func:`find_duplicates`).
        read_pixels: see :func:`find_duplicates`.
        image_key: item key holding the image path.

    Returns:
        The report (patients and items per split, duplicate pairs).

    Raises:
        MammoDataError: a patient id in two splits (naming the ids and splits; always), an
            item without ``patient_id``, duplicates with ``on_duplicate="raise"``, or an
            unreadable datalist file.
        MammoConfigError: unknown ``on_duplicate`` or criterion.

    Example::

        report = check_datalist("datalist.json", on_duplicate="raise")
        print(report.to_dict()["duplicates"]["n_pairs"])
    """
    from monai_mammo.data.schema import PATIENT_KEY
    from monai_mammo.data.splits import assert_patient_disjoint

    _check_policy(on_duplicate)
    source = None
    if not isinstance(datalist, Mapping):
        source = str(datalist)
        try:
            datalist = json.loads(Path(datalist).read_text())
        except (OSError, ValueError) as err:
            raise MammoDataError(f"cannot read datalist JSON: {err}", source) from err
        if not isinstance(datalist, Mapping):
            raise MammoDataError("a datalist JSON must be an object of split lists", source)
    splits = {k: v for k, v in datalist.items() if isinstance(v, (list, tuple))}
    for name, items in splits.items():
        for index, item in enumerate(items):
            patient = item.get(PATIENT_KEY) if isinstance(item, Mapping) else None
            if patient is None or str(patient).strip() == "":
                raise MammoDataError(
                    f"{name}[{index}] has no {PATIENT_KEY}; patient leakage cannot be checked",
                    source or (item.get(image_key) if isinstance(item, Mapping) else None),
                )
    assert_patient_disjoint(splits)
    if on_duplicate == "ignore":
        duplicates = DuplicateReport(criteria=())
    else:
        duplicates = find_duplicates(splits, by=by, read_pixels=read_pixels, image_key=image_key)
        duplicates.enforce(on_duplicate, source)
    return HygieneReport(
        patients={name: len({str(i[PATIENT_KEY]) for i in items}) for name, items in splits.items()},
        images={name: len(items) for name, items in splits.items()},
        duplicates=duplicates,
    )
