"""End-of-run figures for trackers: the test split's reliability diagram and confusion matrix, as RGB arrays.

The reliability diagram is :func:`kdlab.analysis.plots.build_reliability_figure` (the report's own figure, bins of
:func:`kdlab.metrics.calibration.reliability_bins`); the confusion matrix is drawn here. Figures are rendered by the
Agg canvas without ``pyplot`` (nothing global is touched) into ``H x W x 3`` uint8 arrays, which every tracker
stores as an image.
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

#: Class counts up to this many get each cell's count written in it.
ANNOTATE_UP_TO = 20


def confusion_counts(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``counts[true, predicted]`` of the top-1 predictions, K x K for K = the number of logits per sample."""
    k = logits.shape[1]
    predicted = np.asarray(logits).argmax(axis=1)
    return np.bincount(np.asarray(labels, dtype=np.int64) * k + predicted, minlength=k * k).reshape(k, k)


def confusion_figure(logits: np.ndarray, labels: np.ndarray, title: str = "test") -> Figure:
    """The confusion matrix, each row normalised to the share of its class (colour), counts written in small ones."""
    counts = confusion_counts(logits, labels)
    k = counts.shape[0]
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = min(3.0 + 0.35 * k, 12.0)
    fig = Figure(figsize=(size + 1.0, size), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, label="share of the true class")
    if k <= ANNOTATE_UP_TO:
        for i in range(k):
            for j in range(k):
                if counts[i, j]:
                    ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize="small",
                            color="white" if shares[i, j] > 0.5 else "black")
        ax.set_xticks(range(k))
        ax.set_yticks(range(k))
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{title}  accuracy {accuracy:.3f}, n = {int(counts.sum())}")
    return fig


def reliability_figure(logits: np.ndarray, labels: np.ndarray, title: str = "test") -> Figure:
    from kdlab.analysis.plots import build_reliability_figure

    return build_reliability_figure([(title, logits, labels)])


def to_rgb(fig: Figure, dpi: int = 100) -> np.ndarray:
    """``fig`` rendered as an ``H x W x 3`` uint8 array (its artists released afterwards)."""
    try:
        fig.set_dpi(dpi)
        canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
        canvas.draw()
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()
    finally:
        fig.clear()
