"""Load pickles without executing code: a restricted unpickler for exam lists and metadata.

A pickle can call any importable function while it is loaded (``os.system``,
``builtins.eval``, ...), so loading a downloaded exam list with :func:`pickle.load` runs
whatever its author put in it. :func:`restricted_load` only resolves an allow-list of
globals: the builtin containers and scalars, :class:`collections.OrderedDict` and, when
asked, the few numpy functions that rebuild arrays, dtypes and scalars. Any other global
stops the load before it is called.
"""

from __future__ import annotations

import _compat_pickle
import io
import os
import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from monai_mammo.exceptions import MammoDataError, MammoError

__all__ = ["restricted_load", "BUILTIN_GLOBALS", "NUMPY_GLOBALS"]

BUILTIN_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    [
        ("builtins", name)
        for name in (
            "dict",
            "list",
            "tuple",
            "set",
            "frozenset",
            "str",
            "bytes",
            "bytearray",
            "int",
            "float",
            "bool",
            "complex",
        )
    ]
    + [("collections", "OrderedDict"), ("_codecs", "encode")]
)
"""Globals always allowed (``None`` and the plain scalars need no global at all; protocols 0-2
spell ``bytes`` as ``_codecs.encode(text, "latin1")``, which only converts data)."""

NUMPY_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    [
        (module, name)
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name in ("_reconstruct", "scalar")
    ]
    + [(module, "_frombuffer") for module in ("numpy.core.numeric", "numpy._core.numeric")]
    + [("numpy", "ndarray"), ("numpy", "dtype")]
)
"""Globals allowed with ``allow_numpy=True``: array (protocols 2-5), dtype and scalar reconstruction."""


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose :meth:`find_class` resolves only an allow-list of globals."""

    def __init__(self, file: IO[bytes], source: str, allowed: frozenset[tuple[str, str]]) -> None:
        super().__init__(file)
        self._source = source
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        # protocol 0-2 pickles written by Python 2 name the builtins module ``__builtin__``
        key = _compat_pickle.NAME_MAPPING.get(key, (_compat_pickle.IMPORT_MAPPING.get(module, module), name))
        if key not in self._allowed:
            raise MammoDataError(
                f"forbidden global {key[0]}.{key[1]} in pickle (only builtin containers and scalars"
                " and, where enabled, numpy arrays are allowed; the file was not executed)",
                self._source,
            )
        return super().find_class(module, name)


def restricted_load(
    path_or_file: str | os.PathLike | IO[bytes],
    *,
    allowed: Iterable[tuple[str, str]] = (),
    allow_numpy: bool = False,
) -> Any:
    """Load a pickle, resolving only allow-listed globals, so that loading never runs code.

    Allowed always: ``dict, list, tuple, set, frozenset, str, bytes, bytearray, int, float,
    bool, complex`` (``None`` needs no global), ``collections.OrderedDict`` and
    ``_codecs.encode`` (how protocols 0-2 store ``bytes``).

    Args:
        path_or_file: a pickle file path or a binary file object.
        allowed: extra ``(module, name)`` globals to allow (each must be safe to call with
            arbitrary arguments: never allow ``eval``, ``getattr``, ``os.*``, ...).
        allow_numpy: also allow numpy array, dtype and scalar reconstruction
            (:data:`NUMPY_GLOBALS`), as found in pickles holding numpy values.

    Returns:
        The unpickled object.

    Raises:
        MammoDataError: the file is missing, corrupt or truncated, or references a global
            outside the allow-list (the message names the file and the global, e.g.
            ``forbidden global os.system``); nothing of a forbidden global is ever called.

    Example::

        exams = restricted_load("exam_list.pkl", allow_numpy=True)
    """
    names = frozenset(BUILTIN_GLOBALS | frozenset(allowed) | (NUMPY_GLOBALS if allow_numpy else frozenset()))
    if isinstance(path_or_file, (str, os.PathLike)):
        source = str(path_or_file)
        try:
            data = Path(path_or_file).read_bytes()
        except OSError as exc:
            raise MammoDataError(f"cannot read pickle: {exc.strerror or exc}", source) from exc
        stream: IO[bytes] = io.BytesIO(data)
    else:
        source = str(getattr(path_or_file, "name", "<pickle stream>"))
        stream = path_or_file
    try:
        return _RestrictedUnpickler(stream, source, names).load()
    except MammoError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
    ) as exc:
        raise MammoDataError(f"corrupt or truncated pickle: {type(exc).__name__}: {exc}", source) from exc
    except (ImportError, MemoryError, OverflowError, RecursionError) as exc:
        raise MammoDataError(f"unloadable pickle: {type(exc).__name__}: {exc}", source) from exc
