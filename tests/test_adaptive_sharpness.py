"""Adaptive sharpness against closed forms on quadratics, L(w) = ½(w−m)ᵀA(w−m), where the
worst case over a scaled ball and the Gaussian average are known exactly; the model left
as it was; bad options; the measurement by name, in the run directory and the tables."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from common import tables
from common.checks import OptionError
from common.sharpness import average_sharpness, worst_case_sharpness
from common.train import cli
from image_exps.task import TASK

ROOT = Path(__file__).resolve().parents[1]
DATA = [(torch.zeros(4, 1),)]  # one batch of 4 "examples" that the quadratic ignores


class Quadratic(nn.Module):
    """L(w) = ½(w−m)ᵀA(w−m) in float64, whatever the batch; w starts at ``w``."""

    def __init__(self, a: torch.Tensor, m: torch.Tensor, w: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("a", a)
        self.register_buffer("m", m)
        self.w = nn.Parameter(w.clone())

    def forward(self) -> torch.Tensor:
        d = self.w - self.m
        return 0.5 * d @ self.a @ d


def quad_loss(model: Quadratic, batch) -> torch.Tensor:
    return model()


def spd(dim: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A symmetric positive definite A and a centre m with no zero entry."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    m = torch.randn(dim, generator=g, dtype=torch.float64)
    return x.T @ x + torch.eye(dim, dtype=torch.float64), m.sign() * (m.abs() + 0.5)


def top_eigenvalue(a: torch.Tensor) -> float:
    return float(torch.linalg.eigvalsh(a)[-1])


@pytest.mark.parametrize("scaling", ["none", "adaptive"])
def test_worst_l2_at_a_minimum_is_half_rho_squared_top_eigenvalue(scaling):
    a, m = spd()
    rho = 0.1
    res = worst_case_sharpness(
        Quadratic(a, m, m), quad_loss, DATA, rho=rho, norm="l2", scaling=scaling, steps=60
    )
    c = torch.diag(m.abs()) if scaling == "adaptive" else torch.eye(len(m), dtype=a.dtype)
    # in γ = δ ⊘ c the loss is ½γᵀ(CAC)γ on the ball ‖γ‖ <= ρ
    assert res.value == pytest.approx(0.5 * rho**2 * top_eigenvalue(c @ a @ c), rel=1e-8)
    assert res.base_loss == 0.0 and (res.rho, res.norm, res.scaling) == (rho, "l2", scaling)


@pytest.mark.parametrize("scaling", ["none", "adaptive"])
def test_worst_linf_on_a_diagonal_quadratic_is_the_corner(scaling):
    a, m = spd()
    a = torch.diag(torch.diag(a))
    rho = 0.1
    c2 = m**2 if scaling == "adaptive" else torch.ones_like(m)
    res = worst_case_sharpness(
        Quadratic(a, m, m), quad_loss, DATA, rho=rho, norm=math.inf, scaling=scaling, steps=5
    )
    assert res.value == pytest.approx(0.5 * rho**2 * float((torch.diag(a) * c2).sum()), rel=1e-12)


@pytest.mark.parametrize("scaling", ["none", "adaptive"])
def test_worst_linf_away_from_the_minimum_adds_rho_times_the_scaled_gradient(scaling):
    a, m = spd()
    a = torch.diag(torch.diag(a))
    w = torch.zeros_like(m) + 0.3 * m.sign()  # moved off the centre: gradient a(w − m)
    g = a @ (w - m)
    c = w.abs() if scaling == "adaptive" else torch.ones_like(w)
    rho = 0.01
    # each coordinate separable, g_i c_i γ_i + ½a_ii c_i² γ_i², maximised at γ_i = ρ sign(g_i);
    # no other corner is a local maximum when |g_i| > a_ii c_i ρ
    assert bool((g.abs() > torch.diag(a) * c * rho).all())
    expected = rho * float((g * c).abs().sum()) + 0.5 * rho**2 * float((torch.diag(a) * c**2).sum())
    res = worst_case_sharpness(
        Quadratic(a, m, w), quad_loss, DATA, rho=rho, norm="inf", scaling=scaling, steps=10
    )
    assert res.value == pytest.approx(expected, rel=1e-10)


def test_worst_l2_away_from_the_minimum_isotropic():
    dim, scale, rho = 5, 3.0, 0.2
    a = scale * torch.eye(dim, dtype=torch.float64)
    m = torch.arange(1.0, dim + 1, dtype=torch.float64)
    w = torch.zeros(dim, dtype=torch.float64)
    g = a @ (w - m)
    res = worst_case_sharpness(
        Quadratic(a, m, w), quad_loss, DATA, rho=rho, norm=2, scaling="none", steps=40
    )
    # gᵀδ + ½ scale ‖δ‖² on ‖δ‖ <= ρ: δ = ρ g/‖g‖
    assert res.value == pytest.approx(rho * float(g.norm()) + 0.5 * scale * rho**2, rel=1e-10)


def test_restarts_each_reported_and_the_best_kept():
    a, m = spd(seed=3)
    res = worst_case_sharpness(
        Quadratic(a, m, m), quad_loss, DATA, rho=0.05, norm="l2", scaling="none",
        steps=2, restarts=4, seed=1,
    )  # fmt: skip
    assert len(res.restarts) == 4 and len(set(res.restarts)) == 4  # different random starts
    assert res.value == max(res.restarts)
    assert all(0 < r <= 0.5 * 0.05**2 * top_eigenvalue(a) * (1 + 1e-12) for r in res.restarts)
    options = res.record.options
    assert (options["steps"], options["restarts"], options["norm"]) == (2, 4, "l2")
    again = worst_case_sharpness(
        Quadratic(a, m, m), quad_loss, DATA, rho=0.05, norm="l2", scaling="none",
        steps=2, restarts=4, seed=1,
    )  # fmt: skip
    assert again.restarts == res.restarts  # seeded


def test_per_batch_takes_each_batch_maximum():
    # batch k carries its own diagonal curvature: the maxima of the two batches lie on
    # different axes, the maximum of their mean on neither
    curvatures = torch.tensor([[3.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    data = [(torch.full((n, 1), float(k)),) for k, n in ((0, 1), (1, 3))]
    model = Quadratic(torch.eye(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64),
                      torch.zeros(2, dtype=torch.float64))  # fmt: skip

    def loss(mod: Quadratic, batch) -> torch.Tensor:
        d = curvatures[int(batch[0][0, 0])]
        return 0.5 * (d * mod.w**2).sum()

    kw = dict(rho=0.1, norm="l2", scaling="none", steps=60)
    assert worst_case_sharpness(model, loss, data, per_batch=True, **kw).value == pytest.approx(
        0.5 * 0.1**2 * 3.0, rel=1e-8
    )
    # one δ for the size-weighted mean curvature (1.5, 2.5)
    assert worst_case_sharpness(model, loss, data, **kw).value == pytest.approx(
        0.5 * 0.1**2 * 2.5, rel=1e-8
    )


def test_zero_radius_is_zero_exactly():
    a, m = spd()
    w = m + 0.1
    model = Quadratic(a, m, w)
    for norm in ("l2", "linf"):
        assert worst_case_sharpness(model, quad_loss, DATA, rho=0.0, norm=norm).value == 0.0
    assert average_sharpness(model, quad_loss, DATA, rho=0.0, n_samples=2).mean == 0.0


@pytest.mark.parametrize("scaling", ["none", "adaptive"])
def test_average_draws_are_exact_and_unbiased(scaling):
    a, m = spd()
    rho, n = 0.2, 2000
    seen: list[torch.Tensor] = []

    def watching(mod: Quadratic, batch) -> torch.Tensor:
        seen.append(mod.w.detach().clone())
        return mod()

    res = average_sharpness(
        Quadratic(a, m, m), watching, DATA, rho=rho, scaling=scaling, n_samples=n
    )
    c = m.abs() if scaling == "adaptive" else torch.ones_like(m)
    delta = torch.stack(seen[1:]) - m  # calls: L(w), then one per draw
    z = delta / (rho * c)  # δ = ρ c ⊙ z, z ~ N(0, I)
    assert float(z.mean()) == pytest.approx(0.0, abs=0.05)
    assert float(z.std()) == pytest.approx(1.0, abs=0.03)
    exact = 0.5 * torch.einsum("ki,ij,kj->k", delta, a, delta)
    torch.testing.assert_close(torch.tensor(res.samples, dtype=torch.float64), exact, rtol=1e-12,
                               atol=0)  # fmt: skip
    # E = ½ρ² tr(diag(c) A diag(c)): no division by the number of parameters
    expected = 0.5 * rho**2 * float((torch.diag(a) * c**2).sum())
    assert abs(res.mean - expected) < 4 * res.stderr
    assert res.stderr == pytest.approx(res.std / math.sqrt(n))


def test_two_sided_average_cancels_the_gradient_term():
    a, m = spd()
    w = m + 0.5  # off the minimum: one-sided draws carry gᵀδ
    kw = dict(rho=0.1, scaling="adaptive", n_samples=200, seed=4)
    one = average_sharpness(Quadratic(a, m, w), quad_loss, DATA, **kw)
    two = average_sharpness(Quadratic(a, m, w), quad_loss, DATA, two_sided=True, **kw)
    assert two.stderr < one.stderr / 3
    expected = 0.5 * 0.1**2 * float((torch.diag(a) * w**2).sum())
    assert abs(two.mean - expected) < 4 * two.stderr


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(),
        nn.Linear(4 * 6 * 6, 3),
    )  # fmt: skip


def cnn_data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g))
            for n in (5, 3)]  # fmt: skip


def ce(model: nn.Module, batch) -> torch.Tensor:
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


def snapshot(model: nn.Module) -> list:
    """Every parameter's value, storage, gradient and flag, every buffer, every mode."""
    ce(model, cnn_data()[0]).backward()  # gradients to be kept as they are
    model[0].bias.requires_grad_(False)
    return [
        [(p.detach().clone(), p.data_ptr(), p.grad, p.requires_grad) for p in model.parameters()],
        {k: v.clone() for k, v in model.state_dict().items()},
        [m.training for m in model.modules()],
    ]


def assert_restored(model: nn.Module, before: list) -> None:
    params, state, modes = before
    for p, (value, ptr, grad, flag) in zip(model.parameters(), params, strict=True):
        assert torch.equal(p.detach(), value) and p.data_ptr() == ptr  # bit for bit, in place
        assert p.grad is grad and p.requires_grad == flag
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in state.items())  # BN statistics too
    assert [m.training for m in model.modules()] == modes


@pytest.mark.parametrize(
    "measure",
    [
        lambda m: worst_case_sharpness(m, ce, cnn_data(), rho=0.05, norm="l2", steps=3),
        lambda m: worst_case_sharpness(
            m, ce, cnn_data(), rho=0.05, norm="linf", steps=3, restarts=2, per_batch=True
        ),
        lambda m: average_sharpness(m, ce, cnn_data(), rho=0.1, n_samples=3, two_sided=True),
    ],
    ids=["worst-l2", "worst-linf-per-batch", "average"],
)
def test_the_model_is_left_bit_for_bit_as_it_was(measure):
    model = small_cnn()
    before = snapshot(model)
    modes: list[bool] = []
    model.register_forward_pre_hook(lambda mod, args: modes.append(mod.training))
    result = measure(model)
    assert set(modes) == {False}  # every pass in eval mode
    assert_restored(model, before)
    assert result.record.n_examples == 8 and result.record.n_params == 40 + 8 + 3 * 144 + 3 - 4


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(rho=-0.1), "rho must be a number >= 0"),
        (dict(rho=math.nan), "rho must be a number >= 0"),
        (dict(rho=0.1, norm=1), "norm must be 2 or inf"),
        (dict(rho=0.1, norm="l3"), "norm must be 2 or inf"),
        (dict(rho=0.1, norm=True), "norm must be 2 or inf"),
        (dict(rho=0.1, scaling="abs"), "scaling must be one of adaptive, none"),
        (dict(rho=0.1, steps=0), "steps must be an integer >= 1"),
        (dict(rho=0.1, restarts=0), "restarts must be an integer >= 1"),
    ],
)
def test_bad_worst_case_options(kw, words):
    a, m = spd()
    with pytest.raises(OptionError, match=words):
        worst_case_sharpness(Quadratic(a, m, m), quad_loss, DATA, **kw)


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(rho=-1.0), "rho must be a number >= 0"),
        (dict(rho=0.1, n_samples=0), "n_samples must be an integer >= 1"),
        (dict(rho=0.1, scaling="l2"), "scaling must be one of"),
    ],
)
def test_bad_average_case_options(kw, words):
    a, m = spd()
    with pytest.raises(OptionError, match=words):
        average_sharpness(Quadratic(a, m, m), quad_loss, DATA, **kw)


def test_measured_by_name_recorded_and_tabulated(tmp_path, capsys):
    runs = tmp_path / "runs"
    options = ["adaptive_sharpness.n_examples=64", "adaptive_sharpness.steps=3",
               "adaptive_sharpness.n_samples=4", "train.progress=false"]  # fmt: skip
    for optimizer in ("sgd", "sam"):
        run_dir = runs / optimizer
        argv = [f"optimizer.name={optimizer}", "smoke=true", "train.progress=false",
                f"run_dir={run_dir}"]  # fmt: skip
        assert cli.train_main(TASK, argv) == 0
        argv = ["adaptive_sharpness", f"run_dir={run_dir}", *options]
        assert cli.measure_any_main(TASK, argv) == 0
    out = json.loads((runs / "sam" / "adaptive_sharpness.json").read_text())
    assert (out["split"], out["n_examples"], out["finished"]) == ("train", 64, True)
    worst, average = out["worst"], out["average"]
    assert (worst["rho"], worst["norm"], worst["scaling"]) == (0.002, "linf", "adaptive")
    assert (worst["record"]["options"]["steps"], worst["record"]["options"]["restarts"]) == (3, 1)
    assert worst["value"] >= 0 and len(worst["restarts"]) == 1
    assert average["rho"] == 0.1 and len(average["samples"]) == 4
    assert "worst-case sharpness (linf, rho=0.002, adaptive)" in capsys.readouterr().out
    # a bad option is one line and exit status 2
    bad = ["adaptive_sharpness", f"run_dir={runs / 'sam'}", "adaptive_sharpness.norm=l3"]
    assert cli.measure_any_main(TASK, bad) == 2
    assert "adaptive_sharpness.norm" in capsys.readouterr().err
    target = tmp_path / "tables"
    assert tables.main([str(runs), "--out", str(target)]) == 0
    with open(target / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert all(float(r["adaptive_worst"]) >= 0 and r["adaptive_average"] for r in rows)
    text = (target / "table.md").read_text()
    assert "### adaptive worst-case sharpness (linf, ρ=0.002, c=|w|)" in text
    assert "### adaptive average sharpness (gauss, ρ=0.1, c=|w|)" in text


@pytest.mark.heavy  # a whole benchmark, smoke-sized: make system-test runs it
def test_flatness_benchmark_runs(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.flatness", "--quick", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| worst-case" in proc.stdout
    results = json.loads(out.read_text())
    assert results["one_pass_s"] > 0
    assert all(row["passes"] > 0 for row in results["measures"].values())
