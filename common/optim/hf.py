"""Every ``common.optim`` optimizer inside a Hugging Face ``transformers.Trainer``.

The Trainer runs forward and backward in ``training_step`` and then calls
``optimizer.step()`` without a closure, so a sharpness-aware optimizer, which needs
gradients at perturbed weights of the same batch, cannot be dropped in (davda54/sam
issues 66 and 91, kozistr/pytorch_optimizer issue 64). :class:`SharpnessAwareTrainer`
builds any registry name (sgd adam adamw sam asam ssamf ssamd wsam nso) from the
``TrainingArguments`` and runs sharpness-aware ones through ``step(closure)``::

    from transformers import TrainingArguments

    from common.optim.hf import SharpnessAwareTrainer

    args = TrainingArguments(output_dir="out", learning_rate=2e-5, max_grad_norm=1.0)
    trainer = SharpnessAwareTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        optimizer_name="sam",
        optimizer_options={"rho": 0.05},  # base="adamw" unless given, e.g. "sgd"
    )
    trainer.train()

A step of a sharpness-aware optimizer. ``training_step`` keeps the micro-batches of a
gradient-accumulation window; on the window's last one (``accelerator.sync_gradients``,
set by the Trainer) it calls ``optimizer.step(closure)``, where one closure call is what
the stock Trainer does for the whole window: ``Trainer.training_step`` on every
micro-batch (``compute_loss``, the loss scaled for accumulation as HF scales it,
``accelerator.backward``; under DDP only the last micro-batch of a pass all-reduces). So
every micro-batch is forwarded as often as the optimizer calls the closure (SAM: 2, NSO:
2k, +1 with ``lam > 0``), and the loss ``training_step`` returns over a window is the
first pass's mean loss, as the stock Trainer's (SAM: at W; NSO with ``lam=0``: at W + U₁).
The optimizer the Trainer holds is then a thin view whose ``step()`` without a closure
only acknowledges the step already taken, so the LR scheduler steps once per optimizer
step and the Trainer's ``zero_grad`` and checkpointing work unchanged. BatchNorm running
statistics move on the first pass of a step only. SSAM-F's Fisher mask (and SSAM-D's
schedule) are prepared at the first step of every epoch (not again when resuming within
it: the checkpoint holds the mask), on the window's examples, topped up from the training
set in order when the window holds fewer than ``num_samples``.

Gradient clipping. HF clips ``p.grad`` just before ``optimizer.step()``. For a
sharpness-aware optimizer that is either after the step (here) or, had the step been
left to ``optimizer.step()``, on g(W), which only picks the ascent direction: neither
clips the gradient of the update. So ``args.max_grad_norm`` is passed to the optimizer
(``max_grad_norm``: it clips the gradient its base step uses) and HF's own clipping is
skipped for it; the logged ``grad_norm`` is the norm of that gradient after clipping.

Plain names (sgd, adam, adamw) keep the stock ``training_step`` and clipping: with
``optimizer_name="adamw"`` a run is bit-identical to the stock Trainer's. fp16 loss
scaling (``GradScaler`` cannot step with a closure) and DeepSpeed (which owns the step)
are refused for sharpness-aware optimizers; bf16 works.
"""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch.optim import Optimizer
from transformers import Trainer, TrainingArguments

from common.bn import disable_running_stats, enable_running_stats
from common.optim.base import Closure, SharpnessAwareOptimizer
from common.optim.options import base_accepts
from common.optim.registry import BASES, OPTIMIZERS, create_optimizer

__all__ = ["SharpnessAwareTrainer", "optimizer_kwargs"]

#: optimizer_options keys that TrainingArguments owns (option -> its field).
FROM_ARGS = {
    "lr": "learning_rate",
    "weight_decay": "weight_decay",
    "betas": "adam_beta1, adam_beta2",
    "eps": "adam_epsilon",
    "max_grad_norm": "max_grad_norm",
}


def optimizer_kwargs(name: str, args: TrainingArguments, options: Mapping[str, Any]) -> dict:
    """``create_optimizer`` keywords for ``name``: ``options`` plus what ``args`` sets.

    lr from ``learning_rate``; betas and eps from ``adam_*`` where the (base) optimizer
    takes them; AdamW fused when ``args.optim`` is ``adamw_torch_fused`` (HF's default on
    torch >= 2.8); for sharpness-aware names ``max_grad_norm`` from ``args.max_grad_norm``
    (0 or None: off) and ``base`` "adamw" (the Trainer's optimizer) unless given.
    """
    info = OPTIMIZERS[name]
    kwargs = dict(options)
    if info.sharpness_aware:
        kwargs.setdefault("base", "adamw")
        base = kwargs["base"]
        cls = BASES[base.lower()] if isinstance(base, str) and base.lower() in BASES else base
        if (args.max_grad_norm or 0) > 0:
            kwargs["max_grad_norm"] = args.max_grad_norm
    else:
        cls = info.cls
    kwargs["lr"] = args.learning_rate
    accepts = base_accepts(cls) if isinstance(cls, type) else frozenset()
    if "betas" in accepts:
        kwargs["betas"] = (args.adam_beta1, args.adam_beta2)
    if "eps" in accepts:
        kwargs["eps"] = args.adam_epsilon
    if cls is torch.optim.AdamW and args.optim == "adamw_torch_fused":
        kwargs.setdefault("fused", True)
    return kwargs


class _StepDoneView(Optimizer):
    """A sharpness-aware optimizer as the Trainer holds it.

    ``training_step`` takes the whole step (every pass needs the batch), then marks it
    done; the Trainer's ``step()`` without a closure acknowledges it and returns.
    ``step(closure)`` is an ordinary step. Everything else (param groups, state, state
    dicts, zero_grad) is the wrapped optimizer's own, so LR schedulers and checkpoints see
    it. ``Optimizer.__init__`` is not called: it would copy the param groups.
    """

    def __init__(self, optimizer: SharpnessAwareOptimizer) -> None:
        self.optimizer = optimizer
        self.step_done = False

    param_groups = property(lambda self: self.optimizer.param_groups)
    state = property(lambda self: self.optimizer.state)
    defaults = property(lambda self: self.optimizer.defaults)

    def step(self, closure: Closure | None = None) -> Any:
        if closure is not None:
            return self.optimizer.step(closure)
        if not self.step_done:
            raise RuntimeError(
                f"{type(self.optimizer).__name__}.step() without a closure: inside "
                "SharpnessAwareTrainer the step is taken in training_step; elsewhere call "
                "step(closure)"
            )
        self.step_done = False
        return None

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.optimizer.add_param_group(param_group)

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.optimizer!r})"


class SharpnessAwareTrainer(Trainer):
    """``transformers.Trainer`` that trains with any optimizer of ``common.optim``.

    Args:
        *args, **kwargs: as for ``Trainer``. ``optimizers=(optimizer, scheduler)`` may
            also hold a sharpness-aware optimizer built by hand.
        optimizer_name: a registry name (``common.optim.OPTIMIZERS``); None: the Trainer
            builds ``args.optim`` as usual. Built by ``create_optimizer`` on the Trainer's
            weight-decay groups (``args.weight_decay`` on all but biases and norms, as
            ``Trainer.get_decay_parameter_names`` decides), with the learning rate, Adam
            betas/eps and ``max_grad_norm`` of ``args``.
        optimizer_options: the optimizer's own options (``rho``, ``sigma``, ...), the base
            optimizer's other than those ``args`` sets (``momentum``, ...), and ``base``
            for sharpness-aware names (default "adamw").
    """

    def __init__(
        self,
        *args: Any,
        optimizer_name: str | None = None,
        optimizer_options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        options = dict(optimizer_options or {})
        if optimizer_name is None and options:
            raise ValueError("optimizer_options needs optimizer_name")
        if optimizer_name is not None:
            optimizer_name = optimizer_name.lower()
            if optimizer_name not in OPTIMIZERS:
                raise ValueError(
                    f"unknown optimizer_name {optimizer_name!r}; valid: {sorted(OPTIMIZERS)}"
                )
            owned = sorted(k for k in options if k in FROM_ARGS)
            if owned:
                fields = ", ".join(f"{k} -> TrainingArguments.{FROM_ARGS[k]}" for k in owned)
                raise ValueError(f"set these in TrainingArguments, not optimizer_options: {fields}")
            if "base" in options and not OPTIMIZERS[optimizer_name].sharpness_aware:
                raise ValueError(
                    f"base is an option of sharpness-aware optimizers, not of {optimizer_name!r}"
                )
        self.optimizer_name, self.optimizer_options = optimizer_name, options
        self._window: list[tuple[Any, Any]] = []  # (inputs, num_items_in_batch) of the window
        self._mask_epoch: int | None = None  # the epoch SSAM's mask was last prepared for
        super().__init__(*args, **kwargs)
        if optimizer_name is not None and self.optimizer is not None:
            raise ValueError("pass optimizer_name or optimizers=(optimizer, ...), not both")

    @property
    def sharpness_aware_optimizer(self) -> SharpnessAwareOptimizer | None:
        """The sharpness-aware optimizer under the Trainer's wrappers, or None."""
        opt = self.optimizer
        while opt is not None and not isinstance(opt, SharpnessAwareOptimizer):
            opt = getattr(opt, "optimizer", None)
        return opt

    def create_optimizer(self, model: torch.nn.Module | None = None) -> Optimizer:
        """Builds ``optimizer_name`` (else as ``Trainer``); hands a sharpness-aware one to
        the Trainer behind the view whose closure-less ``step()`` acknowledges the step."""
        self._window, self._mask_epoch = [], None
        if self.optimizer is None and self.optimizer_name is not None:
            opt_model = self.model if model is None else model
            decay = set(self.get_decay_parameter_names(opt_model))
            named = [(n, p) for n, p in opt_model.named_parameters() if p.requires_grad]
            groups = [
                {
                    "params": [p for n, p in named if n in decay],
                    "weight_decay": self.args.weight_decay,
                },
                {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0},
            ]
            kwargs = optimizer_kwargs(self.optimizer_name, self.args, self.optimizer_options)
            self.optimizer = create_optimizer(self.optimizer_name, groups, **kwargs)
        if isinstance(self.optimizer, SharpnessAwareOptimizer):
            self._check_clipping(self.optimizer)
            self.optimizer = _StepDoneView(self.optimizer)
        return super().create_optimizer(model)

    def _check_clipping(self, opt: SharpnessAwareOptimizer) -> None:
        wanted = self.args.max_grad_norm if (self.args.max_grad_norm or 0) > 0 else None
        if opt.max_grad_norm != wanted:
            warnings.warn(
                f"args.max_grad_norm={self.args.max_grad_norm} but the optimizer's max_grad_norm "
                f"is {opt.max_grad_norm}, which is the one applied: HF's clipping would come "
                "after the step",
                stacklevel=3,
            )

    def _clip_grad_norm(self, model: torch.nn.Module) -> Any:
        if self.sharpness_aware_optimizer is not None:
            return None  # the optimizer clipped the update's gradient (max_grad_norm)
        return super()._clip_grad_norm(model)

    def training_step(
        self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None
    ) -> torch.Tensor:
        """Stock for plain optimizers; for sharpness-aware ones the whole step at the end
        of each accumulation window (earlier micro-batches return a zero loss)."""
        opt = self.sharpness_aware_optimizer
        if opt is None:
            return super().training_step(model, inputs, num_items_in_batch)
        if self.is_deepspeed_enabled or getattr(self.accelerator, "scaler", None) is not None:
            raise ValueError(
                f"{type(opt).__name__} cannot run under DeepSpeed or fp16 loss scaling "
                "(GradScaler cannot step with a closure): use bf16=True or fp32"
            )
        self._window.append((inputs, num_items_in_batch))
        if not self.accelerator.sync_gradients:
            return torch.zeros((), device=self.args.device)  # counted in the window's loss
        window, self._window = self._window, []
        self._prepare_mask(opt, model, window)
        one_pass = super().training_step  # forward, scaled backward, detached loss
        calls = 0

        def closure() -> torch.Tensor:
            nonlocal calls
            (enable_running_stats if calls == 0 else disable_running_stats)(model)
            calls += 1
            total = torch.zeros((), device=self.args.device)
            for i, (mb, n) in enumerate(window):
                last = i == len(window) - 1
                with contextlib.nullcontext() if last else self.accelerator.no_sync(model):
                    total = total + one_pass(model, copy.copy(mb), n)
            return total

        try:
            loss = opt.step(closure)
        finally:
            enable_running_stats(model)
        self._view().step_done = True
        return loss

    def _view(self) -> _StepDoneView:
        opt = self.optimizer  # accelerate's AcceleratedOptimizer holds the view
        while not isinstance(opt, _StepDoneView):
            opt = opt.optimizer
        return opt

    # -- SSAM masks ------------------------------------------------------------------------
    def _prepare_mask(self, opt: SharpnessAwareOptimizer, model, window) -> None:
        prepare = getattr(opt, "prepare_epoch", None)
        epoch = math.floor(self.state.epoch or 0)  # the epoch of the window's first batch
        if prepare is None or epoch == self._mask_epoch:
            return
        self._mask_epoch = epoch
        params = [p for group in opt.param_groups for p in group["params"]]
        if self.state.epoch != epoch and all("mask" in opt.state[p] for p in params):
            return  # resumed mid-epoch: the checkpoint holds this epoch's mask
        prepare(
            epoch,
            model=self.accelerator.unwrap_model(model),
            loss_fn=lambda m, batch: self.compute_loss(m, batch),
            data=self._mask_batches(window),
        )

    def _mask_batches(self, window) -> Iterator[Any]:
        for inputs, _ in window:
            yield self._prepare_inputs(copy.copy(inputs))
        if self.train_dataset is not None:  # more examples than the window holds
            for inputs in self.get_eval_dataloader(self.train_dataset):
                yield self._prepare_inputs(inputs)
