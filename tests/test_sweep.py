"""``scripts/sweep.sh`` (a matrix of runs, locally or as a SLURM array) and the idempotent
``train --measure`` a rerun of a sweep relies on.

One 2 × 2 sweep (sgd, sam × seeds 0, 1, ``--jobs 2``) of smoke-sized graph runs is shared
by the module. Its data is a toy TU set processed once beforehand, so that the parallel
cells only read it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from common.io import read_json, write_json
from common.train.cli import train_main
from common.train.config import read_yaml
from graph_exps.data import build_graph_data
from graph_exps.task import TASK
from tests.graph_fixtures import TOY, write_tu_dataset

REPO = Path(__file__).resolve().parents[1]
SWEEP = REPO / "scripts" / "sweep.sh"
CONFIG = REPO / "graph_exps" / "configs" / "sbm.yaml"
MEASURED = ("hessian.json", "noise_stability.json", "landscape.json")
MATRIX = ["--optimizers", "sgd sam", "--seeds", "0 1"]
CELLS = [f"{o}/seed{s}" for o in ("sgd", "sam") for s in (0, 1)]  # in the sweep's order


def sweep(*args: str, cwd: Path = REPO, **env: str) -> subprocess.CompletedProcess:
    """``scripts/sweep.sh args`` with this interpreter and no GPU (unless ``env`` says)."""
    env = {"PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": "", **env}
    return subprocess.run(
        [str(SWEEP), *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


def stamp(path: Path) -> tuple[int, int, bytes]:
    """What changes when a file is written again (atomically: a new inode)."""
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, path.read_bytes()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> list[str]:
    """The overrides of every cell: smoke-sized runs on a processed toy TU set."""
    root = tmp_path_factory.mktemp("data")
    write_tu_dataset(root, n_graphs=40)
    build_graph_data(TOY, root, n_folds=4, download=False)  # PyG processes it here, once
    return f"smoke=true data.name={TOY} data.root={root} data.download=false data.n_folds=4".split()


@pytest.fixture(scope="module")
def matrix(tmp_path_factory, data) -> tuple[subprocess.CompletedProcess, Path, list[str]]:
    """The shared sweep, started from another folder with a relative --config and --out:
    its result, its out folder and its arguments."""
    base = tmp_path_factory.mktemp("sweep")
    args = ["--config", os.path.relpath(CONFIG, base), *MATRIX, "--out", "out", "--jobs", "2"]
    args += ["--", *data]
    return sweep(*args, cwd=base), base / "out", args


def cell_commands(stdout: str) -> list[list[str]]:
    """The cells' commands a local --dry-run printed, after its ``cd REPO`` line."""
    first, *lines = stdout.splitlines()
    assert first == f"cd {shlex.quote(str(REPO))}"
    return [shlex.split(line) for line in lines]


# ------------------------------------------------------------------------ local runs
def test_a_matrix_runs_every_cell_into_its_documented_directory(matrix) -> None:
    result, out, _ = matrix
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "4 cells: 4 done, 0 failed"
    assert sorted(line.split()[1] for line in result.stdout.splitlines()[:-1]) == sorted(CELLS)
    for cell in CELLS:
        run = out / cell
        for name in ("summary.json", *MEASURED):
            assert read_json(run / name, fix="")  # present, checksum verified
        assert read_json(run / "hessian.json", fix="")["finished"] is True
        cfg = read_yaml(run / "config.yaml", verify="")
        assert (cfg["optimizer"]["name"], cfg["seed"]) == (cell.split("/")[0], int(cell[-1]))
        assert "training into" in (out / "logs" / f"{cell}.log").read_text()  # --jobs 2: logs


def test_a_second_identical_sweep_trains_and_measures_nothing(matrix) -> None:
    _, out, args = matrix
    files = [out / c / n for c in CELLS for n in ("summary.json", "checkpoint.pt", *MEASURED)]
    before = [stamp(f) for f in files]
    again = sweep(*args, cwd=out.parent)
    assert again.returncode == 0 and "4 cells: 4 done, 0 failed" in again.stdout
    assert [stamp(f) for f in files] == before
    for cell in CELLS:
        last = (out / "logs" / f"{cell}.log").read_text().rsplit("\n== ", 1)[1]  # this call's
        assert "is already finished" in last and "training into" not in last
        for kind in ("hessian", "noise_stability", "landscape"):
            assert f"{kind}: already measured ({out / cell / kind}.json)" in last


def test_dry_run_prints_each_command_and_writes_nothing(data, tmp_path) -> None:
    out = tmp_path / "out"
    args = ["--config", str(CONFIG), *MATRIX, "--out", str(out), "--jobs", "2", "--dry-run"]
    result = sweep(*args, "--", *data)
    assert result.returncode == 0, result.stderr
    threads = max(1, len(os.sched_getaffinity(0)) // 2)  # what nproc counts, over 2 jobs
    commands = cell_commands(result.stdout)
    assert len(commands) == 4
    for cell, argv in zip(CELLS, commands, strict=True):
        optimizer, seed = cell.split("/")
        assert argv[:2] == [f"OMP_NUM_THREADS={threads}", f"MKL_NUM_THREADS={threads}"]
        assert argv[2:7] == [sys.executable, "-m", "graph_exps.train", "--measure", "--config"]
        assert argv[7:10] == [str(CONFIG), f"optimizer.name={optimizer}", f"seed={seed[4:]}"]
        assert argv[10:] == [f"run_dir={out / cell}", "train.progress=false", *data]
    assert not out.exists()


def test_grid_values_name_the_cell_dirs_and_each_job_gets_one_gpu(tmp_path) -> None:
    args = ["--config", str(CONFIG), "--optimizers", "sam", "--grid", "optimizer.rho=0.01,0.1"]
    args += ["--grid", "model.hidden=8", "--jobs", "2", "--out", str(tmp_path), "--dry-run"]
    result = sweep(*args, CUDA_VISIBLE_DEVICES="3,5")
    assert result.returncode == 0, result.stderr
    commands = cell_commands(result.stdout)
    for rho, gpu, argv in zip(("0.01", "0.1"), ("3", "5"), commands, strict=True):
        assert f"CUDA_VISIBLE_DEVICES={gpu}" in argv[:3]
        grid = f"optimizer.rho={rho},model.hidden=8"
        run_dir = f"run_dir={tmp_path}/sam/{grid}/seed0"
        assert argv[-4:] == [*grid.split(","), run_dir, "train.progress=false"]


def test_an_interrupted_cell_resumes_and_a_failing_cell_does_not_stop_the_others(
    data, tmp_path
) -> None:
    """sam with rho = -1 (refused by the config's validation) and rho = 0.05, whose run was
    killed (SIGKILL) after its second checkpoint."""
    args = ["--config", str(CONFIG), "--optimizers", "sam", "--grid", "optimizer.rho=-1,0.05"]
    args += ["--out", str(tmp_path), "--", *data]
    bad, good = tmp_path / "sam/optimizer.rho=-1/seed0", tmp_path / "sam/optimizer.rho=0.05/seed0"
    argv = cell_commands(sweep("--dry-run", *args).stdout)[1]
    assert f"run_dir={good}" in argv and argv[3] == "-m"
    driver = [argv[2], "tests/fault_driver.py", "checkpoint.pt", "2", "after", "--"]
    killed = subprocess.run(
        [*driver, *argv[4:], "train.checkpoint_every=1"],  # SIGKILL after the 2nd checkpoint
        cwd=REPO,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        capture_output=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL
    assert (good / "checkpoint.pt").exists() and not (good / "summary.json").exists()

    result = sweep(*args)  # --jobs 1: the cells' output on the terminal
    assert result.returncode == 1
    out = result.stdout
    assert "optimizer.rho must be >= 0" in result.stderr and f"resuming {good}" in out
    assert out.index("== cell 1/2: sam/optimizer.rho=-1/seed0") < out.index("== cell 2/2")
    assert "2 cells: 1 done, 1 failed" in out
    listed = out.split("failed cells:\n", 1)[1].splitlines()
    assert len(listed) == 1 and f"run_dir={bad}" in listed[0] and "optimizer.rho=-1" in listed[0]
    assert read_json(good / "summary.json", fix="")["resumed"] == 1
    assert read_yaml(good / "config.yaml", verify="")["optimizer"]["rho"] == 0.05
    assert all((good / name).exists() for name in MEASURED) and not bad.exists()


# ------------------------------------------------------------------------ SLURM
def test_slurm_dry_run_is_one_array_whose_tasks_run_one_cell_each(matrix, tmp_path) -> None:
    _, out, args = matrix
    options = ["--slurm", "--dry-run", "--partition", "gpu", "--time", "01:00:00", "--gpus", "1"]
    cut = args.index("--jobs")  # [..., "--jobs", "2", "--", overrides]
    result = sweep(*args[:cut], *options, *args[cut + 2 :], cwd=out.parent)
    assert result.returncode == 0, result.stderr
    script = result.stdout
    sbatch = {line for line in script.splitlines() if line.startswith("#SBATCH ")}
    assert {f"#SBATCH {o}" for o in ("--array=0-3", "--partition=gpu", "--time=01:00:00")} <= sbatch
    assert {"#SBATCH --gres=gpu:1", "#SBATCH --cpus-per-task=4"} <= sbatch
    assert f'#SBATCH --output="{out}/logs/%A_%a.out"' in sbatch
    assert {"#SBATCH --requeue", "#SBATCH --open-mode=append"} <= sbatch
    assert "torch.distributed.run" not in script
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    task = subprocess.run(
        ["bash", str(path)],
        cwd=tmp_path,
        env={**os.environ, "SLURM_ARRAY_TASK_ID": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert task.returncode == 0, task.stderr
    assert f"{out / CELLS[1]} is already finished" in task.stdout  # finished by the sweep
    assert all(str(out / cell) not in task.stdout for cell in CELLS if cell != CELLS[1])

    two = sweep(*args[:cut], *options[:2], "--gpus", "2", "--jobs", "2", cwd=out.parent).stdout
    assert "-m torch.distributed.run --standalone --nproc_per_node=2 -m graph_exps.train" in two
    assert {"#SBATCH --gres=gpu:2", "#SBATCH --array=0-3%2"} <= set(two.splitlines())


def test_slurm_submits_one_array_with_sbatch(tmp_path) -> None:
    bin_dir, record = tmp_path / "bin", tmp_path / "sbatch"
    bin_dir.mkdir()
    fake = bin_dir / "sbatch"
    lines = [f'echo "$@" >>{record}.args', f"cat >>{record}.stdin", 'echo "Submitted batch job 42"']
    fake.write_text("#!/bin/sh\n" + "\n".join(lines) + "\n")  # records its arguments and stdin
    fake.chmod(0o755)
    out = tmp_path / "out"
    path = f"{bin_dir}:{os.environ['PATH']}"
    result = sweep("--config", str(CONFIG), *MATRIX, "--out", str(out), "--slurm", PATH=path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Submitted batch job 42"
    assert len(Path(f"{record}.args").read_text().splitlines()) == 1  # one submission
    script = Path(f"{record}.stdin").read_text()
    assert script.startswith("#!/bin/bash\n") and "#SBATCH --array=0-3" in script.splitlines()
    assert (out / "logs").is_dir() and not (out / "sgd").exists()  # nothing ran here


def test_slurm_without_sbatch_is_refused(tmp_path) -> None:
    path = "/usr/bin:/bin"
    if shutil.which("sbatch", path=path):
        pytest.skip("this machine has sbatch")
    result = sweep("--config", str(CONFIG), "--out", str(tmp_path / "out"), "--slurm", PATH=path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: sbatch not found")
    assert len(result.stderr.splitlines()) == 1


# ------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--config", "graph_exps/configs/nope.yaml"],
        ["--config", "tests/toy_regression.yaml"],  # not a domain's config
        ["--config", str(CONFIG), "--bogus"],
        ["--config", str(CONFIG), "stray=1"],
        ["--config", str(CONFIG), "--grid", "optimizer.rho"],
        ["--config", str(CONFIG), "--grid", "optimizer.rho="],
        ["--config", str(CONFIG), "--grid", "optimizer.rho=0.1,,0.2"],
        ["--config", str(CONFIG), "--jobs", "0"],
        ["--config", str(CONFIG), "--jobs", "two"],
        ["--config", str(CONFIG), "--partition", "gpu"],
        ["--config", str(CONFIG), "--time", "01:00:00"],
        ["--config", str(CONFIG), "--gpus", "1"],
        ["--config", str(CONFIG), "--jobs"],
    ],
)
def test_bad_input_is_refused_in_one_line(args) -> None:
    result = sweep("--dry-run", *args)  # (a sweep that was not refused would run nothing)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_help_documents_the_options() -> None:
    result = sweep("--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: scripts/sweep.sh")
    words = "--optimizers --grid --out --jobs --slurm --partition --time --gpus --dry-run"
    for word in [*words.split(), "seed<S>", "idempotence", "PYTHON", "OMP_NUM_THREADS"]:
        assert word in result.stdout


# ------------------------------------------------------------------------ train --measure
@pytest.fixture
def finished(matrix, tmp_path) -> Path:
    """A copy of a finished, measured cell of the sweep, to change freely."""
    run = tmp_path / "run"
    shutil.copytree(matrix[1] / CELLS[0], run, ignore=shutil.ignore_patterns(".lock"))
    return run


def measure_again(data: list[str], run: Path, *extra: str) -> int:
    argv = ["--config", str(CONFIG), *data, "optimizer.name=sgd", "seed=0", f"run_dir={run}"]
    return train_main(TASK, [*argv, "train.progress=false", "--measure", *extra])


def test_measure_skips_a_measurement_made_with_the_same_options(data, finished, capsys) -> None:
    before = {name: stamp(finished / name) for name in MEASURED}
    capsys.readouterr()
    assert measure_again(data, finished) == 0
    assert {name: stamp(finished / name) for name in MEASURED} == before
    out = capsys.readouterr().out
    for name in MEASURED:
        kind = name.removesuffix(".json")
        assert f"{kind}: already measured ({finished / name}); delete it to measure again" in out


def test_a_changed_option_measures_that_measurement_again(data, finished) -> None:
    before = {name: stamp(finished / name) for name in MEASURED}
    assert read_json(finished / "hessian.json", fix="")["options"]["n_probes"] == 4  # smoke
    assert measure_again(data, finished, "hessian.n_probes=3") == 0
    assert read_json(finished / "hessian.json", fix="")["options"]["n_probes"] == 3
    assert stamp(finished / "hessian.json") != before["hessian.json"]
    assert {n: stamp(finished / n) for n in MEASURED[1:]} == {n: before[n] for n in MEASURED[1:]}


@pytest.mark.parametrize("damage", ["corrupted", "unfinished", "without options"])
def test_a_damaged_or_unusable_measurement_is_made_again(data, finished, damage) -> None:
    path = finished / "hessian.json"
    if damage == "corrupted":
        path.write_text(path.read_text().replace('"finished": true', '"finished": false'))
    else:  # a valid file the skip must not trust
        out = read_json(path, fix="")
        if damage == "unfinished":
            out["finished"] = False
        else:
            del out["options"]
        write_json(path, out)
    others = {name: stamp(finished / name) for name in MEASURED[1:]}
    assert measure_again(data, finished) == 0
    out = read_json(path, fix="")  # verifies again
    assert out["finished"] is True and out["options"]["n_probes"] == 4
    assert {name: stamp(finished / name) for name in MEASURED[1:]} == others


def test_select_tunes_each_optimizers_own_grid_then_runs_the_seeds_at_the_choice(tmp_path, data):
    # a fold axis for every optimizer (pooled by the choice) and a rho axis for sam only
    args = ["--config", str(CONFIG), "--optimizers", "sgd sam", "--seeds", "0 1"]
    args += ["--grid", "data.fold=0,1", "--grid", "sam:optimizer.rho=0.02,0.2"]
    args += ["--select", "--out", str(tmp_path), "--jobs", "2"]
    done = sweep(*args, "--", *data)
    assert done.returncode == 0, done.stderr
    assert "tuning: 6 cells" in done.stdout  # seed 0: sgd's 2 folds, sam's 2 folds x 2 rho
    choice = read_json(tmp_path / "sam" / "selection.json", fix="")["selections"]
    (rho,) = [c["chosen"]["optimizer.rho"] for c in choice]
    assert [p["n"] for p in choice[0]["grid"]] == [2, 2]  # both folds pooled per rho
    assert f"sam: chosen on validation data: optimizer.rho={rho}" in done.stdout
    cells = sorted(str(p.parent.relative_to(tmp_path)) for p in tmp_path.rglob("summary.json"))
    other = 0.2 if rho == 0.02 else 0.02
    expected = [f"sgd/data.fold={f}/seed{s}" for f in (0, 1) for s in (0, 1)]
    expected += [f"sam/data.fold={f},optimizer.rho={r}/seed0" for f in (0, 1) for r in (rho, other)]
    expected += [f"sam/data.fold={f},optimizer.rho={rho}/seed1" for f in (0, 1)]
    assert cells == sorted(expected)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--select"], "--select chooses among --grid values"),
        (["--tune-seeds", "0"], "--tune-seeds needs --select"),
        (["--grid", "wsam:optimizer.rho=0.1", "--select"], "wsam is not one of --optimizers"),
        (["--grid", "sam:optimizer.rho=0.1", "--select", "--tune-seeds", "7"], "7 is not one of"),
    ],
)
def test_select_refusals(extra, message):
    done = sweep("--config", str(CONFIG), "--optimizers", "sgd sam", "--seeds", "0 1", *extra)
    assert done.returncode == 2 and message in done.stderr
    assert done.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "says"),
    [
        # a space before the key slipped past the own-key check and set both cells' seed
        (["--", "smoke=true", " seed=5"], "' seed' is not a config key"),
        (["--", "smoke=true", "seed\t=5"], "holds a control character"),
        (["--grid", "optimizer.rho=0.01\t,0.05"], "holds a control character"),
        (["--grid", "optimizer.rho=0.01\n0.05"], "holds a control character"),
        (["--grid", "optimizer rho=0.01,0.05"], "is not a config key"),
        (["--slurm", "--dry-run", "--out", "runs/x\ntouch /tmp/pwned"], "--out holds a control"),
        (["--slurm", "--dry-run", "--partition", "gpu\nrm -rf ~"], "--partition holds a control"),
    ],
)
def test_names_and_values_that_would_not_parse_are_refused(args, says):
    # the training command's keys are dotted identifiers; a tab or newline split a grid's
    # pairs, dropped values, or ended a line of the generated sbatch script
    done = sweep("--config", str(CONFIG), *MATRIX, *args)
    assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""
