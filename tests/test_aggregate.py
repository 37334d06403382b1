"""Tables over seeds (common.aggregate, common.tables): statistics against hand-computed
values, settings, paired relative changes, the Markdown, CSV and LaTeX outputs, the
verdict sentence and the figures, on run directories written in the trainer's formats."""

from __future__ import annotations

import csv
import io
import math
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import common.figures
from common import run_rows
from common.aggregate import Stat, group_runs, reference, relative_change, verdict
from common.errors import UserError
from common.figures import plot_measures, plot_noise_curves, plot_sweep, sweep_keys
from common.io import write_json
from common.run_rows import run_row
from common.table_render import (
    aggregate_csv,
    aggregate_tables,
    latex_escape,
    table_latex,
    table_markdown,
)
from common.tables import main
from common.train.config import Config, load_config
from common.train.config_files import save_config

ACC = {"name": "accuracy", "label": "acc. (%)", "higher_is_better": True}
MCC = {"name": "mcc", "label": "MCC", "higher_is_better": True}

# test accuracy, Hessian trace, top eigenvalue, noise stability per (optimizer, seed): the
# numbers the hand computations below start from
VALUES = {
    ("sgd", 0): (90.0, 100.0, 10.0, 0.10),
    ("sgd", 1): (92.0, 120.0, 12.0, 0.12),
    ("sgd", 2): (94.0, 110.0, 11.0, 0.11),
    ("sam", 0): (91.0, 80.0, 8.0, 0.08),
    ("sam", 1): (93.0, 90.0, 9.0, 0.09),
    ("sam", 2): (95.0, 85.0, 8.5, 0.085),
    ("nso", 0): (92.0, 50.0, 5.0, 0.05),
    ("nso", 1): (96.0, 60.0, 6.0, 0.06),
    ("nso", 2): (94.0, 55.0, 5.5, 0.055),
}


def write_run(
    root: Path,
    optimizer: str,
    seed: int,
    values: tuple[float, float, float, float] | None = None,
    *,
    overrides: tuple[str, ...] = (),
    dataset: str = "digits",
    domain: str = "image",
    metrics: tuple[dict[str, Any], ...] = (ACC,),
    sigmas: tuple[float, ...] = (0.01,),
    fold: int | None = None,
    name: str | None = None,
    val: float | None = None,
    val_loss: float | None = None,
) -> Path:
    """A finished, measured run directory as the trainer and the measurements write it:
    config.yaml (a resolved Config), summary.json, hessian.json, noise_stability.json."""
    acc, trace, top, noise = values if values is not None else VALUES[(optimizer, seed)]
    run = root / (name or f"{dataset}/{optimizer}/seed{seed}")
    run.mkdir(parents=True)
    cfg = load_config(Config, None, [f"optimizer.name={optimizer}", f"seed={seed}", *overrides])
    save_config(cfg, run / "config.yaml")
    summary = {
        "domain": domain,
        "dataset": dataset,
        "synthetic": False,
        "model": "cnn",
        "optimizer": optimizer,
        "seed": seed,
        "run_dir": str(run),
        "metrics": list(metrics),
        "select": metrics[0],
        "test": {m["name"]: acc for m in metrics},
        "best_val": {
            "epoch": 1,
            **({metrics[0]["name"]: val} if val is not None else {}),
            **({"loss": val_loss} if val_loss is not None else {}),
        },
        "wall_time_s": 1.0,
        # the base Config has no folds: data.split_seed stands in for a domain's fold key
        **({"fold": fold, "fold_key": "data.split_seed"} if fold is not None else {}),
    }
    write_json(run / "summary.json", summary)
    hessian = {
        "split": "train",
        "n_examples": 64,
        "trace": {"total": trace, "stderr": 1.0},
        "eigenvalues": {"eigenvalues": [top]},
    }
    write_json(run / "hessian.json", hessian)
    results = [{"sigma": s, "mean": noise * (s / sigmas[0]) ** 2} for s in sigmas]
    write_json(
        run / "noise_stability.json", {"split": "train", "n_examples": 64, "results": results}
    )
    return run


@pytest.fixture
def three_seeds(tmp_path: Path) -> list[dict[str, Any]]:
    for optimizer, seed in VALUES:
        write_run(tmp_path, optimizer, seed)
    return [run_row(d) for d in run_rows.find_runs([tmp_path])]


def by_optimizer(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {g.optimizer: g for g in group_runs(rows)}


# ---------------------------------------------------------------- statistics


def test_stat_is_the_mean_and_sample_standard_deviation() -> None:
    s = Stat.of([1.0, 2.0, 4.0, None, math.nan])
    assert s.n == 3 and s.mean == pytest.approx(7 / 3)
    assert s.std == pytest.approx(statistics.stdev([1.0, 2.0, 4.0]))  # ddof 1
    assert s.std == pytest.approx(
        math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    )
    assert Stat.of([5.0]) == Stat(5.0, None, 1)  # one run: no spread
    assert Stat.of([None]) is None


def test_runs_differing_only_in_seed_are_one_group_with_hand_computed_statistics(three_seeds):
    groups = by_optimizer(three_seeds)
    assert list(groups) == ["sgd", "sam", "nso"]  # the registry's order
    sgd = groups["sgd"]
    assert sgd.setting == () and sgd.seeds == [0, 1, 2] and sgd.base is None
    assert groups["sam"].base == "sgd"
    acc = sgd.stat("test_accuracy")
    assert (acc.mean, acc.std, acc.n) == (92.0, 2.0, 3)  # 90, 92, 94
    trace = sgd.stat("trace")
    assert (trace.mean, trace.std) == (110.0, 10.0)  # 100, 120, 110
    assert groups["nso"].stat("noise_stability").mean == pytest.approx(0.055)


def test_relative_change_is_per_paired_seed(three_seeds):
    groups = list(group_runs(three_seeds))
    nso = next(g for g in groups if g.optimizer == "nso")
    sam = reference(groups, nso, "sam")
    sgd = reference(groups, nso, nso.base)
    assert (sam.optimizer, sgd.optimizer) == ("sam", "sgd")
    change = relative_change(nso, sam, "trace")
    pairs = [100 * (50 - 80) / 80, 100 * (60 - 90) / 90, 100 * (55 - 85) / 85]
    assert change.n == 3
    assert change.mean == pytest.approx(statistics.mean(pairs))
    assert change.std == pytest.approx(statistics.stdev(pairs))
    vs_base = relative_change(nso, sgd, "test_accuracy")
    assert vs_base.mean == pytest.approx(statistics.mean([100 * 2 / 90, 100 * 4 / 92, 0.0]))
    assert reference(groups, sam, "sam") is None  # not against itself


def test_relative_change_pairs_only_the_seeds_both_have(tmp_path):
    write_run(tmp_path, "sgd", 0)
    write_run(tmp_path, "sgd", 1)
    write_run(tmp_path, "sam", 1)
    write_run(tmp_path, "sam", 2)
    groups = group_runs([run_row(d) for d in run_rows.find_runs([tmp_path])])
    sgd, sam = groups
    change = relative_change(sam, sgd, "trace")
    assert change == Stat(pytest.approx(100 * (90 - 120) / 120), None, 1)  # seed 1 only


def test_a_swept_key_is_the_setting_and_seeds_and_folds_are_not(tmp_path):
    for rho in (0.01, 0.1):
        for seed in (0, 1):
            write_run(tmp_path, "sam", seed, overrides=(f"optimizer.rho={rho}",),
                      name=f"sam/rho{rho}/seed{seed}")  # fmt: skip
    for seed in (0, 1):
        write_run(tmp_path, "sgd", seed, name=f"sgd/seed{seed}")
    # folds aggregate like seeds, and measurement options or paths never make a setting
    for fold in (0, 1):
        keys = (f"data.split_seed={fold}", f"hessian.n_probes={5 + fold}", f"data.root=/d{fold}")
        write_run(tmp_path, "nso", 0, overrides=keys, fold=fold, name=f"nso/fold{fold}")
    groups = group_runs([run_row(d) for d in run_rows.find_runs([tmp_path])])
    shown = [(g.optimizer, g.setting, len(g.runs)) for g in groups]
    assert shown == [
        ("sgd", (), 2),
        ("nso", (), 2),
        ("sam", (("optimizer.rho", 0.01),), 2),
        ("sam", (("optimizer.rho", 0.1),), 2),
    ]
    assert next(g for g in groups if g.optimizer == "nso").folds == [0, 1]
    assert sweep_keys(groups) == ["optimizer.rho"]
    # the sweep's runs are compared with the only SGD group there is
    sam = groups[2]
    assert reference(groups, sam, "sgd") is groups[0]


def test_the_same_run_twice_is_refused(tmp_path):
    write_run(tmp_path / "a", "sgd", 0)
    write_run(tmp_path / "b", "sgd", 0)  # a copied run directory
    rows = [run_row(d) for d in run_rows.find_runs([tmp_path])]
    with pytest.raises(UserError, match="are the same run \\(seed 0\\)"):
        group_runs(rows)


# ---------------------------------------------------------------- the tables


def cells(markdown: str) -> list[dict[str, str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [
        dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
        for line in lines[2:]
    ]


def test_one_table_per_measure_rows_data_sets_columns_optimizers(three_seeds):
    found = aggregate_tables(group_runs(three_seeds))
    assert [t.name for t in found] == ["metric", "trace", "top_eigenvalue", "noise_stability"]
    trace = found[1]
    assert trace.header == [
        "domain", "data set", "model", "sgd", "sam", "nso",
        "sam vs base (%)", "nso vs base (%)", "nso vs SAM (%)",
    ]  # fmt: skip
    (row,) = cells(table_markdown(trace))
    assert row["sgd"] == "110 ± 10" and row["sam"] == "85 ± 5"  # 80, 90, 85
    pairs = [100 * (50 - 80) / 80, 100 * (60 - 90) / 90, 100 * (55 - 85) / 85]
    assert row["nso vs SAM (%)"] == f"{statistics.mean(pairs):+.1f} ± {statistics.stdev(pairs):.1f}"
    assert row["nso vs SAM (%)"].startswith("-35.")
    (metric,) = cells(table_markdown(found[0]))
    assert metric["sgd"] == "92.00 ± 2.00"  # a percentage: two decimals
    assert "sample standard deviation (ddof 1) over n = 3 runs (seeds 0, 1, 2)" in trace.caption
    assert "noise stability" in found[3].title and "0.01" in found[3].title


def test_a_cell_with_fewer_runs_says_its_n_and_a_missing_one_is_a_dash(tmp_path):
    for seed in (0, 1, 2):
        write_run(tmp_path, "sgd", seed)
    write_run(tmp_path, "sam", 0)
    write_run(tmp_path, "nso", 0, dataset="cifar10")
    trace = aggregate_tables(group_runs([run_row(d) for d in run_rows.find_runs([tmp_path])]))[1]
    rows = {r["data set"]: r for r in cells(table_markdown(trace))}
    assert rows["digits"]["sam"] == "80 (n=1)"  # one run: no ± at all
    assert rows["digits"]["nso"] == "–" and rows["cifar10"]["sgd"] == "–"


def test_each_domain_names_its_metric(tmp_path):
    write_run(tmp_path, "sgd", 0, domain="text", dataset="cola", metrics=(MCC,))
    write_run(tmp_path, "sgd", 0, domain="text", dataset="rte")
    runs = run_rows.find_runs([tmp_path])
    (metric, *_) = aggregate_tables(group_runs([run_row(d) for d in runs]))
    measures = {r["data set"]: r["measure"] for r in cells(table_markdown(metric))}
    assert measures == {"cola": "test MCC", "rte": "test acc. (%)"}


def test_csv_is_long_format_with_the_exact_statistics(three_seeds):
    groups = group_runs(three_seeds)
    lines = list(csv.DictReader(io.StringIO(aggregate_csv(groups))))
    nso_trace = next(r for r in lines if r["optimizer"] == "nso" and r["measure"] == "trace")
    assert float(nso_trace["mean"]) == 55.0 and float(nso_trace["std"]) == 5.0
    assert nso_trace["n"] == "3" and nso_trace["seeds"] == "0 1 2" and nso_trace["base"] == "sgd"
    pairs = [100 * (50 - 80) / 80, 100 * (60 - 90) / 90, 100 * (55 - 85) / 85]
    assert float(nso_trace["vs_sam_mean"]) == pytest.approx(statistics.mean(pairs))
    assert float(nso_trace["vs_sam_std"]) == pytest.approx(statistics.stdev(pairs))
    sgd = next(r for r in lines if r["optimizer"] == "sgd" and r["measure"] == "test_accuracy")
    assert sgd["vs_base_mean"] == "" and sgd["base"] == ""
    assert {r["measure"] for r in lines} == {"test_accuracy", "trace", "top_eigenvalue",
                                            "noise_stability"}  # fmt: skip


def test_latex_is_booktabs_with_escaped_text(three_seeds):
    trace = aggregate_tables(group_runs(three_seeds))[1]
    tex = table_latex(trace)
    lines = tex.splitlines()
    assert lines[0] == r"\begin{table}[t]" and lines[-1] == r"\end{table}"
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert lines.count(rule) == 1
    assert r"\begin{tabular}{lllrrrrrr}" in lines
    assert r"nso vs SAM (\%)" in tex  # escaped
    assert r"$110 \pm 10$" in tex and r"$85 \pm 5$" in tex
    assert latex_escape("a_b & 50% #1 {x} ~ ^ \\ σ – ±") == (
        r"a\_b \& 50\% \#1 \{x\} \textasciitilde{} \textasciicircum{} \textbackslash{} "
        r"$\sigma$ -- $\pm$"
    )


@pytest.mark.skipif(not any(Path(p, "pdflatex").exists() for p in
                            __import__("os").environ.get("PATH", "").split(":")),
                    reason="no pdflatex on this machine")  # fmt: skip
def test_latex_compiles(three_seeds, tmp_path):
    body = "\n".join(map(table_latex, aggregate_tables(group_runs(three_seeds))))
    doc = tmp_path / "t.tex"
    doc.write_text("\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n"
                   f"{body}\\end{{document}}\n")  # fmt: skip
    r = subprocess.run(["pdflatex", "-halt-on-error", doc.name], cwd=tmp_path, capture_output=True)
    assert r.returncode == 0, r.stdout[-2000:]


# ---------------------------------------------------------------- the verdict


def test_verdict_flattest_beyond_the_spread(three_seeds):
    groups = group_runs(three_seeds)
    sentence = verdict(groups, groups[0].row)
    # nso's trace 55 ± 5 clears sam's 85 ± 5 and sgd's 110 ± 10; its accuracy 94 ± 2 does not
    # clear sam's 93 ± 2
    assert sentence.startswith("image, digits, 3 seeds: NSO came out flattest")
    assert "beyond the seeds' spread" in sentence
    assert "its test accuracy was the best, but within the spread" in sentence


def test_verdict_names_who_was_flatter_or_more_accurate(tmp_path):
    values = {"sgd": (95.0, 50.0, 5.0, 0.05), "sam": (90.0, 60.0, 4.0, 0.06),
              "nso": (80.0, 70.0, 6.0, 0.07)}  # fmt: skip
    for optimizer, v in values.items():
        for seed in (0, 1):
            write_run(tmp_path, optimizer, seed, (v[0] + seed, v[1] + seed, v[2], v[3]))
    groups = group_runs([run_row(d) for d in run_rows.find_runs([tmp_path])])
    sentence = verdict(groups, groups[0].row)
    assert "NSO did not come out flattest" in sentence
    assert "SGD had the lowest Hessian trace, SAM had the lowest top" in sentence
    assert "it was not the most accurate (SGD had the best test accuracy)" in sentence


def test_verdict_with_one_seed_is_never_beyond_a_spread(tmp_path):
    for optimizer in ("sgd", "sam", "nso"):
        write_run(tmp_path, optimizer, 0)
    groups = group_runs([run_row(d) for d in run_rows.find_runs([tmp_path])])
    sentence = verdict(groups, groups[0].row)
    assert "1 seed:" in sentence and "within the seeds' spread" in sentence


# ---------------------------------------------------------------- the figures


def captured(monkeypatch) -> list[Any]:
    figures: list[Any] = []
    monkeypatch.setattr(
        common.figures, "save_figure", lambda fig, stem: figures.append((fig, stem)) or []
    )
    return figures


def test_bars_one_panel_per_domain_aligned_with_error_bars(tmp_path, monkeypatch):
    for optimizer, seed in VALUES:
        write_run(tmp_path, optimizer, seed)
    write_run(tmp_path, "sgd", 0, (50.0, 1e4, 1e3, 1.0), domain="graph", dataset="MUTAG")
    write_run(tmp_path, "nso", 0, (60.0, 1.0, 0.1, 0.01), domain="graph", dataset="MUTAG")
    figures = captured(monkeypatch)
    plot_measures(group_runs([run_row(d) for d in run_rows.find_runs([tmp_path])]), tmp_path)
    names = [Path(stem).name for _, stem in figures]
    assert names == ["metric", "trace", "top_eigenvalue", "noise_stability"]
    fig = figures[1][0]
    image, graph = sorted(fig.axes, key=lambda ax: not ax.get_title().startswith("image"))
    assert image.get_title().startswith("image: Hessian trace\non 64 train examples\nseeds 0, 1, 2")
    assert graph.get_title().startswith("graph: Hessian trace")
    # a data set without sam: nso keeps its own offset (a gap where sam's bar would be)
    # instead of moving into sam's place
    write_run(tmp_path, "sgd", 0, dataset="cifar10")
    write_run(tmp_path, "nso", 0, dataset="cifar10")
    figures.clear()
    plot_measures(group_runs([run_row(d) for d in run_rows.find_runs([tmp_path])]), tmp_path)
    image, graph = sorted(figures[1][0].axes, key=lambda ax: not ax.get_title().startswith("image"))
    bars = {c.get_label(): c.patches for c in image.containers if hasattr(c, "patches")}
    assert sorted(bars) == ["nso", "sam", "sgd"] and len(bars["sam"]) == 1
    width = bars["sgd"][0].get_width()
    assert bars["nso"][0].get_x() == pytest.approx(bars["sgd"][0].get_x() + 2 * width)
    assert [t.get_text() for t in image.get_xticklabels()] == ["cifar10", "digits"]
    assert graph.get_yscale() == "log" and image.get_yscale() == "linear"  # 1e4 vs 1
    errorbars = [c for c in image.containers if type(c).__name__ == "ErrorbarContainer"]
    assert len(errorbars) == 3
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["sgd", "sam", "nso"]


def test_sweep_lines_against_the_swept_value_with_the_base_as_reference(tmp_path, monkeypatch):
    for rho, shift in ((0.01, 0.0), (0.1, 1.0), (1.0, 2.0)):
        for seed in (0, 1):
            write_run(tmp_path, "sam", seed, (90 + shift + seed, 80.0, 8.0, 0.08),
                      overrides=(f"optimizer.rho={rho}",), name=f"sam/{rho}/{seed}")  # fmt: skip
    for seed in (0, 1):
        write_run(tmp_path, "sgd", seed, name=f"sgd/{seed}")
    groups = group_runs([run_row(d) for d in run_rows.find_runs([tmp_path])])
    figures = captured(monkeypatch)
    plot_sweep(groups, "optimizer.rho", tmp_path)
    ((fig, stem),) = figures
    assert Path(stem).name == "sweep_optimizer.rho"
    accuracy = fig.axes[0]
    assert accuracy.get_title().startswith("test acc. (%) vs rho")
    assert accuracy.get_xscale() == "log"  # 0.01 .. 1
    (line,) = [c.lines[0] for c in accuracy.containers if c.get_label() == "digits sam"]
    assert list(line.get_xdata()) == [0.01, 0.1, 1.0]
    assert list(line.get_ydata()) == [90.5, 91.5, 92.5]
    (base,) = [ln for ln in accuracy.get_lines() if ln.get_label() == "digits sgd"]
    assert base.get_ydata()[0] == 91.0  # the SGD runs' mean, as a dashed reference


def test_noise_curve_against_sigma(tmp_path, monkeypatch):
    for optimizer, seed in VALUES:
        write_run(tmp_path, optimizer, seed, sigmas=(0.01, 0.02, 0.05))
    figures = captured(monkeypatch)
    plot_noise_curves(group_runs([run_row(d) for d in run_rows.find_runs([tmp_path])]), tmp_path)
    ((fig, _),) = figures
    (ax,) = fig.axes
    (nso,) = [c.lines[0] for c in ax.containers if c.get_label() == "nso"]
    assert list(nso.get_xdata()) == [0.01, 0.02, 0.05]
    assert nso.get_ydata()[1] == pytest.approx(0.055 * 4)
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"  # 25x: the σ² growth


# ---------------------------------------------------------------- the command


def test_command_writes_every_output(three_seeds, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([str(tmp_path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "### Hessian trace" in printed and "| nso vs SAM (%) |" in printed
    tex = (out / "table.tex").read_text()
    assert tex.count(r"\begin{table}") == 4 and tex.startswith("% \\usepackage{booktabs}")
    assert (out / "table.md").read_text() == printed


def test_command_refuses_a_damaged_config(three_seeds, tmp_path, capsys):
    path = Path(three_seeds[0]["run_dir"]) / "config.yaml"
    path.write_text(path.read_text().replace("seed: 0", "seed: 7"))
    r = subprocess.run([sys.executable, "-m", "common.tables", str(tmp_path)],
                       capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: ") and "config.yaml" in r.stderr
    assert r.stderr.count("\n") == 1


def test_verdict_counts_folds_as_folds(tmp_path: Path) -> None:
    for fold in range(3):
        for optimizer in ("sgd", "nso"):
            write_run(
                tmp_path,
                optimizer,
                0,
                VALUES[(optimizer, fold)],
                fold=fold,
                name=f"{optimizer}/fold{fold}",
            )
    groups = group_runs([run_row(d) for d in run_rows.find_runs([tmp_path])])
    (row,) = {g.row for g in groups}
    assert verdict(groups, row).startswith("image, digits, 3 folds: ")


def test_equal_values_have_no_spread_and_their_own_mean():
    # summed in floats, three 0.2s have a mean of 0.20000000000000004 and a std of 3.4e-17,
    # which a table printed as "0.2 ± 3.4e-17"
    stat = Stat.of([0.2, 0.2, 0.2])
    assert stat is not None and (stat.mean, stat.std, stat.n) == (0.2, 0.0, 3)
    spread = Stat.of([1.0, 2.0, 4.0])
    assert spread is not None and spread.std == statistics.stdev([1.0, 2.0, 4.0])


def test_an_infinite_value_is_a_statistic_not_a_crash():
    # the exact arithmetic takes no inf: an exploded noise-stability mean crashed the tables
    stat = Stat.of([math.inf, 1.0])
    assert stat is not None and stat.mean == math.inf and stat.n == 2
    assert Stat.of([math.inf]) == Stat(math.inf, None, 1)


def test_a_registered_measurements_options_are_no_setting(tmp_path):
    from common import measurements
    from common.aggregate import ignored_key
    from common.measurements import Measurement

    assert ignored_key("hessian.n_probes", None) and not ignored_key("optimizer.rho", None)
    measurements.register(Measurement("weight_norm", run=lambda *a: {}))
    try:
        assert ignored_key("weight_norm.power", None)
    finally:
        del measurements.MEASUREMENTS["weight_norm"]


def test_a_list_valued_setting_that_varies_groups_runs(tmp_path):
    # data.records=[100] against [100, 208]: a list in a setting was unhashable
    rows = [run_row(write_run(tmp_path, "sgd", seed)) for seed in (0, 1)]
    for row, records in zip(rows, ([100], [100, 208]), strict=True):
        row["config"] = {**row["config"], "data.records": records}
    groups = group_runs(rows)
    assert sorted(g.setting for g in groups) == [
        (("data.records", (100,)),), (("data.records", (100, 208)),),
    ]  # fmt: skip


def test_every_registered_optimizer_has_its_own_colour_in_the_figures():
    from matplotlib.colors import to_rgb

    from common.aggregate import optimizer_colour
    from common.optim import OPTIMIZERS

    colours = [to_rgb(optimizer_colour(name)) for name in OPTIMIZERS]
    assert len(set(colours)) == len(OPTIMIZERS)  # 14 now: C0-C9 repeated past ten
    assert optimizer_colour("sam") == f"C{list(OPTIMIZERS).index('sam')}"
    assert to_rgb(optimizer_colour("not-registered")) == to_rgb("0.5")
