"""The wrapper every sharpness-aware optimizer derives from.

A wrapper owns no update rule: it moves the weights to perturbed points, collects
gradients there, puts the final gradient in ``p.grad`` at the *unperturbed* weights and
lets the base optimizer (SGD, Adam, ...) step. Wrapper and base share ``param_groups``
(the same list of the same dicts), so an LR scheduler attached to either drives both.

Gradient clipping. A caller's ``clip_grad_norm_`` between its own ``backward()`` and
``step(closure)`` does not clip the update: SAM, ASAM, SSAM and WSAM use such gradients as
g(W) only to choose the ascent direction e (WSAM also in g + α(g̃ − g)), and the base
step uses the fresh g(W + e); NSO uses them as g(W) with weight λ when ``lam > 0`` and
discards them when ``lam == 0``. Pass ``max_grad_norm`` instead: it clips (global L2 norm
over all parameters, ``torch.nn.utils.clip_grad_norm_`` semantics) the gradient the base
step uses, after ``grad_hook`` (which all-reduces it in distributed training).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from common.bn import disable_running_stats, enable_running_stats
from common.optim.options import MAX_GRAD_NORM, Option, check_options, frozen
from common.optim.perturb import clip_grad_norm_, swap_data

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
        defaults: the wrapper's per-group hyper-parameters, added to every param group
            that does not set them; checked (in every group) by ``OPTIONS``.
        max_grad_norm: clip the global L2 norm of the gradient the base step uses to this,
            after ``grad_hook``; None: no clipping.

    Subclasses declare every constructor option in ``OPTIONS`` (signature order) and
    check the ones that are not per group with :meth:`check_options`.
    """

    OPTIONS: ClassVar[Mapping[str, Option]] = frozen(max_grad_norm=MAX_GRAD_NORM)

    def __init__(
        self,
        params: Params | None,
        base_optimizer: type[Optimizer] | Optimizer,
        defaults: dict[str, Any],
        *,
        max_grad_norm: float | None = None,
        **base_kwargs: Any,
    ) -> None:
        self.check_options(max_grad_norm=max_grad_norm, **defaults)
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
        for i, group in enumerate(base.param_groups):
            for key, value in defaults.items():
                group.setdefault(key, value)
                self.OPTIONS[key].check(f"{key} (param group {i})", group[key])
        super().__init__(base.param_groups, {**base.defaults, **defaults})
        self.base_optimizer = base
        self.param_groups = base.param_groups  # one list of dicts for both optimizers
        self._stash: list[tuple[Tensor, Tensor]] = []  # (param, its original storage)
        # Called on the gradients the base optimizer is about to use, after W is restored:
        # the trainer all-reduces them here (one reduction per step) and clips them.
        self.grad_hook: GradHook | None = None
        self.max_grad_norm = max_grad_norm

    @classmethod
    def check_options(cls, **values: Any) -> None:
        """Raises ValueError for any value its ``OPTIONS`` declaration does not allow."""
        check_options(cls.OPTIONS, values)

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
        """Runs ``grad_hook`` on the update gradients (p.grad), ``extra`` tensors and
        :meth:`_shared_state`, then clips the update gradients to ``max_grad_norm`` (so
        clipping sees reduced ones)."""
        grads = [p.grad for p in self._params() if p.grad is not None]
        if self.grad_hook is not None:
            self.grad_hook(grads, [*extra, *self._shared_state()])
        if self.max_grad_norm is not None:
            clip_grad_norm_(grads, self.max_grad_norm)

    def _shared_state(self) -> list[Tensor]:
        """State built from each process's own gradients that must stay the same on every
        process (a checkpoint holds one process's): reduced with the update (none here)."""
        return []

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
