"""Writers of synthetic datasets into the real datasets' on-disk layouts.

Each writer is ``write_<name>(root, *, n_patients=..., seed=0, image_shape=..., broken=(), ...)
-> Path`` and is imported only when used (:data:`WRITERS` maps a format name to
``"module:function"``); the matching indexer reads the result back
(:mod:`monai_mammo.data.indexers`).

Example::

    from monai_mammo.data.synthetic.writers import write_dataset

    root = write_dataset("cbis-ddsm", "/tmp/cbis", n_patients=8, seed=1)
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from monai_mammo.exceptions import MammoConfigError

__all__ = ["WRITERS", "get_writer", "write_dataset"]

WRITERS: dict[str, str] = {
    "bbox-csv": "monai_mammo.data.synthetic.writers.bbox_csv:write_bbox_csv",
    "cbis-ddsm": "monai_mammo.data.synthetic.writers.cbis_ddsm:write_cbis_ddsm",
    "inbreast": "monai_mammo.data.synthetic.writers.inbreast:write_inbreast",
    "nyu": "monai_mammo.data.synthetic.writers.nyu:write_nyu",
    "vindr": "monai_mammo.data.synthetic.writers.vindr:write_vindr",
}


def get_writer(fmt: str) -> Callable[..., Path]:
    """The writer function of a dataset format (imported on first use).

    Args:
        fmt: a key of :data:`WRITERS` (``"bbox-csv"``, ``"cbis-ddsm"``, ``"inbreast"``, ``"nyu"``,
            ``"vindr"``).

    Returns:
        The ``write_<name>`` function.

    Raises:
        MammoConfigError: unknown format.
    """
    if fmt not in WRITERS:
        raise MammoConfigError(f"unknown dataset format {fmt!r}; expected one of {sorted(WRITERS)}")
    module, function = WRITERS[fmt].split(":")
    return getattr(importlib.import_module(module), function)  # type: ignore[no-any-return]


def write_dataset(fmt: str, root: str | os.PathLike, **kwargs: Any) -> Path:
    """Write a synthetic dataset in the layout of a format.

    Args:
        fmt: a key of :data:`WRITERS`.
        root: destination folder.
        kwargs: passed to the writer (``n_patients``, ``seed``, ``image_shape``, ``broken``, ...).

    Returns:
        The dataset folder.

    Raises:
        MammoConfigError: unknown format, or an invalid writer option.

    Example::

        write_dataset("vindr", "/tmp/vindr", n_patients=6, seed=0)
    """
    return get_writer(fmt)(root, **kwargs)
