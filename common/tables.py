"""Run directories -> paper-style tables over seeds (Markdown, LaTeX, CSV) and figures.

Everything is read from the files a run directory holds (``summary.json``, ``config.yaml``
and, when measured, ``hessian.json`` and ``noise_stability.json``), never from memory.

* The tables over seeds (:mod:`common.aggregate` groups the runs that differ only in seed
  and fold): one per measure, rows data sets (with model and setting), columns
  optimizers, each cell mean ± sample standard deviation, then each optimizer's change
  against its base optimizer and against SAM in percent, paired per seed.
* The per-run table (``runs.md``, ``--runs``): a row per run with one ``test <label>``
  column per metric the runs report ("–" where a run does not), the sharpness
  measurements and the training time.
* The figures: a bar figure per measure (a panel per domain), a line figure per swept key,
  noise stability against σ::

    python -m common.tables runs/sweeps/sbm --out results/sbm
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from common.aggregate import (
    Group,
    Measure,
    Stat,
    group_runs,
    optimizer_colour,
    optimizer_rank,
    reference,
    relative_change,
    rows_of,
    seeds_text,
    setting_label,
    sharpness,
    sharpness_columns,
)
from common.checks import is_number
from common.class_tables import class_table_markdown
from common.errors import UserError
from common.errors import one_line as one_line_errors  # the commands' one-line guard
from common.io import read_json, write_text
from common.measurements import MEASUREMENTS, measured_columns, sharpness_measures
from common.metrics import Metric
from common.optim import OPTIMIZERS
from common.select import compared_groups, select, selection_markdown, write_selection
from common.sharpness.plots import save_figure
from common.tradeoff import plot_tradeoff
from common.train.rundir import CONFIG, SUMMARY_FIX, name_label, read_summary
from common.train.typed import flatten, read_yaml

#: (key, header, format) of the columns before the metric columns, in order
RUN_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("domain", "domain", "{}"),
    ("dataset", "data set", "{}"),
    ("model", "model", "{}"),
    ("optimizer", "optimizer", "{}"),
    ("seed", "seed", "{}"),
)


def after_metric_columns() -> tuple[tuple[str, str, str], ...]:
    """(key, header, format) of the columns after the metric columns, in order: the
    measurements' (common.measurements, as registered now), then the training time."""
    return (*measured_columns(), ("wall_time_s", "train time (s)", "{:.0f}"))


#: keys a summary.json must hold for a table row
#: What a table row needs of summary.json (a subset of what the trainer writes).
SUMMARY_KEYS = ("domain", "dataset", "model", "optimizer", "seed", "metrics", "test")

_REMEASURE = "delete it and measure again"


def _read(path: Path, fix: str) -> Any:
    """The JSON in ``path`` (its checksum verified), None if there is none; a ``UserError``
    saying ``fix`` if it is damaged."""
    if not path.exists():
        return None
    return read_json(path, fix=fix)


def _metric(entry: Any) -> Metric:
    """A :class:`Metric` from its summary.json record; ``ValueError`` if it is not one."""
    if not (
        isinstance(entry, dict)
        and isinstance(entry.get("name"), str)
        and isinstance(entry.get("label"), str)
        and isinstance(entry.get("higher_is_better", True), bool)
    ):
        raise ValueError(f"{entry!r} is not a {{name, label, higher_is_better}} record")
    return Metric(entry["name"], entry["label"], entry.get("higher_is_better", True))


def _summary(path: Path) -> dict[str, Any]:
    """summary.json, checked for what a row needs; a ``UserError`` names what is wrong."""
    summary = read_summary(path.parent, required=SUMMARY_KEYS)
    if summary is None:
        raise UserError(f"{path.parent} has no summary.json: the run has not finished")
    try:
        if not isinstance(summary["metrics"], list) or not summary["metrics"]:
            raise ValueError("'metrics' is not a non-empty list")
        metrics = tuple(map(_metric, summary["metrics"]))
        test = summary["test"]
        if not isinstance(test, dict):
            raise ValueError("'test' is not an object")
        for key, value in [
            *((m.name, test.get(m.name)) for m in metrics),
            ("wall_time_s", summary.get("wall_time_s")),
        ]:
            if value is not None and not is_number(value):
                raise ValueError(f"{key} = {value!r} is not a number")
    except ValueError as e:
        raise UserError(f"{path} is malformed ({e}); {SUMMARY_FIX}") from None
    return {**summary, "metrics": metrics}


def _measured(
    path: Path, read: Callable[[Any], dict[str, Any]], summary: dict[str, Any]
) -> dict[str, Any]:
    """The row entries ``read`` takes from a measurement file, {} if there is none; a
    malformed one, or one measured before the run finished, is a ``UserError`` naming it."""
    data = _read(path, _REMEASURE)
    if data is None:
        return {}
    if isinstance(data, dict) and data.get("finished") is False:
        raise UserError(
            f"{path} measured the run before it finished (step {data.get('step')} of "
            f"{summary.get('steps')}); {_REMEASURE}"
        )
    try:
        out = read(data)
        for key, value in out.items():
            tabulated = key in (k for k, _, _ in after_metric_columns())  # not the split's name
            if tabulated and value is not None and not is_number(value):
                raise ValueError(f"{key} = {value!r} is not a number")
    except KeyError as e:
        raise UserError(f"{path} is malformed (no {e}); {_REMEASURE}") from None
    except (IndexError, TypeError, ValueError) as e:
        raise UserError(f"{path} is malformed ({e}); {_REMEASURE}") from None
    return out


def _validation(summary: dict[str, Any]) -> dict[str, Any]:
    """The metric that selects ``best.pt`` and its best validation value: what
    hyper-parameters are chosen on (:mod:`common.select`); {} for runs without them."""
    select, best = summary.get("select"), summary.get("best_val")
    if not isinstance(select, dict) or not isinstance(best, dict):
        return {}
    value, loss = best.get(select.get("name")), best.get("loss")
    return {
        "select": _metric(select),
        "val_select": value if is_number(value) else None,
        "val_loss": loss if is_number(loss) else None,
    }


def _config(run_dir: Path) -> dict[str, Any]:
    """The run's resolved config.yaml as dotted keys ({} for a directory without one)."""
    path = run_dir / CONFIG
    if not path.exists():
        print(
            f"warning: {printable(run_dir)} has no {CONFIG}: its settings are unknown (its "
            f"training command, run again, writes it from the checkpoint)",
            file=sys.stderr,
        )
        return {}
    return flatten(read_yaml(path, verify="rerun the run's training command to rewrite it"))


def _base(optimizer: str, config: dict[str, Any]) -> str | None:
    """The base optimizer a sharpness-aware optimizer wraps (None for a base one)."""
    info = OPTIMIZERS.get(optimizer)
    return config.get("optimizer.base") if info is not None and info.sharpness_aware else None


def printable(path: str | Path) -> str:
    """A path as text any output can hold: bytes that are not UTF-8 (a folder named in
    another encoding) as ``\\xNN`` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def run_row(run_dir: str | Path) -> dict[str, Any]:
    """One table row from a finished run directory (measurements if present).

    The row holds the run's identity, ``metrics`` (its reported :class:`Metric` s, in
    order), ``test_<name>`` for each of them, the training time and the measurements.
    """
    run_dir = Path(run_dir)
    summary = _summary(run_dir / "summary.json")
    dataset = name_label(str(summary["dataset"]))
    dataset += " (synthetic)" if summary.get("synthetic") else ""
    row: dict[str, Any] = {
        "run_dir": printable(run_dir),
        "domain": summary["domain"],
        "dataset": dataset,
        "model": name_label(summary["model"]),
        "optimizer": summary["optimizer"],
        "seed": summary["seed"],
        "metrics": summary["metrics"],
        **{f"test_{m.name}": summary["test"].get(m.name) for m in summary["metrics"]},
        "wall_time_s": summary.get("wall_time_s"),
        "fold": summary.get("fold"),
        "fold_key": summary.get("fold_key"),
        **_validation(summary),
        "test_details": summary.get("test_details"),
        "test_counts": ((summary.get("data") or {}).get("class_counts") or {}).get("test"),
    }
    row["config"] = _config(run_dir)
    row["base"] = _base(row["optimizer"], row["config"])
    for measurement in MEASUREMENTS.values():
        if measurement.read is not None:
            row.update(_measured(run_dir / measurement.file, measurement.read, summary))
    return row


def _metric_format(metric: Metric) -> str:
    # percentages with two decimals (as papers print them); coefficients and errors by digits
    return "{:.2f}" if "%" in metric.label else "{:.4g}"


def metric_columns(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(``test_<name>``, ``test <label>``, format) of every metric the rows report, in
    first-seen order (a name's first label heads its column); percentages get two
    decimals, coefficients and errors four digits."""
    seen: dict[str, Metric] = {}
    for r in rows:
        for m in r.get("metrics", ()):
            seen.setdefault(m.name, m)
    return [(f"test_{m.name}", f"test {m.label}", _metric_format(m)) for m in seen.values()]


def columns(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(key, header, format) of a table of ``rows``: run, metrics, measurements."""
    return [*RUN_COLUMNS, *metric_columns(rows), *after_metric_columns()]


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run directories (holding ``summary.json``) at or below ``paths``, sorted; folders
    reached through symbolic links included (each real folder once, a link cycle left)."""
    found: dict[str, Path] = {}  # real path -> the path it was first reached by
    for top in map(Path, paths):
        seen: set[str] = set()
        for folder, subfolders, files in os.walk(top, followlinks=True):
            subfolders.sort()  # the same path for a folder reached twice, on every machine
            real = os.path.realpath(folder)
            if real in seen:  # a link back up the tree, or a second link to one folder
                subfolders.clear()
                continue
            seen.add(real)
            if "summary.json" in files:
                found.setdefault(real, Path(folder))
    return sorted(found.values())


def _cell(row: dict[str, Any], key: str, fmt: str) -> str:
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return fmt.format(value)


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of ``rows``; "–" where a run lacks a value, and measurement
    columns no row has are left out."""
    metric_keys = {k for k, _, _ in metric_columns(rows)}
    cols = [
        c
        for c in columns(rows)
        if c[0] in metric_keys or any(r.get(c[0]) is not None for r in rows)
    ]
    lines = [
        "| " + " | ".join(h for _, h, _ in cols) + " |",
        "|" + "|".join(" --- " if f == "{}" else " ---: " for _, _, f in cols) + "|",
    ]
    lines += ["| " + " | ".join(_cell(r, k, f) for k, _, f in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_table(rows: Sequence[dict[str, Any]], stem: str | Path) -> list[Path]:
    """``stem.md`` and ``stem.csv`` (every column, ``test_<name>`` per metric; empty where
    a run lacks a value), each written atomically."""
    md = Path(f"{stem}.md")  # not with_suffix: "table.v2" keeps its ".v2", as the plot does
    write_text(md, markdown(rows))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["run_dir", *(k for k, _, _ in columns(rows))])
    writer.writeheader()
    writer.writerows([{k: r.get(k) for k in writer.fieldnames} for r in rows])
    out = Path(f"{stem}.csv")
    write_text(out, buf.getvalue())
    return [md, out]


# -- tables over seeds: rows data sets, columns optimizers, one table per measure -----------
@dataclass(frozen=True)
class Value:
    """A table cell holding statistics: how to print them."""

    stat: Stat | None
    percent: bool  # two decimals (percentages) rather than four significant digits
    change: bool = False  # a relative change in percent: signed, one decimal
    common_n: int = 0  # the table's usual n: a cell with another n says so

    def text(self, pm: str = "±") -> str:
        s = self.stat
        if s is None:
            return "–"
        if self.change:
            mean, spread = f"{s.mean:+.1f}", None if s.std is None else f"{s.std:.1f}"
        elif self.percent:
            mean, spread = f"{s.mean:.2f}", None if s.std is None else f"{s.std:.2f}"
        else:
            mean, spread = f"{s.mean:.4g}", None if s.std is None else f"{s.std:.2g}"
        out = mean if spread is None else f"{mean} {pm} {spread}"
        return out + (f" (n={s.n})" if self.common_n and s.n != self.common_n else "")


@dataclass
class Table:
    """One measure's table: a title, a caption saying what ± is, a header and rows."""

    name: str  # file-safe: "metric", "trace", ...
    title: str
    caption: str
    header: list[str]
    rows: list[list[str | Value]]

    def numeric(self, column: int) -> bool:
        return any(isinstance(r[column], Value) for r in self.rows)


def _optimizers(groups: Sequence[Group]) -> list[str]:
    ranked = sorted(groups, key=lambda g: (optimizer_rank(g.optimizer), g.optimizer))
    return list(dict.fromkeys(g.optimizer for g in ranked))


def _comparisons(groups: Sequence[Group]) -> list[tuple[str, str]]:
    """(optimizer, "base" | "sam") of every relative-change column the groups allow."""
    out = []
    for name in _optimizers(groups):
        wraps = [g for g in groups if g.optimizer == name and g.base]
        if any(reference(groups, g, g.base) for g in wraps):
            out.append((name, "base"))
        if name != "sam" and any(reference(groups, g, "sam") for g in wraps):  # NSO vs SAM
            out.append((name, "sam"))
    return out


def _seeds_caption(groups: Sequence[Group], n: int) -> str:
    # folds only where a cell averages over several (a single fold is a fixed split)
    over = seeds_text(groups, sep=" and ", averaged_folds_only=True)
    return (
        f"mean ± sample standard deviation (ddof 1) over n = {n} run{'s' if n != 1 else ''} "
        f"({over}); a cell with another n says so"
    )


def _usual_n(stats: Iterable[Stat | None]) -> int:
    """The most runs any cell has: a cell with fewer says how many."""
    return max((s.n for s in stats if s is not None), default=0)


def measure_table(
    groups: Sequence[Group], name: str, title: str, measures: Callable[[Group], list[Measure]]
) -> Table | None:
    """The table of the measures ``measures(group)`` gives each group (None if no group has
    a value): a row per domain, data set, model, setting (and measure, when a row has
    several), a column per optimizer, then the relative changes against the base optimizer
    and SAM."""
    rows = rows_of(groups)
    optimizers = _optimizers(groups)
    comparisons = _comparisons(groups)
    by_cell = {(g.row, g.optimizer): g for g in groups}
    cells: list[tuple[tuple, Measure, dict[str, Stat | None], dict[tuple[str, str], Stat | None]]]
    cells = []
    for row in rows:
        here = [g for g in groups if g.row == row]
        for measure in dict.fromkeys(m for g in here for m in measures(g)):
            stats = {
                o: by_cell[(row, o)].stat(measure.key) if (row, o) in by_cell else None
                for o in optimizers
            }
            if not any(stats.values()):
                continue
            changes = {}
            for o, against in comparisons:
                g = by_cell.get((row, o))
                ref = (
                    None
                    if g is None
                    else reference(groups, g, g.base if against == "base" else "sam")
                )
                changes[(o, against)] = None if g is None else relative_change(g, ref, measure.key)
            cells.append((row, measure, stats, changes))
    if not cells:
        return None
    n = _usual_n(s for *_, stats, _ in cells for s in stats.values())
    with_setting = any(row[3] for row, *_ in cells)
    with_measure = len({m.title for _, m, _, _ in cells}) > 1
    header = ["domain", "data set", "model"] + (["setting"] if with_setting else [])
    header += ["measure"] if with_measure else []
    header += optimizers
    header += [f"{o} vs {'SAM' if a == 'sam' else 'base'} (%)" for o, a in comparisons]
    table_rows: list[list[str | Value]] = []
    for (domain, dataset, model, setting), measure, stats, changes in cells:
        line: list[str | Value] = [domain, dataset, model]
        line += [setting_label(setting)] if with_setting else []
        line += [measure.title] if with_measure else []
        line += [Value(stats[o], measure.percent, common_n=n) for o in optimizers]
        line += [Value(changes[c], True, change=True, common_n=n) for c in comparisons]
        table_rows.append(line)
    bases = sorted({g.base for g in groups if g.base})
    caption = _seeds_caption(groups, n)
    if comparisons:
        caption += (
            "; 'vs' columns: the change in percent against the base optimizer each one wraps "
            f"({', '.join(bases) or '–'}) or SAM, per paired seed, mean ± standard deviation"
        )
    return Table(name, title, caption + ".", header, table_rows)


def aggregate_tables(groups: Sequence[Group]) -> list[Table]:
    """One table per measure: the test metrics, the Hessian trace, the top eigenvalue and
    the noise stability (those some run has)."""
    rows = [r for g in groups for r in g.runs]
    specs: list[tuple[str, str, Callable[[Group], list[Measure]]]] = [
        ("metric", "test metric", lambda g: [Measure.metric(m) for m in g.metrics]),
        *(
            (s.key, s.table_title(rows), lambda g, m=measure: [m])
            for s, measure in zip(sharpness_measures(), sharpness_columns(), strict=True)
        ),
    ]
    tables = [measure_table(groups, *spec) for spec in specs]
    return [t for t in tables if t is not None]


def table_markdown(table: Table) -> str:
    """``### title``, the caption and the table."""
    lines = [f"### {table.title}", "", table.caption, ""]
    lines.append("| " + " | ".join(table.header) + " |")
    lines.append(
        "|"
        + "|".join(" ---: " if table.numeric(i) else " --- " for i in range(len(table.header)))
        + "|"
    )
    for row in table.rows:
        lines.append("| " + " | ".join(c.text() if isinstance(c, Value) else c for c in row) + " |")
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {c: f"\\{c}" for c in "&%$#_{}"} | {
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "\\": r"\textbackslash{}",
    "–": "--",
    "±": r"$\pm$",
    "σ": r"$\sigma$",
}


def latex_escape(text: str) -> str:
    """``text`` safe in LaTeX body text (``50 % of a_b`` -> ``50 \\% of a\\_b``)."""
    return "".join(_LATEX_SPECIAL.get(c, c) for c in text)


def tables_markdown(groups: Sequence[Group]) -> str:
    """Every measure's table (:func:`aggregate_tables`) in Markdown, one after another, then
    the per-class table where the runs report classes."""
    return _markdown_of(aggregate_tables(groups), groups)


def _markdown_of(tables: Sequence[Table], groups: Sequence[Group]) -> str:
    classes = class_table_markdown(groups)
    return "\n".join(map(table_markdown, tables)) + (f"\n{classes}" if classes else "")


def table_latex(table: Table) -> str:
    """A ``booktabs`` table (``\\usepackage{booktabs}``): ``\\toprule``, ``\\midrule``,
    ``\\bottomrule``, numbers as ``$mean \\pm std$`` in right-aligned columns."""
    spec = "".join("r" if table.numeric(i) else "l" for i in range(len(table.header)))

    def cell(c: str | Value) -> str:
        if not isinstance(c, Value):
            return latex_escape(c)
        if c.stat is None:
            return "--"
        return "$" + c.text(pm=r"\pm").replace("(n=", r"\ (n=") + "$"

    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{latex_escape(table.title)}: {latex_escape(table.caption)}}}",
        rf"\label{{tab:{table.name}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in table.header) + r" \\",
        r"\midrule",
        *(" & ".join(map(cell, row)) + r" \\" for row in table.rows),
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


#: the long-format CSV's columns: a line per group and measure
AGGREGATE_FIELDS = (
    "domain",
    "dataset",
    "model",
    "setting",
    "optimizer",
    "base",
    "measure",
    "mean",
    "std",
    "n",
    "seeds",
    "vs_base_mean",
    "vs_base_std",
    "vs_base_n",
    "vs_sam_mean",
    "vs_sam_std",
    "vs_sam_n",
)


def aggregate_csv(groups: Sequence[Group]) -> str:
    """Every group's statistics in long format (a line per group and measure, the measure
    by its row key: ``test_accuracy``, ``trace``, ...), for pandas or a spreadsheet."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=AGGREGATE_FIELDS, lineterminator="\n")
    writer.writeheader()
    for g in groups:
        measures = [Measure.metric(m) for m in g.metrics] + list(sharpness_columns())
        for m in measures:
            stat = g.stat(m.key)
            if stat is None:
                continue
            line = {
                "domain": g.domain,
                "dataset": g.dataset,
                "model": g.model,
                "setting": setting_label(g.setting),
                "optimizer": g.optimizer,
                "base": g.base or "",
                "measure": m.key,
                "mean": repr(stat.mean),
                "std": "" if stat.std is None else repr(stat.std),
                "n": stat.n,
                "seeds": " ".join(map(str, g.seeds)),
            }
            for against, ref in (("base", g.base), ("sam", "sam")):
                change = relative_change(g, reference(groups, g, ref), m.key)
                for part in ("mean", "std", "n"):
                    value = None if change is None else getattr(change, part)
                    line[f"vs_{against}_{part}"] = "" if value is None else value
            writer.writerow(line)
    return buf.getvalue()


def write_aggregate(groups: Sequence[Group], out: str | Path) -> list[Path]:
    """``out/table.md`` (every measure's table), ``table.tex`` (booktabs) and
    ``table.csv`` (long format), each written atomically."""
    out = Path(out)
    tables = aggregate_tables(groups)
    files = {
        "table.md": _markdown_of(tables, groups),
        "table.tex": "% \\usepackage{booktabs}\n" + "\n".join(map(table_latex, tables)),
        "table.csv": aggregate_csv(groups),
    }
    for name, text in files.items():
        write_text(out / name, text)
    return [out / name for name in files]


# -- plots: one panel per domain and measure, error bars, log axes where values span decades
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
    optimizers = _optimizers(groups)
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
        names = _optimizers([g for g in measured if g.optimizer in handles])
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


def write_results(
    rows: Sequence[dict[str, Any]], groups: Sequence[Group], out: str | Path
) -> list[Path]:
    """Everything ``python -m common.tables --out`` writes into ``out`` for the run rows and
    their :func:`group_runs` groups: the per-run table (``runs.md``, ``runs.csv``), the
    tables over seeds (``table.md``, ``.tex``, ``.csv``), a bar figure per measure, a line
    figure per sweep with the trade-off figure of its grid points, and the noise-vs-σ
    figure."""
    written = write_table(rows, Path(out) / "runs")
    written += write_aggregate(groups, out)
    written += plot_measures(groups, out)
    keys = sweep_keys(groups)
    for key in keys:
        written += plot_sweep(groups, key, out)
    if keys:  # a grid: where each point lies in accuracy vs sharpness
        written += plot_tradeoff(groups, out, select(groups))
    written += plot_noise_curves(groups, out)
    return written


def selected_results(rows: Sequence[dict[str, Any]], out: str | Path | None) -> tuple[list, str]:
    """Each optimizer compared at its setting chosen on validation data: the groups of the
    chosen settings (one row per data set) and the Markdown of the grids and the tables
    over seeds; with ``out``, everything :func:`write_results` writes for them, plus
    ``selection.md`` / ``.json`` and the trade-off figure of every grid point."""
    everything = group_runs(rows)
    selections = select(everything)
    groups = compared_groups(everything, selections)
    if out is not None:
        write_results(rows, groups, out)
        write_selection(selections, out)
        plot_tradeoff(everything, out, selections)
    grids = selection_markdown(selections)
    heading = "### Hyper-parameters chosen on validation data\n\n"
    return groups, (heading + grids + "\n" if grids else "") + tables_markdown(groups)


def runs_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    """The parser of a command over finished runs: its ``paths`` to search for them."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("paths", nargs="+", help="run directories or folders holding them")
    return parser


def finished_rows(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """A row (:func:`run_row`) per finished run under ``paths``; none is a ``UserError``."""
    rows = [run_row(d) for d in find_runs(paths)]
    if not rows:
        raise UserError(f"no finished run (summary.json) under {', '.join(map(str, paths))}")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = runs_parser("python -m common.tables", __doc__)
    parser.add_argument("--out", help="folder for the tables (.md, .csv, .tex) and figures")
    parser.add_argument(
        "--runs",
        action="store_true",
        help="print the per-run table instead of the tables over seeds",
    )
    parser.add_argument(
        "--select",
        action="store_true",
        help="compare each optimizer at the grid point chosen on validation data "
        "(python -m common.select), in one row per data set; the grids go to selection.md",
    )
    args = parser.parse_args(argv)

    def command() -> None:
        rows = finished_rows(args.paths)
        if args.select:
            _, text = selected_results(rows, args.out)
            print(markdown(rows) if args.runs else text, end="")
            return
        groups = group_runs(rows)
        print(markdown(rows) if args.runs else tables_markdown(groups), end="")
        if args.out:
            write_results(rows, groups, args.out)

    return one_line_errors(command)


if __name__ == "__main__":
    raise SystemExit(main())
