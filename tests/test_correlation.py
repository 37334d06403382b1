"""Flatness vs generalization (common.correlation): Kendall's τ against hand counts and
scipy, its bootstrap interval, Jiang et al.'s granulated τ by hand, and the command on run
directories written in the trainer's formats."""

from __future__ import annotations

import csv
import json
import math
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from common.correlation import _axes, granulated, kendall, main
from common.io import write_json
from common.tables import main as tables_main
from tests.test_aggregate import write_run


def by_hand(x: list[float], y: list[float]) -> float:
    """τ of pairs without ties: (concordant − discordant) / pairs."""
    signs = [np.sign((x[i] - x[j]) * (y[i] - y[j])) for i, j in combinations(range(len(x)), 2)]
    return float(sum(signs) / len(signs))


def test_tau_counts_concordant_pairs_and_matches_scipy():
    assert kendall([1, 2, 3, 4], [1, 3, 2, 4], resamples=0).value == pytest.approx(4 / 6)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=20), rng.normal(size=20)
    assert kendall(x, y, resamples=0).value == pytest.approx(by_hand(list(x), list(y)))
    ties = [1, 1, 2, 3, 3, 4]
    assert kendall(ties, [2, 1, 3, 3, 5, 4], resamples=0).value == pytest.approx(
        stats.kendalltau(ties, [2, 1, 3, 3, 5, 4]).statistic  # τ-b where there are ties
    )


def test_the_interval_is_a_reproducible_bootstrap_around_the_estimate():
    rng = np.random.default_rng(1)
    x = rng.normal(size=30)
    y = x + rng.normal(size=30)
    a, b = kendall(x, y, seed=3), kendall(x, y, seed=3)
    assert a == b and a.low < a.value < a.high and a.n == 30
    assert kendall(x, y, seed=4).low != a.low  # the seed draws the resamples
    perfect = kendall(x, 2 * x + 1)
    assert perfect.value == 1.0 and perfect.low == pytest.approx(1.0) == perfect.high


def test_missing_values_are_left_out_and_a_constant_has_no_ranking():
    tau = kendall([1, 2, float("nan"), 3, 4], [1, 2, 9, 4, 3], resamples=0)
    assert tau.n == 4 and tau.value == pytest.approx(by_hand([1, 2, 3, 4], [1, 2, 4, 3]))
    assert math.isnan(kendall([1, 1, 1], [1, 2, 3]).value)
    assert kendall([1, 1, 1], [1, 2, 3]).text() == "–"


def test_granulated_tau_is_the_mean_over_groups_where_everything_else_is_equal():
    # two seeds; sgd once per seed, sam at three ρ per seed
    rows = []
    for seed in (0, 1):
        rows.append(("sgd", "None", seed, 5.0 + seed, 1.0))
        for i, rho in enumerate(("0.02", "0.05", "0.2")):
            measure = [3.0, 1.0, 2.0][i] + seed  # seed 0: ranks 3,1,2; seed 1 likewise
            gap = [0.3, 0.1, 0.2][i] if seed == 0 else [0.1, 0.2, 0.3][i]
            rows.append(("sam", rho, seed, measure, gap))
    frame = pd.DataFrame(rows, columns=["optimizer", "optimizer.rho", "seed", "m", "gap"])
    frame["fold"] = None
    g = granulated(frame, "m", ["optimizer", "optimizer.rho"])
    rho_taus = [by_hand([3, 1, 2], [0.3, 0.1, 0.2]), by_hand([4, 2, 3], [0.1, 0.2, 0.3])]
    assert g["optimizer.rho"] == pytest.approx(np.mean(rho_taus))
    # the optimizer's groups: every run of one seed (sgd and the three sam runs)
    opt_taus = [
        by_hand([5, 3, 1, 2], [1.0, 0.3, 0.1, 0.2]),
        by_hand([6, 4, 2, 3], [1.0, 0.1, 0.2, 0.3]),
    ]
    assert g["optimizer"] == pytest.approx(np.mean(opt_taus))
    assert g["Ψ"] == pytest.approx((g["optimizer"] + g["optimizer.rho"]) / 2)


# test accuracy, trace, top eigenvalue, noise, test loss, logged train loss per run
RUNS = {
    ("sgd", (), 0): (90.0, 100.0, 10.0, 0.10, 0.50, 0.10),
    ("sgd", (), 1): (91.0, 120.0, 12.0, 0.12, 0.60, 0.10),
    ("sam", ("optimizer.rho=0.02",), 0): (92.0, 80.0, 9.0, 0.08, 0.40, 0.15),
    ("sam", ("optimizer.rho=0.02",), 1): (93.0, 70.0, 8.0, 0.09, 0.35, 0.15),
    ("sam", ("optimizer.rho=0.1",), 0): (94.0, 60.0, 7.0, 0.05, 0.30, 0.20),
    ("sam", ("optimizer.rho=0.1",), 1): (89.0, 90.0, 11.0, 0.11, 0.55, 0.20),
}


def run_name(optimizer: str, overrides: tuple[str, ...], seed: int) -> str:
    return f"{optimizer}/{'-'.join(overrides) or 'default'}/seed{seed}"


def write_family(root: Path) -> None:
    for (optimizer, overrides, seed), values in RUNS.items():
        name = run_name(optimizer, overrides, seed)
        run = write_run(root, optimizer, seed, values[:4], overrides=overrides, name=name)
        summary = json.loads((run / "summary.json").read_text())
        summary.pop("sha256", None)
        summary["test"]["loss"] = values[4]
        write_json(run / "summary.json", summary)
        with open(run / "metrics.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["epoch", "step", "train_loss", "val_accuracy"])
            writer.writerow([1, 10, values[5], 80.0])  # best.pt's epoch (write_run: 1)
            writer.writerow([2, 20, 0.01, 70.0])


def test_the_command_tabulates_every_measure_with_the_gap_and_the_test_metric(tmp_path, capsys):
    write_family(tmp_path / "runs")
    out = tmp_path / "out"
    assert main([str(tmp_path / "runs"), "--out", str(out), "--resamples", "200"]) == 0
    printed = capsys.readouterr().out
    values = [RUNS[k] for k in sorted(RUNS, key=lambda k: run_name(*k))]  # the runs' order
    gaps = [v[4] - v[5] for v in values]  # test loss − the loss logged at best.pt's epoch
    trace_gap = kendall([v[1] for v in values], gaps, resamples=200)
    trace_test = kendall([v[1] for v in values], [v[0] for v in values], resamples=200)
    line = next(row for row in printed.splitlines() if row.startswith("| Hessian trace"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1:4] == ["6", trace_gap.text(), trace_test.text()]
    assert "τ̃ optimizer.rho" in printed and "6 runs" in printed
    table = pd.read_csv(out / "correlation.csv")
    tau = table[(table.measure == "trace") & (table.statistic == "tau_gap")]
    assert tau.value.item() == pytest.approx(trace_gap.value)
    assert (out / "correlation_image_digits_cnn.png").stat().st_size > 0
    assert (out / "correlation.md").read_text() == printed


def test_runs_without_measures_or_with_an_unknown_metric_are_one_line(tmp_path, capsys):
    write_family(tmp_path / "runs")
    assert main([str(tmp_path / "runs"), "--metric", "f1"]) != 0
    err = capsys.readouterr().err
    assert "reports no metric 'f1'" in err and "accuracy" in err and len(err.splitlines()) == 1
    for path in (tmp_path / "runs").rglob("*.json"):
        if path.name != "summary.json":
            path.unlink()
    assert main([str(tmp_path / "runs")]) != 0
    err = capsys.readouterr().err
    assert "no family of runs holds a flatness measure" in err and "Traceback" not in err
    assert main([str(tmp_path / "runs"), "--resamples", "-1"]) != 0
    assert "--resamples must be >= 0" in capsys.readouterr().err


def test_the_tables_command_adds_the_section_on_request(tmp_path, capsys):
    write_family(tmp_path / "runs")
    paths = [str(tmp_path / "runs"), "--out", str(tmp_path / "out")]
    assert tables_main(paths) == 0
    plain = capsys.readouterr().out
    assert "predict generalization" not in plain and not (tmp_path / "out/correlation.md").exists()
    assert tables_main([*paths, "--correlation"]) == 0
    both = capsys.readouterr().out
    section = "\n### Does flatness predict generalization?\n\n"
    assert both == plain + section + (tmp_path / "out/correlation.md").read_text()


def test_a_key_missing_from_an_older_runs_config_counts_as_null_not_as_an_axis():
    settings = [
        {"optimizer.rho": "0.05", "optimizer.ema_decay": "None"},
        {"optimizer.rho": "0.1"},  # written before optimizer.ema_decay existed
        {"optimizer.rho": "0.2", "optimizer.ema_decay": "None"},
    ]
    family = pd.DataFrame({"optimizer": ["sam"] * 3, "settings": settings})
    assert _axes(family) == ["optimizer.rho"]
    assert family["optimizer.rho"].tolist() == ["0.05", "0.1", "0.2"]


def test_only_runs_fit_to_a_training_loss_are_compared_on_request(tmp_path, capsys):
    write_family(tmp_path / "runs")
    assert main([str(tmp_path / "runs"), "--max-train-loss", "0.15", "--resamples", "0"]) == 0
    printed = capsys.readouterr().out
    assert "(4 of 6 runs: training loss <= 0.15)" in printed  # the two at 0.20 are left out
    kept = [v for v in RUNS.values() if v[5] <= 0.15]
    tau = kendall([v[1] for v in kept], [v[4] - v[5] for v in kept], resamples=0)
    line = next(row for row in printed.splitlines() if row.startswith("| Hessian trace"))
    assert [c.strip() for c in line.strip("|").split("|")][1:3] == ["4", tau.text()]
