"""F-SAM: friendly sharpness-aware minimisation (Li, Zhou, He, Cheng, Huang; CVPR 2024)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from common.optim.base import Params
from common.optim.options import MAX_GRAD_NORM, Option, frozen
from common.optim.perturb import NORM_EPS, ascent_directions, ascent_point, global_norm
from common.optim.sam import ADAPTIVE, ETA, RHO, SAM


class FSAM(SAM):
    """SAM that ascends along the batch-specific part of the gradient only.

    One step on one batch, g = g(W), λ = ``ema_decay``, σ = ``ema_weight`` (the paper's
    Algorithm 1, "Friendly Sharpness-Aware Minimization", arXiv 2403.12350):
    m ← λ·m + (1−λ)·g, with m = 0 before the first step (the EMA of the batch gradients,
    the estimate of the full gradient); d = g − σ·m (the stochastic-noise component);
    e = ρ·T²⊙d / (‖T⊙d‖ + ε) with the norm global over all groups (T = 1; ASAM's
    T = |W| + η with ``adaptive``); g̃ = g(W + e) on the same batch; W restored bit for bit;
    base step with g̃. σ = 0 is SAM exactly; ρ = 0 is the base optimizer.

    m is kept per parameter in ``state[p]["ema"]`` (in the parameter's dtype), so it is in
    ``state_dict`` and a resumed run continues bit for bit. It moves in ``first_step``:
    a step skipped after its first pass (an overflow of g(W + e) under GradScaler) has
    still counted that step's g(W). Under DDP each process moves m by its own g(W) (the
    ascent uses each process's own gradient, as in SAM), and ``grad_hook`` then averages
    m over the processes with the update gradient (one all-reduce): after every step m is
    the EMA of the mean gradient over the global batch, the same on every process, so
    the checkpoint (rank 0's) resumes all of them bit for bit.

    The authors' code (github.com/nblt/F-SAM) and ``pytorch_optimizer.FriendlySAM``, which
    follows it, differ from the paper in two ways: d = g − σ·m_{t−1} is formed with the
    EMA before this step's g enters it, and the EMA starts at the first gradient
    (m₁ = g₁) instead of 0. For σ = 1, the paper's d = λ·(g − m_{t−1}) is parallel to the
    code's g − m_{t−1}, so the two agree to rounding once both start from m = 0 (tested);
    from the code's start m₁ = g₁ the second and later steps differ, and for σ ≠ 1 the
    directions differ. This class implements the paper.

    Args:
        params: parameters, param groups (``rho``, ``adaptive``, ``eta``, ``ema_decay``,
            ``ema_weight`` may differ per group), or a model.
        base_optimizer: class (built with ``**base_kwargs``) or built instance.
        rho: neighbourhood radius ρ >= 0.
        ema_decay: λ in [0, 1), decay of the gradient EMA m (the code's ``lmbda``;
            0.9 there, 0.95 and 0.6 in the authors' CIFAR-100 runs).
        ema_weight: σ >= 0, weight of m removed from g (the code's ``sigma``; 1 in the
            paper's experiments); 0 is SAM.
        adaptive, eta: ASAM's scale-invariant neighbourhood, as in :class:`SAM`.
        max_grad_norm: clip the global norm of g(W + e) before the base step; None: off.
    """

    OPTIONS = frozen(
        rho=RHO,
        ema_decay=Option(float, "F-SAM decay lambda of the gradient EMA m", min=0, lt=1),
        ema_weight=Option(float, "F-SAM weight sigma of m in d = g - sigma*m (0: SAM)", min=0),
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
        ema_decay: float = 0.9,
        ema_weight: float = 1.0,
        adaptive: bool = False,
        eta: float = 0.0,
        max_grad_norm: float | None = None,
        **base_kwargs: Any,
    ) -> None:
        super().__init__(
            params,
            base_optimizer,
            rho=rho,
            adaptive=adaptive,
            eta=eta,
            max_grad_norm=max_grad_norm,
            _group_defaults={"ema_decay": ema_decay, "ema_weight": ema_weight},  # checked there
            **base_kwargs,
        )

    def _directions(self, group: dict, params: list[Tensor]) -> list[Tensor]:
        """Moves the EMA of ``params`` by their gradients; returns d = g − σ·m."""
        grads = [p.grad for p in params]
        emas = []
        for p in params:
            state = self.state[p]
            if "ema" not in state:
                state["ema"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            emas.append(state["ema"])
        torch._foreach_lerp_(emas, grads, 1.0 - group["ema_decay"])  # λ·m + (1−λ)·g
        if group["ema_weight"] == 0:
            return grads  # SAM: no arithmetic on g, so σ = 0 is SAM bit for bit
        return torch._foreach_add(grads, emas, alpha=-group["ema_weight"])

    def _shared_state(self) -> list[Tensor]:
        states = [self.state.get(p, {}) for p in self._params()]  # the same order everywhere
        return [state["ema"] for state in states if "ema" in state]

    def _ascent(self) -> list[tuple[dict, list[Tensor], list[Tensor]]]:
        """SAM's ascent with d in place of g: per group (group, params, W + e)."""
        per_group = []
        for group in self.param_groups:
            ps = [p for p in group["params"] if p.grad is not None]
            if ps:
                ds = self._directions(group, ps)
                v, a, b = ascent_directions(ps, ds, group["adaptive"], group["eta"])
                per_group.append((group, ps, v, a, b))
        norm = float(global_norm([t for *_, v, _, _ in per_group for t in v]))
        points = []
        for group, ps, _, a, b in per_group:
            scale = group["rho"] / (norm + NORM_EPS)
            points.append((group, ps, ascent_point(ps, a, b, scale)))
        return points

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Moves the EMA by g(W), then climbs from W to W + e along d."""
        if self.perturbed:  # before the EMA moves: a refused call changes nothing
            raise RuntimeError(
                "the weights are already perturbed: call second_step() before first_step() again"
            )
        super().first_step(zero_grad=zero_grad)
