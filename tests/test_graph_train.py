"""Graphs through the shared trainer and measurement commands (no graph training loop)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from common.train.cli import cv_main, measure_main, train_main
from common.train.config import load_config
from common.train.trainer import Trainer, train
from graph_exps.task import TASK
from tests.graph_fixtures import write_tu_dataset


def fast(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "smoke=true", "train.progress=false", f"data.root={tmp_path / 'data'}",
        f"run_dir={tmp_path / 'run'}", *extra,
    ]  # fmt: skip


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.parametrize("optimizer", ["adam", "sam", "ssamf", "nso"])
def test_gcn_trains_on_sbm_with_every_kind_of_optimizer(tmp_path, optimizer) -> None:
    assert train_main(TASK, fast(tmp_path, f"optimizer.name={optimizer}")) == 0
    s = summary(tmp_path / "run")
    assert s["domain"] == "graph" and s["synthetic"] is True and s["steps"] == 4


def test_real_tudataset_loader_reads_raw_files_offline(tmp_path) -> None:
    write_tu_dataset(tmp_path / "data", "MUTAG", n_graphs=40)
    args = fast(
        tmp_path, "data.name=MUTAG", "data.download=false", "data.n_folds=4", "train.batch_size=8"
    )
    assert train_main(TASK, args) == 0
    s = summary(tmp_path / "run")
    assert s["dataset"] == "MUTAG" and not s["synthetic"]
    assert s["data"]["n_test"] == 10  # one of 4 folds of 40 graphs


def test_missing_tudataset_offline_names_the_raw_files(tmp_path, capsys) -> None:
    rc = train_main(TASK, fast(tmp_path, "data.name=PROTEINS", "data.download=false"))
    err = capsys.readouterr().err
    assert rc == 2 and "PROTEINS_A.txt" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "summary.json").exists()


def test_accumulation_splits_pyg_batches(tmp_path) -> None:
    """Micro-batches of graphs (re-collated) give the gradient of the whole batch."""
    common = ["optimizer.name=sam", "model.batch_norm=false", "train.max_steps=3"]
    train(TASK, load_config(TASK.config_cls, TASK.default_config, fast(tmp_path, *common)))
    other = tmp_path / "acc"
    args = [*fast(tmp_path, *common, "train.accum_steps=3"), f"run_dir={other}"]
    train(TASK, load_config(TASK.config_cls, TASK.default_config, args))
    a = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(other / "checkpoint.pt", weights_only=True)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_fold_is_part_of_the_default_run_dir(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(TASK.config_cls, TASK.default_config, ["data.fold=3", "optimizer.name=nso"])
    assert Trainer(TASK, cfg).run_dir == Path("runs/graph/sbm/gcn/nso/seed0/fold3")


def test_measurement_commands_on_a_graph_run(tmp_path) -> None:
    assert train_main(TASK, fast(tmp_path)) == 0
    run = [f"run_dir={tmp_path / 'run'}", "train.progress=false"]
    assert measure_main(TASK, "hessian", run) == 0
    sweep = "noise_stability.sigma=[0.04,0.05,0.06]"
    assert measure_main(TASK, "noise_stability", [*run, sweep]) == 0
    assert measure_main(TASK, "landscape", run) == 0
    h = json.loads((tmp_path / "run" / "hessian.json").read_text())
    assert h["n_examples"] == h["trace"]["record"]["n_examples"] > 0
    ns = json.loads((tmp_path / "run" / "noise_stability.json").read_text())
    assert [r["sigma"] for r in ns["results"]] == [0.04, 0.05, 0.06]
    assert (tmp_path / "run" / "landscape_contour.png").exists()


def test_cross_validation_reports_mean_and_std_over_folds(tmp_path) -> None:
    args = fast(tmp_path, "data.n_folds=3", "train.max_steps=2")
    assert cv_main(TASK, args) == 0
    cv = json.loads((tmp_path / "run" / "cv.json").read_text())
    assert len(cv["folds"]) == 3 and cv["synthetic"] is True
    mean = sum(cv["folds"]) / 3
    assert cv["mean"] == pytest.approx(mean)
    assert cv["std"] == pytest.approx((sum((x - mean) ** 2 for x in cv["folds"]) / 3) ** 0.5)
    for fold in range(3):
        assert summary(tmp_path / "run" / f"fold{fold}")["data"]["fold"] == fold
    table = (tmp_path / "run" / "cv.md").read_text()
    assert "(synthetic)" in table and "test acc. (%) (mean ± std)" in table
