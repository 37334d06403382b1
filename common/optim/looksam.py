"""LookSAM (Liu et al., CVPR 2022): SAM every k steps, its sharpness direction reused between.

Compared with kozistr/pytorch_optimizer 4.1.0 ``LookSAM``: the same schedule (a full
step at steps 0, k, 2k, ...) and update; there g_v, its projection and the ‖g‖/‖g_v‖
scale are computed per parameter tensor, here over the whole model as the paper writes
them (the two agree for a model with one parameter tensor); there ‖g_v‖ + 1e-8, here
‖g_v‖ + ε with the library's ε = 1e-12; their global norm is rounded to float32, here it
keeps float64 weights' precision; there the caller computes g(W) before every step and
the closure recomputes it on the steps between, here gradients already present are g(W)
and a step between recomputations calls the closure once (none if g(W) is present).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from common.optim.base import Closure, Params
from common.optim.gsam import global_dot
from common.optim.options import MAX_GRAD_NORM, Option, frozen
from common.optim.perturb import NORM_EPS, global_norm, steal_grads
from common.optim.sam import ADAPTIVE, ETA, RHO, SAM

INTERVAL = Option(int, "LookSAM: a full SAM step every k-th step (1: SAM)", min=1)
LOOKSAM_ALPHA = Option(float, "LookSAM weight alpha of the reused direction g_v", min=0, max=1)


class LookSAM(SAM):
    """SAM at every k-th step; in between, its orthogonal gradient component is reused.

    Steps 0, k, 2k, ... are SAM steps (g = g(W), e = ρ·g/(‖g‖ + ε), g_s = g(W + e), base
    step on g_s) that also keep g_v = g_s − ⟨g, g_s⟩/‖g‖²·g, the part of g_s orthogonal
    to g. Every other step computes g = g(W) only (one closure call) and the base
    optimizer steps on g + α·(‖g‖/‖g_v‖)·g_v (Liu et al., Algorithm 1). Norms and ⟨·,·⟩
    are global over all groups (parameters with both gradients; on the steps between,
    parameters with g and a stored g_v); ρ and α are per group. k = 1 is SAM bit for
    bit; α = 0 is MosaicML Composer's "SAM every k steps" (plain base steps between).
    The default k = 5 is the paper's (Composer's default is 1, i.e. SAM): a step costs
    1 + 1/k = 1.2 gradient passes on average (two on steps 0, k, 2k, ..., one between).

    State: g_v per parameter (``state[p]["gv"]``) and the step counter (the wrapper's
    state) are in ``state_dict``, so a run resumed between recomputations continues bit
    for bit. Distributed: g_v is all-reduced with g_s (``grad_hook``'s ``extra``), so every
    rank reuses the same g_v; the combined gradient of the steps between is each rank's
    own and is all-reduced before the base step. ``max_grad_norm`` clips the update.

    Manual use: ``first_step`` climbs only when :attr:`recomputes` (it raises otherwise);
    ``second_step`` after the gradients of the step (g_s, or g between recomputations).

    Args:
        params: parameters, param groups (``rho``, ``looksam_alpha``, ``adaptive``,
            ``eta`` may differ per group), or a model.
        base_optimizer: class (built with ``**base_kwargs``) or built instance.
        rho: SAM radius ρ of the full steps.
        interval: k, the period of the full SAM steps (5, the paper's; 1: SAM).
        looksam_alpha: α in [0, 1] (the paper's 0.7).
        adaptive, eta: ASAM's scale-invariant ascent, as in :class:`SAM`.
        max_grad_norm: clip the global norm of the update gradient; None: off.
    """

    OPTIONS = frozen(
        rho=RHO,
        interval=INTERVAL,
        looksam_alpha=LOOKSAM_ALPHA,
        adaptive=ADAPTIVE,
        eta=ETA,
        max_grad_norm=MAX_GRAD_NORM,
    )

    def __init__(
        self,
        params: Params | None,
        base_optimizer: type[Optimizer] | Optimizer = torch.optim.SGD,
        *,
        rho: float = 0.05,
        interval: int = 5,
        looksam_alpha: float = 0.7,
        adaptive: bool = False,
        eta: float = 0.0,
        max_grad_norm: float | None = None,
        **base_kwargs: Any,
    ) -> None:
        self.check_options(interval=interval)
        super().__init__(
            params,
            base_optimizer,
            rho=rho,
            adaptive=adaptive,
            eta=eta,
            max_grad_norm=max_grad_norm,
            _group_defaults={"looksam_alpha": looksam_alpha},  # per group, checked there
            **base_kwargs,
        )
        self.interval = interval
        self.steps_done = 0
        self._grad_at_w: dict[Tensor, Tensor] = {}  # param -> g(W), inside a full step

    @property
    def recomputes(self) -> bool:
        """True when the coming step is a full SAM step that recomputes g_v."""
        return self.steps_done % self.interval == 0

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Climbs to W + e (a full step only) and keeps g(W) for the second step."""
        if not self.recomputes:
            raise RuntimeError(
                f"LookSAM step {self.steps_done} reuses g_v (interval {self.interval}): "
                "call second_step() after the gradients at W, or step(closure)"
            )
        super().first_step(zero_grad=False)
        params = self._params()
        stolen = steal_grads(params)  # g(W) moves out of p.grad, no copy
        self._grad_at_w = {p: g for p, g in zip(params, stolen, strict=True) if g is not None}
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """A full step: restores W, keeps g_v, steps on g_s. Otherwise: steps on
        g + α(‖g‖/‖g_v‖)g_v with the gradients g = g(W) in ``p.grad``."""
        if self.recomputes:
            if not self.perturbed:
                raise RuntimeError("LookSAM.second_step() of a full step without first_step()")
            self._restore()
            extra = self._keep_gv()
        else:
            self._reuse_gv()
            extra = []
        self._before_base_step(extra)
        self.base_optimizer.step()
        self.steps_done += 1
        if zero_grad:
            self.zero_grad()

    def _keep_gv(self) -> list[Tensor]:
        """state[p]["gv"] = g_s − ⟨g, g_s⟩/‖g‖²·g, built in g's buffer; returns the g_v."""
        grad_at_w, self._grad_at_w = self._grad_at_w, {}
        for p in self._params():
            self.state[p].pop("gv", None)  # a parameter without both gradients has none
        if all(group["rho"] == 0 for group in self.param_groups):
            return []  # g_s = g: g_v is rounding noise that ‖g‖/‖g_v‖ would blow up
        ps = [p for p in self._params() if p.grad is not None and p in grad_at_w]
        g, g_s = [grad_at_w[p] for p in ps], [p.grad for p in ps]
        coef = global_dot(g, g_s) / (float(global_norm(g)) + NORM_EPS) ** 2
        torch._foreach_mul_(g, -coef)
        torch._foreach_add_(g, g_s)
        for p, gv in zip(ps, g, strict=True):
            self.state[p]["gv"] = gv
        return g

    def _reuse_gv(self) -> None:
        """p.grad += α·(‖g‖/‖g_v‖)·g_v, the norms over the parameters that have both."""
        per_group = [
            (group, [p for p in group["params"] if p.grad is not None and "gv" in self.state[p]])
            for group in self.param_groups
        ]
        if not any(group["looksam_alpha"] and ps for group, ps in per_group):
            return  # α = 0: the base step on g
        g = [p.grad for _, ps in per_group for p in ps]
        gv = [self.state[p]["gv"] for _, ps in per_group for p in ps]
        ratio = float(global_norm(g)) / (float(global_norm(gv)) + NORM_EPS)
        for group, ps in per_group:
            if group["looksam_alpha"] and ps:
                torch._foreach_add_(
                    [p.grad for p in ps],
                    [self.state[p]["gv"] for p in ps],
                    alpha=group["looksam_alpha"] * ratio,
                )

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Any:
        """A full SAM step (two closure calls) every ``interval`` steps, else one call.

        Gradients already in ``p.grad`` are g(W), saving a call. Returns the loss of the
        first closure call, or of the only one (at W + e on a full step with g(W) given),
        or None (a step between recomputations with g(W) given).
        """
        if self.recomputes:
            return super().step(closure)
        self._require_closure(closure, type(self).__name__)

        def run() -> Any:
            loss = None if self._has_grads() else self._run_closure(closure, 0)
            self.second_step()
            return loss

        return self._guarded(run)

    def _extra_state(self) -> dict[str, Any]:
        return {"steps_done": self.steps_done}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.steps_done = int(state["steps_done"])
