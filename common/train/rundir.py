"""The run-directory contract: where a run lives, what its files are called, what they hold.

``runs/<domain>/<dataset>/<model>/<optimizer>/seed<k>[/fold<f>]/`` unless ``run_dir`` is
set. ``run.json`` (written first) names the domain that owns the directory;
``config.yaml`` the resolved config; ``checkpoint.pt`` the last state; ``best.pt`` the
weights the selection metric chose; ``metrics.csv`` a row per epoch; ``summary.json``,
written last, exists only for finished runs. Tables, measurements and resumes read these
files and nothing else.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from common.errors import RunDirError, UserError
from common.io import open_lock, read_json, write_json
from common.train.config import config_changes

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
SUMMARY = "summary.json"
METRICS = "metrics.csv"
CONFIG = "config.yaml"
RUN = "run.json"
LOCK = ".lock"

#: What every summary.json holds (tables, the CLI and resumes read these).
SUMMARY_KEYS = (
    "domain",
    "dataset",
    "model",
    "optimizer",
    "seed",
    "metrics",
    "select",
    "test",
    "best_val",
    "steps",
    "wall_time_s",
)


def name_label(name: str) -> str:
    """A data set or model as run folders and tables name it: a hub id or a built-in name as
    is, a local folder (``model.name=DIR``, ``data.name=DIR``) by its last part, so that no
    machine's path shows in a table or lands inside a run folder's path."""
    if name.startswith(("/", ".", "~")) or Path(name).is_dir():
        path = Path(name).expanduser()
        return path.name if path.name not in ("", "..") else Path(os.path.abspath(path)).name
    return name


def run_dir_for(task: Any, cfg: Any) -> Path:
    """``cfg.run_dir`` or ``runs/<domain>/<dataset>/<model>/<optimizer>/seed<k>`` (plus
    ``/fold<f>`` for a task with cross-validation folds); a local folder's name for a
    data set or model given as one (not its path: an absolute one would put the run there)."""
    if cfg.run_dir:
        return Path(cfg.run_dir)
    path = (
        Path("runs")
        / task.domain
        / name_label(cfg.data.name)
        / name_label(cfg.model.name)
        / cfg.optimizer.name
        / f"seed{cfg.seed}"
    )
    return path / f"fold{task.folds.fold(cfg)}" if task.folds else path


#: Files that mark a directory as a run directory (one of them is enough).
_OURS = (RUN, CONFIG, CHECKPOINT)
_TMP = re.compile(r"^\..+\.(\d+)\.tmp$")  # common.io.atomic_path's temporary files


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _remove_stale_temporaries(run_dir: Path) -> None:
    """Deletes ``.NAME.PID.tmp`` files of processes that no longer run (a kill mid-write)."""
    for path in run_dir.iterdir():
        match = _TMP.match(path.name)
        if match and not _alive(int(match.group(1))):
            with contextlib.suppress(OSError):
                path.unlink()


def _make_dir(run_dir: Path, *, create: bool) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"run_dir {run_dir} is a file, not a directory: pass another run_dir")
    if not create:
        if not run_dir.is_dir():
            raise RunDirError(f"{run_dir} does not exist: pass the run_dir of a trained run")
        return
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(
            f"cannot create run_dir {run_dir} ({e.strerror}): pass a directory you can write"
        ) from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise RunDirError(f"run_dir {run_dir} is not writable: pass a directory you can write")


def _refuse_foreign(run_dir: Path) -> None:
    """A directory holding files, none of which a run writes, is someone else's."""
    names = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK and not _TMP.match(p.name))
    if names and not any(name in names for name in _OURS):
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise RunDirError(
            f"run_dir {run_dir} already holds files that are not a run ({shown}): pass a new "
            "or empty directory"
        )


@contextlib.contextmanager
def locked(run_dir: Path, command: str, *, create: bool = True) -> Iterator[None]:
    """Holds ``run_dir`` for one command: an exclusive ``flock`` on ``run_dir/.lock``.

    The lock belongs to the open file, so it dies with its process (a kill -9 never leaves
    a stale lock) and Linux honours it across NFS clients. A second command on the same
    directory is refused at once, naming the one that holds it. Stale temporary files of
    killed writers are removed once the lock is held. ``create``: make the directory
    (training) or require it (measurements).
    """
    run_dir = Path(run_dir)
    _make_dir(run_dir, create=create)
    fd = open_lock(run_dir / LOCK)  # never through a link: the holder's line is written
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "another process"
            raise RunDirError(
                f"run_dir {run_dir} is in use by {holder}: wait for it to end, or pass "
                "another run_dir"
            ) from None
        os.ftruncate(fd, 0)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        os.pwrite(
            fd, f"{command} (pid {os.getpid()} on {socket.gethostname()}, {stamp})".encode(), 0
        )
        _remove_stale_temporaries(run_dir)
        if create:
            _refuse_foreign(run_dir)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_record(run_dir: Path, domain: str) -> None:
    """``run.json``: which domain's commands own this directory."""
    write_json(run_dir / RUN, {"domain": domain, "entry_points": f"python -m {domain}_exps.*"})


def recorded_domain(run_dir: Path) -> str | None:
    """The domain ``run.json`` names; None for a directory without one."""
    path = run_dir / RUN
    if not path.exists():
        return None
    fix = "delete it (the next command of the run's domain writes it again)"
    data = read_json(path, fix=fix)
    if not isinstance(data, dict) or not isinstance(data.get("domain"), str):
        raise RunDirError(f"{path} is damaged (no domain); {fix}")
    return data["domain"]


def check_domain(run_dir: Path, domain: str, command: str) -> None:
    """Refuses a run directory that another domain's commands wrote."""
    owner = recorded_domain(run_dir)
    if owner is not None and owner != domain:
        raise RunDirError(
            f"{run_dir} holds a {owner} run, not a {domain} one: use python -m "
            f"{owner}_exps.{command} run_dir={run_dir}"
        )


def refuse_other_config(run_dir: Path, saved: Mapping[str, Any], current: Any) -> None:
    """Raises when ``run_dir`` holds a run whose config differs from ``current`` (a config),
    its runtime keys (the device, the measurements' options) aside."""
    diffs = config_changes(saved, current)
    if diffs:
        raise RunDirError(
            f"run_dir {run_dir} holds a run with a different config:\n  "
            + "\n  ".join(diffs)
            + "\nrerun with the same settings to resume it, or pass another run_dir"
        )


#: What to do with a damaged summary.json: the trainer writes it again from checkpoint.pt.
SUMMARY_FIX = "delete it and rerun the training command to write it again"


def read_summary(run_dir: Path, *, required: Sequence[str] = SUMMARY_KEYS) -> dict[str, Any] | None:
    """``summary.json`` of a finished run (checksum verified, ``required`` keys present), or
    None when the run has not finished."""
    path = Path(run_dir) / SUMMARY
    if not path.exists():
        return None
    data = read_json(path, fix=SUMMARY_FIX)
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a run summary (a JSON object); {SUMMARY_FIX}")
    if "metrics" not in data:
        raise UserError(
            f"{path} has no 'metrics' list: it is in an old format (or not a run summary); "
            f"{SUMMARY_FIX}"
        )
    missing = [k for k in required if k not in data]
    if missing:
        raise UserError(f"{path} lacks {', '.join(map(repr, missing))}; {SUMMARY_FIX}")
    return data


def metric_record(metric: Any) -> dict[str, Any]:
    """How a :class:`~common.metrics.Metric` is written into ``summary.json``."""
    return {"name": metric.name, "label": metric.label, "higher_is_better": metric.higher_is_better}
