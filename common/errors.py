"""Errors caused by the user's input, printed as one message without a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input (config, data, run directory, diverged run): the message says the fix.

    Command-line entry points print ``error: <message>`` and exit with a non-zero status.
    """
