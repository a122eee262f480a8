"""Cache the deterministic preprocessing of mammograms: :func:`cached_dataset`.

Loading a 3328 x 2560 16-bit mammogram, cropping it to the breast, orienting it and resizing it
costs about a quarter of a second per image on one core, every epoch. The deterministic part of
the transform chain can instead be computed once and reused:

- ``cache="none"`` (default): a plain :class:`monai.data.Dataset`, nothing is kept.
- ``cache="memory"``: :class:`monai.data.CacheDataset` (a
      :class:`~monai_mammo.data.skipping.SkippingCacheDataset`: an item whose preprocessing
      raises a project error is kept as that error, for :class:`~monai_mammo.data.skipping.SkipBadSamples`); every preprocessed item is held in RAM
  (computed when the dataset is built, by ``num_workers`` threads).
- ``cache="disk"``: :class:`MetaPersistentDataset` (a :class:`monai.data.PersistentDataset`);
  each preprocessed item is written to ``cache_dir`` as a ``.pt`` file on first use and read
  back afterwards, also by later runs and other processes.

Only the deterministic prefix is cached: MONAI runs the transforms up to (excluding) the first
one that is random (:class:`monai.transforms.RandomizableTrait`) or not a MONAI ``Transform``,
caches that result, and applies the rest (augmentation) to a copy on every access. It looks at
the transforms held directly by the ``Compose``: a nested ``Compose`` is ``Randomizable`` and ends
the cached part (see :func:`cached_prefix`), so keep the deterministic transforms at the top level.

Disk cache key: the file name is ``<item hash><transform fingerprint>.pt``, both SHA-256 hex
digests (64 characters each): the item hash is MONAI's ``pickle_hashing`` of the datalist item
(file names, labels...), the fingerprint is :func:`transform_fingerprint` of the cached prefix.
MONAI's own ``hash_transform`` options are not used: ``json_hashing`` cannot serialise transform
objects and falls back to the class names only (a changed resize size or crop margin would reuse
stale crops), and ``pickle_hashing`` hashes pickled objects whose bytes are not guaranteed
stable across processes (set order, object state). The fingerprint hashes the class names and
instance attributes instead, so the same parameters give the same files in every process and any
changed parameter gives new ones (the stale files stay until ``cache_dir`` is deleted).
"""

from __future__ import annotations

import enum
import hashlib
import importlib
import inspect
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import Dataset, PersistentDataset, get_track_meta
from monai.transforms import Compose, RandomizableTrait, Transform
from monai.utils import enums as monai_enums

from monai_mammo.data.skipping import SkippingCacheDataset
from monai_mammo.exceptions import MammoConfigError

__all__ = [
    "CACHE_MODES",
    "CACHE_SAFE_GLOBALS",
    "FINGERPRINT_VERSION",
    "MetaPersistentDataset",
    "cached_dataset",
    "cached_prefix",
    "transform_fingerprint",
]

CACHE_MODES = ("none", "memory", "disk")
#: bumped when the description hashed by :func:`transform_fingerprint` changes (new cache keys)
FINGERPRINT_VERSION = 1

_RANDOM_STATES = (np.random.RandomState, np.random.Generator, torch.Generator)
_MONAI_ENUMS = [
    obj
    for obj in vars(monai_enums).values()
    if isinstance(obj, type) and issubclass(obj, enum.Enum) and obj.__module__ == monai_enums.__name__
]
try:  # numpy >= 2
    _multiarray = importlib.import_module("numpy._core.multiarray")
except ImportError:  # numpy 1.26
    _multiarray = importlib.import_module("numpy.core.multiarray")
_NUMPY_GLOBALS: list[Any] = [
    np.ndarray,
    np.dtype,
    _multiarray._reconstruct,
    _multiarray.scalar,
    *{
        type(np.dtype(t))
        for t in (bool, np.uint8, np.int16, np.uint16, np.int32, np.int64, np.float32, np.float64)
    },
]
#: globals that ``torch.load(weights_only=True)`` may rebuild from a cache file: numpy arrays,
#: dtypes and scalars (``spatial_shape``, affines) and MONAI's string enums (traced operations)
CACHE_SAFE_GLOBALS: list[Any] = _NUMPY_GLOBALS + _MONAI_ENUMS


def _is_cache_boundary(transform: Any) -> bool:
    """MONAI's rule for where caching stops: a random transform or a callable that is no ``Transform``."""
    return isinstance(transform, RandomizableTrait) or not isinstance(transform, Transform)


def _as_compose(transform: Callable | Sequence[Callable]) -> Compose:
    """``transform`` as a :class:`monai.transforms.Compose` (as the cached datasets wrap it)."""
    return transform if isinstance(transform, Compose) else Compose(transform)


def cached_prefix(transform: Callable | Sequence[Callable]) -> list[Callable]:
    """The transforms whose output a cached dataset stores (MONAI's rule).

    MONAI looks at the transforms held directly by the ``Compose``: a nested ``Compose`` counts
    as random (``Compose`` is ``Randomizable``), so it ends the cached part. Keep the
    deterministic transforms at the top level.

    Args:
        transform: a transform, a :class:`monai.transforms.Compose` or a sequence of transforms.

    Returns:
        The transforms before the first random one (or the first callable that is not a MONAI
        ``Transform``).

    Example::

        prefix = cached_prefix([LoadMammogramd("image"), RandFlipd("image", prob=0.5)])
        # [LoadMammogramd]
    """
    chain = _as_compose(transform)
    end = chain.get_index_of_first(_is_cache_boundary)
    return list(chain.transforms if end is None else chain.transforms[:end])


def _hashed_prefix(transform: Callable | Sequence[Callable]) -> list[Callable]:
    """The transforms MONAI passes to ``hash_transform``: the same rule on the flattened chain.

    Equal to :func:`cached_prefix` without nested ``Compose``; with them it may hold more
    transforms than are cached (more cache keys, never a stale one).
    """
    prefix = []
    for item in _as_compose(transform).flatten().transforms:
        if _is_cache_boundary(item):
            break
        prefix.append(item)
    return prefix


def _describe(value: Any, path: frozenset[int]) -> Any:
    """A JSON-able description of ``value`` that contains no memory address or random state."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return {"enum": _qualname(type(value)), "value": _describe(value.value, path)}
    if isinstance(value, (torch.dtype, np.dtype)):
        return {"dtype": str(value)}
    if isinstance(value, type) or inspect.isroutine(value):
        return {"ref": _qualname(value)}
    if isinstance(value, _RANDOM_STATES):
        return {"random_state": _qualname(type(value))}
    if isinstance(value, (np.ndarray, np.generic, torch.Tensor)):
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        digest = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
        return {"array": str(array.dtype), "shape": list(array.shape), "sha256": digest}
    if id(value) in path:
        return {"cycle": _qualname(type(value))}
    path = path | {id(value)}
    if isinstance(value, Mapping):
        return {
            "mapping": {
                json.dumps(_describe(k, path), sort_keys=True): _describe(v, path) for k, v in value.items()
            }
        }
    if isinstance(value, (list, tuple)):
        return [_describe(v, path) for v in value]
    if isinstance(value, (set, frozenset)):
        return {"set": sorted(json.dumps(_describe(v, path), sort_keys=True) for v in value)}
    if isinstance(value, os.PathLike):
        return {"path": os.fspath(value)}
    state = getattr(value, "__dict__", None)
    attributes = {} if state is None else {k: v for k, v in state.items() if not k.startswith("__")}
    return {"class": _qualname(type(value)), "attributes": _describe(attributes, path)}


def _qualname(obj: Any) -> str:
    """``module.QualifiedName`` of a class or function."""
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _fingerprint_of(transforms: Sequence[Callable]) -> str:
    """SHA-256 hex digest of the description of ``transforms`` (already the cached prefix)."""
    description = {
        "version": FINGERPRINT_VERSION,
        "transforms": [_describe(t, frozenset()) for t in transforms],
    }
    dump = json.dumps(description, sort_keys=True, allow_nan=True).encode("utf-8")
    return hashlib.sha256(dump).hexdigest()


def transform_fingerprint(transform: Callable | Sequence[Callable]) -> str:
    """A stable hash of the deterministic transforms whose output is cached.

    Hashes, for each deterministic transform before the first random one (:func:`cached_prefix`,
    nested ``Compose`` flattened as MONAI's ``hash_transform`` sees them), its class
    (``module.QualifiedName``) and its instance attributes, recursively (nested transforms,
    readers, tuples, dicts, enums, arrays by content); random states are reduced to their type. Nothing depends on memory addresses or
    on the process, so the same parameters give the same fingerprint in every process, and any
    changed parameter (resize size, crop margin, foreground mode, keys...) gives another one.
    Changes of a transform's code that keep its attributes are not seen: use a new ``cache_dir``.

    Args:
        transform: a transform, a ``Compose`` or a sequence of transforms.

    Returns:
        64 hexadecimal characters (SHA-256), the suffix of the disk cache's file names.

    Example::

        a = transform_fingerprint([LoadMammogramd("image"), Resized("image", (1152, 896))])
        b = transform_fingerprint([LoadMammogramd("image"), Resized("image", (576, 448))])
        assert a != b and len(a) == 64
    """
    return _fingerprint_of(_hashed_prefix(transform))


def _hash_transforms(transforms: Sequence[Callable]) -> bytes:
    """``hash_transform`` of :class:`monai.data.PersistentDataset` (it passes the cached prefix)."""
    return _fingerprint_of(transforms).encode("utf-8")


class MetaPersistentDataset(PersistentDataset):
    """:class:`monai.data.PersistentDataset` that keys its files with :func:`transform_fingerprint`
    and can read MetaTensor metadata back.

    MONAI reads cache files with ``torch.load(weights_only=True)``, which refuses the numpy arrays
    (``spatial_shape``, ``original_affine``) and MONAI enums (traced operations) found in the
    metadata of loaded images; MONAI then warns "Corrupt cache file detected", deletes the file
    and recomputes it, so the cache never hits. This class allows exactly those globals
    (:data:`CACHE_SAFE_GLOBALS`: array, dtype and scalar reconstruction, MONAI string enums),
    still refusing any other code in the file. Metadata of another type still falls back to
    recomputing, with MONAI's warning. The allow-list is added for the duration of each lookup
    (``torch.serialization.safe_globals`` is process-wide): with several threads reading one
    dataset, a lookup may find it already removed and recompute its item (never a wrong result).

    Args:
        data: the datalist (items are hashed with MONAI's ``pickle_hashing``).
        transform: the transform chain.
        cache_dir: folder of the ``<item hash><transform fingerprint>.pt`` files (created).
        track_meta: keep MetaTensors with their metadata in the cache (default: MONAI's global
            ``get_track_meta()``, so cached and freshly computed items have the same type).

    Example::

        ds = MetaPersistentDataset(datalist, transform, cache_dir="cache/shen_1152x896")
    """

    def __init__(
        self,
        data: Sequence,
        transform: Sequence[Callable] | Callable,
        cache_dir: str | os.PathLike,
        track_meta: bool | None = None,
    ) -> None:
        super().__init__(
            data,
            transform,
            cache_dir=Path(cache_dir),
            hash_transform=_hash_transforms,
            track_meta=get_track_meta() if track_meta is None else track_meta,
        )

    def _cachecheck(self, item_transformed: Any) -> Any:
        """MONAI's cache lookup, with the metadata globals allowed while reading."""
        with torch.serialization.safe_globals(CACHE_SAFE_GLOBALS):
            return super()._cachecheck(item_transformed)


def cached_dataset(
    data: Sequence,
    transform: Callable | Sequence[Callable],
    cache: str = "none",
    cache_dir: str | os.PathLike | None = None,
    cache_rate: float = 1.0,
    num_workers: int | None = None,
    progress: bool = False,
) -> Dataset:
    """A MONAI dataset that caches the deterministic preprocessing, or not.

    Memory: ``"memory"`` holds every preprocessed item in RAM for the dataset's lifetime, e.g.
    3.9 MiB per 1152 x 896 float32 image (10,000 images: 39 GiB), up to 32.5 MiB for an uncropped
    3328 x 2560 one. ``"none"`` (default) holds nothing; ``"disk"`` holds one item at a time and
    writes about the same bytes per item to ``cache_dir``. No stage keeps a whole dataset of
    images in RAM unless ``"memory"`` is asked for.

    Args:
        data: the datalist (list of dicts, e.g. ``{"image": path, "label": 1}``).
        transform: the whole transform chain; only its prefix up to the first random transform
            is cached (:func:`cached_prefix`), the rest runs on every access.
        cache: ``"none"``, ``"memory"`` or ``"disk"``.
        cache_dir: folder of the disk cache (required for ``"disk"``, unused otherwise); files
            are named ``<item hash><transform_fingerprint(transform)>.pt``, so one folder can
            hold caches of several preprocessing settings.
        cache_rate: fraction of the items cached in memory (``"memory"`` only), in (0, 1].
        num_workers: threads computing the memory cache when the dataset is built (None: one
            per CPU; ``"memory"`` only; the disk cache is filled by the DataLoader's workers).
        progress: show a progress bar while the memory cache is computed.

    Returns:
        :class:`monai.data.Dataset`, :class:`~monai_mammo.data.skipping.SkippingCacheDataset` or
        :class:`MetaPersistentDataset`.

    Raises:
        MammoConfigError: unknown ``cache``, ``"disk"`` without ``cache_dir`` or ``cache_rate``
            outside (0, 1].

    Example::

        transform = Compose([LoadMammogramd("image"), CropBreastd("image"), OrientBreastd("image"),
                             Resized("image", (1152, 896)), RandFlipd("image", prob=0.5)])
        ds = cached_dataset(datalist, transform, cache="disk", cache_dir="cache/preprocessed")
    """
    if cache not in CACHE_MODES:
        raise MammoConfigError(
            f"unknown cache mode {cache!r}; expected one of {', '.join(CACHE_MODES)}", "cache"
        )
    if not 0.0 < cache_rate <= 1.0:
        raise MammoConfigError(f"cache_rate must be in (0, 1], got {cache_rate}", "cache_rate")
    if cache == "disk":
        if cache_dir is None:
            raise MammoConfigError("cache='disk' needs a cache_dir (folder of the cached items)", "cache_dir")
        return MetaPersistentDataset(data, transform, cache_dir=cache_dir)
    if cache == "memory":
        return SkippingCacheDataset(
            data, transform, cache_rate=cache_rate, num_workers=num_workers, progress=progress
        )
    return Dataset(data, transform)
