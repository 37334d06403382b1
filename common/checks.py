"""Argument checks shared by the optimizers and the measurements.

Each raises ValueError naming the argument, the value it got and what is allowed.
"""

from __future__ import annotations

import math
import numbers
from typing import Any


def check(name: str, value: Any, ok: bool, allowed: str) -> None:
    """Raises ValueError naming the argument, its value and the valid range."""
    if not ok:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def check_number(name: str, value: Any, lo: float, hi: float = math.inf, *, hi_open=False) -> None:
    """``lo <= value <= hi`` (``< hi`` with ``hi_open``), and a real number at all."""
    is_num = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    upper = "" if hi == math.inf else (f" and < {hi}" if hi_open else f" and <= {hi}")
    inside = is_num and lo <= value and (value < hi if hi_open else value <= hi)
    check(name, value, inside, f"a number >= {lo}{upper}")


def check_int(name: str, value: Any, lo: int) -> int:
    """An integer (Python or numpy, not bool) >= ``lo``; returns it as an ``int``."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= lo
    check(name, value, ok, f"an integer >= {lo}")
    return int(value)
