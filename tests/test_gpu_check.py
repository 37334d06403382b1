"""scripts/gpu_check.py: without CUDA one line and exit 0; its checks run (on the CPU here)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from scripts import gpu_check
from tests.test_train import ROOT


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible: make gpu-check runs")
def test_without_cuda_it_says_so_in_one_line_and_exits_0() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "scripts.gpu_check"], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stderr == ""
    assert out.stdout.splitlines() == [
        "gpu-check: no CUDA device is visible; nothing to check (--device cpu rehearses it)"
    ]


def test_every_optimizer_is_compared_and_a_difference_fails(monkeypatch) -> None:
    from common.optim import OPTIMIZERS

    rows = list(gpu_check.optimizer_steps(torch.device("cpu")))
    assert [r.setting.split()[0] for r in rows] == list(OPTIMIZERS)
    assert {r.status for r in rows} == {"ok"}
    real = gpu_check._one_step

    def off(name, device, x, y):  # the "device" step lands somewhere else
        model = real(name, device, x, y)
        if device.type == "cpu" and name == "sam" and off.calls == 0:
            off.calls += 1
            with torch.no_grad():
                next(model.parameters()).add_(1e-2)
        return model

    off.calls = 0
    monkeypatch.setattr(gpu_check, "_one_step", off)
    failed = [r for r in gpu_check.optimizer_steps(torch.device("cpu")) if r.status == "FAIL"]
    assert [r.setting for r in failed] == ["sam"]


def test_the_table_has_a_row_per_check() -> None:
    rows = [gpu_check.Row("a", "b", "ok", "v", 1.25), gpu_check.Row("c", "d", "FAIL")]
    assert gpu_check.table(rows).splitlines()[2:] == [
        "| a | b | ok | v | 1.2 |",
        "| c | d | FAIL |  | 0.0 |",
    ]


def test_every_optimizer_takes_a_scaled_overflow_then_a_step() -> None:
    from common.optim import OPTIMIZERS

    rows = list(gpu_check.scaled_steps(torch.device("cpu")))
    assert [r.setting for r in rows] == list(OPTIMIZERS)
    assert {r.status for r in rows} == {"ok"}, [r for r in rows if r.status != "ok"]
