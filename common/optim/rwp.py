"""RWP, m-RWP and (m-)ARWP: random weight perturbation (Li et al., 2022; TMLR 2024)."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from common.optim.base import Closure, Params, SharpnessAwareOptimizer
from common.optim.nso import _caller_level
from common.optim.options import MAX_GRAD_NORM, SEED, Option, frozen
from common.optim.perturb import norm_dtype, sample_noise_, steal_grads
from common.rng import DeviceGenerators


def filter_norms(weight: Tensor) -> Tensor:
    """‖W_i‖ of every output filter i (W[i, ...]), shaped to broadcast against ``weight``;
    a parameter of at most one dimension (bias, norm scale) is one filter: its whole norm.

    Accumulated in at least float32 (:func:`~common.optim.perturb.norm_dtype`).
    """
    dtype = norm_dtype([weight])
    if weight.dim() <= 1:
        return torch.linalg.vector_norm(weight, dtype=dtype)
    rows = torch.linalg.vector_norm(weight.reshape(weight.shape[0], -1), dim=1, dtype=dtype)
    return rows.reshape(-1, *([1] * (weight.dim() - 1)))


def filter_noise_(buf: Tensor, weight: Tensor, scale: float, generator: torch.Generator) -> Tensor:
    """Fills ``buf`` in place with ε, ε_i ~ N(0, scale²·‖W_i‖²) on every filter i of
    ``weight`` (see :func:`filter_norms`): one standard-normal draw, scaled per filter."""
    sample_noise_(buf, "normal", 1.0, generator)
    return buf.mul_((scale * filter_norms(weight)).to(buf.dtype))


def filter_sums(x: Tensor) -> Tensor:
    """F_i = Σ x[i, ...] over every output filter i of a tensor of at least two dimensions,
    shaped to broadcast against ``x``; a tensor of at most one dimension is returned as it
    is (each element its own row: the authors' ARWP views a bias of n elements as n rows).
    """
    if x.dim() <= 1:
        return x
    return x.reshape(x.shape[0], -1).sum(dim=1).reshape(-1, *([1] * (x.dim() - 1)))


class RWP(SharpnessAwareOptimizer):
    """Descends the mixed loss (1−λ)·L(W) + λ·E_ε L(W + ε) with filter-wise Gaussian ε.

    One step on one batch, σ = ``noise_scale``, λ = ``mix``: one draw ε, on every output
    filter i of every weight ε_i ~ N(0, σ²·‖W_i‖²·I) (W_i = W[i, ...]; a bias or other
    parameter of at most one dimension is scaled by its whole norm, as in the authors'
    code); G = (1−λ)·g(W) + λ·g(W + ε), both on the same batch; W restored bit for bit;
    base step with G. λ = 1 is RWP ("Efficient Generalization Improvement Guided by Random
    Weight Perturbation", 2022), one gradient pass; 0 < λ < 1 is m-RWP
    ("Revisiting Random Weight Perturbation for Efficiently Improving Generalization",
    TMLR 2024), two passes; λ = 0 and σ = 0 are the base optimizer exactly.

    ARWP (η = ``adapt`` > 0, the same TMLR paper; m-ARWP with 0 < λ < 1) shrinks the noise
    where past gradients were large. Every parameter keeps s ← β·s + g̃² (β =
    ``adapt_decay``, g̃ = g(W + ε) of the step before mixing and clipping: a decaying sum,
    not a mean, so its first step stores g̃²). Once a parameter has s, ε_i is divided by
    √(1 + η·F_i), F_i = Σ s over filter i; a parameter of at most one dimension has
    F = s elementwise (while its std stays σ·‖W‖ of its whole norm). This is the authors'
    code (github.com/nblt/mARWP: ``train_marwp.py`` and the ``ARWP`` class of ``utils.py``
    agree), including no shrinking on the first step. s is ``state[p]["grad_sq"]`` in the
    parameter's dtype, so a resumed run is bit-identical; a parameter without g̃ keeps its
    s. η = 0 keeps no s and is RWP bit for bit. Distributed, s is all-reduced with G
    (``grad_hook``'s ``extra``): every rank keeps the same s and draws the same ε, with
    g̃² the mean of the ranks' own.

    How it differs from :class:`~common.optim.NSO`: ε is relative and filter-wise (std
    σ‖W_i‖, following each filter's scale as it changes; with η > 0 also shrunk where the
    gradients were large), where NSO's U has one absolute std σ; ε is one-sided (W + ε
    only) and drawn once per step, where NSO by default averages antithetic pairs W ± U;
    and G keeps the clean gradient with weight 1 − λ (λ = ``mix`` weights the perturbed
    one, NSO's ``lam`` the clean one). Where every filter has norm 1 the draws coincide:
    RWP(mix=λ) is NSO(use_neg=False, num_perturbs=1, lam=1−λ) from the same generator
    state, bit for bit in float64.

    The authors' m-RWP script takes g(W) and g(W + ε) on two consecutive batches (and
    trains twice the epochs); ``step(closure)`` takes both on the closure's batch, as every
    optimizer here does.

    Gradients present when ``step(closure)`` starts (a caller's own backward) are taken as
    g(W) when λ < 1, saving the clean pass; when λ = 1 g(W) is not part of G, so they are
    discarded with a warning. The gradient at W + ε is always fresh: clip G with
    ``max_grad_norm``.

    Args:
        params: parameters, param groups (``noise_scale``, ``adapt`` and ``adapt_decay``
            may differ per group; ``noise_scale`` 0 = no noise), or a model.
        base_optimizer: class (built with ``**base_kwargs``) or built instance.
        noise_scale: σ >= 0, the noise std relative to each filter's norm (the authors'
            ``sigma``; 0.01 by default there, 0.015 in their CIFAR-100 m-RWP runs).
        mix: λ in [0, 1], weight of g(W + ε) in G (0.5 in the authors' m-RWP runs).
        adapt: η >= 0, ARWP's shrinking strength (the authors' ``eta``; 0 here: RWP. The
            registry's ``arwp`` sets 1, their code's default; their CIFAR-100 scripts
            use 0.1).
        adapt_decay: β in [0, 1), decay of the squared-gradient sum s (the authors'
            ``beta``: 0.9 by default, 0.99 in their CIFAR-100 scripts).
        seed: seed of the optimizer's own noise generator (its state is in state_dict, so
            resumed runs draw the same noise). None: drawn from torch's global RNG.
        max_grad_norm: clip the global norm of G before the base step; None: off.
    """

    OPTIONS = frozen(
        noise_scale=Option(
            float, "RWP noise std sigma relative to each filter's norm (per group)", min=0
        ),
        mix=Option(float, "RWP weight lambda of g(W + eps) in the update (1: RWP)", min=0, max=1),
        adapt=Option(
            float,
            "ARWP eta: noise divided by sqrt(1 + eta * filter sum of squared gradients) "
            "(0: RWP; per group)",
            min=0,
        ),
        adapt_decay=Option(
            float,
            "ARWP decay beta of the squared-gradient sum s = beta*s + g^2 (per group)",
            min=0,
            lt=1,
        ),
        seed=SEED,
        max_grad_norm=MAX_GRAD_NORM,
    )

    def __init__(
        self,
        params: Params | None,
        base_optimizer: type[Optimizer] | Optimizer = torch.optim.SGD,
        *,
        noise_scale: float = 0.01,
        mix: float = 0.5,
        adapt: float = 0.0,
        adapt_decay: float = 0.9,
        seed: int | None = None,
        max_grad_norm: float | None = None,
        **base_kwargs: Any,
    ) -> None:
        self.check_options(mix=mix, seed=seed)
        super().__init__(
            params,
            base_optimizer,
            {"noise_scale": noise_scale, "adapt": adapt, "adapt_decay": adapt_decay},
            max_grad_norm=max_grad_norm,
            **base_kwargs,
        )
        self.mix = mix
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        self.seed = seed
        self._generator = DeviceGenerators(seed, "rwp")
        self._clean: list[Tensor | None] | None = None  # g(W) between the two steps
        self._warned_discard = False  # the mix == 1 warning, once per optimizer

    # -- the two halves of a step ------------------------------------------------------
    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Keeps the gradients in ``p.grad`` as g(W) (drops them when λ = 1) and moves to
        W + ε with a fresh draw (ARWP: shrunk by the squared-gradient history)."""
        if self._clean is not None:
            raise RuntimeError(
                "the weights are already perturbed: call second_step() before first_step() again"
            )
        params = self._params()
        clean = steal_grads(params)  # p.grad is emptied either way
        perturbed, noise = [], []
        for group in self.param_groups:  # every parameter, in order: the same draws each run
            if not group["noise_scale"]:
                continue
            shrunk, sums = [], []
            for p in group["params"]:
                buf = torch.empty_like(p)
                filter_noise_(buf, p, group["noise_scale"], self._generator(p.device))
                perturbed.append(p)
                noise.append(buf)
                if group["adapt"] and "grad_sq" in self.state[p]:
                    shrunk.append(buf)
                    sums.append(filter_sums(self.state[p]["grad_sq"]))
            if shrunk:  # ε_i / √(1 + η·F_i), F_i = Σ s over filter i
                divisors = torch._foreach_mul(sums, group["adapt"])  # new: s stays as it is
                torch._foreach_add_(divisors, 1.0)
                torch._foreach_sqrt_(divisors)
                torch._foreach_div_(shrunk, divisors)
        if noise:
            torch._foreach_add_(noise, perturbed)  # W + ε in new buffers: W is never touched
        self._swap_in(perturbed, noise)
        self._clean = clean if self.mix < 1 else [None] * len(params)
        del zero_grad  # gradients were taken over, which leaves them empty

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restores W exactly, puts G = (1−λ)·g(W) + λ·g(W + ε) in p.grad, steps the base
        optimizer (ARWP: first adds g(W + ε)² to s). A gradient missing from one pass
        counts as zero."""
        clean = self._clean
        if clean is None:
            raise RuntimeError("RWP.second_step() called without first_step()")
        self._restore()  # (forgets self._clean)
        history = self._accumulate_grad_sq()  # from g̃, before it is mixed and clipped
        params = self._params()
        mix_to, mix_from, only_clean, only_noisy = [], [], [], []
        for p, g in zip(params, clean, strict=True):
            if g is not None and p.grad is not None:
                mix_to.append(g)
                mix_from.append(p.grad)
                p.grad = g
            elif g is not None:
                only_clean.append(g)
                p.grad = g
            elif p.grad is not None:
                only_noisy.append(p.grad)
        if mix_to:
            torch._foreach_lerp_(mix_to, mix_from, self.mix)  # g + λ(g̃ − g), in g's buffer
        if only_clean:
            torch._foreach_mul_(only_clean, 1.0 - self.mix)
        if only_noisy and self.mix != 1:
            torch._foreach_mul_(only_noisy, self.mix)
        self._before_base_step(history)  # s is averaged over ranks with G
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()

    def _accumulate_grad_sq(self) -> list[Tensor]:
        """ARWP: s ← β·s + g̃² (s = g̃² at first) for every parameter with g̃ = p.grad in a
        group with η > 0; returns those s, in parameter order."""
        history = []
        for group in self.param_groups:
            if not group["adapt"]:
                continue
            ps = [p for p in group["params"] if p.grad is not None]
            old = [p for p in ps if "grad_sq" in self.state[p]]
            new = [p for p in ps if "grad_sq" not in self.state[p]]
            if old:
                sums, grads = [self.state[p]["grad_sq"] for p in old], [p.grad for p in old]
                torch._foreach_mul_(sums, group["adapt_decay"])
                torch._foreach_addcmul_(sums, grads, grads)
            if new:
                grads = [p.grad for p in new]
                for p, s in zip(new, torch._foreach_mul(grads, grads), strict=True):
                    self.state[p]["grad_sq"] = s
            history += [self.state[p]["grad_sq"] for p in ps]
        return history

    def _restore(self) -> None:
        super()._restore()
        self._clean = None

    # -- the closure path ----------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Any:
        """Full step. With λ < 1, gradients already in ``p.grad`` are taken as g(W).

        Returns the loss of the first closure call (at W when λ < 1, else at W + ε).
        """
        self._require_closure(closure, "RWP")

        def run() -> Any:
            losses = []
            present = self._has_grads()
            if self.mix < 1 and not present:
                losses.append(self._run_closure(closure, 0))
            elif self.mix == 1 and present:
                self._warn_discard()
            if self.mix == 0:  # G = g(W): no perturbed pass
                self._before_base_step()
                self.base_optimizer.step()
                return losses[0] if losses else None
            self.first_step()
            # the first pass of the step moves BatchNorm statistics: W's when λ < 1
            losses.append(self._run_closure(closure, 0 if self.mix == 1 else 1))
            self.second_step()
            return losses[0]

        return self._guarded(run)

    def _warn_discard(self) -> None:
        if not self._warned_discard:
            self._warned_discard = True
            warnings.warn(
                "RWP.step(closure) found gradients in p.grad with mix=1: g(W) is not part of "
                "RWP's update, so they are discarded. If a backward pass of yours made them, "
                "that forward and backward pass was wasted, and clipping them had no effect "
                "(use max_grad_norm). Call zero_grad() before step(closure), or set mix < 1 "
                "to use them as g(W). (Warned once per optimizer.)",
                stacklevel=_caller_level(),
            )

    # -- noise and state -----------------------------------------------------------------
    def _extra_state(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "generators": self._generator.states(),
        }

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.seed = int(state["seed"])
        self._generator.load(self.seed, state["generators"])
