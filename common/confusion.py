"""The confusion-matrix figure a classification run writes beside its summary
(``confusion.png``): drawn by the trainer, so it lives below the tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from common.sharpness.plots import save_figure


def plot_confusion(report: dict[str, Any], stem: str | Path, *, title: str = "") -> list[Path]:
    """The confusion matrix of a :func:`common.metrics.class_report` (PNG + PDF): counts
    in the cells, rows normalised to sensitivity for the colour, true classes down the side,
    predicted across."""
    names = list(report["class_names"])
    counts = np.asarray(report["confusion_matrix"], dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    fig = Figure(figsize=(1.0 + 0.8 * len(names), 0.8 + 0.8 * len(names)), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), n in np.ndenumerate(counts):
        ax.text(j, i, str(n), ha="center", va="center", fontsize=8,
                color="white" if share[i, j] > 0.5 else "black")  # fmt: skip
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title, fontsize=8)
    fig.colorbar(image, ax=ax, label="share of the true class")
    return [Path(p) for p in save_figure(fig, str(stem))]
