"""Evaluation plots: ROC, precision-recall, reliability diagram and confusion matrix (PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.calibration import CalibrationDisplay  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay  # noqa: E402

from cxr.data import LABELS  # noqa: E402


def save_plots(probs: np.ndarray, labels: np.ndarray, threshold: float, out: str | Path) -> list[Path]:
    """Write roc.png, pr.png, reliability.png and confusion.png into ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    predicted = (np.asarray(probs) >= threshold).astype(int)
    figures = {
        "roc.png": lambda ax: RocCurveDisplay.from_predictions(labels, probs, ax=ax, name="model"),
        "pr.png": lambda ax: PrecisionRecallDisplay.from_predictions(labels, probs, ax=ax, name="model"),
        "reliability.png": lambda ax: CalibrationDisplay.from_predictions(
            labels, probs, n_bins=15, strategy="uniform", ax=ax, name="model"
        ),
        "confusion.png": lambda ax: ConfusionMatrixDisplay.from_predictions(
            labels, predicted, labels=[0, 1], display_labels=list(LABELS), ax=ax, colorbar=False
        ),
    }
    paths = []
    for name, draw in figures.items():
        fig, ax = plt.subplots(figsize=(4.5, 4))
        draw(ax)
        if name == "confusion.png":
            ax.set_title(f"threshold {threshold:.3f}")
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        paths.append(out / name)
    return paths


def save_crop_sheet(
    images_u8: list[np.ndarray], boxes: list[tuple[float, float, float, float]], titles: list[str], out: str | Path
) -> Path:
    """A grid of X-rays (uint8 2-D arrays, any size) with their lung boxes (shares of the side) drawn."""
    from matplotlib.patches import Rectangle

    columns = 8
    rows = -(-len(images_u8) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2 * columns, 2.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, (top, left, height, width), title in zip(axes.flat, images_u8, boxes, titles, strict=False):
        h, w = image.shape
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        ax.add_patch(Rectangle((left * w, top * h), width * w, height * h, fill=False, color="lime", linewidth=1.5))
        ax.set_title(title, fontsize=7)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out
