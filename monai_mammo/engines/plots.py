"""Training-curve figure of a tracked run: one panel per stage, losses and validation rates per epoch.

Example::

    save_training_curves({"whole_image": {"train_loss": [(1, 0.7), (2, 0.5)]}}, "training_curves.png")
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["CURVE_RATE_SUFFIXES", "save_figure", "save_training_curves"]

#: Validation metrics ending in one of these (values in [0, 1]) go on a panel's right axis.
CURVE_RATE_SUFFIXES: tuple[str, ...] = ("auc", "accuracy", "f1", "sensitivity", "specificity")

Curves = Mapping[str, Sequence[tuple[int | None, float]]]


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """Lay out ``fig``, write it to ``path`` (its folder is created) and close it.

    Args:
        fig: a matplotlib figure.
        path: the image file to write (format from the suffix).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Example::

        fig, ax = plt.subplots()
        save_figure(fig, "outputs/roc.png")
    """
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


Points = list[tuple[int, float]]


def _drawable(points: Sequence[tuple[int | None, float]]) -> Points:
    """The points with an epoch and a finite value, by epoch."""
    return sorted((int(s), float(v)) for s, v in points if s is not None and math.isfinite(v))


def _split_curves(curves: Curves) -> tuple[dict[str, Points], dict[str, Points]]:
    """(losses: names ending in ``loss``, rates: ``val_`` names ending in a :data:`CURVE_RATE_SUFFIXES`)."""
    drawable = {k: _drawable(v) for k, v in curves.items()}
    drawable = {k: v for k, v in drawable.items() if v}
    losses = {k: v for k, v in drawable.items() if k.endswith("loss")}
    rates = {k: v for k, v in drawable.items() if k.startswith("val_") and k.endswith(CURVE_RATE_SUFFIXES)}
    return losses, rates


def save_training_curves(
    histories: Mapping[str, Curves], path: str | os.PathLike, dpi: int = 110
) -> Path | None:
    """Write one panel per stage: losses on the left axis, validation rates on the right, epoch on x.

    Args:
        histories: ``{stage: {metric: [(epoch, value), ...]}}``; points without an epoch (None)
            or with a non-finite value, metrics that are neither a loss (name ending in ``loss``)
            nor a validation rate (``val_`` + a :data:`CURVE_RATE_SUFFIXES` ending) and stages
            with nothing left to draw are left out.
        path: the PNG to write (its folder is created).
        dpi: resolution.

    Returns:
        The PNG's path, or None when no stage has a curve (no file is written).

    Example::

        save_training_curves({"patch": {"train_loss": [(1, 0.9), (2, 0.6)], "val_auc": [(1, 0.7), (2, 0.8)]}},
                             "outputs/training_curves.png")
    """
    panels = {stage: _split_curves(curves) for stage, curves in histories.items()}
    panels = {stage: split for stage, split in panels.items() if split[0] or split[1]}
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), dpi=dpi, squeeze=False)
    for ax, (stage, (losses, rates)) in zip(axes[0], panels.items()):
        colors = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4)  # one cycle for both axes
        for name, points in losses.items():
            ax.plot(*zip(*points), marker=".", color=next(colors), label=name)
        ax.set(title=stage, xlabel="epoch", ylabel="loss")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        handles, labels = ax.get_legend_handles_labels()
        if rates:
            right = ax.twinx()
            for name, points in rates.items():
                right.plot(*zip(*points), marker=".", linestyle="--", color=next(colors), label=name)
            right.set(ylabel="validation", ylim=(0, 1.02))
            more = right.get_legend_handles_labels()
            handles, labels = handles + more[0], labels + more[1]
        ax.legend(handles, labels, loc="best", fontsize=7)
    return save_figure(fig, path)
