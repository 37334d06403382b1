"""Gradient accumulation and GradScaler in a plain loop, for every registered optimizer."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

from common.optim.closures import accumulating_closure, scaled_step
from tests.conftest import ALL, build, ce, data, mlp, snapshot


def model_loss(model):
    return lambda batch: ce(model, batch)


def pieces(batch, sizes):
    x, y = batch
    bounds = torch.tensor([0, *sizes]).cumsum(0).tolist()
    return [(x[a:b], y[a:b]) for a, b in itertools.pairwise(bounds)]


def closure_over(model, batch):
    def closure():
        loss = ce(model, batch)
        loss.backward()
        return loss.detach()

    return closure


@pytest.mark.parametrize("name", ALL)
def test_accumulated_micro_batches_step_as_one_full_batch(name):
    # g(W) and g(W + e) are the whole batch's gradients, whatever the micro-batching
    batch = data(n=12)
    batch = (batch[0].double(), batch[1])
    whole, split = mlp(bn=False).double(), mlp(bn=False).double()
    opt_whole, opt_split = build(name, whole, batch), build(name, split, batch)
    for _ in range(3):
        opt_whole.zero_grad()
        loss_whole = opt_whole.step(closure_over(whole, batch))
        opt_split.zero_grad()
        loss_split = opt_split.step(
            accumulating_closure(model_loss(split), pieces(batch, [5, 4, 3]))
        )
        torch.testing.assert_close(loss_split, loss_whole, rtol=1e-12, atol=1e-14)
    for key, value in snapshot(whole).items():
        torch.testing.assert_close(snapshot(split)[key], value, rtol=1e-11, atol=1e-13)


def scaled_closure(model, batch, scaler, factor=1.0):
    loss = model_loss(model)
    return accumulating_closure(lambda b: factor * loss(b), [batch], scale=scaler.scale)


@pytest.mark.parametrize("name", ALL)
def test_a_scaled_step_is_the_plain_step(name):
    # a power-of-two scale, unscaled after every pass, leaves the gradients bit for bit
    batch = data()
    plain, scaled = mlp(bn=False), mlp(bn=False)
    opt_plain, opt_scaled = build(name, plain, batch), build(name, scaled, batch)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2)
    for _ in range(3):
        opt_plain.zero_grad()
        opt_plain.step(closure_over(plain, batch))
        opt_scaled.zero_grad()
        assert scaled_step(opt_scaled, scaled_closure(scaled, batch, scaler), scaler) is not None
    for key, value in snapshot(plain).items():
        assert torch.equal(snapshot(scaled)[key], value), key
    assert scaler.get_scale() == 2.0**11  # two good steps grew it once, as GradScaler does


def base_state(opt):
    """The state the update moves (momenta, Adam's moments): the base optimizer's."""
    return getattr(opt, "base_optimizer", opt).state_dict()["state"]


@pytest.mark.parametrize("name", ALL)
def test_an_overflow_skips_the_whole_step_and_backs_off(name):
    batch = data()
    model = mlp(bn=False)
    opt = build(name, model, batch, **({} if name in ("adam", "adamw") else {"momentum": 0.9}))
    opt.zero_grad()
    opt.step(closure_over(model, batch))  # a first step: momenta exist
    before, moments = snapshot(model), copy.deepcopy(base_state(opt))
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127)
    opt.zero_grad()  # x 1e4: the scaled gradients overflow float32
    assert scaled_step(opt, scaled_closure(model, batch, scaler, 1e4), scaler) is None
    for key, value in before.items():
        assert torch.equal(snapshot(model)[key], value), key  # W put back, no base step
    assert all(p.grad is None for p in model.parameters())
    after = base_state(opt)
    assert after.keys() == moments.keys()
    for index, values in moments.items():
        for key, value in values.items():
            assert not torch.is_tensor(value) or torch.equal(after[index][key], value), key
    assert scaler.get_scale() == 2.0**126
    scaler.update(new_scale=2.0**8)
    opt.zero_grad()
    assert scaled_step(opt, scaled_closure(model, batch, scaler), scaler) is not None
    assert any(not torch.equal(snapshot(model)[k], v) for k, v in before.items())


def test_a_disabled_scaler_is_the_plain_step():
    batch, model = data(), mlp(bn=False)
    opt = build("sam", model, batch)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    assert scaled_step(opt, closure_over(model, batch), scaler) is not None


def test_no_micro_batch_is_refused():
    with pytest.raises(ValueError, match="at least one non-empty micro-batch"):
        accumulating_closure(lambda b: b, [])
