"""The equivalences and exact values of ALGORITHMS.md."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_same, build, ce, closure_for, data, linear_problem, mlp, snapshot
from torch import nn

from common.optim import NSO, SAM, WSAM


def run_steps(opt_name: str, steps: int = 3, model=None, **cfg) -> dict:
    model = model or mlp()
    batch = data()
    opt = build(opt_name, model, batch, **cfg)
    for i in range(steps):
        opt.zero_grad()
        opt.step(closure_for(model, data(seed=i)))
    return snapshot(model)


@pytest.mark.parametrize("base", ["sgd", "adam", "adamw"])
def test_sam_with_rho_zero_is_the_base_optimizer(base):
    kw = {"momentum": 0.9, "weight_decay": 1e-3} if base == "sgd" else {"weight_decay": 1e-3}
    assert_same(run_steps("sam", rho=0.0, base=base, **kw), run_steps(base, **kw))


@pytest.mark.parametrize("decouple", [True, False])
def test_wsam_with_gamma_zero_is_the_base_optimizer(decouple):
    got = run_steps("wsam", gamma=0.0, decouple=decouple, momentum=0.9)
    assert_same(got, run_steps("sgd", momentum=0.9))


@pytest.mark.parametrize("adaptive", [False, True])
def test_wsam_coupled_with_gamma_half_is_sam(adaptive):
    kw = {"rho": 0.3, "adaptive": adaptive, "eta": 0.01, "momentum": 0.9}
    assert_same(run_steps("wsam", gamma=0.5, decouple=False, **kw), run_steps("sam", **kw))


def test_rho_zero_equivalence_would_catch_a_perturbation():
    # the test above has teeth: any rho > 0 moves the result
    a, b = run_steps("sam", rho=1e-3), run_steps("sgd")
    assert any(not torch.equal(a[k], b[k]) for k in a)


# float64: a float32 norm would be off by ~1e-8 relative in e, ~1e-9 in W
TOLERANCES = {torch.float32: (1e-6, 1e-7), torch.float64: (0.0, 1e-12)}


@pytest.mark.parametrize("dtype", list(TOLERANCES), ids=["float32", "float64"])
@pytest.mark.parametrize(
    "adaptive,eta", [(False, 0.0), (True, 0.0), (True, 0.01)], ids=["sam", "asam", "asam-eta"]
)
def test_sam_and_asam_match_a_direct_computation(adaptive, eta, dtype):
    w0, loss = linear_problem(dtype=dtype)
    rho, lr = 0.2, 0.05
    # independent few-line computation of one step
    w = w0.clone().requires_grad_()
    (g,) = torch.autograd.grad(loss(w), w)
    t = w0.abs() + eta if adaptive else torch.ones_like(w0)
    e = rho * t**2 * g / (t * g).norm()
    w_e = (w0 + e).requires_grad_()
    (g_tilde,) = torch.autograd.grad(loss(w_e), w_e)
    expected = w0 - lr * g_tilde

    p = nn.Parameter(w0.clone())
    opt = SAM([p], torch.optim.SGD, rho=rho, adaptive=adaptive, eta=eta, lr=lr)

    def closure():
        out = loss(p)
        out.backward()
        return out

    opt.step(closure)
    assert p.dtype == dtype
    rtol, atol = TOLERANCES[dtype]
    torch.testing.assert_close(p.detach(), expected, rtol=rtol, atol=atol)


def test_sam_norm_is_global_over_param_groups():
    w0, loss = linear_problem()
    rho, lr = 0.2, 0.05
    a, b = nn.Parameter(w0[:1].clone()), nn.Parameter(w0[1:].clone())
    opt = SAM([{"params": [a]}, {"params": [b]}], torch.optim.SGD, rho=rho, lr=lr)

    def closure():
        out = loss(torch.cat([a, b]))
        out.backward()
        return out

    opt.step(closure)
    ref = nn.Parameter(w0.clone())
    ref_opt = SAM([ref], torch.optim.SGD, rho=rho, lr=lr)
    ref_opt.step(lambda: loss(ref).backward())
    torch.testing.assert_close(torch.cat([a, b]).detach(), ref.detach(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", list(TOLERANCES), ids=["float32", "float64"])
def test_wsam_decoupled_matches_a_direct_computation(dtype):
    w0, loss = linear_problem(dtype=dtype)
    rho, lr, gamma = 0.2, 0.05, 0.8
    alpha = gamma / (1 - gamma)
    w = w0.clone().requires_grad_()
    (g,) = torch.autograd.grad(loss(w), w)
    w_e = (w0 + rho * g / g.norm()).requires_grad_()
    (g_tilde,) = torch.autograd.grad(loss(w_e), w_e)
    expected = w0 - lr * g - lr * alpha * (g_tilde - g)

    p = nn.Parameter(w0.clone())
    opt = WSAM([p], torch.optim.SGD, rho=rho, gamma=gamma, lr=lr)
    opt.step(lambda: loss(p).backward())
    rtol, atol = TOLERANCES[dtype]
    torch.testing.assert_close(p.detach(), expected, rtol=rtol, atol=atol)


def test_wsam_max_norm_clips_both_gradients():
    w0, loss = linear_problem()
    rho, lr, gamma, max_norm = 0.2, 0.05, 0.5, 1e-2
    w = w0.clone().requires_grad_()
    (g,) = torch.autograd.grad(loss(w), w)
    w_e = (w0 + rho * g / g.norm()).requires_grad_()
    (g_tilde,) = torch.autograd.grad(loss(w_e), w_e)
    clip = lambda v: v * min(1.0, max_norm / (v.norm() + 1e-6))  # noqa: E731
    expected = w0 - lr * (clip(g) + (clip(g_tilde) - clip(g)))  # alpha = 1

    p = nn.Parameter(w0.clone())
    opt = WSAM([p], torch.optim.SGD, rho=rho, gamma=gamma, decouple=False, max_norm=max_norm, lr=lr)
    opt.step(lambda: loss(p).backward())
    torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("sigma", [1e-3, 0.1, 3.0])
@pytest.mark.parametrize("distribution", ["normal", "laplace", "uniform", "binomial", "cauchy"])
def test_nso_antithetic_on_a_quadratic_is_the_base_optimizer(sigma, distribution):
    g = torch.Generator().manual_seed(3)
    a = torch.randn(6, 6, generator=g, dtype=torch.float64)
    h = a @ a.T  # quadratic: g(W+U) + g(W−U) = 2 g(W) for every U
    b = torch.randn(6, generator=g, dtype=torch.float64)
    w0 = torch.randn(6, generator=g, dtype=torch.float64)

    def loss(w):
        return 0.5 * w @ h @ w + b @ w

    p = nn.Parameter(w0.clone())
    opt = NSO([p], torch.optim.SGD, sigma=sigma, num_perturbs=3, distribution=distribution, lr=0.1)
    opt.step(lambda: loss(p).backward())
    torch.testing.assert_close(p.detach(), w0 - 0.1 * (h @ w0 + b), rtol=1e-9, atol=1e-9 * sigma**2)


@pytest.mark.parametrize("distribution", ["normal", "laplace", "uniform", "binomial"])
def test_nso_mean_gradient_on_quartic(distribution):
    # L(w) = Σ w⁴/4  =>  E[g(W+U)] = w³ + 3σ²w for any zero-mean U with variance σ²
    sigma, k = 0.5, 4000
    w0 = torch.tensor([1.0, -0.5, 0.25, 2.0], dtype=torch.float64)
    p = nn.Parameter(w0.clone())
    opt = NSO([p], torch.optim.SGD, sigma=sigma, num_perturbs=k, distribution=distribution, lr=0.0)
    opt.step(lambda: ((p**4).sum() / 4).backward())
    expected = w0**3 + 3 * sigma**2 * w0
    if distribution == "binomial":  # U² = σ² exactly: the antithetic pair is exact
        torch.testing.assert_close(p.grad, expected, rtol=1e-12, atol=1e-12)
    else:  # per pair: w³ + 3wU²; std of the mean of k pairs is 3|w|·std(U²)/√k
        tol = 4 * 3 * w0.abs() * 3 * sigma**2 / k**0.5
        assert ((p.grad - expected).abs() <= tol).all(), (p.grad, expected)


def test_nso_one_sided_mean_gradient_on_quartic():
    sigma, k = 0.3, 20000
    w0 = torch.tensor([1.0, -0.5], dtype=torch.float64)
    p = nn.Parameter(w0.clone())
    opt = NSO([p], torch.optim.SGD, sigma=sigma, num_perturbs=k, use_neg=False, lr=0.0)
    opt.step(lambda: ((p**4).sum() / 4).backward())
    # one-sided adds the odd terms 3w²U + U³ (zero mean): looser tolerance
    torch.testing.assert_close(p.grad, w0**3 + 3 * sigma**2 * w0, rtol=0, atol=0.05)


def test_nso_lambda_weights_the_clean_gradient():
    w0 = torch.tensor([1.0, -0.5, 0.25], dtype=torch.float64)
    sigma, lam = 0.5, 0.25
    p = nn.Parameter(w0.clone())
    opt = NSO([p], torch.optim.SGD, sigma=sigma, lam=lam, distribution="binomial", lr=0.0)
    opt.step(lambda: ((p**4).sum() / 4).backward())
    expected = lam * w0**3 + (1 - lam) * (w0**3 + 3 * sigma**2 * w0)
    torch.testing.assert_close(p.grad, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("distribution", ["normal", "laplace", "uniform", "binomial"])
def test_nso_noise_has_standard_deviation_sigma(distribution):
    from common.optim.perturb import sample_noise_

    gen = torch.Generator().manual_seed(0)
    u = sample_noise_(torch.empty(200_000, dtype=torch.float64), distribution, 0.3, gen)
    assert abs(float(u.mean())) < 0.005
    assert abs(float(u.std()) - 0.3) < 0.005


def test_nso_cauchy_noise_has_scale_sigma():
    from common.optim.perturb import sample_noise_

    gen = torch.Generator().manual_seed(0)
    u = sample_noise_(torch.empty(200_000, dtype=torch.float64), "cauchy", 0.3, gen)
    assert abs(float(u.abs().median()) - 0.3) < 0.01  # median |X| of Cauchy(0, s) is s


@pytest.mark.parametrize(
    "schedule,expected",
    [
        ("constant", [0.1, 0.1, 0.1, 0.1, 0.1]),
        ("linear", [0.0, 0.025, 0.05, 0.075, 0.1]),
        ("exponential", [1e-5 * (0.1 / 1e-5) ** (t / 4) for t in range(5)]),
    ],
)
def test_nso_sigma_schedule(schedule, expected):
    p = nn.Parameter(torch.zeros(3))
    opt = NSO([p], torch.optim.SGD, sigma=0.1, sigma_schedule=schedule, schedule_steps=4, lr=0.0)
    got = []
    for _ in range(5):
        got.append(opt.current_sigma())
        opt.zero_grad()
        opt.step(lambda: (p.sum() * 0).backward())
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert opt.current_sigma() == pytest.approx(0.1)  # constant after the ramp


def test_nso_perturbs_by_sigma_and_mirrors_exactly():
    w0 = torch.linspace(-1, 1, 7)
    p = nn.Parameter(w0.clone())
    seen = []
    opt = NSO([p], torch.optim.SGD, sigma=0.2, seed=5, lr=0.0)

    def closure():
        seen.append(p.detach().clone())
        p.sum().backward()

    opt.step(closure)
    plus, minus = seen
    u = plus - w0
    assert 0.05 < float(u.std()) < 0.5
    torch.testing.assert_close(minus, w0 - u, rtol=0, atol=1e-7)
    assert torch.equal(p.detach(), w0)


def test_nso_manual_protocol_equals_step():
    """The seed's store_gradients/first_step/second_step loop gives the closure path's result."""
    batch = data()
    a, b = mlp(bn=False), mlp(bn=False)
    opt_a = NSO(a.parameters(), torch.optim.SGD, sigma=0.05, num_perturbs=2, seed=7, lr=0.1)
    opt_b = NSO(b.parameters(), torch.optim.SGD, sigma=0.05, num_perturbs=2, seed=7, lr=0.1)
    for _ in range(3):
        opt_a.zero_grad()
        opt_a.step(closure_for(a, batch))
        # manual protocol with lam = 0 (the clean pass is weighted 0)
        ce(b, batch).backward()
        opt_b.store_gradients(zero_grad=True, store_weights=True, update_weight=0.0)
        for _ in range(2):
            opt_b.first_step(zero_grad=True, store_perturb=True)
            ce(b, batch).backward()
            opt_b.store_gradients(zero_grad=True, store_weights=False, update_weight=1 / 4)
            opt_b.first_step(zero_grad=True, store_perturb=False)
            ce(b, batch).backward()
            opt_b.store_gradients(zero_grad=True, store_weights=False, update_weight=1 / 4)
        opt_b.second_step(zero_grad=True)
    assert_same(snapshot(a), snapshot(b))


def test_sam_manual_protocol_equals_step():
    batch = data()
    a, b = mlp(bn=False), mlp(bn=False)
    opt_a = SAM(a.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9)
    opt_b = SAM(b.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9)
    for _ in range(3):
        opt_a.step(closure_for(a, batch))
        opt_a.zero_grad()
        ce(b, batch).backward()
        opt_b.first_step(zero_grad=True)
        ce(b, batch).backward()
        opt_b.second_step(zero_grad=True)
    assert_same(snapshot(a), snapshot(b))


def test_sparse_adaptive_perturbation_matches_a_direct_computation():
    from common.optim import SSAMF

    w0, loss = linear_problem()
    rho, eta = 0.3, 0.01
    p = nn.Parameter(w0.clone())
    opt = SSAMF([p], torch.optim.SGD, rho=rho, sparsity=0.5, adaptive=True, eta=eta, lr=0.0)
    mask = (torch.arange(w0.numel()) % 2 == 0).reshape(w0.shape)
    opt.state[p]["mask"] = mask.to(w0.dtype)
    seen = []

    def closure():
        seen.append(p.detach().clone())
        loss(p).backward()

    w = w0.clone().requires_grad_()
    (g,) = torch.autograd.grad(loss(w), w)
    t = w0.abs() + eta
    expected = w0 + mask * rho * t**2 * g / (t * g).norm()  # the norm is over all coordinates
    opt.step(closure)
    torch.testing.assert_close(seen[-1], expected, rtol=1e-6, atol=1e-7)


def test_nso_store_gradients_sums_with_any_weights():
    """Weights that do not add up to 1, and a gradient missing from one pass (counts 0)."""
    a, b = nn.Parameter(torch.tensor([1.0, 2.0])), nn.Parameter(torch.tensor([3.0]))
    opt = NSO([a, b], torch.optim.SGD, sigma=0.1, seed=0, lr=0.0)
    a.grad, b.grad = torch.tensor([1.0, 1.0]), None
    opt.store_gradients(store_weights=True, update_weight=0.5)
    a.grad, b.grad = torch.tensor([2.0, 4.0]), torch.tensor([8.0])
    opt.store_gradients(update_weight=0.25)
    a.grad, b.grad = None, torch.tensor([4.0])
    opt.store_gradients(update_weight=2.0)
    opt.second_step()
    torch.testing.assert_close(a.grad, torch.tensor([0.5 + 0.5, 0.5 + 1.0]))
    torch.testing.assert_close(b.grad, torch.tensor([2.0 + 8.0]))
