"""F-SAM, (m-)RWP and (m-)ARWP: equivalences, direct computations, references, noise, state."""

from __future__ import annotations

import copy
import io
import threading

import pytest
import torch
from conftest import assert_same, ce, closure_for, data, linear_problem, mlp, snapshot
from torch import nn

from common.optim import FSAM, NSO, OPTIMIZERS, RWP, SAM, create_optimizer
from common.optim.rwp import filter_norms, filter_sums


def steps(opt, model, n: int = 4, start: int = 0) -> None:
    for i in range(start, start + n):
        opt.zero_grad()
        opt.step(closure_for(model, data(seed=i)))


def tiny_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def batches(n: int = 6) -> list:
    g = torch.Generator().manual_seed(1)
    return [
        (
            torch.randn(16, 5, generator=g, dtype=torch.float64),
            torch.randint(0, 3, (16,), generator=g),
        )
        for _ in range(n)
    ]


def save_load(obj) -> dict:
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


# ------------------------------------------------------------------------------ F-SAM


@pytest.mark.parametrize("adaptive", [False, True])
def test_fsam_with_ema_weight_zero_is_sam(adaptive):
    kw = {"rho": 0.3, "adaptive": adaptive, "eta": 0.01, "lr": 0.1, "momentum": 0.9}
    a, b = mlp(), mlp()
    steps(FSAM(a, ema_weight=0.0, ema_decay=0.7, **kw), a)
    steps(SAM(b, **kw), b)
    assert_same(snapshot(a), snapshot(b))


def test_fsam_ema_weight_zero_equivalence_would_catch_the_ema():
    a, b = mlp(), mlp()
    steps(FSAM(a, ema_weight=1e-3, lr=0.1), a)
    steps(SAM(b, lr=0.1), b)
    assert any(not torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_fsam_with_rho_zero_is_the_base_optimizer():
    a, b = mlp(), mlp()
    steps(FSAM(a, rho=0.0, lr=0.1, momentum=0.9), a)
    steps(torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9), b)
    assert_same(snapshot(a), snapshot(b))


@pytest.mark.parametrize("adaptive,eta", [(False, 0.0), (True, 0.01)], ids=["fsam", "asam-eta"])
def test_fsam_matches_a_direct_computation(adaptive, eta):
    w0, loss = linear_problem(dtype=torch.float64)
    rho, lr, lam, sigma = 0.2, 0.05, 0.8, 0.9

    def grad(w):
        w = w.clone().requires_grad_()
        return torch.autograd.grad(loss(w), w)[0]

    # three steps of the paper's Algorithm 1 with m_0 = 0, written out
    w, m = w0.clone(), torch.zeros_like(w0)
    for _ in range(3):
        g = grad(w)
        m = lam * m + (1 - lam) * g
        d = g - sigma * m
        t = w.abs() + eta if adaptive else torch.ones_like(w)
        w = w - lr * grad(w + rho * t**2 * d / (t * d).norm())

    p = nn.Parameter(w0.clone())
    opt = FSAM([p], rho=rho, ema_decay=lam, ema_weight=sigma, adaptive=adaptive, eta=eta, lr=lr)
    for _ in range(3):
        opt.zero_grad()
        opt.step(lambda: loss(p).backward())
    torch.testing.assert_close(p.detach(), w, rtol=0, atol=1e-12)
    torch.testing.assert_close(opt.state[p]["ema"], m, rtol=0, atol=1e-12)


def _reference_step(opt, model, batch) -> None:
    def closure():
        opt.zero_grad()
        loss = ce(model, batch)
        loss.backward()
        return loss

    closure()  # the reference takes g(W) from p.grad, then calls the closure at W + e
    opt.step(closure)


def _run_both(adaptive: bool, lam: float, seed_zero_ema: bool):
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    ours_model, ref_model = tiny_mlp(), tiny_mlp()
    kw = {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3}
    ours = FSAM(
        ours_model.parameters(), rho=0.1, ema_decay=lam, ema_weight=1.0, adaptive=adaptive, **kw
    )
    ref = pytorch_optimizer.FriendlySAM(
        ref_model.parameters(),
        torch.optim.SGD,
        rho=0.1,
        sigma=1.0,
        lmbda=lam,
        adaptive=adaptive,
        foreach=False,
        **kw,
    )
    if seed_zero_ema:  # the paper's m_0 = 0; the reference starts from m_1 = g_1
        for p in ref_model.parameters():
            ref.state[p]["momentum"] = torch.zeros_like(p)
    history = []
    for batch in batches():
        ours.zero_grad()
        ours.step(closure_for(ours_model, batch))
        _reference_step(ref, ref_model, batch)
        history.append((snapshot(ours_model), snapshot(ref_model)))
    return history


def _worst(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max() / b[k].abs().max()) for k in a)


def _float64_norm(param_groups, device=None, *, weight_adaptive=False):
    """pytorch_optimizer's squared global norm (|W|·g for adaptive groups), in float64."""
    total = torch.zeros((), dtype=torch.float64)
    for group in param_groups:
        for p in group["params"]:
            if p.grad is not None:
                g = p.grad * p.abs() if weight_adaptive and group["adaptive"] else p.grad
                total = total + g.double().norm() ** 2
    return total.reshape(1)


@pytest.mark.parametrize("lam", [0.9, 0.6])
@pytest.mark.parametrize("adaptive", [False, True])
def test_fsam_matches_pytorch_optimizer_friendly_sam(adaptive, lam, monkeypatch):
    """From the same float64 weights, with the reference's EMA started at 0 as in the paper
    and σ = 1 (where the paper's d and the code's are parallel), six steps agree.

    The reference takes the global norm in float32 (~6e-8 relative in e): to rounding of
    that norm as it is, and to float64 rounding with its norm taken in float64."""
    history = _run_both(adaptive, lam, seed_zero_ema=True)
    assert _worst(*history[-1]) < 1e-7
    import pytorch_optimizer.optimizer.sam as reference_module

    monkeypatch.setattr(reference_module, "get_global_gradient_norm", _float64_norm)
    history = _run_both(adaptive, lam, seed_zero_ema=True)
    assert _worst(*history[-1]) < 1e-11


def test_fsam_differs_from_the_reference_started_at_the_first_gradient(monkeypatch):
    """The documented difference: the reference starts its EMA at g_1 (not 0). The first
    step is SAM in both; the later ones differ."""
    pytest.importorskip("pytorch_optimizer")
    import pytorch_optimizer.optimizer.sam as reference_module

    monkeypatch.setattr(reference_module, "get_global_gradient_norm", _float64_norm)
    history = _run_both(adaptive=False, lam=0.9, seed_zero_ema=False)
    assert _worst(*history[0]) < 1e-11
    assert _worst(*history[-1]) > 1e-6


def test_fsam_ema_is_in_the_state_dict_and_a_resumed_run_is_bit_identical():
    model = mlp()
    opt = FSAM(model, lr=0.1, momentum=0.9, ema_decay=0.7)
    steps(opt, model, 3)
    saved = save_load({"model": model.state_dict(), "opt": opt.state_dict()})
    assert all("ema" in s for s in saved["opt"]["state"].values())
    assert len(saved["opt"]["state"]) == len(list(model.parameters()))
    steps(opt, model, 4, start=3)

    model2 = mlp(seed=5)
    opt2 = FSAM(model2, lr=0.1, momentum=0.9, ema_decay=0.7)
    model2.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    steps(opt2, model2, 4, start=3)
    assert_same(snapshot(model2), snapshot(model))
    for p, q in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(opt.state[p]["ema"], opt2.state[q]["ema"])


def test_fsam_a_refused_first_step_leaves_the_ema_alone():
    model, batch = mlp(bn=False), data()
    opt = FSAM(model, lr=0.1)
    ce(model, batch).backward()
    opt.first_step()
    emas = [opt.state[p]["ema"].clone() for p in model.parameters()]
    with pytest.raises(RuntimeError, match="already perturbed"):
        opt.first_step()
    params = list(model.parameters())
    assert all(torch.equal(opt.state[p]["ema"], e) for p, e in zip(params, emas, strict=True))


def test_fsam_per_group_options():
    model = mlp(bn=False)
    groups = [
        {"params": model[0].parameters(), "ema_weight": 0.0},
        {"params": model[2].parameters()},
    ]
    opt = FSAM(groups, lr=0.1, ema_decay=0.5)
    assert [g["ema_weight"] for g in opt.param_groups] == [0.0, 1.0]
    assert [g["ema_decay"] for g in opt.param_groups] == [0.5, 0.5]
    with pytest.raises(ValueError, match=r"ema_decay \(param group 0\) must be"):
        FSAM([{"params": model.parameters(), "ema_decay": 1.0}], lr=0.1)


# -------------------------------------------------------------------------------- RWP


@pytest.mark.parametrize("mix", [1.0, 0.5])
def test_rwp_with_zero_noise_is_the_base_optimizer(mix):
    a, b = mlp(), mlp()  # with BatchNorm: its statistics move once, in the first pass
    steps(RWP(a, noise_scale=0.0, mix=mix, seed=0, lr=0.1, momentum=0.9), a)
    steps(torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9), b)
    assert_same(snapshot(a), snapshot(b))


def test_rwp_with_mix_zero_is_the_base_optimizer_in_one_pass():
    a, b = mlp(), mlp()
    opt = RWP(a, noise_scale=0.5, mix=0.0, seed=0, lr=0.1, momentum=0.9)
    calls: list = []
    for i in range(3):
        opt.zero_grad()
        opt.step(closure_for(a, data(seed=i), calls))
    assert len(calls) == 3
    steps(torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9), b, 3)
    assert_same(snapshot(a), snapshot(b))


def test_rwp_zero_noise_equivalence_would_catch_noise():
    a, b = mlp(), mlp()
    steps(RWP(a, noise_scale=1e-4, seed=0, lr=0.1), a)
    steps(torch.optim.SGD(b.parameters(), lr=0.1), b)
    assert any(not torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def _unit_filters(model: nn.Module) -> None:
    """Every row of every weight, and every bias, one-hot ±1: each filter's norm is 1.0."""
    with torch.no_grad():
        for p in model.parameters():
            flat = p.view(p.shape[0], -1) if p.dim() > 1 else p.view(1, -1)
            flat.zero_()
            for i in range(flat.shape[0]):
                flat[i, (3 * i + 1) % flat.shape[1]] = (-1.0) ** i


@pytest.mark.parametrize("mix", [1.0, 0.5, 0.25])
def test_rwp_is_one_sided_nso_where_every_filter_has_norm_one(mix):
    """RWP(mix=λ) = NSO(use_neg=False, num_perturbs=1, lam=1−λ) from the same generator
    state when every filter has norm 1 (RWP's std σ‖W_i‖ is then NSO's absolute σ)."""
    a, b = tiny_mlp(), tiny_mlp()
    rwp = RWP(a.parameters(), noise_scale=0.3, mix=mix, seed=1, lr=0.1, momentum=0.9)
    nso = NSO(
        b.parameters(), sigma=0.3, num_perturbs=1, use_neg=False, lam=1 - mix, seed=2, lr=0.1,
        momentum=0.9,
    )  # fmt: skip
    cpu = torch.device("cpu")
    rwp._generator(cpu).set_state(nso._generator(cpu).get_state())
    seen = []

    def recording(model, batch):
        def closure():
            seen.append(model[0].weight.detach().clone())
            return closure_for(model, batch)()

        return closure

    for batch in batches(4):  # the weights are reset each step, the noise stream goes on
        for model in (a, b):
            _unit_filters(model)
        unit = a[0].weight.detach().clone()
        for opt, model in ((rwp, a), (nso, b)):
            opt.zero_grad()
            opt.step(recording(model, batch))
        assert_same(snapshot(a), snapshot(b))
        assert not torch.equal(seen[-1], unit)  # the perturbed pass was perturbed


def test_rwp_matches_a_direct_computation_on_a_quadratic():
    """On a quadratic g is linear: G = g(W) + λ·H·ε for the ε the closure saw."""
    g = torch.Generator().manual_seed(3)
    a = torch.randn(6, 6, generator=g, dtype=torch.float64)
    h, b = a @ a.T, torch.randn(6, generator=g, dtype=torch.float64)
    w0 = torch.randn(2, 3, generator=g, dtype=torch.float64)
    mix, lr, sigma = 0.3, 0.1, 0.2
    p = nn.Parameter(w0.clone())
    opt = RWP([p], noise_scale=sigma, mix=mix, seed=4, lr=lr)
    seen = []

    def closure():
        seen.append(p.detach().clone())
        w = p.reshape(-1)
        (0.5 * w @ h @ w + b @ w).backward()

    opt.step(closure)
    clean, noisy = seen
    assert torch.equal(clean, w0)
    eps = (noisy - w0).reshape(-1)
    expected = w0.reshape(-1) - lr * (h @ w0.reshape(-1) + b + mix * h @ eps)
    torch.testing.assert_close(p.detach().reshape(-1), expected, rtol=0, atol=1e-13)


def test_rwp_mixes_clean_and_perturbed_gradients_with_weights_one_minus_lambda_and_lambda():
    # L = Σ w⁴/4: g(W) = W³ and g(W + ε) = (W + ε)³, both known exactly
    w0 = torch.tensor([[1.0, -0.5, 0.25], [2.0, 0.5, -1.0]], dtype=torch.float64)
    p = nn.Parameter(w0.clone())
    opt = RWP([p], noise_scale=0.1, mix=0.25, seed=0, lr=0.0)
    seen = []

    def closure():
        seen.append(p.detach().clone())
        ((p**4).sum() / 4).backward()

    opt.step(closure)
    expected = 0.75 * w0**3 + 0.25 * seen[1] ** 3
    torch.testing.assert_close(p.grad, expected, rtol=1e-15, atol=1e-15)
    assert torch.equal(p.detach(), w0)


def test_rwp_noise_is_filter_wise_with_std_sigma_times_the_filter_norm():
    torch.manual_seed(0)
    norms = torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=torch.float64)
    weight = torch.randn(4, 2, 25, dtype=torch.float64)  # a conv-like filter bank
    weight = weight / weight.flatten(1).norm(dim=1)[:, None, None] * norms[:, None, None]
    bias = torch.tensor([0.3, -0.4, 1.2, 0.0], dtype=torch.float64)  # norm 1.3
    w, b = nn.Parameter(weight.clone()), nn.Parameter(bias.clone())
    sigma, draws = 0.1, 400
    opt = RWP([w, b], noise_scale=sigma, mix=1.0, seed=0, lr=0.0)
    eps_w, eps_b = [], []

    def closure():
        eps_w.append(w.detach() - weight)
        eps_b.append(b.detach() - bias)
        (w.sum() + b.sum()).backward()

    for _ in range(draws):
        opt.zero_grad()
        opt.step(closure)
    ew = torch.stack(eps_w).transpose(0, 1).reshape(4, -1)  # per filter: draws x 50 samples
    assert ew.mean(dim=1).abs().max() < 0.05 * sigma
    torch.testing.assert_close(ew.std(dim=1), sigma * norms, rtol=0.03, atol=0)
    eb = torch.stack(eps_b).reshape(-1)
    assert abs(float(eb.std()) - sigma * 1.3) < 0.05 * sigma * 1.3
    assert torch.equal(w.detach(), weight) and torch.equal(b.detach(), bias)


def test_filter_norms_per_output_row_and_whole_for_one_dimension():
    w = torch.arange(24.0).reshape(3, 2, 4)
    got = filter_norms(w)
    assert got.shape == (3, 1, 1)
    torch.testing.assert_close(got.flatten(), w.flatten(1).norm(dim=1))
    assert filter_norms(torch.tensor([3.0, 4.0])) == 5.0
    assert filter_norms(torch.tensor(-2.0)) == 2.0
    assert filter_norms(torch.ones(2, 3, dtype=torch.bfloat16)).dtype == torch.float32


def test_rwp_state_dict_round_trip_continues_bit_for_bit():
    model = mlp()
    opt = RWP(model, noise_scale=0.05, seed=3, lr=0.1, momentum=0.9)
    steps(opt, model, 3)
    saved = save_load({"model": model.state_dict(), "opt": opt.state_dict()})
    assert saved["opt"]["wrapper"]["seed"] == 3
    steps(opt, model, 4, start=3)

    model2 = mlp(seed=5)
    opt2 = RWP(model2, noise_scale=0.05, seed=99, lr=0.1, momentum=0.9)
    model2.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    steps(opt2, model2, 4, start=3)
    assert_same(snapshot(model2), snapshot(model))


def test_rwp_seed_makes_runs_reproducible_and_differs_between_seeds():
    runs = {}
    for seed in (0, 0, 1):
        model = mlp()
        steps(RWP(model, noise_scale=0.05, seed=seed, lr=0.1), model, 2)
        runs.setdefault(seed, []).append(snapshot(model))
    assert_same(*runs[0])
    assert any(not torch.equal(runs[0][0][k], runs[1][0][k]) for k in runs[1][0])


def test_rwp_weights_restored_bit_for_bit_after_large_noise():
    model = tiny_mlp().float()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e-3)
    before = snapshot(model)
    opt = RWP(model, noise_scale=5e4, seed=0, lr=0.0)
    opt.step(closure_for(model, data()))
    assert_same(snapshot(model), before)


def test_rwp_present_gradients_are_g_of_w_when_mix_is_below_one():
    batch = data()
    a, b = mlp(bn=False), mlp(bn=False)
    opt_a = RWP(a, seed=0, lr=0.1, noise_scale=0.05)
    opt_b = RWP(b, seed=0, lr=0.1, noise_scale=0.05)
    ce(a, batch).backward()
    calls: list = []
    opt_a.step(closure_for(a, batch, calls))
    assert len(calls) == 1
    opt_b.step(closure_for(b, batch))
    assert_same(snapshot(a), snapshot(b))


def test_rwp_with_mix_one_discards_present_gradients_and_warns_once():
    batch = data()
    a, b = mlp(bn=False), mlp(bn=False)
    opt_a = RWP(a, seed=0, lr=0.1, mix=1.0)
    opt_b = RWP(b, seed=0, lr=0.1, mix=1.0)
    with pytest.warns(UserWarning, match="mix=1.*discarded") as record:
        for _ in range(2):
            ce(a, batch).backward()
            opt_a.step(closure_for(a, batch))
    ours = [w for w in record if "mix=1" in str(w.message)]
    assert len(ours) == 1 and ours[0].filename == __file__
    for _ in range(2):
        opt_b.zero_grad()
        opt_b.step(closure_for(b, batch))
    assert_same(snapshot(a), snapshot(b))


def test_rwp_manual_protocol_equals_step():
    batch = data()
    a, b = mlp(bn=False), mlp(bn=False)
    opt_a = RWP(a.parameters(), noise_scale=0.05, mix=0.5, seed=7, lr=0.1)
    opt_b = RWP(b.parameters(), noise_scale=0.05, mix=0.5, seed=7, lr=0.1)
    for _ in range(3):
        opt_a.zero_grad()
        opt_a.step(closure_for(a, batch))
        ce(b, batch).backward()
        opt_b.first_step(zero_grad=True)
        ce(b, batch).backward()
        opt_b.second_step(zero_grad=True)
    assert_same(snapshot(a), snapshot(b))
    with pytest.raises(RuntimeError, match="without first_step"):
        opt_b.second_step()


def test_rwp_per_group_noise_scale_zero_leaves_that_group_unperturbed():
    model, batch = mlp(bn=False), data()
    groups = [
        {"params": model[0].parameters(), "noise_scale": 0.0},
        {"params": model[2].parameters()},
    ]
    opt = RWP(groups, noise_scale=0.5, mix=1.0, seed=0, lr=0.0)
    before = [p.detach().clone() for p in model.parameters()]
    seen = []

    def closure():
        seen.append([p.detach().clone() for p in model.parameters()])
        return closure_for(model, batch)()

    opt.step(closure)
    assert all(torch.equal(x, y) for x, y in zip(seen[0][:2], before[:2], strict=True))
    assert not torch.equal(seen[0][2], before[2])


# ------------------------------------------------------------------------------- ARWP


def conv_net(seed: int = 0) -> nn.Module:
    """A 3-D conv weight, 2-D linear weight and 1-D biases: every kind of filter."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv1d(2, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(12, 3)).double()


def conv_batches(n: int = 4) -> list:
    g = torch.Generator().manual_seed(2)
    return [
        (
            torch.randn(8, 2, 6, generator=g, dtype=torch.float64),
            torch.randint(0, 3, (8,), generator=g),
        )
        for _ in range(n)
    ]


def arwp_reference(model, batches, *, sigma, mix, eta, beta, lr, generator):
    """The authors' m-ARWP step (train_marwp.py, lambda = mix) written per parameter in
    float64, with plain SGD, drawing its standard normals from ``generator`` in parameter
    order. Returns the weights and the squared-gradient sums after every step."""
    params = [p.detach().clone() for p in model.parameters()]
    fisher: list = []  # empty until the first perturbed pass, as there
    history = []

    def grads_at(weights, batch):
        with torch.no_grad():
            for p, w in zip(model.parameters(), weights, strict=True):
                p.copy_(w)
        model.zero_grad()
        ce(model, batch).backward()
        return [p.grad.detach().clone() for p in model.parameters()]

    for batch in batches:
        g0 = grads_at(params, batch) if mix < 1 else None
        noisy = []
        for i, w in enumerate(params):
            sh = w.shape
            z = torch.empty_like(w).normal_(0.0, 1.0, generator=generator)
            if w.dim() > 1:
                std = w.reshape(sh[0], -1).norm(dim=1).reshape(-1, *[1] * (w.dim() - 1))
            else:
                std = w.norm()
            eps = z * (sigma * std)
            if fisher:  # the sum over each row of the (sh[0], -1) view, broadcast back
                f = fisher[i].reshape(sh[0], -1).sum(dim=1, keepdim=True)
                eps = eps / torch.sqrt(1 + eta * f.expand(sh[0], w[0].numel()).reshape(sh))
            noisy.append(w + eps)
        g1 = grads_at(noisy, batch)
        if not fisher:
            fisher = [g**2 for g in g1]  # the first perturbed pass: s = g̃²
        else:
            fisher = [s * beta + g**2 for s, g in zip(fisher, g1, strict=True)]
        update = g1 if mix == 1 else [mix * a + (1 - mix) * b for a, b in zip(g1, g0, strict=True)]
        params = [w - lr * u for w, u in zip(params, update, strict=True)]
        history.append(([w.clone() for w in params], [s.clone() for s in fisher]))
    return history


@pytest.mark.parametrize("mix", [0.5, 1.0], ids=["m-arwp", "arwp"])
def test_arwp_matches_the_authors_algorithm_over_one_and_two_steps(mix):
    sigma, eta, beta, lr = 0.3, 2.0, 0.7, 0.2
    batches = conv_batches(2)
    model = conv_net()
    opt = RWP(model, noise_scale=sigma, mix=mix, adapt=eta, adapt_decay=beta, seed=5, lr=lr)
    cpu = torch.device("cpu")
    generator = torch.Generator().manual_seed(0)
    generator.set_state(opt._generator(cpu).get_state())
    expected = arwp_reference(
        conv_net(), batches, sigma=sigma, mix=mix, eta=eta, beta=beta, lr=lr,
        generator=generator,
    )  # fmt: skip
    for batch, (weights, sums) in zip(batches, expected, strict=True):
        opt.zero_grad()
        opt.step(closure_for(model, batch))
        for p, w, s in zip(model.parameters(), weights, sums, strict=True):
            torch.testing.assert_close(p.detach(), w, rtol=0, atol=1e-13)
            torch.testing.assert_close(opt.state[p]["grad_sq"], s, rtol=1e-13, atol=1e-15)
    # the second step's noise was shrunk: plain RWP from the same draws ends elsewhere
    plain = conv_net()
    rwp = RWP(plain, noise_scale=sigma, mix=mix, seed=5, lr=lr)
    steps_on(rwp, plain, batches)
    worst = max(
        float((a.detach() - b).abs().max())
        for a, b in zip(plain.parameters(), expected[1][0], strict=True)
    )
    assert worst > 1e-6


def steps_on(opt, model, batches) -> None:
    for batch in batches:
        opt.zero_grad()
        opt.step(closure_for(model, batch))


@pytest.mark.parametrize("mix", [0.5, 1.0])
def test_arwp_with_adapt_zero_is_rwp_bit_for_bit(mix):
    a, b = conv_net(), conv_net()
    kw = {"noise_scale": 0.2, "mix": mix, "seed": 3, "lr": 0.1, "momentum": 0.9}
    arwp = RWP(a, adapt=0.0, adapt_decay=0.5, **kw)
    steps_on(arwp, a, conv_batches())
    steps_on(RWP(b, **kw), b, conv_batches())
    assert_same(snapshot(a), snapshot(b))
    assert all("grad_sq" not in arwp.state[p] for p in a.parameters())  # no history kept


def test_arwp_first_step_is_rwp_and_the_second_is_not():
    """No history on the first step: nothing to shrink. The equivalence above has teeth."""
    a, b = conv_net(), conv_net()
    kw = {"noise_scale": 0.2, "seed": 3, "lr": 0.1}
    arwp, rwp = RWP(a, adapt=1e-3, **kw), RWP(b, **kw)
    batches = conv_batches(2)
    steps_on(arwp, a, batches[:1])
    steps_on(rwp, b, batches[:1])
    assert_same(snapshot(a), snapshot(b))
    steps_on(arwp, a, batches[1:])
    steps_on(rwp, b, batches[1:])
    assert any(not torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_arwp_shrinks_each_filter_by_its_summed_history():
    """ε_i of the second step is the first's draw law divided by √(1 + η·Σ_filter s)."""
    w0 = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]], dtype=torch.float64)
    b0 = torch.tensor([0.2, -0.4, 0.1], dtype=torch.float64)
    w, b = nn.Parameter(w0.clone()), nn.Parameter(b0.clone())
    opt = RWP([w, b], noise_scale=0.1, mix=1.0, adapt=3.0, adapt_decay=0.5, seed=0, lr=0.0)
    c = torch.tensor([[1.0, -2.0], [0.5, 0.0], [3.0, 1.0]], dtype=torch.float64)
    seen = []

    def closure():  # linear loss: g̃ = c for w and 1 for b, wherever W + ε is
        seen.append((w.detach() - w0, b.detach() - b0))
        ((c * w).sum() + b.sum()).backward()

    generator = torch.Generator().manual_seed(0)
    generator.set_state(opt._generator(torch.device("cpu")).get_state())
    for _ in range(2):
        opt.zero_grad()
        opt.step(closure)
    torch.testing.assert_close(opt.state[w]["grad_sq"], 1.5 * c**2, rtol=0, atol=0)
    torch.testing.assert_close(opt.state[b]["grad_sq"], torch.full((3,), 1.5).double())
    for step in range(2):
        zw = torch.empty_like(w0).normal_(0.0, 1.0, generator=generator)
        zb = torch.empty_like(b0).normal_(0.0, 1.0, generator=generator)
        ew, eb = zw * 0.1 * w0.norm(dim=1, keepdim=True), zb * 0.1 * b0.norm()
        if step == 1:  # history c² (rows summed) and 1 (per bias element)
            ew = ew / torch.sqrt(1 + 3.0 * (c**2).sum(dim=1, keepdim=True))
            eb = eb / 2.0  # √(1 + 3·1)
        torch.testing.assert_close(seen[step][0], ew, rtol=1e-14, atol=1e-16)
        torch.testing.assert_close(seen[step][1], eb, rtol=1e-14, atol=1e-16)
    assert torch.equal(w.detach(), w0) and torch.equal(b.detach(), b0)


def test_filter_sums_per_output_row_and_elementwise_for_one_dimension():
    x = torch.arange(24.0).reshape(3, 2, 4)
    got = filter_sums(x)
    assert got.shape == (3, 1, 1)
    torch.testing.assert_close(got.flatten(), x.flatten(1).sum(dim=1))
    v = torch.tensor([3.0, 4.0])
    assert torch.equal(filter_sums(v), v)


def test_arwp_state_dict_round_trip_continues_bit_for_bit():
    batches = conv_batches(7)
    kw = {"noise_scale": 0.2, "adapt": 1.0, "adapt_decay": 0.8, "lr": 0.1, "momentum": 0.9}
    model = conv_net()
    opt = RWP(model, seed=3, **kw)
    steps_on(opt, model, batches[:3])
    saved = save_load({"model": model.state_dict(), "opt": opt.state_dict()})
    assert all("grad_sq" in s for s in saved["opt"]["state"].values())
    steps_on(opt, model, batches[3:])

    model2 = conv_net(seed=4)
    opt2 = RWP(model2, seed=99, **{**kw, "adapt": 0.5})  # the groups' η and β come back too
    model2.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    assert opt2.param_groups[0]["adapt"] == 1.0
    steps_on(opt2, model2, batches[3:])
    assert_same(snapshot(model2), snapshot(model))
    for p, q in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(opt.state[p]["grad_sq"], opt2.state[q]["grad_sq"])


def test_arwp_shares_its_history_through_grad_hook():
    """Distributed: s goes to the all-reduce with G, so every rank shrinks alike."""
    a, b = conv_net(), conv_net()
    opt_a, opt_b = (RWP(m, noise_scale=0.1, adapt=1.0, seed=0, lr=0.1) for m in (a, b))
    extras = []

    def hook(grads, extra):
        torch._foreach_mul_(extra, 2.0)  # e.g. a sum over two ranks
        extras.append(list(extra))

    opt_a.grad_hook = hook
    steps_on(opt_a, a, conv_batches(1))
    steps_on(opt_b, b, conv_batches(1))
    assert_same(snapshot(a), snapshot(b))  # G itself was left alone
    for p, q, s in zip(a.parameters(), b.parameters(), extras[0], strict=True):
        assert s is opt_a.state[p]["grad_sq"]
        assert torch.equal(s, 2.0 * opt_b.state[q]["grad_sq"])


def test_arwp_per_group_adapt():
    model = conv_net()
    groups = [{"params": model[0].parameters(), "adapt": 0.0}, {"params": model[3].parameters()}]
    opt = RWP(groups, noise_scale=0.1, adapt=1.0, seed=0, lr=0.1)
    steps_on(opt, model, conv_batches(2))
    assert [g["adapt"] for g in opt.param_groups] == [0.0, 1.0]
    assert [g["adapt_decay"] for g in opt.param_groups] == [0.9, 0.9]
    assert all("grad_sq" not in opt.state[p] for p in model[0].parameters())
    assert all("grad_sq" in opt.state[p] for p in model[3].parameters())
    with pytest.raises(ValueError, match=r"^adapt_decay \(param group 0\) must be"):
        RWP([{"params": model.parameters(), "adapt_decay": 1.0}], lr=0.1)
    with pytest.raises(ValueError, match=r"^adapt \(param group 0\) must be a number >= 0"):
        RWP([{"params": model.parameters(), "adapt": -1.0}], lr=0.1)


# ---------------------------------------------------------------------------- registry


@pytest.mark.parametrize("name", ["rwp", "arwp"])
@pytest.mark.parametrize("mix,evals", [(1.0, 1), (0.5, 2), (0.0, 1)])
def test_rwp_closure_calls_match_the_registry(name, mix, evals):
    assert OPTIMIZERS[name].evals_per_step(mix=mix) == evals
    model = mlp()
    opt = create_optimizer(name, model, lr=0.1, mix=mix, seed=0)
    for _ in range(2):  # ARWP's second step has a history: still the same passes
        calls: list = []
        opt.zero_grad()
        opt.step(closure_for(model, data(), calls))
        assert len(calls) == evals


def test_registry_entries():
    assert OPTIMIZERS["fsam"].cls is FSAM and OPTIMIZERS["fsam"].evals_per_step() == 2
    assert OPTIMIZERS["rwp"].cls is RWP and OPTIMIZERS["rwp"].evals_per_step() == 2
    assert FSAM.OPTIONS["rho"] is SAM.OPTIONS["rho"]
    assert RWP.OPTIONS["seed"] is NSO.OPTIONS["seed"]
    assert OPTIMIZERS["fsam"].options == {
        "rho": 0.05,
        "ema_decay": 0.9,
        "ema_weight": 1.0,
        "adaptive": False,
        "eta": 0.0,
        "max_grad_norm": None,
    }
    assert dict(OPTIMIZERS["rwp"].options) == {
        "noise_scale": 0.01,
        "mix": 0.5,
        "adapt": 0.0,
        "adapt_decay": 0.9,
        "seed": None,
        "max_grad_norm": None,
    }
    arwp = OPTIMIZERS["arwp"]
    assert (
        arwp.cls is RWP and arwp.evals_per_step() == 2 and arwp.options == OPTIMIZERS["rwp"].options
    )
    assert dict(arwp.preset) == {"adapt": 1.0}
    group = create_optimizer("arwp", mlp().parameters(), lr=0.1).param_groups[0]
    assert (group["noise_scale"], group["adapt"], group["adapt_decay"]) == (0.01, 1.0, 0.9)
    assert (
        create_optimizer("arwp", mlp().parameters(), lr=0.1, adapt=0.5).param_groups[0]["adapt"]
        == 0.5
    )


@pytest.mark.parametrize("cls", [FSAM, RWP], ids=lambda c: c.__name__)
def test_options_after_base_optimizer_are_keyword_only(cls):
    with pytest.raises(TypeError):
        cls(mlp().parameters(), torch.optim.SGD, 0.05)


@pytest.mark.parametrize(
    "name,cfg,arg",
    [
        ("fsam", {"ema_decay": 1.0}, "ema_decay"),
        ("fsam", {"ema_weight": -0.1}, "ema_weight"),
        ("rwp", {"noise_scale": -1e-3}, "noise_scale"),
        ("rwp", {"mix": 1.5}, "mix"),
        ("rwp", {"seed": -1}, "seed"),
        ("rwp", {"adapt": -0.5}, "adapt"),
        ("arwp", {"adapt": float("nan")}, "adapt"),
        ("arwp", {"adapt_decay": 1.0}, "adapt_decay"),
        ("arwp", {"adapt_decay": -0.1}, "adapt_decay"),
        ("arwp", {"adapt_decay": "0.9"}, "adapt_decay"),
    ],
)
def test_bad_values_name_the_argument(name, cfg, arg):
    with pytest.raises(ValueError, match=rf"^{arg}\b.* must be") as info:
        create_optimizer(name, mlp().parameters(), lr=0.1, **cfg)
    if arg == "adapt_decay":
        assert "must be a number >= 0 and < 1, got" in str(info.value)


def test_fsam_model_argument_keeps_batchnorm_to_the_first_pass():
    model, batch = mlp(), data()
    reference = copy.deepcopy(model)
    reference(batch[0])  # one train-mode forward at W
    FSAM(model, rho=0.5, lr=0.1).step(closure_for(model, batch))
    torch.testing.assert_close(model[1].running_mean, reference[1].running_mean)


class TwoRanks:
    """What ``grad_hook`` does under DDP, between two threads: the mean of every tensor."""

    def __init__(self) -> None:
        self.barrier = threading.Barrier(2, timeout=60)
        self.slots: list = [None, None]

    def hook(self, rank: int):
        def all_reduce_mean(grads, extra):
            tensors = [*grads, *extra]
            self.slots[rank] = [t.clone() for t in tensors]
            self.barrier.wait()
            torch._foreach_copy_(tensors, [(x + y) / 2 for x, y in zip(*self.slots, strict=True)])
            self.barrier.wait()  # both have read the slots before the next step refills them

        return all_reduce_mean


def run_ranks(pairs, start: int, n: int) -> None:
    """Each (model, optimizer) pair a rank stepping on its own batches, in its own thread."""

    def rank(index: int) -> None:
        model, opt = pairs[index]
        steps(opt, model, n, start=start + 100 * index)  # each rank its own data

    threads = [threading.Thread(target=rank, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def weights_of(model: nn.Module) -> dict:
    """The parameters (BatchNorm's running statistics are each rank's own, as under DDP
    without SyncBatchNorm)."""
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_fsam_ema_is_the_same_on_every_rank_so_rank_zeros_checkpoint_resumes_all():
    world = TwoRanks()
    pairs = []
    for rank in range(2):
        model = mlp()
        opt = FSAM(model, lr=0.1, momentum=0.9, ema_decay=0.7)
        opt.grad_hook = world.hook(rank)
        pairs.append((model, opt))
    run_ranks(pairs, 0, 3)
    (a, opt_a), (b, opt_b) = pairs
    assert_same(weights_of(a), weights_of(b))
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(opt_a.state[p]["ema"], opt_b.state[q]["ema"])  # was: each rank's own
    saved = save_load({"model": a.state_dict(), "opt": opt_a.state_dict()})  # rank 0 writes
    run_ranks(pairs, 3, 3)

    resumed, world = [], TwoRanks()
    for rank in range(2):
        model = mlp(seed=5)
        opt = FSAM(model, lr=0.1, momentum=0.9, ema_decay=0.7)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(copy.deepcopy(saved["opt"]))  # each process reads its own copy
        opt.grad_hook = world.hook(rank)
        resumed.append((model, opt))
    run_ranks(resumed, 3, 3)
    for (model, _), (again, _) in zip(pairs, resumed, strict=True):
        assert_same(weights_of(again), weights_of(model))
