"""Errors caused by the user's input, printed as one message without a traceback."""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable


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


#: torch's refusal of a pickle holding code: its text advises ``weights_only=False``, which
#: would run that code; we never pass that advice on.
_PICKLE_REFUSED = "Weights only load failed"


def first_line(error: BaseException) -> str:
    """``"OSError: <its first line, at most 200 characters>"``: a library's exception as it
    goes into one of our one-line messages (torch's refusal of a pickle with code, whose
    advice is to load it unsafely, as what it is)."""
    if _PICKLE_REFUSED in str(error):
        return (
            "a pickle that holds more than tensors (code, which would run if loaded), "
            "refused: only tensors are ever loaded (weights_only=True)"
        )
    text = str(error).strip().splitlines()
    line = text[0] if text else ""
    return f"{type(error).__name__}: {line[:200]}" if line else type(error).__name__


_RESUME = "the files written so far are whole, and the same command resumes"
_NOT_WRITABLE = "the folder is not writable: pass a run_dir (or data.root, --out) you can write to"
#: What to do when the file system refuses a write, by errno.
_WRITE_FIXES = {
    errno.ENOSPC: f"free some space (or write elsewhere) and rerun: {_RESUME}",
    errno.EDQUOT: f"free some of your quota (or write elsewhere) and rerun: {_RESUME}",
    errno.EFBIG: f"raise the file-size limit (ulimit -f) and rerun: {_RESUME}",
    errno.EROFS: "the file system is read-only: pass a run_dir (or data.root, --out) you can "
    "write to",
    errno.EACCES: _NOT_WRITABLE,
    errno.EPERM: _NOT_WRITABLE,
}


def refused_write(error: OSError) -> str | None:
    """The one-line message of a write the file system refused (full, over a limit,
    read-only, not permitted), naming the file and what to do; None for another OSError."""
    fix = _WRITE_FIXES.get(error.errno or 0)
    if fix is None:
        return None
    where = os.fsdecode(error.filename) if error.filename is not None else "a file"
    return f"cannot write {where}: {error.strerror}; {fix}"


def one_line(command: Callable[[], object], *, speak: bool = True) -> int:
    """Runs ``command``: 0, or, for a :class:`UserError` or a refused write, one
    ``error:`` line on stderr (when ``speak``: one process of several says it) and 2."""
    try:
        command()
    except UserError as e:
        message = str(e)
    except OSError as e:  # the file system refused a write: full, limited or read-only
        message = refused_write(e)
        if message is None:
            raise
    else:
        return 0
    if speak:
        print(f"error: {message}", file=sys.stderr)
    return 2
