"""Does flatness predict generalization here? Rank correlations over a family of finished runs.

A family is every run of one domain, data set and model (a sweep: optimizers x their
settings x seeds, folds). For each flatness measure the runs hold (lower is flatter) it
reports Kendall's τ-b over the runs with the generalization gap and with the test metric,
each with a percentile bootstrap 95 % interval over runs, and the granulated τ of Jiang et
al. (ICLR 2020, "Fantastic generalization measures") over each swept hyper-parameter::

    python -m common.correlation runs/real/ecg --out results/real/ecg/correlation

* The generalization gap is the test loss minus the training loss logged in the epoch
  whose weights are ``best.pt`` (the weights every measurement reads): the running mean
  over that epoch's batches, in train mode, at W (the first pass of a sharpness-aware
  step; RWP with mix 1 logs its perturbed pass). A flatness measure that predicts
  generalization has τ > 0 with the gap, and τ < 0 with a higher-is-better test metric.
* The hyper-parameters are the config keys that vary in the family (``optimizer.rho``,
  ``optimizer.sigma``, ...) and the optimizer itself. The granulated τ of one
  hyper-parameter is the mean, over the groups of runs where everything else is equal
  (the other hyper-parameters, the seed and the fold), of τ(measure, gap) within the
  group; Ψ is their mean. The optimizer's own options move with it (an SGD run has no ρ),
  so its groups hold every run of one seed and fold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from common.aggregate import ignored_key, optimizer_colour
from common.epochs import metric_curve
from common.errors import UserError
from common.errors import one_line as one_line_errors
from common.io import write_text
from common.measurements import sharpness_measures
from common.metrics import Metric
from common.sharpness.plots import save_figure
from common.tables import finished_rows, runs_parser

FAMILY = ["domain", "dataset", "model"]
OPTIMIZER = "optimizer"  # the hyper-parameter axis of the optimizer itself
_FIXED = ["seed", "fold"]  # equal within a granulated group, never an axis


@dataclass(frozen=True)
class Tau:
    """Kendall's τ-b over ``n`` runs with its bootstrap interval (NaN where undefined)."""

    value: float
    low: float
    high: float
    n: int

    def text(self) -> str:
        if math.isnan(self.value):
            return "–"
        interval = "" if math.isnan(self.low) else f" [{self.low:+.2f}, {self.high:+.2f}]"
        return f"{self.value:+.2f}{interval}"


def _tau(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan  # a constant has no ranking
    return float(stats.kendalltau(x, y).statistic)


def kendall(x: Sequence[float], y: Sequence[float], *, resamples: int = 2000, seed: int = 0) -> Tau:
    """τ-b of the pairs (x_i, y_i) that are both finite, and its percentile bootstrap 95 %
    interval (pairs resampled with replacement; ``resamples`` = 0: no interval)."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    value = _tau(a, b)
    low = high = math.nan
    if resamples and len(a) >= 3 and not math.isnan(value):
        result = stats.bootstrap(
            (a, b), _tau, paired=True, vectorized=False, n_resamples=resamples,
            method="percentile", rng=np.random.default_rng(seed),
        )  # fmt: skip
        low, high = map(float, (result.confidence_interval.low, result.confidence_interval.high))
    return Tau(value, low, high, len(a))


def granulated(frame: pd.DataFrame, measure: str, axes: Sequence[str]) -> dict[str, float]:
    """Jiang et al.'s granulated τ(measure, gap) per axis, and Ψ (their mean) as ``"Ψ"``."""
    out = {}
    for axis in axes:
        others = [a for a in axes if a not in (axis, OPTIMIZER)]
        fixed = _FIXED if axis == OPTIMIZER else [*_FIXED, OPTIMIZER, *others]
        taus = [
            _tau(group[measure].to_numpy(float), group["gap"].to_numpy(float))
            for _, group in frame.groupby(fixed, dropna=False)
            if group[axis].nunique(dropna=False) > 1
        ]
        taus = [t for t in taus if not math.isnan(t)]
        out[axis] = float(np.mean(taus)) if taus else math.nan
    finite = [v for v in out.values() if not math.isnan(v)]
    out["Ψ"] = float(np.mean(finite)) if finite else math.nan
    return out


# -- the runs as one frame ----------------------------------------------------------------


def _metric_of(row: dict[str, Any], name: str | None) -> Metric:
    """The metric the runs are compared on: ``name``, else the one that selects best.pt,
    else the domain's headline."""
    metrics = {m.name: m for m in row["metrics"]}
    if name is not None:
        if name not in metrics:
            raise UserError(
                f"{row['run_dir']} reports no metric {name!r}; choose one of "
                f"{', '.join(metrics)} (--metric)"
            )
        return metrics[name]
    return row.get("select") or row["metrics"][0]


def _logged_train_loss(row: dict[str, Any], summary_epoch: int | None) -> float:
    """The training loss logged in the epoch of best.pt (the last epoch without one)."""
    curve = metric_curve(Path(row["run_dir"]), "train_loss")
    if not curve:
        return math.nan
    return curve.get(summary_epoch, math.nan) if summary_epoch else curve[max(curve)]


def run_frame(rows: Sequence[dict[str, Any]], metric: str | None = None) -> pd.DataFrame:
    """One line per run: family, optimizer, seed, fold, its hyper-parameters (config keys),
    the test metric, the gap and every flatness measure it holds."""
    keys = [s.key for s in sharpness_measures()]
    records = []
    for row in rows:
        chosen = _metric_of(row, metric)
        settings = {
            k: repr(v) for k, v in row.get("config", {}).items()
            if not ignored_key(k, row.get("fold_key"))
        }  # fmt: skip
        test_loss = row.get("test_loss")
        train_loss = _logged_train_loss(row, row.get("best_epoch"))
        records.append({
            **{k: row[k] for k in FAMILY}, "run_dir": row["run_dir"],
            OPTIMIZER: row["optimizer"], "seed": row["seed"], "fold": row.get("fold"),
            "metric": chosen, "test": row.get(f"test_{chosen.name}"),
            "train_loss": train_loss,
            "gap": (test_loss - train_loss) if test_loss is not None else math.nan,
            **{k: row.get(k) for k in keys}, "settings": settings,
        })  # fmt: skip
    frame = pd.DataFrame.from_records(records)
    return frame.astype({k: float for k in ["test", "train_loss", "gap", *keys]})


def _axes(family: pd.DataFrame) -> list[str]:
    """The family's hyper-parameters: the optimizer (if several) and the keys that vary (a
    key a run's config lacks, written before the key existed, counts as null)."""
    settings = pd.DataFrame.from_records(family["settings"].tolist(), index=family.index)
    settings = settings.fillna(repr(None))
    varying = [k for k in settings.columns if settings[k].nunique() > 1]
    for key in varying:
        family[key] = settings[key]
    return ([OPTIMIZER] if family[OPTIMIZER].nunique() > 1 else []) + varying


# -- the report --------------------------------------------------------------------------


@dataclass
class FamilyReport:
    """The correlations of one family: a line per measure."""

    name: tuple[str, str, str]
    metric: Metric
    frame: pd.DataFrame
    axes: list[str]
    lines: list[dict[str, Any]]
    runs: str  # how many runs, and which


def correlate(
    frame: pd.DataFrame,
    *,
    resamples: int = 2000,
    seed: int = 0,
    max_train_loss: float | None = None,
) -> list[FamilyReport]:
    """Every family's correlations, for each measure that at least three of its runs hold;
    with ``max_train_loss``, of the runs whose logged training loss is at most that (Jiang
    et al. compare models trained to the same loss: one that never fit its training data
    is "flat" and bad at once)."""
    reports = []
    totals = frame.groupby(FAMILY, sort=False).size()
    if max_train_loss is not None:
        frame = frame[frame["train_loss"] <= max_train_loss]
    for name, family in frame.groupby(FAMILY, sort=False):
        runs = f"{len(family)} runs"
        if max_train_loss is not None:
            runs = f"{len(family)} of {totals[name]} runs: training loss <= {max_train_loss:g}"
        family = family.sort_values("run_dir")  # the resamples do not depend on the order found
        axes = _axes(family)
        lines = []
        for s in sharpness_measures():
            if family[s.key].notna().sum() < 3:
                continue
            x = family[s.key].to_numpy(float)
            lines.append({
                "measure": s.key, "title": s.title, "n": int(family[s.key].notna().sum()),
                "gap": kendall(x, family["gap"], resamples=resamples, seed=seed),
                "test": kendall(x, family["test"], resamples=resamples, seed=seed),
                "granulated": granulated(family.dropna(subset=[s.key]), s.key, axes),
            })  # fmt: skip
        if lines:  # the axes no group of runs varies alone are left out
            axes = [a for a in axes if any(not math.isnan(x["granulated"][a]) for x in lines)]
            metric = family["metric"].iloc[0]
            reports.append(FamilyReport(tuple(name), metric, family, axes, lines, runs))
    if not reports:
        raise UserError(
            "no family of runs holds a flatness measure on three runs or more: measure them "
            "first (the training command's --measure, or python -m <domain>.hessian ...)"
        )
    return reports


def markdown(report: FamilyReport) -> str:
    """The family's table: a row per measure."""
    domain, dataset, model = report.name
    axes = report.axes
    header = ["measure", "runs", "τ with gap", f"τ with test {report.metric.label}",
              *(f"τ̃ {a}" for a in axes), "Ψ"]  # fmt: skip
    lines = [
        f"#### {domain}: {dataset}, {model} ({report.runs})\n",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for line in report.lines:
        g = line["granulated"]
        cells = [line["title"], str(line["n"]), line["gap"].text(), line["test"].text(),
                 *(_plain(g[a]) for a in axes), _plain(g["Ψ"])]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plain(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:+.2f}"


def csv_text(reports: Sequence[FamilyReport]) -> str:
    """Long format: a line per family, measure and statistic."""
    records = []
    for report in reports:
        for line in report.lines:
            base = dict(zip(FAMILY, report.name, strict=True)) | {"measure": line["measure"],
                                                                  "runs": line["n"]}  # fmt: skip
            for target in ("gap", "test"):
                tau = line[target]
                records.append({**base, "statistic": f"tau_{target}", "value": tau.value,
                                "low": tau.low, "high": tau.high})  # fmt: skip
            for axis, value in line["granulated"].items():
                records.append({**base, "statistic": f"granulated_{axis}", "value": value})
    return pd.DataFrame.from_records(records).to_csv(index=False, float_format="%.6g")


def plot(report: FamilyReport, out: Path) -> list[Path]:
    """Measure against test metric, one panel per measure, every run a point coloured by
    its optimizer."""
    from matplotlib.figure import Figure  # the command's only plot: imported when drawn

    n = len(report.lines)
    fig = Figure(figsize=(3.4 * n, 3.4), layout="constrained")
    for i, line in enumerate(report.lines):
        ax = fig.add_subplot(1, n, i + 1)
        for optimizer, runs in report.frame.groupby(OPTIMIZER, sort=False):
            ax.scatter(runs[line["measure"]], runs["test"], s=14, label=optimizer,
                       color=optimizer_colour(str(optimizer)))  # fmt: skip
        values = report.frame[line["measure"]].dropna()
        if len(values) and values.min() > 0 and values.max() > 100 * values.min():
            ax.set_xscale("log")
        ax.set_xlabel(line["title"], fontsize=8)
        ax.set_ylabel(f"test {report.metric.label}", fontsize=8)
        ax.set_title(f"τ = {line['test'].text()}", fontsize=8)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=7)
    fig.suptitle(" / ".join(report.name), fontsize=9)
    stem = "correlation_" + "_".join(_slug(p) for p in report.name)
    return [Path(p) for p in save_figure(fig, str(out / stem))]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def report(
    rows: Sequence[dict[str, Any]],
    out: str | Path | None = None,
    *,
    metric: str | None = None,
    resamples: int = 2000,
    seed: int = 0,
    max_train_loss: float | None = None,
) -> str:
    """The Markdown of every family's correlations; with ``out``, also ``correlation.md``,
    ``correlation.csv`` and a figure per family there."""
    if resamples < 0:
        raise UserError(f"--resamples must be >= 0, got {resamples}")
    frame = run_frame(rows, metric)
    reports = correlate(frame, resamples=resamples, seed=seed, max_train_loss=max_train_loss)
    text = "\n".join(map(markdown, reports))
    if out is not None:
        out = Path(out)
        write_text(out / "correlation.md", text)
        write_text(out / "correlation.csv", csv_text(reports))
        for family in reports:
            plot(family, out)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = runs_parser("python -m common.correlation", __doc__)
    parser.add_argument("--out", help="folder for correlation.md, .csv and the figures")
    parser.add_argument("--metric", help="the test metric (default: the one selecting best.pt)")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    parser.add_argument(
        "--max-train-loss",
        type=float,
        help="only the runs whose training loss logged at best.pt's epoch is at most this",
    )
    args = parser.parse_args(argv)

    def command() -> None:
        rows = finished_rows(args.paths)
        options = {"metric": args.metric, "resamples": args.resamples, "seed": args.seed,
                   "max_train_loss": args.max_train_loss}  # fmt: skip
        print(report(rows, args.out, **options), end="")

    return one_line_errors(command)


if __name__ == "__main__":
    raise SystemExit(main())
