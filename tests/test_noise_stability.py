"""Noise stability against exact values on float64 models small enough to form the Hessian."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from common.sharpness.noise import NoiseStabilityResult, noise_stability


def tanh_mlp(seed: int = 0) -> nn.Module:
    """3 -> 4 -> 2 tanh MLP in float64: 26 parameters."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()


def regression_data(n: int = 10, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    return x, torch.randn(n, 2, generator=g, dtype=torch.float64)


def f64(samples: list[float]) -> torch.Tensor:
    return torch.tensor(samples, dtype=torch.float64)


def split(batch, sizes):
    x, y = batch
    return list(zip(x.split(sizes), y.split(sizes), strict=True))


def mse(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return nn.functional.mse_loss(model(x), y)


class Quadratic(nn.Module):
    """L(w) = ½ wᵀAw + bᵀw, whatever the batch."""

    def __init__(self, dim: int = 6, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        m = torch.randn(dim, dim, generator=g, dtype=torch.float64)
        self.register_buffer("a", m.T @ m + torch.eye(dim, dtype=torch.float64))
        self.register_buffer("b", torch.randn(dim, generator=g, dtype=torch.float64))
        self.w = nn.Parameter(torch.randn(dim, generator=g, dtype=torch.float64))

    def forward(self) -> torch.Tensor:
        return 0.5 * self.w @ self.a @ self.w + self.b @ self.w


def quad_loss(model: Quadratic, batch) -> torch.Tensor:
    return model()


# one batch of 4 "examples" that the quadratic ignores: data must still be batches
QUAD_DATA = [(torch.zeros(4, 1),)]


def test_two_sided_small_sigma_is_half_sigma_squared_trace_of_exact_hessian():
    model, batch = tanh_mlp(), regression_data()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss_of(vector: torch.Tensor) -> torch.Tensor:
        chunks = vector.split([s.numel() for s in shapes])
        weights = {n: c.view(s) for n, c, s in zip(names, chunks, shapes, strict=True)}
        return nn.functional.mse_loss(functional_call(model, weights, (batch[0],)), batch[1])

    trace = float(torch.autograd.functional.hessian(loss_of, flat).trace())
    sigma = 1e-3
    # unequal batches: the full-data loss is their size-weighted mean
    res = noise_stability(
        model, mse, split(batch, [3, 7]), sigma=sigma, n_samples=2000, two_sided=True
    )
    expected = sigma**2 / 2 * trace
    assert abs(res.mean - expected) < 4 * res.stderr
    assert abs(res.mean - expected) < 0.1 * abs(expected)
    assert res.base_loss == pytest.approx(float(mse(model, batch).detach()), rel=1e-12)
    assert res.record.n_params == flat.numel() == 26


def test_quadratic_samples_are_exact_and_unbiased():
    model = Quadratic()
    w0 = model.w.detach().clone()
    a, b = model.a, model.b
    sigma, n = 0.5, 400
    seen: list[torch.Tensor] = []

    def watching(m: Quadratic, batch) -> torch.Tensor:
        seen.append(m.w.detach().clone())
        return quad_loss(m, batch)

    res = noise_stability(model, watching, QUAD_DATA, sigma=sigma, n_samples=n, two_sided=True)
    # calls: base, then (W+U_i, W−U_i) per draw, with the same U_i
    assert len(seen) == 1 + 2 * n
    assert torch.equal(seen[0], w0)
    plus, minus = torch.stack(seen[1::2]), torch.stack(seen[2::2])
    u = plus - w0
    torch.testing.assert_close(minus, w0 - u, rtol=0, atol=1e-14)
    assert float(u.std()) == pytest.approx(sigma, rel=0.05)  # U ~ N(0, σ²I)
    # two-sided: the linear term cancels, leaving ½UᵀAU exactly
    half_uau = 0.5 * torch.einsum("ki,ij,kj->k", u, a, u)
    torch.testing.assert_close(f64(res.samples), half_uau, rtol=1e-10, atol=1e-12)
    expected = sigma**2 / 2 * float(a.trace())
    assert abs(res.mean - expected) < 4 * res.stderr

    # one-sided: ½UᵀAU + (Aw+b)ᵀU per draw, with the same mean in expectation
    seen.clear()
    one = noise_stability(model, watching, QUAD_DATA, sigma=sigma, n_samples=n)
    u = torch.stack(seen[1:]) - w0
    exact = 0.5 * torch.einsum("ki,ij,kj->k", u, a, u) + u @ (a @ w0 + b)
    torch.testing.assert_close(f64(one.samples), exact, rtol=1e-10, atol=1e-12)
    assert abs(one.mean - expected) < 4 * one.stderr
    assert one.stderr > res.stderr  # antithetic pairs remove the linear term's variance


def test_unequal_batches_give_the_same_result_as_one_batch():
    model, batch = tanh_mlp(), regression_data()
    kw = dict(sigma=0.05, n_samples=30, two_sided=True, seed=3)
    whole = noise_stability(model, mse, [batch], **kw)
    parts = noise_stability(model, mse, split(batch, [3, 7]), **kw)
    assert parts.base_loss == pytest.approx(whole.base_loss, abs=1e-12)
    torch.testing.assert_close(f64(parts.samples), f64(whole.samples), rtol=0, atol=1e-12)
    assert (parts.record.n_examples, parts.record.n_batches) == (10, 2)
    assert (whole.record.n_examples, whole.record.n_batches) == (10, 1)


def test_batch_size_override_sets_the_weights():
    model, batch = tanh_mlp(), regression_data()
    parts = split(batch, [3, 7])
    # weight the batches 1:1 instead of 3:7
    res = noise_stability(model, mse, parts, sigma=0.0, n_samples=1, batch_size=lambda b: 5)
    with torch.no_grad():
        expected = 0.5 * (float(mse(model, parts[0])) + float(mse(model, parts[1])))
    assert res.base_loss == pytest.approx(expected, rel=1e-14)
    assert res.record.n_examples == 10


def test_reference_params_perturb_only_conv_and_linear_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)).double()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    changed: set[str] = set()

    def watching(m: nn.Module, batch) -> torch.Tensor:
        for n, p in m.named_parameters():
            if not torch.equal(p, before[n]):
                changed.add(n)
        return mse(m, batch)

    res = noise_stability(
        model, watching, [regression_data()], sigma=0.1, n_samples=3, params="reference"
    )
    assert changed == {"0.weight", "3.weight"}
    assert res.record.n_params == 12 + 8
    assert res.record.params == "reference"

    # a loss that sees the weights only through the biases does not move at all
    def bias_only(m: nn.Module, batch) -> torch.Tensor:
        return (m[0].bias.sum() - m[3].bias.sum()) ** 2

    res = noise_stability(model, bias_only, [regression_data()], sigma=1.0, params="reference")
    assert res.samples == [0.0] * 20 and res.mean == 0.0 and res.std == 0.0


def _state(model: nn.Module):
    return [
        (p.detach().clone(), p.data_ptr(), p.grad, None if p.grad is None else p.grad.clone())
        for p in model.parameters()
    ]


def _assert_restored(model: nn.Module, state) -> None:
    assert model.training and all(m.training for m in model.modules())
    for p, (value, ptr, grad, grad_value) in zip(model.parameters(), state, strict=True):
        assert p.data_ptr() == ptr  # the original storage, not a copy
        assert torch.equal(p.detach(), value)  # bit-identical
        assert p.grad is grad and torch.equal(p.grad, grad_value)


@pytest.mark.parametrize("two_sided", [False, True])
def test_weights_modes_and_grads_restored_also_after_an_error(two_sided):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)).double()
    batch = regression_data()
    mse(model, batch).backward()
    model.train()
    state = _state(model)
    modes: list[bool] = []

    def checking(m: nn.Module, b) -> torch.Tensor:
        modes.append(m.training)
        return mse(m, b)

    noise_stability(model, checking, [batch], sigma=0.1, n_samples=3, two_sided=two_sided)
    assert modes and not any(modes)  # measured in eval mode
    _assert_restored(model, state)

    calls = []

    def failing(m: nn.Module, b) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 3:  # inside a perturbed evaluation
            raise RuntimeError("boom")
        return mse(m, b)

    with pytest.raises(RuntimeError, match="boom"):
        noise_stability(model, failing, [batch], sigma=0.1, n_samples=3, two_sided=two_sided)
    _assert_restored(model, state)


def test_non_finite_losses():
    model, batch = tanh_mlp(), regression_data()
    with pytest.raises(FloatingPointError, match="nan"):
        noise_stability(model, lambda m, b: torch.tensor(math.nan), [batch], sigma=0.1)

    w0 = model[0].weight.detach().clone()

    def cliff(m: nn.Module, b) -> torch.Tensor:
        # finite at W, infinite anywhere else
        return mse(m, b) if torch.equal(m[0].weight, w0) else torch.tensor(math.inf)

    res = noise_stability(model, cliff, [batch], sigma=0.1, n_samples=4)
    assert res.samples == [math.inf] * 4 and res.mean == math.inf
    assert math.isfinite(res.base_loss)
    json.dumps(res.to_dict())  # Python's json writes inf as Infinity


@pytest.mark.parametrize(
    ("kw", "word"),
    [
        (dict(sigma=-0.1), "sigma"),
        (dict(sigma=math.nan), "sigma"),
        (dict(sigma=math.inf), "sigma"),
        (dict(sigma=[0.1, -1.0]), "sigma"),
        (dict(sigma=[]), "sigma"),
        (dict(sigma="big"), "sigma"),
        (dict(sigma=0.1, n_samples=0), "n_samples"),
        (dict(sigma=0.1, n_samples=2.5), "n_samples"),
    ],
)
def test_bad_arguments(kw, word):
    with pytest.raises(ValueError, match=word):
        noise_stability(tanh_mlp(), mse, [regression_data()], **kw)


def test_empty_data():
    with pytest.raises(ValueError, match="empty"):
        noise_stability(tanh_mlp(), mse, [], sigma=0.1)


def test_reproducible_and_independent_of_the_global_rng():
    model, data = tanh_mlp(), [regression_data()]
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    a = noise_stability(model, mse, data, sigma=0.05, n_samples=5, seed=7)
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG is not consumed
    torch.manual_seed(456)
    b = noise_stability(model, mse, data, sigma=0.05, n_samples=5, seed=7)
    c = noise_stability(model, mse, data, sigma=0.05, n_samples=5, seed=8)
    assert a.samples == b.samples
    assert all(x != y for x, y in zip(a.samples, c.samples, strict=True))
    assert (a.record.seed, c.record.seed) == (7, 8)


def test_sigma_list_gives_one_result_per_sigma():
    model, data = tanh_mlp(), [regression_data()]
    sigmas = [0.0, 0.04, 0.05, 0.06]
    results = noise_stability(model, mse, data, sigma=sigmas, n_samples=6, two_sided=True)
    assert isinstance(results, list) and len(results) == 4
    assert all(isinstance(r, NoiseStabilityResult) for r in results)
    assert [r.sigma for r in results] == sigmas
    assert [r.record.options["sigma"] for r in results] == sigmas
    assert results[0].samples == [0.0] * 6  # no noise, no rise
    # each σ uses the seed's noise: the same as asking for that σ alone
    alone = noise_stability(model, mse, data, sigma=0.05, n_samples=6, two_sided=True)
    assert results[2].samples == alone.samples
    # common random numbers: the rise grows with σ draw by draw (about σ² near a smooth W)
    assert results[1].mean < results[2].mean < results[3].mean


def test_result_fields_and_to_dict():
    model, data = tanh_mlp(), [regression_data()]
    res = noise_stability(model, mse, data, sigma=0.05, n_samples=8, seed=2)
    t = f64(res.samples)
    assert res.mean == pytest.approx(float(t.mean()), rel=1e-14)
    assert res.std == pytest.approx(float(t.std(correction=1)), rel=1e-14)
    assert res.stderr == pytest.approx(res.std / math.sqrt(8), rel=1e-14)
    d = json.loads(json.dumps(res.to_dict()))
    assert d["samples"] == res.samples and d["sigma"] == 0.05
    assert d["record"] == {
        "measure": "noise_stability",
        "n_examples": 10,
        "n_batches": 1,
        "params": "all",
        "n_params": 26,
        "seed": 2,
        "options": {"sigma": 0.05, "n_samples": 8, "two_sided": False},
    }
    one = noise_stability(model, mse, data, sigma=0.05, n_samples=1)
    assert one.std == 0.0 and one.stderr == 0.0 and len(one.samples) == 1
