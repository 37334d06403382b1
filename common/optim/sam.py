"""SAM (Foret et al., 2021) and ASAM (Kwon et al., 2021)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from common.optim.base import Closure, Params, SharpnessAwareOptimizer
from common.optim.options import MAX_GRAD_NORM, Option, frozen
from common.optim.perturb import NORM_EPS, ascent_directions, ascent_point, global_norm

#: Options of every SAM-family optimizer (SAM, ASAM, SSAM-F, SSAM-D, WSAM); per group.
RHO = Option(float, "SAM neighbourhood radius rho (0: the base optimizer)", min=0)
ADAPTIVE = Option(bool, "ASAM's scale-invariant neighbourhood (T = |W| + eta)")
ETA = Option(float, "ASAM offset eta added to |W|", min=0)


class SAM(SharpnessAwareOptimizer):
    """Sharpness-aware minimisation around any base optimizer.

    One step: g = g(W); e = ρ·T²⊙g / (‖T⊙g‖ + ε) with the norm global over all groups
    (T = 1 for SAM, T = |W| + η for ASAM); g̃ = g(W + e) on the same batch; W restored
    bit for bit; base step with g̃.

    Clipping: gradients a caller clips before ``step(closure)`` are g(W), which only
    chooses the direction of e; the base step uses the fresh g(W + e). Use
    ``max_grad_norm`` to clip the gradient of the update.

    Args:
        params: parameters, param groups (``rho``, ``adaptive``, ``eta`` may differ per
            group, e.g. ``adaptive=False`` for biases as in the official ASAM), or a model.
        base_optimizer: class (built with ``**base_kwargs``) or built instance.
        rho: neighbourhood radius ρ >= 0; ρ = 0 is the base optimizer exactly.
        adaptive: ASAM's scale-invariant neighbourhood.
        eta: η added to |W| in ASAM (official ASAM 0.01; davda54/sam 0).
        max_grad_norm: clip the global norm of g(W + e) before the base step; None: off.
    """

    OPTIONS = frozen(rho=RHO, adaptive=ADAPTIVE, eta=ETA, max_grad_norm=MAX_GRAD_NORM)

    def __init__(
        self,
        params: Params | None,
        base_optimizer: type[Optimizer] | Optimizer = torch.optim.SGD,
        *,
        rho: float = 0.05,
        adaptive: bool = False,
        eta: float = 0.0,
        max_grad_norm: float | None = None,
        _group_defaults: dict[str, Any] | None = None,  # a subclass's per-group options
        **base_kwargs: Any,
    ) -> None:
        defaults = {"rho": rho, "adaptive": adaptive, "eta": eta, **(_group_defaults or {})}
        super().__init__(
            params, base_optimizer, defaults, max_grad_norm=max_grad_norm, **base_kwargs
        )

    def _masks(self, params: list[Tensor]) -> list[Tensor] | None:
        """Per-parameter 0/1 masks on e (sparse SAM); None keeps every coordinate."""
        del params
        return None

    def _ascent(self) -> list[tuple[dict, list[Tensor], list[Tensor]]]:
        """Per group: (group, params with a gradient, their new ascent points W + e)."""
        per_group = []
        for group in self.param_groups:
            ps = [p for p in group["params"] if p.grad is not None]
            if ps:
                gs = [p.grad for p in ps]
                v, a, b = ascent_directions(ps, gs, group["adaptive"], group["eta"])
                per_group.append((group, ps, v, a, b))
        norm = float(global_norm([t for *_, v, _, _ in per_group for t in v]))
        points = []
        for group, ps, _, a, b in per_group:
            scale = group["rho"] / (norm + NORM_EPS)
            points.append((group, ps, ascent_point(ps, a, b, scale, self._masks(ps))))
        return points

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Climbs from W to W + e(W) using the gradients in ``p.grad``."""
        points = self._ascent()
        self._swap_in(
            [p for _, ps, _ in points for p in ps], [w for _, _, ws in points for w in ws]
        )
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Returns to W exactly and lets the base optimizer step with g(W + e)."""
        self._restore()
        self._before_base_step()
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> Any:
        """Full SAM step. Gradients already in ``p.grad`` are taken as g(W).

        Returns the loss of the first closure call (at W), or of the only call (at W + e)
        when the gradients at W were already present.
        """
        self._require_closure(closure, type(self).__name__)

        def run() -> Any:
            loss = None if self._has_grads() else self._run_closure(closure, 0)
            self.first_step(zero_grad=True)
            perturbed_loss = self._run_closure(closure, 1)
            self.second_step()
            return perturbed_loss if loss is None else loss

        return self._guarded(run)
