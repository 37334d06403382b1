"""Two ways to report a cross-validated accuracy, from the same runs' files.

* **Per-fold selection** (this project's tables): each fold's test metric at the checkpoint
  its own validation set chose (``summary.json``), then the mean ± sample std over folds.
* **Fold-mean epoch** (Xu et al. 2019, "How Powerful are Graph Neural Networks?", and many
  TU papers after them): the validation metric of every epoch (``metrics.csv``) averaged
  over the folds, and the single epoch where that mean is best reported with its std over
  folds. Where the validation set is the test fold (``data.val_is_test=true``) this is
  their protocol exactly, and it selects on the test data: an upper bound, not an estimate.

::

    python -m common.epochs runs/real/graph-protocols/mutag
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from common.aggregate import Group, Stat, group_runs, setting_label
from common.errors import UserError
from common.io import write_text

METRICS = "metrics.csv"


@dataclass(frozen=True)
class EpochChoice:
    """The epoch whose fold-mean validation value is best, and that value over the folds."""

    epoch: int
    stat: Stat


def metric_curve(run_dir: Path, column: str) -> dict[int, float]:
    """``{epoch: value}`` of one column of a run's ``metrics.csv`` (epochs evaluated)."""
    path = run_dir / METRICS
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(
            f"cannot read {path} ({type(e).__name__}); rerun the training command"
        ) from None
    curve = {}
    for row in rows:
        try:
            value = float(row.get(column) or "nan")
            epoch = int(row["epoch"])
        except (KeyError, ValueError):
            raise UserError(
                f"{path} is malformed (no {column!r} or epoch); rerun training"
            ) from None
        if not math.isnan(value):
            curve[epoch] = value
    return curve


def fold_mean_epoch(group: Group, column: str, higher_is_better: bool) -> EpochChoice | None:
    """The best epoch of ``column`` averaged over the group's runs (its folds), among the
    epochs every run evaluated; None when they share none."""
    curves = [metric_curve(Path(r["run_dir"]), column) for r in group.runs]
    shared = set.intersection(*(set(c) for c in curves)) if curves else set()
    if not shared:
        return None
    sign = 1.0 if higher_is_better else -1.0
    stats = {e: Stat.of(c[e] for c in curves) for e in sorted(shared)}
    epoch = max(stats, key=lambda e: (sign * stats[e].mean, -e))  # the earliest of ties
    return EpochChoice(epoch, stats[epoch])


def _text(stat: Stat | None) -> str:
    if stat is None:
        return "–"
    spread = f" ± {stat.std:.2f}" if stat.std is not None else ""
    return f"{stat.mean:.2f}{spread} (n={stat.n})"


def protocols_markdown(groups: Sequence[Group]) -> str:
    """A row per group: its per-fold-selection test value and its fold-mean-epoch value."""
    lines = [
        "| data set | model | optimizer | setting | validation set | test, per-fold "
        "selection | best fold-mean epoch: value |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for g in groups:
        metric = g.runs[0].get("select") or g.headline
        choice = fold_mean_epoch(g, f"val_{metric.name}", metric.higher_is_better)
        val_is_test = {bool(r.get("config", {}).get("data.val_is_test")) for r in g.runs}
        held = (
            "the test fold"
            if val_is_test == {True}
            else "held out"
            if val_is_test == {False}
            else "mixed"
        )
        best = "–" if choice is None else f"epoch {choice.epoch}: {_text(choice.stat)}"
        lines.append(
            f"| {g.dataset} | {g.model} | {g.optimizer} | {setting_label(g.setting) or '–'} | "
            f"{held} | {_text(g.stat(f'test_{metric.name}'))} | {best} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    from common.tables import finished_rows, one_line_errors, runs_parser

    parser = runs_parser("python -m common.epochs", __doc__)
    parser.add_argument("--out", help="also write the table to this Markdown file")
    args = parser.parse_args(argv)

    def command() -> None:
        text = protocols_markdown(group_runs(finished_rows(args.paths)))
        print(text, end="")
        if args.out:
            write_text(args.out, text)

    return one_line_errors(command)


if __name__ == "__main__":
    raise SystemExit(main())
