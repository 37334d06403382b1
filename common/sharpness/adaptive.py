"""Adaptive sharpness (Andriushchenko et al. 2023, after Kwon et al.'s ASAM 2021): how far
the full-data loss rises, at worst or on average, when the weights move inside a ball
whose axes are scaled by c (c = |w| elementwise: "adaptive"; c = 1: standard sharpness).

    worst case:    S_max(ρ) = max_{‖δ ⊘ c‖_p ≤ ρ} L(w+δ) − L(w),   p ∈ {2, ∞}
    average case:  S_avg(ρ) = E_{δ ~ N(0, ρ² diag(c²))} L(w+δ) − L(w)

The average case is the paper's: no division by the number of parameters, so each weight
moves by ρ·c_i in standard deviation, and on a quadratic S_avg = ½ρ² tr(diag(c) H diag(c)).
With c = |w| both are invariant to rescaling a ReLU layer's weights up and the next down.

The worst case is maximised in the scaled variable γ = δ ⊘ c, where the ball is the plain
ℓp ball of radius ρ: projected ascent with the step 2ρ of the paper's code, along the
normalised gradient ∇_γ/‖∇_γ‖₂ (ℓ2) or its sign (ℓ∞), each step taken from the best point
so far and the step halved whenever it fails to improve it (the paper's APGD halves at
checkpoints and adds momentum; we keep the part that makes the ascent monotone). Each
restart starts at a random point of the ball; a zero weight (c_i = 0) never moves.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from common.checks import check, check_int, check_number
from common.optim.perturb import swap_data
from common.rng import generator as make_generator
from common.sharpness.core import (
    LossFn,
    ParamSpec,
    Record,
    full_loss,
    measuring,
    progress_off,
    record_for,
    selected_batches,
)
from common.sharpness.noise import GaussianNoise, draw_noise, sample_stats

NORMS = ("l2", "linf")
SCALINGS = ("adaptive", "none")
_NORM_NAMES = {2: "l2", "2": "l2", "l2": "l2", math.inf: "linf", "inf": "linf", "linf": "linf"}


@dataclass
class WorstCaseResult:
    """max_{‖δ ⊘ c‖_p ≤ ρ} L(w+δ) − L(w), the best of ``restarts`` ascents."""

    value: float  # the largest increase found (per-batch mode: the batches' weighted mean)
    restarts: list[float]  # each restart's increase
    base_loss: float  # L(w)
    rho: float
    norm: str  # "l2" or "linf"
    scaling: str  # "adaptive" (c = |w|) or "none" (c = 1)
    record: Record

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AverageCaseResult:
    """E_{δ ~ N(0, ρ² diag(c²))} L(w+δ) − L(w) from ``len(samples)`` draws."""

    mean: float
    std: float  # sample standard deviation (ddof=1; 0 for one draw)
    stderr: float  # std / √n
    samples: list[float]
    base_loss: float
    rho: float
    scaling: str
    record: Record

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_norm(norm: Any) -> str:
    """``norm`` as "l2" or "linf" (also given as 2, "2", math.inf, "inf")."""
    name = _NORM_NAMES.get(norm) if isinstance(norm, str | int | float) else None
    check("norm", norm, name is not None and not isinstance(norm, bool), "2 or inf ('l2', 'linf')")
    return name  # type: ignore[return-value]


def _check_common(rho: float, scaling: str) -> float:
    check_number("rho", rho, 0.0)
    check("scaling", scaling, scaling in SCALINGS, f"one of {', '.join(SCALINGS)}")
    return float(rho)


def _scale(weights: Sequence[Tensor], scaling: str) -> list[Tensor] | None:
    """c = |w| (adaptive) or None for c = 1."""
    return torch._foreach_abs(weights) if scaling == "adaptive" else None


def worst_case_sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    data: Iterable[Any],
    *,
    rho: float,
    norm: str | float = "linf",
    scaling: str = "adaptive",
    steps: int = 20,
    restarts: int = 1,
    per_batch: bool = False,
    params: ParamSpec = None,
    seed: int = 0,
    batch_size: Callable[[Any], int] | None = None,
    progress: bool | None = None,
) -> WorstCaseResult:
    """max_{‖δ ⊘ c‖_p ≤ ρ} L(w+δ) − L(w) by projected ascent (see the module docstring).

    Runs in eval mode; the weights, modes and gradients are restored exactly afterwards.

    Args:
        model, loss_fn, data: as every measurement (``loss_fn(model, batch)`` -> mean loss).
        rho: radius ρ >= 0 of the ball, in units of |w| when ``scaling="adaptive"``.
        norm: "l2" or "linf" (also 2 or math.inf).
        scaling: "adaptive" (c = |w|) or "none" (c = 1: standard sharpness).
        steps: ascent steps per restart, each one forward and backward pass over ``data``.
        restarts: ascents from independent random starts; the largest increase is kept.
        per_batch: the paper's E_S max: each batch its own δ, the batches' size-weighted
            mean of their maxima; else one δ for the whole of ``data``.
        params: which parameters move (see ``select_params``).
        seed: seed of the random starts.
        batch_size: ``batch_size(batch) -> int`` where dim 0 is not the size.
        progress: tqdm bar over restarts; None shows it only on a terminal.

    Raises:
        OptionError (a ValueError): a bad option. FloatingPointError: L(w) not finite.
    """
    rho, norm = _check_common(rho, scaling), check_norm(norm)
    steps, restarts = check_int("steps", steps, 1), check_int("restarts", restarts, 1)
    chosen, batches = selected_batches(model, data, params, batch_size)
    tensors = [p for _, p in chosen]
    groups = [[b] for b in batches] if per_batch else [batches]
    generator = make_generator(int(seed), "worst_case_sharpness")
    with measuring(model):
        moved = {id(t) for t in tensors}
        for p in model.parameters():  # gradients of the moved parameters only
            p.requires_grad_(id(p) in moved)
        base = full_loss(model, loss_fn, batches)
        scale = _scale([p.data for p in tensors], scaling)
        bases = [base] if len(groups) == 1 else [full_loss(model, loss_fn, g) for g in groups]
        ascents = [
            _Ascent(model, loss_fn, g, tensors, scale, rho, norm, b)
            for g, b in zip(groups, bases, strict=True)
        ]
        found = []  # [restart][group] increases
        for _ in tqdm(range(restarts), desc="worst-case sharpness", disable=progress_off(progress)):
            found.append([a.increase(a.start(generator), steps) for a in ascents])
    sizes = [sum(n for _, n in g) for g in groups]
    per_restart = [_weighted(row, sizes) for row in found]
    best = _weighted([max(col) for col in zip(*found, strict=True)], sizes)
    record = record_for(
        "worst_case_sharpness", batches, chosen, params, int(seed), rho=rho, norm=norm,
        scaling=scaling, steps=steps, restarts=restarts, per_batch=bool(per_batch),
        initial_step=2 * rho,
    )  # fmt: skip
    return WorstCaseResult(best, per_restart, base, rho, norm, scaling, record)


def _weighted(values: Sequence[float], sizes: Sequence[int]) -> float:
    """The size-weighted mean; one value as it is (no rounding through v·n/n)."""
    if len(values) == 1:
        return values[0]
    return sum(v * n for v, n in zip(values, sizes, strict=True)) / sum(sizes)


class _Ascent:
    """Projected ascent on γ ↦ L(w + c ⊙ γ) over ‖γ‖_p ≤ ρ, on one group of batches."""

    def __init__(self, model, loss_fn, batches, tensors, scale, rho, norm, base) -> None:
        self.model, self.loss_fn, self.batches = model, loss_fn, batches
        self.tensors, self.scale, self.rho, self.norm = tensors, scale, rho, norm
        self.weights = [p.data for p in tensors]  # never written to: points are new tensors
        self.base = base  # L(w) on these batches

    def start(self, generator: torch.Generator) -> list[Tensor]:
        """A random γ in the ball: uniform in the ℓ∞ box, on the ℓ2 sphere. Drawn on the CPU
        generator, so the start depends on the seed alone."""
        if self.norm == "linf":
            draws = [torch.empty(w.shape, dtype=w.dtype) for w in self.weights]
            gamma = [d.uniform_(-1, 1, generator=generator).to(w.device)
                     for d, w in zip(draws, self.weights, strict=True)]  # fmt: skip
            torch._foreach_mul_(gamma, self.rho)
            return gamma
        gamma = draw_noise(self.weights, 1.0, generator)
        torch._foreach_mul_(gamma, self.rho / max(_l2(gamma), 1e-300))
        return gamma

    def increase(self, gamma: list[Tensor], steps: int) -> float:
        """The largest L(w + c ⊙ γ) − L(w) the ascent from ``gamma`` reaches."""
        best, grad = self._value_and_grad(gamma)
        step = 2 * self.rho  # the paper's initial step size
        for _ in range(steps):
            if best == math.inf:
                break  # the loss is unbounded in the ball: nothing is larger
            trial = torch._foreach_add(gamma, self._direction(grad), alpha=step)
            self._project_(trial)
            value, trial_grad = self._value_and_grad(trial)
            if value > best:  # also false for nan: a nan point is a failed step
                best, gamma, grad = value, trial, trial_grad
            else:
                step /= 2  # back to the best point with half the step
        return best - self.base

    def _direction(self, grad: list[Tensor]) -> list[Tensor]:
        """The steepest ascent direction of unit ℓp-dual size: ∇/‖∇‖₂ or sign(∇)."""
        if self.norm == "linf":
            return torch._foreach_sign(grad)
        return torch._foreach_div(grad, max(_l2(grad), 1e-300))

    def _project_(self, gamma: list[Tensor]) -> None:
        if self.norm == "linf":  # in γ the box is [−ρ, ρ] in every coordinate
            torch._foreach_clamp_min_(gamma, -self.rho)
            torch._foreach_clamp_max_(gamma, self.rho)
            return
        size = _l2(gamma)
        if size > self.rho:
            torch._foreach_mul_(gamma, self.rho / size)

    def _value_and_grad(self, gamma: list[Tensor]) -> tuple[float, list[Tensor]]:
        """L(w + c ⊙ γ) and its gradient in γ, c ⊙ ∇L, over every batch of the group."""
        if self.scale is None:
            point = torch._foreach_add(self.weights, gamma)
        else:
            point = torch._foreach_addcmul(self.weights, self.scale, gamma)
        old = swap_data(self.tensors, point)
        try:
            value = _loss_and_backward(self.model, self.loss_fn, self.batches)
            grad = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.tensors]
        finally:
            for p in self.tensors:
                p.grad = None
            swap_data(self.tensors, old)
        if self.scale is not None:
            torch._foreach_mul_(grad, self.scale)  # chain rule: ∂/∂γ = c ⊙ ∂/∂δ
        return value, grad


def _loss_and_backward(
    model: nn.Module, loss_fn: LossFn, batches: Sequence[tuple[Any, int]]
) -> float:
    """The size-weighted mean loss (summed as ``full_loss`` sums it), its gradient
    accumulated into ``.grad``."""
    total = sum(n for _, n in batches)
    value = 0.0
    for batch, n in batches:
        loss = loss_fn(model, batch)
        (loss * (n / total)).backward()
        value += float(loss.detach()) * n
    return value / total


def _l2(tensors: Sequence[Tensor]) -> float:
    """‖(t_1, ..., t_k)‖₂ of the whole list, in float64."""
    norms = torch._foreach_norm(tensors)
    return float(torch.linalg.vector_norm(torch.stack([n.double().cpu() for n in norms])))


def average_sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    data: Iterable[Any],
    *,
    rho: float,
    scaling: str = "adaptive",
    n_samples: int = 20,
    two_sided: bool = False,
    params: ParamSpec = None,
    seed: int = 0,
    batch_size: Callable[[Any], int] | None = None,
    progress: bool | None = None,
) -> AverageCaseResult:
    """E_{δ ~ N(0, ρ² diag(c²))} L(w+δ) − L(w): each weight moved by ρ·c_i in standard
    deviation, c = |w| (adaptive) or 1, no normalisation by the number of parameters. With
    c = 1 it is noise stability at σ = ρ.

    Args:
        rho: ρ >= 0. scaling: "adaptive" or "none".
        n_samples: draws (>= 1). two_sided: antithetic pairs ½[ΔL(δ) + ΔL(−δ)].
        Others as :func:`worst_case_sharpness`.
    """
    rho = _check_common(rho, scaling)
    n_samples = check_int("n_samples", n_samples, 1)
    chosen, batches = selected_batches(model, data, params, batch_size)
    tensors = [p for _, p in chosen]
    with measuring(model), torch.no_grad():
        base = full_loss(model, loss_fn, batches)
        weights = [p.data for p in tensors]
        scale = _scale(weights, scaling)
        std = rho if scale is None else torch._foreach_mul(scale, rho)
        noise = GaussianNoise(model, loss_fn, batches, tensors, base)
        samples = noise.increases(
            std, n_samples, make_generator(int(seed), "average_sharpness"), bool(two_sided),
            desc=f"average sharpness ρ={rho:g}", progress=progress,
        )  # fmt: skip
    record = record_for(
        "average_sharpness", batches, chosen, params, int(seed), rho=rho, scaling=scaling,
        n_samples=n_samples, two_sided=bool(two_sided),
    )  # fmt: skip
    mean, sd, stderr = sample_stats(samples)
    return AverageCaseResult(mean, sd, stderr, samples, base, rho, scaling, record)
