"""Dataset-level skip policy during training: bad samples are skipped and counted, never silently.

A sample whose loading or transform raises one of the project's errors
(:class:`~monai_mammo.exceptions.MammoError`: a corrupt DICOM, an image without breast, a
:class:`~monai_mammo.exceptions.MammoSkip` rule...) either stops the run with that error
(policy ``"raise"``) or is replaced by the next sample that loads (policy ``"skip"``). The
skip records travel with the substitute sample, through DataLoader worker processes, into
the batch under :data:`SKIPPED_KEY`, where
:class:`~monai_mammo.engines.skipping.SkippedSamplesHandler` counts and reports them.
Other exceptions are bugs and always propagate.

- :class:`SkipBadSamples`: the torch ``Dataset`` wrapper (any map-style dataset).
- :class:`SkipAwareCollate`: the ``collate_fn`` that moves the records into the batch.
- :class:`SkippingCacheDataset`: a MONAI ``CacheDataset`` whose caching survives bad items
  (MONAI's would abort in its constructor), so that they are skipped at every epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, MutableMapping, Sequence
from typing import Any

import torch
from monai.data import CacheDataset
from monai.data.utils import list_data_collate

from monai_mammo.exceptions import MammoConfigError, MammoDataError, MammoError

__all__ = [
    "SKIPPED_KEY",
    "SKIP_POLICIES",
    "find_mammo_error",
    "SkipBadSamples",
    "SkipAwareCollate",
    "SkippingCacheDataset",
]

SKIPPED_KEY = "skipped_samples"
"""Reserved sample/batch key of the skip records (ignored by MONAI's ``default_prepare_batch``)."""

SKIP_POLICIES = ("skip", "raise")


def find_mammo_error(exc: BaseException) -> MammoError | None:
    """The project error behind ``exc``, looking through wrappers such as MONAI's ``RuntimeError``.

    ``monai.transforms.apply_transform`` re-raises a failing transform's error as a
    ``RuntimeError("applying transform ...")`` chained to the original (possibly several levels
    deep, one per nested ``Compose``).

    Args:
        exc: the exception caught.

    Returns:
        The first :class:`MammoError` in the ``__cause__`` chain (``exc`` itself included), None
        when there is none (a bug, not a bad sample). ``__context__`` is not followed: an error
        raised while handling a project error is a bug.

    Example::

        try:
            dataset[3]
        except Exception as exc:
            error = find_mammo_error(exc)
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, MammoError):
            return current
        seen.add(id(current))
        current = current.__cause__
    return None


class SkipBadSamples(torch.utils.data.Dataset):
    """Wrap a map-style dataset so that samples failing with a project error are skipped or raised.

    With policy ``"skip"``, a failing index ``i`` is replaced by the first of ``i+1, i+2, ...``
    (modulo the length; deterministic) that loads, and the substitute sample carries the skip
    records under :data:`SKIPPED_KEY`: ``{"index", "source", "reason", "message"}``. Use
    :class:`SkipAwareCollate` as the DataLoader's ``collate_fn``. The wrapper keeps no state,
    so it works unchanged in DataLoader worker processes.

    Args:
        dataset: the dataset (MONAI ``Dataset``, :class:`SkippingCacheDataset`,
            ``PersistentDataset``, ``PatchDataset``, ``ExamDataset``...) returning dict samples
            or lists of dict samples (multi-sample transforms).
        policy: ``"skip"`` (count and go on) or ``"raise"`` (fail fast with the original error).
        max_tries: consecutive failing samples tolerated before giving up.
        source_key: datalist key naming the file of an item, used when the error names none.

    Raises:
        MammoConfigError: unknown ``policy`` or ``max_tries`` < 1.

    Example::

        train = SkipBadSamples(Dataset(datalist, transform), policy="skip")
        loader = DataLoader(train, batch_size=8, num_workers=4, collate_fn=SkipAwareCollate())
    """

    def __init__(
        self, dataset: Any, policy: str = "skip", max_tries: int = 10, source_key: str = "image"
    ) -> None:
        if policy not in SKIP_POLICIES:
            raise MammoConfigError(f"on_bad_sample must be one of {SKIP_POLICIES}, got {policy!r}")
        if max_tries < 1:
            raise MammoConfigError(f"max_tries must be >= 1, got {max_tries}")
        self.dataset = dataset
        self.policy = policy
        self.max_tries = max_tries
        self.source_key = source_key

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        """The sample at ``index``, or its substitute carrying the skip records.

        Raises:
            MammoError: policy ``"raise"``: the original error of the failing sample.
            MammoDataError: ``max_tries`` consecutive samples failed.
        """
        records: list[dict[str, Any]] = []
        size = len(self.dataset)
        for offset in range(min(self.max_tries, size)):
            position = (index + offset) % size
            try:
                sample = self.dataset[position]
            except Exception as exc:
                error = find_mammo_error(exc)
                if error is None:
                    raise
                if self.policy == "raise":
                    raise error from None
                records.append(self.record(position, error))
                continue
            return attach_records(sample, records) if records else sample
        failed = "; ".join(f"{r['source']}: {r['message']}" for r in records)
        raise MammoDataError(
            f"{len(records)} consecutive samples from index {index} failed to load ({failed}); "
            "the dataset is unusable, fix or remove these files"
        )

    def record(self, position: int, error: MammoError) -> dict[str, Any]:
        """The skip record of the failing sample at ``position``.

        Args:
            position: index of the sample in the wrapped dataset.
            error: the project error it raised.

        Returns:
            ``{"index", "source", "reason", "message"}``; ``source`` is the error's source, else
            the item's ``source_key``, else ``"item <position>"``.
        """
        return {
            "index": position,
            "source": error.source or self._item_source(position),
            "reason": getattr(error, "reason", type(error).__name__),
            "message": f"{type(error).__name__}: {error.problem if error.source else error}",
        }

    def _item_source(self, position: int) -> str:
        items = getattr(self.dataset, "data", getattr(self.dataset, "samples", None))
        item = items[position] if isinstance(items, Sequence) else None
        if isinstance(item, Mapping) and self.source_key in item:
            return str(item[self.source_key])
        return f"item {position}"


def attach_records(sample: Any, records: list[dict[str, Any]]) -> Any:
    """``sample`` with ``records`` under :data:`SKIPPED_KEY` (the first dict of a list of samples).

    Args:
        sample: a dict sample, or a list/tuple of dict samples (multi-sample transforms).
        records: the skip records.

    Returns:
        A shallow copy of ``sample`` carrying the records.

    Raises:
        MammoConfigError: the sample is neither (the records would be lost).
    """
    if isinstance(sample, Mapping):
        return {**sample, SKIPPED_KEY: records}
    if isinstance(sample, (list, tuple)) and sample and isinstance(sample[0], Mapping):
        return [attach_records(sample[0], records), *sample[1:]]
    raise MammoConfigError(
        f"SkipBadSamples needs dict samples (or lists of them) to report skips, got {type(sample).__name__}"
    )


class SkipAwareCollate:
    """``collate_fn`` that takes the skip records out of the samples and puts them in the batch.

    The samples are collated without the records by ``collate_fn``; the batch (a dict) gets
    the list of all records of its samples under ``key`` (always present, maybe empty), where
    :class:`~monai_mammo.engines.skipping.SkippedSamplesHandler` pops it.

    Args:
        collate_fn: the collate function of the clean samples (default: MONAI's
            ``list_data_collate``, which also flattens lists of samples).
        key: the batch key of the records.

    Raises:
        MammoConfigError: (when called) the collated batch is not a dict.

    Example::

        DataLoader(SkipBadSamples(ExamDataset(exams, LoadExam())), collate_fn=SkipAwareCollate(collate_exams))
    """

    def __init__(self, collate_fn: Callable[[Any], Any] = list_data_collate, key: str = SKIPPED_KEY) -> None:
        self.collate_fn = collate_fn
        self.key = key

    def __call__(self, batch: Sequence[Any]) -> Any:
        records: list[dict[str, Any]] = []
        collated = self.collate_fn([self._detach(sample, records) for sample in batch])
        if not isinstance(collated, MutableMapping):
            raise MammoConfigError(
                f"SkipAwareCollate needs dict batches to carry {self.key!r}, got {type(collated).__name__}"
            )
        collated[self.key] = records
        return collated

    def _detach(self, sample: Any, records: list[dict[str, Any]]) -> Any:
        if isinstance(sample, Mapping) and self.key in sample:
            records.extend(sample[self.key])
            return {k: v for k, v in sample.items() if k != self.key}
        if isinstance(sample, (list, tuple)):
            return [self._detach(s, records) for s in sample]
        return sample


class SkippingCacheDataset(CacheDataset):
    """MONAI ``CacheDataset`` that caches a project error instead of aborting, and raises it on access.

    MONAI's ``CacheDataset`` runs the deterministic transforms of every item in its constructor,
    so one corrupt file stops the run before :class:`SkipBadSamples` can act. Here a
    :class:`~monai_mammo.exceptions.MammoError` of an item is kept and raised again each time
    the item is fetched (wrap the dataset in :class:`SkipBadSamples` to skip and count it).
    Other exceptions propagate. Same arguments as ``CacheDataset``.

    Example::

        train = SkipBadSamples(SkippingCacheDataset(datalist, transform, num_workers=4))
    """

    def set_data(self, data: Sequence) -> None:
        """Set the items and cache them (see ``CacheDataset.set_data``); failures are recorded anew."""
        self._failures: dict[Hashable, MammoError] = {}
        super().set_data(data)

    def _failure_key(self, index: int) -> Hashable:
        return self.hash_func(self.data[index]) if self.hash_as_key else index % len(self.data)

    def _load_cache_item(self, idx: int) -> Any:
        try:
            return super()._load_cache_item(idx)
        except Exception as exc:
            error = find_mammo_error(exc)
            if error is None or self.runtime_cache not in (False, None):
                raise  # runtime caching: nothing is cached, the error reaches the caller directly
            self._failures[self._failure_key(idx)] = error
            return None

    def _transform(self, index: int) -> Any:
        error = self._failures.get(self._failure_key(index))
        if error is not None:
            raise error
        return super()._transform(index)
