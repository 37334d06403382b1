"""The figures of a results folder: a bar figure per measure (a panel per domain), a line
figure per swept key, noise stability against σ."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from common.aggregate import (
    Group,
    Stat,
    optimizer_colour,
    optimizers_of,
    reference,
    rows_of,
    seeds_text,
    setting_label,
    sharpness,
)
from common.measurements import sharpness_measures
from common.sharpness.plots import save_figure


def _log_scale(values: Sequence[float], span: float = 100.0) -> bool:
    """Log axis when every value is positive and the largest is ``span`` times the smallest
    or more (two decades by default)."""
    return bool(values) and min(values) > 0 and max(values) / min(values) >= span


def _row_label(row: tuple, rows: Sequence[tuple]) -> str:
    domain, dataset, model, setting = row
    label = dataset.replace(" (synthetic)", "\n(synthetic)")
    if len({r[2] for r in rows if r[0] == domain}) > 1:
        label += f"\n{model}"
    return label + (f"\n{setting_label(setting)}" if setting else "")


def _subset_text(groups: Sequence[Group], prefix: str) -> str:
    """``on 256 train examples`` from the measurement files (``various`` if they differ)."""
    subsets = {
        (r.get(f"{prefix}_examples"), r.get(f"{prefix}_split")) for g in groups for r in g.runs
    }
    subsets.discard((None, None))
    if len(subsets) != 1:
        return "on various subsets" if subsets else ""
    ((n, split),) = subsets
    return f"on {n} {split} examples"


def _bars(ax: Any, groups: Sequence[Group], key: Callable[[Group], str]) -> None:
    """Bars per table row, one per optimizer (always at its own offset, so a missing value
    leaves a gap instead of shifting the others), with ± std error bars."""
    rows = rows_of(groups)
    optimizers = optimizers_of(groups)
    width = 0.8 / len(optimizers)
    heights = []
    for j, name in enumerate(optimizers):
        xs, means, errors = [], [], []
        for i, row in enumerate(rows):
            g = next((g for g in groups if g.row == row and g.optimizer == name), None)
            stat = None if g is None else g.stat(key(g))
            if stat is not None:
                xs.append(i + (j - (len(optimizers) - 1) / 2) * width)
                means.append(stat.mean)
                errors.append(stat.std or 0.0)
        heights += means
        ax.bar(xs, means, width, yerr=errors, capsize=3, label=name, color=optimizer_colour(name))
    ax.set_xticks(range(len(rows)), [_row_label(r, rows) for r in rows], fontsize=7)
    if _log_scale(heights):
        ax.set_yscale("log")


def plot_measures(groups: Sequence[Group], out: str | Path) -> list[Path]:
    """A bar figure per measure (``out/<measure>.png`` + ``.pdf``), one panel per domain
    (and headline metric, which differs between GLUE tasks), error bars ± sample std."""
    out = Path(out)
    written: list[Path] = []
    figures: list[tuple[str, str, Callable[[Group], str], Callable[[Group], str]]] = [
        (
            "metric",
            "test metric",
            lambda g: f"test_{g.headline.name}",
            lambda g: f"test {g.headline.label}, test split",
        ),
        *(
            (key, title, (lambda g, k=key: k), (lambda g, t=title, k=key: t))
            for key, title in sharpness()
        ),
    ]
    for name, title, key, panel_title in figures:
        measured = [g for g in groups if g.stat(key(g)) is not None]
        if not measured:
            continue
        panels: dict[tuple[str, str], list[Group]] = {}
        for g in measured:
            panels.setdefault((g.domain, panel_title(g)), []).append(g)
        fig = Figure(figsize=(max(5.0, 4.2 * len(panels)), 3.8), layout="constrained")
        for i, ((domain, heading), shown) in enumerate(panels.items()):
            ax = fig.add_subplot(1, len(panels), i + 1)
            _bars(ax, shown, key)
            prefix = {s.key: s.subset for s in sharpness_measures()}.get(name, "")
            subset = "" if name == "metric" else f"\n{_subset_text(shown, prefix)}"
            ax.set_title(f"{domain}: {heading}{subset}\n{seeds_text(shown)}", fontsize=8)
        handles = {}
        for ax in fig.axes:  # one legend entry per optimizer, whichever panels it is in
            handles.update(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
        names = optimizers_of([g for g in measured if g.optimizer in handles])
        fig.legend([handles[n] for n in names], names, loc="outside lower center",
                   ncols=len(handles), fontsize=7)  # fmt: skip
        fig.suptitle(f"{title}: mean ± sample std over seeds", fontsize=9)
        written += [Path(p) for p in save_figure(fig, str(out / name))]
    return written


def _line(ax: Any, points: Sequence[tuple[float, Stat]], label: str, optimizer: str) -> None:
    """Means against x with ± sample std error bars, in the optimizer's colour."""
    ax.errorbar(
        [x for x, _ in points],
        [s.mean for _, s in points],
        yerr=[s.std or 0.0 for _, s in points],
        marker="o",
        capsize=3,
        label=label,
        color=optimizer_colour(optimizer),
    )


def sweep_keys(groups: Sequence[Group]) -> list[str]:
    """Setting keys that take two numeric values or more (σ, ρ, k sweeps)."""
    values: dict[str, set[float]] = defaultdict(set)
    for g in groups:
        for k, v in g.setting:
            if isinstance(v, int | float) and not isinstance(v, bool):
                values[k].add(float(v))
    return [k for k, vs in values.items() if len(vs) >= 2]


def plot_sweep(groups: Sequence[Group], key: str, out: str | Path) -> list[Path]:
    """Each measure against the setting ``key`` (``out/sweep_<key>.png`` + ``.pdf``): a line
    per data set, optimizer and other setting, ± sample std error bars, the base
    optimizer's mean as a dashed line with its ± std band; log x where ``key`` spans a
    decade or more."""
    lines: dict[tuple, list[tuple[float, Group]]] = defaultdict(list)
    for g in groups:
        setting = dict(g.setting)
        if key in setting and isinstance(setting[key], int | float):
            rest = tuple((k, v) for k, v in g.setting if k != key)
            lines[(g.domain, g.dataset, g.model, g.optimizer, rest)].append((setting[key], g))
    measures: list[tuple[str, Callable[[Group], str]]] = []
    for title in dict.fromkeys(
        f"test {g.headline.label}" for _, gs in lines.items() for _, g in gs
    ):
        measures.append((title, lambda g: f"test_{g.headline.name}"))
    measures += [(t, lambda g, k=k: k) for k, t in sharpness()]
    panels = [
        (title, measure)
        for title, measure in measures
        if any(
            g.stat(measure(g)) is not None
            and (not title.startswith("test ") or f"test {g.headline.label}" == title)
            for gs in lines.values()
            for _, g in gs
        )
    ]
    fig = Figure(figsize=(max(5.0, 4.2 * len(panels)), 3.8), layout="constrained")
    xs_all = [x for points in lines.values() for x, _ in points]
    short = key.rsplit(".", 1)[-1]
    for i, (title, measure) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        refs_drawn = set()
        for (_, dataset, _, optimizer, rest), points in sorted(lines.items(), key=repr):
            points = sorted(points, key=lambda p: p[0])
            shown = [
                (x, g.stat(measure(g)))
                for x, g in points
                if not title.startswith("test ") or f"test {g.headline.label}" == title
            ]
            shown = [(x, s) for x, s in shown if s is not None]
            if not shown:
                continue
            label = f"{dataset} {optimizer}" + (f" ({setting_label(rest)})" if rest else "")
            _line(ax, shown, label, optimizer)
            first = points[0][1]
            base = reference(groups, first, first.base)
            stat = None if base is None else base.stat(measure(base))
            if stat is not None and (base.optimizer, dataset) not in refs_drawn:
                refs_drawn.add((base.optimizer, dataset))
                ax.axhline(
                    stat.mean,
                    ls="--",
                    color=optimizer_colour(base.optimizer),
                    label=f"{dataset} {base.optimizer}",
                )
                if stat.std:
                    ax.axhspan(*stat.interval(), color=optimizer_colour(base.optimizer), alpha=0.1)
        if min(xs_all) > 0 and max(xs_all) / min(xs_all) >= 10:
            ax.set_xscale("log")
        ax.set_xlabel(short)
        seeds = seeds_text([g for points in lines.values() for _, g in points])
        ax.set_title(f"{title} vs {short}\n{seeds}", fontsize=8)
        ax.legend(fontsize=6)
    fig.suptitle(f"sweep of {key}: mean ± sample std over seeds", fontsize=9)
    return [Path(p) for p in save_figure(fig, str(Path(out) / f"sweep_{key}"))]


def plot_noise_curves(groups: Sequence[Group], out: str | Path) -> list[Path]:
    """Noise stability against the σ it was measured at (``out/noise_vs_sigma.png`` +
    ``.pdf``; nothing when no run measured two σ or more): a panel per domain and data
    set, a line per optimizer and setting, ± sample std over seeds."""
    curves = [g for g in groups if any(len(r.get("noise_curve", {})) >= 2 for r in g.runs)]
    if not curves:
        return []
    panels: dict[tuple[str, str], list[Group]] = {}
    for g in curves:
        panels.setdefault((g.domain, g.dataset), []).append(g)
    fig = Figure(figsize=(max(5.0, 4.2 * len(panels)), 3.8), layout="constrained")
    for i, ((domain, dataset), shown) in enumerate(panels.items()):
        ax = fig.add_subplot(1, len(panels), i + 1)
        means = []
        for g in shown:
            sigmas = sorted({s for r in g.runs for s in r.get("noise_curve", {})})
            stats = [(s, Stat.of(r.get("noise_curve", {}).get(s) for r in g.runs)) for s in sigmas]
            stats = [(s, st) for s, st in stats if st is not None]
            means += [st.mean for _, st in stats]
            label = g.optimizer + (f" ({setting_label(g.setting)})" if g.setting else "")
            _line(ax, stats, label, g.optimizer)
        ax.set_xscale("log")
        if _log_scale(means, span=10.0):  # the loss increase grows as σ²: log-log is a line
            ax.set_yscale("log")
        ax.set_xlabel("σ of the weight noise")
        ax.set_title(
            f"{domain}: {dataset}, {_subset_text(shown, 'noise')}\n{seeds_text(shown)}", fontsize=8
        )
        ax.legend(fontsize=6)
    fig.suptitle("noise stability vs σ: mean ± sample std over seeds", fontsize=9)
    return [Path(p) for p in save_figure(fig, str(Path(out) / "noise_vs_sigma"))]
