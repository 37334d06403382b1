"""Every optimizer in every parameter dtype; norms and scores in at least float32."""

from __future__ import annotations

import pytest
import torch
from conftest import ALL, build, ce, closure_for, data, mlp, snapshot
from torch import nn

from common.optim import SSAMD
from common.optim.fisher import fisher_diagonal
from common.optim.perturb import clip_grad_norm_, global_norm
from common.optim.ssam import num_live

DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
IDS = [str(d).removeprefix("torch.") for d in DTYPES]


def tiny(dtype: torch.dtype, seed: int = 0):
    x, y = data(seed=1)
    return mlp(seed=seed).to(dtype), (x.to(dtype), y)


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
@pytest.mark.parametrize("name", ALL)
def test_every_optimizer_steps_in_every_dtype(name, dtype):
    model, batch = tiny(dtype)
    cfg: dict = {"ssamf": {"update_freq": 1}, "ssamd": {"update_freq": 1, "epochs": 3}}.get(
        name, {}
    )
    if name in ("adam", "adamw") and dtype == torch.float16:
        cfg["eps"] = 1e-4  # torch's default 1e-8 is 0 in float16: 0/0 where a gradient is 0
    opt = build(name, model, batch, **cfg)
    before = snapshot(model)
    for epoch in range(3):  # SSAM-F/D update their masks every epoch
        if name == "ssamf":
            opt.prepare_epoch(epoch, model=model, loss_fn=ce, data=[batch])
        elif name == "ssamd":
            opt.prepare_epoch(epoch)
        opt.zero_grad()
        opt.step(closure_for(model, batch))
    for key, p in model.named_parameters():
        assert p.dtype == dtype and torch.isfinite(p).all(), key
    assert not torch.equal(model[3].weight, before["3.weight"])  # (0.bias has no gradient: BN)
    if name in ("ssamf", "ssamd"):
        masks = [opt.state[p]["mask"] for p in model.parameters()]
        assert all(m.dtype == dtype for m in masks)
        total = sum(m.numel() for m in masks)
        assert sum(int(m.count_nonzero()) for m in masks) == num_live(total, opt.sparsity)


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_global_norm_is_at_least_float32_and_never_narrower(dtype):
    big = torch.full((10_000,), 1000.0, dtype=dtype)  # norm 1e5: beyond float16's 65504
    norm = global_norm([big, big[:1]])
    assert norm.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    exact = 1000.0 * 10_001**0.5
    assert float(norm) == pytest.approx(exact, rel=1e-12 if dtype == torch.float64 else 1e-5)
    grads = [big.clone()]
    clip_grad_norm_(grads, 1.0)  # torch's clip_grad_norm_ takes a float16 norm here: inf
    assert grads[0].dtype == dtype
    assert float(global_norm(grads)) == pytest.approx(1.0, rel=1e-2)


@pytest.mark.parametrize("dtype", DTYPES, ids=IDS)
def test_fisher_is_accumulated_in_at_least_float32(dtype):
    model, batch = tiny(dtype)
    params = list(model.parameters())
    got = fisher_diagonal(model, ce, [batch], params, num_samples=6, chunk_size=4)
    wide = torch.float64 if dtype == torch.float64 else torch.float32
    assert [f.dtype for f in got] == [wide] * len(params)
    ref = mlp().double()  # the same (rounded) weights, exact arithmetic
    ref.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    want = fisher_diagonal(
        ref, ce, [(batch[0].double(), batch[1])], list(ref.parameters()), num_samples=6
    )
    tol = {torch.float64: 1e-10, torch.float32: 1e-4}.get(dtype, 0.1)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a.double(), b, rtol=tol, atol=tol * float(b.abs().max()))


def test_ssamd_scores_keep_float64_resolution():
    # |W| differ by 1e-12: float32 scores would all be 1.0 and the choice arbitrary
    offsets = [1, 4, 2, 3, 5, 8, 6, 7]
    p = nn.Parameter(torch.tensor([1 + k * 1e-12 for k in offsets], dtype=torch.float64))
    opt = SSAMD(
        [p],
        torch.optim.SGD,
        sparsity=0.5,
        drop_rate=1.0,
        drop_strategy="weight",
        growth_strategy="weight",
        epochs=4,
        seed=0,
        lr=0.1,
    )
    opt.state[p]["mask"] = torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 0], dtype=torch.float64)
    opt.update_mask(2)  # dr = 0.5 of 4 live: the two weakest live die, two strongest dead grow
    assert opt.state[p]["mask"].tolist() == [0, 1, 0, 1, 0, 1, 0, 1]
    assert opt.state[p]["mask"].dtype == torch.float64
