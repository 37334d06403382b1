"""Noise stability: how far the full-data loss rises, on average, under Gaussian weight noise.

    NS(σ) = E_U[L(W+U)] − L(W),   U ~ N(0, σ²I) on the selected parameters only.

To second order NS(σ) = (σ²/2)·tr(H): the linear term gᵀU has zero mean. The two-sided
(antithetic) sample ½[(L(W+U) − L(W)) + (L(W−U) − L(W))] cancels every odd-order term draw
by draw, so at small σ it has far lower variance than the one-sided L(W+U) − L(W).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, overload

import torch
from torch import Tensor, nn
from tqdm import tqdm

from common.checks import check_int
from common.optim.perturb import sample_noise_, swap_data
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


@dataclass
class NoiseStabilityResult:
    """One σ's estimate of E_U[L(W+U)] − L(W) from ``len(samples)`` draws.

    A perturbed loss that is not finite is kept as is (inf is a legitimate "very unstable"
    outcome), so ``mean`` may be inf and ``std`` nan; ``to_dict`` then holds them as floats.
    """

    mean: float
    std: float  # sample standard deviation (ddof=1; 0 for a single draw)
    stderr: float  # std / √n: the standard error of ``mean``
    samples: list[float]
    base_loss: float  # L(W)
    sigma: float
    record: Record

    def to_dict(self) -> dict[str, Any]:
        """Plain floats, lists and dicts (the record included), ready for ``json.dump``."""
        return asdict(self)


@overload
def noise_stability(
    model: nn.Module,
    loss_fn: LossFn,
    data: Iterable[Any],
    *,
    sigma: float,
    n_samples: int = ...,
    two_sided: bool = ...,
    params: ParamSpec = ...,
    seed: int = ...,
    batch_size: Callable[[Any], int] | None = ...,
    progress: bool | None = ...,
) -> NoiseStabilityResult: ...


@overload
def noise_stability(
    model: nn.Module,
    loss_fn: LossFn,
    data: Iterable[Any],
    *,
    sigma: Sequence[float],
    n_samples: int = ...,
    two_sided: bool = ...,
    params: ParamSpec = ...,
    seed: int = ...,
    batch_size: Callable[[Any], int] | None = ...,
    progress: bool | None = ...,
) -> list[NoiseStabilityResult]: ...


def noise_stability(
    model: nn.Module,
    loss_fn: LossFn,
    data: Iterable[Any],
    *,
    sigma: float | Sequence[float],
    n_samples: int = 20,
    two_sided: bool = False,
    params: ParamSpec = None,
    seed: int = 0,
    batch_size: Callable[[Any], int] | None = None,
    progress: bool | None = None,
) -> NoiseStabilityResult | list[NoiseStabilityResult]:
    """Monte-Carlo estimate of E_U[L(W+U)] − L(W), U ~ N(0, σ²I), on the full data.

    Runs in eval mode; afterwards (also after an error) the weights, modes and gradients
    are exactly as they were. The noise comes from a private CPU generator seeded with
    ``seed``: results do not depend on (nor disturb) the global RNG or the device.

    Args:
        model: the network; only its ``params`` selection is perturbed.
        loss_fn: ``loss_fn(model, batch)`` -> mean loss over the batch.
        data: re-iterable of batches; L is their size-weighted mean loss.
        sigma: noise standard deviation (finite, >= 0), or a list of them: then one result
            per σ, each drawn from a generator seeded with ``seed`` (common random numbers,
            and the same result as a call with that σ alone).
        n_samples: number of draws U_i (>= 1).
        two_sided: antithetic samples ½[(L(W+U_i) − L(W)) + (L(W−U_i) − L(W))].
        params: which parameters get noise: None/"all", "reference" (Conv/Linear weights,
            as the original code), a list of names, or a predicate (see ``select_params``).
        seed: seed of the noise generator.
        batch_size: ``batch_size(batch) -> int``, when the size cannot be read from dim 0
            of the batch's first tensor.
        progress: tqdm bar over the draws; None shows it only on a terminal.

    Returns:
        A :class:`NoiseStabilityResult`, or a list of them when ``sigma`` is a list.

    Raises:
        ValueError: a bad ``sigma`` or ``n_samples``, or empty ``data``.
        FloatingPointError: L(W) itself is not finite (perturbed losses may be: see
            :class:`NoiseStabilityResult`).
    """
    many = isinstance(sigma, (list, tuple))
    sigmas = [_check_sigma(s) for s in (sigma if many else [sigma])]
    if not sigmas:
        raise ValueError("sigma is an empty list: give at least one noise scale >= 0")
    n_samples, seed = check_int("n_samples", n_samples, 1), int(seed)

    chosen, batches = selected_batches(model, data, params, batch_size)
    tensors = [p for _, p in chosen]

    results = []
    with measuring(model), torch.no_grad():
        base = full_loss(model, loss_fn, batches)  # raises FloatingPointError if not finite
        noise = GaussianNoise(model, loss_fn, batches, tensors, base)
        for s in sigmas:
            samples = noise.increases(
                s, n_samples, make_generator(seed, "noise_stability"), bool(two_sided),
                desc=f"noise stability σ={s:g}", progress=progress,
            )  # fmt: skip
            record = record_for(
                "noise_stability",
                batches,
                chosen,
                params,
                seed,
                sigma=s,
                n_samples=n_samples,
                two_sided=bool(two_sided),
            )
            results.append(_result(samples, base, s, record))
    return results if many else results[0]


def _check_sigma(sigma: Any) -> float:
    try:
        value = float(sigma)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"sigma must be a finite number >= 0 (in [0, inf)), got {sigma!r}")
    return value


def draw_noise(weights: Sequence[Tensor], sigma: float, generator: torch.Generator) -> list[Tensor]:
    """U ~ N(0, σ²I), one new tensor per weight, on the weight's device and dtype.

    Drawn on the CPU generator parameter by parameter, so U depends on the seed alone:
    not on the device, the data or the global RNG.
    """
    return [
        sample_noise_(torch.empty(w.shape, dtype=w.dtype), "normal", sigma, generator).to(w.device)
        for w in weights
    ]


def loss_at(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Sequence[tuple[Any, int]],
    params: Sequence[nn.Parameter],
    point: Sequence[Tensor],
) -> float:
    """Full-data loss with each ``p.data`` pointed at ``point``; the storages are put back
    afterwards, also on error, so the original weights are never written to."""
    old = swap_data(params, point)
    try:
        # a perturbed loss of inf (the noise threw the model off a cliff) is a
        # measurement, not an error
        return full_loss(model, loss_fn, batches, check=False)
    finally:
        swap_data(params, old)


def _result(
    samples: list[float], base: float, sigma: float, record: Record
) -> NoiseStabilityResult:
    mean, std, stderr = sample_stats(samples)
    return NoiseStabilityResult(
        mean=mean,
        std=std,
        stderr=stderr,
        samples=[float(x) for x in samples],
        base_loss=base,
        sigma=sigma,
        record=record,
    )


class GaussianNoise:
    """L(w+u) − L(w) for u = z ⊙ s, z ~ N(0, I) drawn as noise stability draws it (on a
    private CPU generator), s a scalar or one tensor per weight. Used inside
    :func:`measuring` and ``torch.no_grad()``; the weights are never written to."""

    def __init__(self, model, loss_fn, batches, tensors, base: float) -> None:
        self.model, self.loss_fn, self.batches = model, loss_fn, batches
        self.tensors, self.base = tensors, base
        self.weights = [p.data for p in tensors]

    def increases(
        self,
        std: float | Sequence[Tensor],
        n_samples: int,
        generator: torch.Generator,
        two_sided: bool,
        *,
        desc: str = "",
        progress: bool | None = None,
    ) -> list[float]:
        """``n_samples`` draws of the increase (antithetic pairs when ``two_sided``)."""
        out = []
        for _ in tqdm(range(n_samples), desc=desc, disable=progress_off(progress), leave=False):
            u = draw_noise(self.weights, 1.0, generator)
            torch._foreach_mul_(u, std)
            if not two_sided:
                torch._foreach_add_(u, self.weights)  # w + u in u's buffer
                out.append(self._at(u))
                continue
            up = self._at(torch._foreach_add(self.weights, u))
            torch._foreach_neg_(u)
            torch._foreach_add_(u, self.weights)  # w − u
            out.append(0.5 * (up + self._at(u)))
        return out

    def _at(self, point: list[Tensor]) -> float:
        return loss_at(self.model, self.loss_fn, self.batches, self.tensors, point) - self.base


def sample_stats(samples: Sequence[float]) -> tuple[float, float, float]:
    """Mean, sample standard deviation (ddof 1; 0 for one) and standard error; an inf
    sample gives an inf mean and a nan spread, as noise stability does."""
    t = torch.tensor(list(samples), dtype=torch.float64)
    std = float(t.std(correction=1)) if len(samples) > 1 else 0.0
    return float(t.mean()), std, std / math.sqrt(len(samples))
