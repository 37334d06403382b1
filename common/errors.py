"""Errors caused by the user's input, printed as one message without a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input (config, data, run directory, diverged run): the message says the fix.

    Command-line entry points print ``error: <message>`` and exit with a non-zero status.
    """


class DataError(UserError, RuntimeError):
    """A data set is missing, corrupt or mis-specified; the message says how to fix it."""


class ModelError(UserError, ValueError):
    """A model name or option that does not exist, or weights that cannot be had."""


class RunDirError(UserError):
    """A run directory that cannot be used as asked (another run's, damaged, foreign)."""


def first_line(error: BaseException) -> str:
    """``"OSError: <its first line, at most 200 characters>"``: a library's exception as it
    goes into one of our one-line messages."""
    text = str(error).strip().splitlines()
    line = text[0] if text else ""
    return f"{type(error).__name__}: {line[:200]}" if line else type(error).__name__
