"""GSAM and LookSAM: their equivalences with SAM, the maths, state, and pytorch_optimizer."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
import torch
from conftest import assert_same, build, ce, closure_for, data, linear_problem, mlp, snapshot
from torch import nn

from common.optim import GSAM, OPTIMIZERS, LookSAM
from common.optim.perturb import NORM_EPS as EPS

# float64: the optimizers' norms and inner products are float64 sums in another order
TOLERANCES = {torch.float32: (1e-5, 1e-7), torch.float64: (1e-12, 1e-14)}
DTYPE_IDS = ["float32", "float64"]


def run_steps(name: str, steps: int = 4, model=None, **cfg) -> dict:
    model = model or mlp()
    opt = build(name, model, data(), **cfg)
    for i in range(steps):
        opt.zero_grad()
        opt.step(closure_for(model, data(seed=i)))
    return snapshot(model)


def grad_of(loss, w: torch.Tensor) -> torch.Tensor:
    w = w.detach().clone().requires_grad_()
    (g,) = torch.autograd.grad(loss(w), w)
    return g


def save_load(obj) -> dict:
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


# ------------------------------------------------------------------------------- GSAM


@pytest.mark.parametrize("adaptive", [False, True], ids=["sam", "asam"])
@pytest.mark.parametrize("rho_min", [None, 0.02])
def test_gsam_with_alpha_zero_and_constant_lr_is_sam(adaptive, rho_min):
    kw = {"rho": 0.1, "adaptive": adaptive, "eta": 0.01, "momentum": 0.9}
    got = run_steps("gsam", gsam_alpha=0.0, rho_min=rho_min, lr_min=0.01, **kw)
    assert_same(got, run_steps("sam", **kw))  # bit for bit: ρ_t is written from the ρ_max end


def test_gsam_alpha_moves_the_update():
    # the equivalence above has teeth
    a, b = run_steps("gsam", gsam_alpha=0.1, rho=0.1), run_steps("sam", rho=0.1)
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_gsam_with_rho_zero_is_the_base_optimizer():
    assert_same(run_steps("gsam", rho=0.0, momentum=0.9), run_steps("sgd", momentum=0.9))


@pytest.mark.parametrize("dtype", list(TOLERANCES), ids=DTYPE_IDS)
def test_gsam_matches_a_direct_computation(dtype):
    """Three steps under a decaying LR: ρ_t, e, the decomposition and the momentum step."""
    w0, loss = linear_problem(dtype=dtype)
    rho, rho_min, lr, lr_min, alpha, mom = 0.2, 0.05, 0.1, 0.01, 0.3, 0.9
    decay = [1.0, 0.5, 0.25]

    w, buf = w0.clone(), torch.zeros_like(w0)
    for t in range(3):
        lr_t = lr * decay[t]
        rho_t = rho_min + (rho - rho_min) * (lr_t - lr_min) / (lr - lr_min)
        g_f = grad_of(loss, w)
        g_h = grad_of(loss, w + rho_t * g_f / (g_f.norm() + EPS))
        g_perp = g_f - (g_f * g_h).sum() / (g_h.norm() + EPS) ** 2 * g_h
        d = g_h - alpha * g_perp
        buf = d if t == 0 else mom * buf + d
        w = w - lr_t * buf

    p = nn.Parameter(w0.clone())
    opt = GSAM([p], rho=rho, rho_min=rho_min, lr_min=lr_min, gsam_alpha=alpha, lr=lr, momentum=mom)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: decay[min(t, 2)])
    for _ in range(3):
        opt.zero_grad()
        opt.step(lambda: loss(p).backward())
        sched.step()
    rtol, atol = TOLERANCES[dtype]
    torch.testing.assert_close(p.detach(), w, rtol=rtol, atol=atol)


def test_gsam_radius_follows_the_lr_schedule():
    c = torch.tensor([3.0, -4.0], dtype=torch.float64)  # linear loss: g = c everywhere
    p = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = GSAM([p], rho=0.5, rho_min=0.1, lr_min=0.02, lr=0.2)
    sched = torch.optim.lr_scheduler.LinearLR(opt, 1.0, 0.1, total_iters=4)
    radii, expected = [], []

    def closure():
        if opt.perturbed:  # the second pass: |W + e − W| is ρ_t
            radii.append(float((p.detach() - opt._stash[0][1]).norm()))
        (c * p).sum().backward()

    for _ in range(6):
        lr_t = opt.param_groups[0]["lr"]
        expected.append(0.1 + 0.4 * (lr_t - 0.02) / (0.2 - 0.02))
        assert GSAM.rho_at(opt.param_groups[0]) == pytest.approx(expected[-1], rel=1e-14)
        opt.zero_grad()
        opt.step(closure)
        sched.step()
    assert radii == pytest.approx(expected, rel=1e-12)
    assert expected[0] == pytest.approx(0.5) and expected[-1] == pytest.approx(0.1)


def test_gsam_lr_max_option_and_lr_min_above_it():
    p = nn.Parameter(torch.zeros(2))
    opt = GSAM([{"params": [p], "lr": 0.3}], rho=0.4, rho_min=0.0, lr_max=0.6, lr=0.1)
    assert opt.param_groups[0]["lr_max"] == 0.6
    assert GSAM.rho_at(opt.param_groups[0]) == pytest.approx(0.2)  # lr 0.3 of 0.6
    default = GSAM([{"params": [p], "lr": 0.3}], rho=0.4, rho_min=0.0, lr=0.1)
    assert default.param_groups[0]["lr_max"] == 0.3  # the group's own LR
    with pytest.raises(ValueError, match=r"^lr_min \(param group 0\) must be <= lr_max 0.1"):
        GSAM([p], rho_min=0.0, lr_min=0.2, lr=0.1)


def test_gsam_lr_max_survives_a_checkpoint():
    """Resumed with another LR, GSAM keeps the lr_max it was built with: same ρ_t, same run."""
    batches = [data(seed=s) for s in range(6)]

    def train(model, opt, sched, steps):
        for i in steps:
            opt.zero_grad()
            opt.step(closure_for(model, batches[i]))
            sched.step()

    model = mlp()
    opt = build("gsam", model, rho=0.2, rho_min=0.05, lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    train(model, opt, sched, range(3))
    saved = save_load(
        {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}
    )
    train(model, opt, sched, range(3, 6))

    model2 = mlp(seed=5)
    opt2 = build("gsam", model2, rho=0.2, rho_min=0.05, lr=0.0125, momentum=0.9)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=1, gamma=0.5)
    model2.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    sched2.load_state_dict(saved["sched"])
    assert opt2.param_groups[0]["lr_max"] == 0.1
    assert opt2.param_groups is opt2.base_optimizer.param_groups
    train(model2, opt2, sched2, range(3, 6))
    assert_same(snapshot(model2), snapshot(model))


def test_gsam_update_is_what_grad_hook_and_clipping_see():
    """d, not g_h, reaches grad_hook (the all-reduce), then max_grad_norm clips it."""
    w0, loss = linear_problem(dtype=torch.float64)
    g_f = grad_of(loss, w0)
    g_h = grad_of(loss, w0 + 0.2 * g_f / g_f.norm())
    d = g_h - 0.5 * (g_f - (g_f * g_h).sum() / g_h.norm() ** 2 * g_h)
    p = nn.Parameter(w0.clone())
    opt = GSAM([p], rho=0.2, gsam_alpha=0.5, max_grad_norm=1e-3, lr=1.0)
    hooked = []
    opt.grad_hook = lambda grads, extra: hooked.append((grads[0].clone(), list(extra)))
    opt.step(lambda: loss(p).backward())
    torch.testing.assert_close(hooked[0][0], d, rtol=1e-12, atol=1e-14)
    assert hooked[0][1] == []
    torch.testing.assert_close(w0 - p.detach(), d * (1e-3 / (d.norm() + 1e-6)), rtol=1e-9, atol=0)


# ---------------------------------------------------------------------------- LookSAM


@pytest.mark.parametrize("adaptive", [False, True], ids=["sam", "asam"])
def test_looksam_with_interval_one_is_sam(adaptive):
    kw = {"rho": 0.1, "adaptive": adaptive, "eta": 0.01, "momentum": 0.9}
    got = run_steps("looksam", steps=5, interval=1, looksam_alpha=0.7, **kw)
    assert_same(got, run_steps("sam", steps=5, **kw))


def test_looksam_with_rho_zero_is_the_base_optimizer():
    got = run_steps("looksam", steps=5, rho=0.0, interval=3, momentum=0.9)
    assert_same(got, run_steps("sgd", steps=5, momentum=0.9))


def test_looksam_alpha_zero_is_sam_every_k_steps():
    """Composer's interval SAM: SAM at steps 0, k, ...; plain base steps in between."""
    model, ref = mlp(), mlp()
    opt = build("looksam", model, rho=0.1, interval=3, looksam_alpha=0.0)
    sam, sgd = build("sam", ref, rho=0.1), build("sgd", ref)
    for i in range(7):
        batch = data(seed=i)
        opt.zero_grad()
        opt.step(closure_for(model, batch))
        step = sam if i % 3 == 0 else sgd
        step.zero_grad()
        step.step(closure_for(ref, batch))
    assert_same(snapshot(model), snapshot(ref))


def test_looksam_between_recomputations_calls_the_closure_once():
    model, batch = mlp(), data()
    opt = build("looksam", model, interval=3)
    per_step = []
    for _ in range(7):
        calls: list = []
        assert opt.recomputes == (opt.steps_done % 3 == 0)
        opt.zero_grad()
        opt.step(closure_for(model, batch, calls))
        per_step.append(len(calls))
    assert per_step == [2, 1, 1, 2, 1, 1, 2] and opt.steps_done == 7
    # the registry gives the mean over a period of k steps
    assert OPTIMIZERS["looksam"].evals_per_step(interval=3) == pytest.approx(sum(per_step[:3]) / 3)
    assert OPTIMIZERS["looksam"].evals_per_step(interval=1) == 2  # SAM


def test_looksam_default_interval_is_the_papers_five():
    assert OPTIMIZERS["looksam"].options["interval"] == 5
    model, batch = mlp(), data()
    opt = build("looksam", model)
    per_step = []
    for _ in range(10):
        calls: list = []
        opt.zero_grad()
        opt.step(closure_for(model, batch, calls))
        per_step.append(len(calls))
    assert per_step == [2, 1, 1, 1, 1] * 2
    assert OPTIMIZERS["looksam"].evals_per_step() == pytest.approx(sum(per_step) / 10) == 1.2


def test_looksam_takes_present_gradients_as_g_of_w():
    batch = data()
    a, b = mlp(bn=False), mlp(bn=False)
    opt_a = build("looksam", a, interval=2)
    opt_b = build("looksam", b, interval=2)
    counts = []
    for _ in range(4):
        opt_a.zero_grad()
        ce(a, batch).backward()
        calls: list = []
        opt_a.step(closure_for(a, batch, calls))
        counts.append(len(calls))
        opt_b.zero_grad()
        opt_b.step(closure_for(b, batch))
    assert counts == [1, 0, 1, 0]
    assert_same(snapshot(a), snapshot(b))


def looksam_direct(loss, w0, steps, rho, k, alpha, lr):
    """Algorithm 1 of Liu et al. on the flat vector (ε as documented), plain SGD."""
    w, g_v = w0.clone(), None
    for t in range(steps):
        g = grad_of(loss, w)
        if t % k == 0:
            g_s = grad_of(loss, w + rho * g / (g.norm() + EPS))
            g_v = g_s - (g * g_s).sum() / (g.norm() + EPS) ** 2 * g
            update = g_s
        else:
            update = g + alpha * g.norm() / (g_v.norm() + EPS) * g_v
        w = w - lr * update
    return w


@pytest.mark.parametrize("dtype", list(TOLERANCES), ids=DTYPE_IDS)
def test_looksam_matches_a_direct_computation_with_global_norms(dtype):
    """Two parameters in two groups: g_v, ‖g‖ and ‖g_v‖ span the whole model."""
    w0, loss = linear_problem(dtype=dtype)
    rho, k, alpha, lr = 0.2, 3, 0.7, 0.05
    expected = looksam_direct(loss, w0, 7, rho, k, alpha, lr)
    a, b = nn.Parameter(w0[:1].clone()), nn.Parameter(w0[1:].clone())
    opt = LookSAM(
        [{"params": [a]}, {"params": [b]}], rho=rho, interval=k, looksam_alpha=alpha, lr=lr
    )
    for _ in range(7):
        opt.zero_grad()
        opt.step(lambda: loss(torch.cat([a, b])).backward())
    rtol, atol = TOLERANCES[dtype]
    torch.testing.assert_close(torch.cat([a, b]).detach(), expected, rtol=rtol, atol=atol)


def test_looksam_state_dict_mid_interval_continues_bit_for_bit():
    batches = [data(seed=s) for s in range(9)]

    def train(model, opt, sched, steps):
        for i in steps:
            opt.zero_grad()
            opt.step(closure_for(model, batches[i]))
            sched.step()

    cfg = {"interval": 3, "rho": 0.1, "base": "adamw", "lr": 0.01}
    model = mlp()
    opt = build("looksam", model, **cfg)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    train(model, opt, sched, range(4))  # saved after step 4: one step into the second period
    saved = save_load(
        {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}
    )
    assert saved["opt"]["wrapper"] == {"steps_done": 4}
    assert all("gv" in s for s in saved["opt"]["state"].values() if s)
    train(model, opt, sched, range(4, 9))

    model2 = mlp(seed=7)
    opt2 = build("looksam", model2, **cfg)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=2, gamma=0.5)
    model2.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    sched2.load_state_dict(saved["sched"])
    assert opt2.steps_done == 4 and not opt2.recomputes
    train(model2, opt2, sched2, range(4, 9))
    assert_same(snapshot(model2), snapshot(model))


def test_looksam_manual_first_and_second_step():
    batch = data()
    a, b = mlp(bn=False), mlp(bn=False)
    opt_a, opt_b = build("looksam", a, interval=2), build("looksam", b, interval=2)
    for _ in range(4):
        opt_a.zero_grad()
        ce(a, batch).backward()
        if opt_a.recomputes:
            opt_a.first_step(zero_grad=True)
            ce(a, batch).backward()
        else:
            with pytest.raises(RuntimeError, match="reuses g_v"):
                opt_a.first_step()
        opt_a.second_step(zero_grad=True)
        opt_b.zero_grad()
        opt_b.step(closure_for(b, batch))
    assert_same(snapshot(a), snapshot(b))
    with pytest.raises(RuntimeError, match="without first_step"):
        opt_a.second_step()


def test_looksam_shares_g_v_through_grad_hook_and_clips_the_reused_update():
    model, batch = mlp(bn=False), data()
    params = list(model.parameters())
    opt = build("looksam", model, interval=2, max_grad_norm=1e-3)
    seen = []

    def hook(grads, extra):
        if extra:
            torch._foreach_mul_(extra, 2.0)  # e.g. a sum over two ranks
        seen.append(([g.clone() for g in grads], list(extra)))

    opt.grad_hook = hook
    for _ in range(2):
        opt.zero_grad()
        before = [p.detach().clone() for p in params]
        opt.step(closure_for(model, batch))
        step = torch.cat(
            [(b - p.detach()).reshape(-1) for b, p in zip(before, params, strict=True)]
        )
        assert float(step.norm()) == pytest.approx(0.1 * 1e-3, rel=1e-4)  # lr · clipped
    full, between = seen
    assert [id(t) for t in full[1]] == [id(opt.state[p]["gv"]) for p in params]
    assert between[1] == []  # g_v is shared once, when it is computed


@pytest.mark.parametrize(
    "dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16], ids=str
)
def test_looksam_steps_between_recomputations_in_every_dtype(dtype):
    model = mlp().to(dtype)
    x, y = data(seed=1)
    batch = (x.to(dtype), y)
    opt = build("looksam", model, interval=2)
    before = snapshot(model)
    for _ in range(4):
        opt.zero_grad()
        opt.step(closure_for(model, batch))
    for key, p in model.named_parameters():
        assert p.dtype == dtype and torch.isfinite(p).all(), key
        assert opt.state[p]["gv"].dtype == dtype, key
    assert not torch.equal(model[3].weight, before["3.weight"])


# ----------------------------------------------------------- kozistr/pytorch_optimizer
# The reference's float64 runs agree with ours to float rounding once two of its choices
# are set to the common case: its global gradient norm is rounded to float32 (patched to
# keep float64; the float32 case is checked at float32 resolution), and its ε terms
# (LookSAM's ‖g_v‖ + 1e-8) are made negligible by scaling the loss by 2^40 and the LR by
# 2^-40, which for SGD leaves the trajectory unchanged.

SCALE, LR = 2.0**40, 0.1 * 2.0**-40


def _squared_norm_float64(param_groups, device=None, *, weight_adaptive=False):
    """Stands in for the reference's float32 ``get_global_gradient_norm`` (squared)."""
    del device
    total = torch.zeros((), dtype=torch.float64)
    for group in param_groups:
        for p in group["params"]:
            if p.grad is not None:
                g = p.grad * p.abs() if weight_adaptive and group.get("adaptive") else p.grad
                total = total + g.double().square().sum()
    return total.reshape(1)


def _reference_problem(seed: int, layers: Callable[[], list[nn.Module]]):
    torch.manual_seed(seed)
    model = nn.Sequential(*layers()).double()
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(16, 5, generator=g, dtype=torch.float64)
    y = torch.randn(16, model(x).shape[1], generator=g, dtype=torch.float64)
    return model, lambda m: SCALE * nn.functional.mse_loss(m(x), y)


def _tolerance(float32_norm: bool) -> dict:
    return {"rtol": 1e-6, "atol": 1e-9} if float32_norm else {"rtol": 1e-13, "atol": 1e-15}


@pytest.mark.parametrize("float32_norm", [False, True], ids=["float64-norm", "float32-norm"])
@pytest.mark.parametrize("adaptive", [False, True], ids=["sam", "asam"])
def test_gsam_matches_pytorch_optimizer(monkeypatch, adaptive, float32_norm):
    po = pytest.importorskip("pytorch_optimizer")
    from pytorch_optimizer.optimizer import sam as po_sam

    if not float32_norm:
        monkeypatch.setattr(po_sam, "get_global_gradient_norm", _squared_norm_float64)
    layers = lambda: [nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)]  # noqa: E731
    ours, loss = _reference_problem(0, layers)
    theirs, _ = _reference_problem(0, layers)
    decay = lambda t: 1.0 - 0.15 * t  # noqa: E731
    kw = {"rho": 0.1, "rho_min": 0.02, "alpha": 0.3}

    opt = GSAM(
        ours.parameters(), rho=kw["rho"], rho_min=kw["rho_min"], gsam_alpha=kw["alpha"],
        adaptive=adaptive, lr=LR, momentum=0.9,
    )  # fmt: skip
    sched = torch.optim.lr_scheduler.LambdaLR(opt, decay)
    base = torch.optim.SGD(theirs.parameters(), lr=LR, momentum=0.9)
    ref_sched = torch.optim.lr_scheduler.LambdaLR(base, decay)
    rho_sched = po.ProportionScheduler(
        ref_sched, max_lr=LR, min_lr=0.0, max_value=kw["rho"], min_value=kw["rho_min"]
    )
    ref = po.GSAM(
        theirs.parameters(), base, theirs, rho_sched, alpha=kw["alpha"], adaptive=adaptive
    )

    def ref_closure():
        base.zero_grad()
        with torch.enable_grad():  # their step runs it under no_grad
            out = loss(theirs)
        out.backward()
        return None, out.detach()

    for _ in range(5):
        opt.zero_grad()
        opt.step(lambda: loss(ours).backward())
        sched.step()
        ref.step(ref_closure)
        ref_sched.step()
        ref.update_rho_t()
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), **_tolerance(float32_norm))
    assert not torch.equal(ours[0].weight, _reference_problem(0, layers)[0][0].weight)


@pytest.mark.parametrize("float32_norm", [False, True], ids=["float64-norm", "float32-norm"])
@pytest.mark.parametrize("adaptive", [False, True], ids=["sam", "asam"])
def test_looksam_matches_pytorch_optimizer(monkeypatch, adaptive, float32_norm):
    """One parameter tensor: their per-tensor g_v and norms are then the global ones."""
    po = pytest.importorskip("pytorch_optimizer")
    from pytorch_optimizer.optimizer import sam as po_sam

    if not float32_norm:
        monkeypatch.setattr(po_sam, "get_global_gradient_norm", _squared_norm_float64)
    layers = lambda: [nn.Linear(5, 3, bias=False), nn.Tanh()]  # noqa: E731
    ours, loss = _reference_problem(1, layers)
    theirs, _ = _reference_problem(1, layers)
    kw = {"rho": 0.1, "adaptive": adaptive, "lr": LR, "momentum": 0.9}
    opt = LookSAM(ours.parameters(), interval=3, looksam_alpha=0.7, **kw)
    ref = po.LookSAM(theirs.parameters(), torch.optim.SGD, k=3, alpha=0.7, **kw)

    def ref_closure():
        ref.zero_grad()
        out = loss(theirs)
        out.backward()
        return out

    for _ in range(8):  # full steps 0, 3, 6
        opt.zero_grad()
        opt.step(lambda: loss(ours).backward())
        ref.zero_grad()
        ref_closure()  # their protocol: g(W) before every step
        ref.step(ref_closure)
    torch.testing.assert_close(ours[0].weight, theirs[0].weight, **_tolerance(float32_norm))
