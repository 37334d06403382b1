"""What the ``python -m <domain>_exps.<command>`` modules run.

Only the standard library is imported before the guard: a Ctrl-C while torch loads (several
seconds) is one line, not a traceback.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys

INTERRUPTED = "interrupted: rerun the same command to resume"  # as the commands say it


def _quit_while_starting(signum: int, frame: object) -> None:
    # nothing is written before the imports end: leaving at once loses nothing. A
    # KeyboardInterrupt raised inside an extension module's import is not always
    # catchable (the interpreter may re-raise the signal on exit)
    del signum, frame
    print(INTERRUPTED, file=sys.stderr, flush=True)
    os._exit(130)


def run(task_module: str, command: str) -> None:
    """Runs ``command`` (train, cv, hessian, noise_stability, landscape) of the domain whose
    ``TASK`` lives in ``task_module``, and exits with its status."""
    previous = signal.signal(signal.SIGINT, _quit_while_starting)
    cli = importlib.import_module("common.train.cli")
    task = importlib.import_module(task_module).TASK
    signal.signal(signal.SIGINT, previous)  # from here on the commands handle Ctrl-C
    if command == "train":
        raise SystemExit(cli.train_main(task))
    if command == "cv":
        raise SystemExit(cli.cv_main(task))
    raise SystemExit(cli.measure_main(task, command))
