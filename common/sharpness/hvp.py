"""Hessian-vector products of the full-data loss, many vectors per gradient graph."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from common.sharpness.core import LossFn, differentiable_attention


class HessianOperator:
    """V ↦ H V for the size-weighted mean Hessian Σ_b (n_b/N)·H_b of the selected params.

    Vectors are flat, shape (m, P) for a block of m vectors over P selected coordinates
    (the parameters concatenated in selection order). For every batch the gradient graph
    is built once per call and all m vectors go through it in one batched backward pass
    (``is_grads_batched``, on GPUs) or one after the other (on CPUs, where the vmapped
    double backward measured slower than a loop: 76-130 ms against 53 ms per vector on a
    small CNN), where the reference code runs one forward and backward per vector per
    batch. With ``keep_graphs`` the graphs also survive between calls (for iterative
    methods on few batches; it holds every batch's activations in memory). Products are
    returned in float64. Gradient graphs are built under :func:`differentiable_attention`
    (also when the operator is used outside :func:`measuring`): products through fused
    attention kernels would fail.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        batches: Sequence[tuple[Any, int]],
        params: Sequence[nn.Parameter],
        *,
        keep_graphs: bool = False,
        batched: bool | None = None,
    ) -> None:
        self.model, self.loss_fn, self.batches = model, loss_fn, list(batches)
        self.params = list(params)
        self.sizes = [p.numel() for p in self.params]
        self.dim = sum(self.sizes)
        self.n_examples = sum(n for _, n in self.batches)
        self.keep_graphs = keep_graphs
        self._graphs: dict[int, tuple[Tensor | None, ...]] = {}
        self._device = self.params[0].device if self.params else torch.device("cpu")
        # falls back to a loop anyway if an op has no batching rule
        self._batched = self._device.type != "cpu" if batched is None else batched
        self.products = 0  # Hessian-vector products computed (m per batch per call)

    def _gradient(self, index: int, create_graph: bool = True) -> tuple[Tensor | None, ...]:
        if index in self._graphs:
            return self._graphs[index]
        batch, _ = self.batches[index]
        with torch.enable_grad(), differentiable_attention():
            loss = self.loss_fn(self.model, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss of batch {index} is {float(loss)}")
            grads = torch.autograd.grad(
                loss, self.params, create_graph=create_graph, allow_unused=True
            )
        if self.keep_graphs and create_graph:
            self._graphs[index] = grads
        return grads

    def gradient(self) -> Tensor:
        """The full-data gradient, flat (P,) float64. With ``keep_graphs`` it comes from the
        kept graphs (built here if need be, for the products that follow); otherwise from
        plain backward passes, which cost less than a product and keep nothing."""
        out = torch.zeros(self.dim, dtype=torch.float64, device=self._device)
        for index, (_, n) in enumerate(self.batches):
            grads = self._gradient(index, create_graph=self.keep_graphs)
            flat = torch.cat([
                (g.detach() if g is not None else torch.zeros_like(p)).reshape(-1).double()
                for g, p in zip(grads, self.params, strict=True)
            ])  # fmt: skip
            out.add_(flat, alpha=n / self.n_examples)
        return out

    def _split(self, block: Tensor) -> list[Tensor]:
        m = block.shape[0]
        parts = torch.split(block, self.sizes, dim=1)
        return [
            part.reshape(m, *p.shape).to(p.dtype)
            for part, p in zip(parts, self.params, strict=True)
        ]

    def _products(self, grads: tuple[Tensor | None, ...], vectors: list[Tensor]) -> list[Tensor]:
        # g·v only over gradients that depend on the weights: a parameter the loss does
        # not use (or uses linearly) has a zero row and column in H
        live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
        out = [torch.zeros_like(v) for v in vectors]
        if not live:
            return out
        outputs = [grads[i] for i in live]
        if self._batched and vectors[0].shape[0] > 1:
            try:
                hv = self._grad(outputs, [vectors[i] for i in live], batched=True)
            except RuntimeError:  # an op without a vmap rule: one vector at a time
                self._batched = False
        if not self._batched or vectors[0].shape[0] == 1:
            rows = [
                self._grad(outputs, [vectors[i][j] for i in live], batched=False)
                for j in range(vectors[0].shape[0])
            ]
            hv = [torch.stack(col) for col in zip(*rows, strict=True)]
        for h, o in zip(hv, out, strict=True):
            o.add_(h)
        return out

    def _grad(self, outputs: list[Tensor], vectors: list[Tensor], batched: bool) -> list[Tensor]:
        with torch.enable_grad():
            hv = torch.autograd.grad(
                outputs,
                self.params,
                grad_outputs=vectors,
                retain_graph=True,
                allow_unused=True,
                is_grads_batched=batched,
            )
        shape = vectors[0].shape[:1] if batched else ()
        return [
            h if h is not None else torch.zeros(*shape, *p.shape, dtype=p.dtype, device=p.device)
            for h, p in zip(hv, self.params, strict=True)
        ]

    def _check(self, block: Tensor) -> None:
        if block.ndim != 2 or block.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape (m, {self.dim}), got {tuple(block.shape)}")

    def _batch_flat(self, index: int, vectors: list[Tensor], m: int) -> Tensor:
        hv = self._products(self._gradient(index), vectors)
        self.products += m
        return torch.cat([h.reshape(m, -1) for h in hv], dim=1).to(torch.float64)

    def matmat(self, block: Tensor) -> Tensor:
        """H @ each row of ``block`` (m, P); returns (m, P) float64."""
        self._check(block)
        vectors = self._split(block)
        out = torch.zeros(block.shape, dtype=torch.float64, device=block.device)
        for index, (_, n) in enumerate(self.batches):
            out.add_(self._batch_flat(index, vectors, block.shape[0]), alpha=n / self.n_examples)
        return out

    def batch_matmat(self, block: Tensor, index: int) -> Tensor:
        """H_b @ each row of ``block``: the Hessian of batch ``index``'s loss alone (its
        share of H is n_b / N of it); (m, P) float64."""
        self._check(block)
        return self._batch_flat(index, self._split(block), block.shape[0])

    def matvec(self, vector: Tensor) -> Tensor:
        """H @ vector (P,); float64."""
        return self.matmat(vector.unsqueeze(0))[0]

    def layer_slices(self) -> list[slice]:
        """The coordinate range of each selected parameter in the flat vectors."""
        out, start = [], 0
        for size in self.sizes:
            out.append(slice(start, start + size))
            start += size
        return out


def functional_hvp(
    model: nn.Module, inputs: Tensor, targets: Tensor
) -> tuple[dict[str, Tensor], dict[str, Tensor], Any]:
    """Forward-over-reverse Hessian-vector product of the cross-entropy of ``model(inputs)``
    as a pure function of the parameters (``torch.func.jvp`` of ``grad``), the form
    ``torch.compile`` takes; the benchmark and the GPU check weigh it against the double
    backward :class:`HessianOperator` uses. Returns the detached parameters, a Rademacher
    vector like them and ``product(params, vector) -> H vector`` (a dict by name)."""
    from torch.func import functional_call, grad, jvp

    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def loss(p: dict[str, Tensor]) -> Tensor:
        return nn.functional.cross_entropy(functional_call(model, (p, buffers), (inputs,)), targets)

    def product(p: dict[str, Tensor], v: dict[str, Tensor]) -> dict[str, Tensor]:
        return jvp(grad(loss), (p,), (v,))[1]

    vector = {n: torch.randint_like(t, 2) * 2 - 1 for n, t in params.items()}
    return params, vector, product
