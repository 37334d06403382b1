"""BatchNorm running statistics: bypass for every BN kind, and one update per optimizer step."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import SHARPNESS_AWARE, build, closure_for, data, mlp
from torch import nn

from common.bn import disable_running_stats, enable_running_stats

KINDS = [
    (lambda: nn.BatchNorm1d(4), (8, 4)),
    (lambda: nn.BatchNorm1d(4), (8, 4, 5)),
    (lambda: nn.BatchNorm2d(4), (8, 4, 3, 3)),
    (lambda: nn.BatchNorm3d(4), (8, 4, 2, 2, 2)),
    (lambda: nn.BatchNorm2d(4, momentum=None), (8, 4, 3, 3)),  # cumulative average
    (lambda: nn.LazyBatchNorm2d(), (8, 4, 3, 3)),
    (lambda: nn.SyncBatchNorm(4), (8, 4, 3, 3)),
]
IDS = ["bn1d", "bn1d-seq", "bn2d", "bn3d", "bn2d-cumulative", "lazy", "sync"]


def buffers(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("make,shape", KINDS, ids=IDS)
def test_disabled_bn_normalises_with_batch_stats_and_keeps_its_buffers(make, shape):
    bn = nn.Sequential(make()).train()
    x = torch.randn(*shape)
    bn(x)  # materialise lazy modules, move the stats off their initial values
    reference = copy.deepcopy(bn)
    before = buffers(bn)
    disable_running_stats(bn)
    disable_running_stats(bn)  # idempotent
    out = bn(x * 2 + 1)
    for k, v in buffers(bn).items():
        assert torch.equal(v, before[k]), f"{k} moved while disabled"
    torch.testing.assert_close(out, reference(x * 2 + 1))  # same normalisation as training
    enable_running_stats(bn)
    bn(x * 2 + 1)
    assert buffers(bn)["0.num_batches_tracked"] == before["0.num_batches_tracked"] + 1
    for k in ("0.running_mean", "0.running_var"):
        torch.testing.assert_close(buffers(bn)[k], buffers(reference)[k])


def test_enable_keeps_a_module_that_never_tracked():
    bn = nn.BatchNorm1d(3, track_running_stats=False)
    disable_running_stats(bn)
    enable_running_stats(bn)
    assert bn.track_running_stats is False
    enable_running_stats(nn.BatchNorm1d(3))  # without a disable: a no-op
    assert nn.BatchNorm1d(3).track_running_stats


@pytest.mark.parametrize("name", SHARPNESS_AWARE)
def test_one_statistics_update_per_step(name):
    model, batch = mlp(), data()
    opt = build(name, model, batch)
    bn = model[1]
    for step in range(1, 3):
        opt.zero_grad()
        opt.step(closure_for(model, batch))
        assert int(bn.num_batches_tracked) == step
        assert bn.track_running_stats


def test_sam_statistics_are_those_of_the_clean_pass():
    model, batch = mlp(), data()
    reference = copy.deepcopy(model)
    reference(batch[0])  # one train-mode forward at W
    opt = build("sam", model, batch, rho=0.5)
    opt.step(closure_for(model, batch))
    torch.testing.assert_close(model[1].running_mean, reference[1].running_mean)
    torch.testing.assert_close(model[1].running_var, reference[1].running_var)
