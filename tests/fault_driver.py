"""Runs a command of the project with a fault: SIGKILL at the k-th write of a file.

    python tests/fault_driver.py <name> <k> <before|after> -- <module> <args...>

runs ``python -m <module> <args...>`` with ``os.replace`` patched (``common.io.atomic_path``
renames every file that matters into place with it) so that on its ``k``-th call whose
target is called ``<name>`` the process kills itself with SIGKILL just before or just
after the rename, as a power cut or an OOM kill would; ``k`` = 0 runs without a fault.

    python tests/fault_driver.py --serve

is what ``tests/test_faults.py`` starts: it imports the project once, then forks one
child per request (a JSON line on stdin: ``{"op": "spawn", "argv": [module, args...],
"fault": [name, k, when] | null, "out": path, "err": path, "renames": path | null}``
(where to write the number of renames by file name, at the end), answered with
``{"pid": N}``; ``{"op": "wait", "pid": N, "timeout": s}`` answered with ``{"rc": code}``,
negative for a signal as :mod:`subprocess` reports it, null on a timeout, after which the
child is killed). A child is a whole process of its own, to kill at any moment, that skips
the seconds of ``import torch`` that a fresh interpreter pays.
"""

from __future__ import annotations

import contextlib
import json
import os
import runpy
import signal
import sys
import time
import traceback
from pathlib import Path

#: renames so far, by the target's file name
RENAMES: dict[str, int] = {}


def install_fault(name: str, k: int, when: str) -> None:
    """Patches ``os.replace``: counts renames by target name (:data:`RENAMES`) and sends
    SIGKILL around the ``k``-th one onto a file called ``name`` (none for ``k`` <= 0)."""
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        target = Path(os.fsdecode(dst)).name
        RENAMES[target] = count = RENAMES.get(target, 0) + 1
        fire = target == name and count == k
        if fire and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = real(src, dst, *args, **kwargs)
        if fire and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    os.replace = replace


def run_module(module: str, args: list[str]) -> int:
    """``python -m module args``, as the interpreter runs it: the exit status, and a
    traceback on stderr for an exception that escapes."""
    sys.argv = [module, *args]
    sys.modules.pop(module, None)  # imported by the server: run it afresh as __main__
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    return code


def _child(request: dict) -> None:
    """In the forked child: fresh signal handlers, stdout/stderr to files, the command."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for fd, key in ((1, "out"), (2, "err")):
            target = os.open(request[key], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        sys.stdout = sys.__stdout__  # the server prints its replies through another name
        name, k, when = request.get("fault") or ("", 0, "before")
        install_fault(name, int(k), when)
        module, *args = request["argv"]
        code = run_module(module, args)
        if request.get("renames"):
            Path(request["renames"]).write_text(json.dumps(RENAMES))
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
        os._exit(code)


def _rc(status: int) -> int:
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def serve() -> None:
    """Imports the project once, then forks a child per request (see the module docstring)."""
    # imported here once, for every child (each then runs its module afresh as __main__)
    import common.tables
    import common.train.cli
    import image_exps.task

    del common, image_exps  # the imports are the point

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the test sends signals to children only
    replies = sys.stdout
    sys.stdout = sys.stderr
    print(json.dumps({"ready": os.getpid()}), file=replies, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "spawn":
            pid = os.fork()
            if pid == 0:
                _child(request)
            reply: dict = {"pid": pid}
        else:  # wait
            pid, deadline, rc = request["pid"], time.monotonic() + request["timeout"], None
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    rc = _rc(status)
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    break
                time.sleep(0.005)
            reply = {"rc": rc}
        print(json.dumps(reply), file=replies, flush=True)


def main(argv: list[str]) -> int:
    if argv == ["--serve"]:
        serve()
        return 0
    if len(argv) < 5 or argv[3] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    name, k, when, _, module, *args = argv
    if when not in ("before", "after"):
        print("error: the third argument is before or after", file=sys.stderr)
        return 2
    install_fault(name, int(k), when)
    return run_module(module, args)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
