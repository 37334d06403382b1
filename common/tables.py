"""Run directories -> paper-style tables (Markdown + CSV) and a comparison plot.

Everything is read from the files a run directory holds (``summary.json`` and, when
measured, ``hessian.json`` and ``noise_stability.json``), never from memory. A row names
its run, then has one ``test <label>`` column per metric the runs report (``test acc. (%)``,
``test F1 (%)``, ``test MCC``, ...; "–" where a run does not report it), then the
sharpness measurements and the training time::

    python -m common.tables runs/image --out results/image_table
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from common.errors import UserError
from common.io import read_json, write_text
from common.metrics import Metric
from common.sharpness.plots import save_figure
from common.train.rundir import SUMMARY_FIX, read_summary

#: (key, header, format) of the columns before the metric columns, in order
RUN_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("domain", "domain", "{}"),
    ("dataset", "data set", "{}"),
    ("model", "model", "{}"),
    ("optimizer", "optimizer", "{}"),
    ("seed", "seed", "{}"),
)
#: (key, header, format) of the columns after the metric columns, in order
MEASURED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("trace", "Hessian trace", "{:.4g}"),
    ("trace_stderr", "± (s.e.)", "{:.2g}"),
    ("top_eigenvalue", "top eigenvalue", "{:.4g}"),
    ("noise_sigma", "σ", "{:g}"),
    ("noise_stability", "noise stability", "{:.4g}"),
    ("wall_time_s", "train time (s)", "{:.0f}"),
)
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


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


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
            if value is not None and not _number(value):
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
            if value is not None and not _number(value):
                raise ValueError(f"{key} = {value!r} is not a number")
    except KeyError as e:
        raise UserError(f"{path} is malformed (no {e}); {_REMEASURE}") from None
    except (IndexError, TypeError, ValueError) as e:
        raise UserError(f"{path} is malformed ({e}); {_REMEASURE}") from None
    return out


def _hessian(data: dict[str, Any]) -> dict[str, Any]:
    if not data["eigenvalues"]["eigenvalues"]:
        raise ValueError("'eigenvalues' is empty")
    return {
        "trace": data["trace"]["total"],
        "trace_stderr": data["trace"]["stderr"],
        "top_eigenvalue": data["eigenvalues"]["eigenvalues"][0],
    }


def _noise(data: dict[str, Any]) -> dict[str, Any]:
    if not data["results"]:
        raise ValueError("'results' is empty")
    first = min(data["results"], key=lambda r: r["sigma"])  # the smallest sigma measured
    return {"noise_sigma": first["sigma"], "noise_stability": first["mean"]}


def run_row(run_dir: str | Path) -> dict[str, Any]:
    """One table row from a finished run directory (measurements if present).

    The row holds the run's identity, ``metrics`` (its reported :class:`Metric` s, in
    order), ``test_<name>`` for each of them, the training time and the measurements.
    """
    run_dir = Path(run_dir)
    summary = _summary(run_dir / "summary.json")
    dataset = str(summary["dataset"]) + (" (synthetic)" if summary.get("synthetic") else "")
    row: dict[str, Any] = {
        "run_dir": str(run_dir),
        "domain": summary["domain"],
        "dataset": dataset,
        "model": summary["model"],
        "optimizer": summary["optimizer"],
        "seed": summary["seed"],
        "metrics": summary["metrics"],
        **{f"test_{m.name}": summary["test"].get(m.name) for m in summary["metrics"]},
        "wall_time_s": summary.get("wall_time_s"),
    }
    row.update(_measured(run_dir / "hessian.json", _hessian, summary))
    row.update(_measured(run_dir / "noise_stability.json", _noise, summary))
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
    return [*RUN_COLUMNS, *metric_columns(rows), *MEASURED_COLUMNS]


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run directories (holding ``summary.json``) at or below ``paths``, sorted."""
    found = set()
    for p in map(Path, paths):
        found.update(s.parent for s in p.rglob("summary.json"))
        if (p / "summary.json").exists():
            found.add(p)
    return sorted(found)


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


def plot_rows(rows: Sequence[dict[str, Any]], stem: str | Path) -> list[Path]:
    """Bar charts per run (PNG + PDF): the first reported metric (one panel per distinct
    one, each with the runs that report it first), Hessian trace and top eigenvalue (if
    measured)."""
    if not rows:
        raise ValueError("no rows to plot")
    firsts: dict[str, Metric] = {}
    for r in rows:
        firsts.setdefault(r["metrics"][0].name, r["metrics"][0])
    panels: list[tuple[str, str, list[dict[str, Any]]]] = [
        (f"test_{m.name}", f"test {m.label}", [r for r in rows if r["metrics"][0].name == n])
        for n, m in firsts.items()
    ]
    panels += [
        (k, h, list(rows))
        for k, h, _ in MEASURED_COLUMNS
        if k in ("trace", "top_eigenvalue") and any(r.get(k) is not None for r in rows)
    ]
    fig = Figure(figsize=(4 * len(panels), 3.6), layout="constrained")
    for i, (key, header, shown) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        labels = [f"{r['dataset'].split(' ')[0]}\n{r['optimizer']}" for r in shown]
        values = [r.get(key) if r.get(key) is not None else math.nan for r in shown]
        ax.bar(range(len(shown)), values, color="tab:blue")
        ax.set_xticks(range(len(shown)), labels, fontsize=7)
        ax.set_title(header)
    return [Path(p) for p in save_figure(fig, str(stem))]


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.tables", description=__doc__)
    parser.add_argument("paths", nargs="+", help="run directories or folders holding them")
    parser.add_argument("--out", help="write OUT.md, OUT.csv, OUT.png and OUT.pdf")
    args = parser.parse_args(argv)
    try:
        rows = [run_row(d) for d in find_runs(args.paths)]
        if not rows:
            raise UserError(f"no finished run (summary.json) under {', '.join(args.paths)}")
        print(markdown(rows), end="")
        if args.out:
            write_table(rows, args.out)
            plot_rows(rows, args.out)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
