"""NSO: noise stability optimization (Zhang, Li, Ju; TMLR 2024)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from common.optim.base import Closure, Params, SharpnessAwareOptimizer
from common.optim.options import MAX_GRAD_NORM, SEED, Option, frozen
from common.optim.perturb import DISTRIBUTIONS, sample_noise_, steal_grads
from common.rng import DeviceGenerators

SIGMA_SCHEDULES = ("constant", "linear", "exponential")
_EXP_START = 1e-5  # σ of the exponential schedule at step 0
_EXP_SIGMA = Option(float, "sigma of an exponential ramp from 1e-5", min=_EXP_START)


class NSO(SharpnessAwareOptimizer):
    """Minimises the smoothed loss E_U[L(W + U)] with antithetic noise pairs.

    One step on one batch, k = ``num_perturbs``, λ = ``lam``:
    G = λ·g(W) + (1−λ)/(2k)·Σᵢ [g(W+Uᵢ) + g(W−Uᵢ)]  (``use_neg``; else (1−λ)/k·Σᵢ g(W+Uᵢ)),
    then W is restored bit for bit and the base optimizer steps with G. U has absolute
    scale σ on every parameter. The clean pass g(W) runs only when λ > 0, so a step
    costs 2k gradient evaluations by default. Besides the weights it holds two
    parameter-sized buffers: the perturbed weights and the gradient sum (W − U is built
    from W + U in place; gradients are taken over, not copied, and averaged by lerp).

    Gradients present when ``step(closure)`` starts (a caller's own backward, clipped or
    not) are taken as g(W) when λ > 0, saving the clean pass; when λ = 0 (the default)
    g(W) is not part of G, so they are discarded and a warning says the caller's pass was
    wasted. Either way the perturbed gradients are fresh: clip G with ``max_grad_norm``.

    Args:
        params: parameters, param groups (``sigma`` may differ per group; 0 = no noise),
            or a model.
        base_optimizer: class (built with ``**base_kwargs``) or built instance.
        sigma: noise scale σ >= 0.
        num_perturbs: k >= 1 noise draws per step.
        use_neg: antithetic pairs W ± U (two-point estimate).
        lam: λ in [0, 1], weight of the clean gradient g(W).
        distribution: one of normal, laplace, uniform, binomial, cauchy (std σ; cauchy: scale σ).
        sigma_schedule: constant; linear 0 → σ; exponential 1e-5 → σ, over
            ``schedule_steps`` steps, then constant.
        schedule_steps: length of the σ ramp in optimizer steps.
        seed: seed of the optimizer's own noise generator (its state is in state_dict, so
            resumed runs draw the same noise). None: drawn from torch's global RNG.
        max_grad_norm: clip the global norm of G before the base step; None: off.
    """

    OPTIONS = frozen(
        sigma=Option(float, "NSO noise scale sigma (per group; 0: no noise)", min=0),
        num_perturbs=Option(int, "NSO noise draws k per step", min=1),
        use_neg=Option(bool, "NSO antithetic pairs W +- U"),
        lam=Option(float, "NSO weight lambda of the clean gradient g(W)", min=0, max=1),
        distribution=Option(str, "NSO noise distribution", choices=DISTRIBUTIONS),
        sigma_schedule=Option(str, "NSO sigma ramp", choices=SIGMA_SCHEDULES),
        schedule_steps=Option(int, "NSO sigma ramp length (optimizer steps)", min=1),
        seed=SEED,
        max_grad_norm=MAX_GRAD_NORM,
    )

    def __init__(
        self,
        params: Params | None,
        base_optimizer: type[Optimizer] | Optimizer = torch.optim.SGD,
        *,
        sigma: float = 0.01,
        num_perturbs: int = 1,
        use_neg: bool = True,
        lam: float = 0.0,
        distribution: str = "normal",
        sigma_schedule: str = "constant",
        schedule_steps: int = 1,
        seed: int | None = None,
        max_grad_norm: float | None = None,
        **base_kwargs: Any,
    ) -> None:
        self.check_options(
            num_perturbs=num_perturbs,
            use_neg=use_neg,
            lam=lam,
            distribution=distribution,
            sigma_schedule=sigma_schedule,
            schedule_steps=schedule_steps,
            seed=seed,
        )
        super().__init__(
            params, base_optimizer, {"sigma": sigma}, max_grad_norm=max_grad_norm, **base_kwargs
        )
        if sigma_schedule == "exponential":  # the ramp starts at 1e-5: σ below it is no ramp
            for group in self.param_groups:
                _EXP_SIGMA.check("sigma (exponential schedule)", group["sigma"])
        self.num_perturbs, self.use_neg, self.lam = num_perturbs, use_neg, lam
        self.distribution, self.sigma_schedule = distribution, sigma_schedule
        self.schedule_steps = schedule_steps
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        self.seed = seed
        self._generator = DeviceGenerators(seed, "nso")
        self.steps_done = 0  # position in the σ schedule
        self._grad_sum: list[Tensor | None] = []  # running weighted mean of the gradients
        self._weight = 0.0  # Σ update_weight so far in this step
        self._bufs: list[Tensor] | None = None  # the perturbed weights, reused within a step
        self._warned_discard = False  # the lam == 0 warning, once per optimizer

    # -- the manual protocol of the reference implementation ---------------------------
    @torch.no_grad()
    def store_gradients(
        self, zero_grad: bool = False, store_weights: bool = False, update_weight: float = 0.5
    ) -> None:
        """Adds ``update_weight``·p.grad to the gradient sum (``store_weights``: restart it
        and remember the current weights as W).

        The sum is kept as a running weighted mean, Σwᵢgᵢ / Σwᵢ, updated with one lerp per
        gradient (no separate scaling pass); ``second_step`` multiplies by Σwᵢ unless it
        is 1, as it is for the weights NSO uses. A missing gradient counts as zero.
        """
        params = self._params()
        if store_weights:
            self._restore()
            self._stash = [(p, p.data) for p in params]  # W stays in place until perturbed
            self._grad_sum, self._weight = [None] * len(params), 0.0
        elif not self._stash:
            raise RuntimeError(
                "store_gradients(store_weights=False) before the weights were stored"
            )
        total = self._weight + update_weight
        frac = update_weight / total if total else 1.0  # share of this gradient in the mean
        mix_to, mix_from, shrink, adopted = [], [], [], []
        for i, g in enumerate(steal_grads(params)):  # p.grad is emptied: zero_grad either way
            acc = self._grad_sum[i]
            if acc is not None and g is not None:
                mix_to.append(acc)
                mix_from.append(g)
            elif acc is not None:
                shrink.append(acc)
            elif g is not None:
                self._grad_sum[i] = g  # first gradient: adopt its buffer
                adopted.append(g)
        if mix_to:
            torch._foreach_lerp_(mix_to, mix_from, frac)
        if shrink:
            torch._foreach_mul_(shrink, 1.0 - frac)
        if adopted and self._weight:  # earlier passes counted these as zero
            torch._foreach_mul_(adopted, frac)
        self._weight = total
        del zero_grad  # gradients were taken over, which leaves them empty

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False, store_perturb: bool = True) -> None:
        """Moves to W + U with a fresh U (``store_perturb``) or to its mirror W − U."""
        if not self._stash:
            raise RuntimeError("NSO.first_step() before store_gradients(store_weights=True)")
        w = [orig for _, orig in self._stash]
        if store_perturb:
            first = self._bufs is None
            bufs = [torch.empty_like(x) for x in w] if first else self._bufs
            sigmas = self._current_sigmas()
            for buf, (p, _) in zip(bufs, self._stash, strict=True):
                sigma = sigmas[p]
                if sigma:
                    sample_noise_(buf, self.distribution, sigma, self._generator(buf.device))
                else:
                    buf.zero_()
            torch._foreach_add_(bufs, w)  # W + U
            if first:
                for (p, _), buf in zip(self._stash, bufs, strict=True):
                    p.data = buf  # W's own storage stays untouched until the restore
                self._bufs = bufs
        else:
            if self._bufs is None:
                raise RuntimeError("first_step(store_perturb=False) needs a preceding W + U step")
            # W − U = W + (W − (W + U)): mirrors the perturbation actually applied
            torch._foreach_lerp_(self._bufs, w, 2.0)
        if zero_grad:
            self.zero_grad()

    def _restore(self) -> None:
        super()._restore()
        self._bufs = None

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restores W exactly, puts the gradient sum in p.grad, steps the base optimizer."""
        if not self._stash:
            raise RuntimeError("NSO.second_step() before store_gradients(store_weights=True)")
        params = [p for p, _ in self._stash]
        self._restore()
        sums = [g for g in self._grad_sum if g is not None]
        if sums and abs(self._weight - 1.0) > 1e-12:  # mean -> weighted sum
            torch._foreach_mul_(sums, self._weight)
        for p, g in zip(params, self._grad_sum, strict=True):
            p.grad = g
        self._grad_sum = []
        self._before_base_step()
        self.base_optimizer.step()
        self.steps_done += 1
        if zero_grad:
            self.zero_grad()

    # -- the closure path ----------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Any:
        """Full NSO step. With λ > 0, gradients already in ``p.grad`` are taken as g(W).

        Returns the loss of the first closure call (at W if λ > 0, else at W + U₁).
        """
        self._require_closure(closure, "NSO")

        def run() -> Any:
            losses = []
            present = self._has_grads()
            given = self.lam > 0 and present  # the caller ran the clean pass
            if self.lam > 0 and not given:
                losses.append(self._run_closure(closure, 0))
            elif self.lam == 0 and present:
                self._warn_discard()
                self.zero_grad()  # g(W) is not part of the estimate
            self.store_gradients(store_weights=True, update_weight=self.lam)
            weight = (1.0 - self.lam) / (self.num_perturbs * (2 if self.use_neg else 1))
            for _ in range(self.num_perturbs if self.lam < 1 else 0):
                for mirror in (False, True) if self.use_neg else (False,):
                    self.first_step(store_perturb=not mirror)
                    losses.append(self._run_closure(closure, len(losses) + given))
                    self.store_gradients(update_weight=weight)
            self.second_step()
            return losses[0] if losses else None

        return self._guarded(run)

    def _warn_discard(self) -> None:
        if not self._warned_discard:
            self._warned_discard = True
            warnings.warn(
                "NSO.step(closure) found gradients in p.grad with lam=0: g(W) is not part of "
                "NSO's estimate, so they are discarded. If a backward pass of yours made them, "
                "that forward and backward pass was wasted, and clipping them had no effect "
                "(use max_grad_norm). Call zero_grad() before step(closure), or set lam > 0 "
                "to use them as g(W). (Warned once per optimizer.)",
                stacklevel=_caller_level(),
            )

    # -- noise, schedule, state --------------------------------------------------------
    def _current_sigmas(self) -> dict[Tensor, float]:
        t = min(self.steps_done / self.schedule_steps, 1.0)
        out = {}
        for group in self.param_groups:
            sigma = group["sigma"]
            if self.sigma_schedule == "linear":
                sigma = sigma * t
            elif self.sigma_schedule == "exponential" and sigma:
                sigma = _EXP_START * (sigma / _EXP_START) ** t
            out.update(dict.fromkeys(group["params"], sigma))
        return out

    def current_sigma(self) -> float:
        """σ of the first param group at the current schedule position."""
        return next(iter(self._current_sigmas().values()))

    def _extra_state(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "steps_done": self.steps_done,
            "generators": self._generator.states(),
        }

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.seed = int(state["seed"])
        self._generator.load(self.seed, state["generators"])
        self.steps_done = int(state["steps_done"])


def _caller_level() -> int:
    """``stacklevel`` that points a warning at the first frame outside this package and
    torch (the caller of ``step``), however many wrappers torch puts around ``step``."""
    skip = (str(Path(__file__).parent), str(Path(torch.__file__).parent))
    frame, level = sys._getframe(1), 1  # level 1: the function calling warnings.warn
    while frame is not None and frame.f_code.co_filename.startswith(skip):
        frame, level = frame.f_back, level + 1
    return level
