"""Fault injection: the image trainer and its measurement commands, killed at random moments
and at each write, their files damaged, two commands on one run directory at once.

Each case ends with nothing lost (a rerun of the same command ends bit-identical to an
unbroken run), nothing silently wrong (a damaged file is refused with exit status 2 and one
``error:`` line naming it, or the result equals the original) and no traceback.

Randomness comes from seeds: ``FLATMINIMA_FAULT_SEEDS="0 1"`` (the default, in ``make
test``); ``FLATMINIMA_FAULT_SEEDS="$(seq 0 19)"`` for a longer hunt. The commands run as
processes forked from ``tests/fault_driver.py --serve``, which has imported the project once
(a fresh interpreter spends seconds in ``import torch``); a child is a process of its own,
killed with real signals, and ``python tests/fault_driver.py NAME K before|after -- MODULE
ARGS`` reproduces any write fault from a shell.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).resolve().parent / "fault_driver.py"
SEEDS = [int(s) for s in os.environ.get("FLATMINIMA_FAULT_SEEDS", "0 1").split()]
TIMEOUT = 120  # seconds for any one command (each takes about one)

# 256 digits, 8 steps an epoch, 3 epochs; Adam so that validation accuracy moves and
# best.pt is written more than once (epochs 1 and 2, not 3)
TRAIN = [
    "train.progress=false",
    "data.n_examples=256",
    "train.batch_size=32",
    "train.epochs=3",
    "optimizer.base=adam",
    "optimizer.lr=0.01",
    "optimizer.momentum=null",
]
CONFIGS = {
    "sam": [*TRAIN, "optimizer.name=sam", "train.checkpoint_every=2"],
    "nso": [*TRAIN, "optimizer.name=nso", "train.checkpoint_every=1"],
}
MEASURE = {
    "hessian": ["hessian.n_probes=2", "hessian.n_examples=20", "hessian.batch_size=20"],
    "noise_stability": [
        "noise_stability.n_samples=2",
        "noise_stability.n_examples=20",
        "noise_stability.batch_size=20",
        "noise_stability.sigma=[0.01,0.05]",
    ],
}
INTERRUPTED = "interrupted: rerun the same command to resume"
RUN_FILES = ("checkpoint.pt", "best.pt", "metrics.csv", "summary.json", "config.yaml", "run.json")


def train_argv(config: str, run_dir: Path) -> list[str]:
    return ["image_exps.train", *CONFIGS[config], f"run_dir={run_dir}"]


def measure_argv(kind: str, run_dir: Path) -> list[str]:
    return [f"image_exps.{kind}", f"run_dir={run_dir}", "train.progress=false", *MEASURE[kind]]


def tables_argv(path: Path) -> list[str]:
    return ["common.tables", str(path)]


# -- the commands, as processes -------------------------------------------------------------
@dataclass
class Result:
    rc: int | None  # negative: killed by that signal; None: timed out (then killed)
    out: str
    err: str

    def __str__(self) -> str:
        return f"exit {self.rc}\nstdout:\n{self.out[-2000:]}\nstderr:\n{self.err[-3000:]}"


class Child:
    def __init__(self, server: Server, pid: int, out: Path, err: Path) -> None:
        self.server, self.pid, self.out, self.err = server, pid, out, err

    def wait(self, timeout: float = TIMEOUT) -> Result:
        rc = self.server.ask({"op": "wait", "pid": self.pid, "timeout": timeout}, timeout + 30)
        return Result(rc["rc"], self.out.read_text(), self.err.read_text())


class Server:
    """``tests/fault_driver.py --serve``: forks a process per command."""

    def __init__(self, logs: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, str(DRIVER), "--serve"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.logs, self.n = logs, 0
        self._reply(300)  # {"ready": pid}

    def _reply(self, timeout: float) -> dict[str, Any]:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""  # type: ignore[union-attr]
        if not line:
            raise RuntimeError(f"fault_driver --serve did not answer (exit {self.proc.poll()})")
        return json.loads(line)

    def ask(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(request) + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return self._reply(timeout)

    def spawn(self, argv: list[str], fault: tuple | None = None, renames: Path | None = None):
        self.n += 1
        out, err = self.logs / f"{self.n}.out", self.logs / f"{self.n}.err"
        request = {
            "op": "spawn",
            "argv": argv,
            "fault": fault,
            "out": str(out),
            "err": str(err),
            "renames": str(renames) if renames else None,
        }
        return Child(self, self.ask(request, 60)["pid"], out, err)

    def run(self, argv: list[str], fault: tuple | None = None, **kw: Any) -> Result:
        return self.spawn(argv, fault, **kw).wait()

    def close(self) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("logs"))
    yield s
    s.close()


# -- what a run directory holds ---------------------------------------------------------------
def load(path: Path) -> dict[str, Any]:
    return torch.load(path, weights_only=True)


def metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def same(a: Any, b: Any, where: str = "") -> list[str]:
    """Where ``a`` and ``b`` differ (tensors bit for bit, containers recursively)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        ok = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
        return [] if ok else [f"{where} differs"]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where}: keys {sorted(map(str, a))} != {sorted(map(str, b))}"]
        return [d for k in a for d in same(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return [f"{where}: length {len(a)} != {len(b)}"]
        pairs = enumerate(zip(a, b, strict=True))
        return [d for i, (x, y) in pairs for d in same(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def run_differences(run_dir: Path, ref: Path) -> list[str]:
    """How the finished run in ``run_dir`` differs from the unbroken one in ``ref``:
    weights and optimizer state of checkpoint.pt, best.pt's weights, metrics.csv without
    its seconds, summary.json's test and best_val, config.yaml, run.json."""
    problems: list[str] = []

    def check(what: str, fn: Callable[[], list[str]]) -> None:
        try:
            problems.extend(f"{what}: {p}" for p in fn())
        except Exception as e:  # unreadable: that is a difference too
            problems.append(f"{what}: cannot be read ({type(e).__name__}: {e})")

    def ckpt() -> list[str]:
        a, b = load(run_dir / "checkpoint.pt"), load(ref / "checkpoint.pt")
        return same(
            [a["model"], a["optimizer"], a["step"], a.get("finished")],
            [b["model"], b["optimizer"], b["step"], b.get("finished")],
            "[model, optimizer, step, finished]",
        )

    def summary() -> list[str]:
        a = json.loads((run_dir / "summary.json").read_text())
        b = json.loads((ref / "summary.json").read_text())
        return same([a["test"], a["best_val"]], [b["test"], b["best_val"]], "[test, best_val]")

    check("checkpoint.pt", ckpt)
    check(
        "best.pt", lambda: same(load(run_dir / "best.pt")["model"], load(ref / "best.pt")["model"])
    )
    check("metrics.csv", lambda: same(metrics_rows(run_dir), metrics_rows(ref), "rows"))
    check("summary.json", summary)
    check(
        "config.yaml", lambda: same(text_of(run_dir / "config.yaml"), text_of(ref / "config.yaml"))
    )
    check("run.json", lambda: same(domain_of(run_dir), domain_of(ref), "domain"))
    return problems


def text_of(path: Path) -> str:
    """The file's text without its ``run_dir:`` line (a copied run keeps its source's) and
    the checksum line that covers it."""
    text = re.sub(r"(?m)^# sha256: [0-9a-f]{64}\n", "", path.read_text())
    return re.sub(r"(?m)^run_dir: .*$", "run_dir: ...", text)


def domain_of(run_dir: Path) -> Any:
    """What run.json says (its ``entry_points`` is a hint for people, read by no code)."""
    return json.loads((run_dir / "run.json").read_text())["domain"]


def assert_same_run(run_dir: Path, ref: Path) -> None:
    problems = run_differences(run_dir, ref)
    assert not problems, "\n".join(problems)


def temporaries(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.iterdir() if p.name.endswith(".tmp"))


def copy_run(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> Path:
    dst.mkdir(parents=True)
    for path in src.iterdir():
        if path.is_file() and path.name not in skip and path.name != ".lock":
            shutil.copy2(path, dst / path.name)
    return dst


def measurement(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


# -- references: unbroken runs ------------------------------------------------------------------
@dataclass
class Reference:
    run_dir: Path
    seconds: float  # wall time of the command
    renames: dict[str, int]  # os.replace calls by file name during the unbroken run


@pytest.fixture(scope="module")
def reference(server, tmp_path_factory) -> Callable[[str], Reference]:
    cache: dict[str, Reference] = {}

    def get(config: str) -> Reference:
        if config not in cache:
            base = tmp_path_factory.mktemp(f"reference_{config}")
            start = time.monotonic()
            r = server.run(train_argv(config, base / "run"), renames=base / "renames.json")
            assert r.rc == 0, r
            seconds = time.monotonic() - start
            renames = json.loads((base / "renames.json").read_text())
            cache[config] = Reference(base / "run", seconds, renames)
        return cache[config]

    return get


@dataclass
class Measured:
    run_dir: Path  # the finished sam run, with hessian.json and noise_stability.json
    hessian: dict[str, Any]
    noise_stability: dict[str, Any]
    table: str  # python -m common.tables run_dir: its stdout


@pytest.fixture(scope="module")
def measured(server, reference, tmp_path_factory) -> Measured:
    run_dir = copy_run(reference("sam").run_dir, tmp_path_factory.mktemp("measured") / "run")
    for kind in MEASURE:
        r = server.run(measure_argv(kind, run_dir))
        assert r.rc == 0 and r.err == "", r
    table = server.run(tables_argv(run_dir))
    assert table.rc == 0 and table.err == "" and "| sam |" in table.out, table
    return Measured(
        run_dir,
        measurement(run_dir / "hessian.json"),
        measurement(run_dir / "noise_stability.json"),
        table.out,
    )


@pytest.fixture(scope="module")
def unfinished(server, reference, tmp_path_factory) -> Path:
    """The sam run killed just after its metrics.csv of epoch 2 (checkpoint of step 16)."""
    reference("sam")  # the unbroken run it is compared with
    run_dir = tmp_path_factory.mktemp("unfinished") / "run"
    r = server.run(train_argv("sam", run_dir), ("metrics.csv", 2, "after"))
    assert r.rc == -signal.SIGKILL, r
    assert load(run_dir / "checkpoint.pt")["step"] == 16 and not (run_dir / "summary.json").exists()
    return run_dir


def no_traceback(r: Result) -> None:
    assert "Traceback" not in r.err and "Traceback" not in r.out, r


# 1 -- killed at random moments --------------------------------------------------------------------
SIGNALS = (signal.SIGKILL, signal.SIGINT, signal.SIGTERM)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_signals_then_the_same_command_ends_bit_identical(
    server, reference, tmp_path, seed
) -> None:
    """2-3 signals in a row (SIGKILL, SIGINT, SIGTERM in turn from the seed) after random
    delays, each followed by the same command; the last run goes to the end and equals an
    unbroken run: weights, optimizer state, metrics rows, test metrics."""
    config = ("sam", "nso")[seed % 2]
    ref = reference(config)
    rng = random.Random(f"signals-{seed}")
    run_dir = tmp_path / "run"
    argv = train_argv(config, run_dir)
    for i in range(rng.randint(2, 3)):
        sig = SIGNALS[(seed + i) % 3]
        child = server.spawn(argv)
        time.sleep(rng.uniform(0.0, 1.0) * ref.seconds)
        os.kill(child.pid, sig)  # a child that has ended is a zombie until waited for
        r = child.wait()
        no_traceback(r)
        if r.rc == 0:  # it ended before the signal came
            assert (run_dir / "summary.json").exists(), r
        elif sig == signal.SIGINT:
            assert r.rc == 130 and r.err == INTERRUPTED + "\n", r
        else:  # SIGKILL, and SIGTERM (no handler: Python's default, no traceback)
            assert r.rc == -sig, r
    r = server.run(argv)
    assert r.rc == 0 and r.err == "", r
    problems = run_differences(run_dir, ref.run_dir)
    assert not problems, "\n".join(problems)
    assert not temporaries(run_dir)


def test_ctrl_c_while_starting_up_prints_no_traceback(tmp_path) -> None:
    """A fresh interpreter (not a fork of the server): SIGINT during its imports."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "image_exps.train", *CONFIGS["sam"], f"run_dir={tmp_path}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)  # the imports take several seconds
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 130 and err == INTERRUPTED + "\n", f"exit {proc.returncode}\n{err}"


# 2 -- killed at the moment of a write -------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("target", RUN_FILES)
def test_sigkill_at_a_write_then_the_same_command_ends_bit_identical(
    server, reference, tmp_path, target, seed
) -> None:
    """SIGKILL just before or just after the rename of the k-th write of ``target`` (k
    random), once or twice in a row, then the same command to the end."""
    index = RUN_FILES.index(target)
    config = ("sam", "nso")[(seed + index // 2) % 2]
    ref = reference(config)
    rng = random.Random(f"write-{target}-{seed}")
    first = ("before", "after")[(seed + index) % 2]  # seeds 0 and 1 do both for every file
    plan = [first] + (["after" if first == "before" else "before"] if rng.random() < 0.5 else [])
    run_dir = tmp_path / "run"
    argv = train_argv(config, run_dir)
    writes = ref.renames[target]
    for i, when in enumerate(plan):
        k = rng.randint(1, writes if i == 0 else max(1, writes // 2))
        r = server.run(argv, (target, k, when))
        no_traceback(r)
        if i == 0:  # a fresh run makes every write: the fault fires
            assert r.rc == -signal.SIGKILL, r
        else:
            assert r.rc in (0, -signal.SIGKILL), r
    r = server.run(argv)
    assert r.rc == 0 and r.err == "", r
    problems = run_differences(run_dir, ref.run_dir)
    assert not problems, "\n".join(problems)
    assert not temporaries(run_dir)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", list(MEASURE))
def test_sigkill_at_a_measurement_write_then_the_same_command(
    server, measured, tmp_path, kind, seed
) -> None:
    name = f"{kind}.json"
    run_dir = copy_run(measured.run_dir, tmp_path / "run", skip=(name,))
    when = ("before", "after")[(seed + list(MEASURE).index(kind)) % 2]
    r = server.run(measure_argv(kind, run_dir), (name, 1, when))
    no_traceback(r)
    assert r.rc == -signal.SIGKILL, r
    expected = getattr(measured, kind)
    if when == "before":
        assert not (run_dir / name).exists()
    else:  # the rename is atomic: the file is whole
        assert measurement(run_dir / name) == expected
    r = server.run(measure_argv(kind, run_dir))
    assert r.rc == 0 and r.err == "", r
    assert measurement(run_dir / name) == expected
    assert not temporaries(run_dir)


# 3 -- damaged files -------------------------------------------------------------------------------
def damage(path: Path, how: str, rng: random.Random) -> None:
    data = bytearray(path.read_bytes())
    if how == "flip":  # one bit anywhere
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif how == "bytes":  # 64 random bytes over the file at a random offset
        n = min(64, len(data))
        at = rng.randrange(len(data) - n + 1)
        data[at : at + n] = bytes(rng.randrange(256) for _ in range(n))
    elif how == "half":
        del data[len(data) // 2 :]
    else:  # empty
        data = bytearray()
    path.write_bytes(bytes(data))


def refusal_problems(r: Result, name: str) -> list[str]:
    """Exit 2 must come with one ``error:`` line (a message may continue on indented
    lines) that names the damaged file."""
    errors = [line for line in r.err.splitlines() if line.startswith("error: ")]
    if len(errors) != 1:
        return [f"exit 2 with {len(errors)} error lines"]
    if name not in r.err[r.err.index("error: ") :]:
        return [f"the error does not name {name}: {errors[0]}"]
    return []


def settings(hessian: dict[str, Any]) -> dict[str, Any]:
    """What a hessian.json records about how it measured (all but the numbers found)."""
    out = {k: v for k, v in hessian.items() if k not in ("trace", "eigenvalues", "esd")}
    return {**out, "trace": hessian["trace"]["record"], "eig": hessian["eigenvalues"]["record"]}


def parses(path: Path) -> bool:
    try:
        json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return True


#: (state, damaged file, the commands that read it, in order)
DAMAGE_CASES = [
    ("finished", "checkpoint.pt", ("train",)),
    ("finished", "best.pt", ("hessian",)),
    ("finished", "summary.json", ("train", "tables")),
    ("finished", "metrics.csv", ("train",)),
    ("finished", "config.yaml", ("hessian",)),
    ("finished", "run.json", ("train",)),
    ("finished", "hessian.json", ("tables",)),
    ("finished", "noise_stability.json", ("tables",)),
    ("unfinished", "checkpoint.pt", ("train",)),
    ("unfinished", "best.pt", ("train",)),
    ("unfinished", "metrics.csv", ("train",)),
    ("unfinished", "config.yaml", ("train",)),
    ("unfinished", "run.json", ("train",)),
]
DAMAGES = [(how, seed) for how in ("flip", "bytes") for seed in SEEDS] + [
    ("half", 0),
    ("empty", 0),
]


@pytest.mark.parametrize(("how", "seed"), DAMAGES, ids=[f"{h}-{s}" for h, s in DAMAGES])
@pytest.mark.parametrize(
    ("state", "name", "readers"), DAMAGE_CASES, ids=[f"{s}-{n}" for s, n, _ in DAMAGE_CASES]
)
def test_a_damaged_file_is_refused_by_name_or_the_result_is_right(
    server, reference, measured, unfinished, tmp_path, state, name, readers, how, seed
) -> None:
    """One bit, 64 random bytes, the second half or everything of one file gone; then each
    command that reads it: exit 2 naming the file, or exit 0 and the right result (a train
    rerun: the whole run directory equals the unbroken run's)."""
    src = measured.run_dir if state == "finished" else unfinished
    run_dir = copy_run(src, tmp_path / "run")
    damage(run_dir / name, how, random.Random(f"{name}-{how}-{seed}"))
    ref = reference("sam").run_dir
    problems: list[str] = []
    for reader in readers:
        argv = {
            "train": train_argv("sam", run_dir),
            "hessian": measure_argv("hessian", run_dir),
            "tables": tables_argv(run_dir),
        }[reader]
        r = server.run(argv)
        if "Traceback" in r.err or r.rc not in (0, 2):
            problems.append(f"{reader}: {r}")
        elif r.rc == 2:
            problems += [f"{reader}: {p}\n{r}" for p in refusal_problems(r, name)]
        elif reader == "train":  # the run directory, whole, equals the unbroken run
            problems += [f"train exit 0, but {p}" for p in run_differences(run_dir, ref)]
        elif reader == "hessian":
            result = measurement(run_dir / "hessian.json")
            # config.yaml's hessian section holds the measurement's defaults: a damaged
            # one may change how it measures, which hessian.json records
            if result != measured.hessian and settings(result) == settings(measured.hessian):
                problems.append("hessian exit 0 with another result than the undamaged run's")
        elif r.out != measured.table:
            problems.append(f"tables exit 0 with another table:\n{r.out}\nnot\n{measured.table}")
    assert not problems, "\n".join(problems)


# 4 -- two commands on one run directory -----------------------------------------------------------
def holder_of(r: Result, command: str, pid: int) -> None:
    assert r.rc == 2 and len(r.err.splitlines()) == 1 and r.err.startswith("error: "), r
    assert f"is in use by python -m {command} (pid {pid} " in r.err, r


@pytest.mark.parametrize("configs", [("sam", "sam"), ("sam", "nso")], ids=["same", "other"])
def test_two_trainings_at_once_one_wins(server, reference, tmp_path, configs) -> None:
    run_dir = tmp_path / "run"
    children = [server.spawn(train_argv(c, run_dir)) for c in configs]
    results = [c.wait() for c in children]
    assert sorted(r.rc for r in results) == [0, 2], "\n".join(map(str, results))
    won = [r.rc for r in results].index(0)
    holder_of(results[1 - won], "image_exps.train", children[won].pid)
    assert_same_run(run_dir, reference(configs[won]).run_dir)
    again = server.run(train_argv(configs[1 - won], run_dir))  # the loser, now alone
    no_traceback(again)
    if configs[0] == configs[1]:
        assert again.rc == 0 and "already finished" in again.out, again
    else:
        assert again.rc == 2 and "holds a run with a different config" in again.err, again
    assert_same_run(run_dir, reference(configs[won]).run_dir)


def wait_for_holder(run_dir: Path, pid: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while f"(pid {pid} " not in _read(run_dir / ".lock"):
        assert time.monotonic() < deadline, "the command never took the lock"
        time.sleep(0.001)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


@pytest.mark.parametrize("first", ["train", "hessian"])
def test_a_measurement_and_a_training_exclude_each_other(
    server, reference, unfinished, tmp_path, first
) -> None:
    """The unfinished run resumed and measured at once: whichever holds the run directory
    first ends undisturbed, the other is refused naming it; the training then ends alone."""
    run_dir = copy_run(unfinished, tmp_path / "run")
    argv = {"train": train_argv("sam", run_dir), "hessian": measure_argv("hessian", run_dir)}
    second = "hessian" if first == "train" else "train"
    holder = server.spawn(argv[first])
    wait_for_holder(run_dir, holder.pid)
    refused = server.run(argv[second])
    done = holder.wait()
    assert done.rc == 0, done
    holder_of(refused, f"image_exps.{first}", holder.pid)
    if first == "hessian":  # it measured the checkpoint of step 16; now the training
        assert measurement(run_dir / "hessian.json")["step"] == 16
        r = server.run(argv["train"])
        assert r.rc == 0, r
    assert_same_run(run_dir, reference("sam").run_dir)


# 5 -- each defect these tests found, reproduced on its own (each failed before its fix) ---
def test_sigkill_before_the_first_rename_of_run_json_leaves_a_resumable_run_dir(
    server, reference, tmp_path
) -> None:
    run_dir = tmp_path / "run"
    r = server.run(train_argv("sam", run_dir), ("run.json", 1, "before"))
    assert r.rc == -signal.SIGKILL, r
    r = server.run(train_argv("sam", run_dir))
    assert r.rc == 0, r
    assert_same_run(run_dir, reference("sam").run_dir)


def test_a_run_dir_whose_first_write_is_under_way_is_refused_as_in_use(server, tmp_path) -> None:
    """The holder is this test: it holds the lock and has begun writing run.json."""
    import fcntl

    with open(tmp_path / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.write(f"python -m image_exps.train (pid {os.getpid()} on here, now)")
        lock.flush()
        (tmp_path / f".run.json.{os.getpid()}.tmp").write_text("{")
        r = server.run(train_argv("sam", tmp_path))
    holder_of(r, "image_exps.train", os.getpid())


def test_sigkill_before_the_last_metrics_csv_keeps_every_row(server, reference, tmp_path) -> None:
    run_dir, ref = tmp_path / "run", reference("sam")
    last = ref.renames["metrics.csv"]
    r = server.run(train_argv("sam", run_dir), ("metrics.csv", last, "before"))
    assert r.rc == -signal.SIGKILL, r
    r = server.run(train_argv("sam", run_dir))
    assert r.rc == 0, r
    assert metrics_rows(run_dir) == metrics_rows(ref.run_dir)


def test_a_finished_runs_emptied_metrics_csv_is_rewritten_or_refused(
    server, measured, tmp_path
) -> None:
    run_dir = copy_run(measured.run_dir, tmp_path / "run")
    (run_dir / "metrics.csv").write_text("")
    r = server.run(train_argv("sam", run_dir))
    no_traceback(r)
    if r.rc == 2:
        assert not refusal_problems(r, "metrics.csv"), r
    else:
        assert r.rc == 0 and metrics_rows(run_dir) == metrics_rows(measured.run_dir), r


def test_resuming_beside_a_damaged_config_yaml_repairs_or_refuses_it(
    server, reference, unfinished, tmp_path
) -> None:
    run_dir = copy_run(unfinished, tmp_path / "run")
    path = run_dir / "config.yaml"
    path.write_text(path.read_text().replace("lr: 0.01", "lr: 0.03"))  # one flipped bit
    r = server.run(train_argv("sam", run_dir))
    no_traceback(r)
    if r.rc == 2:
        assert not refusal_problems(r, "config.yaml"), r
    else:
        assert r.rc == 0, r
        assert_same_run(run_dir, reference("sam").run_dir)  # config.yaml included


def test_a_damaged_domain_in_run_json_is_named_as_damage(server, measured, tmp_path) -> None:
    run_dir = copy_run(measured.run_dir, tmp_path / "run")
    path = run_dir / "run.json"
    path.write_text(path.read_text().replace('"image"', '"imagu"'))  # e ^ 0x10 = u
    r = server.run(train_argv("sam", run_dir))
    no_traceback(r)
    assert r.rc == 2 and not refusal_problems(r, "run.json"), r


@pytest.mark.parametrize("key", ["run_dir", "test"])
def test_a_finished_runs_summary_json_without_a_key_is_refused(
    server, measured, tmp_path, key
) -> None:
    run_dir = copy_run(measured.run_dir, tmp_path / "run")
    path = run_dir / "summary.json"
    renamed = key[:-1] + chr(ord(key[-1]) ^ 0x01)  # one bit: "run_dir" -> "run_dis"
    path.write_text(path.read_text().replace(f'"{key}":', f'"{renamed}":'))
    r = server.run(train_argv("sam", run_dir))
    no_traceback(r)
    assert r.rc == 2 and not refusal_problems(r, "summary.json"), r


def test_a_bad_value_in_config_yaml_is_refused_naming_the_file(server, measured, tmp_path) -> None:
    run_dir = copy_run(measured.run_dir, tmp_path / "run")
    path = run_dir / "config.yaml"
    path.write_text(path.read_text().replace("distribution: null", "distribution: nuhl"))
    r = server.run(measure_argv("hessian", run_dir))
    no_traceback(r)
    assert r.rc == 2 and not refusal_problems(r, "config.yaml"), r


#: (file, the key path of the number the table shows)
TABULATED = [
    ("summary.json", ("test", "accuracy")),
    ("hessian.json", ("trace", "total")),
    ("noise_stability.json", ("results", 0, "mean")),
]


@pytest.mark.parametrize(("name", "keys"), TABULATED, ids=[n for n, _ in TABULATED])
def test_a_flipped_digit_of_a_tabulated_number_is_refused(
    server, measured, tmp_path, name, keys
) -> None:
    run_dir = copy_run(measured.run_dir, tmp_path / "run")
    path = run_dir / name

    def tabulated() -> Any:
        value = json.loads(path.read_text())
        for key in keys:
            value = value[key]
        return value

    original, text = tabulated(), path.read_text()
    at = text.index(json.dumps(original), text.index(f'"{keys[0]}"'))
    at = text.index(".", at) + 1  # its first decimal, to a neighbouring digit: 5.438 -> 5.538
    data = bytearray(text.encode())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
    assert tabulated() != original
    r = server.run(tables_argv(run_dir))
    no_traceback(r)
    assert r.rc == 2 and not refusal_problems(r, name), r


def test_a_measurement_of_the_unfinished_run_is_not_tabulated_once_it_finishes(
    server, measured, tmp_path
) -> None:
    run_dir = tmp_path / "run"
    r = server.run(train_argv("sam", run_dir), ("metrics.csv", 1, "after"))  # after epoch 1
    assert r.rc == -signal.SIGKILL, r
    r = server.run(measure_argv("hessian", run_dir))
    assert r.rc == 0 and "has not finished training" in r.err, r
    stale = measurement(run_dir / "hessian.json")
    assert stale["finished"] is False and stale["step"] == 8  # best.pt of epoch 1
    assert stale["trace"] != measured.hessian["trace"]  # the finished run's: epoch 2's
    assert server.run(train_argv("sam", run_dir)).rc == 0  # to the end: step 24
    r = server.run(tables_argv(run_dir))
    no_traceback(r)
    shown = f"{stale['trace']['total']:.4g}"
    assert (r.rc == 2 and "hessian.json" in r.err) or (r.rc == 0 and shown not in r.out), r


def test_a_damaged_best_pt_of_an_unfinished_run_is_refused_before_training_and_recoverable(
    server, unfinished, tmp_path
) -> None:
    run_dir = copy_run(unfinished, tmp_path / "run")
    (run_dir / "best.pt").write_bytes(b"")
    r = server.run(train_argv("sam", run_dir))
    assert r.rc == 2 and not refusal_problems(r, "best.pt"), r
    assert "epoch=3" not in r.out, "refused only after training the rest of the run"
    assert f"delete {run_dir} and train the run again" in r.err  # it cannot be recomputed
    shutil.rmtree(run_dir)  # as the message says
    r = server.run(train_argv("sam", run_dir))
    assert r.rc == 0, r


def test_a_file_size_limit_under_the_landscape_is_one_line_and_resumable(
    measured, tmp_path
) -> None:
    """Under ``ulimit -f`` the landscape's HDF5 writes failed inside the library and the
    process crashed (SIGSEGV) after a page of h5py tracebacks, its temporary file left."""
    import resource

    run_dir = copy_run(measured.run_dir, tmp_path / "run")
    argv = [sys.executable, "-m", "image_exps.landscape", f"run_dir={run_dir}"]
    argv += ["landscape.steps=3", "landscape.n_examples=20", "train.progress=false"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}

    def limited() -> None:  # 40 KiB: the weights are read, the landscape file is not written
        resource.setrlimit(resource.RLIMIT_FSIZE, (40 * 1024, resource.RLIM_INFINITY))

    r = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT,
                       preexec_fn=limited)  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.stderr.splitlines() == [
        f"error: cannot write {run_dir / 'landscape.h5'}: File too large; raise the file-size "
        "limit (ulimit -f) and rerun: the files written so far are whole, and the same "
        "command resumes"
    ]
    assert temporaries(run_dir) == [] and not (run_dir / "landscape.h5").exists()
    again = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (run_dir / "landscape.json").is_file()
