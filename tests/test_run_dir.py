"""Run directories that cannot be corrupted: locks, damaged files, foreign or stale files,
unfinished runs, edited configs, divergence and bad input (each failed before its fix)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from common.errors import RunDirError
from common.io import write_json, write_text
from common.train.checkpoint import load_checkpoint, save_checkpoint
from common.train.cli import measure_main, train_main
from common.train.config import load_config, save_config
from common.train.config_files import _sha256
from common.train.rundir import locked, name_label, run_dir_for
from common.train.trainer import Trainer, train
from image_exps.task import TASK, ImageConfig

ROOT = Path(__file__).resolve().parents[1]
FAST = ["train.progress=false", "data.n_examples=256", "train.batch_size=32"]


def cfg_for(run_dir: Path, *overrides: str) -> ImageConfig:
    return load_config(ImageConfig, TASK.default_config, [*FAST, f"run_dir={run_dir}", *overrides])


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "image_exps.train", *FAST, *args]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(*args), cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600
    )


def interrupted(cfg: ImageConfig, at_step: int) -> None:
    """Trains ``cfg`` until a Ctrl-C in step ``at_step`` (the run directory stays unfinished)."""
    real, calls = Trainer._step, []

    def dying(self, batch, share):
        calls.append(1)
        if len(calls) == at_step:
            raise KeyboardInterrupt
        return real(self, batch, share)

    with pytest.MonkeyPatch.context() as mp, pytest.raises(KeyboardInterrupt):
        mp.setattr(Trainer, "_step", dying)
        train(TASK, cfg)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished")
    train(TASK, cfg_for(run_dir, "train.epochs=1"))
    return run_dir


def copy_run(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for path in src.iterdir():
        if path.is_file():
            (dst / path.name).write_bytes(path.read_bytes())
    return dst


# 1 -- one command per run directory -------------------------------------------------------
def test_a_second_command_on_a_locked_run_dir_is_refused(tmp_path, capsys) -> None:
    with locked(tmp_path, "python -m image_exps.train"):
        assert train_main(TASK, [*FAST, f"run_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert "is in use by python -m image_exps.train (pid " in err and "another run_dir" in err
    assert not (tmp_path / "config.yaml").exists()  # nothing was written into it


def test_the_lock_dies_with_a_killed_process(tmp_path) -> None:
    args = ["train.epochs=2000", "train.checkpoint_every=1", f"run_dir={tmp_path}"]  # minutes
    first = subprocess.Popen(command(*args), cwd=ROOT, env=env(), stdout=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (tmp_path / "checkpoint.pt").exists() and time.time() < deadline:
            time.sleep(0.02)
        second = run(*args)
        assert first.poll() is None, "the first run ended too early to test anything"
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert f"in use by python -m image_exps.train (pid {first.pid}" in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    with locked(tmp_path, "the next command"):  # no stale lock after kill -9
        assert "the next command" in (tmp_path / ".lock").read_text()


def test_measurement_waits_for_no_one_and_is_refused_while_training(finished, capsys) -> None:
    with locked(finished, "python -m image_exps.train"):
        assert measure_main(TASK, "hessian", [f"run_dir={finished}"]) == 2
    assert "is in use by python -m image_exps.train" in capsys.readouterr().err


# 2, 3 -- damaged checkpoints --------------------------------------------------------------
def flip_a_weight_bit(path: Path) -> None:
    import zipfile

    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)  # the largest tensor
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start + info.file_size // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["bit flip", "64 random bytes", "empty", "truncated"])
def test_a_damaged_checkpoint_is_refused_on_resume(tmp_path, capsys, damage) -> None:
    run_dir = tmp_path / "run"
    trainer_args = [*FAST, f"run_dir={run_dir}", "train.epochs=2", "train.max_steps=4"]
    interrupted(
        cfg_for(run_dir, "train.epochs=2", "train.max_steps=4", "train.checkpoint_every=1"), 3
    )
    path = run_dir / "checkpoint.pt"
    data = path.read_bytes()
    if damage == "bit flip":
        flip_a_weight_bit(path)
    elif damage == "64 random bytes":
        middle = len(data) // 2
        path.write_bytes(data[:middle] + os.urandom(64) + data[middle + 64 :])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(data[: len(data) // 2])
    assert train_main(TASK, [*trainer_args, "train.checkpoint_every=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"checkpoint {path} is damaged" in err
    assert "delete it to train this run again from the start" in err
    assert not (run_dir / "summary.json").exists()


def test_a_damaged_best_checkpoint_is_refused_when_measured(finished, tmp_path, capsys) -> None:
    run_dir = copy_run(finished, tmp_path / "run")
    flip_a_weight_bit(run_dir / "best.pt")
    assert measure_main(TASK, "hessian", [f"run_dir={run_dir}", "hessian.n_probes=2"]) == 2
    err = capsys.readouterr().err
    assert "best.pt is damaged" in err and "fails its CRC check" in err
    assert not (run_dir / "hessian.json").exists()


# 4 -- stale temporary files ---------------------------------------------------------------
def test_stale_temporaries_of_dead_writers_are_removed(tmp_path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".checkpoint.pt.{dead.pid}.tmp"
    stale.write_bytes(b"partial checkpoint")
    live = tmp_path / f".notes.json.{os.getpid()}.tmp"  # a writer that still runs
    live.write_text("{")
    write_json(tmp_path / "run.json", {"domain": "image"})
    train(TASK, cfg_for(tmp_path, "train.max_steps=1", "train.epochs=1"))
    assert not stale.exists() and live.exists()


# 5 -- unusable run directories ------------------------------------------------------------
def test_unusable_run_dirs_are_refused(tmp_path, capsys) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("not a directory")
    other = tmp_path / "other"
    other.mkdir()
    (other / "metrics.csv").write_text("my own results\n")
    (other / "notes.txt").write_text("x")
    for run_dir, message in (
        (a_file, "is a file, not a directory"),
        (a_file / "sub", "cannot create run_dir"),
        (other, "already holds files that are not a run (metrics.csv, notes.txt)"),
    ):
        assert train_main(TASK, [*FAST, f"run_dir={run_dir}"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert (other / "metrics.csv").read_text() == "my own results\n"


# 6 -- measuring an unfinished run ---------------------------------------------------------
def test_measuring_an_unfinished_run_warns_and_records_the_file(tmp_path, capsys) -> None:
    interrupted(cfg_for(tmp_path, "train.checkpoint_every=2"), 5)
    capsys.readouterr()
    args = [f"run_dir={tmp_path}", "train.progress=false", "hessian.n_probes=2"]
    assert measure_main(TASK, "hessian", [*args, "hessian.n_examples=20"]) == 0
    err = capsys.readouterr().err
    assert "has not finished training" in err and "measuring checkpoint.pt" in err
    out = json.loads((tmp_path / "hessian.json").read_text())
    assert out["checkpoint"] == "best" and out["checkpoint_file"] == "checkpoint.pt"
    # step 4's checkpoint waited for step 5's loss, which never came: step 2's is on disk
    assert out["finished"] is False and out["step"] == 2


# 7, 8 -- config.yaml edited or deleted ----------------------------------------------------
def test_an_edited_config_yaml_is_refused_when_measured(finished, tmp_path, capsys) -> None:
    run_dir = copy_run(finished, tmp_path / "run")
    text = (run_dir / "config.yaml").read_text().replace("name: cnn", "name: resnet18")
    (run_dir / "config.yaml").write_text(text)
    assert measure_main(TASK, "hessian", [f"run_dir={run_dir}"]) == 2
    err = capsys.readouterr().err
    assert "config.yaml is damaged or was edited (its checksum does not match)" in err
    # a config.yaml with a valid checksum that still disagrees with the weights
    cfg = load_config(ImageConfig, run_dir / "config.yaml", ["model.name=resnet18"])
    save_config(cfg, run_dir / "config.yaml")
    assert measure_main(TASK, "hessian", [f"run_dir={run_dir}"]) == 2
    err = capsys.readouterr().err
    assert "config.yaml and best.pt disagree" in err and "model.name: 'cnn' -> 'resnet18'" in err


def test_a_deleted_config_yaml_is_written_again_on_resume(tmp_path) -> None:
    interrupted(cfg_for(tmp_path, "train.checkpoint_every=2", "train.epochs=1"), 5)
    saved = (tmp_path / "config.yaml").read_text()
    (tmp_path / "config.yaml").unlink()
    (tmp_path / "run.json").unlink()
    summary = train(TASK, cfg_for(tmp_path, "train.checkpoint_every=2", "train.epochs=1"))
    assert summary["resumed"] == 1
    assert (tmp_path / "config.yaml").read_text() == saved and (tmp_path / "run.json").exists()


# 14, 15 -- messages -----------------------------------------------------------------------
def test_top_k_beyond_the_parameters_names_the_key(finished, capsys) -> None:
    assert measure_main(TASK, "hessian", [f"run_dir={finished}", "hessian.top_k=100000"]) == 2
    err = capsys.readouterr().err
    assert "hessian.top_k=100000 exceeds the" in err and "max_iter" not in err


def test_only_rank_zero_prints_a_user_error(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("RANK", "1")
    assert train_main(TASK, [*FAST, f"run_dir={tmp_path}", "optimizer.lr=-1"]) == 2
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "0")
    assert train_main(TASK, [*FAST, f"run_dir={tmp_path}", "optimizer.lr=-1"]) == 2
    assert capsys.readouterr().err.count("error: ") == 1


# friction ---------------------------------------------------------------------------------
def test_an_option_the_chosen_base_lacks_is_dropped_from_the_file(tmp_path, capsys) -> None:
    # digits.yaml sets momentum for SGD; Adam has none
    cfg = cfg_for(tmp_path, "optimizer.name=adam", "optimizer.lr=0.001")
    assert cfg.optimizer.momentum is None
    assert "optimizer.momentum=0.9 (from" in capsys.readouterr().err
    with pytest.raises(Exception, match="not accepted by optimizer adam"):
        cfg_for(tmp_path, "optimizer.name=adam", "optimizer.momentum=0.9")  # asked for: refused


def test_checkpoint_every_may_change_on_resume(tmp_path) -> None:
    interrupted(cfg_for(tmp_path, "train.checkpoint_every=2", "train.epochs=1"), 5)
    summary = train(TASK, cfg_for(tmp_path, "train.checkpoint_every=3", "train.epochs=1"))
    assert summary["resumed"] == 1


def test_the_data_set_name_is_spelled_canonically(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    trainer = Trainer(TASK, load_config(ImageConfig, TASK.default_config, ["data.name=D_I-GITS"]))
    assert trainer.run_dir == Path("runs/image/digits/cnn/sgd/seed0")
    assert trainer.cfg.data.name == "digits"


def test_measuring_a_deleted_run_dir_is_one_line(tmp_path, capsys) -> None:
    assert measure_main(TASK, "hessian", [f"run_dir={tmp_path / 'gone'}"]) == 2
    assert "is not a run directory" in capsys.readouterr().err


def test_under_torchrun_a_user_error_prints_once(tmp_path) -> None:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "image_exps.train", "train.progress=false", "optimizer.lr=-1",
        f"run_dir={tmp_path}",
    ]  # fmt: skip
    out = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert out.stderr.count("error: optimizer.lr must be > 0") == 1, out.stderr[-2000:]


def _worker_pid(run_dir: Path, local_rank: int) -> int | None:
    """The torchrun worker of ``local_rank`` training into ``run_dir`` (from /proc)."""
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        ours = f"run_dir={run_dir}".encode() in cmdline and b"image_exps.train" in cmdline
        if ours and f"LOCAL_RANK={local_rank}".encode() in environ:
            return int(proc.name)
    return None


def test_under_torchrun_a_dead_worker_is_one_line_from_the_survivor(tmp_path) -> None:
    """Killing one worker left the other's gloo traceback ("Connection reset by peer")
    above torchrun's report; now the survivor says in one line what happened and what to do."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "image_exps.train", "train.progress=false", "train.epochs=100000",
        f"run_dir={tmp_path}", f"data.root={tmp_path / 'data'}",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (tmp_path / "metrics.csv").is_file():  # both workers are training
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.5)
        worker = _worker_pid(tmp_path, 1)
        assert worker is not None
        os.kill(worker, signal.SIGKILL)
        err = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    ours = [line for line in err.splitlines() if line.startswith("error:")]
    assert ours == [
        "error: rank 0 stopped: another process of this torchrun job died (torchrun's report "
        "after this line says which and why); the run directory keeps its last checkpoint: "
        "rerun the same torchrun command to resume"
    ], err[-3000:]
    assert "[rank0]" not in err and "Connection reset by peer" not in err, err[-3000:]


def test_a_local_folder_is_named_by_its_last_part_and_a_hub_id_is_kept(tmp_path):
    folder = tmp_path / "copies" / "all-MiniLM-L6-v2"
    folder.mkdir(parents=True)
    assert name_label(str(folder)) == "all-MiniLM-L6-v2"
    assert name_label("./models/minilm") == "minilm"
    assert name_label("sentence-transformers/all-MiniLM-L6-v2") == (
        "sentence-transformers/all-MiniLM-L6-v2"
    )
    assert name_label("cnn") == "cnn"
    assert name_label(".") == Path.cwd().name and name_label("..") == Path.cwd().parent.name


def test_a_model_or_data_folder_given_by_absolute_path_keeps_the_run_under_runs(tmp_path):
    # Path("runs") / "/abs/model" is "/abs/model": the runs used to land inside the folder
    task = SimpleNamespace(domain="text", folds=None)
    cfg = SimpleNamespace(
        run_dir=None,
        data=SimpleNamespace(name=str(tmp_path / "CIFAR-10-images")),
        model=SimpleNamespace(name=str(tmp_path / "all-MiniLM-L6-v2")),
        optimizer=SimpleNamespace(name="sam"),
        seed=1,
    )
    assert run_dir_for(task, cfg) == Path("runs/text/CIFAR-10-images/all-MiniLM-L6-v2/sam/seed1")


def test_a_lock_that_is_a_link_is_refused_and_its_target_untouched(tmp_path) -> None:
    run_dir, victim = tmp_path / "run", tmp_path / "victim.txt"
    run_dir.mkdir()
    victim.write_text("precious\n")
    (run_dir / ".lock").symlink_to(victim)
    with pytest.raises(RunDirError, match="is a symbolic link"), locked(run_dir, "test"):
        pass
    assert victim.read_text() == "precious\n"


def test_a_link_planted_at_a_temporary_name_is_not_written_through(tmp_path) -> None:
    from common.io import write_text

    victim, target = tmp_path / "victim.txt", tmp_path / "out" / "table.md"
    victim.write_text("precious\n")
    target.parent.mkdir()
    (target.parent / f".table.md.{os.getpid()}.tmp").symlink_to(victim)
    write_text(target, "new\n")
    assert victim.read_text() == "precious\n" and target.read_text() == "new\n"


def test_a_data_lock_that_is_a_link_is_refused(tmp_path) -> None:
    from common.errors import UserError
    from common.io import exclusive

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / ".lock").symlink_to(victim)
    with pytest.raises(UserError, match="is a symbolic link"), exclusive(tmp_path / ".lock"):
        pass
    assert victim.read_text() == "precious\n"


def test_a_pickle_with_code_is_refused_without_torchs_advice_to_load_it_unsafely(tmp_path):
    # torch's message advises weights_only=False, which would run the code: never passed on
    import argparse
    import collections

    from common.errors import UserError
    from common.train.checkpoint import load_checkpoint

    path = tmp_path / "checkpoint.pt"
    torch.save({"model": collections.OrderedDict(), "hook": argparse.Namespace(a=1)}, path)
    with pytest.raises(UserError) as e:
        load_checkpoint(path, fix="train again")
    assert "weights_only=False" not in str(e.value) and "can still be loaded" not in str(e.value)
    assert "holds more than tensors" in str(e.value)


def test_a_run_written_before_a_config_key_existed_is_measured_and_resumed(
    finished, tmp_path, capsys
) -> None:
    """A newer optimizer's options (RWP's adapt, ...) are keys an older run's config.yaml
    and checkpoints lack: they count as their defaults, so the run is still measured; a
    changed value is still refused."""
    run_dir = copy_run(finished, tmp_path / "run")
    missing = ("adapt", "adapt_decay", "nesterov")  # as if the run predated these options
    for name in ("best.pt", "checkpoint.pt"):
        ckpt = load_checkpoint(run_dir / name)
        for key in missing:
            del ckpt["config"]["optimizer"][key]
        save_checkpoint(run_dir / name, ckpt)
    text = (run_dir / "config.yaml").read_text().rsplit("# sha256:", 1)[0]
    kept = "".join(line for line in text.splitlines(keepends=True)
                   if line.strip().split(":")[0] not in missing)  # fmt: skip
    write_text(run_dir / "config.yaml", f"{kept}# sha256: {_sha256(kept)}\n")
    args = [f"run_dir={run_dir}", "train.progress=false", "hessian.n_probes=2"]
    assert measure_main(TASK, "hessian", args) == 0, capsys.readouterr().err
    cfg = load_config(ImageConfig, run_dir / "config.yaml", ["optimizer.nesterov=true"])
    save_config(cfg, run_dir / "config.yaml")
    assert measure_main(TASK, "hessian", args) == 2
    assert "optimizer.nesterov: None -> True" in capsys.readouterr().err
