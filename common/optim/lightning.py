"""Every ``common.optim`` optimizer inside Lightning's ``Trainer.fit``.

Lightning's automatic optimization calls ``optimizer.step()`` after one backward pass, so a
sharpness-aware optimizer, which needs gradients at perturbed weights of the same batch,
cannot run in it. :class:`SharpnessAwareMixin` switches the module to manual optimization
and steps with ``step(closure)``, the closure running :meth:`training_loss` and
``self.manual_backward`` (so Lightning's precision and DDP apply to every pass)::

    import lightning.pytorch as pl

    from common.optim import create_optimizer
    from common.optim.lightning import SharpnessAwareMixin


    class Classifier(SharpnessAwareMixin, pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 3))

        def training_loss(self, batch):
            return nn.functional.cross_entropy(self.net(batch[0]), batch[1])

        def configure_optimizers(self):
            return create_optimizer("sam", self, lr=0.1, momentum=0.9, rho=0.05)


    pl.Trainer(max_epochs=10).fit(Classifier(), train_loader)

Passing the module itself to the optimizer keeps BatchNorm statistics to the first pass of
a step. An LR scheduler from ``configure_optimizers`` steps once per optimizer step
(``"interval": "step"``) or per epoch, as in automatic optimization. SSAM-F's Fisher mask
and SSAM-D's schedule are prepared at the start of every epoch from the training loader.
Checkpoints hold the optimizer's whole state (noise generators, masks, the base optimizer's
moments), so a fit resumed from one at an epoch's end continues bit for bit.

Under DDP every pass's gradient is averaged over the processes by ``manual_backward``: the
perturbation is the global batch's (the whole batch's SAM), not each process's own as in
this project's trainer (the SAM paper's m-sharpness). Gradient clipping goes through the
optimizer's ``max_grad_norm`` (Lightning refuses ``gradient_clip_val`` with manual
optimization). Precision: ``32-true``, ``bf16-mixed`` and ``16-mixed``. Lightning's fp16
plugin calls the closure once and then steps without it, which a sharpness-aware optimizer
cannot do; so for the fit the mixin has that trainer's plugin step with
:func:`common.optim.closures.scaled_step` instead: every pass is unscaled as it ends, an
overflow in any pass skips the whole step (weights put back, nothing logged for it) and
the scale is updated once per step, the scaler's state in the checkpoint as before.
``on_before_optimizer_step`` is not called under ``16-mixed`` (there is no single moment
at which a sharpness-aware step's gradients are final and unscaled before it steps).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor
from torch.optim import Optimizer

from common.optim.closures import scaled_step

try:
    import lightning.pytorch  # noqa: F401  the mixin needs a LightningModule beside it
except ImportError as error:  # one line naming the fix, as the domains' extras do
    raise ImportError(
        "common.optim.lightning needs Lightning: pip install 'flatminima[lightning]' "
        "(or pip install lightning)"
    ) from error

__all__ = ["SharpnessAwareMixin"]


class SharpnessAwareMixin:
    """Put before ``LightningModule`` in the bases; define :meth:`training_loss`.

    ``training_step`` is provided: one ``optimizer.step(closure)`` per batch, logging
    ``train_loss`` (the loss of the step's first pass).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.automatic_optimization = False

    def training_loss(self, batch: Any) -> Tensor:
        """The mean loss of ``batch`` under the current weights (called once per pass)."""
        raise NotImplementedError(f"{type(self).__name__} must define training_loss(batch)")

    def _optimizer(self) -> Any:
        optimizers = self.optimizers()  # type: ignore[attr-defined]
        if isinstance(optimizers, list):
            raise ValueError("SharpnessAwareMixin steps one optimizer; configure only one")
        return optimizers

    def on_fit_start(self) -> None:
        plugin = self.trainer.precision_plugin  # type: ignore[attr-defined]
        if getattr(plugin, "scaler", None) is not None and "optimizer_step" not in vars(plugin):
            plugin.optimizer_step = _closure_aware_step(plugin)

    def on_fit_end(self) -> None:
        vars(self.trainer.precision_plugin).pop("optimizer_step", None)  # type: ignore[attr-defined]

    def on_train_epoch_start(self) -> None:
        optimizer = self._optimizer().optimizer
        prepare = getattr(optimizer, "prepare_epoch", None)
        if prepare is not None:  # SSAM-F's Fisher mask, SSAM-D's drop-and-grow schedule
            loader = self.trainer.train_dataloader  # type: ignore[attr-defined]
            prepare(
                self.current_epoch,  # type: ignore[attr-defined]
                model=self,
                loss_fn=lambda model, batch: model.training_loss(batch),
                data=loader,
            )

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        optimizer = self._optimizer()

        def closure() -> Tensor:
            loss = self.training_loss(batch)
            self.manual_backward(loss)  # type: ignore[attr-defined]
            return loss.detach()

        optimizer.zero_grad()
        loss = optimizer.step(closure=closure)
        self._step_schedulers("step")
        if loss is not None:  # None: an fp16 overflow skipped the step
            self.log("train_loss", loss, prog_bar=True)  # type: ignore[attr-defined]
        return loss

    def on_train_epoch_end(self) -> None:
        self._step_schedulers("epoch")

    def _step_schedulers(self, interval: str) -> None:
        for config in self.trainer.lr_scheduler_configs:  # type: ignore[attr-defined]
            if config.interval == interval:
                config.scheduler.step()


def _closure_aware_step(plugin: Any) -> Callable[..., Any]:
    """The fp16 plugin's ``optimizer_step`` for one fit: :func:`scaled_step` with its scaler."""

    def optimizer_step(optimizer: Optimizer, model: Any, closure: Callable[..., Any], **_: Any):
        del model  # Lightning's signature; the closure already runs the module
        return scaled_step(optimizer, closure, plugin.scaler)

    return optimizer_step
