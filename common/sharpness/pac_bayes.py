"""PAC-Bayes flatness (Jiang et al. 2020, "Fantastic generalization measures"): the largest
noise scale σ the weights take before the expected loss rises by a target d.

    σ* = max { σ : E_u[L(w+u)] − L(w) <= d },   flatness = 1/σ*²  (lower is flatter)

    plain:            u ~ N(0, σ² I)
    magnitude-aware:  u_i ~ N(0, σ'² w_i² + ε²)   (ε = 1e-3 as in the paper)

The paper searches σ so that the training *accuracy* drops by d = 0.1; here the deviation
is of the loss (``loss_fn`` is the only definition a task gives), d = 0.1 by default. The
expectation is a Monte-Carlo mean over ``n_samples`` draws that are the same at every σ
(common random numbers, scaled by σ): the estimated increase is then a smooth, on a
quadratic exactly σ²-proportional, function of σ, and bisection on it is well posed.
Bisection runs on log σ between ``sigma_min`` and ``sigma_max`` until hi/lo <= 1 + tol.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from common.checks import check, check_int, check_number
from common.rng import generator as make_generator
from common.sharpness.core import (
    LossFn,
    ParamSpec,
    Record,
    full_loss,
    measuring,
    record_for,
    selected_batches,
)
from common.sharpness.noise import GaussianNoise, sample_stats

#: Jiang et al.'s ε of the magnitude-aware noise
MAGNITUDE_EPS = 1e-3


@dataclass
class PacBayesResult:
    """The largest σ whose estimated loss increase is at most ``target`` (to ``tol``)."""

    sigma: float  # the largest σ evaluated with increase <= target: σ* ∈ [sigma, sigma_upper]
    sigma_upper: float | None  # the smallest σ evaluated above target (None: none was)
    flatness: float  # 1 / sigma²
    status: str  # "found", "above_max" (even sigma_max is below target), "below_min"
    target: float
    increase: float  # the estimated increase at ``sigma``
    increase_std: float  # its draws' standard deviation
    base_loss: float
    magnitude_aware: bool
    trace: list[dict[str, float]] = field(default_factory=list)  # every σ tried, in order
    record: Record | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pac_bayes_sigma(
    model: nn.Module,
    loss_fn: LossFn,
    data: Iterable[Any],
    *,
    target: float = 0.1,
    magnitude_aware: bool = False,
    eps: float = MAGNITUDE_EPS,
    n_samples: int = 10,
    two_sided: bool = False,
    sigma_min: float = 1e-4,
    sigma_max: float = 10.0,
    tol: float = 0.01,
    params: ParamSpec = None,
    seed: int = 0,
    batch_size: Callable[[Any], int] | None = None,
    progress: bool | None = None,
) -> PacBayesResult:
    """Bisection on log σ for E_u[L(w+u)] − L(w) = ``target`` (see the module docstring).

    Costs 2 + ⌈log2(ln(sigma_max/sigma_min) / ln(1+tol))⌉ evaluations of ``n_samples``
    draws (13 at the defaults), each a forward pass over ``data`` (two when two-sided).
    Runs in eval mode; the weights are restored exactly afterwards.

    Args:
        target: the loss increase d > 0 that defines σ*.
        magnitude_aware: u_i ~ N(0, σ² w_i² + eps²) instead of N(0, σ²).
        eps: the magnitude-aware noise floor ε >= 0.
        n_samples: draws per σ. two_sided: antithetic pairs ½[ΔL(u) + ΔL(−u)], an unbiased
            estimate of the same expectation (the noise is symmetric) with less variance.
        sigma_min, sigma_max: the bracket, 0 < sigma_min < sigma_max.
        tol: stop once sigma_upper / sigma <= 1 + tol.
        params, seed, batch_size, progress: as noise stability's.

    Raises:
        OptionError (a ValueError): a bad option. FloatingPointError: L(w) not finite.
    """
    _check(target, eps, sigma_min, sigma_max, tol)
    n_samples = check_int("n_samples", n_samples, 1)
    chosen, batches = selected_batches(model, data, params, batch_size)
    tensors = [p for _, p in chosen]
    with measuring(model), torch.no_grad():
        base = full_loss(model, loss_fn, batches)
        search = _Search(GaussianNoise(model, loss_fn, batches, tensors, base), target)
        search.configure(magnitude_aware, eps, n_samples, bool(two_sided), int(seed), progress)
        result = search.run(sigma_min, sigma_max, tol)
    result.base_loss, result.magnitude_aware = base, bool(magnitude_aware)
    result.record = record_for(
        "pac_bayes", batches, chosen, params, int(seed), target=target,
        magnitude_aware=bool(magnitude_aware), eps=eps if magnitude_aware else None,
        n_samples=n_samples, two_sided=bool(two_sided), sigma_min=sigma_min,
        sigma_max=sigma_max, tol=tol, evaluations=len(result.trace),
    )  # fmt: skip
    return result


def _check(target: float, eps: float, sigma_min: float, sigma_max: float, tol: float) -> None:
    check_number("target", target, 0.0)
    check("target", target, target > 0, "a number > 0")
    check_number("eps", eps, 0.0)
    check_number("sigma_min", sigma_min, 0.0)
    check("sigma_min", sigma_min, sigma_min > 0, "a number > 0")
    check_number("sigma_max", sigma_max, 0.0)
    check("sigma_max", sigma_max, sigma_max > sigma_min, f"a number > sigma_min={sigma_min}")
    check_number("tol", tol, 0.0)
    check("tol", tol, tol > 0, "a number > 0")


class _Search:
    """The bisection; ``increase(σ)`` evaluates one σ with the same draws every time."""

    def __init__(self, noise: GaussianNoise, target: float) -> None:
        self.noise, self.target = noise, target
        self.trace: list[dict[str, float]] = []

    def configure(self, magnitude_aware, eps, n_samples, two_sided, seed, progress) -> None:
        self.n_samples, self.two_sided, self.seed = n_samples, two_sided, seed
        self.eps, self.progress = eps, progress
        # w² once: the magnitude-aware std sqrt(σ² w² + ε²) is rebuilt from it per σ
        w = self.noise.weights
        self.squares = torch._foreach_mul(w, w) if magnitude_aware else None

    def std(self, sigma: float) -> float | list[Tensor]:
        if self.squares is None:
            return sigma
        var = torch._foreach_mul(self.squares, sigma**2)
        torch._foreach_add_(var, self.eps**2)
        return torch._foreach_sqrt(var)

    def below(self, sigma: float) -> bool:
        """Is the estimated increase at σ at most the target? (nan counts as above.)"""
        samples = self.noise.increases(
            self.std(sigma), self.n_samples, make_generator(self.seed, "pac_bayes"),
            self.two_sided, desc=f"PAC-Bayes σ={sigma:.3g}", progress=self.progress,
        )  # fmt: skip
        mean, std, _ = sample_stats(samples)
        self.trace.append({"sigma": sigma, "increase": mean, "std": std})
        return mean <= self.target

    def run(self, lo: float, hi: float, tol: float) -> PacBayesResult:
        if self.below(hi):
            return self._result(hi, None, "above_max")
        if not self.below(lo):
            return self._result(lo, lo, "below_min")
        while hi / lo > 1 + tol:
            mid = math.sqrt(lo * hi)  # the midpoint of log σ
            lo, hi = (mid, hi) if self.below(mid) else (lo, mid)
        return self._result(lo, hi, "found")

    def _result(self, sigma: float, upper: float | None, status: str) -> PacBayesResult:
        at = next(t for t in reversed(self.trace) if t["sigma"] == sigma)
        return PacBayesResult(
            sigma=sigma, sigma_upper=upper, flatness=1.0 / sigma**2, status=status,
            target=self.target, increase=at["increase"], increase_std=at["std"],
            base_loss=math.nan, magnitude_aware=self.squares is not None, trace=self.trace,
        )  # fmt: skip
