"""Curvature matrices besides the Hessian, as operators the trace, eigenvalue and density
estimators take unchanged: the generalised Gauss-Newton matrix and the empirical Fisher.

With N examples in batches b of n_b (each batch's loss the mean over its examples):

- GGN: G = Σ_b (n_b/N) J_bᵀ H_b J_b, J_b the Jacobian of batch b's model outputs w.r.t.
  the selected parameters, H_b the Hessian of its loss w.r.t. those outputs. It is the
  Hessian without the term that weighs the outputs' own curvature by the loss gradient,
  so it is positive semi-definite wherever the loss is convex in the outputs
  (cross-entropy, squared error) and equals H for a model linear in its parameters.
  It needs the loss split at the outputs: an :class:`OutputLoss`.
- Empirical Fisher: F = (1/N) Σ_i g_i g_iᵀ, g_i the gradient of example i's loss, defined
  as ``loss_fn`` on the batch sliced to that one example (``common.batches.slice_batch``).
  Always positive semi-definite, of rank at most N; tr(F) = mean ‖g_i‖².

Each operator has :class:`~common.sharpness.hvp.HessianOperator`'s interface (flat (m, P)
blocks, products in float64, ``matmat``/``batch_matmat``/``matvec``/``gradient``/
``layer_slices``/``products``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.utils._pytree import tree_leaves, tree_map

from common.attention import differentiable_attention
from common.batches import slice_batch
from common.checks import OptionError
from common.sharpness.core import LossFn, ParamSpec, selected_batches
from common.sharpness.hvp import HessianOperator

OPERATORS = ("hessian", "ggn", "fisher")
#: how results and tables name each matrix
TITLES = {"hessian": "Hessian", "ggn": "GGN", "fisher": "Fisher"}
#: per-example gradients computed at once by vmap, at most about this many bytes (float64)
CHUNK_BYTES = 256 * 2**20
#: the Fisher keeps every example's gradient between products when they take at most this
KEEP_BYTES = 2**30


@dataclass(frozen=True)
class OutputLoss:
    """A loss split at the model's outputs, as the GGN needs it:
    ``loss(model, batch) = criterion(outputs(model, batch), batch)``.

    It is itself a ``loss_fn`` (callable as one), so the same object serves every
    operator and every other measurement.

    Attributes:
        outputs: ``(model, batch) -> outputs`` (one tensor, e.g. logits (B, C)).
        criterion: ``(outputs, batch) -> mean loss of the batch`` (reads the targets from
            the batch; label smoothing and class weights belong here).
    """

    outputs: Callable[[nn.Module, Any], Tensor]
    criterion: Callable[[Tensor, Any], Tensor]

    def __call__(self, model: nn.Module, batch: Any) -> Tensor:
        return self.criterion(self.outputs(model, batch), batch)


def check_operator(operator: str, loss_fn: LossFn | None = None) -> None:
    """:class:`OptionError` unless ``operator`` is one of :data:`OPERATORS` (and, for the
    GGN, ``loss_fn`` an :class:`OutputLoss`, when given)."""
    if operator not in OPERATORS:
        raise OptionError(f"operator={operator} is not a curvature matrix: use one of {OPERATORS}")
    if operator == "ggn" and loss_fn is not None and not isinstance(loss_fn, OutputLoss):
        raise OptionError(
            "operator=ggn needs the loss split at the model's outputs: pass "
            "loss_fn=OutputLoss(outputs, criterion) (common.sharpness.curvature)"
        )


def make_operator(
    model: nn.Module,
    loss_fn: LossFn,
    data: Iterable[Any],
    params: ParamSpec,
    batch_size: Callable[[Any], int] | None,
    keep_graphs: bool | None,
    operator: str = "hessian",
) -> tuple[HessianOperator, list[tuple[str, nn.Parameter]]]:
    """The operator of ``operator`` over ``data``'s batches and the chosen parameters.
    Graphs are kept by default on one batch; the Fisher's per-example gradients whenever
    they fit :data:`KEEP_BYTES`."""
    check_operator(operator, loss_fn)
    chosen, batches = selected_batches(model, data, params, batch_size)
    selected = [p for _, p in chosen]
    if operator == "fisher":
        return FisherOperator(model, loss_fn, batches, selected, keep_graphs=keep_graphs), chosen
    keep = len(batches) == 1 if keep_graphs is None else keep_graphs
    cls = GGNOperator if operator == "ggn" else HessianOperator
    return cls(model, loss_fn, batches, selected, keep_graphs=keep), chosen


def operator_options(operator: str, op: HessianOperator) -> dict[str, Any]:
    """What a result records of its operator: its name, and how the Fisher's per-example
    gradients were computed."""
    if isinstance(op, FisherOperator):
        return {"operator": operator, "per_example": op.per_example}
    return {"operator": operator}


class _Curvature(HessianOperator):
    """HessianOperator's blocks, weights and counters, with a product of its own."""

    def _gradient(self, index: int, create_graph: bool = True) -> tuple[Tensor | None, ...]:
        # only the loss gradient is asked of it here (Lanczos's start): no Hessian graph
        return super()._gradient(index, create_graph=False)

    def _zeros(self, m: int) -> list[Tensor]:
        return [torch.zeros(m, *p.shape, dtype=p.dtype, device=p.device) for p in self.params]


@dataclass
class _Outputs:
    """One batch's pieces of G: outputs z (with the model's graph), ∇_z ℓ as a function of
    a detached copy of z, and Jᵀu for a dummy u (its graph gives J·v)."""

    z: Tensor
    z_leaf: Tensor
    dloss: Tensor
    u: Tensor
    jt_u: list[Tensor | None]


class GGNOperator(_Curvature):
    """V ↦ G V for G = Σ_b (n_b/N) J_bᵀ H_b J_b (see the module), ``loss_fn`` an
    :class:`OutputLoss`.

    Per batch and call: one forward pass, ∇_z ℓ with its graph in output space, and the
    graph of Jᵀu for a dummy u (a backward pass). Per vector v: J v = ∂(uᵀJv)/∂u, a backward
    pass through the graph of Jᵀu (the double-backward way to a forward-mode product, which
    every op with a double backward supports, as the Hessian needs anyway), H_b(J v) in
    output space, then Jᵀ(H_b J v), a backward pass. The m vectors of a block go through
    together (``is_grads_batched``) on GPUs and one by one on CPUs, as in HessianOperator.
    """

    loss_fn: OutputLoss

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._kept: dict[int, _Outputs] = {}

    def _outputs(self, index: int) -> _Outputs:
        if index in self._kept:
            return self._kept[index]
        batch, _ = self.batches[index]
        with torch.enable_grad(), differentiable_attention():
            z = self.loss_fn.outputs(self.model, batch)
            if not isinstance(z, Tensor):
                raise TypeError(f"OutputLoss.outputs must return a tensor, got {type(z).__name__}")
            z_leaf = z.detach().requires_grad_()
            loss = self.loss_fn.criterion(z_leaf, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss of batch {index} is {float(loss)}")
            (dloss,) = torch.autograd.grad(loss, z_leaf, create_graph=True)
            u = torch.zeros_like(z, requires_grad=True)
            jt_u = (
                list(torch.autograd.grad(z, self.params, u, create_graph=True, allow_unused=True))
                if z.requires_grad
                else [None] * len(self.params)
            )
        out = _Outputs(z, z_leaf, dloss, u, jt_u)
        if self.keep_graphs:
            self._kept[index] = out
        return out

    def _batch_flat(self, index: int, vectors: list[Tensor], m: int) -> Tensor:
        parts = self._outputs(index)
        live = [i for i, g in enumerate(parts.jt_u) if g is not None]
        gv = None
        # outputs free of the parameters have J = 0; a loss linear in the outputs, H_b = 0
        if not live or not parts.dloss.requires_grad:
            gv = self._zeros(m)
        elif self._batched and m > 1:
            try:
                gv = self._product(parts, live, vectors, batched=True)
            except RuntimeError:  # an op without a vmap rule: one vector at a time
                self._batched = False
        if gv is None:
            rows = [
                self._product(parts, live, [v[j] for v in vectors], batched=False) for j in range(m)
            ]
            gv = [torch.stack(col) for col in zip(*rows, strict=True)]
        self.products += m
        return torch.cat([g.reshape(m, -1) for g in gv], dim=1).to(torch.float64)

    def _product(
        self, parts: _Outputs, live: list[int], vectors: list[Tensor], batched: bool
    ) -> list[Tensor]:
        """Jᵀ H J of ``vectors`` (per parameter; a leading m when ``batched``)."""

        def backward(outputs, inputs, grads, allow_unused=False):
            return torch.autograd.grad(
                outputs, inputs, grads, retain_graph=True, allow_unused=allow_unused,
                is_grads_batched=batched,
            )  # fmt: skip

        with torch.enable_grad():
            (jv,) = backward([parts.jt_u[i] for i in live], parts.u, [vectors[i] for i in live])
            (hjv,) = backward(parts.dloss, parts.z_leaf, jv.to(parts.dloss.dtype), True)
            if hjv is None:  # ∇_z ℓ is constant in z (a loss linear in the outputs)
                hjv = torch.zeros_like(jv)
            gv = backward(parts.z, self.params, hjv.to(parts.z.dtype), True)
        shape = vectors[0].shape[:1] if batched else ()
        return [
            g if g is not None else torch.zeros(*shape, *p.shape, dtype=p.dtype, device=p.device)
            for g, p in zip(gv, self.params, strict=True)
        ]


class _Bound(nn.Module):
    """``loss_fn(model, batch)`` as a module, so that ``functional_call`` can swap the
    model's parameters for the ones vmap differentiates."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch: Any) -> Tensor:
        return self.loss_fn(self.model, batch)


class FisherOperator(_Curvature):
    """V ↦ F V for the empirical Fisher F = (1/N) Σ_i g_i g_iᵀ (see the module):
    F V = (1/N) Σ_i g_i (g_iᵀ V), two matrix products per chunk of examples' gradients.

    The per-example gradients come from ``torch.func.vmap(grad(...))`` over batches that
    are tuples, lists or dicts of tensors with the examples along dim 0, in chunks of
    about :data:`CHUNK_BYTES`. Where vmap cannot run the loss (a batch of another kind,
    such as a PyG graph batch, or an op without a batching rule, such as data-dependent
    control flow), they come from one backward pass per example instead, and
    ``per_example`` says why. With ``keep_graphs`` (default: when they fit
    :data:`KEEP_BYTES`) they are computed once and kept between calls; otherwise every
    call computes them again.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        batches: Sequence[tuple[Any, int]],
        params: Sequence[nn.Parameter],
        *,
        keep_graphs: bool | None = None,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__(model, loss_fn, batches, params)
        fits = self.n_examples * self.dim * 8 <= KEEP_BYTES
        self.keep_graphs = fits if keep_graphs is None else keep_graphs
        self.chunk = chunk_size or max(1, CHUNK_BYTES // (8 * max(1, self.dim)))
        self.per_example = "vmap"  # or "loop (<why>)" once vmap could not run
        self._kept: dict[int, list[Tensor]] = {}
        names = {p: n for n, p in model.named_parameters()}
        self._keys = ["model." + names[p] for p in self.params]
        self._bound = _Bound(model, loss_fn)

    def _batch_flat(self, index: int, vectors: list[Tensor], m: int) -> Tensor:
        v = torch.cat([x.reshape(m, -1) for x in vectors], dim=1).to(torch.float64)  # (m, P)
        out = torch.zeros_like(v)
        for g in self._chunks(index):  # (c, P): the gradients of c examples
            out.addmm_(v @ g.T, g)
        self.products += m
        return out / self.batches[index][1]

    def _chunks(self, index: int) -> Iterable[Tensor]:
        if index in self._kept:
            return self._kept[index]
        batch, n = self.batches[index]
        bounds = [(s, min(n, s + self.chunk)) for s in range(0, n, self.chunk)]
        chunks = (self._gradients(slice_batch(batch, a, b), b - a) for a, b in bounds)
        if not self.keep_graphs:
            return chunks
        self._kept[index] = list(chunks)
        return self._kept[index]

    def _gradients(self, part: Any, c: int) -> Tensor:
        """(c, P) float64: the gradient of each example's loss in ``part``."""
        if self.per_example == "vmap":
            leaves = tree_leaves(part)
            if leaves and all(isinstance(t, Tensor) and t.shape[:1] == (c,) for t in leaves):
                try:
                    grads = self._vmapped(part, c)
                except Exception as e:  # the loop raises a real error again, as itself
                    why = (str(e).strip().splitlines() or [""])[0][:200]
                    self._fall_back(f"vmap failed: {type(e).__name__}: {why}", warn=True)
                else:
                    return _finite(grads)
            else:
                name = type(part).__name__
                self._fall_back(f"{name} is not a batch of tensors with the examples on dim 0")
        return _finite(self._looped(part, c))

    def _fall_back(self, why: str, warn: bool = False) -> None:
        self.per_example = f"loop ({why})"
        if warn:
            warnings.warn(f"empirical Fisher: one backward pass per example, {why}", stacklevel=3)

    def _vmapped(self, part: Any, c: int) -> Tensor:
        def one(weights: dict[str, Tensor], example: Any) -> Tensor:
            batch_of_one = tree_map(lambda t: t.unsqueeze(0), example)
            return functional_call(self._bound, weights, (batch_of_one,))

        weights = {k: p.detach() for k, p in zip(self._keys, self.params, strict=True)}
        with torch.enable_grad(), differentiable_attention():
            grads = vmap(grad(one), in_dims=(None, 0))(weights, part)  # k: (c, *shape)
        return torch.cat([grads[k].reshape(c, -1) for k in self._keys], dim=1).to(torch.float64)

    def _looped(self, part: Any, c: int) -> Tensor:
        rows = []
        for i in range(c):
            with torch.enable_grad(), differentiable_attention():
                loss = self.loss_fn(self.model, slice_batch(part, i, i + 1))
                grads = torch.autograd.grad(loss, self.params, allow_unused=True)
            rows.append(torch.cat([
                (g if g is not None else torch.zeros_like(p)).reshape(-1).to(torch.float64)
                for g, p in zip(grads, self.params, strict=True)
            ]))  # fmt: skip
        return torch.stack(rows)


def _finite(g: Tensor) -> Tensor:
    if not bool(torch.isfinite(g).all()):
        raise FloatingPointError("a per-example gradient is not finite")
    return g
