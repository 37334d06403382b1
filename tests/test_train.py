"""The one trainer on the embedded digits: resume, processes, optimizers, bad input."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from common.optim import OPTIMIZERS
from common.train.cli import measure_main, train_main
from common.train.config import ScheduleConfig, load_config
from common.train.schedule import lr_factor
from common.train.trainer import Trainer, train
from image_exps.task import TASK, ImageConfig

ROOT = Path(__file__).resolve().parents[1]
# 256 training digits in batches of 32: 8 steps an epoch, about a second a run
FAST = ["train.progress=false", "data.n_examples=256", "train.batch_size=32"]


def cfg_for(run_dir: Path, *overrides: str) -> ImageConfig:
    return load_config(ImageConfig, TASK.default_config, [*FAST, f"run_dir={run_dir}", *overrides])


def weights(run_dir: Path, name: str = "checkpoint.pt") -> dict[str, torch.Tensor]:
    return torch.load(run_dir / name, weights_only=True)["model"]


def metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def assert_bit_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def python(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


# -- schedule ------------------------------------------------------------------------------
def test_lr_factor_step_cosine_warmup() -> None:
    step = lr_factor(ScheduleConfig(name="step", step_size=2, gamma=0.1), 5, 100, 0.1)
    assert [step(s) for s in (0, 9, 10, 19, 20)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    cos = lr_factor(ScheduleConfig(name="cosine", min_lr=0.01), 10, 100, 0.1)
    assert cos(0) == pytest.approx(1.0)
    assert cos(50) == pytest.approx(0.1 + 0.9 * 0.5)
    assert cos(100) == pytest.approx(0.1)  # min_lr / lr
    warm = lr_factor(ScheduleConfig(name="none", warmup_steps=4), 10, 100, 0.1)
    assert [warm(s) for s in range(5)] == pytest.approx([0.25, 0.5, 0.75, 1, 1])


# -- resume ----------------------------------------------------------------------------------
@pytest.mark.parametrize("optimizer", ["nso", "ssamd"])  # sgd and sam: the SIGKILL test
def test_resume_after_interruption_is_bit_identical(tmp_path, monkeypatch, optimizer) -> None:
    common = ["train.epochs=2", "train.checkpoint_every=3", f"optimizer.name={optimizer}"]
    whole = tmp_path / "whole"
    train(TASK, cfg_for(whole, *common))

    broken = tmp_path / "broken"
    real_step, calls = Trainer._step, []

    def dying_step(self, batch, share):
        calls.append(1)
        if len(calls) == 11:  # mid-epoch 2, after the checkpoint of step 9
            raise KeyboardInterrupt
        return real_step(self, batch, share)

    monkeypatch.setattr(Trainer, "_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        train(TASK, cfg_for(broken, *common))
    assert torch.load(broken / "checkpoint.pt", weights_only=True)["step"] == 9
    assert not (broken / "summary.json").exists()
    monkeypatch.setattr(Trainer, "_step", real_step)
    summary = train(TASK, cfg_for(broken, *common))

    assert summary["resumed"] == 1
    assert_bit_identical(weights(whole), weights(broken))
    assert_bit_identical(weights(whole, "best.pt"), weights(broken, "best.pt"))
    assert metrics_rows(whole) == metrics_rows(broken)
    a = json.loads((whole / "summary.json").read_text())
    assert a["test"] == summary["test"]


def test_resume_after_sigkill_is_bit_identical(tmp_path) -> None:
    args = [*FAST, "train.epochs=3", "train.checkpoint_every=2", "optimizer.name=sam"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert python("-m", "image_exps.train", *args, f"run_dir={whole}").returncode == 0

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "image_exps.train", *args, f"run_dir={killed}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists(), "killed too late to test anything"
    resumed = python("-m", "image_exps.train", *args, f"run_dir={killed}")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    assert_bit_identical(weights(whole), weights(killed))
    assert metrics_rows(whole) == metrics_rows(killed)


def test_finished_run_is_not_trained_again(tmp_path, capsys) -> None:
    first = train(TASK, cfg_for(tmp_path, "train.epochs=1"))
    again = train(TASK, cfg_for(tmp_path, "train.epochs=1"))
    assert again == json.loads(json.dumps(first))
    assert "already finished" in capsys.readouterr().out


def test_run_dir_with_another_config_is_refused(tmp_path, capsys) -> None:
    train(TASK, cfg_for(tmp_path, "train.epochs=1"))
    rc = train_main(TASK, [*FAST, f"run_dir={tmp_path}", "train.epochs=1", "optimizer.lr=0.01"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "different config" in err and "optimizer.lr: 0.1 -> 0.01" in err


def test_default_run_dir_layout(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(ImageConfig, TASK.default_config, [*FAST, "optimizer.name=sam", "seed=3"])
    assert Trainer(TASK, cfg).run_dir == Path("runs/image/digits/cnn/sam/seed3")


# -- every optimizer, precision, accumulation ---------------------------------------------
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_trains_through_step_closure(tmp_path, name, monkeypatch) -> None:
    calls = []
    real = torch.nn.functional.cross_entropy

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", counting)
    adam = ["optimizer.base=adam", "optimizer.lr=0.001", "optimizer.momentum=null"]
    extra = adam if name != "sgd" else []
    options = {"looksam": {"interval": 2}}.get(name, {})  # two steps: one whole period
    extra += [f"optimizer.{key}={value}" for key, value in options.items()]
    summary = train(TASK, cfg_for(tmp_path, f"optimizer.name={name}", "train.max_steps=2", *extra))
    assert summary["steps"] == 2
    evals = OPTIMIZERS[name].evals_per_step(**options)
    assert summary["grad_evals_per_step"] == evals
    if name != "ssamf":  # (its Fisher mask adds per-example losses)
        # two steps of `evals` passes, then one loss per batch of val and of test
        n_val, n_test = len(TASK.build_data(cfg_for(tmp_path)).val), 360
        assert len(calls) == 2 * evals + math.ceil(n_val / 32) + math.ceil(n_test / 32)
    assert all(torch.isfinite(t).all() for t in weights(tmp_path).values())


def test_logging_backend_missing_is_a_clear_error(tmp_path, capsys) -> None:
    try:
        import tensorboard  # noqa: F401

        pytest.skip("tensorboard is installed")
    except ImportError:
        pass
    rc = train_main(TASK, [*FAST, f"run_dir={tmp_path}", "train.log=tensorboard"])
    assert rc == 2 and "pip install tensorboard" in capsys.readouterr().err


def test_gradient_accumulation_matches_one_batch(tmp_path) -> None:
    train(TASK, cfg_for(tmp_path / "one", "train.max_steps=4"))
    train(TASK, cfg_for(tmp_path / "acc", "train.max_steps=4", "train.accum_steps=4"))
    a, b = weights(tmp_path / "one"), weights(tmp_path / "acc")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains(tmp_path, precision) -> None:
    summary = train(
        TASK,
        cfg_for(
            tmp_path, f"train.precision={precision}", "train.max_steps=3", "optimizer.name=sam"
        ),
    )
    assert summary["precision"] == precision and summary["steps"] == 3
    assert all(torch.isfinite(t).all() for t in weights(tmp_path).values())


def test_gradient_clipping_bounds_the_update(tmp_path) -> None:
    # plain SGD without momentum: the first update is -lr * clipped gradient
    over = ["train.max_steps=1", "optimizer.weight_decay=0", "optimizer.momentum=0"]
    train(TASK, cfg_for(tmp_path / "free", *over))
    train(TASK, cfg_for(tmp_path / "clip", *over, "train.max_grad_norm=0.01"))
    cfg = cfg_for(tmp_path / "x")
    torch.manual_seed(cfg.seed)
    start = TASK.build_model(cfg, TASK.build_data(cfg)).state_dict()
    moved = torch.cat([(weights(tmp_path / "clip")[k] - start[k]).flatten() for k in start]).norm()
    assert float(moved) == pytest.approx(cfg.optimizer.lr * 0.01, rel=1e-3)
    free = torch.cat([(weights(tmp_path / "free")[k] - start[k]).flatten() for k in start])
    assert float(free.norm()) > 2 * float(moved)


# -- processes ----------------------------------------------------------------------------------
def test_two_gloo_processes_equal_one_process(tmp_path) -> None:
    """SGD on the default digits config: the same global batches, the same weights."""
    args = ["train.progress=false", "train.max_steps=6", "train.epochs=1"]
    one = python("-m", "image_exps.train", *args, f"run_dir={tmp_path / 'one'}")
    assert one.returncode == 0, one.stderr
    two = python(
        "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "image_exps.train", *args, f"run_dir={tmp_path / 'two'}",
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    s1 = json.loads((tmp_path / "one" / "summary.json").read_text())
    s2 = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert s2["world_size"] == 2 and s1["test"]["accuracy"] == s2["test"]["accuracy"]


def test_two_processes_run_every_pass_locally_for_sam(tmp_path) -> None:
    args = [*FAST, "train.max_steps=3", "optimizer.name=nso", f"run_dir={tmp_path}"]
    two = python(
        "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "image_exps.train", *args,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    assert json.loads((tmp_path / "summary.json").read_text())["world_size"] == 2


# -- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimizer.sigm=0.1"], "did you mean optimizer.sigma"),
        (["train.epochs=ten"], "expects an integer"),
        (["optimizer.name=nso", "optimizer.sigma=-0.5"], "optimizer.sigma must be >= 0"),
        (["optimizer.name=sam", "optimizer.sigma=0.1"], "not an option of sam"),
        (["train.batch_size=100000"], "fewer than one global batch"),
        (["data.name=cifar10", "data.download=false"], "cifar-10"),
        (["data.name=cifar100", "data.download=false"], "cifar-100"),
        (["model.name=resnet7"], "resnet"),
    ],
)
def test_bad_input_exits_with_a_message(tmp_path, capsys, overrides, message) -> None:
    run_dir = tmp_path / "run"
    rc = train_main(
        TASK, [*FAST, f"run_dir={run_dir}", f"data.root={tmp_path / 'data'}", *overrides]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: ") and message in err
    assert not (run_dir / "summary.json").exists()


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys) -> None:
    args = [*FAST, f"run_dir={tmp_path}", "optimizer.name=sam", "train.checkpoint_every=1"]
    # lr 1e12 diverges in step 2 (no checkpoint was proven good); 30 in the first epoch's
    # later steps, after some checkpoints whose next step was still finite
    for lr, kept in (("1e12", False), ("30", True)):
        run_dir = tmp_path / lr
        rc = train_main(TASK, [*args, f"run_dir={run_dir}", f"optimizer.lr={lr}"])
        err = capsys.readouterr().err
        assert rc == 2 and "is not finite" in err and "at step" in err, err
        assert not (run_dir / "summary.json").exists()
        failed = int(err.split("at step ")[1].split()[0])
        assert (run_dir / "checkpoint.pt").exists() == kept, err
        if kept:
            ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
            assert f"holds step {ckpt['step']}, the last state whose loss was finite" in err
            assert ckpt["step"] < failed
            assert all(torch.isfinite(t).all() for t in ckpt["model"].values())
        else:
            assert "no checkpoint with a finite loss was written" in err


def test_cli_errors_have_no_traceback(tmp_path) -> None:
    out = python("-m", "image_exps.train", f"run_dir={tmp_path}", "optimizer.sigma=-1")
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and "optimizer.sigma" in out.stderr
    out = python("-m", "image_exps.hessian", "hessian.n_probes=2")
    assert out.returncode == 2 and "run_dir=PATH" in out.stderr and "Traceback" not in out.stderr


# -- measurements of a finished run ----------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    train(TASK, cfg_for(run_dir, "train.epochs=2"))
    return run_dir


def test_hessian_command_writes_what_it_measured(finished_run) -> None:
    args = [f"run_dir={finished_run}", "train.progress=false", "hessian.n_examples=50"]
    assert measure_main(TASK, "hessian", [*args, "hessian.n_probes=4", "hessian.seed=7"]) == 0
    out = json.loads((finished_run / "hessian.json").read_text())
    assert out["split"] == "test" and out["n_examples"] == 50 and out["checkpoint"] == "best"
    assert out["trace"]["n_probes"] == 4 and out["trace"]["record"]["seed"] == 7
    assert out["trace"]["record"]["n_examples"] == 50
    assert len(out["eigenvalues"]["eigenvalues"]) == 1


def test_noise_stability_command_sweeps_sigmas(finished_run) -> None:
    args = [f"run_dir={finished_run}", "train.progress=false", "noise_stability.n_samples=2"]
    assert measure_main(TASK, "noise_stability", [*args, "noise_stability.sigma=[0.01,0.05]"]) == 0
    out = json.loads((finished_run / "noise_stability.json").read_text())
    assert [r["sigma"] for r in out["results"]] == [0.01, 0.05]
    assert all(len(r["samples"]) == 2 for r in out["results"])


def test_landscape_command_writes_grid_and_plots(finished_run) -> None:
    args = [f"run_dir={finished_run}", "train.progress=false", "landscape.steps=3"]
    assert measure_main(TASK, "landscape", [*args, "landscape.n_examples=20"]) == 0
    assert (finished_run / "landscape.h5").exists()
    for kind in ("contour", "contourf", "surface"):
        assert (finished_run / f"landscape_{kind}.png").stat().st_size > 0
        assert (finished_run / f"landscape_{kind}.pdf").stat().st_size > 0


def test_measuring_refuses_to_change_the_trained_run(finished_run, capsys) -> None:
    rc = measure_main(TASK, "hessian", [f"run_dir={finished_run}", "optimizer.lr=1"])
    assert rc == 2 and "cannot change when measuring" in capsys.readouterr().err


# -- the real loaders through the trainer ---------------------------------------------------
def test_trains_on_cifar_batches_in_the_real_format(tmp_path) -> None:
    from tests.image_fixtures import write_cifar10

    write_cifar10(tmp_path / "data", n_per_batch=8, n_test=10)
    args = [
        "train.progress=false", "data.name=cifar10", f"data.root={tmp_path / 'data'}",
        "data.download=false", "data.cutout=8", "train.batch_size=8", "train.max_steps=3",
        "optimizer.name=sam", f"run_dir={tmp_path / 'run'}",
    ]  # fmt: skip
    assert train_main(TASK, args) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["data"]["n_test"] == 10 and summary["data"]["n_train"] == 36  # 40 - val
    assert summary["steps"] == 3


def test_trains_on_an_image_folder_tree(tmp_path) -> None:
    from tests.image_fixtures import write_image_folder

    write_image_folder(tmp_path / "data", "flowers", n_per_class=4)
    args = [
        "train.progress=false", "data.name=flowers", f"data.root={tmp_path / 'data'}",
        "data.image_size=32", "model.name=cnn", "train.batch_size=4", "train.max_steps=2",
        f"run_dir={tmp_path / 'run'}",
    ]  # fmt: skip
    assert train_main(TASK, args) == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["data"]["n_test"] == 12


def test_corrupt_data_file_exits_with_a_message(tmp_path, capsys) -> None:
    from tests.image_fixtures import corrupt, write_cifar10

    folder = write_cifar10(tmp_path / "data")
    corrupt(folder / "data_batch_3")
    args = ["data.name=cifar10", f"data.root={tmp_path / 'data'}", "data.download=false"]
    rc = train_main(TASK, [*FAST, f"run_dir={tmp_path / 'run'}", *args])
    err = capsys.readouterr().err
    assert rc == 2 and "data_batch_3" in err
    assert not (tmp_path / "run" / "summary.json").exists()
