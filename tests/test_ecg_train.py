"""ECG heartbeats through the one trainer and the measurements: the generated beats, the
Kaggle CSV layout and WFDB records written by the fixtures, both models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from common.train.cli import measure_main, train_main
from common.train.task import balanced_class_weights
from ecg_exps.data import CLASSES, DS1, DS2, build_ecg_data
from ecg_exps.task import CONFIGS, TASK
from tests.ecg_fixtures import write_mitbih, write_mitdb

SMALL_ATTENTION = ["model.name=attention", "model.d_model=8", "model.heads=2", "model.hidden=[16]"]


def run(tmp_path: Path, config: str, *extra: str, root: Path | None = None) -> Path:
    run_dir = tmp_path / "run"
    argv = ["--config", str(CONFIGS / config), f"data.root={root or tmp_path / 'data'}"]
    argv += ["train.progress=false", f"run_dir={run_dir}", *extra]
    assert train_main(TASK, argv) == 0
    return run_dir


def summary_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.parametrize("optimizer", ["sgd", "sam", "nso"])
def test_the_attention_model_trains_and_reports_per_class(tmp_path, optimizer) -> None:
    run_dir = run(tmp_path, "beats.yaml", "smoke=true", f"optimizer.name={optimizer}",
                  *SMALL_ATTENTION)  # fmt: skip
    s = summary_of(run_dir)
    assert [m["name"] for m in s["metrics"]] == ["accuracy", "macro_f1"]
    assert s["select"]["name"] == "macro_f1" and s["synthetic"] and s["steps"] == 4
    details = s["test_details"]
    assert details["class_names"] == list(CLASSES)
    assert set(details["sensitivity"]) == set(details["ppv"]) == set(CLASSES)
    matrix = np.array(details["confusion_matrix"])
    assert matrix.shape == (5, 5) and matrix.sum() == s["data"]["n_test"]
    assert matrix.sum(axis=1).tolist() == [s["data"]["class_counts"]["test"][c] for c in CLASSES]
    assert (run_dir / "confusion.png").stat().st_size > 0


def test_both_models_are_measured(tmp_path) -> None:
    run_dir = run(tmp_path, "beats.yaml", "smoke=true", *SMALL_ATTENTION)
    base = [f"run_dir={run_dir}", "train.progress=false"]
    assert measure_main(TASK, "hessian", [*base, "hessian.esd=true", "hessian.esd_iter=4"]) == 0
    assert measure_main(TASK, "noise_stability", base) == 0
    assert measure_main(TASK, "landscape", base) == 0
    hessian = json.loads((run_dir / "hessian.json").read_text())
    assert np.isfinite(hessian["trace"]["total"]) and (run_dir / "hessian_esd_esd.png").is_file()
    assert (run_dir / "landscape_contour.png").is_file()
    cnn = run(tmp_path / "cnn", "beats.yaml", "smoke=true", "model.name=cnn1d")
    assert measure_main(TASK, "hessian", [f"run_dir={cnn}", "train.progress=false"]) == 0


def test_balanced_class_weights_come_from_the_training_split(tmp_path) -> None:
    run_dir = run(tmp_path, "beats.yaml", "smoke=true", "train.class_weights=balanced")
    s = summary_of(run_dir)
    splits = build_ecg_data("beats", tmp_path / "data")
    want = balanced_class_weights(splits.labels("train"), 5)
    np.testing.assert_allclose(s["class_weights"], want, rtol=1e-6)
    assert s["class_weights"][0] < 1 < s["class_weights"][3]  # N common, F rare


def test_the_kaggle_csvs_train(tmp_path) -> None:
    root = tmp_path / "data"
    write_mitbih(root)
    run_dir = run(tmp_path, "mitbih_attention.yaml", "train.epochs=1", "train.batch_size=16",
                  "hessian.n_examples=16", *SMALL_ATTENTION, root=root)  # fmt: skip
    s = summary_of(run_dir)
    assert s["dataset"] == "mitbih" and not s["synthetic"]
    assert s["data"]["class_counts"]["test"] == {"N": 20, "S": 8, "V": 8, "F": 8, "Q": 8}


def test_wfdb_records_train_inter_patient(tmp_path) -> None:
    root = tmp_path / "data"
    write_mitdb(root)
    run_dir = run(tmp_path, "mitdb_interpatient.yaml", "train.epochs=1", "train.batch_size=16",
                  "data.download=false", "model.name=cnn1d", root=root)  # fmt: skip
    s = summary_of(run_dir)
    records = s["data"]["records"]
    assert records["test"] and set(records["test"]) <= set(DS2)
    assert records["train"] and set(records["train"] + records["val"]) <= set(DS1)
    assert s["class_weights"] is None  # unweighted: DS1's 8 Q beats would rule the loss


@pytest.mark.parametrize("config", ["mitbih_attention.yaml", "mitdb_interpatient.yaml"])
def test_the_paper_configs_have_a_smoke_switch(tmp_path, config) -> None:
    s = summary_of(run(tmp_path, config, "smoke=true"))
    assert s["steps"] == 4 and s["dataset"] == "beats"


def test_unsorted_milestones_are_one_message(tmp_path, capsys) -> None:
    argv = ["--config", str(CONFIGS / "beats.yaml"), f"data.root={tmp_path}", "smoke=true"]
    argv += [
        "schedule.name=multistep",
        "schedule.milestones=[0.8,0.3]",
        f"run_dir={tmp_path / 'r'}",
    ]
    assert train_main(TASK, argv) == 2
    assert "milestones must increase" in capsys.readouterr().err
