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
