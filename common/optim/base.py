"""The wrapper every sharpness-aware optimizer derives from.

A wrapper owns no update rule: it moves the weights to perturbed points, collects
gradients there, puts the final gradient in ``p.grad`` at the *unperturbed* weights and
lets the base optimizer (SGD, Adam, ...) step. Wrapper and base share ``param_groups``
(the same list of the same dicts), so an LR scheduler attached to either drives both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from common.bn import disable_running_stats, enable_running_stats
from common.optim.perturb import swap_data

Closure = Callable[[], Any]
Params = Iterable[Tensor] | Iterable[dict[str, Any]] | nn.Module
# grad_hook(update_grads, extra): extra holds other gradient-derived tensors the update uses
# (WSAM's decoupled g̃ − g) that must be reduced together with the gradients.
GradHook = Callable[[list[Tensor], list[Tensor]], None]


class SharpnessAwareOptimizer(Optimizer):
    """Base class: wraps ``base_optimizer``, shares its ``param_groups``, swaps weights.

    Args:
        params: parameters or param-group dicts; or an ``nn.Module`` (its parameters),
            in which case ``step(closure)`` also keeps BatchNorm running statistics to the
            first gradient pass of each step; or ``None`` when ``base_optimizer`` is built.
        base_optimizer: an ``Optimizer`` class (built here with ``base_kwargs``) or instance.
        defaults: the wrapper's own hyper-parameters, added to every param group that does
            not set them.
    """

    def __init__(
        self,
        params: Params | None,
        base_optimizer: type[Optimizer] | Optimizer,
        defaults: dict[str, Any],
        **base_kwargs: Any,
    ) -> None:
        self.model = params if isinstance(params, nn.Module) else None
        if self.model is not None:
            params = [p for p in self.model.parameters() if p.requires_grad]
        if isinstance(base_optimizer, Optimizer):
            if base_kwargs:
                raise ValueError(
                    f"base_optimizer is already built, so {sorted(base_kwargs)} cannot be "
                    "applied to it: pass them when building it, or pass its class instead"
                )
            base = base_optimizer
            if params is not None and self.model is None:
                given = {id(p) for p in _flatten(params)}
                owned = {id(p) for g in base.param_groups for p in g["params"]}
                if given != owned:
                    raise ValueError(
                        "params differ from the parameters of the built base_optimizer: "
                        "pass params=None (or the same parameters) with a built base"
                    )
        elif isinstance(base_optimizer, type) and issubclass(base_optimizer, Optimizer):
            if params is None:
                raise ValueError("params is required when base_optimizer is a class")
            base = base_optimizer(params, **base_kwargs)
        else:
            raise ValueError(
                "base_optimizer must be a torch.optim.Optimizer subclass (e.g. torch.optim.SGD) "
                f"or an instance of one, got {base_optimizer!r}"
            )
        for group in base.param_groups:
            for key, value in defaults.items():
                group.setdefault(key, value)
        super().__init__(base.param_groups, {**base.defaults, **defaults})
        self.base_optimizer = base
        self.param_groups = base.param_groups  # one list of dicts for both optimizers
        self._stash: list[tuple[Tensor, Tensor]] = []  # (param, its original storage)
        # Called on the gradients the base optimizer is about to use, after W is restored:
        # the trainer all-reduces them here (one reduction per step) and clips them.
        self.grad_hook: GradHook | None = None

    # -- weights -----------------------------------------------------------------------
    def _swap_in(self, params: list[Tensor], perturbed: list[Tensor]) -> None:
        """Points ``params`` at ``perturbed``, remembering their original storages."""
        if self._stash:
            raise RuntimeError(
                "the weights are already perturbed: call second_step() before first_step() again"
            )
        self._stash = list(zip(params, swap_data(params, perturbed), strict=True))

    def _restore(self) -> None:
        """Puts back the original storages: bit-identical W, no arithmetic."""
        for p, original in self._stash:
            p.data = original
        self._stash = []

    @property
    def perturbed(self) -> bool:
        """True inside a step: between saving W and restoring it."""
        return bool(self._stash)

    # -- closures ------------------------------------------------------------------------
    def _params(self) -> list[Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def _has_grads(self) -> bool:
        return any(p.grad is not None for p in self._params())

    def _run_closure(self, closure: Closure, index: int) -> Any:
        """Calls the closure; with a model, BN statistics move on the first pass only."""
        if self.model is not None:
            if index == 0:
                enable_running_stats(self.model)
            else:
                disable_running_stats(self.model)
        with torch.enable_grad():
            return closure()

    def _guarded(self, run: Callable[[], Any]) -> Any:
        """Runs a whole step; on any error the weights and BN flags are put back."""
        try:
            return run()
        except BaseException:
            self._restore()
            raise
        finally:
            if self.model is not None:
                enable_running_stats(self.model)

    def _before_base_step(self, extra: Sequence[Tensor] = ()) -> None:
        """Runs ``grad_hook`` on the update gradients (p.grad) and ``extra`` tensors."""
        if self.grad_hook is not None:
            grads = [p.grad for p in self._params() if p.grad is not None]
            self.grad_hook(grads, list(extra))

    @staticmethod
    def _require_closure(closure: Closure | None, name: str) -> None:
        if closure is None:
            raise ValueError(
                f"{name}.step needs a closure that recomputes the loss and calls backward; "
                "or use first_step()/second_step() around your own backward passes"
            )

    # -- state -------------------------------------------------------------------------
    def _extra_state(self) -> dict[str, Any]:
        """Wrapper state that is not per parameter (schedules, RNG); for subclasses."""
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        del state

    def state_dict(self) -> dict[str, Any]:
        """Wrapper state (masks), shared groups, the base optimizer's state, schedules."""
        sd = super().state_dict()
        sd["base_optimizer"] = self.base_optimizer.state_dict()
        sd["wrapper"] = self._extra_state()
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        sd = dict(state_dict)
        missing = {"base_optimizer", "wrapper"} - sd.keys()
        if missing:
            raise ValueError(
                f"{type(self).__name__} state dict lacks {sorted(missing)}: it was not saved "
                "by this optimizer (a plain torch optimizer's state goes to .base_optimizer)"
            )
        base, extra = sd.pop("base_optimizer"), sd.pop("wrapper")
        super().load_state_dict(sd)
        self.base_optimizer.load_state_dict(base)
        self.base_optimizer.param_groups = self.param_groups  # re-share after both loads
        self._load_extra_state(extra)


def _flatten(params: Iterable[Any]) -> list[Tensor]:
    out: list[Tensor] = []
    for item in params:
        if isinstance(item, dict):
            out.extend(
                item["params"] if not isinstance(item["params"], Tensor) else [item["params"]]
            )
        else:
            out.append(item)
    return out
