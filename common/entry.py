"""What the ``python -m <domain>_exps.<command>`` modules run.

Only the standard library is imported before the guard: a Ctrl-C while torch loads (several
seconds) is one line, not a traceback.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
from collections.abc import Iterator

INTERRUPTED = "interrupted: rerun the same command to resume"  # as the commands say it


def _quit_while_starting(signum: int, frame: object) -> None:
    # nothing is written before the imports end: leaving at once loses nothing. A
    # KeyboardInterrupt raised inside an extension module's import is not always
    # catchable (the interpreter may re-raise the signal on exit)
    del signum, frame
    print(INTERRUPTED, file=sys.stderr, flush=True)
    os._exit(130)


@contextlib.contextmanager
def _extra_needed(task_module: str) -> Iterator[None]:
    """A library only the domain needs (its extra, e.g. ``flatminima[text]``), found missing
    when the domain loads or when a command first uses it (wfdb reads records, ``datasets``
    downloads), is one line saying what to install, exit status 2."""
    try:
        yield
    except ModuleNotFoundError as e:
        package = task_module.split(".")[0]
        missing = (e.name or "").split(".")[0]
        if not missing or missing in (package, "common"):
            raise
        domain = package.removesuffix("_exps")
        how = f"pip install {missing}"
        if domain in _extras():
            how = f"pip install 'flatminima[{domain}]' (or {how})"
        print(f"error: the {domain} domain needs {missing}, which is not installed: {how}",
              file=sys.stderr)  # fmt: skip
        raise SystemExit(2) from None


def _extras() -> list[str]:
    """The extras the installed package declares ([] from a checkout never installed)."""
    from importlib import metadata

    try:
        return metadata.metadata("flatminima").get_all("Provides-Extra") or []
    except metadata.PackageNotFoundError:
        return []


def run(task_module: str, command: str) -> None:
    """Runs ``command`` (train, cv, measure, or a measurement's name) of the domain whose
    ``TASK`` lives in ``task_module``, and exits with its status."""
    previous = signal.signal(signal.SIGINT, _quit_while_starting)
    cli = importlib.import_module("common.train.cli")
    with _extra_needed(task_module):
        task = importlib.import_module(task_module).TASK
        signal.signal(signal.SIGINT, previous)  # from here on the commands handle Ctrl-C
        if command == "train":
            raise SystemExit(cli.train_main(task))
        if command == "cv":
            raise SystemExit(cli.cv_main(task))
        if command == "measure":  # python -m <domain>_exps.measure KIND run_dir=PATH ...
            raise SystemExit(cli.measure_any_main(task))
        raise SystemExit(cli.measure_main(task, command))
