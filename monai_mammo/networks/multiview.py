"""Multi-view breast cancer classifiers of Wu et al. (2019): view-wise, image-wise, breast-wise, joint.

Every variant has two :class:`~monai_mammo.networks.resnet22.ResNet22` columns, one shared
by L-CC and R-CC, one by L-MLO and R-MLO (as in the reference implementation; images are
flipped beforehand so that every breast faces right). Each view is passed through its column
separately (batch-norm statistics per view, as in the reference), after Gaussian input noise
(std 0.01) in training mode only. The 256-d view vectors are concatenated per head and every
head is ``Linear(n, n) -> ReLU -> Linear(n, rows * num_classes) -> reshape -> log-softmax``
with ``n = 256 x`` the head's number of views (1,024 hidden activations in total for every
variant, as in the paper):

============  ===================================  ================  ======================
variant       heads (views concatenated)            targets per head  parameters (1 / 3 ch)
============  ===================================  ================  ======================
view          CC (L-CC, R-CC), MLO (L-MLO, R-MLO)  all four          6,132,592 / 6,135,728
image         L-CC, R-CC, L-MLO, R-MLO (one view)  its breast's two  5,870,464 / 5,873,600
breast        L (L-CC, L-MLO), R (R-CC, R-MLO)     its breast's two
joint         joint (all four)                     all four
============  ===================================  ================  ======================

Targets (rows) are :data:`TARGETS` = ``left_benign, right_benign, left_malignant,
right_malignant`` when ``num_targets == 4``; any other number of targets (e.g. the BI-RADS
model, ``num_targets=1, num_classes=3``) is exam-level and covered by every head.

The image-wise heads keep the reference's output size, ``Linear(256, num_targets *
num_classes)`` (hence its parameter count and the layout of its weight files), with the
head's own targets in the first rows: L-CC's rows are ``left_benign, left_malignant`` then two
rows that are not used (the reference's single-image script reads rows 0 and 1 of these heads
as benign and malignant). The breast-wise heads output only their two rows. The image-wise
model accepts exams with missing views: only the heads of the present views are computed.

:meth:`MultiViewModel.predict` averages, per target, ``P(class 1)`` over the heads covering it
(the paper's "predictions are averaged"); NaN where no present head covers a target.

Example:
    >>> import torch
    >>> model = build_multiview("view").eval()
    >>> views = {v: torch.zeros(1, 1, 256, 224) for v in VIEWS}
    >>> outputs = model(views)
    >>> outputs["CC"].shape, model.predict(outputs).shape
    (torch.Size([1, 4, 2]), torch.Size([1, 4]))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import cast

import torch
from torch import nn

from monai_mammo.exceptions import MammoConfigError, MammoDataError
from monai_mammo.networks.resnet22 import ResNet22

__all__ = [
    "VIEWS",
    "TARGETS",
    "MULTIVIEW_VARIANTS",
    "GaussianNoise",
    "MultiViewHead",
    "MultiViewModel",
    "ViewWiseModel",
    "ImageWiseModel",
    "BreastWiseModel",
    "JointModel",
    "build_multiview",
    "target_names",
    "transfer_columns",
]

#: The four standard screening views (dict keys of a model's input).
VIEWS: tuple[str, ...] = ("L-CC", "R-CC", "L-MLO", "R-MLO")
#: The four breast-level targets, in the order of the output rows and of the CSV columns.
TARGETS: tuple[str, ...] = ("left_benign", "right_benign", "left_malignant", "right_malignant")
#: Column (angle) of each view: L/R views of one angle share a ResNet-22.
_VIEW_ANGLE: dict[str, str] = {view: view.split("-")[1] for view in VIEWS}
_SIDE_PREFIX: dict[str, str] = {"L": "left_", "R": "right_"}


def target_names(num_targets: int) -> tuple[str, ...]:
    """Names of the output rows: :data:`TARGETS` for 4 targets, else exam-level ``target_<i>``.

    Args:
        num_targets: number of targets.

    Returns:
        one name per target; names starting with ``left_``/``right_`` belong to one breast.

    Raises:
        MammoConfigError: ``num_targets < 1``.

    Example:
        >>> target_names(1)
        ('target_0',)
    """
    if num_targets < 1:
        raise MammoConfigError(f"num_targets must be >= 1, got {num_targets}")
    return TARGETS if num_targets == len(TARGETS) else tuple(f"target_{i}" for i in range(num_targets))


def _breast_rows(num_targets: int, side: str) -> list[int]:
    """Rows a breast (``"L"``/``"R"``) covers: its own targets and every exam-level one."""
    other = _SIDE_PREFIX["R" if side == "L" else "L"]
    return [i for i, name in enumerate(target_names(num_targets)) if not name.startswith(other)]


class GaussianNoise(nn.Module):
    """Add zero-mean Gaussian noise in training mode; identity in eval mode (or with ``std=0``).

    Args:
        std: standard deviation of the noise.

    Raises:
        MammoConfigError: negative ``std``.

    Example:
        >>> import torch
        >>> GaussianNoise(0.01).eval()(torch.ones(2)).tolist()
        [1.0, 1.0]
    """

    def __init__(self, std: float = 0.01) -> None:
        super().__init__()
        if std < 0:
            raise MammoConfigError(f"noise std must be >= 0, got {std}")
        self.std = float(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.std == 0:
            return x
        return x + torch.randn_like(x) * self.std

    def extra_repr(self) -> str:
        return f"std={self.std}"


class MultiViewHead(nn.Module):
    """``Linear(n, n) -> ReLU -> Linear(n, num_rows * num_classes) -> reshape -> log-softmax``.

    Args:
        in_features: length ``n`` of the concatenated view vectors (also the hidden width).
        num_rows: rows (targets) of the output layer.
        num_classes: classes per row.
        used_rows: leading rows returned (default all); the others exist only for parity
            with the reference's image-wise heads.

    Raises:
        MammoConfigError: ``used_rows`` outside ``1..num_rows``.

    Example:
        >>> import torch
        >>> MultiViewHead(512, num_rows=4, num_classes=2)(torch.zeros(3, 512)).shape
        torch.Size([3, 4, 2])
    """

    def __init__(
        self, in_features: int, num_rows: int, num_classes: int, used_rows: int | None = None
    ) -> None:
        super().__init__()
        self.num_rows = num_rows
        self.num_classes = num_classes
        self.used_rows = num_rows if used_rows is None else used_rows
        if not 1 <= self.used_rows <= num_rows:
            raise MammoConfigError(f"used_rows must be in 1..{num_rows}, got {used_rows}")
        self.fc1 = nn.Linear(in_features, in_features)
        self.relu = nn.ReLU()
        self.output = nn.Linear(in_features, num_rows * num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log-probabilities ``(B, used_rows, num_classes)`` for features ``(B, in_features)``."""
        logits = self.output(self.relu(self.fc1(x))).view(x.shape[0], self.num_rows, self.num_classes)
        return torch.log_softmax(logits[:, : self.used_rows], dim=-1)


class MultiViewModel(nn.Module):
    """Base of the four variants: two shared columns, input noise, one head per view group.

    Subclasses only choose the heads (see the module docstring).

    Args:
        heads: head name -> (views concatenated in this order, target rows it predicts).
        in_channels: input channels of every view (1 = image, 3 = image + heatmaps).
        num_targets: number of targets (rows of :meth:`predict`).
        num_classes: classes per target.
        noise_std: std of the Gaussian input noise added in training mode.
        full_output_rows: heads keep an output layer of ``num_targets`` rows, their own
            targets first (the reference's image-wise layout); otherwise one row per target.

    Attributes:
        variant: ``"view"``, ``"image"``, ``"breast"`` or ``"joint"``.
        targets: names of the target rows (:func:`target_names`).
        requires_all_views: whether :meth:`forward` needs every view of every head.
        head_views: head name -> views it concatenates.
        head_targets: head name -> rows of the targets it predicts (in its output order).
        column: ModuleDict ``{"CC": ResNet22, "MLO": ResNet22}``.
        heads: ModuleDict of :class:`MultiViewHead`.

    Raises:
        MammoConfigError: a head names an unknown view or target row, or a target no head covers.
    """

    variant: str = ""
    requires_all_views: bool = True

    def __init__(
        self,
        heads: Mapping[str, tuple[Sequence[str], Sequence[int]]],
        in_channels: int = 1,
        num_targets: int = 4,
        num_classes: int = 2,
        noise_std: float = 0.01,
        full_output_rows: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise MammoConfigError(f"num_classes must be >= 2, got {num_classes}")
        self.targets = target_names(num_targets)
        self.in_channels = in_channels
        self.num_targets = num_targets
        self.num_classes = num_classes
        self.head_views: dict[str, tuple[str, ...]] = {}
        self.head_targets: dict[str, list[int]] = {}
        for name, (views, rows) in heads.items():
            unknown = [v for v in views if v not in VIEWS] + [r for r in rows if not 0 <= r < num_targets]
            if unknown or not views or not rows:
                raise MammoConfigError(f"head {name!r}: bad views/target rows {unknown or (views, rows)}")
            self.head_views[name] = tuple(views)
            self.head_targets[name] = list(rows)
        uncovered = set(range(num_targets)) - {r for rows in self.head_targets.values() for r in rows}
        if uncovered:
            raise MammoConfigError(f"no head predicts target(s) {sorted(uncovered)}")
        self.noise = GaussianNoise(noise_std)
        self.column = nn.ModuleDict({angle: ResNet22(in_channels) for angle in ("CC", "MLO")})
        width = ResNet22.out_channels
        self.heads = nn.ModuleDict(
            {
                name: MultiViewHead(
                    width * len(self.head_views[name]),
                    num_rows=num_targets if full_output_rows else len(rows),
                    num_classes=num_classes,
                    used_rows=len(rows),
                )
                for name, rows in self.head_targets.items()
            }
        )

    def columns(self) -> dict[str, ResNet22]:
        """The column of each view (L-CC and R-CC map to the same module, as do the MLOs).

        Returns:
            ``{view: ResNet22}`` for the four :data:`VIEWS`.
        """
        return {view: cast(ResNet22, self.column[angle]) for view, angle in _VIEW_ANGLE.items()}

    def _present_heads(self, views: Mapping[str, torch.Tensor]) -> list[str]:
        needed = sorted({v for vs in self.head_views.values() for v in vs}, key=VIEWS.index)
        missing = [v for v in needed if v not in views]
        present = [h for h, vs in self.head_views.items() if all(v in views for v in vs)]
        if (missing and self.requires_all_views) or not present:
            raise MammoDataError(
                f"missing view(s) {', '.join(missing)} (the {self.variant}-wise model needs "
                f"{'every one of ' if self.requires_all_views else 'at least one of '}{', '.join(needed)})",
                source=f"{self.variant}-wise model input",
            )
        return present

    def _view_vector(self, view: str, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise MammoDataError(
                f"expected a (B, {self.in_channels}, H, W) tensor, got shape {tuple(x.shape)}", source=view
            )
        return self.column[_VIEW_ANGLE[view]](self.noise(x))

    def forward(self, views: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Log-probabilities of every head whose views are present.

        Args:
            views: view name -> images ``(B, in_channels, H, W)``, flipped to face right;
                other keys (e.g. ``"label"``) are ignored.

        Returns:
            head name -> ``(B, len(head_targets[head]), num_classes)`` log-probabilities.

        Raises:
            MammoDataError: a required view is missing (the message names it; the image-wise
                model only needs one view), or a view tensor has the wrong shape.
        """
        heads = self._present_heads(views)
        used = sorted({v for h in heads for v in self.head_views[h]}, key=VIEWS.index)
        vectors = {view: self._view_vector(view, views[view]) for view in used}
        return {h: self.heads[h](torch.cat([vectors[v] for v in self.head_views[h]], dim=1)) for h in heads}

    def predict(self, outputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Per target, the mean over the heads covering it of ``P(class 1)``.

        Args:
            outputs: a (possibly partial) result of :meth:`forward`.

        Returns:
            ``(B, num_targets)`` probabilities; NaN for a target no head in ``outputs`` covers.

        Raises:
            MammoDataError: an unknown head name or an output of the wrong shape.

        Example:
            >>> import torch
            >>> model = build_multiview("image", noise_std=0.0).eval()
            >>> out = model({"L-CC": torch.zeros(1, 1, 64, 64)})
            >>> model.predict(out).isnan().tolist()
            [[False, True, False, True]]
        """
        if not outputs:
            raise MammoDataError("no head outputs to average", source=f"{self.variant}-wise predictions")
        reference = next(iter(outputs.values()))
        batch = reference.shape[0]
        total = torch.zeros(batch, self.num_targets, dtype=reference.dtype, device=reference.device)
        count = torch.zeros(self.num_targets, dtype=reference.dtype, device=reference.device)
        for head, log_probs in outputs.items():
            rows = self.head_targets.get(head)
            expected = None if rows is None else (batch, len(rows), self.num_classes)
            if expected is None or tuple(log_probs.shape) != expected:
                raise MammoDataError(
                    f"unexpected head output {tuple(log_probs.shape)} (expected {expected}; heads: "
                    f"{list(self.head_targets)})",
                    source=head,
                )
            total[:, rows] += log_probs[:, :, 1].exp()
            count[rows] += 1
        return total / count  # 0 / 0 = NaN where nothing covers a target


class ViewWiseModel(MultiViewModel):
    """The paper's best model: heads ``"CC"`` (L-CC, R-CC) and ``"MLO"`` (L-MLO, R-MLO), all targets.

    The BI-RADS pretraining model is ``ViewWiseModel(num_targets=1, num_classes=3)``.

    Args:
        in_channels: input channels (1 = image, 3 = image + heatmaps).
        num_targets: targets per head.
        num_classes: classes per target.
        noise_std: training-mode input noise std.

    Example:
        >>> sum(p.numel() for p in ViewWiseModel().parameters())
        6132592
    """

    variant = "view"

    def __init__(
        self, in_channels: int = 1, num_targets: int = 4, num_classes: int = 2, noise_std: float = 0.01
    ) -> None:
        rows = list(range(num_targets))
        heads = {"CC": (("L-CC", "R-CC"), rows), "MLO": (("L-MLO", "R-MLO"), rows)}
        super().__init__(heads, in_channels, num_targets, num_classes, noise_std)


class ImageWiseModel(MultiViewModel):
    """One head per view predicting its breast's targets; views may be missing.

    Heads keep the reference's ``Linear(256, num_targets * num_classes)`` with the view's own
    targets in the first rows (see the module docstring).

    Args:
        in_channels: input channels (1 = image, 3 = image + heatmaps).
        num_targets: number of targets.
        num_classes: classes per target.
        noise_std: training-mode input noise std.

    Example:
        >>> model = ImageWiseModel()
        >>> model.head_targets["R-MLO"], sum(p.numel() for p in model.parameters())
        ([1, 3], 5870464)
    """

    variant = "image"
    requires_all_views = False

    def __init__(
        self, in_channels: int = 1, num_targets: int = 4, num_classes: int = 2, noise_std: float = 0.01
    ) -> None:
        heads = {view: ((view,), _breast_rows(num_targets, view[0])) for view in VIEWS}
        super().__init__(heads, in_channels, num_targets, num_classes, noise_std, full_output_rows=True)


class BreastWiseModel(MultiViewModel):
    """Heads ``"L"`` (L-CC, L-MLO) and ``"R"`` (R-CC, R-MLO), each predicting its breast's targets.

    Args:
        in_channels: input channels (1 = image, 3 = image + heatmaps).
        num_targets: number of targets.
        num_classes: classes per target.
        noise_std: training-mode input noise std.

    Example:
        >>> BreastWiseModel().head_targets
        {'L': [0, 2], 'R': [1, 3]}
    """

    variant = "breast"

    def __init__(
        self, in_channels: int = 1, num_targets: int = 4, num_classes: int = 2, noise_std: float = 0.01
    ) -> None:
        heads = {
            side: ((f"{side}-CC", f"{side}-MLO"), _breast_rows(num_targets, side)) for side in ("L", "R")
        }
        super().__init__(heads, in_channels, num_targets, num_classes, noise_std)


class JointModel(MultiViewModel):
    """One head ``"joint"`` on the four view vectors (L-CC, R-CC, L-MLO, R-MLO), all targets.

    Args:
        in_channels: input channels (1 = image, 3 = image + heatmaps).
        num_targets: number of targets.
        num_classes: classes per target.
        noise_std: training-mode input noise std.

    Example:
        >>> JointModel().heads["joint"].fc1
        Linear(in_features=1024, out_features=1024, bias=True)
    """

    variant = "joint"

    def __init__(
        self, in_channels: int = 1, num_targets: int = 4, num_classes: int = 2, noise_std: float = 0.01
    ) -> None:
        heads = {"joint": (VIEWS, list(range(num_targets)))}
        super().__init__(heads, in_channels, num_targets, num_classes, noise_std)


_VARIANT_CLASSES: dict[str, Callable[[int, int, int, float], MultiViewModel]] = {
    "view": ViewWiseModel,
    "image": ImageWiseModel,
    "breast": BreastWiseModel,
    "joint": JointModel,
}
#: Variant names accepted by :func:`build_multiview` (also with a ``-wise`` suffix).
MULTIVIEW_VARIANTS: tuple[str, ...] = tuple(_VARIANT_CLASSES)


def build_multiview(
    variant: str = "view",
    in_channels: int = 1,
    num_targets: int = 4,
    num_classes: int = 2,
    noise_std: float = 0.01,
) -> MultiViewModel:
    """Build a multi-view model by name.

    Args:
        variant: ``"view"`` (default, the paper's best), ``"image"``, ``"breast"`` or
            ``"joint"``; ``"view-wise"`` etc. are accepted too.
        in_channels: input channels (1 = image, 3 = image + heatmaps).
        num_targets: number of targets.
        num_classes: classes per target.
        noise_std: training-mode input noise std.

    Returns:
        the model.

    Raises:
        MammoConfigError: unknown variant or invalid sizes.

    Example:
        >>> type(build_multiview("breast-wise")).__name__
        'BreastWiseModel'
    """
    key = variant.lower().removesuffix("-wise").removesuffix("_wise")
    if key not in _VARIANT_CLASSES:
        raise MammoConfigError(
            f"unknown multi-view variant {variant!r}; expected one of {list(MULTIVIEW_VARIANTS)}"
        )
    return _VARIANT_CLASSES[key](in_channels, num_targets, num_classes, noise_std)


_FIRST_CONV = "conv.weight"


def transfer_columns(source: MultiViewModel, target: MultiViewModel) -> list[str]:
    """Copy the ResNet-22 columns (weights and BN statistics) of ``source`` into ``target``.

    The paper initialises the cancer model's columns from the BI-RADS model
    (``ViewWiseModel(num_targets=1, num_classes=3)``); heads are never copied (the variants
    may differ). Every tensor is copied as is, except the first convolution when ``source``
    takes 1 input channel and ``target`` takes ``C > 1``: its ``(16, 1, 7, 7)`` kernel is
    copied unchanged into each of the ``C`` input channels (not divided by ``C``), so that a
    ``target`` input ``[x, 0, ..., 0]`` gives exactly ``source``'s response to ``x``.
    All shapes are checked before anything is copied.

    Args:
        source: the pretrained model.
        target: the model to initialise (modified in place).

    Returns:
        the copied state-dict keys of ``target`` (parameters and BN buffers), sorted.

    Raises:
        MammoConfigError: either model is not a :class:`MultiViewModel`, or a tensor shape
            differs in another way than 1 -> C first-convolution channels (the message names
            the key and both shapes).

    Example:
        >>> birads = ViewWiseModel(num_targets=1, num_classes=3)
        >>> cancer = ViewWiseModel(in_channels=3)
        >>> "column.CC.conv.weight" in transfer_columns(birads, cancer)
        True
    """
    for role, model in (("source", source), ("target", target)):
        if not isinstance(model, MultiViewModel):
            raise MammoConfigError(f"{role} must be a MultiViewModel, got {type(model).__name__}")
    updates: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for angle in ("CC", "MLO"):
        src = source.column[angle].state_dict()
        dst = target.column[angle].state_dict()
        for key, value in src.items():
            name = f"column.{angle}.{key}"
            want = dst[key]
            if value.shape != want.shape:
                widen = key == _FIRST_CONV and value.shape[1] == 1 and value.shape[0] == want.shape[0]
                if not widen or value.shape[2:] != want.shape[2:]:
                    raise MammoConfigError(
                        f"cannot copy {name}: shape {tuple(value.shape)} in the source, "
                        f"{tuple(want.shape)} in the target (only 1 -> C input channels can be widened)"
                    )
                value = value.expand_as(want)
            updates[name] = (want, value)
    with torch.no_grad():
        for want, value in updates.values():
            want.copy_(value)
    return sorted(updates)
