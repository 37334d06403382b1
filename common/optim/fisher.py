"""Empirical Fisher diagonal Σᵢ gᵢ² from per-example gradients (torch.func)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.utils._pytree import tree_map

from common.attention import differentiable_attention
from common.batches import batch_size, slice_batch
from common.optim.perturb import norm_dtype

LossFn = Callable[[nn.Module, Any], Tensor]

#: Per-example gradients of one vmap chunk may take about this many bytes.
CHUNK_BYTES = 256 * 2**20


class _Loss(nn.Module):
    """Makes ``loss_fn(model, batch)`` callable through ``functional_call``."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch: Any) -> Tensor:
        return self.loss_fn(self.model, batch)


def fisher_diagonal(
    model: nn.Module,
    loss_fn: LossFn,
    data: Iterable[Any],
    params: list[Tensor],
    *,
    num_samples: int,
    chunk_size: int | None = None,
) -> list[Tensor]:
    """Σᵢ (∂ℓᵢ/∂p)² over the first ``num_samples`` examples of ``data``, per parameter.

    ``loss_fn(model, batch)`` returns the mean loss of a batch; here it sees batches of one
    example. The model runs in eval mode (BatchNorm reads its running statistics and never
    updates them; vmap cannot update them anyway), and its mode is restored afterwards.
    Tensor batches (tuples, dicts) are vectorised with vmap in chunks of ``chunk_size``
    examples; PyG batches (``to_data_list``) are split into graphs and looped over. The
    sums are accumulated and returned in float32, or float64 for float64 parameters:
    squares of small bfloat16/float16 gradients underflow, and their sums lose digits.
    """
    names = {p: n for n, p in model.named_parameters()}
    unknown = [tuple(p.shape) for p in params if p not in names]
    if unknown:
        raise ValueError(
            f"{len(unknown)} optimizer parameters (shapes {unknown[:3]}) are not in model"
        )
    wrapper = _Loss(model, loss_fn)
    keys = ["model." + names[p] for p in params]
    example_bytes = sum(p.numel() * p.element_size() for p in params)  # one example's grads
    chunk = chunk_size or max(1, CHUNK_BYTES // max(1, example_bytes))
    fisher = [torch.zeros_like(p, dtype=norm_dtype([p])) for p in params]
    was_training = model.training
    model.eval()
    # fused attention kernels have no vmap batching rule for their backward (per-example
    # gradients through them fall back to a slow loop); the math backend is ordinary ops
    try:
        with differentiable_attention():
            seen = _accumulate(wrapper, data, num_samples, chunk, keys, params, fisher)
    finally:
        model.train(was_training)
    if seen < num_samples:
        raise ValueError(f"data has only {seen} examples but num_samples={num_samples}")
    return fisher


def _accumulate(
    wrapper: _Loss,
    data: Iterable[Any],
    num_samples: int,
    chunk: int,
    keys: list[str],
    params: list[Tensor],
    fisher: list[Tensor],
) -> int:
    """Adds g_i² of the first ``num_samples`` examples of ``data``; returns how many."""
    seen, vectorised = 0, True
    for batch in data:
        take = min(batch_size(batch), num_samples - seen)
        if hasattr(batch, "to_data_list"):
            graphs = batch.to_data_list()[:take]
            singles = [type(batch).from_data_list([graph]) for graph in graphs]
            _accumulate_loop(wrapper, singles, params, fisher)
        else:
            for start in range(0, take, chunk):
                part = slice_batch(batch, start, min(start + chunk, take))
                if vectorised:
                    try:
                        _accumulate_vmap(wrapper, part, keys, params, fisher)
                        continue
                    except RuntimeError as e:
                        # a model with data-dependent control flow (HF's attention masks)
                        # cannot be vmapped: one backward pass per example instead
                        if "vmap" not in str(e):
                            raise
                        vectorised = False
                examples = [slice_batch(part, i, i + 1) for i in range(batch_size(part))]
                _accumulate_loop(wrapper, examples, params, fisher)
        seen += take
        if seen >= num_samples:
            break
    return seen


def _accumulate_vmap(
    wrapper: _Loss, part: Any, keys: list[str], params: list[Tensor], fisher: list[Tensor]
) -> None:
    def one_loss(weights: dict[str, Tensor], example: Any) -> Tensor:
        return functional_call(wrapper, weights, (tree_map(lambda t: t.unsqueeze(0), example),))

    weights = {k: p.detach() for k, p in zip(keys, params, strict=True)}
    with torch.enable_grad():
        per_example = vmap(grad(one_loss), in_dims=(None, 0))(weights, part)  # k: (B, *shape)
    for f, k in zip(fisher, keys, strict=True):
        f.add_(per_example[k].to(f.dtype).square().sum(0))


def _accumulate_loop(
    wrapper: _Loss, examples: list[Any], params: list[Tensor], fisher: list[Tensor]
) -> None:
    """One backward pass per example (a PyG batch of one graph, or a tensor batch of one)."""
    for example in examples:
        with torch.enable_grad():
            grads = torch.autograd.grad(wrapper(example), params, allow_unused=True)
        for f, g in zip(fisher, grads, strict=True):
            if g is not None:
                f.add_(g.to(f.dtype).square())
