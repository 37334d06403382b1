"""GSAM (Zhuang et al., ICLR 2022): surrogate gap guided sharpness-aware minimisation.

Compared with kozistr/pytorch_optimizer 4.1.0 ``GSAM`` (a port of the first author's
PyTorch code): the same ascent and decomposition; there the radius comes from a separate
``ProportionScheduler`` stepped by the caller, here from each group's current LR at the
step; the unit vectors there carry ε = 1e-12 in two denominators (‖g_f‖‖g_h‖ + ε and
‖g_h‖ + ε), here the projection coefficient is ⟨g_f, g_h⟩/(‖g_h‖ + ε)², the authors'
JAX form up to ε; their global norm is rounded to float32, here it keeps float64 weights'
precision; their W + e − e leaves W within rounding, here W is restored bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from common.optim.base import Params
from common.optim.options import MAX_GRAD_NORM, Option, frozen
from common.optim.perturb import NORM_EPS, global_norm, norm_dtype, steal_grads
from common.optim.sam import ADAPTIVE, ETA, RHO, SAM

RHO_MIN = Option(float, "GSAM radius at lr_min (None: rho at every LR)", min=0, nullable=True)
LR_MAX = Option(
    float,
    "GSAM: the LR at which the radius is rho (None: each group's LR when built)",
    min=0,
    nullable=True,
)
LR_MIN = Option(float, "GSAM: the LR at which the radius is rho_min", min=0)
GSAM_ALPHA = Option(float, "GSAM weight alpha of the surrogate-gap ascent", min=0, max=1)


def global_dot(xs: Sequence[Tensor], ys: Sequence[Tensor]) -> float:
    """⟨concat(xs), concat(ys)⟩, accumulated in at least float32 (:func:`norm_dtype`)."""
    if not xs:
        return 0.0
    dtype = norm_dtype([*xs, *ys])
    parts = [
        torch.dot(x.reshape(-1).to(dtype), y.reshape(-1).to(dtype))
        for x, y in zip(xs, ys, strict=True)
    ]
    device = parts[0].device
    return float(torch.stack([p.to(device) for p in parts]).sum())  # one host sync


class GSAM(SAM):
    """Surrogate gap guided SAM around any base optimizer.

    One step, with g_f = g(W): e = ρ_t·g_f/(‖g_f‖ + ε) (ASAM's T⊙ scaling with
    ``adaptive``), g_h = g(W + e) on the same batch, W restored bit for bit; g_f is split
    into its parts parallel and orthogonal to g_h, g_f⊥ = g_f − ⟨g_f, g_h⟩/‖g_h‖²·g_h, and
    the base optimizer steps on d = g_h − α·g_f⊥: descent on the perturbed loss f_p and
    ascent on f orthogonally to it, which lowers the surrogate gap h = f_p − f without
    changing the descent on f_p (Zhuang et al., Algorithm 1). Norms and ⟨·,·⟩ are global
    over all groups (parameters with both g_f and g_h); α is per group.

    The radius follows the LR: ρ_t = ρ_max − (ρ_max − ρ_min)·(lr_max − lr_t)/
    (lr_max − lr_min), per group, with lr_t the group's LR at the step, ρ_max = ``rho``;
    ρ_t = ρ_max when ``rho_min`` is None or lr_max = lr_min. Written from the ρ_max end,
    so a constant LR gives ρ_max exactly. LRs outside [lr_min, lr_max] extrapolate, as in
    the authors' code. α = 0 with a constant radius is SAM bit for bit.

    Distributed: g_f, g_h and d are each rank's own (as in the authors' code); d is what
    ``grad_hook`` all-reduces. ``max_grad_norm`` clips d.

    Args:
        params: parameters, param groups (every option below but ``max_grad_norm`` may
            differ per group), or a model.
        base_optimizer: class (built with ``**base_kwargs``) or built instance.
        rho: ρ_max, the radius at lr_max.
        rho_min: the radius at lr_min; None: ``rho`` at every LR.
        lr_max: the LR at which the radius is ``rho``; None: the group's LR when GSAM is
            built (a scheduler's ``initial_lr`` if one is already attached). Give the peak
            for schedules that rise above it (OneCycleLR). Kept in the param group.
        lr_min: the LR at which the radius is ``rho_min`` (a cosine schedule's floor).
        gsam_alpha: α in [0, 1] (pytorch_optimizer's default 0.4).
        adaptive, eta: ASAM's scale-invariant ascent, as in :class:`SAM`.
        max_grad_norm: clip the global norm of d before the base step; None: off.
    """

    OPTIONS = frozen(
        rho=RHO,
        rho_min=RHO_MIN,
        lr_max=LR_MAX,
        lr_min=LR_MIN,
        gsam_alpha=GSAM_ALPHA,
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
        rho_min: float | None = None,
        lr_max: float | None = None,
        lr_min: float = 0.0,
        gsam_alpha: float = 0.4,
        adaptive: bool = False,
        eta: float = 0.0,
        max_grad_norm: float | None = None,
        **base_kwargs: Any,
    ) -> None:
        per_group = {"rho_min": rho_min, "lr_max": lr_max, "lr_min": lr_min}
        super().__init__(
            params,
            base_optimizer,
            rho=rho,
            adaptive=adaptive,
            eta=eta,
            max_grad_norm=max_grad_norm,
            _group_defaults={**per_group, "gsam_alpha": gsam_alpha},  # checked per group
            **base_kwargs,
        )
        for i, group in enumerate(self.param_groups):
            _settle_lr_max(group, i)
        self._grad_at_w: dict[Tensor, Tensor] = {}  # param -> g_f, between the two steps
        self._rho_zero = False  # every group's ρ_t was 0 at the last ascent

    @staticmethod
    def rho_at(group: dict[str, Any]) -> float:
        """ρ_t of ``group`` at its current LR."""
        rho, rho_min = group["rho"], group["rho_min"]
        lr_max, lr_min = _settle_lr_max(group), group["lr_min"]
        if rho_min is None or lr_max == lr_min:
            return rho
        return rho - (rho - rho_min) * (lr_max - group["lr"]) / (lr_max - lr_min)

    def _ascent(self) -> list[tuple[dict, list[Tensor], list[Tensor]]]:
        # SAM's ascent with ρ_t in place of ρ: the groups' rho is swapped in for the call
        rhos = [group["rho"] for group in self.param_groups]
        try:
            for group in self.param_groups:
                group["rho"] = self.rho_at(group)
            self._rho_zero = all(group["rho"] == 0 for group in self.param_groups)
            return super()._ascent()
        finally:
            for group, rho in zip(self.param_groups, rhos, strict=True):
                group["rho"] = rho

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Climbs to W + e with ρ_t and keeps g_f = g(W) for the second step."""
        super().first_step(zero_grad=False)
        params = self._params()
        stolen = steal_grads(params)  # g_f moves out of p.grad, no copy
        self._grad_at_w = {p: g for p, g in zip(params, stolen, strict=True) if g is not None}
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restores W, puts d = g_h − α·g_f⊥ in ``p.grad``, steps the base optimizer."""
        if not self.perturbed:
            raise RuntimeError("GSAM.second_step() called without first_step()")
        self._restore()
        grad_at_w, self._grad_at_w = self._grad_at_w, {}
        per_group = []
        for group in self.param_groups:
            # parameters with both g_f and g_h; any other keeps whatever gradient it has
            ps = [p for p in group["params"] if p.grad is not None and p in grad_at_w]
            per_group.append((group, [grad_at_w[p] for p in ps], [p.grad for p in ps]))
        # α = 0: SAM; ρ_t = 0: g_h = g_f, whose g_f⊥ is rounding noise: the base step
        if not self._rho_zero and any(group["gsam_alpha"] and g_f for group, g_f, _ in per_group):
            g_f = [g for _, gs, _ in per_group for g in gs]
            g_h = [g for _, _, gs in per_group for g in gs]
            coef = global_dot(g_f, g_h) / (float(global_norm(g_h)) + NORM_EPS) ** 2
            for group, g_f, g_h in per_group:
                if group["gsam_alpha"] and g_f:
                    torch._foreach_add_(g_f, g_h, alpha=-coef)  # g_f⊥, in g_f's buffer
                    torch._foreach_add_(g_h, g_f, alpha=-group["gsam_alpha"])  # d, in p.grad
        self._before_base_step()
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()


def _settle_lr_max(group: dict[str, Any], index: int | None = None) -> float:
    """The group's lr_max, fixed at its first use (a group added later: its LR then)."""
    if group["lr_max"] is None:
        group["lr_max"] = float(group.get("initial_lr", group["lr"]))
    if group["lr_min"] > group["lr_max"]:
        where = "" if index is None else f" (param group {index})"
        raise ValueError(
            f"lr_min{where} must be <= lr_max {group['lr_max']} (the radius maps "
            f"[lr_min, lr_max] to [rho_min, rho]), got {group['lr_min']}"
        )
    return group["lr_max"]
