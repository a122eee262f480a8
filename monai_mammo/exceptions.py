"""The project's exception hierarchy.

Every error raised on user input derives from :class:`MammoError` and names the file
(or CSV row, XML ROI, datalist item) and the problem, so that a failure after hours of
training points straight at the culprit.
"""

from __future__ import annotations

import os

__all__ = [
    "MammoError",
    "MammoDataError",
    "MammoConfigError",
    "MammoDependencyError",
    "MammoGeometryError",
    "MammoSkip",
    "MammoTrainingError",
]


class MammoError(Exception):
    """Base class of every error raised by monai_mammo.

    Args:
        message: what went wrong.
        source: the file, row or item concerned (prefixed to the message when given).
    """

    def __init__(self, message: str, source: str | os.PathLike | None = None) -> None:
        self.source = None if source is None else str(source)
        self.problem = message
        super().__init__(f"{self.source}: {message}" if self.source else message)


class MammoDataError(MammoError, ValueError):
    """An input file, row or array is unreadable, inconsistent or unsupported."""


class MammoConfigError(MammoError, ValueError):
    """A configuration value, argument or datalist setting is invalid."""


class MammoDependencyError(MammoError, ImportError):
    """An optional dependency needed for this input is missing (the message names the extra)."""


class MammoGeometryError(MammoDataError):
    """An image has no usable breast region or a geometry operation cannot apply to it."""


class MammoTrainingError(MammoError, RuntimeError):
    """Training cannot go on safely (e.g. a non-finite loss); the last checkpoint is intact."""


class MammoSkip(MammoDataError):
    """A sample that is excluded by a documented rule (counted and reported, not fatal).

    Args:
        message: the rule that excluded the sample.
        source: the file or item concerned.
        reason: a short machine-readable reason code used to count skips.
    """

    def __init__(
        self, message: str, source: str | os.PathLike | None = None, reason: str = "skipped"
    ) -> None:
        super().__init__(message, source)
        self.reason = reason
