"""Defects found by trying the trainer as a new user would; each test failed before its fix."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from common.train import cli, measuring
from common.train.batching import epoch_batches
from common.train.config import load_config
from common.train.trainer import Trainer, train
from image_exps.task import TASK, ImageConfig

FAST = ["train.progress=false", "data.n_examples=256", "train.batch_size=32"]


def cfg_for(run_dir: Path, *overrides: str) -> ImageConfig:
    return load_config(ImageConfig, TASK.default_config, [*FAST, f"run_dir={run_dir}", *overrides])


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


# 1 ------------------------------------------------------------------------------------------
def test_checkpoint_holds_the_last_weights_and_best_the_best(tmp_path, monkeypatch) -> None:
    real_track, real_finish, last = Trainer._track_best, Trainer._finish, {}

    def first_epoch_only(self, val):  # best.pt stays at epoch 1
        if not self.state.best:
            real_track(self, val)

    def finish(self):
        last.update({k: v.clone() for k, v in self.model.state_dict().items()})
        return real_finish(self)

    monkeypatch.setattr(Trainer, "_track_best", first_epoch_only)
    monkeypatch.setattr(Trainer, "_finish", finish)
    summary = train(TASK, cfg_for(tmp_path, "train.epochs=3"))
    assert summary["best_val"]["epoch"] == 1
    ckpt, best = weights(tmp_path / "checkpoint.pt"), weights(tmp_path / "best.pt")
    assert all(torch.equal(ckpt[k], last[k]) for k in last)
    assert any(not torch.equal(ckpt[k], best[k]) for k in best)
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert saved["finished"] and saved["step"] == summary["steps"]


# 2 ------------------------------------------------------------------------------------------
def test_measurements_run_on_the_requested_device(tmp_path, monkeypatch) -> None:
    train(TASK, cfg_for(tmp_path, "train.max_steps=2", "train.epochs=1"))
    asked = []

    def resolve(device: str, local_rank: int = 0) -> torch.device:
        asked.append(device)
        return torch.device("cpu")

    monkeypatch.setattr(measuring, "resolve_device", resolve)
    run = [f"run_dir={tmp_path}", "train.progress=false", "hessian.n_probes=2"]
    cli.measure(TASK, "hessian", [*run, "train.device=cpu", "hessian.n_examples=20"])
    cli.measure(TASK, "hessian", [*run, "hessian.n_examples=20"])
    assert asked == ["cpu", "auto"]  # the default: CUDA where present
    assert json.loads((tmp_path / "hessian.json").read_text())["device"] == "cpu"


# 3 ------------------------------------------------------------------------------------------
def test_measurement_subset_is_seeded_stratified_and_recorded(tmp_path) -> None:
    cfg = cfg_for(tmp_path)
    splits = TASK.build_data(cfg)
    m = cfg.hessian
    m.n_examples, m.split, m.seed = 50, "test", 3
    _, info = measuring.measurement_data(TASK, splits, m)
    chosen = info["indices"]
    assert len(chosen) == 50 and chosen != list(range(50)) and info["subset_seed"] == 3
    labels = splits.labels("test")[chosen]
    assert len(np.unique(labels)) == 10  # every class, as many of each as the split allows
    assert np.bincount(labels).min() >= 4
    m.seed = 4
    assert measuring.measurement_data(TASK, splits, m)[1]["indices"] != chosen
    m.seed = 3
    assert measuring.measurement_data(TASK, splits, m)[1]["indices"] == chosen


def test_measurement_on_the_train_split_uses_evaluation_transforms(tmp_path) -> None:
    from tests.image_fixtures import write_cifar10

    write_cifar10(tmp_path / "data", n_per_batch=8, n_test=10)
    cfg = cfg_for(
        tmp_path, "data.name=cifar10", f"data.root={tmp_path / 'data'}", "data.download=false"
    )
    splits = TASK.build_data(cfg)
    cfg.hessian.split, cfg.hessian.n_examples = "train", 12
    loader, _ = measuring.measurement_data(TASK, splits, cfg.hessian)
    assert loader.dataset.dataset is splits.train_eval
    first = [x for x, _ in loader]
    torch.manual_seed(123)  # the augmentation would draw from here
    assert all(torch.equal(a, b) for a, b in zip(first, [x for x, _ in loader], strict=True))


def test_subset_falls_back_to_uniform_without_labels() -> None:
    chosen = measuring.measurement_subset(None, 100, 10, seed=0)
    assert len(set(chosen)) == 10 and chosen == sorted(chosen) and chosen != list(range(10))
    assert measuring.measurement_subset(np.arange(5), 5, 10, seed=0) == list(range(5))


# 4 ------------------------------------------------------------------------------------------
def test_the_run_seed_does_not_change_the_split(tmp_path) -> None:
    labels = {
        (seed, split_seed): TASK.build_data(
            cfg_for(tmp_path, f"seed={seed}", f"data.split_seed={split_seed}")
        ).labels("test")
        for seed, split_seed in ((0, 0), (1, 0), (0, 1))
    }
    assert np.array_equal(labels[0, 0], labels[1, 0])
    assert not np.array_equal(labels[0, 0], labels[0, 1])


# 6 ------------------------------------------------------------------------------------------
def test_last_partial_batch_is_kept_without_duplicates() -> None:
    kept = [epoch_batches(10, 4, world=1, rank=0, seed=0, epoch=0, drop_last=False)]
    ((batches, sizes),) = kept
    assert sizes == [4, 4, 2] and sorted(i for b in batches for i in b) == list(range(10))
    dropped, _ = epoch_batches(10, 4, world=1, rank=0, seed=0, epoch=0, drop_last=True)
    assert dropped == batches[:2]
    # two processes: every example once, the same global batches as one process
    parts = [
        epoch_batches(10, 4, world=2, rank=r, seed=0, epoch=0, drop_last=False) for r in (0, 1)
    ]
    for k, size in enumerate(sizes):
        both = sorted(parts[0][0][k] + parts[1][0][k])
        assert both == sorted(batches[k]) and parts[0][1][k] == size
    # a remainder smaller than the number of processes cannot be split: it is dropped
    three = epoch_batches(9, 4, world=2, rank=0, seed=0, epoch=0, drop_last=False)
    assert three[1] == [4, 4]


def test_drop_last_false_trains_on_every_example(tmp_path) -> None:
    summary = train(TASK, cfg_for(tmp_path, "train.epochs=1", "train.batch_size=48",
                                  "train.drop_last=false"))  # fmt: skip
    assert summary["steps"] == 6  # 256 = 5 x 48 + 16
    kept = train(TASK, cfg_for(tmp_path / "drop", "train.epochs=1", "train.batch_size=48"))
    assert kept["steps"] == 5


def test_graph_configs_keep_the_last_batch() -> None:
    from graph_exps.task import TASK as GRAPH

    for path in GRAPH.default_config.parent.glob("*.yaml"):
        assert load_config(GRAPH.config_cls, path).train.drop_last is False, path.name


# 7 ------------------------------------------------------------------------------------------
def test_one_host_sync_per_step(tmp_path, monkeypatch) -> None:
    trainer = Trainer(TASK, cfg_for(tmp_path, "optimizer.name=nso", "train.accum_steps=4"))
    trainer._build()
    batch, share = next(trainer._epoch_batches(0, 0))
    reads = []
    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        real = getattr(torch.Tensor, name)

        def spy(self, *a, _real=real, _name=name, **k):
            reads.append(_name)
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, spy)
    out = trainer._step(batch, share)
    monkeypatch.undo()
    assert reads == ["tolist"], reads  # 2 passes x 4 micro-batches, one read of the loss
    assert np.isfinite(out["loss"]) and set(out) == {"loss", "accuracy"}


def test_a_nan_in_any_pass_still_stops_the_run(tmp_path, capsys) -> None:
    from common.train.cli import train_main

    args = [*FAST, f"run_dir={tmp_path}", "optimizer.lr=1e12", "optimizer.name=sam"]
    assert train_main(TASK, args) == 2
    err = capsys.readouterr().err
    assert "is not finite (first pass: " in err and "at step" in err and "stopped" in err


# SSAM-F's Fisher was taken on the plain loss while the steps descended the smoothed,
# class-weighted one ------------------------------------------------------------------------
def test_ssamf_chooses_its_mask_on_the_loss_the_steps_descend(tmp_path, monkeypatch) -> None:
    from common.optim.ssam import SSAMF

    seen = []
    original = SSAMF.prepare_epoch

    def spy(self, epoch, *, model, loss_fn, data):
        seen.append(loss_fn)
        return original(self, epoch, model=model, loss_fn=loss_fn, data=data)

    monkeypatch.setattr(SSAMF, "prepare_epoch", spy)
    options = ["optimizer.name=ssamf", "train.max_steps=1", "train.epochs=1"]
    cfg = cfg_for(tmp_path, *options, "train.label_smoothing=0.2", "train.class_weights=balanced")
    trainer = Trainer(TASK, cfg)
    trainer.run()
    model, weight = trainer.model, trainer.class_weight
    x, y = next(iter(torch.utils.data.DataLoader(trainer.splits.test, batch_size=8)))

    def trained_on(logits, labels):  # the steps' criterion: smoothed and class-weighted
        return torch.nn.functional.cross_entropy(logits, labels, weight, label_smoothing=0.2)

    with torch.no_grad():
        logits = model(x)
        one = seen[0](model, (x[:1], y[:1]))  # the Fisher's batches: one example each
        assert torch.allclose(one, weight[y[0]] * trained_on(logits[:1], y[:1]))
        whole = seen[0](model, (x, y))  # a batch: the training loss times a constant
        assert torch.allclose(whole, trained_on(logits, y) * weight[y].mean())
        assert not torch.allclose(one, torch.nn.functional.cross_entropy(logits[:1], y[:1]))


# an fp16 run whose loss was NaN at every step finished with exit 0: the loss scaler
# skipped every step as an overflow ------------------------------------------------------
def test_a_non_finite_loss_in_fp16_stops_the_run_as_in_fp32(tmp_path, capsys) -> None:
    argv = [*FAST, f"run_dir={tmp_path}", "optimizer.name=sgd", "train.precision=fp16",
            "optimizer.lr=1e6", "train.epochs=1"]  # fmt: skip
    assert cli.train_main(TASK, argv) == 2
    err = capsys.readouterr().err
    assert "is not finite" in err and "stopped" in err
    assert not (tmp_path / "summary.json").exists()


# a training split of one class reported "best val macro_f1 100"; a split without some class
# averaged macro-F1 over fewer classes without saying so -------------------------------------
def test_classes_missing_from_a_split_are_said_and_recorded(tmp_path, capsys):
    from torch.utils.data import Subset

    real = TASK.build_data

    def without_nines(cfg):  # the validation split loses every 9
        splits = real(cfg)
        keep = [i for i, y in enumerate(splits.labels("val")) if y != 9]
        splits.val = Subset(splits.val, keep)
        return splits

    task = dataclasses.replace(TASK, build_data=without_nines)
    summary = train(task, cfg_for(tmp_path, "train.max_steps=1", "train.epochs=1"))
    assert "the val split has no example of class(es) 9 of the 10" in capsys.readouterr().err
    assert summary["classes"]["num_classes"] == 10
    assert summary["classes"]["val"] == list(range(9))
    assert summary["classes"]["train"] == list(range(10))


def test_a_training_split_of_one_class_is_refused(tmp_path, capsys):
    from torch.utils.data import Subset

    real = TASK.build_data

    def only_zeros(cfg):
        splits = real(cfg)
        splits.train = Subset(
            splits.train, [i for i, y in enumerate(splits.labels("train")) if y == 0]
        )
        return splits

    task = dataclasses.replace(TASK, build_data=only_zeros)
    assert cli.train_main(task, [*FAST, f"run_dir={tmp_path}", "train.epochs=1"]) == 2
    assert "the training split holds 1 class(es) of the task's 10 (0)" in capsys.readouterr().err


# a full disk, a file-size limit or a read-only run folder ended in an OSError traceback ----
@pytest.mark.parametrize(
    ("code", "says"),
    [
        (errno.ENOSPC, "free some space"),
        (errno.EFBIG, "ulimit -f"),
        (errno.EROFS, "read-only"),
        (errno.EACCES, "not writable"),
    ],
)
def test_a_refused_write_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys, code, says):
    from common.train import rundir

    real_open = os.open

    def refusing(path, flags, *args, **kwargs):
        if str(path).endswith(".lock"):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(rundir.os, "open", refusing)
    assert cli.train_main(TASK, [*FAST, f"run_dir={tmp_path}", "train.epochs=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot write {tmp_path / '.lock'}: {os.strerror(code)}")
    assert says in err and "Traceback" not in err
