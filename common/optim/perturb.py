"""Perturbation maths shared by every sharpness-aware optimizer.

All functions work on lists of tensors with ``torch._foreach_*`` kernels (one call per
list, not per tensor). Weights are never moved by ``W + e - e``: a perturbed point is
built in a *new* buffer and swapped in as ``p.data``; the original storage is kept
untouched and swapped back, so restoring is exact and costs no memory traffic.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch
from torch import Tensor

#: Added to ‖g‖ in ρ·g/(‖g‖+ε) (the value of the SAM and WSAM reference code).
NORM_EPS = 1e-12

#: Noise laws for NSO; each sample is scaled to standard deviation σ (Cauchy: scale σ).
DISTRIBUTIONS = ("normal", "laplace", "uniform", "binomial", "cauchy")


def norm_dtype(tensors: Sequence[Tensor]) -> torch.dtype:
    """float32, or wider if a tensor is (float64): never below the tensors' precision."""
    return functools.reduce(torch.promote_types, (t.dtype for t in tensors), torch.float32)


def global_norm(tensors: Sequence[Tensor]) -> Tensor:
    """‖concat(tensors)‖₂ as a 0-dim tensor in :func:`norm_dtype` (0 for an empty list).

    Accumulated in at least float32: a bfloat16/float16 norm loses digits or overflows.
    """
    if not tensors:
        return torch.zeros(())
    norms = torch._foreach_norm(list(tensors), 2, dtype=norm_dtype(tensors))
    device = norms[0].device
    return torch.linalg.vector_norm(torch.stack([n.to(device) for n in norms]))


def clip_grad_norm_(grads: Sequence[Tensor], max_norm: float) -> None:
    """Scales ``grads`` in place so that their global norm is at most ``max_norm``.

    ``torch.nn.utils.clip_grad_norm_``'s rule, g·min(1, max_norm/(‖g‖ + 1e-6)), with the
    norm of :func:`global_norm`; no host sync.
    """
    if not grads:
        return
    coef = torch.clamp(max_norm / (global_norm(grads) + 1e-6), max=1.0)
    by_device: dict[torch.device, list[Tensor]] = {}
    for g in grads:
        by_device.setdefault(g.device, []).append(g)
    for device, group in by_device.items():
        torch._foreach_mul_(group, coef.to(device))


def adaptive_scale(params: Sequence[Tensor], eta: float) -> list[Tensor]:
    """ASAM's T = |W| + η, one new tensor per parameter."""
    t = torch._foreach_abs(list(params))
    if eta:
        torch._foreach_add_(t, eta)
    return t


def ascent_directions(
    params: Sequence[Tensor], grads: Sequence[Tensor], adaptive: bool, eta: float
) -> tuple[list[Tensor], list[Tensor], list[Tensor] | None]:
    """Returns (v, a, b): ‖v‖ normalises e, whose direction is a⊙b (a alone if b is None).

    SAM: (g, g, None). ASAM: (T⊙g, T, T⊙g) with T = |W| + η; for η = 0, T is W itself,
    since W⊙g has the norm of |W|⊙g and W⊙(W⊙g) = |W|²⊙g: no |W| is materialised.
    """
    if not adaptive:
        return list(grads), list(grads), None
    t = list(params) if eta == 0 else adaptive_scale(params, eta)
    tg = torch._foreach_mul(t, list(grads))
    return tg, t, tg


def ascent_point(
    params: Sequence[Tensor],
    a: Sequence[Tensor],
    b: Sequence[Tensor] | None,
    scale: float,
    masks: Sequence[Tensor] | None = None,
) -> list[Tensor]:
    """New tensors W + scale·a⊙b (⊙ mask for sparse SAM), in one fused pass when possible.

    ``b`` must be a temporary: with a mask it is multiplied in place.
    """
    params, a = list(params), list(a)
    if b is None:
        if masks is None:
            return torch._foreach_add(params, a, alpha=scale)
        return torch._foreach_addcmul(params, a, list(masks), value=scale)
    b = list(b)
    if masks is not None:
        torch._foreach_mul_(b, list(masks))
    return torch._foreach_addcmul(params, a, b, value=scale)


def sample_noise_(
    buf: Tensor, distribution: str, sigma: float, generator: torch.Generator
) -> Tensor:
    """Fills ``buf`` in place with zero-mean noise of standard deviation ``sigma``.

    normal N(0, σ²); laplace with scale σ/√2; uniform on [-√3σ, √3σ]; binomial: ±σ with
    probability ½ each (a centred Bernoulli, i.e. Rademacher); cauchy: scale σ (no finite
    variance, σ is its scale).
    """
    if distribution == "normal":
        return buf.normal_(0.0, sigma, generator=generator)
    if distribution == "uniform":
        half = math.sqrt(3.0) * sigma
        return buf.uniform_(-half, half, generator=generator)
    if distribution == "binomial":
        return buf.bernoulli_(0.5, generator=generator).mul_(2.0 * sigma).sub_(sigma)
    if distribution == "cauchy":
        return buf.cauchy_(0.0, sigma, generator=generator)
    if distribution == "laplace":
        # E1 - E2 ~ Laplace(0, 1) for independent Exp(1); std of Laplace(0, b) is b·√2.
        e2 = torch.empty_like(buf).exponential_(generator=generator)
        buf.exponential_(generator=generator).sub_(e2)
        return buf.mul_(sigma / math.sqrt(2.0))
    raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")


def swap_data(params: Sequence[Tensor], new: Sequence[Tensor]) -> list[Tensor]:
    """Points each ``p.data`` at ``new``; returns the storages it replaced (O(1) per tensor)."""
    old = []
    for p, n in zip(params, new, strict=True):
        old.append(p.data)
        p.data = n
    return old


def steal_grads(params: Sequence[Tensor]) -> list[Tensor | None]:
    """Takes each ``p.grad`` out of its parameter (sets it to None) without copying.

    A gradient that is a view (DDP's ``gradient_as_bucket_view``) is copied instead:
    the next backward pass would write into the shared bucket.
    """
    out: list[Tensor | None] = []
    for p in params:
        g = p.grad
        if g is not None and g._is_view():
            g = g.clone()
        out.append(g)
        p.grad = None
    return out
