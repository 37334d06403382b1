"""The optimizer registry and ``create_optimizer``."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from common.optim.base import Params
from common.optim.nso import NSO
from common.optim.sam import SAM
from common.optim.ssam import SSAMD, SSAMF
from common.optim.wsam import WSAM

BASES: Mapping[str, type[Optimizer]] = MappingProxyType(
    {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
)


def _options(cls: type, *, skip: tuple[str, ...] = ()) -> Mapping[str, Any]:
    """The keyword options of ``cls.__init__`` after (params, base_optimizer), with defaults."""
    sig = inspect.signature(cls.__init__)
    out = {
        name: p.default
        for name, p in sig.parameters.items()
        if name not in ("self", "params", "base_optimizer", *skip)
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    return MappingProxyType(out)


@dataclass(frozen=True)
class OptimInfo:
    """What the registry knows about one optimizer name.

    Attributes:
        name: registry key.
        cls: the class ``create_optimizer`` builds.
        description: one line for tables and ``--help``.
        options: the optimizer's own options and their defaults (base-optimizer options
            such as lr or momentum are not listed here).
        preset: options fixed by the name (``asam`` = SAM with ``adaptive=True``).
        grad_evals: gradient evaluations (closure calls) one step costs, given the options.
        sharpness_aware: wraps a base optimizer (``base=`` picks it).
    """

    name: str
    cls: type[Optimizer]
    description: str
    options: Mapping[str, Any]
    grad_evals: Callable[[Mapping[str, Any]], int]
    preset: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    sharpness_aware: bool = True

    def resolved(self, **cfg: Any) -> dict[str, Any]:
        """Options with defaults, preset and ``cfg`` applied (only this optimizer's own)."""
        own = {k: v for k, v in cfg.items() if k in self.options}
        return {**self.options, **self.preset, **own}

    def evals_per_step(self, **cfg: Any) -> int:
        """Closure calls per ``step(closure)`` with these options."""
        return self.grad_evals(self.resolved(**cfg))


def _nso_evals(o: Mapping[str, Any]) -> int:
    per = 2 if o["use_neg"] else 1
    return (1 if o["lam"] > 0 else 0) + (per * o["num_perturbs"] if o["lam"] < 1 else 0)


def _base_info(name: str, cls: type[Optimizer]) -> OptimInfo:
    return OptimInfo(
        name=name,
        cls=cls,
        description=f"torch.optim.{cls.__name__} (no perturbation)",
        options=MappingProxyType({}),
        grad_evals=lambda o: 1,
        sharpness_aware=False,
    )


_SAM_OPTIONS = _options(SAM, skip=("extra_defaults",))

OPTIMIZERS: Mapping[str, OptimInfo] = MappingProxyType(
    {
        **{name: _base_info(name, cls) for name, cls in BASES.items()},
        "sam": OptimInfo("sam", SAM, "SAM, Foret et al. 2021", _SAM_OPTIONS, lambda o: 2),
        "asam": OptimInfo(
            "asam",
            SAM,
            "adaptive SAM, Kwon et al. 2021 (T = |W| + eta)",
            _SAM_OPTIONS,
            lambda o: 2,
            preset=MappingProxyType({"adaptive": True, "eta": 0.01, "rho": 0.5}),
        ),
        "ssamf": OptimInfo(
            "ssamf", SSAMF, "Fisher sparse SAM, Mi et al. 2022", _options(SSAMF), lambda o: 2
        ),
        "ssamd": OptimInfo(
            "ssamd", SSAMD, "dynamic sparse SAM, Mi et al. 2022", _options(SSAMD), lambda o: 2
        ),
        "wsam": OptimInfo(
            "wsam", WSAM, "weighted SAM, Yue et al. 2023", _options(WSAM), lambda o: 2
        ),
        "nso": OptimInfo(
            "nso", NSO, "noise stability optimization, Zhang et al. 2024", _options(NSO), _nso_evals
        ),
    }
)


def _close(name: str, valid: list[str]) -> str:
    near = difflib.get_close_matches(name, valid, n=3)
    return f" (did you mean {', '.join(near)}?)" if near else ""


def _base_kwargs(cls: type[Optimizer], kwargs: dict[str, Any], name: str) -> None:
    accepted = [
        k for k in inspect.signature(cls.__init__).parameters if k not in ("self", "params")
    ]
    for key in kwargs:
        if key not in accepted:
            raise ValueError(
                f"unknown option {key!r} for optimizer {name!r}{_close(key, accepted)}; "
                f"valid: {sorted(accepted)}"
            )


def create_optimizer(
    name: str, params: Params, *, base: str | type[Optimizer] = "sgd", **cfg: Any
) -> Optimizer:
    """Builds optimizer ``name`` from a flat config.

    ``cfg`` mixes the optimizer's own options (``rho``, ``sigma``, ...; see
    ``OPTIMIZERS[name].options``) with the base optimizer's (``lr``, ``momentum``,
    ``weight_decay``, ...); ``base`` names the base of the sharpness-aware ones
    (sgd, adam, adamw, or an Optimizer class). ``params`` may be the model itself: a
    sharpness-aware optimizer then lets only the first gradient pass of a step move the
    BatchNorm running statistics. Unknown names or options raise ValueError.

    Example:
        >>> opt = create_optimizer("nso", model, base="sgd", lr=0.1, sigma=0.01)
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in OPTIMIZERS:
        valid = sorted(OPTIMIZERS)
        raise ValueError(f"unknown optimizer {name!r}{_close(str(name), valid)}; valid: {valid}")
    info = OPTIMIZERS[key]
    if not info.sharpness_aware:
        _base_kwargs(info.cls, cfg, key)
        return info.cls(params.parameters() if isinstance(params, nn.Module) else params, **cfg)
    if isinstance(base, str):
        if base.lower() not in BASES:
            raise ValueError(
                f"unknown base optimizer {base!r}{_close(base, list(BASES))}; "
                f"valid: {sorted(BASES)}"
            )
        base_cls = BASES[base.lower()]
    elif isinstance(base, type) and issubclass(base, Optimizer):
        base_cls = base
    else:
        raise ValueError(
            f"base must be a name in {sorted(BASES)} or an Optimizer class, got {base!r}"
        )
    own = {**info.preset, **{k: v for k, v in cfg.items() if k in info.options}}
    rest = {k: v for k, v in cfg.items() if k not in info.options}
    _base_kwargs(base_cls, rest, f"{key} (base {base_cls.__name__})")
    return info.cls(params, base_cls, **own, **rest)
