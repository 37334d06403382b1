"""The tables over seeds (:func:`common.aggregate.group_runs` groups): one per measure,
rows data sets (with model and setting), columns optimizers, each cell mean ± sample
standard deviation, then each optimizer's change against its base optimizer and against
SAM in percent, paired per seed; as Markdown, LaTeX and CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from common.aggregate import (
    Group,
    Measure,
    Stat,
    optimizers_of,
    reference,
    relative_change,
    rows_of,
    seeds_text,
    setting_label,
    sharpness_columns,
)
from common.class_tables import class_table_markdown
from common.io import write_text
from common.measurements import sharpness_measures


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


def _comparisons(groups: Sequence[Group]) -> list[tuple[str, str]]:
    """(optimizer, "base" | "sam") of every relative-change column the groups allow."""
    out = []
    for name in optimizers_of(groups):
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
    optimizers = optimizers_of(groups)
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
