"""Make ``docs/images/transforms_example.png``: breast crop, orientation and S10 patches on a real mammogram.

Loads the real NYU sample ``1_R_CC.png`` (``../shared/data/nyu_sample``, 3328 x 2560, 16 bits),
runs ``CropBreast`` (``"nyu"`` mode) and ``OrientBreast`` (chest wall to column 0), then samples an
S10 patch set (``SamplePatches``, 256-pixel patches) around an *illustrative* elliptic ROI drawn
inside the breast: the sample image has no lesion annotation, so the ROI and the class given to it
are made up for the picture. Three panels, shown at 1/4 resolution: the original with the crop
window, the cropped and oriented image, and the patches coloured by class.

Usage::

    python docs/make_transforms_figure.py                      # writes docs/images/transforms_example.png
    python docs/make_transforms_figure.py --image other.png --out /tmp/figure.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")

import matplotlib.patches as mpatches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from monai_mammo.data.schema import PatchClass  # noqa: E402
from monai_mammo.transforms import (  # noqa: E402
    CropBreast,
    LoadMammogram,
    OrientBreast,
    SamplePatches,
    breast_region,
)

DOCS = Path(__file__).resolve().parent
SAMPLE = DOCS.parent.parent / "shared" / "data" / "nyu_sample" / "1_R_CC.png"
SCALE = 4  # display downscaling
PATCH = 256
ROI_CLASS = PatchClass.MASS_MALIGNANT  # made up: the sample image has no annotation
COLOURS = {
    PatchClass.BACKGROUND: "#4fc3f7",
    PatchClass.CALC_BENIGN: "#aed581",
    PatchClass.CALC_MALIGNANT: "#ffb74d",
    PatchClass.MASS_BENIGN: "#ba68c8",
    PatchClass.MASS_MALIGNANT: "#ff5252",
}


def display(image: np.ndarray) -> np.ndarray:
    """Downscale by ``SCALE`` (area) and window to the 0.5-99.5 percentiles of the non-zero pixels."""
    small = cv2.resize(
        image.astype(np.float32),
        (image.shape[1] // SCALE, image.shape[0] // SCALE),
        interpolation=cv2.INTER_AREA,
    )
    tissue = small[small > 0]
    lo, hi = np.percentile(tissue, (0.5, 99.5)) if tissue.size else (0.0, 1.0)
    return np.clip((small - lo) / max(hi - lo, 1e-6), 0, 1)


def illustrative_roi(oriented: np.ndarray) -> np.ndarray:
    """An elliptic mask inside the breast of the oriented (chest wall left) image."""
    breast = breast_region(oriented)
    height, width = breast.shape
    cols = np.flatnonzero(breast[height // 2])
    cy, cx = int(height * 0.45), int(cols[0] + 0.4 * (cols[-1] - cols[0]))
    mask = np.zeros((height, width), np.uint8)
    cv2.ellipse(mask, (cx, cy), (150, 105), 30, 0, 360, 1, thickness=-1)
    mask = mask.astype(bool) & breast
    if not mask.any():
        raise SystemExit("the illustrative ROI fell outside the breast")
    return mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--image", type=Path, default=SAMPLE, help="a real mammogram (default: NYU 1_R_CC.png)"
    )
    parser.add_argument("--out", type=Path, default=DOCS / "images" / "transforms_example.png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not args.image.is_file():
        sys.exit(f"sample image not found: {args.image} (the NYU sample ships in ../shared/data/nyu_sample)")

    image = LoadMammogram()(args.image)
    cropped = CropBreast(mode="nyu")(image)
    oriented = OrientBreast(chest_wall="left")(cropped)
    top, bottom, left, right = cropped.meta["window_location"]
    plane = oriented[0].numpy()

    roi = illustrative_roi(plane)
    sampler = SamplePatches(patch_size=PATCH, patch_set="S10").set_random_state(args.seed)
    draws, _ = sampler.sample_centres(oriented, [torch.from_numpy(roi)[None]], [int(ROI_CLASS)])

    aspects = [image.shape[2] / image.shape[1]] + [oriented.shape[2] / oriented.shape[1]] * 2
    fig, axes = plt.subplots(1, 3, figsize=(12, 6.6), gridspec_kw={"width_ratios": aspects})
    original = display(image[0].numpy())
    axes[0].imshow(original, cmap="gray")
    axes[0].add_patch(
        mpatches.Rectangle(
            (left / SCALE, top / SCALE),
            (right - left) / SCALE,
            (bottom - top) / SCALE,
            fill=False,
            edgecolor="#ffeb3b",
            linewidth=1.5,
        )
    )
    axes[0].set_title(
        f"original {image.shape[1]} x {image.shape[2]} ({image.meta['laterality']} CC)\n"
        f"CropBreast('nyu') window: rows {top}-{bottom}, cols {left}-{right}",
        fontsize=9,
    )
    small = display(plane)
    axes[1].imshow(small, cmap="gray")
    axes[1].set_title(
        f"cropped {cropped.shape[1]} x {cropped.shape[2]} + OrientBreast\n"
        f"(chest wall at column 0, flipped_lr={oriented.meta['flipped_lr']})",
        fontsize=9,
    )
    axes[2].imshow(small, cmap="gray")
    contours, _ = cv2.findContours(roi.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    for contour in contours:
        xy = contour[:, 0, :] / SCALE
        axes[2].plot(*np.vstack([xy, xy[:1]]).T, color="white", linestyle="--", linewidth=1.2)
    x_text, y_text = contours[0][:, 0, 0].max() / SCALE + 8, contours[0][:, 0, 1].min() / SCALE
    axes[2].text(
        x_text,
        y_text,
        "illustrative ROI\n(not a real lesion)",
        color="white",
        fontsize=7,
        va="top",
        bbox={"facecolor": "black", "alpha": 0.6, "edgecolor": "none", "pad": 1.5},
    )
    for draw in draws:
        (cy, cx), label = draw.center, PatchClass(draw.label)
        axes[2].add_patch(
            mpatches.Rectangle(
                ((cx - PATCH // 2) / SCALE, (cy - PATCH // 2) / SCALE),
                PATCH / SCALE,
                PATCH / SCALE,
                fill=False,
                edgecolor=COLOURS[label],
                linewidth=1.0,
            )
        )
    counts = {c: sum(d.label == c for d in draws) for c in (ROI_CLASS, PatchClass.BACKGROUND)}
    axes[2].legend(
        handles=[
            mpatches.Patch(color=COLOURS[c], label=f"{c.name.lower()} ({counts[c]} patches)") for c in counts
        ],
        loc="lower right",
        fontsize=7,
        framealpha=0.8,
    )
    axes[2].set_title(
        f"S10 patches ({PATCH} px), SamplePatches\nROI class made up for the figure", fontsize=9
    )
    axes[2].set_xlim(-0.5, small.shape[1] - 0.5)  # patches may reach beyond the image (zero-padded)
    axes[2].set_ylim(small.shape[0] - 0.5, -0.5)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{args.image.name}: real NYU sample, shown at 1/{SCALE} resolution", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f"written: {args.out} ({args.out.stat().st_size / 1024:.0f} KiB), {len(draws)} patches")


if __name__ == "__main__":
    main()
