"""Hyper-parameter selection on validation data (common.select), the tables of the chosen
settings and the trade-off figure, on run directories written in the trainer's formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from common import run_rows
from common.aggregate import group_runs
from common.errors import UserError
from common.io import read_json
from common.run_rows import run_row
from common.select import (
    CHOSEN,
    compared_groups,
    main,
    select,
    selection_markdown,
    write_selection,
)
from common.table_render import tables_markdown
from common.tradeoff import plot_tradeoff, tradeoff_figure
from tests.test_aggregate import write_run

LOSS = {"name": "loss", "label": "loss", "higher_is_better": False}

# (optimizer, setting) -> validation value per seed 0, 1; the test metric runs the other
# way on purpose: selection must never look at it
GRID = {
    ("sam", "optimizer.rho=0.02"): (90.0, 92.0),
    ("sam", "optimizer.rho=0.05"): (95.0, 93.0),  # best mean (94)
    ("sam", "optimizer.rho=0.2"): (97.0, 85.0),  # best single seed, worse mean (91)
    ("nso", "optimizer.sigma=0.01"): (80.0, 82.0),
    ("nso", "optimizer.sigma=0.1"): (81.0, 81.0),  # a tie with 0.01: the first one wins
}


def write_grid(root: Path) -> list[dict]:
    for (optimizer, setting), vals in GRID.items():
        for seed, val in enumerate(vals):
            name = f"{optimizer}/{setting.split('=')[1]}/seed{seed}"
            values = (100.0 - val, 10.0 * seed + val, 1.0, 0.1)  # test acc. opposite to val
            write_run(root, optimizer, seed, values, overrides=(setting,), name=name, val=val)
    for seed in (0, 1):
        write_run(root, "sgd", seed, (90.0, 50.0, 2.0, 0.2), name=f"sgd/seed{seed}", val=88.0)
    return [run_row(d) for d in run_rows.find_runs([root])]


def test_the_best_mean_validation_value_wins_not_the_test_metric(tmp_path):
    selections = {s.optimizer: s for s in select(group_runs(write_grid(tmp_path)))}
    assert set(selections) == {"sam", "nso"}  # sgd had no choice to make
    assert selections["sam"].chosen == (("optimizer.rho", 0.05),)
    assert selections["sam"].overrides() == ["optimizer.rho=0.05"]
    assert selections["nso"].chosen == (("optimizer.sigma", 0.01),)  # tie: first in order
    grid = {s[0][1]: (stat.mean, stat.n) for s, stat in selections["sam"].candidates}
    assert grid == {0.02: (91.0, 2), 0.05: (94.0, 2), 0.2: (91.0, 2)}


def test_a_lower_is_better_metric_chooses_the_smallest(tmp_path):
    for rho, val in ((0.02, 0.3), (0.05, 0.2), (0.1, 0.4)):
        write_run(
            tmp_path,
            "sam",
            0,
            (1.0, 1.0, 1.0, 1.0),
            overrides=(f"optimizer.rho={rho}",),
            name=f"sam/{rho}/seed0",
            val=val,
            metrics=(LOSS,),
        )
    (choice,) = select(group_runs([run_row(d) for d in run_rows.find_runs([tmp_path])]))
    assert choice.chosen == (("optimizer.rho", 0.05),)


def test_a_tie_goes_to_the_lower_validation_loss(tmp_path):
    for rho, loss in ((0.02, 0.5), (0.05, 0.3), (0.1, 0.4)):
        write_run(
            tmp_path,
            "sam",
            0,
            overrides=(f"optimizer.rho={rho}",),
            name=f"{rho}/seed0",
            val=88.24,
            val_loss=loss,
        )
    (choice,) = select(group_runs([run_row(d) for d in run_rows.find_runs([tmp_path])]))
    assert choice.chosen == (("optimizer.rho", 0.05),)


def test_runs_without_a_validation_value_are_no_candidates(tmp_path):
    write_run(tmp_path, "sam", 0, overrides=("optimizer.rho=0.05",), name="a/seed0", val=90.0)
    write_run(tmp_path, "sam", 0, overrides=("optimizer.rho=0.1",), name="b/seed0")
    assert select(group_runs([run_row(d) for d in run_rows.find_runs([tmp_path])])) == []


def test_compared_groups_keep_the_chosen_setting_in_one_row(tmp_path):
    groups = group_runs(write_grid(tmp_path))
    selections = select(groups)
    compared = compared_groups(groups, selections)
    assert sorted(g.optimizer for g in compared) == ["nso", "sam", "sgd"]
    label = "sam rho=0.05; nso sigma=0.01"
    assert {g.setting for g in compared} == {((CHOSEN, label),)}
    markdown = tables_markdown(compared)
    assert f"| {CHOSEN}={label} |" in markdown
    sam = next(g for g in compared if g.optimizer == "sam")
    assert sorted(r["config"]["optimizer.rho"] for r in sam.runs) == [0.05, 0.05]


def test_selection_files_and_markdown(tmp_path):
    selections = select(group_runs(write_grid(tmp_path / "runs")))
    written = write_selection(selections, tmp_path / "out")
    record = read_json(written[0], fix="")
    sam = next(s for s in record["selections"] if s["optimizer"] == "sam")
    assert sam["chosen"] == {"optimizer.rho": 0.05}
    assert [p["val_mean"] for p in sam["grid"]] == [91.0, 94.0, 91.0]
    text = selection_markdown(selections)
    assert "**rho=0.05: 94.00 ± 1.41 (n=2)**" in text
    assert "rho=0.2: 91.00 ± 8.49 (n=2)" in text


def test_the_command_prints_overrides_for_scripts(tmp_path, capsys):
    write_grid(tmp_path)
    assert main([str(tmp_path), "--overrides", "sam"]) == 0
    assert capsys.readouterr().out.strip() == "optimizer.rho=0.05"
    assert main([str(tmp_path), "--overrides", "wsam"]) == 0  # no grid: no choice, no line
    assert capsys.readouterr().out == ""
    assert main([str(tmp_path), "--chosen-runs", "sam"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == sorted(str(tmp_path / f"sam/0.05/seed{s}") for s in (0, 1))
    assert main([str(tmp_path / "nothing")]) == 2


def test_different_selecting_metrics_are_refused(tmp_path):
    write_run(tmp_path, "sam", 0, overrides=("optimizer.rho=0.05",), name="a/seed0", val=1.0)
    write_run(
        tmp_path,
        "sam",
        1,
        overrides=("optimizer.rho=0.05",),
        name="b/seed1",
        val=1.0,
        metrics=(LOSS,),
    )
    write_run(tmp_path, "sam", 0, overrides=("optimizer.rho=0.1",), name="c/seed0", val=1.0)
    with pytest.raises(UserError, match="different metrics"):
        select(group_runs([run_row(d) for d in run_rows.find_runs([tmp_path])]))


def test_the_tradeoff_figure_has_every_grid_point(tmp_path):
    groups = group_runs(write_grid(tmp_path / "runs"))
    figure = tradeoff_figure(groups, select(groups))
    for ax in figure.axes:  # a point per group: 3 rho, 2 sigma, the base optimizer
        assert len(ax.containers) == 6
        assert sorted(t.get_text() for t in ax.texts) == [
            "rho=0.02",
            "rho=0.05",
            "rho=0.2",
            "sigma=0.01",
            "sigma=0.1",
        ]
    assert len(figure.axes) == 2  # the trace and the top eigenvalue
    written = plot_tradeoff(groups, tmp_path / "out", select(groups))
    assert [p.suffix for p in written] == [".png", ".pdf"]
    assert all(p.stat().st_size > 0 for p in written)
    assert plot_tradeoff([], tmp_path / "empty") == []


def test_chosen_runs_cover_every_data_set(tmp_path, capsys):
    for dataset, best in (("digits", 0.05), ("cifar10", 0.2)):
        for rho in (0.05, 0.2):
            write_run(
                tmp_path,
                "sam",
                0,
                overrides=(f"optimizer.rho={rho}",),
                dataset=dataset,
                name=f"{dataset}/{rho}/seed0",
                val=90.0 + (rho == best),
            )
    assert main([str(tmp_path), "--chosen-runs", "sam"]) == 0
    assert capsys.readouterr().out.split() == sorted(
        [str(tmp_path / "digits/0.05/seed0"), str(tmp_path / "cifar10/0.2/seed0")]
    )
    assert main([str(tmp_path), "--overrides", "sam"]) == 2  # which data set's? ambiguous
    assert "use --chosen-runs" in capsys.readouterr().err


def test_settings_are_judged_on_the_seeds_they_share(tmp_path):
    # tuned with seed 0, 0.05 won and then ran seeds 1 and 2, whose lower validation values
    # must not turn the choice (a tabulation after the fact agrees with the sweep's choice)
    vals = {(0.02, 0): 90.0, (0.05, 0): 95.0, (0.05, 1): 80.0, (0.05, 2): 81.0, (0.2, 0): 91.0}
    for (rho, seed), val in vals.items():
        write_run(
            tmp_path,
            "sam",
            seed,
            overrides=(f"optimizer.rho={rho}",),
            name=f"{rho}/seed{seed}",
            val=val,
        )
    groups = group_runs([run_row(d) for d in run_rows.find_runs([tmp_path])])
    (choice,) = select(groups)
    assert choice.chosen == (("optimizer.rho", 0.05),)
    assert [stat.n for _, stat in choice.candidates] == [1, 1, 1]  # seed 0 each
    (sam,) = [g for g in compared_groups(groups, [choice])]
    assert sam.seeds == [0, 1, 2]  # the table still reports every seed of the choice
