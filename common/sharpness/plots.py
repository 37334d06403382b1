"""Plots of loss landscapes and interpolations, from their HDF5 files or results.

Uses matplotlib's object-oriented API (``matplotlib.figure.Figure``, no pyplot), so it
neither needs nor changes the user's backend. Points not yet computed (NaN) are masked, and
so are the non-finite losses measured. A file is read with
:func:`~common.sharpness.landscape.read_grid`, which verifies it: a damaged, empty, foreign
or outdated one raises :class:`~common.sharpness.landscape.GridFileError`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from common.io import atomic_path
from common.sharpness.hessian import DensityResult
from common.sharpness.landscape import (
    GridFileError,
    InterpolationResult,
    LandscapeResult,
    read_grid,
)

__all__ = ["plot_interpolation", "plot_landscape"]

FORMATS = ("png", "pdf")


#: the 2-D plot kinds of :func:`plot_landscape`
KINDS = ("contour", "contourf", "surface")


def plot_landscape(
    path_h5: str | os.PathLike | LandscapeResult,
    out_prefix: str | os.PathLike,
    *,
    levels: int = 30,
    log: bool = False,
    kinds: Sequence[str] = KINDS,
) -> list[str]:
    """Plots a landscape file of :func:`loss_landscape` (or its result).

    2-D: ``<out_prefix>_contour``, ``_contourf`` (filled, with a colour bar) and
    ``_surface`` (3-D), those of them in ``kinds``; 1-D: ``<out_prefix>_1d``; each as
    ``.png`` and ``.pdf``. ``log`` plots log10 of the loss. Returns the paths written. A
    result is plotted from its file, which must be intact (:class:`GridFileError`).
    """
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown plot kinds {sorted(unknown)}; valid: {list(KINDS)}")
    path = path_h5.path if isinstance(path_h5, LandscapeResult) else os.fspath(path_h5)
    grid = read_grid(path, "loss_landscape")
    x, y = grid["xcoords"], grid.get("ycoords")
    z, label = _values(grid["loss"], log)
    if z.count() == 0:
        raise GridFileError(f"{path} has no finite computed point yet: run the loss landscape")
    prefix = os.fspath(out_prefix)
    written = []
    if y is None:
        fig = Figure(figsize=(5, 4), layout="constrained")
        ax = fig.add_subplot()
        ax.plot(x, z, marker="o", markersize=3)
        ax.set(xlabel="a (direction 1)", ylabel=label, title="loss along a random direction")
        _mark_centre(ax, x)
        return save_figure(fig, f"{prefix}_1d")
    a, b = np.meshgrid(x, y, indexing="ij")  # z[i, j] is the loss at (x[i], y[j])

    if "contour" in kinds:
        fig, ax = _axes_2d(x, y)
        contours = ax.contour(a, b, z, levels=levels, cmap="viridis")
        ax.clabel(contours, fontsize=7)
        ax.set_title(label)
        written += save_figure(fig, f"{prefix}_contour")
    if "contourf" in kinds:
        fig, ax = _axes_2d(x, y)
        filled = ax.contourf(a, b, z, levels=levels, cmap="viridis")
        fig.colorbar(filled, ax=ax, label=label)
        written += save_figure(fig, f"{prefix}_contourf")
    if "surface" in kinds:
        fig = Figure(figsize=(6, 5), layout="constrained")
        ax = fig.add_subplot(projection="3d")
        ax.plot_surface(a, b, z.filled(np.nan), cmap="viridis", linewidth=0)
        ax.set(xlabel="a (direction 1)", ylabel="b (direction 2)", zlabel=label)
        written += save_figure(fig, f"{prefix}_surface")
    return written


def plot_interpolation(
    result_or_path: InterpolationResult | str | os.PathLike, out_prefix: str | os.PathLike
) -> list[str]:
    """Plots the loss (and metric, if any) of :func:`interpolate` against t, to
    ``<out_prefix>_interpolation.png`` and ``.pdf``. Returns the paths written."""
    if isinstance(result_or_path, InterpolationResult):
        t, loss, metric = result_or_path.t, result_or_path.loss, result_or_path.metric
    else:
        grid = read_grid(result_or_path, "interpolation")
        t, loss, metric = grid["t"], grid["loss"], grid["metric"]
    fig = Figure(figsize=(5, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(t, np.ma.masked_invalid(loss), marker="o", markersize=3, label="loss")
    for t_end, name in ((0.0, "start"), (1.0, "end")):
        ax.axvline(t_end, color="grey", linestyle=":", linewidth=1)
        ax.annotate(name, (t_end, 1.0), xycoords=("data", "axes fraction"), ha="center")
    ax.set(xlabel="t  ((1−t)·start + t·end)", ylabel="loss")
    if metric is not None:
        twin = ax.twinx()
        twin.plot(t, np.ma.masked_invalid(metric), color="C1", marker="s", markersize=3)
        twin.set_ylabel("metric", color="C1")
    return save_figure(fig, f"{os.fspath(out_prefix)}_interpolation")


def plot_esd(result: DensityResult, out_prefix: str | os.PathLike) -> list[str]:
    """Plots the eigenvalue density of :func:`hessian_esd` on a log scale (the bulk near 0
    and the few outliers differ by orders of magnitude), to ``<out_prefix>_esd.png/.pdf``."""
    grid, density = np.asarray(result.grid), np.asarray(result.density)
    fig = Figure(figsize=(5, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.semilogy(grid, np.clip(density, 1e-12, None))  # log of 0 is undefined: floor it
    ax.set(xlabel="eigenvalue", ylabel="density (log scale)", ylim=(1e-8, None))
    return save_figure(fig, f"{os.fspath(out_prefix)}_esd")


def _values(loss: np.ndarray, log: bool) -> tuple[np.ma.MaskedArray, str]:
    if not log:
        return np.ma.masked_invalid(loss), "loss"
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.ma.masked_invalid(np.log10(loss)), "log10 loss"


def _axes_2d(x: np.ndarray, y: np.ndarray) -> tuple[Figure, Any]:
    fig = Figure(figsize=(5, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.set(xlabel="a (direction 1)", ylabel="b (direction 2)")
    ax.set_xlim(x[0], x[-1])
    ax.set_ylim(y[0], y[-1])
    if x[0] <= 0 <= x[-1] and y[0] <= 0 <= y[-1]:
        ax.plot([0], [0], marker="+", color="red", markersize=10)
    return fig, ax


def _mark_centre(ax: Any, x: np.ndarray) -> None:
    if x[0] <= 0 <= x[-1]:
        ax.axvline(0.0, color="grey", linestyle=":", linewidth=1)


def save_figure(fig: Figure, stem: str) -> list[str]:
    """``stem.png`` and ``stem.pdf``, each written atomically."""
    written = []
    for ext in FORMATS:
        target = f"{stem}.{ext}"
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=ext, dpi=150)
        written.append(target)
    return written
