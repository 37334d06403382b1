"""WSAM (Yue et al., KDD 2023): sharpness as a weighted regulariser."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from common.optim.base import Params
from common.optim.options import MAX_GRAD_NORM, Option, frozen
from common.optim.perturb import clip_grad_norm_, steal_grads
from common.optim.sam import ADAPTIVE, ETA, RHO, SAM


class WSAM(SAM):
    """Weighted SAM: base step on g + α(g̃ − g), α = γ/(1−γ), g = g(W), g̃ = g(W + e).

    With ``decouple=True`` (the paper's recommendation) the base optimizer steps on g and
    the sharpness term is applied afterwards as W ← W − lr·α·(g̃ − g), so momentum and
    adaptive scaling act on the loss gradient only. γ = 0 is the base optimizer;
    ``decouple=False`` with γ = 0.5 (α = 1) is SAM.

    Clipping: gradients present when ``step(closure)`` starts are taken as g(W), so a
    caller's clipping reaches g but not g̃ = g(W + e), which a fresh pass computes.
    ``max_norm`` (the paper's) clips g and g̃ separately, before they are combined;
    ``max_grad_norm`` clips the gradient the base step uses: g + α(g̃ − g), or g alone
    with ``decouple`` (the sharpness term α(g̃ − g) applied afterwards is not clipped).

    Args:
        params: parameters, param groups, or a model (as in the reference's
            ``WeightedSAM(model, base_optimizer, ...)``).
        base_optimizer: class (built with ``**base_kwargs``) or built instance.
        rho, adaptive, eta: the perturbation e, as in :class:`SAM`.
        gamma: weight γ in [0, 1) of the sharpness term.
        decouple: apply the sharpness term outside the base optimizer.
        max_norm: clip the global norm of g and of g̃ to this (magnitude only); None: off.
        max_grad_norm: clip the global norm of the base step's gradient; None: off.
    """

    OPTIONS = frozen(
        rho=RHO,
        gamma=Option(float, "WSAM weight gamma of the sharpness term", min=0, lt=1),
        adaptive=ADAPTIVE,
        eta=ETA,
        decouple=Option(bool, "WSAM: apply the sharpness term outside the base optimizer"),
        max_norm=Option(float, "WSAM: clip the norms of g and g~ separately", min=0, nullable=True),
        max_grad_norm=MAX_GRAD_NORM,
    )

    def __init__(
        self,
        params: Params | None,
        base_optimizer: type[Optimizer] | Optimizer = torch.optim.SGD,
        *,
        rho: float = 0.05,
        gamma: float = 0.9,
        adaptive: bool = False,
        eta: float = 0.0,
        decouple: bool = True,
        max_norm: float | None = None,
        max_grad_norm: float | None = None,
        **base_kwargs: Any,
    ) -> None:
        self.check_options(decouple=decouple, max_norm=max_norm)
        super().__init__(
            params,
            base_optimizer,
            rho=rho,
            adaptive=adaptive,
            eta=eta,
            max_grad_norm=max_grad_norm,
            _group_defaults={"gamma": gamma},  # per group, checked there
            **base_kwargs,
        )
        self.decouple = decouple
        self.max_norm = max_norm
        self._grad_at_w: dict[Tensor, Tensor] = {}  # param -> g(W), between the two steps

    def _clip(self) -> None:
        if self.max_norm is not None:
            clip_grad_norm_([p.grad for p in self._params() if p.grad is not None], self.max_norm)

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Climbs to W + e and keeps g(W) (clipped) for the second step."""
        self._clip()  # clipping scales g only, so e (which is normalised) is unchanged
        super().first_step(zero_grad=False)
        params = self._params()
        stolen = steal_grads(params)  # g(W) moves out of p.grad, no copy
        self._grad_at_w = {p: g for p, g in zip(params, stolen, strict=True) if g is not None}
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restores W, combines g and g̃, steps the base optimizer."""
        if not self.perturbed:
            raise RuntimeError("WSAM.second_step() called without first_step()")
        self._restore()
        self._clip()
        grad_at_w, self._grad_at_w = self._grad_at_w, {}
        sharpness = []
        for group in self.param_groups:
            # parameters with both g and g̃; any other keeps whatever gradient it has
            ps = [p for p in group["params"] if p.grad is not None and p in grad_at_w]
            if not ps:
                continue
            g, g_tilde = [grad_at_w[p] for p in ps], [p.grad for p in ps]
            if self.decouple:
                torch._foreach_sub_(g_tilde, g)  # g̃ − g, in g̃'s buffer
                sharpness.append((group, ps, g_tilde))
            else:
                torch._foreach_lerp_(g, g_tilde, _alpha(group))  # g + α(g̃ − g), in g's buffer
            for p, grad in zip(ps, g, strict=True):
                p.grad = grad
        self._before_base_step([d for _, _, diff in sharpness for d in diff])
        self.base_optimizer.step()
        for group, ps, diff in sharpness:
            if _alpha(group):  # lr read after the base step: the scheduler's current value
                torch._foreach_add_(ps, diff, alpha=-group["lr"] * _alpha(group))
        if zero_grad:
            self.zero_grad()


def _alpha(group: dict) -> float:
    return group["gamma"] / (1.0 - group["gamma"])
