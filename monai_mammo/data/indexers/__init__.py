"""Dataset indexers: dataset folders -> MONAI datalists (see :mod:`monai_mammo.data.schema`).

Each indexer is ``index_<name>(root, *, on_error="skip", check_files=True, ...) -> IndexResult``
and is imported only when used (:data:`INDEXERS` maps a format name to ``"module:function"``).

Example::

    from monai_mammo.data.indexers import index_dataset

    result = index_dataset("cbis-ddsm", "/data/cbis-ddsm")
    print(result.summary.format())
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

from monai_mammo.data.indexers.common import IndexResult, IndexSummary, OnError, SkipRecord
from monai_mammo.exceptions import MammoConfigError

__all__ = ["INDEXERS", "get_indexer", "index_dataset", "IndexResult", "IndexSummary", "OnError", "SkipRecord"]

INDEXERS: dict[str, str] = {
    "bbox-csv": "monai_mammo.data.indexers.bbox_csv:index_bbox_csv",
    "cbis-ddsm": "monai_mammo.data.indexers.cbis_ddsm:index_cbis_ddsm",
    "inbreast": "monai_mammo.data.indexers.inbreast:index_inbreast",
    "nyu": "monai_mammo.data.indexers.nyu:index_nyu",
    "vindr": "monai_mammo.data.indexers.vindr:index_vindr",
}


def get_indexer(fmt: str) -> Callable[..., IndexResult]:
    """The indexer function of a dataset format (imported on first use).

    Args:
        fmt: a key of :data:`INDEXERS` (``"bbox-csv"``, ``"cbis-ddsm"``, ``"inbreast"``, ``"nyu"``,
            ``"vindr"``).

    Returns:
        The ``index_<name>`` function.

    Raises:
        MammoConfigError: unknown format.
    """
    if fmt not in INDEXERS:
        raise MammoConfigError(f"unknown dataset format {fmt!r}; expected one of {sorted(INDEXERS)}")
    module, function = INDEXERS[fmt].split(":")
    return getattr(importlib.import_module(module), function)  # type: ignore[no-any-return]


def index_dataset(fmt: str, root: str | os.PathLike, **kwargs: Any) -> IndexResult:
    """Index a dataset folder with the indexer of its format.

    Args:
        fmt: a key of :data:`INDEXERS`.
        root: the dataset folder.
        kwargs: passed to the indexer (``on_error``, ``check_files``, ...).

    Returns:
        The datalist items and the indexing summary.

    Raises:
        MammoConfigError: unknown format.
        MammoDataError: as raised by the indexer (unreadable folder, bad CSV, ...).

    Example::

        result = index_dataset("inbreast", "/data/INbreast", on_error="raise")
    """
    return get_indexer(fmt)(root, **kwargs)
