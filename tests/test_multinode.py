"""Several nodes on one machine: torchrun with ``--nnodes=2`` launched twice on localhost
(c10d rendezvous on 127.0.0.1, gloo), as a user's two-node job runs. A system test (about a
minute of process start-ups): ``make system-test``, not ``make test``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.test_train import ROOT, python, weights

pytestmark = pytest.mark.system


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _node(rank: int, port: int, *args: str) -> subprocess.Popen:
    """One "node" of a two-node torchrun job on localhost (c10d rendezvous, one process)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node_rank={rank}",
        "--nproc_per_node=1", "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}",
        "--rdzv_id=flatminima-test", "-m", "image_exps.train", *args,
    ]  # fmt: skip
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _both(*args: str) -> list[tuple[int, str]]:
    port = _free_port()
    nodes = [_node(rank, port, *args) for rank in (0, 1)]
    return [(node.wait(timeout=300), node.communicate()[1]) for node in nodes]


def test_two_nodes_on_localhost_equal_one_process(tmp_path) -> None:
    """torchrun --nnodes=2 (two launches, c10d rendezvous on 127.0.0.1) trains to the
    weights of one process with the same global batch."""
    args = ["train.progress=false", "train.max_steps=6", "train.epochs=1"]
    one = python("-m", "image_exps.train", *args, f"run_dir={tmp_path / 'one'}")
    assert one.returncode == 0, one.stderr
    for rc, err in _both(*args, f"run_dir={tmp_path / 'two'}"):
        assert rc == 0, err[-3000:]
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["world_size"] == 2


def test_a_dead_node_ends_the_job_in_one_line_and_a_restart_resumes(tmp_path) -> None:
    """Killing the second "node" (its agent and worker) mid-run: the survivor says so in one
    line; the same two launches resume from the last checkpoint and finish."""
    args = ["train.progress=false", "train.epochs=30", "train.checkpoint_every=5"]
    run_dir = tmp_path / "two"
    port = _free_port()
    nodes = [_node(rank, port, *args, f"run_dir={run_dir}") for rank in (0, 1)]
    deadline = time.monotonic() + 240
    while not (run_dir / "checkpoint.pt").is_file():
        assert all(n.poll() is None for n in nodes) and time.monotonic() < deadline
        time.sleep(0.2)
    for pid in [*_children_of(nodes[1].pid), nodes[1].pid]:  # the whole second "node"
        os.kill(pid, signal.SIGKILL)
    nodes[1].wait(timeout=60)
    err = nodes[0].communicate(timeout=180)[1]
    assert nodes[0].returncode != 0 and not (run_dir / "summary.json").exists()
    assert "another process of this torchrun job died" in err, err[-3000:]
    for rc, err in _both(*args, f"run_dir={run_dir}"):
        assert rc == 0, err[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["resumed"] >= 1 and summary["epochs"] == 30


def _children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (a torchrun agent's workers)."""
    out = []
    for proc in Path("/proc").iterdir():
        try:
            status = (proc / "status").read_text()
        except (OSError, ValueError):
            continue
        if f"\nPPid:\t{pid}\n" in status:
            out.append(int(proc.name))
    return out
