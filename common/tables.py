"""Run directories -> paper-style tables (Markdown + CSV) and a comparison plot.

Everything is read from the files a run directory holds (``summary.json`` and, when
measured, ``hessian.json`` and ``noise_stability.json``), never from memory::

    python -m common.tables runs/image --out results/image_table
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from common.errors import UserError
from common.io import write_text
from common.sharpness.plots import save_figure

#: (key, header, format) of the table's columns, in order
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("domain", "domain", "{}"),
    ("dataset", "data set", "{}"),
    ("model", "model", "{}"),
    ("optimizer", "optimizer", "{}"),
    ("seed", "seed", "{}"),
    ("test_metric", "test acc. (%)", "{:.2f}"),
    ("trace", "Hessian trace", "{:.4g}"),
    ("trace_stderr", "± (s.e.)", "{:.2g}"),
    ("top_eigenvalue", "top eigenvalue", "{:.4g}"),
    ("noise_sigma", "σ", "{:g}"),
    ("noise_stability", "noise stability", "{:.4g}"),
    ("wall_time_s", "train time (s)", "{:.0f}"),
)


def _read(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e}); delete it and measure again") from None


def run_row(run_dir: str | Path) -> dict[str, Any]:
    """One table row from a finished run directory (measurements if present)."""
    run_dir = Path(run_dir)
    summary = _read(run_dir / "summary.json")
    if summary is None:
        raise UserError(f"{run_dir} has no summary.json: the run has not finished")
    dataset = summary["dataset"] + (" (synthetic)" if summary.get("synthetic") else "")
    row: dict[str, Any] = {
        "run_dir": str(run_dir),
        "domain": summary["domain"],
        "dataset": dataset,
        "model": summary["model"],
        "optimizer": summary["optimizer"],
        "seed": summary["seed"],
        "test_metric": summary.get(f"test_{summary['metric']}"),
        "wall_time_s": summary.get("wall_time_s"),
    }
    hessian = _read(run_dir / "hessian.json")
    if hessian:
        row["trace"] = hessian["trace"]["total"]
        row["trace_stderr"] = hessian["trace"]["stderr"]
        row["top_eigenvalue"] = hessian["eigenvalues"]["eigenvalues"][0]
    noise = _read(run_dir / "noise_stability.json")
    if noise:
        first = noise["results"][0]  # the smallest sigma of the sweep comes first
        row["noise_sigma"], row["noise_stability"] = first["sigma"], first["mean"]
    return row


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
    """A Markdown table of ``rows``; columns no row has are left out."""
    cols = [c for c in COLUMNS if any(r.get(c[0]) is not None for r in rows)]
    lines = [
        "| " + " | ".join(h for _, h, _ in cols) + " |",
        "|" + "|".join(" --- " if f == "{}" else " ---: " for _, _, f in cols) + "|",
    ]
    lines += ["| " + " | ".join(_cell(r, k, f) for k, _, f in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_table(rows: Sequence[dict[str, Any]], stem: str | Path) -> list[Path]:
    """``stem.md`` and ``stem.csv``, each written atomically."""
    stem = Path(stem)
    md = stem.with_suffix(".md")
    write_text(md, markdown(rows))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["run_dir", *(k for k, _, _ in COLUMNS)])
    writer.writeheader()
    writer.writerows([{k: r.get(k) for k in writer.fieldnames} for r in rows])
    out = stem.with_suffix(".csv")
    write_text(out, buf.getvalue())
    return [md, out]


def plot_rows(rows: Sequence[dict[str, Any]], stem: str | Path) -> list[Path]:
    """Bar charts of test accuracy, Hessian trace and top eigenvalue per run (PNG + PDF)."""
    panels = [(k, h) for k, h, _ in COLUMNS if k in ("test_metric", "trace", "top_eigenvalue")]
    fig = Figure(figsize=(4 * len(panels), 3.6), layout="constrained")
    labels = [f"{r['dataset'].split(' ')[0]}\n{r['optimizer']}" for r in rows]
    for i, (key, header) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        values = [r.get(key) if r.get(key) is not None else math.nan for r in rows]
        ax.bar(range(len(rows)), values, color="tab:blue")
        ax.set_xticks(range(len(rows)), labels, fontsize=7)
        ax.set_title(header)
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
