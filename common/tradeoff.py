"""The trade-off figure: test metric against sharpness for every grid point of every
optimizer, so a reader sees whether NSO's σ and SAM's ρ trace the same curve.

One row of panels per data set (and model), one panel per sharpness measure (Hessian trace,
top eigenvalue). Each group of runs (an optimizer at one setting, seeds pooled) is a point
at its mean with ± sample std error bars on both axes; an optimizer's settings are joined
in the order of their values and labelled with them, the setting chosen on validation data
(:mod:`common.select`) is drawn larger, and a base optimizer is a single point.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from common.aggregate import (
    HESSIAN_MEASURES,
    Group,
    Stat,
    optimizer_colour,
    seeds_text,
    setting_label,
)
from common.select import Selection
from common.sharpness.plots import save_figure

#: the measures on the x axes (the noise stability depends on σ, which differs per run)
AXES = HESSIAN_MEASURES
FIGURE = "tradeoff"


def _point(group: Group, key: str) -> tuple[Stat, Stat] | None:
    x, y = group.stat(key), group.stat(f"test_{group.headline.name}")
    return None if x is None or y is None else (x, y)


def _draw(ax: Any, groups: Sequence[Group], key: str, chosen: dict[tuple, tuple]) -> bool:
    """One panel: every optimizer's points for measure ``key``; whether anything was drawn.
    A point over fewer runs than the panel's most says its n."""
    drawn = False
    most = max((len(g.runs) for g in groups), default=0)
    for optimizer in dict.fromkeys(g.optimizer for g in groups):
        mine = sorted(
            (g for g in groups if g.optimizer == optimizer),
            key=lambda g: [repr(v) if not isinstance(v, int | float) else v for _, v in g.setting],
        )
        points = [(g, p) for g in mine if (p := _point(g, key)) is not None]
        if not points:
            continue
        drawn = True
        colour = optimizer_colour(optimizer)
        xs = [x.mean for _, (x, _) in points]
        ys = [y.mean for _, (_, y) in points]
        ax.plot(xs, ys, "-", color=colour, alpha=0.5)
        for g, (x, y) in points:
            best = chosen.get((g.domain, g.dataset, g.model, g.optimizer)) == g.setting
            ax.errorbar(
                x.mean,
                y.mean,
                xerr=x.std or 0.0,
                yerr=y.std or 0.0,
                fmt="*" if best else "o",
                markersize=11 if best else 5,
                color=colour,
                capsize=2,
            )
            text = setting_label(g.setting) + (f" (n={y.n})" if y.n < most else "")
            if text:
                ax.annotate(
                    text,
                    (x.mean, y.mean),
                    fontsize=6,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        ax.plot([], [], "o-", color=colour, label=optimizer)
    return drawn


def tradeoff_figure(groups: Sequence[Group], selections: Sequence[Selection] = ()) -> Figure | None:
    """The figure (None when no group has a measured point)."""
    rows = list(dict.fromkeys((g.domain, g.dataset, g.model) for g in groups))
    rows = [r for r in rows if any(_point(g, k) for g in groups for k, _ in AXES if g.row[:3] == r)]
    if not rows:
        return None
    chosen = {s.family: s.chosen for s in selections}
    fig = Figure(figsize=(4.2 * len(AXES), 3.2 * len(rows)), layout="constrained")
    for i, (domain, dataset, model) in enumerate(rows):
        mine = [g for g in groups if (g.domain, g.dataset, g.model) == (domain, dataset, model)]
        for j, (key, title) in enumerate(AXES):
            ax = fig.add_subplot(len(rows), len(AXES), i * len(AXES) + j + 1)
            if _draw(ax, mine, key, chosen):
                values = [p[0].mean for g in mine if (p := _point(g, key)) is not None]
                if min(values) > 0 and max(values) / min(values) >= 10:
                    ax.set_xscale("log")
                ax.legend(fontsize=6)
            ax.set_xlabel(title)
            ax.set_ylabel(f"test {mine[0].headline.label}")
            ax.set_title(f"{domain}: {dataset}, {model} ({seeds_text(mine)})", fontsize=8)
    fig.suptitle(
        "test metric vs sharpness, every grid point: mean ± sample std over seeds and folds "
        "(★ chosen on validation)",
        fontsize=9,
    )
    return fig


def plot_tradeoff(
    groups: Sequence[Group], out: str | Path, selections: Sequence[Selection] = ()
) -> list[Path]:
    """``out/tradeoff.png`` and ``.pdf``; nothing when no group has a measured point."""
    fig = tradeoff_figure(groups, selections)
    return [] if fig is None else [Path(p) for p in save_figure(fig, str(Path(out) / FIGURE))]


__all__ = ["AXES", "FIGURE", "plot_tradeoff", "tradeoff_figure"]
