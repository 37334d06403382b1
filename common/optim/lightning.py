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
optimization). Precision: ``32-true`` and ``bf16-mixed`` work; ``16-mixed`` is refused for
a sharpness-aware optimizer, because Lightning's scaler steps without a closure (use
:func:`common.optim.closures.scaled_step` in a plain loop for fp16).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from common.optim.base import SharpnessAwareOptimizer

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
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)  # type: ignore[attr-defined]
        if scaler is not None and isinstance(self._optimizer().optimizer, SharpnessAwareOptimizer):
            raise ValueError(
                "precision='16-mixed' steps the optimizer without a closure, which a "
                "sharpness-aware optimizer needs: use precision='bf16-mixed' or '32-true'"
            )

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
        self.log("train_loss", loss, prog_bar=True)  # type: ignore[attr-defined]
        return loss

    def on_train_epoch_end(self) -> None:
        self._step_schedulers("epoch")

    def _step_schedulers(self, interval: str) -> None:
        for config in self.trainer.lr_scheduler_configs:  # type: ignore[attr-defined]
            if config.interval == interval:
                config.scheduler.step()
