"""Declarations of optimizer options: type, help, bounds; the single source of truth.

Each optimizer class lists its options once, ``OPTIONS: ClassVar[Mapping[str, Option]]``,
and its constructor validates by them (``Option.check``); the registry
(``OPTIMIZERS[name].specs``) and the run configuration read the same objects. An option
shared by several optimizers (``rho``, ``seed``, ``max_grad_norm``, ...) is one object.
``BASE_OPTIONS`` declares the base optimizers' options a config offers; ``base_accepts``
says which of them a given ``torch.optim`` class takes.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from common.checks import check

_TYPES = (bool, int, float, str, tuple)


@dataclass(frozen=True)
class Option:
    """One option: its type, a one-line help, its allowed values.

    Attributes:
        type: bool, int, float, str or tuple (a tuple of ``length`` numbers; the bounds
            apply to each element).
        help: one line for ``--help`` and the docs.
        default: the constructor's default. The declarations in the optimizer classes
            leave it unset; ``OPTIMIZERS[name].specs`` fills it in from the signature, so
            it is written once. It takes no part in equality: ``update_freq`` means the
            same in SSAM-F and SSAM-D, with defaults 1 and 5.
        min, max: inclusive bounds; gt, lt: exclusive bounds (numbers only).
        choices: the allowed values.
        nullable: None is a valid value (``seed``, ``max_grad_norm``).
        length: the number of elements of a tuple option.
    """

    type: type
    help: str
    default: Any = field(default=None, compare=False)
    min: float | None = None
    max: float | None = None
    gt: float | None = None
    lt: float | None = None
    choices: tuple | None = None
    nullable: bool = False
    length: int | None = None

    def __post_init__(self) -> None:
        if self.type not in _TYPES:
            raise TypeError(f"Option type must be one of {_TYPES}, got {self.type!r}")
        if (self.type is tuple) != (self.length is not None):
            raise TypeError("a tuple Option needs length, and only a tuple Option has one")

    def with_default(self, default: Any) -> Option:
        """A copy with ``default`` filled in."""
        return dataclasses.replace(self, default=default)

    def describe(self) -> str:
        """What the option accepts: ``a number >= 0 and < 1``, ``one of 'a', 'b'``, ..."""
        bounds = [
            f"{op} {bound}"
            for op, bound in ((">=", self.min), (">", self.gt), ("<=", self.max), ("<", self.lt))
            if bound is not None
        ]
        if self.choices is not None:
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        elif self.type is tuple:
            text = f"a tuple of {self.length} numbers" + (
                f", each {' and '.join(bounds)}" if bounds else ""
            )
        else:
            kind = {bool: "a bool", int: "an integer", float: "a number", str: "a string"}
            text = " ".join([kind[self.type], " and ".join(bounds)]).strip()
        return f"{text}, or None" if self.nullable else text

    def check(self, name: str, value: Any) -> None:
        """Raises ValueError ``"{name} must be ..., got ..."`` unless ``value`` is allowed."""
        if value is None and self.nullable:
            return
        if self.type is tuple:
            ok = (
                isinstance(value, tuple | list)
                and len(value) == self.length
                and all(self._number_ok(v) for v in value)
            )
        elif self.type is float:
            ok = self._number_ok(value)
        elif self.type is int:
            ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
            ok = ok and self._within(value)
        else:
            ok = isinstance(value, self.type)
        ok = ok and (self.choices is None or value in self.choices)
        check(name, value, ok, self.describe())

    def _number_ok(self, value: Any) -> bool:
        """A real number (not a bool), not NaN, finite unless ``min``/``max`` is ±inf."""
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            return False
        if math.isnan(value) or (math.isinf(value) and value not in (self.min, self.max)):
            return False  # ±inf only where a bound is that infinity (no option needs it)
        return self._within(value)

    def _within(self, v: Any) -> bool:
        return (
            (self.min is None or v >= self.min)
            and (self.gt is None or v > self.gt)
            and (self.max is None or v <= self.max)
            and (self.lt is None or v < self.lt)
        )


def check_options(specs: Mapping[str, Option], values: Mapping[str, Any]) -> None:
    """Checks every ``values[name]`` against ``specs[name]``."""
    for name, value in values.items():
        specs[name].check(name, value)


def frozen(**specs: Option) -> Mapping[str, Option]:
    """A read-only ``OPTIONS`` mapping, in the order given."""
    return MappingProxyType(specs)


#: Options shared by several optimizers: one object each.
SEED = Option(
    int,
    "seed of the optimizer's own generator (None: drawn from torch's RNG)",
    min=0,
    nullable=True,
)
MAX_GRAD_NORM = Option(
    float,
    "clip the global L2 norm of the gradient the base step uses (None: off)",
    gt=0,
    nullable=True,
)

#: The base optimizers' options a run configuration offers (defaults: the base class's).
BASE_OPTIONS: Mapping[str, Option] = frozen(
    lr=Option(float, "learning rate", gt=0),
    weight_decay=Option(float, "weight decay (AdamW: decoupled)", min=0),
    momentum=Option(float, "SGD momentum", min=0),
    nesterov=Option(bool, "SGD Nesterov momentum"),
    betas=Option(tuple, "Adam(W) betas (beta1, beta2)", min=0, lt=1, length=2),
    eps=Option(float, "Adam(W) epsilon added to the denominator", gt=0),
)


def base_accepts(cls: type) -> frozenset[str]:
    """The keyword options ``cls(params, ...)`` accepts, e.g. lr, momentum for SGD."""
    return frozenset(
        name
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if name not in ("self", "params") and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    )
