"""Hessian trace, eigenvalues and density against exact float64 Hessians of small models."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from common.checks import OptionError
from common.sharpness.hessian import (
    check_trace_options,
    hessian_eigenvalues,
    hessian_esd,
    hessian_trace,
)
from common.sharpness.hvp import HessianOperator


def ce(model, batch):
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


def small_model(seed: int = 0, hidden: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, hidden), nn.Tanh(), nn.Linear(hidden, 2)).double()


def dataset(n: int = 10, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=torch.float64), torch.randint(
        0, 2, (n,), generator=g
    )


def exact_hessian(model: nn.Module, loss_fn, batch) -> torch.Tensor:
    """H of loss_fn(model, batch) w.r.t. all parameters, flattened in named order."""
    named = list(model.named_parameters())
    flat = torch.cat([p.detach().reshape(-1) for _, p in named])

    def f(vec):
        params, i = {}, 0
        for name, p in named:
            params[name] = vec[i : i + p.numel()].reshape(p.shape)
            i += p.numel()
        return loss_fn(lambda x: functional_call(model, params, (x,)), batch)

    return torch.autograd.functional.hessian(f, flat)


def split(x, y, sizes):
    out, start = [], 0
    for s in sizes:
        out.append((x[start : start + s], y[start : start + s]))
        start += s
    return out


@pytest.fixture
def problem():
    model = small_model()
    x, y = dataset()
    return model, (x, y), exact_hessian(model, ce, (x, y))


def test_hutchinson_is_within_its_standard_error(problem):
    model, (x, y), h = problem
    r = hessian_trace(model, ce, split(x, y, [4, 6]), n_probes=400, seed=3)
    assert abs(r.total - float(h.trace())) < 4 * r.stderr
    assert r.n_probes == 400 and r.n_examples == 10
    assert sum(r.per_layer.values()) == pytest.approx(r.total, rel=1e-9)


def test_per_layer_traces_are_the_diagonal_blocks(problem):
    model, (x, y), h = problem
    r = hessian_trace(model, ce, [(x, y)], n_probes=90, method="hutch++")  # 30 ≥ 26 params: exact
    start = 0
    for name, p in model.named_parameters():
        block = float(h[start : start + p.numel(), start : start + p.numel()].trace())
        assert r.per_layer[name] == pytest.approx(block, rel=1e-8, abs=1e-10)
        start += p.numel()
    assert r.total == pytest.approx(float(h.trace()), rel=1e-8)


def test_hutchpp_is_far_tighter_than_hutchinson():
    """Where a few eigenvalues dominate, as for trained networks and natural inputs.

    Softmax regression (H is exactly its Gauss-Newton matrix) on inputs whose variance
    decays like a PCA spectrum; on a flat spectrum Hutch++ has nothing to deflate.
    """
    torch.manual_seed(0)
    model = nn.Linear(30, 4).double()  # 124 parameters, 10 sketch vectors at 30 probes
    g = torch.Generator().manual_seed(1)
    scale = 3 / (1 + torch.arange(30, dtype=torch.float64)) ** 2
    x = torch.randn(50, 30, generator=g, dtype=torch.float64) * scale
    y = torch.randint(0, 4, (50,), generator=g)
    exact = float(exact_hessian(model, ce, (x, y)).trace())
    errors = {m: [] for m in ("hutchinson", "hutch++")}
    for seed in range(8):
        for method in errors:
            r = hessian_trace(model, ce, [(x, y)], n_probes=30, method=method, seed=seed)
            errors[method].append(abs(r.total - exact))
    mean = {m: sum(e) / len(e) for m, e in errors.items()}
    assert mean["hutch++"] < 0.25 * mean["hutchinson"], mean


def test_multi_batch_weighting_matches_the_full_data_hessian(problem):
    model, (x, y), h = problem
    top = float(torch.linalg.eigvalsh(h)[-1])
    for sizes in ([10], [1, 9], [3, 3, 4]):
        e = hessian_eigenvalues(model, ce, split(x, y, sizes), k=1, tol=1e-10)
        assert e.eigenvalues[0] == pytest.approx(top, rel=1e-6)
    # the batch size may also be read by a callable
    e = hessian_eigenvalues(
        model, ce, split(x, y, [2, 8]), tol=1e-10, batch_size=lambda b: len(b[1])
    )
    assert e.eigenvalues[0] == pytest.approx(top, rel=1e-6)


def test_top_k_eigenvalues(problem):
    model, (x, y), h = problem
    exact = torch.linalg.eigvalsh(h).flip(0)[:4].tolist()
    e = hessian_eigenvalues(model, ce, [(x, y)], k=4, seed=1)
    assert e.eigenvalues == pytest.approx(exact, rel=1e-3)
    assert e.eigenvalues == sorted(e.eigenvalues, reverse=True)
    assert e.record.options["k"] == 4 and e.record.n_examples == 10


def test_largest_algebraic_eigenvalue_when_the_negative_side_dominates():
    a = torch.diag(torch.tensor([-5.0, -1.0, 0.5, 2.0], dtype=torch.float64))

    class Quadratic(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor([0.3, -0.2, 0.1, 0.4], dtype=torch.float64))

        def forward(self, x):
            return 0.5 * self.w @ a @ self.w + x.sum() * 0

    batch = (torch.zeros(2, 1, dtype=torch.float64),)
    e = hessian_eigenvalues(Quadratic(), lambda m, b: m(b[0]), [batch], k=2)
    assert e.eigenvalues == pytest.approx([2.0, 0.5], rel=1e-6)
    r = hessian_trace(Quadratic(), lambda m, b: m(b[0]), [batch], n_probes=50, seed=0)
    # negative trace: all 50 probes are used and (Rademacher on a diagonal) it is exact
    assert r.n_probes == 50 and r.total == pytest.approx(-3.5, rel=1e-12)


def test_negative_trace_stays_unbiased():
    torch.manual_seed(0)
    q = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64)).Q
    a = q @ torch.diag(torch.tensor([-6.0, -3, -2, -1, 0.5, 1, 1.5, 2], dtype=torch.float64)) @ q.T

    class Quadratic(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(8, dtype=torch.float64))

        def forward(self, x):
            return 0.5 * self.w @ a @ self.w + x.sum() * 0

    batch = (torch.zeros(1, 1, dtype=torch.float64),)
    r = hessian_trace(Quadratic(), lambda m, b: m(b[0]), [batch], n_probes=200, seed=5)
    assert r.n_probes == 200  # PyHessian's release stops after 2-3 probes here
    assert abs(r.total - float(a.trace())) < 4 * r.stderr


def test_density_integrates_to_one_and_matches_the_spectrum(problem):
    model, (x, y), h = problem
    d = hessian_esd(model, ce, [(x, y)], n_iter=40, n_runs=3, seed=2)
    grid, density = torch.tensor(d.grid), torch.tensor(d.density)
    assert float(torch.trapezoid(density, grid)) == pytest.approx(1.0, abs=1e-9)
    assert (density >= 0).all()
    for nodes, weights in zip(d.nodes, d.weights, strict=True):
        assert sum(weights) == pytest.approx(1.0, abs=1e-9)
        # the Krylov space is exhausted on 26 parameters: nodes are exact eigenvalues
        assert max(nodes) == pytest.approx(float(torch.linalg.eigvalsh(h)[-1]), rel=1e-6)
    # each run's Σ w·θ is v̂ᵀHv̂ for its Rademacher start: one Hutchinson sample of tr(H)/P
    many = hessian_esd(model, ce, [(x, y)], n_iter=30, n_runs=60, seed=3, n_grid=100)
    firsts = torch.tensor(
        [
            sum(w * t for w, t in zip(ws, ns, strict=True))
            for ws, ns in zip(many.weights, many.nodes, strict=True)
        ]
    )
    stderr = float(firsts.std() / len(firsts) ** 0.5)
    assert abs(float(firsts.mean()) - float(h.trace()) / h.shape[0]) < 4 * stderr


def test_esd_plot_is_written(problem, tmp_path):
    from common.sharpness import plot_esd

    model, (x, y), _ = problem
    paths = plot_esd(hessian_esd(model, ce, [(x, y)], n_iter=10, n_grid=500), tmp_path / "m")
    assert [p.rsplit(".", 1)[1] for p in paths] == ["png", "pdf"]
    assert all((tmp_path / p).stat().st_size > 1000 for p in paths)


def test_state_is_restored_after_an_exception(problem):
    model, (x, y), _ = problem
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    calls = []

    def failing(m, b):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return ce(m, b)

    for fn in (
        lambda: hessian_trace(model, failing, split(x, y, [5, 5]), n_probes=4),
        lambda: hessian_eigenvalues(model, failing, split(x, y, [5, 5])),
    ):
        calls.clear()
        with pytest.raises(RuntimeError, match="boom"):
            fn()
        assert model.training
        for k, v in model.state_dict().items():
            assert torch.equal(v, before[k])
        assert all(torch.equal(p.grad, torch.full_like(p, 7.0)) for p in model.parameters())
    hessian_trace(model, ce, [(x, y)], n_probes=2)
    assert model.training and all(p.grad is not None for p in model.parameters())


def test_reference_parameter_selection():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)
    ).double()
    x = torch.randn(6, 1, 4, 4, dtype=torch.float64)
    y = torch.randint(0, 2, (6,))
    r = hessian_trace(model, ce, [(x, y)], n_probes=4, params="reference")
    assert set(r.per_layer) == {"0.weight", "4.weight"}
    assert r.record.params == "reference" and r.record.n_params == 2 * 9 + 16
    r = hessian_trace(model, ce, [(x, y)], n_probes=6, params=["4.bias"], method="hutch++")
    assert set(r.per_layer) == {"4.bias"}
    # 2 coordinates, 2 sketch vectors: Hutch++ is exact; compare with the exact block
    bias = model[4].bias

    def loss_of_bias(b):
        return ce(lambda inp: functional_call(model, {"4.bias": b}, (inp,)), (x, y))

    model.eval()  # measurements run in eval mode: BN normalises with its running statistics
    block = torch.autograd.functional.hessian(loss_of_bias, bias.detach())
    assert r.total == pytest.approx(float(block.trace()), rel=1e-8)


def test_tol_stops_early_and_records_the_probes_used(problem):
    model, (x, y), _ = problem
    r = hessian_trace(model, ce, [(x, y)], n_probes=1000, tol=0.2, chunk_size=10)
    assert 10 <= r.n_probes < 1000 and r.stderr <= 0.2 * abs(r.total)


def test_batched_and_looped_products_agree(problem, monkeypatch):
    model, (x, y), h = problem
    model.eval()
    params = list(model.parameters())
    v = torch.randn(5, h.shape[0], dtype=torch.float64)
    batches = [(b, len(b[1])) for b in split(x, y, [4, 6])]  # (batch, size) pairs
    looped = HessianOperator(model, ce, batches, params, batched=False).matmat(v)
    batched = HessianOperator(model, ce, batches, params, batched=True).matmat(v)
    torch.testing.assert_close(batched, looped, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(looped, v @ h, rtol=1e-8, atol=1e-10)  # the exact H·v
    original = HessianOperator._grad

    def no_vmap(self, outputs, vectors, batched):
        if batched:
            raise RuntimeError("no batching rule")
        return original(self, outputs, vectors, batched)

    monkeypatch.setattr(HessianOperator, "_grad", no_vmap)
    fallback = HessianOperator(model, ce, batches, params, batched=True).matmat(v)
    torch.testing.assert_close(fallback, looped, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "call,arg",
    [
        (lambda m, d: hessian_trace(m, ce, d, method="exact"), "method"),
        (lambda m, d: hessian_trace(m, ce, d, n_probes=0), "n_probes"),
        (lambda m, d: hessian_trace(m, ce, d, n_probes=2, method="hutch++"), "n_probes"),
        (lambda m, d: hessian_trace(m, ce, d, tol=-1.0), "tol"),
        (lambda m, d: hessian_eigenvalues(m, ce, d, k=0), "k"),
        (lambda m, d: hessian_esd(m, ce, d, n_runs=0), "n_runs"),
        (lambda m, d: hessian_trace(m, ce, [], n_probes=2), "empty"),
        (lambda m, d: hessian_trace(m, ce, d, params="convs"), "params"),
    ],
)
def test_bad_input(problem, call, arg):
    model, (x, y), _ = problem
    with pytest.raises(ValueError, match=arg):
        call(model, [(x, y)])


# ---------------------------------------------------------------- stopping on accuracy


def test_target_stderr_stops_once_reached_within_the_budget(problem):
    model, (x, y), _ = problem
    r = hessian_trace(model, ce, [(x, y)], n_probes=2000, target_stderr=0.15)
    assert 10 <= r.n_probes < 2000 and r.stderr <= 0.15
    capped = hessian_trace(model, ce, [(x, y)], n_probes=12, target_stderr=1e-9)
    assert capped.n_probes == 12 and capped.stderr > 1e-9  # the budget ends it


def test_hutchpp_with_a_small_sketch_and_a_target(problem):
    model, (x, y), h = problem
    r = hessian_trace(
        model, ce, [(x, y)], method="hutch++", n_probes=2000, sketch_size=3, target_stderr=0.15
    )
    assert r.stderr <= 0.15 and r.n_probes < 2000
    assert r.total == pytest.approx(float(h.trace()), abs=5 * r.stderr + 1e-9)


def test_per_batch_probes_estimate_the_size_weighted_trace(problem):
    """sampling="batch": each probe through one batch; unequal batches weigh by size."""
    model, (x, y), h = problem
    sizes = [2, 3, 5]
    r = hessian_trace(model, ce, split(x, y, sizes), n_probes=3000, sampling="batch")
    assert r.total == pytest.approx(float(h.trace()), abs=4 * r.stderr)
    assert r.stderr < 0.15 * abs(float(h.trace()))
    assert r.n_probes == 3000 // 3  # products through one batch each: a third of a full one
    assert sum(r.samples) / len(r.samples) == pytest.approx(r.total, rel=1e-12)
    assert sum(r.per_layer.values()) == pytest.approx(r.total, rel=1e-9)


def test_per_batch_stderr_is_the_stratified_one(problem, monkeypatch):
    """Against the formula computed here from each batch's own products."""
    model, (x, y), _ = problem
    model.eval()
    data = split(x, y, [4, 6])
    r = hessian_trace(model, ce, data, n_probes=40, sampling="batch", seed=3)
    # the samples are B·w_b·vᵀH_b v, in round-robin order: batch 0, batch 1, batch 0, ...
    weights = [0.4, 0.6]
    per_batch = [[s / (2 * w) for s in r.samples[b::2]] for b, w in enumerate(weights)]
    var = sum(
        w**2 * torch.tensor(xs, dtype=torch.float64).var().item() / len(xs)
        for w, xs in zip(weights, per_batch, strict=True)
    )
    assert r.stderr == pytest.approx(var**0.5, rel=1e-9)
    stopped = hessian_trace(model, ce, data, n_probes=4000, sampling="batch", target_stderr=0.2)
    assert stopped.stderr <= 0.2 and stopped.n_probes < 2000


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"target_stderr": 0.0}, "target_stderr"),
        ({"target_stderr": -1.0}, "target_stderr"),
        ({"sketch_size": 3}, "hutch\\+\\+"),
        ({"method": "hutch++", "sketch_size": 10, "n_probes": 20}, "leaves no probes"),
        ({"sampling": "every"}, "sampling"),
        ({"sampling": "batch", "method": "hutch++"}, "hutchinson"),
    ],
)
def test_bad_stopping_options_are_refused(problem, kwargs, match):
    model, (x, y), _ = problem
    with pytest.raises(OptionError, match=match):
        hessian_trace(model, ce, [(x, y)], **kwargs)
    with pytest.raises(OptionError, match=match):  # the same check, before any model
        check_trace_options(**kwargs)


def test_ritz_error_bounds_hold_at_every_step() -> None:
    """min(r, r²/gap) bounds each Ritz value's distance to the spectrum on a random matrix."""
    from common.sharpness.hessian import lanczos, ritz_error_bounds

    g = torch.Generator().manual_seed(0)
    a = torch.randn(60, 60, generator=g, dtype=torch.float64)
    a = (a + a.T) / 2
    a[0, 0] += 25.0  # a separated top eigenvalue, as Hessians have
    spectrum = torch.linalg.eigvalsh(a)
    v0 = torch.randn(60, generator=g, dtype=torch.float64)
    alphas, betas = [], []
    basis = [v0 / v0.norm()]
    for j in range(25):
        w = a @ basis[j]
        alphas.append(float(w @ basis[j]))
        stacked = torch.stack(basis)
        w = w - stacked.T @ (stacked @ w)
        w = w - stacked.T @ (stacked @ w)
        beta = float(w.norm())
        theta, bound = ritz_error_bounds(alphas, betas, beta)
        top = theta[-1]
        assert float((spectrum - top).abs().min()) <= float(bound[-1]) * (1 + 1e-9) + 1e-12
        betas.append(beta)
        basis.append(w / beta)
    # and the stopping rule delivers the relative error asked for
    theta, _ = lanczos(lambda v: a @ v, v0, 60, k=1, tol=1e-6)
    assert abs(float(theta[-1]) - float(spectrum[-1])) <= 1e-6 * abs(float(spectrum[-1]))


def test_top_eigenvalue_meets_the_requested_relative_error(problem):
    model, (x, y), h = problem
    exact = float(torch.linalg.eigvalsh(h)[-1])
    for tol in (1e-2, 1e-4):
        e = hessian_eigenvalues(model, ce, [(x, y)], tol=tol)
        assert abs(e.eigenvalues[0] - exact) <= tol * abs(exact)


class _Quadratic(nn.Module):
    """loss(w) = ½ wᵀAw − bᵀw: H = A, gradient Aw − b, both exact."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> None:
        super().__init__()
        self.a, self.b = a, b
        self.w = nn.Parameter(w.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.w @ self.a @ self.w - self.b @ self.w + x.sum() * 0


def _quadratic_loss(model, batch):
    return model(batch[0])


def test_gradient_start_stops_sooner_where_the_gradient_points_at_the_top():
    # one top eigenvalue over a bulk; the gradient lies along the top eigenvector. Lanczos
    # from it saves the products that would lift the top's share out of the bulk
    n = 200
    spectrum = torch.cat([torch.tensor([10.0]), torch.linspace(0.5, 5.0, n - 1)]).double()
    q = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(0)).double()).Q
    model = _Quadratic(q @ torch.diag(spectrum) @ q.T, torch.zeros(n, dtype=torch.float64), q[:, 0])
    batch = [(torch.zeros(1, 1, dtype=torch.float64),)]
    for seed in range(3):
        runs = {
            start: hessian_eigenvalues(
                model, _quadratic_loss, batch, tol=1e-3, start=start, seed=seed
            )
            for start in ("gradient", "random")
        }
        for run in runs.values():
            assert run.eigenvalues[0] == pytest.approx(10.0, rel=1e-3)
        assert runs["gradient"].n_products <= runs["random"].n_products - 2, runs
    assert runs["gradient"].record.options["start"] == "gradient"
    assert runs["random"].record.options["start"] == "random"


def test_gradient_start_still_finds_an_eigenvector_the_gradient_misses():
    # the gradient is orthogonal to the top eigenvector: its random half finds it
    a = torch.diag(torch.tensor([9.0, 3.0, 2.0, 1.0, 0.5], dtype=torch.float64))
    model = _Quadratic(
        a, torch.zeros(5, dtype=torch.float64), w=torch.tensor([0, 1, 1, 1, 1.0]).double()
    )
    batch = [(torch.zeros(1, 1, dtype=torch.float64),)]
    e = hessian_eigenvalues(model, _quadratic_loss, batch, k=2, tol=1e-10)
    assert e.eigenvalues == pytest.approx([9.0, 3.0], rel=1e-9)
    # at a stationary point (zero gradient) it is the random start
    at_minimum = _Quadratic(
        a, torch.zeros(5, dtype=torch.float64), w=torch.zeros(5, dtype=torch.float64)
    )
    runs = [
        hessian_eigenvalues(at_minimum, _quadratic_loss, batch, tol=1e-10, start=start)
        for start in ("gradient", "random")
    ]
    assert runs[0].eigenvalues == runs[1].eigenvalues == pytest.approx([9.0], rel=1e-9)


def test_gradient_start_agrees_with_the_exact_hessian_on_several_batches(problem):
    model, (x, y), h = problem
    exact = torch.linalg.eigvalsh(h).flip(0)[:3].tolist()
    for keep in (False, True):
        e = hessian_eigenvalues(model, ce, split(x, y, [3, 7]), k=3, tol=1e-9, keep_graphs=keep)
        assert e.eigenvalues == pytest.approx(exact, rel=1e-7)
    with pytest.raises(OptionError, match="start=gradients is not a Lanczos start"):
        hessian_eigenvalues(model, ce, [(x, y)], start="gradients")


def test_operator_gradient_is_the_size_weighted_full_data_gradient(problem):
    model, (x, y), _ = problem
    params = list(model.parameters())
    full = torch.autograd.grad(ce(model, (x, y)), params)
    expected = torch.cat([g.reshape(-1) for g in full])
    for keep in (False, True):
        batches = [(b, len(b[1])) for b in split(x, y, [4, 6])]
        op = HessianOperator(model, ce, batches, params, keep_graphs=keep)
        assert torch.allclose(op.gradient(), expected, rtol=1e-12, atol=1e-14)
        assert op.products == 0 and len(op._graphs) == (2 if keep else 0)


def _block_traces(model: nn.Module, h: torch.Tensor) -> dict[str, float]:
    """tr of each module's diagonal block of h (a weight and its bias together)."""
    spans: dict[str, list[int]] = {}
    start = 0
    for name, p in model.named_parameters():
        spans.setdefault(name.rpartition(".")[0], []).extend(range(start, start + p.numel()))
        start += p.numel()
    return {k: float(h[idx][:, idx].trace()) for k, idx in spans.items()}


def test_stratified_is_unbiased_with_a_standard_error_that_covers_it(problem):
    model, (x, y), h = problem
    exact = float(h.trace())
    runs = [
        hessian_trace(model, ce, [(x, y)], n_probes=12, method="stratified", seed=s)
        for s in range(60)
    ]
    totals = torch.tensor([r.total for r in runs])
    z = (totals - exact) / torch.tensor([r.stderr for r in runs])
    assert abs(float(totals.mean()) - exact) < 4 * float(totals.std()) / 60**0.5
    assert float((z.abs() < 2).double().mean()) >= 0.85  # ~95 % for a true standard error
    # the formula's standard error is the spread of the estimates, within sampling noise
    spread = float(totals.std())
    typical = float(torch.tensor([r.stderr for r in runs]).median())
    assert 0.6 < typical / spread < 1.6, (typical, spread)
    r = runs[0]
    assert r.n_probes == 12 and r.method == "stratified"
    assert sum(r.per_layer.values()) == pytest.approx(r.total, rel=1e-9)


def test_stratified_leaves_out_the_blocks_coupling_layers():
    # two layers strongly coupled, each block alone nearly diagonal: Hutchinson's variance
    # is the coupling, the stratified estimate's almost none
    n = 40
    g = torch.Generator().manual_seed(3)
    coupling = torch.randn(n, n, generator=g, dtype=torch.float64)
    a = torch.zeros(2 * n, 2 * n, dtype=torch.float64)
    a[:n, n:], a[n:, :n] = coupling, coupling.T
    a += torch.diag(torch.rand(2 * n, generator=g, dtype=torch.float64))

    class TwoLayers(nn.Module):
        def __init__(self):
            super().__init__()
            self.first = nn.Linear(n, 1, bias=False).double()
            self.second = nn.Linear(n, 1, bias=False).double()

        def forward(self, x):
            w = torch.cat([self.first.weight[0], self.second.weight[0]])
            return 0.5 * w @ a @ w + x.sum() * 0

    model, batch = TwoLayers(), [(torch.zeros(1, 1, dtype=torch.float64),)]
    exact = float(a.trace())
    errors = {m: [] for m in ("hutchinson", "stratified")}
    for seed in range(10):
        for method in errors:
            r = hessian_trace(model, _quadratic_loss, batch, n_probes=10, method=method, seed=seed)
            errors[method].append(abs(r.total - exact))
    assert max(errors["stratified"]) < 1e-6 * exact < min(errors["hutchinson"]), errors


def _tiny_softmax_head():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(1, 1, bias=False), nn.Tanh(), nn.Linear(1, 1, bias=False), nn.Tanh(),
        nn.Linear(1, 2),
    ).double()  # fmt: skip
    x, y = torch.randn(6, 1, dtype=torch.float64), torch.tensor([0, 1, 0, 1, 1, 0])
    return model, (x, y)


def test_stratified_is_exact_on_one_coordinate_layers_and_stops_there():
    model, (x, y) = _tiny_softmax_head()
    h = exact_hessian(model, ce, (x, y))
    blocks = _block_traces(model, h)
    r = hessian_trace(model, ce, [(x, y)], n_probes=200, method="stratified", target_stderr=0.05)
    # the 1-coordinate layers are exact after one probe each; the head's 4 coordinates
    # are sampled until the standard error is met
    assert r.per_layer["0.weight"] == pytest.approx(blocks["0"], rel=1e-12)
    assert r.per_layer["2.weight"] == pytest.approx(blocks["2"], rel=1e-12)
    assert abs(r.per_layer["4.weight"] + r.per_layer["4.bias"] - blocks["4"]) <= 4 * r.stderr
    assert 0 < r.stderr <= 0.05 and r.n_probes < 200


def test_stratified_does_not_believe_a_head_that_looked_quiet_after_one_probe():
    # a probe of a softmax head with few coordinates often falls on its shift-invariant
    # directions; one probe per layer starved the head (total 7e-4 of 0.45 with a
    # standard error of 0 on 3 of these 40 seeds)
    model, (x, y) = _tiny_softmax_head()
    exact = float(exact_hessian(model, ce, (x, y)).trace())
    for seed in range(40):
        r = hessian_trace(
            model, ce, [(x, y)], n_probes=50, method="stratified", seed=seed, target_stderr=0.05
        )
        assert r.stderr > 0 and abs(r.total - exact) <= 5 * r.stderr, (seed, r.total, r.stderr)


def test_stratified_on_several_batches_subsets_and_without_kept_graphs(problem):
    model, (x, y), h = problem
    exact = float(h.trace())
    names = [n for n, _ in model.named_parameters()]
    start, spans = 0, {}
    for n, p in model.named_parameters():
        spans[n] = range(start, start + p.numel())
        start += p.numel()
    for keep in (False, True):
        r = hessian_trace(
            model, ce, split(x, y, [3, 7]), n_probes=300, method="stratified",
            keep_graphs=keep, seed=4,
        )  # fmt: skip
        assert abs(r.total - exact) <= 4 * r.stderr and r.n_probes == 300
    # a subset: the weight of the first layer without its bias, and the second layer whole
    chosen = [names[0], names[2], names[3]]
    idx = [i for n in chosen for i in spans[n]]
    r = hessian_trace(model, ce, [(x, y)], n_probes=300, method="stratified", params=chosen)
    assert set(r.per_layer) == set(chosen)
    assert abs(r.total - float(h[idx][:, idx].trace())) <= 4 * r.stderr


def test_stratified_variance_estimate_is_the_rademacher_formula():
    from common.sharpness.hessian import _Stratum

    g = torch.Generator().manual_seed(0)
    m = torch.randn(30, 30, generator=g, dtype=torch.float64)
    a = m + m.T
    formula = 2 * (float((a * a).sum()) - float((a.diagonal() ** 2).sum()))
    st = _Stratum([slice(0, 30)], torch.device("cpu"))
    for _ in range(400):
        z = (torch.randint(0, 2, (30,), generator=g) * 2 - 1).double()
        st.add(z, a @ z)
    assert st.formula_variance == pytest.approx(formula, rel=0.1)
    assert statistics_variance(st.values) == pytest.approx(formula, rel=0.25)
    assert st.variance == pytest.approx(max(st.formula_variance, statistics_variance(st.values)))


def statistics_variance(values: list[float]) -> float:
    t = torch.tensor(values, dtype=torch.float64)
    return float(t.var())


def test_stratified_refuses_a_budget_below_one_probe_per_layer(problem):
    model, (x, y), _ = problem
    with pytest.raises(ValueError, match="needs 2 probes per layer first: n_probes=1 is below"):
        hessian_trace(model, ce, [(x, y)], n_probes=1, method="stratified")
    with pytest.raises(OptionError, match="sampling=batch is a way of method=hutchinson"):
        hessian_trace(model, ce, [(x, y)], n_probes=10, method="stratified", sampling="batch")


def test_layers_of_the_stratified_trace_are_numbered_blocks_else_modules():
    from common.sharpness.hessian import layer_of

    assert layer_of("13.weight") == "13"  # a Sequential's module
    assert layer_of("features.0.bias") == "features.0"
    assert layer_of("layer1.0.conv1.weight") == "layer1.0"  # a ResNet block
    assert layer_of("bert.encoder.layer.3.attention.self.query.weight") == "bert.encoder.layer.3"
    assert layer_of("fc.weight") == layer_of("fc.bias") == "fc"
    assert layer_of("bert.embeddings.word_embeddings.weight") == "bert.embeddings.word_embeddings"
    assert layer_of("scale") == ""  # a parameter of the model itself


@pytest.mark.parametrize(
    ("message", "words"),
    [
        (
            "sampling=batch is a way of method=hutchinson: drop one of them",
            "hessian.sampling=batch is a way of hessian.method=hutchinson: drop one of them",
        ),
        ("k must be an integer >= 1, got 0", "hessian.top_k must be an integer >= 1, got 0"),
        (
            "k=9 exceeds the 4 parameters measured",
            "hessian.top_k=9 exceeds the 4 parameters measured",
        ),
        ("start='middle' is not", "hessian.eig_start=middle is not"),
        ("max_iter=3 is short", "max_iter=3 is short"),  # not a key of the section: as is
    ],
)
def test_an_option_error_is_said_in_the_config_sections_words(message, words):
    from common.checks import config_words
    from common.measurements.hessian import KEYS

    assert config_words(message, "hessian", KEYS) == words


def test_functional_hvp_is_the_exact_hessian_times_its_vector(problem):
    # the forward-over-reverse product the benchmark and the GPU check time against ours
    from common.sharpness.hvp import functional_hvp

    model, (x, y), hessian = problem
    params, vector, product = functional_hvp(model, x, y)
    assert all(set(v.unique().tolist()) <= {-1.0, 1.0} for v in vector.values())
    flat = torch.cat([v.reshape(-1) for v in vector.values()])
    got = torch.cat([t.reshape(-1) for t in product(params, vector).values()])
    torch.testing.assert_close(got, hessian @ flat, rtol=1e-10, atol=1e-12)
