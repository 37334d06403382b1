"""The domain plug: a domain defined only in this file (a regression task with its own
loss and a metric where lower is better) trains, resumes, selects best.pt, is measured and
tabulated without anything in common/ knowing about it."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from common import run_rows
from common.metrics import PEARSON, Metric, pearson
from common.optim import OPTIMIZERS
from common.train.cli import measure, measure_main, train_main
from common.train.config import Config, DataConfig, load_config
from common.train.task import Splits, Task, no_running
from common.train.trainer import Trainer, train
from common.train.typed import keyfield

MSE = Metric("mse", "MSE", higher_is_better=False)
CONFIG = Path(__file__).with_name("toy_regression.yaml")


class ToyDataConfig(DataConfig):
    name: str = "toyreg"
    noise: float = keyfield(0.3, "target noise", min=0)


class ToyConfig(Config):
    data: ToyDataConfig = keyfield(factory=ToyDataConfig)


def build_data(cfg: ToyConfig) -> Splits:
    rng = np.random.default_rng(cfg.data.split_seed)
    x = torch.tensor(rng.normal(size=(240, 4)), dtype=torch.float32)
    w = torch.tensor([1.0, -2.0, 0.5, 3.0])
    y = x @ w + cfg.data.noise * torch.tensor(rng.normal(size=240), dtype=torch.float32)
    parts = [TensorDataset(x[a:b], y[a:b]) for a, b in ((0, 160), (160, 200), (200, 240))]
    meta = {"synthetic": True, "split_seed": cfg.data.split_seed}
    return Splits(*parts, num_classes=1, meta=meta, regression=True)


def build_model(cfg: ToyConfig, splits: Splits) -> nn.Module:
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))


CRITERION_CALLS: list[int] = []


def half_mse(outputs: Tensor, targets: Tensor, label_smoothing: float) -> Tensor:
    """A loss no built-in knows: half the mean squared error."""
    CRITERION_CALLS.append(1)
    return 0.5 * nn.functional.mse_loss(outputs.squeeze(-1), targets)


def metrics(outputs: Tensor, targets: Tensor) -> dict[str, float]:
    mse = float(nn.functional.mse_loss(outputs.squeeze(-1), targets))
    return {"mse": mse, "pearson": pearson(outputs, targets)}


TASK = Task(
    domain="toy",
    config_cls=ToyConfig,
    default_config=CONFIG,
    build_data=build_data,
    build_model=build_model,
    criterion=half_mse,
    metrics=metrics,
    reported=(MSE, PEARSON),
    select=MSE,
    running=no_running,
)

FAST = ["train.progress=false", "train.batch_size=32", "optimizer.lr=0.05"]


def cfg_for(run_dir: Path, *overrides: str) -> ToyConfig:
    return load_config(ToyConfig, None, [*FAST, f"run_dir={run_dir}", *overrides])


def rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def weights(path: Path) -> dict[str, Tensor]:
    return torch.load(path, weights_only=True)["model"]


def test_regression_trains_selects_the_lowest_validation_mse(tmp_path) -> None:
    summary = train(TASK, cfg_for(tmp_path, "train.epochs=6"))
    history = rows(tmp_path)
    assert "train_accuracy" not in history[0]  # no argmax anywhere for a regression task
    val_mse = [float(r["val_mse"]) for r in history]
    best = int(np.argmin(val_mse))
    assert summary["best_val"]["epoch"] == best + 1
    assert summary["best_val"]["mse"] == pytest.approx(val_mse[best])
    assert summary["select"] == {"name": "mse", "label": "MSE", "higher_is_better": False}
    assert [m["name"] for m in summary["metrics"]] == ["mse", "pearson"]
    assert summary["test"]["pearson"] > 0.5 and math.isfinite(summary["test"]["mse"])
    # the validation loss is the task's own loss (half the MSE), not cross-entropy
    assert float(history[best]["val_loss"]) == pytest.approx(val_mse[best] / 2, rel=1e-5)


def test_the_task_loss_is_the_only_loss(tmp_path) -> None:
    CRITERION_CALLS.clear()
    cfg = cfg_for(tmp_path, "train.max_steps=3", "optimizer.name=sam", "train.accum_steps=2")
    train(TASK, cfg)
    # 3 SAM steps of 2 passes x 2 micro-batches, then 2 val batches of 32 and 2 test batches
    assert len(CRITERION_CALLS) == 3 * 2 * 2 + 2 + 2
    CRITERION_CALLS.clear()
    run = [f"run_dir={tmp_path}", "train.progress=false", "hessian.n_probes=2"]
    measure(TASK, "hessian", [*run, "hessian.batch_size=40"])
    assert CRITERION_CALLS  # the measurement went through the same criterion


def test_resume_is_bit_identical_for_a_new_domain(tmp_path, monkeypatch) -> None:
    common = ["train.epochs=3", "train.checkpoint_every=2", "optimizer.name=nso"]
    whole = tmp_path / "whole"
    train(TASK, cfg_for(whole, *common))
    real, calls = Trainer._step, []

    def dying(self, batch, share):
        calls.append(1)
        if len(calls) == 9:
            raise KeyboardInterrupt
        return real(self, batch, share)

    monkeypatch.setattr(Trainer, "_step", dying)
    broken = tmp_path / "broken"
    with pytest.raises(KeyboardInterrupt):
        train(TASK, cfg_for(broken, *common))
    monkeypatch.setattr(Trainer, "_step", real)
    summary = train(TASK, cfg_for(broken, *common))
    assert summary["resumed"] == 1
    for name in ("checkpoint.pt", "best.pt"):
        a, b = weights(whole / name), weights(broken / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in rows(whole)] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in rows(broken)
    ]


def test_measured_and_tabulated_with_the_metric_names(tmp_path, capsys) -> None:
    train(TASK, cfg_for(tmp_path, "train.epochs=2"))
    run = [f"run_dir={tmp_path}", "train.progress=false"]
    assert measure_main(TASK, "hessian", [*run, "hessian.n_probes=3"]) == 0
    assert measure_main(TASK, "noise_stability", [*run, "noise_stability.n_samples=2"]) == 0
    hessian = json.loads((tmp_path / "hessian.json").read_text())
    assert hessian["n_examples"] == 40 and hessian["checkpoint_file"] == "best.pt"
    table = run_rows.markdown([run_rows.run_row(tmp_path)])
    header = table.splitlines()[0]
    assert "test MSE" in header and "test Pearson" in header and "acc." not in header
    assert "toyreg (synthetic)" in table


def test_domain_keys_of_one_domain_are_unknown_to_another(tmp_path, capsys) -> None:
    assert train_main(TASK, [*FAST, f"run_dir={tmp_path}", "data.cutout=16"]) == 2
    assert "unknown config key 'data.cutout'" in capsys.readouterr().err


def test_help_lists_every_key_with_its_default(capsys) -> None:
    with pytest.raises(SystemExit):
        train_main(TASK, ["--help"])
    out = capsys.readouterr().out
    assert "data.noise=0.3 (float): target noise" in out
    assert "optimizer.sigma=None" in out and "train.drop_last=True" in out


def test_a_run_of_one_domain_is_refused_by_another(tmp_path, capsys) -> None:
    from image_exps.task import TASK as IMAGE

    train(TASK, cfg_for(tmp_path, "train.max_steps=1", "train.epochs=1"))
    assert measure_main(IMAGE, "hessian", [f"run_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "holds a toy run" in err and "python -m toy_exps.hessian" in err


def test_regression_refuses_label_smoothing(tmp_path, capsys) -> None:
    from common.train.task import regression_criterion

    with pytest.raises(ValueError, match="label_smoothing"):
        regression_criterion(torch.zeros(3, 1), torch.zeros(3), 0.1)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_trains_the_new_domain(tmp_path, name) -> None:
    # SSAM-F's Fisher mask comes from per-example losses of the same criterion
    summary = train(TASK, cfg_for(tmp_path, f"optimizer.name={name}", "train.max_steps=4"))
    assert summary["steps"] == 4 and math.isfinite(summary["test"]["mse"])


def test_a_variant_serves_the_data_set_it_is_for(tmp_path) -> None:
    # a domain whose metrics depend on the data set (GLUE: CoLA reports MCC, STS-B Pearson)
    from dataclasses import replace

    loss_only = replace(TASK, reported=(MSE,), select=MSE)
    varied = replace(
        TASK,
        canonical_name=str.lower,
        variant=lambda cfg: loss_only if cfg.data.noise > 1 else TASK,
    )
    task, cfg = varied.bind(cfg_for(tmp_path, "data.noise=2", "data.name=TOYREG"))
    assert task is loss_only and cfg.data.name == "toyreg"  # and the name as the domain spells it
    assert task.bind(cfg) == (task, cfg)  # binding again changes nothing
    summary = train(varied, cfg_for(tmp_path, "data.noise=2", "train.max_steps=2"))
    assert [m["name"] for m in summary["metrics"]] == ["mse"]


def test_extra_test_splits_are_reported_beside_the_test_metrics(tmp_path) -> None:
    def with_extra(cfg):
        splits = build_data(cfg)
        splits.extra_test = {"shifted": splits.val}
        return splits

    from dataclasses import replace

    summary = train(replace(TASK, build_data=with_extra), cfg_for(tmp_path, "train.max_steps=2"))
    assert {"shifted_mse", "shifted_pearson", "shifted_loss"} <= set(summary["test"])
    assert summary["test"]["shifted_mse"] == pytest.approx(summary["best_val"]["mse"])


@pytest.mark.parametrize("name", ["adamw", "sam"])
def test_parameters_can_be_kept_out_of_weight_decay(tmp_path, name) -> None:
    from dataclasses import replace

    task = replace(TASK, no_weight_decay=lambda n, p: n.endswith("bias"))
    cfg = cfg_for(tmp_path, f"optimizer.name={name}", "optimizer.weight_decay=0.01")
    trainer = Trainer(task, cfg)
    trainer._build()
    decay, free = trainer.optimizer.param_groups
    assert decay["weight_decay"] == 0.01 and free["weight_decay"] == 0.0
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    assert all(names[id(p)].endswith("bias") for p in free["params"])
    assert not any(names[id(p)].endswith("bias") for p in decay["params"])


def test_linear_schedule_decays_to_zero_after_the_warm_up() -> None:
    from common.train.config import ScheduleConfig
    from common.train.schedule import lr_factor

    f = lr_factor(ScheduleConfig(name="linear", warmup_steps=2), 10, 10, 0.1)
    assert [f(s) for s in range(11)] == pytest.approx(
        [0.5, 1.0, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8, 0.0]
    )


def test_the_trace_stops_on_its_standard_error_from_the_command_line(tmp_path, capsys) -> None:
    train(TASK, cfg_for(tmp_path, "train.epochs=2"))
    run = [f"run_dir={tmp_path}", "train.progress=false", "hessian.batch_size=10"]
    target = ["hessian.n_probes=400", "hessian.target_stderr=1e6", "hessian.sampling=batch"]
    assert measure_main(TASK, "hessian", [*run, *target, "hessian.eig_tol=0.01"]) == 0
    trace = json.loads((tmp_path / "hessian.json").read_text())["trace"]
    # a loose target: it stops after the first whole rounds that hold 10 probes
    assert trace["n_probes"] < 400 and trace["stderr"] <= 1e6
    assert trace["record"]["options"]["sampling"] == "batch"
    both = [*run, "hessian.method=hutch++", "hessian.sampling=batch"]
    assert measure_main(TASK, "hessian", both) == 2
    assert "hessian.sampling=batch is a way of hessian.method=hutchinson" in capsys.readouterr().err
    sketch = [*run, "hessian.method=hutch++", "hessian.sketch_size=2", "hessian.n_probes=30"]
    assert measure_main(TASK, "hessian", [*sketch, "hessian.target_stderr=1e6"]) == 0
    trace = json.loads((tmp_path / "hessian.json").read_text())["trace"]
    assert trace["record"]["options"]["sketch_size"] == 2 and trace["n_probes"] == 4 + 10
    assert measure_main(TASK, "hessian", [*run, "hessian.sketch_size=2"]) == 2
    assert "hessian.sketch_size=2 is an option of hessian.method=hutch++" in capsys.readouterr().err


def test_stratified_trace_and_eigen_start_from_the_command_line(tmp_path, capsys) -> None:
    train(TASK, cfg_for(tmp_path, "train.epochs=2"))
    run = [f"run_dir={tmp_path}", "train.progress=false", "hessian.batch_size=10"]
    chosen = [*run, "hessian.method=stratified", "hessian.n_probes=30", "hessian.eig_start=random"]
    assert measure_main(TASK, "hessian", chosen) == 0
    out = json.loads((tmp_path / "hessian.json").read_text())
    assert out["trace"]["method"] == "stratified" and out["trace"]["n_probes"] == 30
    assert out["eigenvalues"]["record"]["options"]["start"] == "random"
    assert (
        measure_main(TASK, "hessian", [*run, "hessian.method=stratified", "hessian.n_probes=1"])
        == 2
    )
    assert "hessian.method=stratified needs 2 probes per layer first" in capsys.readouterr().err
