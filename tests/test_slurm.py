"""``scripts/sweep.sh --slurm`` against a real SLURM cluster: a job array per submission,
resubmissions that skip finished cells and resume a cancelled one, tables from the results.

A system test, skipped unless ``FLATMINIMA_SLURM=1`` and ``sbatch`` is on PATH;
``make slurm-test`` starts a one-node cluster on this machine
(``scripts/slurm/local-cluster.sh start``), runs it and stops the cluster. About two minutes
on 2 busy cores: smoke-sized digits runs, one CPU each. On a cluster of several nodes, give
pytest a ``--basetemp`` on a shared file system (the runs are written there) and
``FLATMINIMA_SLURM_PARTITION`` where the default partition will not do.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.io import read_json

REPO = Path(__file__).resolve().parents[1]
SWEEP = REPO / "scripts" / "sweep.sh"
CONFIG = REPO / "image_exps" / "configs" / "digits.yaml"
MEASURED = ("hessian.json", "noise_stability.json", "landscape.json")
CELLS = [f"{o}/seed{s}" for o in ("sgd", "sam") for s in (0, 1)]  # the array's order
# one CPU per cell: the local cluster's node has the machine's 2 (sweep.sh asks for 4 by
# default, which such a node never has: the array would wait forever)
SLURM = ["--slurm", "--cpus", "1"]
if os.environ.get("FLATMINIMA_SLURM_PARTITION"):
    SLURM += ["--partition", os.environ["FLATMINIMA_SLURM_PARTITION"]]
MATRIX = ["--config", str(CONFIG), "--optimizers", "sgd sam", "--seeds", "0 1", *SLURM]
# the cell to cancel: a checkpoint at each of 40 full epochs (smoke stops after 6 steps)
SLOW = ["smoke=true", "train.epochs=40", "train.max_steps=null"]
WAIT_S = 240  # for one array to end (about 30 s here)


def _why_skip() -> str:
    if os.environ.get("FLATMINIMA_SLURM") != "1":
        return "set FLATMINIMA_SLURM=1 to run against a SLURM cluster (make slurm-test)"
    if shutil.which("sbatch") is None:
        return "no sbatch on PATH (scripts/slurm/local-cluster.sh start installs SLURM)"
    return ""


pytestmark = [pytest.mark.system, pytest.mark.skipif(bool(_why_skip()), reason=_why_skip())]


# ------------------------------------------------------------------------ helpers
def slurm(*argv: str) -> subprocess.CompletedProcess:
    """A SLURM client command (squeue, scontrol, scancel, sinfo), its output as text."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def submit(*args: str) -> int:
    """``scripts/sweep.sh args`` with this interpreter and no GPU: the array's job id."""
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [str(SWEEP), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    found = re.search(r"^Submitted batch job (\d+)$", done.stdout, re.MULTILINE)
    assert found, f"sbatch's answer is not in sweep.sh's output: {done.stdout!r}"
    return int(found.group(1))


def queued(job: int) -> bool:
    """Whether a task of the array is still pending, running or completing."""
    listed = slurm("squeue", "-h", "-j", str(job), "-o", "%i")
    # a job SLURM no longer holds in memory is an error for squeue: it is not queued
    return listed.returncode == 0 and bool(listed.stdout.strip())


def until(what: str, done: Callable[[], bool], timeout: float = WAIT_S) -> None:
    """Polls ``done`` twice a second; fails with ``what`` and the queue after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            queue = slurm("squeue").stdout
            pytest.fail(f"timed out after {timeout} s waiting for {what}:\n{queue}")
        time.sleep(0.5)


@dataclass(frozen=True)
class Task:
    """An array task as ``scontrol show job`` reports it."""

    index: int
    state: str
    exit_code: str


def tasks(job: int) -> list[Task]:
    """The array's tasks, by index (once they have ended: a pending range would not parse)."""
    shown = slurm("scontrol", "show", "job", "-o", str(job))
    assert shown.returncode == 0, shown.stderr
    found = []
    for line in shown.stdout.splitlines():
        fields = dict(re.findall(r"\b(ArrayTaskId|JobState|ExitCode)=(\S+)", line))
        found.append(Task(int(fields["ArrayTaskId"]), fields["JobState"], fields["ExitCode"]))
    return sorted(found, key=lambda t: t.index)


def finish(job: int) -> list[Task]:
    """Waits for every task of the array to end; its tasks."""
    until(f"job array {job} to end", lambda: not queued(job))
    return tasks(job)


def log(out: Path, job: int, index: int) -> str:
    """What array task ``index`` printed (sweep.sh's --output: <out>/logs/%A_%a.out)."""
    return (out / "logs" / f"{job}_{index}.out").read_text()


def stamp(path: Path) -> tuple[int, int, bytes]:
    """What changes when a file is written again (atomically: a new inode)."""
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, path.read_bytes()


@pytest.fixture(scope="module")
def jobs() -> Iterator[list[int]]:
    """The arrays the tests submit; any still queued at the end (a test that failed while
    waiting) is cancelled, so that nothing keeps running."""
    answer = slurm("sinfo", "-h", "-o", "%P %a %D %T")
    assert answer.returncode == 0 and answer.stdout.strip(), (
        "FLATMINIMA_SLURM=1 but sinfo gets no answer from a cluster "
        f"({answer.stderr.strip()}): start one with scripts/slurm/local-cluster.sh start"
    )
    submitted: list[int] = []
    yield submitted
    for job in submitted:
        if queued(job):
            slurm("scancel", str(job))


@dataclass(frozen=True)
class Sweep:
    """A submitted sweep: its arguments, out folder and the first array's id and tasks."""

    args: list[str]
    out: Path
    job: int
    tasks: list[Task]


# ------------------------------------------------------------------------ the matrix
@pytest.fixture(scope="module")
def matrix(tmp_path_factory, jobs) -> Sweep:
    """sgd and sam x seeds 0 and 1, smoke-sized, at most 2 tasks at once (--jobs 2),
    submitted and run to its end."""
    out = tmp_path_factory.mktemp("slurm") / "matrix"
    args = [*MATRIX, "--out", str(out), "--jobs", "2", "--", "smoke=true"]
    job = submit(*args)
    jobs.append(job)
    # the %2 limit, as SLURM read it (4 one-CPU tasks on 2 CPUs: tasks wait, so the
    # array's own record is still there)
    assert "ArrayTaskThrottle=2" in slurm("scontrol", "show", "job", str(job)).stdout
    return Sweep(args, out, job, finish(job))


def test_every_cell_of_the_array_runs_to_its_summary(matrix) -> None:
    assert [(t.index, t.state, t.exit_code) for t in matrix.tasks] == [
        (i, "COMPLETED", "0:0") for i in range(len(CELLS))
    ]
    for i, cell in enumerate(CELLS):
        run = matrix.out / cell
        summary = read_json(run / "summary.json", fix="")  # present, checksum verified
        assert summary["resumed"] == 0
        for name in MEASURED:
            assert read_json(run / name, fix="")
        text = log(matrix.out, matrix.job, i)
        assert text.startswith(f"cell {i} of {len(CELLS)}: ") and f"run_dir={run} " in text
        assert f"training into {run}" in text


def test_a_resubmission_trains_and_measures_nothing_again(matrix, jobs) -> None:
    """The same command again: sweep.sh submits every cell again (it cannot tell a finished
    measurement from the out folder); each task finds its cell finished and measured."""
    names = ("summary.json", "checkpoint.pt", *MEASURED)
    files = [matrix.out / cell / name for cell in CELLS for name in names]
    before = [stamp(f) for f in files]
    job = submit(*matrix.args)
    jobs.append(job)
    assert job != matrix.job
    again = finish(job)
    assert [(t.state, t.exit_code) for t in again] == [("COMPLETED", "0:0")] * len(CELLS)
    assert [stamp(f) for f in files] == before
    for i, cell in enumerate(CELLS):
        run, text = matrix.out / cell, log(matrix.out, job, i)
        assert f"{run} is already finished" in text and "training into" not in text, text
        for kind in ("hessian", "noise_stability", "landscape"):
            assert f"{kind}: already measured ({run / kind}.json)" in text


def test_the_tables_are_built_from_the_arrays_runs(matrix, tmp_path) -> None:
    tables = tmp_path / "tables"
    built = subprocess.run(
        [sys.executable, "-m", "common.tables", str(matrix.out), "--out", str(tables)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    assert "| domain | data set | model | sgd | sam | sam vs base (%) |" in built.stdout
    rows = [line.split(",") for line in (tables / "table.csv").read_text().splitlines()]
    header, rows = rows[0], [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]
    assert {"optimizer", "measure", "n"} <= set(header)
    accuracy = {r["optimizer"]: r["n"] for r in rows if r["measure"] == "test_accuracy"}
    assert accuracy == {"sgd": "2", "sam": "2"}  # both seeds of each optimizer


# ------------------------------------------------------------------------ a cancelled cell
def test_a_cell_cancelled_mid_training_resumes_when_resubmitted(tmp_path, jobs) -> None:
    out = tmp_path / "slow"
    args = [*SLURM, "--config", str(CONFIG), "--optimizers", "sgd", "--out", str(out)]
    args += ["--", *SLOW]
    run = out / "sgd" / "seed0"
    job = submit(*args)
    jobs.append(job)
    until(f"{run}/checkpoint.pt", lambda: (run / "checkpoint.pt").exists() or not queued(job))
    assert queued(job), f"the cell ended before it was cancelled:\n{log(out, job, 0)}"
    assert slurm("scancel", str(job)).returncode == 0
    (cancelled,) = finish(job)
    assert cancelled.state == "CANCELLED", cancelled
    assert (run / "checkpoint.pt").exists() and not (run / "summary.json").exists()
    assert "CANCELLED" in log(out, job, 0) and "training into" in log(out, job, 0)

    again = submit(*args)  # the same command
    jobs.append(again)
    (resumed,) = finish(again)
    assert (resumed.state, resumed.exit_code) == ("COMPLETED", "0:0"), log(out, again, 0)
    step = re.search(rf"^resuming {re.escape(str(run))} from step (\d+) ", log(out, again, 0), re.M)
    summary = read_json(run / "summary.json", fix="")
    assert (summary["resumed"], summary["epochs"]) == (1, 40)
    assert step and 0 < int(step.group(1)) < summary["steps"], log(out, again, 0)  # mid-run
    assert all(read_json(run / name, fix="") for name in MEASURED)
