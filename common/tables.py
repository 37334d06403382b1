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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.aggregate import (
    Group,
    group_runs,
)
from common.errors import UserError
from common.errors import one_line as one_line_errors  # the commands' one-line guard
from common.figures import plot_measures, plot_noise_curves, plot_sweep, sweep_keys
from common.run_rows import find_runs, markdown, run_row, write_table
from common.select import compared_groups, select, selection_markdown, write_selection
from common.table_render import tables_markdown, write_aggregate
from common.tradeoff import plot_tradeoff


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
    parser.add_argument(
        "--correlation",
        action="store_true",
        help="also how well each flatness measure ranks the runs' generalization gap and test "
        "metric (python -m common.correlation), into correlation.md",
    )
    args = parser.parse_args(argv)

    def command() -> None:
        rows = finished_rows(args.paths)
        if args.select:
            _, text = selected_results(rows, args.out)
        else:
            groups = group_runs(rows)
            text = tables_markdown(groups)
            if args.out:
                write_results(rows, groups, args.out)
        if args.correlation:
            from common.correlation import report  # it builds on this module's run rows

            heading = "\n### Does flatness predict generalization?\n\n"
            text += heading + report(rows, args.out)
        print(markdown(rows) if args.runs else text, end="")

    return one_line_errors(command)


if __name__ == "__main__":
    raise SystemExit(main())
