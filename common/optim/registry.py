"""The optimizer registry and ``create_optimizer``.

``OPTIMIZERS[name].specs`` declares an optimizer's own options (read from its class's
``OPTIONS``, with the constructor's defaults) and ``BASE_OPTIONS`` the base optimizers'
that a run configuration offers; ``BASE_ACCEPTS`` / ``base_accepts`` say which of those a
base class takes.
"""

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
from common.optim.fsam import FSAM
from common.optim.gsam import GSAM
from common.optim.looksam import LookSAM
from common.optim.nso import NSO
from common.optim.options import BASE_OPTIONS, Option, base_accepts
from common.optim.rwp import RWP
from common.optim.sam import SAM
from common.optim.ssam import SSAMD, SSAMF
from common.optim.wsam import WSAM

__all__ = [
    "BASES",
    "BASE_ACCEPTS",
    "BASE_OPTIONS",
    "OPTIMIZERS",
    "OptimInfo",
    "Option",
    "base_accepts",
    "create_optimizer",
]

BASES: Mapping[str, type[Optimizer]] = MappingProxyType(
    {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
)
#: The options each base optimizer in ``BASES`` accepts (``base_accepts``).
BASE_ACCEPTS: Mapping[str, frozenset[str]] = MappingProxyType(
    {name: base_accepts(cls) for name, cls in BASES.items()}
)


def _specs(cls: type) -> Mapping[str, Option]:
    """``cls.OPTIONS`` with the defaults of ``cls.__init__``; both must name the same options.

    Parameters starting with ``_`` are internal (a subclass's per-group defaults).
    """
    sig = inspect.signature(cls.__init__).parameters
    public = [n for n, p in sig.items() if p.kind == p.KEYWORD_ONLY and not n.startswith("_")]
    declared = list(getattr(cls, "OPTIONS", {}))
    if public != declared:
        raise TypeError(
            f"{cls.__name__}.OPTIONS {declared} differ from its keyword options {public} "
            "(names and order must match)"
        )
    return MappingProxyType({n: cls.OPTIONS[n].with_default(sig[n].default) for n in public})


@dataclass(frozen=True)
class OptimInfo:
    """What the registry knows about one optimizer name.

    Attributes:
        name: registry key.
        cls: the class ``create_optimizer`` builds.
        description: one line for tables and ``--help``.
        grad_evals: gradient evaluations (closure calls) one step costs, given the options;
            averaged over its period where steps differ (LookSAM: 1 + 1/interval).
        specs: the optimizer's own options (``max_grad_norm`` included; base-optimizer
            options such as lr are in ``BASE_OPTIONS``), in declaration order, with the
            constructor's defaults; empty for a plain torch optimizer.
        preset: options fixed by the name (``asam`` = SAM with ``adaptive=True``).
        sharpness_aware: wraps a base optimizer (``base=`` picks it).
        options: name -> default of ``specs`` (derived).
    """

    name: str
    cls: type[Optimizer]
    description: str
    grad_evals: Callable[[Mapping[str, Any]], float]
    specs: Mapping[str, Option] = field(default_factory=lambda: MappingProxyType({}))
    preset: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    sharpness_aware: bool = True
    options: Mapping[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        defaults = MappingProxyType({n: s.default for n, s in self.specs.items()})
        object.__setattr__(self, "options", defaults)

    def resolved(self, **cfg: Any) -> dict[str, Any]:
        """Options with defaults, preset and ``cfg`` applied (only this optimizer's own)."""
        own = {k: v for k, v in cfg.items() if k in self.options}
        return {**self.options, **self.preset, **own}

    def evals_per_step(self, **cfg: Any) -> float:
        """Closure calls per ``step(closure)`` with these options."""
        return self.grad_evals(self.resolved(**cfg))


def _nso_evals(o: Mapping[str, Any]) -> int:
    per = 2 if o["use_neg"] else 1
    return (1 if o["lam"] > 0 else 0) + (per * o["num_perturbs"] if o["lam"] < 1 else 0)


def _looksam_evals(o: Mapping[str, Any]) -> float:
    # the mean over a period of k steps: one full step (g(W), g(W + e)), k − 1 with g(W)
    return 1 + 1 / o["interval"]


def _rwp_evals(o: Mapping[str, Any]) -> int:
    return (1 if o["mix"] < 1 else 0) + (1 if o["mix"] > 0 else 0)  # g(W), g(W + eps)


def _base_info(name: str, cls: type[Optimizer]) -> OptimInfo:
    description = f"torch.optim.{cls.__name__} (no perturbation)"
    return OptimInfo(name, cls, description, lambda o: 1, sharpness_aware=False)


def _sam_evals(o: Mapping[str, Any]) -> int:
    return 2  # g(W) and g(W + e)


def _info(
    name: str, cls: type[Optimizer], description: str, evals=_sam_evals, **kw: Any
) -> OptimInfo:
    return OptimInfo(name, cls, description, evals, _specs(cls), **kw)


OPTIMIZERS: Mapping[str, OptimInfo] = MappingProxyType(
    {
        **{name: _base_info(name, cls) for name, cls in BASES.items()},
        "sam": _info("sam", SAM, "SAM, Foret et al. 2021"),
        "asam": _info(
            "asam",
            SAM,
            "adaptive SAM, Kwon et al. 2021 (T = |W| + eta)",
            preset=MappingProxyType({"adaptive": True, "eta": 0.01, "rho": 0.5}),
        ),
        "ssamf": _info("ssamf", SSAMF, "Fisher sparse SAM, Mi et al. 2022"),
        "ssamd": _info("ssamd", SSAMD, "dynamic sparse SAM, Mi et al. 2022"),
        "wsam": _info("wsam", WSAM, "weighted SAM, Yue et al. 2023"),
        "nso": _info("nso", NSO, "noise stability optimization, Zhang et al. 2024", _nso_evals),
        "fsam": _info("fsam", FSAM, "friendly SAM, Li et al. 2024"),
        "rwp": _info("rwp", RWP, "(mixed) random weight perturbation, Li et al. 2024", _rwp_evals),
        # m-ARWP as in the authors' train_marwp.py defaults: eta 1 (beta 0.9, mix 0.5 and
        # sigma 0.01 are RWP's own defaults, the same values there)
        "arwp": _info(
            "arwp",
            RWP,
            "adaptive (mixed) random weight perturbation, Li et al. 2024",
            _rwp_evals,
            preset=MappingProxyType({"adapt": 1.0}),
        ),
        "gsam": _info("gsam", GSAM, "surrogate gap guided SAM, Zhuang et al. 2022"),
        "looksam": _info(
            "looksam", LookSAM, "LookSAM, SAM every k steps, Liu et al. 2022", _looksam_evals
        ),
    }
)


def _close(name: str, valid: list[str]) -> str:
    near = difflib.get_close_matches(name, valid, n=3)
    return f" (did you mean {', '.join(near)}?)" if near else ""


def _refuse_unknown(key: str, cfg: Mapping[str, Any], base_cls: type[Optimizer]) -> None:
    """ValueError naming each unknown option, its likely meaning, and every valid option."""
    own, accepted = list(OPTIMIZERS[key].specs), sorted(base_accepts(base_cls))
    unknown = [k for k in cfg if k not in own and k not in accepted]
    if not unknown:
        return
    valid = own + accepted
    names = ", ".join(f"{k!r}{_close(k, valid)}" for k in unknown)
    torch_name = f"torch.optim.{base_cls.__name__}"
    if OPTIMIZERS[key].sharpness_aware:
        lists = [f"{key}'s options: {', '.join(own)}", f"its base {torch_name}'s: "]
    else:
        lists = [f"{torch_name}'s options: "]
    lists[-1] += ", ".join(accepted)
    for k in unknown:
        elsewhere = [n for n, info in OPTIMIZERS.items() if k in info.specs]
        if elsewhere:
            lists.append(f"{k} is an option of {', '.join(elsewhere)}")
    s = "s" if len(unknown) > 1 else ""
    raise ValueError(f"unknown option{s} {names} for optimizer {key!r}; {'; '.join(lists)}")


def create_optimizer(
    name: str, params: Params, *, base: str | type[Optimizer] = "sgd", **cfg: Any
) -> Optimizer:
    """Builds optimizer ``name`` from a flat config.

    ``cfg`` mixes the optimizer's own options (``rho``, ``sigma``, ...; see
    ``OPTIMIZERS[name].specs``) with the base optimizer's (``lr``, ``momentum``,
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
        _refuse_unknown(key, cfg, info.cls)
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
    _refuse_unknown(key, cfg, base_cls)
    own = {**info.preset, **{k: v for k, v in cfg.items() if k in info.specs}}
    rest = {k: v for k, v in cfg.items() if k not in info.specs}
    return info.cls(params, base_cls, **own, **rest)
