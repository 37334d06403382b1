"""The two reports of a cross-validated accuracy (common.epochs) against hand-computed
values, and the graph split that validates on the test fold (data.val_is_test)."""

from __future__ import annotations

import numpy as np
import pytest

from common import run_rows
from common.aggregate import group_runs
from common.epochs import fold_mean_epoch, main, protocols_markdown
from graph_exps.data import build_graph_data, fold_indices
from tests.test_aggregate import write_run

# validation accuracy of epochs 1..3 in folds 0..2: per fold the best epochs are 3, 1, 2,
# but the fold-mean curve (60, 70, 65) peaks at epoch 2
CURVES = {0: (50.0, 60.0, 70.0), 1: (80.0, 75.0, 60.0), 2: (50.0, 75.0, 65.0)}


def write_folds(root):
    for fold, curve in CURVES.items():
        run = write_run(
            root,
            "adam",
            0,
            (max(curve), 1.0, 1.0, 0.1),
            fold=fold,
            name=f"fold{fold}",
            val=max(curve),
        )
        lines = ["epoch,step,val_loss,val_accuracy"]
        lines += [f"{e},{10 * e},0.5,{v}" for e, v in enumerate(curve, start=1)]
        (run / "metrics.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [run_rows.run_row(d) for d in run_rows.find_runs([root])]


def test_the_fold_mean_epoch_is_the_best_of_the_mean_curve(tmp_path):
    (group,) = group_runs(write_folds(tmp_path))
    choice = fold_mean_epoch(group, "val_accuracy", higher_is_better=True)
    assert choice.epoch == 2
    assert choice.stat.mean == pytest.approx(70.0) and choice.stat.n == 3
    assert choice.stat.std == pytest.approx(np.std([60.0, 75.0, 75.0], ddof=1))
    lowest = fold_mean_epoch(group, "val_accuracy", higher_is_better=False)
    assert lowest.epoch == 1  # (50 + 80 + 50) / 3 = 60, the lowest mean


def test_the_table_reports_both_protocols(tmp_path, capsys):
    groups = group_runs(write_folds(tmp_path))
    text = protocols_markdown(groups)
    per_fold = np.mean([70.0, 80.0, 75.0])  # each fold at its own best checkpoint
    assert f"| {per_fold:.2f} ± " in text and "| epoch 2: 70.00 ± " in text
    assert main([str(tmp_path), "--out", str(tmp_path / "t.md")]) == 0
    assert "epoch 2" in capsys.readouterr().out
    assert (tmp_path / "t.md").read_text(encoding="utf-8") == text
    assert main([str(tmp_path / "none")]) == 2


def test_a_damaged_metrics_file_is_one_message(tmp_path, capsys):
    write_folds(tmp_path)
    (tmp_path / "fold1" / "metrics.csv").write_text("epoch,val_accuracy\nx,1\n", encoding="utf-8")
    assert main([str(tmp_path)]) == 2
    assert "metrics.csv is malformed" in capsys.readouterr().err


def test_val_is_test_validates_on_the_test_fold_and_trains_on_the_rest(tmp_path):
    held = build_graph_data("MUTAG", tmp_path, fold=3, download=False)
    same = build_graph_data("MUTAG", tmp_path, fold=3, download=False, val_is_test=True)
    assert same.meta["val_is_test"] and not held.meta["val_is_test"]
    y = np.loadtxt(tmp_path / "MUTAG" / "raw" / "MUTAG_graph_labels.txt")
    rest, _, test = fold_indices(y, fold=3, val_fraction=0.0)
    assert same.meta["n_val"] == same.meta["n_test"] == len(test) == held.meta["n_test"]
    assert same.meta["n_train"] == len(rest) == held.meta["n_train"] + held.meta["n_val"]
    assert [g.y.item() for g in same.val] == [g.y.item() for g in same.test]
