"""PAC-Bayes flatness: on a quadratic at its minimum E[L(w+u)] − L(w) = ½ Σ A_ii var(u_i),
so σ* = sqrt(2d / tr A) (plain) and σ'* = sqrt((2d − ε² tr A) / Σ A_ii w_i²)
(magnitude-aware). The search sees the same draws at every σ, so the test recomputes its
estimate exactly from the points it visited and pins the bisection to its tolerance; the
draws' own error is checked against the closed form separately."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from common import tables
from common.checks import OptionError
from common.sharpness import pac_bayes_sigma
from common.train import cli
from image_exps.task import TASK
from tests.test_adaptive_sharpness import (
    DATA,
    Quadratic,
    assert_restored,
    ce,
    cnn_data,
    small_cnn,
    snapshot,
    spd,
)


def watched(model: Quadratic) -> tuple[list[torch.Tensor], object]:
    """A loss that records every point it is evaluated at."""
    seen: list[torch.Tensor] = []

    def loss(mod: Quadratic, batch) -> torch.Tensor:
        seen.append(mod.w.detach().clone())
        return mod()

    return seen, loss


def draws_per_sigma(seen: list[torch.Tensor], m: torch.Tensor, n: int) -> list[torch.Tensor]:
    """The displacements u (n, dim) of each σ tried: calls are L(w), then n per σ."""
    points = torch.stack(seen[1:]) - m
    return list(points.split(n))


def half_uau(u: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.einsum("ki,ij,kj->k", u, a, u)


def test_plain_sigma_on_a_quadratic_minimum():
    a, m = spd()
    model, target, n, tol = Quadratic(a, m, m), 0.1, 400, 1e-3
    seen, loss = watched(model)
    res = pac_bayes_sigma(model, loss, DATA, target=target, n_samples=n, tol=tol)
    assert res.status == "found" and res.base_loss == 0.0
    sigmas = [t["sigma"] for t in res.trace]
    draws = draws_per_sigma(seen, m, n)
    assert len(draws) == len(sigmas) == res.record.options["evaluations"]
    z = draws[0] / sigmas[0]
    for sigma, u, t in zip(sigmas, draws, res.trace, strict=True):
        # the same draws (u = (m + σz) − m is exact to m's rounding, ~1e-16/σ)
        torch.testing.assert_close(u / sigma, z, rtol=0, atol=1e-14 / sigma)
        assert t["increase"] == pytest.approx(float(half_uau(u, a).mean()), rel=1e-12)
    # the estimate is σ²·K exactly, K = mean ½zᵀAz: its root lies in the final bracket
    k = float(half_uau(z, a).mean())
    root = math.sqrt(target / k)
    assert res.sigma <= root <= res.sigma_upper <= res.sigma * (1 + tol)
    assert res.increase <= target and res.flatness == 1 / res.sigma**2
    # and K estimates ½ tr A: σ* = sqrt(2d / tr A) to the draws' error
    spread = float(half_uau(z, a).std()) / math.sqrt(n)
    assert abs(k - 0.5 * float(a.trace())) < 4 * spread
    assert res.sigma == pytest.approx(math.sqrt(2 * target / float(a.trace())), rel=0.05)


def test_magnitude_aware_sigma_on_a_quadratic_minimum():
    a, m = spd(seed=2)
    model, target, n, tol, eps = Quadratic(a, m, m), 0.1, 400, 1e-3, 0.05
    seen, loss = watched(model)
    res = pac_bayes_sigma(
        model, loss, DATA, target=target, magnitude_aware=True, eps=eps, n_samples=n, tol=tol
    )
    assert res.status == "found" and res.magnitude_aware
    sigmas = [t["sigma"] for t in res.trace]
    draws = draws_per_sigma(seen, m, n)

    def std(sigma: float) -> torch.Tensor:  # u_i ~ N(0, σ² w_i² + ε²)
        return torch.sqrt(sigma**2 * m**2 + eps**2)

    z = draws[0] / std(sigmas[0])
    for sigma, u, t in zip(sigmas, draws, res.trace, strict=True):
        torch.testing.assert_close(u / std(sigma), z, rtol=0, atol=1e-14 / sigma)
        assert t["increase"] == pytest.approx(float(half_uau(u, a).mean()), rel=1e-12)

    def estimate(sigma: float) -> float:
        return float(half_uau(z * std(sigma), a).mean())

    lo, hi = 1e-6, 10.0  # the estimate's root, by a bisection of the test's own
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if estimate(mid) <= target else (lo, mid)
    assert res.sigma <= lo <= res.sigma_upper <= res.sigma * (1 + tol)
    # the expectation: ½ Σ A_ii (σ'² w_i² + ε²) = d
    closed = math.sqrt(
        (2 * target - eps**2 * float(a.trace())) / float((torch.diag(a) * m**2).sum())
    )
    assert res.sigma == pytest.approx(closed, rel=0.05)
    assert res.record.options["eps"] == eps


def test_plain_noise_reuses_noise_stability_draws():
    # the increase at one σ is noise stability's at that σ, with this search's seed stream
    from common.sharpness import noise_stability

    a, m = spd()
    model = Quadratic(a, m, m + 0.2)
    res = pac_bayes_sigma(model, lambda mod, b: mod(), DATA, n_samples=50, tol=0.1)
    ns = noise_stability(model, lambda mod, b: mod(), DATA, sigma=res.sigma, n_samples=2000)
    assert abs(ns.mean - res.increase) < 4 * ns.stderr + 4 * res.increase_std / math.sqrt(50)


def test_the_bracket_ends_are_reported_as_bounds():
    a, m = spd()
    model = Quadratic(a, m, m)
    flat = pac_bayes_sigma(model, lambda mod, b: mod(), DATA, target=1e9, n_samples=2)
    assert (flat.status, flat.sigma, flat.sigma_upper) == ("above_max", 10.0, None)
    assert len(flat.trace) == 1
    sharp = pac_bayes_sigma(
        model, lambda mod, b: mod(), DATA, target=1e-9, sigma_min=0.1, n_samples=2
    )
    assert (sharp.status, sharp.sigma) == ("below_min", 0.1) and len(sharp.trace) == 2


def test_a_non_finite_perturbed_loss_counts_as_too_much_noise():
    a, m = spd()

    def cliff(mod: Quadratic, batch) -> torch.Tensor:
        d = mod.w - mod.m  # nan beyond a displacement of 1: the noise threw the model off
        return 0.5 * d @ mod.a @ d + (math.nan if float(d.abs().max()) > 1 else 0.0)

    res = pac_bayes_sigma(Quadratic(a, m, m), cliff, DATA, n_samples=20, tol=0.01)
    plain = pac_bayes_sigma(Quadratic(a, m, m), lambda mod, b: mod(), DATA, n_samples=20, tol=0.01)
    assert res.status == "found" and math.isnan(res.trace[0]["increase"])  # at sigma_max
    assert res.sigma == pytest.approx(plain.sigma)  # the cliff is beyond σ*


def test_the_model_is_left_bit_for_bit_as_it_was():
    model = small_cnn()
    before = snapshot(model)
    for magnitude in (False, True):
        res = pac_bayes_sigma(
            model, ce, cnn_data(), magnitude_aware=magnitude, n_samples=2, tol=0.5,
            two_sided=True, sigma_min=0.01, sigma_max=1.0,
        )  # fmt: skip
        assert res.sigma > 0
    assert_restored(model, before)


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(target=0.0), "target must be a number > 0"),
        (dict(target=-1.0), "target must be a number >= 0"),
        (dict(target=math.inf), "target must be a number >= 0"),
        (dict(eps=-1e-3), "eps must be a number >= 0"),
        (dict(sigma_min=0.0), "sigma_min must be a number > 0"),
        (dict(sigma_min=1.0, sigma_max=1.0), "sigma_max must be a number > sigma_min=1.0"),
        (dict(tol=0.0), "tol must be a number > 0"),
        (dict(n_samples=0), "n_samples must be an integer >= 1"),
    ],
)
def test_bad_options(kw, words):
    a, m = spd()
    with pytest.raises(OptionError, match=words):
        pac_bayes_sigma(Quadratic(a, m, m), lambda mod, b: mod(), DATA, **kw)


def test_measured_by_name_recorded_and_tabulated(tmp_path, capsys):
    runs = tmp_path / "runs"
    options = ["pac_bayes.n_examples=64", "pac_bayes.n_samples=2", "pac_bayes.tol=0.2",
               "train.progress=false"]  # fmt: skip
    for optimizer in ("sgd", "sam"):
        run_dir = runs / optimizer
        argv = [f"optimizer.name={optimizer}", "smoke=true", "train.progress=false",
                f"run_dir={run_dir}"]  # fmt: skip
        assert cli.train_main(TASK, argv) == 0
        assert cli.measure_any_main(TASK, ["pac_bayes", f"run_dir={run_dir}", *options]) == 0
    out = json.loads((runs / "sgd" / "pac_bayes.json").read_text())
    assert (out["split"], out["n_examples"], out["finished"]) == ("train", 64, True)
    plain, magnitude = out["plain"], out["magnitude"]
    assert plain["flatness"] == pytest.approx(1 / plain["sigma"] ** 2)
    assert not plain["magnitude_aware"] and magnitude["magnitude_aware"]
    assert magnitude["record"]["options"]["eps"] == 1e-3 and plain["target"] == 0.1
    assert [t["sigma"] for t in plain["trace"]][:2] == [10.0, 1e-4]
    assert "PAC-Bayes sigma (plain)" in capsys.readouterr().out
    bad = ["pac_bayes", f"run_dir={runs / 'sgd'}", "pac_bayes.sigma_min=20"]
    assert cli.measure_any_main(TASK, bad) == 2
    assert "pac_bayes.sigma_min (20) must be below pac_bayes.sigma_max" in capsys.readouterr().err
    target = tmp_path / "tables"
    assert tables.main([str(runs), "--out", str(target)]) == 0
    with open(target / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert all(float(r["pac_bayes_flatness"]) > 0 for r in rows)
    assert all(float(r["pac_bayes_mag_flatness"]) > 0 for r in rows)
    text = (target / "table.md").read_text()
    assert "### PAC-Bayes flatness 1/σ² (lower is flatter; loss increase target d = 0.1)" in text
