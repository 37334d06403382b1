"""Closures for a plain training loop: gradient accumulation and fp16 loss scaling.

Every optimizer here steps with ``optimizer.step(closure)`` and a sharpness-aware one calls
the closure once per gradient pass (g(W), then g(W + e), ...). So both recipes live in
the closure, and work for every optimizer alike:

>>> optimizer.zero_grad()
>>> loss = optimizer.step(accumulating_closure(model_loss, micro_batches))

computes every pass over all micro-batches, weighted by size, so g(W) and g(W + e) are
the whole batch's gradients (equal to one pass over it, to rounding, for a model without
BatchNorm: BatchNorm normalises each micro-batch with its own statistics);

>>> scaler = torch.amp.GradScaler("cuda")
>>> loss = scaled_step(optimizer, closure, scaler)  # closure: scaler.scale(loss).backward()

runs a step under ``torch.amp.GradScaler``, which itself refuses closures and unscales once
per step: each pass's gradients are unscaled as soon as the pass ends (the optimizer sees
true gradients), an overflow in any pass skips the whole step with the weights put back,
and ``scaler.update()`` grows or backs off the scale as it would for a plain step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

__all__ = ["Overflow", "accumulating_closure", "scaled_step"]


def _size(batch: Any) -> int:
    first = batch[0] if isinstance(batch, list | tuple) else batch
    return len(first)


def accumulating_closure(
    model_loss: Callable[[Any], Tensor],
    micro_batches: Sequence[Any],
    *,
    scale: Callable[[Tensor], Tensor] | None = None,
) -> Callable[[], Tensor]:
    """A closure that runs ``model_loss(micro_batch)`` (a mean loss) forward and backward
    on every micro-batch, weighted by its share of the examples, and returns the whole
    batch's mean loss (detached). Gradients accumulate into ``p.grad``: zero them before
    ``step`` (a sharpness-aware optimizer zeroes them between its own passes).

    ``scale``: applied to each weighted loss before ``backward`` (``scaler.scale`` for
    :func:`scaled_step`). Micro-batches are ``(inputs, targets, ...)`` tuples or tensors;
    their first element's length is their size.
    """
    sizes = [_size(b) for b in micro_batches]
    total_size = sum(sizes)
    if not micro_batches or total_size == 0:
        raise ValueError("accumulating_closure needs at least one non-empty micro-batch")

    def closure() -> Tensor:
        total = None
        for batch, size in zip(micro_batches, sizes, strict=True):
            loss = model_loss(batch) * (size / total_size)
            (loss if scale is None else scale(loss)).backward()
            total = loss.detach() if total is None else total + loss.detach()
        return total

    return closure


class Overflow(Exception):
    """A pass of a scaled step had non-finite gradients: the step is skipped."""


class _Pass:
    """What ``GradScaler.unscale_`` needs of an optimizer (its groups), one per gradient
    pass: the scaler allows one unscale per optimizer per step, and keeps each pass's
    overflow flag for ``update``."""

    def __init__(self, optimizer: Optimizer) -> None:
        self.param_groups = optimizer.param_groups


def scaled_step(
    optimizer: Optimizer, closure: Callable[[], Any], scaler: torch.amp.GradScaler
) -> Any:
    """``optimizer.step(closure)`` under ``scaler``, for any optimizer; returns the step's
    loss, or None when an overflow skipped it. ``closure`` calls
    ``scaler.scale(loss).backward()`` (or uses :func:`accumulating_closure` with
    ``scale=scaler.scale``); call ``optimizer.zero_grad()`` before, ``scheduler.step()``
    after, as usual. ``scaler.update()`` is called here."""
    if not scaler.is_enabled():
        return optimizer.step(closure)

    passes: list[_Pass] = []  # alive until update(): the scaler keys its state by id()

    def unscaled() -> Any:
        loss = closure()
        passes.append(_Pass(optimizer))
        scaler.unscale_(passes[-1])  # type: ignore[arg-type]
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if grads and not torch.stack([torch.isfinite(g).all() for g in grads]).all():
            raise Overflow
        return loss

    try:
        loss = optimizer.step(unscaled)
    except Overflow:  # a sharpness-aware optimizer has put its weights back already
        optimizer.zero_grad(set_to_none=True)
        loss = None
    scaler.update()
    return loss
