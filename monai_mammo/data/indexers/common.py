"""What every dataset indexer returns: the datalist items and an account of what was skipped."""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from monai_mammo.exceptions import MammoDataError, MammoSkip

__all__ = ["SkipRecord", "IndexSummary", "IndexResult", "OnError"]

OnError = Literal["skip", "raise"]


@dataclass(frozen=True)
class SkipRecord:
    """One excluded image, finding or row.

    Attributes:
        source: the file or ``file:row`` concerned.
        reason: short reason code (``missing_file``, ``mask_size_mismatch``, ``birads_3``, ...).
        message: human-readable explanation.
    """

    source: str
    reason: str
    message: str


@dataclass
class IndexSummary:
    """Counts of what an indexer read, kept and skipped, with the reason of every skip.

    Attributes:
        dataset: format name (``cbis-ddsm``, ``inbreast``, ``nyu``, ``vindr``).
        root: the dataset folder indexed.
        rows_read: CSV rows / XML files / exam entries read.
        images: images kept in the datalist.
        findings: findings kept.
        skipped: every exclusion, in order.
    """

    dataset: str
    root: str
    rows_read: int = 0
    images: int = 0
    findings: int = 0
    skipped: list[SkipRecord] = field(default_factory=list)

    def skip(self, source: str | os.PathLike, reason: str, message: str) -> None:
        """Record an exclusion."""
        self.skipped.append(SkipRecord(str(source), reason, message))

    def skip_error(self, error: MammoSkip | MammoDataError) -> None:
        """Record an exclusion from a project error (its reason code when it is a :class:`MammoSkip`)."""
        reason = error.reason if isinstance(error, MammoSkip) else type(error).__name__
        self.skipped.append(SkipRecord(error.source or "", reason, error.problem))

    def skip_counts(self) -> dict[str, int]:
        """Number of skips per reason code."""
        return dict(Counter(record.reason for record in self.skipped))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored under ``"summary"`` in datalist files)."""
        return {
            "dataset": self.dataset,
            "root": self.root,
            "rows_read": self.rows_read,
            "images": self.images,
            "findings": self.findings,
            "skip_counts": self.skip_counts(),
            "skipped": [record.__dict__ for record in self.skipped],
        }

    def format(self, max_listed: int = 20) -> str:
        """A short human-readable report: counts, then the first ``max_listed`` skips."""
        lines = [
            f"{self.dataset} at {self.root}: {self.rows_read} rows read, {self.images} images and "
            f"{self.findings} findings kept, {len(self.skipped)} skipped",
        ]
        lines += [f"  {reason}: {count}" for reason, count in sorted(self.skip_counts().items())]
        lines += [f"  - {r.source}: {r.message}" for r in self.skipped[:max_listed]]
        if len(self.skipped) > max_listed:
            lines.append(f"  ... and {len(self.skipped) - max_listed} more (see the datalist's summary)")
        return "\n".join(lines)


@dataclass
class IndexResult:
    """Datalist items (schema in :mod:`monai_mammo.data.schema`) and the indexing summary."""

    items: list[dict[str, Any]]
    summary: IndexSummary

    def write(self, path: str | os.PathLike, splits: dict[str, list[dict[str, Any]]] | None = None) -> Path:
        """Write a MONAI datalist JSON: the splits (or all items under ``"training"``) and the summary."""
        body: dict[str, Any] = dict(splits) if splits is not None else {"training": self.items}
        body["summary"] = self.summary.to_dict()
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(body, indent=1))
        return out
