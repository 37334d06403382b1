"""The one training loop: every domain, every optimizer, one or many processes.

Every optimizer, torch.optim's included, is driven through ``optimizer.step(closure)``.
The closure runs the batch (in ``train.accum_steps`` micro-batches) forward and backward
on the current weights; a sharpness-aware optimizer calls it once per gradient pass.

Distributed runs follow the SAM paper's m-sharpness: every pass of a sharpness-aware step
runs under DDP's ``no_sync``, so each process perturbs with its own local gradient, and
the optimizer's ``grad_hook`` all-reduces the gradient its base step uses (one all-reduce
per step, of whatever the update combines: g(W + e) for SAM, NSO's average over
perturbations, WSAM's g and g̃ − g). DDP's own all-reduce in the last pass would be wrong
for NSO and WSAM, whose update mixes gradients of several passes. Plain optimizers
synchronise in their single pass as usual.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import Dataset
from tqdm import tqdm

from common.batches import batch_size, slice_batch, to_device
from common.errors import RunDirError, UserError
from common.io import write_json, write_text
from common.optim import OPTIMIZERS, create_optimizer
from common.optim.base import SharpnessAwareOptimizer
from common.rng import derived_seed
from common.train import distributed as D
from common.train.batching import SeededDataset, epoch_batches, make_loader
from common.train.checkpoint import (
    load_checkpoint,
    load_weights,
    rng_state,
    save_checkpoint,
    seed_everything,
    serialize,
    set_rng_state,
    write_checkpoint,
)
from common.train.config import optimizer_kwargs, read_yaml, save_config, to_dict
from common.train.precision import LossScaler, autocast_for
from common.train.records import (
    class_weight,
    make_logger,
    peak_memory_mb,
    row_line,
    split_classes,
    versions,
)
from common.train.rundir import (
    BEST,
    CHECKPOINT,
    CONFIG,
    METRICS,
    SUMMARY,
    check_domain,
    locked,
    metric_record,
    read_summary,
    refuse_other_config,
    run_dir_for,
    write_record,
)
from common.train.schedule import lr_factor
from common.train.task import Splits, Task
from common.weights import load_initial_weights


class TrainingError(UserError):
    """The run cannot go on (a non-finite loss); the last good checkpoint is kept."""


class _Overflow(Exception):
    """fp16 gradients overflowed: the step is skipped and the loss scale lowered."""


# -- the run -------------------------------------------------------------------------------
@dataclass
class _State:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)
    wall_time: float = 0.0
    examples: int = 0
    resumed: int = 0
    running: dict[str, float] = field(default_factory=dict)  # this epoch's sums so far


class Trainer:
    """Trains ``task`` with ``cfg`` into its run directory; :meth:`run` does everything."""

    def __init__(self, task: Task, cfg: Any) -> None:
        self.task, self.cfg = task.bind(cfg)
        cfg = self.cfg
        self.dist = D.setup(cfg.train.device)
        self.run_dir = run_dir_for(task, cfg)
        self.say = print if self.dist.main else (lambda *a, **k: None)
        self.state = _State()
        # the last checkpoint, serialized, until a finite loss at its weights proves it good
        self._pending: bytes | None = None

    # -- set-up ------------------------------------------------------------------------
    def _check_run_dir(self) -> dict[str, Any] | None:
        """The checkpoint to resume from, if any; refuses a run_dir of another config."""
        check_domain(self.run_dir, self.task.domain, "train")
        saved: dict[str, Any] | None = None
        ckpt = None
        if (self.run_dir / CHECKPOINT).exists():
            ckpt = load_checkpoint(
                self.run_dir / CHECKPOINT,
                fix="delete it to train this run again from the start",
            )
            if not isinstance(ckpt, dict) or "config" not in ckpt or "model" not in ckpt:
                raise RunDirError(
                    f"{self.run_dir / CHECKPOINT} is not a training checkpoint of this "
                    "project: delete it to train the run from the start"
                )
            saved = ckpt["config"]
        elif (self.run_dir / CONFIG).exists():  # started, killed before its first checkpoint
            saved = read_yaml(
                self.run_dir / CONFIG, verify="delete it: no step of the run was kept yet"
            )
        if saved is not None:
            refuse_other_config(self.run_dir, saved, self.cfg)
        if ckpt is not None and ckpt.get("best") and self.dist.main:  # found now, not at the end
            if not (self.run_dir / BEST).exists():
                raise RunDirError(
                    f"{self.run_dir / BEST} is missing; the best weights cannot be recomputed: "
                    f"delete {self.run_dir} and train the run again"
                )
            load_checkpoint(
                self.run_dir / BEST,
                fix=f"the best weights cannot be recomputed: delete {self.run_dir} and train "
                "the run again",
            )
        return ckpt

    def _write_records(self) -> None:
        """run.json, config.yaml and metrics.csv from the (verified) state: a damaged or
        deleted one is written again by the next command on the run."""
        if not self.dist.main:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_record(self.run_dir, self.task.domain)
        save_config(self.cfg, self.run_dir / CONFIG)
        if self.state.history:
            self._write_metrics()

    def _build(self) -> None:
        cfg, task, dev = self.cfg, self.task, self.dist.device
        seed_everything(cfg.seed)
        if self.dist.main:  # rank 0 first: it may download, the others then read
            self.splits: Splits = task.build_data(cfg)
        D.barrier(self.dist.world)
        if not self.dist.main:
            self.splits = task.build_data(cfg)
        self.class_weight = class_weight(
            cfg.train.class_weights, self.splits, dev, warn=self.dist.main
        )
        self.classes = split_classes(self.splits, warn=self.dist.main)
        seed_everything(cfg.seed)  # the model's initialisation does not depend on the data
        model = task.build_model(cfg, self.splits).to(dev)
        if cfg.train.sync_bn and self.dist.distributed:
            if dev.type != "cuda":
                raise UserError("train.sync_bn=true needs CUDA (SyncBatchNorm has no CPU kernel)")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        self.net: nn.Module = (
            DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
            if self.dist.distributed
            else model
        )
        self.local_batch = D.local_batch_size(cfg.train.batch_size, self.dist.world)
        self.train_set = SeededDataset(self.splits.train, cfg.seed)
        self.steps_per_epoch = len(self._epoch_plan(0)[0])
        if self.steps_per_epoch == 0:
            raise UserError(
                f"the training set has {len(self.train_set)} examples, fewer than one global "
                f"batch (train.batch_size={cfg.train.batch_size}): lower train.batch_size "
                "or set train.drop_last=false"
            )
        planned = cfg.train.epochs * self.steps_per_epoch
        self.total_steps = min(planned, cfg.train.max_steps or planned)
        self.optimizer = self._optimizer()
        self.sa = isinstance(self.optimizer, SharpnessAwareOptimizer)
        if self.sa:
            self.optimizer.grad_hook = D.grad_hook(self.dist.world)
        self.scheduler = LambdaLR(
            self.optimizer,
            lr_factor(cfg.schedule, self.steps_per_epoch, self.total_steps, cfg.optimizer.lr),
        )
        if cfg.train.precision == "fp16" and dev.type == "cpu":
            self.say("warning: fp16 on CPU is slow and meant for testing; bf16 is the CPU choice")
        self.scaler = LossScaler() if cfg.train.precision == "fp16" else None

    def _optimizer(self) -> Optimizer:
        o = self.cfg.optimizer
        kw = optimizer_kwargs(o)
        info = OPTIMIZERS[o.name]
        if "epochs" in info.options and kw.get("epochs") is None:
            kw["epochs"] = self.cfg.train.epochs  # SSAM-D's drop-rate schedule spans the run
        if "seed" in info.options and kw.get("seed") is None:
            kw["seed"] = derived_seed(self.cfg.seed, f"optimizer.{o.name}")
        if info.sharpness_aware and self.cfg.train.max_grad_norm is not None:
            kw["max_grad_norm"] = self.cfg.train.max_grad_norm  # clips the base step's gradient
        params: Any = self.model
        if self.task.no_weight_decay is not None:  # e.g. biases and LayerNorm weights
            keep: list[Tensor] = []
            skip: list[Tensor] = []
            for n, p in self.model.named_parameters():
                if p.requires_grad:
                    (skip if self.task.no_weight_decay(n, p) else keep).append(p)
            groups = [{"params": keep}, {"params": skip, "weight_decay": 0.0}]
            params = [g for g in groups if g["params"]]
        try:
            optimizer = create_optimizer(o.name, params, **kw)
        except ValueError as e:
            raise UserError(f"optimizer: {e}") from None
        if isinstance(optimizer, SharpnessAwareOptimizer):
            optimizer.model = self.model  # BatchNorm statistics: first pass only, as with model
        return optimizer

    def _epoch_plan(self, epoch: int) -> tuple[list[list[int]], list[int]]:
        return epoch_batches(
            len(self.train_set),
            self.local_batch * self.dist.world,
            world=self.dist.world,
            rank=self.dist.rank,
            seed=self.cfg.seed,
            epoch=epoch,
            drop_last=self.cfg.train.drop_last,
        )

    # -- state ---------------------------------------------------------------------------
    def _checkpoint_state(self) -> dict[str, Any]:
        # per process: its dropout stream and its share of this epoch's running sums
        local = D.gather((rng_state(), self.state.running), self.dist.world)
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "config": to_dict(self.cfg),
            "domain": self.task.domain,
            "world": self.dist.world,
            **vars(self.state),
            "rng": [r for r, _ in local],
            "running": [run for _, run in local],
        }

    def _save(self, *, verified: bool = False) -> None:
        """Checkpoints the current state. It reaches ``checkpoint.pt`` once it is known to be
        good: ``verified`` (a finite validation loss at these weights) or, later, when the
        next step's loss at these weights is finite (:meth:`_flush`). A run that diverges
        therefore never leaves the diverged weights as its last checkpoint."""
        state = self._checkpoint_state()  # every rank joins the gather
        if self.dist.main:
            self._pending = serialize(state)
            if verified:
                self._flush()

    def _flush(self) -> None:
        if self._pending is not None:
            write_checkpoint(self.run_dir / CHECKPOINT, self._pending)
            self._pending = None

    def _initial_weights(self) -> None:
        """``model.weights``: the file's weights into the fresh model (a resumed run takes
        its checkpoint's instead)."""
        m = self.cfg.model
        if m.weights is None:
            return
        loaded = load_initial_weights(self.model, m.weights, replace_head=m.replace_head)
        fresh = f", fresh {' and '.join(loaded['fresh_head'])}" if loaded["fresh_head"] else ""
        self.say(f"initial weights from {loaded['path']} (sha256 {loaded['sha256'][:12]}{fresh})")

    def _resume(self, ckpt: dict[str, Any]) -> None:
        load_weights(self.model, ckpt, self.run_dir / CHECKPOINT)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler and ckpt["scaler"]:
            self.scaler.load_state_dict(ckpt["scaler"])
        for key in vars(self.state):
            setattr(self.state, key, ckpt[key])
        mine = self.dist.rank if self.dist.rank < len(ckpt["rng"]) else 0
        set_rng_state(ckpt["rng"][mine])
        self.state.running = ckpt["running"][mine]
        self.state.resumed += 1
        if ckpt["world"] != self.dist.world:
            self.say(
                f"note: the checkpoint was written by {ckpt['world']} processes, this run has "
                f"{self.dist.world}; the result will not be bit-identical to an unbroken run"
            )
        epoch = min(self.state.epoch + 1, self.cfg.train.epochs)  # past the end: finishing
        self.say(
            f"resuming {self.run_dir} from step {self.state.step} "
            f"(epoch {epoch}, batch {self.state.batch_in_epoch})"
        )

    # -- one step ------------------------------------------------------------------------
    def _micro_batches(self, batch: Any, share: float) -> list[tuple[Any, float]]:
        """The step's micro-batches, each with its weight in the global batch's mean loss."""
        n, k = batch_size(batch), self.cfg.train.accum_steps
        bounds = [round(i * n / k) for i in range(k + 1)]
        return [
            (slice_batch(batch, a, b), share * (b - a) / n)
            for a, b in itertools.pairwise(bounds)
            if b > a
        ]

    def _step(self, batch: Any, share: float) -> dict[str, float]:
        """One optimizer step; returns the first pass's loss and the task's running sums.

        ``share``: this process's part of the global batch times the number of processes
        (1 except in a last partial batch split unevenly), so that the averaged gradient
        is the global batch's mean. The loss is read once per step (one host sync), which
        also checks that no pass of the step had a non-finite loss.
        """
        cfg, task, dev = self.cfg, self.task, self.dist.device
        micro = self._micro_batches(batch, share)
        first: dict[str, Tensor] = {}
        every_pass: list[Tensor] = []

        def closure() -> Tensor:
            total = torch.zeros((), device=dev)
            sums: dict[str, Tensor] = {}
            for i, (mb, weight) in enumerate(micro):
                sync = not self.sa and i == len(micro) - 1
                quiet = self.dist.distributed and not sync
                with self.net.no_sync() if quiet else contextlib.nullcontext():
                    with autocast_for(cfg.train.precision, dev):
                        out = task.loss(
                            self.net,
                            mb,
                            label_smoothing=cfg.train.label_smoothing,
                            class_weight=self.class_weight,
                        )
                    scale = self.scaler.scale if self.scaler else 1.0
                    (out.loss * (weight * scale)).backward()
                total += out.loss.detach() * weight
                if not first:
                    for k, v in task.running(out.outputs.detach().float(), out.targets).items():
                        sums[k] = sums.get(k, 0) + v
            every_pass.append(total)
            grads = [p.grad for p in self.model.parameters() if p.grad is not None]
            if self.scaler:
                torch._foreach_mul_(grads, 1.0 / self.scaler.scale)
                finite = [torch.isfinite(g).all() for g in grads]
                # one host sync, not one per tensor; a non-finite loss is not the scale's
                # overflow but a divergence, which the scaler's skipped steps would hide
                if finite and not torch.stack(finite).all() and self._loss_finite(total):
                    raise _Overflow
            if not self.sa and cfg.train.max_grad_norm is not None:
                D.clip_(grads, cfg.train.max_grad_norm)  # sharpness-aware: the optimizer clips
            if not first:
                first.update(sums, loss=total)
            return total

        self.optimizer.zero_grad(set_to_none=True)
        try:
            self.optimizer.step(closure)
            if self.scaler:
                self.scaler.update(overflow=False)
        except _Overflow:
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.update(overflow=True)  # type: ignore[union-attr]
        self.scheduler.step()
        if not first:  # every pass overflowed in fp16
            return {"loss": math.nan}
        names = list(first)
        values = torch.stack([first[k].float() for k in names] + [sum(every_pass)]).tolist()
        if not math.isfinite(values[-1]):
            self._diverged(values[0])
        return dict(zip(names, values[:-1], strict=True))

    def _loss_finite(self, total: Tensor) -> bool:
        """Whether the loss is finite on every process (the gradients, already averaged,
        overflowed alike everywhere: each process then takes the same branch)."""
        ok = torch.isfinite(total).float().reshape(1)
        if self.dist.distributed:
            D.all_reduce_mean_([ok], self.dist.world)
        return bool(ok.item() == 1.0)

    def _diverged(self, loss: float) -> None:
        where = "the loss" if not math.isfinite(loss) else "a later gradient pass's loss"
        self._pending = None  # the weights of this step's start gave the non-finite loss
        path = self.run_dir / CHECKPOINT
        if self.dist.main and path.exists():
            kept = load_checkpoint(path)
            what = (
                f"{path} holds step {kept['step']}, the last state whose loss was finite; "
                "rerunning these settings repeats the divergence, so"
            )
        else:
            what = "no checkpoint with a finite loss was written before it;"
        raise TrainingError(
            f"{where} is not finite (first pass: {loss}) at step {self.state.step + 1} (epoch "
            f"{self.state.epoch + 1}); stopped. {what} lower optimizer.lr, set "
            "train.max_grad_norm or use train.precision=fp32, in a new run_dir (or delete "
            f"{self.run_dir})"
        )

    # -- evaluation ----------------------------------------------------------------------
    def evaluate(self, dataset: Dataset) -> dict[str, float]:
        """Loss and the task's metrics on ``dataset`` (sharded over processes)."""
        predicted = self.predict(dataset)
        return {} if predicted is None else self.task.split_metrics(*predicted)

    def predict(self, dataset: Dataset) -> tuple[Tensor, Tensor, float] | None:
        """(outputs, targets, mean unweighted loss) of every example of ``dataset``, gathered
        from all processes; None for an empty one."""
        cfg, task, dev = self.cfg, self.task, self.dist.device
        indices = list(range(self.dist.rank, len(dataset), self.dist.world))  # type: ignore[arg-type]
        size = cfg.train.eval_batch_size or self.local_batch
        batches = [indices[i : i + size] for i in range(0, len(indices), size)]
        outputs, targets, loss_sum = [], [], 0.0
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            for batch in make_loader(dataset, batches, task, cfg.data.num_workers):
                batch = to_device(batch, dev)
                with autocast_for(cfg.train.precision, dev):
                    out = task.loss(self.model, batch)
                loss_sum = loss_sum + out.loss.float() * batch_size(batch)
                outputs.append(out.outputs.float())
                targets.append(out.targets)
        self.model.train(was_training)
        parts = D.gather((outputs, targets, float(loss_sum)), self.dist.world)
        all_outputs = [t for out, _, _ in parts for t in out]
        if not all_outputs:
            return None
        all_targets = torch.cat([t for _, tg, _ in parts for t in tg])
        loss = sum(s for _, _, s in parts) / len(all_targets)
        return torch.cat(all_outputs), all_targets, loss

    # -- files -----------------------------------------------------------------------------
    def _write_metrics(self) -> None:
        rows = self.state.history
        keys = list(dict.fromkeys(k for row in rows for k in row))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
        write_text(self.run_dir / METRICS, buf.getvalue())

    def _epoch_batches(self, epoch: int, skip: int) -> Iterator[tuple[Any, float]]:
        """The epoch's batches from batch ``skip`` on, each with its share (see _step)."""
        self.train_set.epoch = epoch
        batches, sizes = self._epoch_plan(epoch)
        loader = make_loader(self.train_set, batches[skip:], self.task, self.cfg.data.num_workers)
        for batch, mine, size in zip(loader, batches[skip:], sizes[skip:], strict=True):
            yield to_device(batch, self.dist.device), len(mine) * self.dist.world / size

    def _prepare_masks(self, epoch: int) -> None:
        """SSAM-F's Fisher mask and SSAM-D's schedule, at the start of an epoch."""
        prepare = getattr(self.optimizer, "prepare_epoch", None)
        if prepare is not None:
            prepare(
                epoch,
                model=self.model,
                # the objective the steps descend (the mask picks what matters for it)
                loss_fn=self.task.loss_fn(self.cfg.train.label_smoothing, self.class_weight),
                data=(batch for batch, _ in self._epoch_batches(epoch, 0)),
            )

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Trains (or resumes), evaluates, tests the best checkpoint; returns the summary.

        The run directory is locked for the duration (rank 0 holds the lock)."""
        hold = (
            locked(self.run_dir, f"python -m {self.task.domain}_exps.train")
            if self.dist.main
            else contextlib.nullcontext()
        )
        with hold:
            return self._run()

    def _run(self) -> dict[str, Any]:
        cfg, st = self.cfg, self.state
        ckpt = self._check_run_dir()
        summary = read_summary(self.run_dir) if ckpt is not None and ckpt.get("finished") else None
        if summary is not None:
            self.state.history = ckpt["history"]
            self._write_records()
            self.say(f"{self.run_dir} is already finished; its summary is in {SUMMARY}")
            return {**summary, "run_dir": str(self.run_dir)}  # where it is now
        self._build()
        if ckpt is not None:
            self._resume(ckpt)
        else:
            self._initial_weights()
            self.say(f"training into {self.run_dir}")
        self._write_records()
        logger = make_logger(cfg.train.log, self.run_dir, to_dict(cfg), self.dist.main)
        self.model.train()
        started = time.perf_counter()
        while st.epoch < cfg.train.epochs and st.step < self.total_steps:
            if st.batch_in_epoch == 0:
                self._prepare_masks(st.epoch)
                st.running = {"loss": 0.0, "n": 0}
            run = st.running
            bar = tqdm(
                self._epoch_batches(st.epoch, st.batch_in_epoch),
                total=self.steps_per_epoch - st.batch_in_epoch,
                desc=f"epoch {st.epoch + 1}/{cfg.train.epochs}",
                disable=not (cfg.train.progress and self.dist.main),
                leave=False,
            )
            tick, seen_here = time.perf_counter(), 0
            for batch, share in bar:
                sums = self._step(batch, share)
                self._flush()  # this step's loss, at the pending checkpoint's weights, was finite
                n = batch_size(batch)
                st.step += 1
                st.batch_in_epoch += 1
                st.examples += round(n * self.dist.world / share)
                run["loss"] += sums.pop("loss") * n
                for key, value in sums.items():
                    run[key] = run.get(key, 0.0) + value
                run["n"] += n
                seen_here += round(n * self.dist.world / share)
                rate = seen_here / max(time.perf_counter() - tick, 1e-9)
                bar.set_postfix(loss=f"{run['loss'] / run['n']:.4f}", ex_s=f"{rate:.0f}")
                if cfg.train.checkpoint_every and st.step % cfg.train.checkpoint_every == 0:
                    st.wall_time += time.perf_counter() - started
                    started = time.perf_counter()
                    self._save()
                if st.step >= self.total_steps:
                    break
            bar.close()
            epoch_done = st.batch_in_epoch >= self.steps_per_epoch
            totals = D.gather(run, self.dist.world)
            run = {k: sum(r.get(k, 0.0) for r in totals) for k in run}
            seen = max(run.pop("n"), 1)
            row: dict[str, Any] = {
                "epoch": st.epoch + 1,
                "step": st.step,
                "lr": self.optimizer.param_groups[0]["lr"],
                **{f"train_{k}": v / seen for k, v in run.items()},
            }
            last = st.step >= self.total_steps or st.epoch + 1 >= cfg.train.epochs
            val: dict[str, float] = {}
            if (st.epoch + 1) % cfg.train.eval_every == 0 or last:
                val = self.evaluate(self.splits.val)
                row.update({f"val_{k}": v for k, v in val.items()})
                self._track_best(val)
            row["seconds"] = time.perf_counter() - tick
            st.history.append(row)
            logger(row, st.step)
            self.say(row_line(row))
            if epoch_done:
                st.epoch, st.batch_in_epoch = st.epoch + 1, 0
            st.wall_time += time.perf_counter() - started
            started = time.perf_counter()
            self._save(verified=math.isfinite(val.get("loss", math.nan)))
            if self.dist.main:
                self._write_metrics()
        summary = self._finish()
        logger.close()  # type: ignore[attr-defined]
        return summary

    def _track_best(self, val: dict[str, float]) -> None:
        select = self.task.select
        value = val.get(select.name)
        if value is None or not select.better(value, self.state.best.get("value")):
            return
        self.state.best = {
            "value": value,
            "epoch": self.state.epoch + 1,
            "step": self.state.step,
            "val": dict(val),
        }
        if self.dist.main:
            save_checkpoint(
                self.run_dir / BEST,
                {"model": self.model.state_dict(), "config": to_dict(self.cfg), **self.state.best},
            )

    def _finish(self) -> dict[str, Any]:
        cfg, st, task = self.cfg, self.state, self.task
        state = self._checkpoint_state()  # a collective: every process takes part
        state["finished"] = True
        self._pending = None  # superseded by the final state
        if self.dist.main:  # the last weights and optimizer state, before best.pt is loaded
            save_checkpoint(self.run_dir / CHECKPOINT, state)
        del state
        if st.best:  # the test metrics come from the best checkpoint (else the last weights)
            if self.dist.main:
                best = load_checkpoint(self.run_dir / BEST, map_location=self.dist.device)
                load_weights(self.model, best, self.run_dir / BEST)
            D.broadcast_module(self.model, self.dist.world)  # no shared disk needed
        predicted = self.predict(self.splits.test)
        test = {} if predicted is None else task.split_metrics(*predicted)
        details = None
        if task.details is not None and predicted is not None and self.dist.main:
            details = dict(task.details(predicted[0], predicted[1]))
        for name, dataset in self.splits.extra_test.items():  # MNLI mismatched
            test.update({f"{name}_{k}": v for k, v in self.evaluate(dataset).items()})
        if not self.dist.main:
            return {}
        last = st.history[-1] if st.history else {}
        summary = {
            "domain": task.domain,
            "dataset": cfg.data.name,
            "synthetic": bool(self.splits.meta.get("synthetic", False)),
            "model": cfg.model.name,
            "optimizer": cfg.optimizer.name,
            "seed": cfg.seed,
            # the fold and the key that sets it: tables aggregate over folds as over seeds
            **(
                {"fold": task.folds.fold(cfg), "fold_key": task.folds.fold_key}
                if task.folds
                else {}
            ),
            "run_dir": str(self.run_dir),
            "metrics": [metric_record(m) for m in task.reported],
            "select": metric_record(task.select),
            "test": test,
            **({"test_details": details} if details is not None else {}),
            "best_val": {
                "epoch": st.best.get("epoch"),
                "step": st.best.get("step"),
                **st.best.get("val", {}),
            },
            "final_train": {
                k[len("train_") :]: v for k, v in last.items() if k.startswith("train_")
            },
            "epochs": st.epoch,
            "steps": st.step,
            "grad_evals_per_step": OPTIMIZERS[cfg.optimizer.name].evals_per_step(
                **optimizer_kwargs(cfg.optimizer)
            ),
            "wall_time_s": st.wall_time,
            "examples_per_s": st.examples / st.wall_time if st.wall_time else None,
            "peak_memory_mb": peak_memory_mb(self.dist.device),
            "world_size": self.dist.world,
            "device": str(self.dist.device),
            "precision": cfg.train.precision,
            "class_weights": None if self.class_weight is None else self.class_weight.tolist(),
            # the classes each split holds: a macro average is over those (and predicted ones)
            "classes": self.classes,
            "resumed": st.resumed,
            "data": dict(self.splits.meta),
            "versions": versions(),
        }
        self._write_metrics()
        if details is not None and "confusion_matrix" in details:
            from common.confusion import plot_confusion  # matplotlib: only when there is one

            title = f"{cfg.data.name} test, {cfg.model.name}, {cfg.optimizer.name}, seed {cfg.seed}"
            plot_confusion(details, self.run_dir / "confusion", title=title)
        write_json(self.run_dir / SUMMARY, summary)  # last: its presence means "finished"
        return summary


def train(task: Task, cfg: Any) -> dict[str, Any]:
    """Trains ``task`` with the resolved config ``cfg``; returns the summary (rank 0)."""
    try:
        return Trainer(task, cfg).run()
    finally:
        D.teardown()
