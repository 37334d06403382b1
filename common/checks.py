"""Argument checks shared by the optimizers and the measurements.

Each raises :class:`OptionError` (a ValueError) naming the argument as ``name=value``,
and what is allowed; a command that takes the argument from a config section can rename
it to its key (:func:`config_words`).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping
from typing import Any


class OptionError(ValueError):
    """A bad argument of a library function; the message names it as ``name=value``."""


def check(name: str, value: Any, ok: bool, allowed: str) -> None:
    """Raises OptionError naming the argument, its value and the valid range."""
    if not ok:
        raise OptionError(f"{name} must be {allowed}, got {value!r}")


def config_words(message: str, section: str, keys: Mapping[str, str]) -> str:
    """``message`` of an :class:`OptionError` in a config's words: each ``argument=value``
    and ``argument must be`` whose argument is in ``keys`` (argument -> key in
    ``section``) names ``section.key``, quotes around a string value dropped (as it is
    typed there)."""

    def rename(match: re.Match[str]) -> str:
        name, rest = match.group(1), match.group(2)
        if name not in keys:
            return match.group(0)
        value = rest[1:].strip("'") if rest.startswith("=") else rest
        return f"{section}.{keys[name]}" + ("=" + value if rest.startswith("=") else rest)

    return re.sub(r"\b([a-z_]+)(='[^']*'|=[^\s,;:)]+| must be)", rename, message)


def is_number(value: Any) -> bool:
    """A real number (int or float, not bool), finite or not."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_number(name: str, value: Any, lo: float, hi: float = math.inf, *, hi_open=False) -> None:
    """``lo <= value <= hi`` (``< hi`` with ``hi_open``), and a real number at all."""
    is_num = is_number(value) and math.isfinite(value)
    upper = "" if hi == math.inf else (f" and < {hi}" if hi_open else f" and <= {hi}")
    inside = is_num and lo <= value and (value < hi if hi_open else value <= hi)
    check(name, value, inside, f"a number >= {lo}{upper}")


def check_int(name: str, value: Any, lo: int) -> int:
    """An integer (Python or numpy, not bool) >= ``lo``; returns it as an ``int``."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= lo
    check(name, value, ok, f"an integer >= {lo}")
    return int(value)
