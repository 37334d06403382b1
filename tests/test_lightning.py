"""Lightning: every optimizer through Trainer.fit, equal to the plain loop; resume; DDP; AMP."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

pl = pytest.importorskip("lightning.pytorch")

from common.optim import OPTIMIZERS, create_optimizer  # noqa: E402
from common.optim.closures import scaled_step  # noqa: E402
from common.optim.lightning import SharpnessAwareMixin  # noqa: E402
from tests.conftest import ALL, build, ce, data  # noqa: E402


def small_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))


class Module(SharpnessAwareMixin, pl.LightningModule):
    def __init__(self, name: str = "sam", batch=None, schedule: bool = False):
        super().__init__()
        self.net, self.name, self.batch, self.schedule = small_net(), name, batch, schedule
        self.passes = 0

    def forward(self, x):
        return self.net(x)

    def training_loss(self, batch):
        self.passes += 1
        return ce(self, batch)

    def configure_optimizers(self):
        optimizer = build(self.name, self, self.batch, **build_options(self.name))
        if not self.schedule:
            return optimizer
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


def loader(n: int = 24, batch_size: int = 8) -> DataLoader:
    return DataLoader(TensorDataset(*data(n=n)), batch_size=batch_size, shuffle=False)


def trainer(**kw) -> pl.Trainer:
    kw = {"accelerator": "cpu", "devices": 1, "logger": False, "enable_checkpointing": False,
          "enable_progress_bar": False, "enable_model_summary": False, **kw}  # fmt: skip
    return pl.Trainer(**kw)


@pytest.fixture(autouse=True)
def quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice on workers and loggers
        yield


def plain_loop(name: str, batches, epochs: int, schedule: bool = False) -> nn.Module:
    holder = Module(name, batches[0], schedule)  # the same model, in a plain loop
    optimizer = build(name, holder, batches[0], **build_options(name))
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    for epoch in range(epochs):
        if hasattr(optimizer, "prepare_epoch"):
            optimizer.prepare_epoch(epoch, model=holder, loss_fn=ce, data=batches)
        for batch in batches:

            def closure(batch=batch):
                loss = ce(holder, batch)
                loss.backward()
                return loss.detach()

            optimizer.zero_grad()
            optimizer.step(closure)
            if schedule:
                scheduler.step()
    return holder


@pytest.mark.parametrize("name", ALL)
def test_every_optimizer_fits_as_the_plain_loop_steps(name):
    batches = list(loader())
    module = Module(name, batches[0], schedule=True)
    trainer(max_epochs=2).fit(module, loader())
    assert module.trainer.global_step == 6  # one optimizer step per batch
    if name != "ssamf":  # its Fisher mask runs the loss per example too
        assert module.passes == 6 * OPTIMIZERS[name].evals_per_step(**build_options(name))
    expected = plain_loop(name, batches, epochs=2, schedule=True)
    for ours, theirs in zip(module.parameters(), expected.parameters(), strict=True):
        assert torch.equal(ours, theirs)


def build_options(name: str) -> dict:
    # LookSAM with k = 2: the 6 steps are whole periods, 1.5 passes per step on average
    return {"nso": {"seed": 0}, "ssamd": {"seed": 0}, "looksam": {"interval": 2}}.get(name, {})


@pytest.mark.parametrize("name", ["sam", "nso", "ssamf"])
def test_a_fit_resumed_from_a_checkpoint_continues_bit_for_bit(tmp_path, name):
    batches = list(loader())
    straight = Module(name, batches[0])
    trainer(max_epochs=3).fit(straight, loader())
    first = Module(name, batches[0])
    checkpointing = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer(max_epochs=2, enable_checkpointing=True, callbacks=[checkpointing]).fit(first, loader())
    resumed = Module(name, batches[0])
    trainer(max_epochs=3, default_root_dir=tmp_path / "resumed").fit(
        resumed, loader(), ckpt_path=tmp_path / "last.ckpt"
    )
    assert resumed.trainer.global_step == 9
    for ours, theirs in zip(resumed.parameters(), straight.parameters(), strict=True):
        assert torch.equal(ours, theirs)


def test_bf16_mixed_trains():
    module = Module("sam", data())
    trainer(max_epochs=1, precision="bf16-mixed").fit(module, loader())
    assert module.trainer.global_step == 3 and module.passes == 6
    assert all(torch.isfinite(p).all() for p in module.parameters())


def fp16(scale: float = 2.0**8) -> pl.plugins.precision.MixedPrecision:
    # on a CPU Lightning turns "16-mixed" into bf16; the plugin with a scaler is CUDA's,
    # built here for the CPU (fp16 autocast and GradScaler run there too)
    scaler = torch.amp.GradScaler("cpu", init_scale=scale)
    return pl.plugins.precision.MixedPrecision("16-mixed", "cpu", scaler)


def plain_fp16_loop(name: str, scale: float) -> Module:
    """The same steps in a plain loop: autocast, scaler.scale(loss).backward, scaled_step."""
    module = Module(name, data())
    optimizer = module.configure_optimizers()
    scaler = torch.amp.GradScaler("cpu", init_scale=scale)
    for batch in loader():

        def closure(batch=batch):
            with torch.autocast("cpu", dtype=torch.float16):
                loss = ce(module, batch)
            scaler.scale(loss).backward()
            return loss.detach()

        optimizer.zero_grad()
        scaled_step(optimizer, closure, scaler)
    return module


@pytest.mark.parametrize("name", ["sam", "nso", "fsam", "gsam", "sgd"])
def test_fp16_with_loss_scaling_equals_the_plain_scaled_loop(name):
    module = Module(name, data())
    trainer(max_epochs=1, plugins=[fp16()]).fit(module, loader())
    assert module.trainer.global_step == 3 and module.passes == (3 if name == "sgd" else 6)
    plain = plain_fp16_loop(name, 2.0**8)
    for ours, theirs in zip(module.parameters(), plain.parameters(), strict=True):
        assert torch.equal(ours, theirs)
    assert "optimizer_step" not in vars(module.trainer.precision_plugin)  # the fit's only


def test_an_fp16_overflow_skips_the_step_and_backs_off_the_scale():
    module = Module("sam", data())
    start = [p.detach().clone() for p in module.parameters()]
    fit = trainer(max_epochs=1, plugins=[fp16(scale=2.0**40)])  # the fp16 gradients overflow
    fit.fit(module, loader())
    assert module.passes == 3  # each step stopped after its first pass
    assert all(torch.equal(a, b) for a, b in zip(start, module.parameters(), strict=True))
    assert fit.precision_plugin.scaler.get_scale() == 2.0**37  # halved once per step


def test_an_fp16_fit_resumed_from_a_checkpoint_continues_bit_for_bit(tmp_path):
    straight = Module("sam", data())
    trainer(max_epochs=3, plugins=[fp16(scale=2.0**30)]).fit(straight, loader())
    first = Module("sam", data())
    checkpointing = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer(max_epochs=2, enable_checkpointing=True, callbacks=[checkpointing],
            plugins=[fp16(scale=2.0**30)]).fit(first, loader())  # fmt: skip
    resumed = Module("sam", data())
    again = trainer(max_epochs=3, default_root_dir=tmp_path / "resumed", plugins=[fp16()])
    again.fit(resumed, loader(), ckpt_path=tmp_path / "last.ckpt")  # the scale comes back too
    assert (
        again.precision_plugin.scaler.get_scale()
        == straight.trainer.precision_plugin.scaler.get_scale()
    )
    for ours, theirs in zip(resumed.parameters(), straight.parameters(), strict=True):
        assert torch.equal(ours, theirs)


class Spawned(Module):
    """Picklable for ddp_spawn; the 16 examples in order, split between the processes."""

    def teardown(self, stage: str) -> None:
        # gloo's threads outliving the interpreter aborted a worker at exit now and then
        # ("terminate called without an active exception"): close the group in order
        if torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()

    def train_dataloader(self) -> DataLoader:
        world, rank = self.trainer.world_size, self.global_rank
        dataset = TensorDataset(*data(n=16))
        sampler = torch.utils.data.DistributedSampler(dataset, world, rank, shuffle=False)
        return DataLoader(dataset, batch_size=8 // world, sampler=sampler)


def test_ddp_on_cpu_equals_one_process_over_the_whole_batch():
    # each of 2 processes takes half of every batch; the averaged gradient of every pass
    # is the whole batch's, so the weights equal one process's with the whole batches
    one = Spawned("sam")
    trainer(max_epochs=1, use_distributed_sampler=False).fit(one)
    two = Spawned("sam")
    trainer(max_epochs=1, devices=2, strategy="ddp_spawn", use_distributed_sampler=False).fit(two)
    for ours, theirs in zip(two.parameters(), one.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    untrained = Spawned("sam").parameters()
    assert not all(torch.equal(a, b) for a, b in zip(two.parameters(), untrained, strict=True))


def test_training_loss_is_required():
    class Bare(SharpnessAwareMixin, pl.LightningModule):
        def configure_optimizers(self):
            return create_optimizer("sam", self, lr=0.1)

    with pytest.raises(NotImplementedError, match="must define training_loss"):
        Bare().training_loss(None)
