"""Contract of every registry entry: restore, closure counts, state, schedulers, errors."""

from __future__ import annotations

import inspect
import io
import math
import re
import warnings

import pytest
import torch
from conftest import ALL, SHARPNESS_AWARE, assert_same, build, ce, closure_for, data, mlp, snapshot
from torch import nn

from common.optim import (
    BASE_ACCEPTS,
    BASE_OPTIONS,
    NSO,
    OPTIMIZERS,
    SAM,
    SSAMD,
    SSAMF,
    WSAM,
    Option,
    base_accepts,
    create_optimizer,
)
from common.optim.base import SharpnessAwareOptimizer


def params_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


@pytest.mark.parametrize("name", SHARPNESS_AWARE)
def test_weights_restored_bit_for_bit(name):
    """With lr = 0 the step must leave W exactly as it was (no W + e − e)."""
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    with torch.no_grad():  # small W, large e: W + e − e loses W's low bits in float32
        for p in model.parameters():
            p.mul_(1e-3)
    before = params_of(model)
    big = {"nso": {"sigma": 7.0}, "rwp": {"noise_scale": 5e4}, "arwp": {"noise_scale": 5e4}}
    big = big.get(name, {"rho": 50.0})
    opt = build(name, model, data(), lr=0.0, **big)
    opt.step(closure_for(model, data()))
    assert_same(params_of(model), before)


def test_naive_restore_would_not_be_exact():
    # the precondition that makes the test above meaningful
    w = torch.tensor([1.234e-3, -5.678e-4, 3.3e-3])
    e = torch.tensor([50.0, -7.0, 13.0])
    assert not torch.equal(w + e - e, w)


@pytest.mark.parametrize("name", SHARPNESS_AWARE)
def test_weights_restored_when_the_closure_raises(name):
    model = mlp()
    batch = data()
    opt = build(name, model, batch)
    before = params_of(model)
    calls = []

    def closure():
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return closure_for(model, batch)()

    with pytest.raises(RuntimeError, match="boom"):
        opt.step(closure)
    assert_same(params_of(model), before)
    assert all(m.track_running_stats for m in model.modules() if isinstance(m, nn.BatchNorm1d))
    opt.zero_grad()
    opt.step(closure_for(model, batch))  # usable afterwards


@pytest.mark.parametrize(
    "name,cfg",
    [(n, {}) for n in ALL]
    + [
        ("nso", {"num_perturbs": 3}),
        ("nso", {"num_perturbs": 2, "use_neg": False}),
        ("nso", {"lam": 0.5}),
        ("nso", {"lam": 1.0}),
    ],
)
def test_closure_calls_per_step_match_registry(name, cfg):
    # the registry gives the mean over a period where steps differ: LookSAM's k steps
    period = OPTIMIZERS[name].resolved(**cfg).get("interval", 1)
    model, batch = mlp(), data()
    opt = build(name, model, batch, **cfg)
    for _ in range(2):
        calls: list = []
        for _ in range(period):
            opt.zero_grad()
            opt.step(closure_for(model, batch, calls))
        assert len(calls) / period == pytest.approx(OPTIMIZERS[name].evals_per_step(**cfg))
    if name == "nso" and not cfg:
        assert len(calls) == 2  # 2k, not the original's 1 + 2k
    if name == "looksam" and not cfg:
        assert len(calls) == 6  # the paper's k = 5: one full step, four with g(W) only


@pytest.mark.parametrize("name", ["sam", "wsam", "ssamd"])
def test_present_gradients_are_used_as_g_of_w(name):
    """The seeds' closure usage: backward by the caller, then step(closure) = one more call."""
    batch = data()
    a, b = mlp(bn=False), mlp(bn=False)
    opt_a, opt_b = build(name, a, batch), build(name, b, batch)
    ce(a, batch).backward()
    calls: list = []
    opt_a.step(closure_for(a, batch, calls))
    assert len(calls) == 1
    opt_b.step(closure_for(b, batch))
    assert_same(params_of(a), params_of(b))


def save_load(obj) -> dict:
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)  # no pickled code in an optimizer state


@pytest.mark.parametrize("name", ALL)
def test_state_dict_round_trip_continues_bit_for_bit(name):
    cfg = {"momentum": 0.9} if OPTIMIZERS[name].sharpness_aware or name == "sgd" else {}
    if name == "ssamd":
        cfg.update(update_freq=1, drop_strategy="random", epochs=4)
    if name == "nso":
        cfg.update(sigma_schedule="linear", schedule_steps=5)
    batches = [data(seed=s) for s in range(8)]

    def train(model, opt, sched, steps):
        for i in steps:
            if isinstance(opt, SSAMD):
                opt.prepare_epoch(i // 2)
            opt.zero_grad()
            opt.step(closure_for(model, batches[i]))
            sched.step()

    model = mlp()
    opt = build(name, model, batches[0], **cfg)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    train(model, opt, sched, range(3))
    saved = save_load(
        {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}
    )
    train(model, opt, sched, range(3, 8))

    model2 = mlp(seed=123)
    opt2 = build(
        name,
        model2,
        batches[0],
        **{**cfg, "seed": 99} if "seed" in OPTIMIZERS[name].options else cfg,
    )
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=2, gamma=0.5)
    model2.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    sched2.load_state_dict(saved["sched"])
    if isinstance(opt2, SharpnessAwareOptimizer):
        assert opt2.param_groups is opt2.base_optimizer.param_groups
    train(model2, opt2, sched2, range(3, 8))
    assert_same(snapshot(model2), snapshot(model))


def test_state_dict_carries_masks_and_base_momentum():
    model, batch = mlp(), data()
    opt = build("ssamf", model, batch, momentum=0.9)
    opt.step(closure_for(model, batch))
    sd = opt.state_dict()
    masks = [v["mask"] for v in sd["state"].values()]
    assert len(masks) == len(list(model.parameters())) and masks[0].dtype == torch.float32
    assert all("momentum_buffer" in v for v in sd["base_optimizer"]["state"].values())


def test_loading_a_foreign_state_dict_is_refused():
    model = mlp()
    opt = build("sam", model)
    with pytest.raises(ValueError, match="base_optimizer"):
        opt.load_state_dict(torch.optim.SGD(model.parameters(), lr=0.1).state_dict())


@pytest.mark.parametrize("name", SHARPNESS_AWARE)
def test_scheduler_on_the_wrapper_drives_the_base(name):
    model, batch = mlp(), data()
    opt = build(name, model, batch, lr=1.0)
    assert opt.param_groups is opt.base_optimizer.param_groups
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1)
    opt.step(closure_for(model, batch))
    sched.step()
    assert opt.base_optimizer.param_groups[0]["lr"] == pytest.approx(0.1)


def test_scheduled_lr_is_the_step_size():
    """After the scheduler on the wrapper halves the lr, the update is exactly half as large."""
    c = torch.tensor([1.0, -2.0, 0.5])  # linear loss: the gradient is c at every point
    p = nn.Parameter(torch.zeros(3))
    opt = SAM([p], torch.optim.SGD, rho=0.05, lr=0.25)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    deltas = []
    for _ in range(2):
        before = p.detach().clone()
        opt.zero_grad()
        opt.step(lambda: (c * p).sum().backward())
        sched.step()
        deltas.append(p.detach() - before)
    torch.testing.assert_close(deltas[0], -0.25 * c)
    torch.testing.assert_close(deltas[1], -0.125 * c)


def test_built_base_instance_and_model_argument():
    model = mlp()
    base = torch.optim.SGD(model.parameters(), lr=0.1)
    opt = WSAM(model, base, rho=0.05, gamma=0.9, adaptive=False, decouple=True, max_norm=None)
    assert opt.base_optimizer is base and opt.param_groups is base.param_groups
    assert opt.param_groups[0]["rho"] == 0.05
    with pytest.raises(ValueError, match="differ"):
        SAM(mlp().parameters(), torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="already built"):
        SAM(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.1), lr=0.2)


def test_per_group_options():
    model, batch = mlp(bn=False), data()
    groups = [
        {"params": model[0].parameters(), "sigma": 0.0},
        {"params": model[2].parameters()},
    ]
    opt = NSO(groups, torch.optim.SGD, sigma=0.5, lr=0.0, seed=0)
    seen = []

    def closure():
        seen.append([p.detach().clone() for p in model.parameters()])
        return closure_for(model, batch)()

    before = [p.detach().clone() for p in model.parameters()]
    opt.step(closure)
    assert all(
        torch.equal(a, b) for a, b in zip(seen[0][:2], before[:2], strict=True)
    )  # sigma 0: no noise
    assert not torch.equal(seen[0][2], before[2])


BAD = [
    ("sam", {"rho": -0.1}, "rho"),
    ("asam", {"eta": -1.0}, "eta"),
    ("sam", {"adaptive": "yes"}, "adaptive"),
    ("nso", {"sigma": -0.01}, "sigma"),
    ("nso", {"num_perturbs": 0}, "num_perturbs"),
    ("nso", {"num_perturbs": 1.5}, "num_perturbs"),
    ("nso", {"lam": 1.5}, "lam"),
    ("nso", {"distribution": "gaussian"}, "distribution"),
    ("nso", {"sigma_schedule": "cosine"}, "sigma_schedule"),
    ("nso", {"sigma": 0.0, "sigma_schedule": "exponential"}, "sigma"),
    ("wsam", {"gamma": 1.0}, "gamma"),
    ("wsam", {"gamma": -0.1}, "gamma"),
    ("wsam", {"max_norm": -1.0}, "max_norm"),
    ("ssamf", {"sparsity": 1.0}, "sparsity"),
    ("ssamd", {"sparsity": -0.2}, "sparsity"),
    ("ssamf", {"num_samples": 0}, "num_samples"),
    ("ssamf", {"update_freq": 0}, "update_freq"),
    ("ssamd", {"drop_rate": 2.0}, "drop_rate"),
    ("ssamd", {"drop_strategy": "magnitude"}, "drop_strategy"),
    ("ssamd", {"growth_strategy": "x"}, "growth_strategy"),
    ("ssamd", {"epochs": 0}, "epochs"),
    ("sam", {"rho": float("nan")}, "rho"),
]


@pytest.mark.parametrize("name,cfg,arg", BAD, ids=[f"{n}-{a}" for n, _, a in BAD])
def test_bad_hyper_parameters_name_the_argument(name, cfg, arg):
    with pytest.raises(ValueError, match=arg) as info:
        create_optimizer(name, mlp().parameters(), lr=0.1, **cfg)
    assert "must be" in str(info.value)


def test_bad_per_group_value_is_caught():
    model = mlp()
    with pytest.raises(ValueError, match="rho"):
        SAM([{"params": model.parameters(), "rho": -1.0}], torch.optim.SGD, lr=0.1)


def test_unknown_optimizer_lists_the_valid_names():
    with pytest.raises(ValueError, match="did you mean nso") as info:
        create_optimizer("nsoo", mlp().parameters())
    for name in OPTIMIZERS:
        assert name in str(info.value)


def test_unknown_option_and_base_are_refused():
    with pytest.raises(ValueError, match=r"momentm.*did you mean momentum"):
        create_optimizer("sam", mlp().parameters(), lr=0.1, momentm=0.9)
    with pytest.raises(ValueError, match="rho"):
        create_optimizer("sgd", mlp().parameters(), lr=0.1, rho=0.05)
    with pytest.raises(ValueError, match="base"):
        create_optimizer("sam", mlp().parameters(), base="lbfgs", lr=0.1)
    with pytest.raises(ValueError, match="closure"):
        SAM(mlp().parameters(), lr=0.1).step()


def test_create_optimizer_picks_base_and_presets():
    opt = create_optimizer("asam", mlp().parameters(), base="adamw", lr=1e-3, weight_decay=0.1)
    assert isinstance(opt, SAM) and isinstance(opt.base_optimizer, torch.optim.AdamW)
    group = opt.param_groups[0]
    assert (group["adaptive"], group["eta"], group["rho"], group["weight_decay"]) == (
        True,
        0.01,
        0.5,
        0.1,
    )
    assert isinstance(create_optimizer("ssamd", mlp().parameters(), lr=0.1), SSAMD)
    assert isinstance(create_optimizer("SSAMF", mlp().parameters(), lr=0.1), SSAMF)


def test_registry_describes_every_optimizer():
    assert set(OPTIMIZERS) == {
        "sgd",
        "adam",
        "adamw",
        "sam",
        "asam",
        "ssamf",
        "ssamd",
        "wsam",
        "nso",
        "gsam",
        "looksam",
        "fsam",
        "rwp",
        "arwp",
    }
    assert OPTIMIZERS["nso"].options["sigma"] == 0.01
    assert OPTIMIZERS["nso"].evals_per_step(num_perturbs=2) == 4
    assert OPTIMIZERS["nso"].evals_per_step(lam=0.3) == 3
    assert OPTIMIZERS["sgd"].evals_per_step() == 1 and not OPTIMIZERS["sgd"].sharpness_aware


# ---------------------------------------------------------------- keyword-only options

CLASSES = [SAM, SSAMF, SSAMD, WSAM, NSO]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_options_after_base_optimizer_are_keyword_only(cls):
    with pytest.raises(TypeError):
        cls(mlp().parameters(), torch.optim.SGD, 0.05)
    kinds = inspect.signature(cls.__init__).parameters.values()
    positional = [p.name for p in kinds if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert positional == ["self", "params", "base_optimizer"]


# ------------------------------------------------------------- unknown-option messages


def test_unknown_option_lists_the_wrappers_and_the_bases_options():
    with pytest.raises(ValueError, match=r"'rh' \(did you mean rho\?\)") as info:
        create_optimizer("sam", mlp().parameters(), rh=0.1)
    msg = str(info.value)
    for name in [*OPTIMIZERS["sam"].specs, *base_accepts(torch.optim.SGD)]:
        assert re.search(rf"\b{name}\b", msg), name
    assert "torch.optim.SGD" in msg
    with pytest.raises(ValueError, match=r"did you mean betas.*torch\.optim\.AdamW"):
        create_optimizer("nso", mlp().parameters(), base="adamw", beta=(0.9, 0.99))
    with pytest.raises(ValueError, match="sigma is an option of nso"):
        create_optimizer("wsam", mlp().parameters(), sigma=0.1)


@pytest.mark.parametrize("name,cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam)])
def test_unknown_option_of_a_plain_optimizer(name, cls):
    with pytest.raises(ValueError) as info:
        create_optimizer(name, mlp().parameters(), lr=0.1, weight_decy=0.1, rho=0.05)
    msg = str(info.value)
    assert "'weight_decy' (did you mean weight_decay" in msg
    assert f"torch.optim.{cls.__name__}'s options" in msg
    assert all(re.search(rf"\b{n}\b", msg) for n in base_accepts(cls))
    assert "rho is an option of sam, asam, ssamf, ssamd, wsam" in msg


# -------------------------------------------------------------- declared options (specs)


def test_specs_follow_the_constructors():
    for name, info in OPTIMIZERS.items():
        if not info.sharpness_aware:
            assert dict(info.specs) == {} and dict(info.options) == {}, name
            continue
        sig = inspect.signature(info.cls.__init__).parameters
        keyword = [n for n, p in sig.items() if p.kind is p.KEYWORD_ONLY and n[0] != "_"]
        assert list(info.specs) == keyword, name  # declaration order = signature order
        assert list(info.specs)[-1] == "max_grad_norm", name
        for option, spec in info.specs.items():
            assert isinstance(spec, Option) and spec.help, (name, option)
            assert spec.default == sig[option].default == info.options[option], (name, option)
            spec.check(option, spec.default)  # every default is valid


def test_an_option_shared_by_optimizers_is_declared_once():
    seen: dict[str, list] = {}
    for info in OPTIMIZERS.values():
        for option, spec in info.specs.items():
            seen.setdefault(option, []).append(spec)
    for option, specs in seen.items():
        assert all(s == specs[0] for s in specs), option
    assert len(seen["rho"]) == 8 and len(seen["seed"]) == 4 and len(seen["max_grad_norm"]) == 11
    assert SAM.OPTIONS["rho"] is SSAMF.OPTIONS["rho"] is SSAMD.OPTIONS["rho"]
    assert (
        WSAM.OPTIONS["rho"] is SAM.OPTIONS["rho"] and NSO.OPTIONS["seed"] is SSAMD.OPTIONS["seed"]
    )
    assert NSO.OPTIONS["max_grad_norm"] is WSAM.OPTIONS["max_grad_norm"]
    assert SSAMF.OPTIONS["update_freq"] == SSAMD.OPTIONS["update_freq"]  # defaults 1 and 5


def _invalid_values(spec: Option) -> list:
    """Values ``spec`` must refuse: wrong type, NaN/inf, just past each bound."""
    if spec.type is bool:
        return ["yes", 1]
    if spec.type is str:
        return ["no-such-choice", 3]
    wrong = ["0.1", True]
    if spec.type is int:
        wrong += [1.5]
    else:
        wrong += [math.nan, math.inf, -math.inf]
    bounds = [spec.min - 1 if spec.min is not None else None, spec.gt, spec.lt]
    bounds += [spec.max + 1 if spec.max is not None else None]
    return wrong + [b for b in bounds if b is not None]


CASES = [
    (name, option, value)
    for name, info in OPTIMIZERS.items()
    for option, spec in info.specs.items()
    for value in _invalid_values(spec)
]


@pytest.mark.parametrize("name,option,value", CASES, ids=[f"{n}-{o}-{v!r}" for n, o, v in CASES])
def test_every_declared_bound_is_enforced_by_the_constructor(name, option, value):
    with pytest.raises(ValueError, match=rf"^{option}\b.* must be .*, got ") as info:
        create_optimizer(name, mlp().parameters(), lr=0.1, **{option: value})
    assert OPTIMIZERS[name].specs[option].describe() in str(info.value)


def test_option_check_messages_and_describe():
    rho, betas = SAM.OPTIONS["rho"], BASE_OPTIONS["betas"]
    assert rho.describe() == "a number >= 0"
    assert SSAMF.OPTIONS["sparsity"].describe() == "a number >= 0 and < 1"
    assert SAM.OPTIONS["max_grad_norm"].describe() == "a number > 0, or None"
    assert betas.describe() == "a tuple of 2 numbers, each >= 0 and < 1"
    assert NSO.OPTIONS["distribution"].describe().startswith("one of 'normal', 'laplace'")
    with pytest.raises(ValueError, match=r"^rho must be a number >= 0, got -1$"):
        rho.check("rho", -1)
    rho.check("rho", 0)  # an int is a number
    betas.check("betas", (0.9, 0.999))
    betas.check("betas", [0.0, 0.5])  # YAML gives lists
    for bad in [(0.9,), (0.9, 1.0), (0.9, math.nan), 0.9]:
        with pytest.raises(ValueError, match="betas must be"):
            betas.check("betas", bad)
    Option(float, "unbounded above", max=math.inf).check("x", math.inf)  # only if allowed
    with pytest.raises(TypeError):
        Option(list, "not a supported type")
    with pytest.raises(TypeError):
        Option(tuple, "a tuple needs a length")


def test_base_options_refuse_non_finite_and_out_of_range_values():
    assert list(BASE_OPTIONS) == ["lr", "weight_decay", "momentum", "nesterov", "betas", "eps"]
    ok = {"lr": 0.1, "weight_decay": 0, "momentum": 0.9, "nesterov": True, "eps": 1e-8}
    for name, value in ok.items():
        BASE_OPTIONS[name].check(name, value)
    bad = [("lr", math.inf), ("lr", math.nan), ("lr", 0.0), ("weight_decay", math.inf)]
    bad += [("weight_decay", -1e-4), ("momentum", -0.1), ("nesterov", "yes"), ("eps", 0.0)]
    for name, value in bad:
        with pytest.raises(ValueError, match=f"{name} must be"):
            BASE_OPTIONS[name].check(name, value)


def test_base_accepts_says_which_base_takes_an_option():
    assert {"lr", "momentum", "nesterov", "weight_decay"} <= base_accepts(torch.optim.SGD)
    assert "momentum" not in base_accepts(torch.optim.Adam)
    assert {"betas", "eps"} <= base_accepts(torch.optim.AdamW)
    assert BASE_ACCEPTS["adam"] == base_accepts(torch.optim.Adam)
    assert "params" not in BASE_ACCEPTS["sgd"] and "self" not in BASE_ACCEPTS["sgd"]


# ----------------------------------------------------------------------- max_grad_norm


class SpySGD(torch.optim.SGD):
    """SGD that records the gradients each of its steps uses."""

    def step(self, closure=None):
        grads = [
            p.grad.clone() for g in self.param_groups for p in g["params"] if p.grad is not None
        ]
        self.__dict__.setdefault("seen", []).append(grads)
        return super().step(closure)


def total_norm(tensors) -> float:
    return float(torch.linalg.vector_norm(torch.stack([t.double().norm() for t in tensors])))


@pytest.mark.parametrize("name", SHARPNESS_AWARE)
def test_max_grad_norm_clips_the_gradient_of_the_base_step(name):
    batch, c = data(), 1e-3
    seen = {}
    for clip in (None, c, 1e6):
        model = mlp()
        opt = build(name, model, batch, base=SpySGD, max_grad_norm=clip)
        opt.step(closure_for(model, batch))
        seen[clip] = opt.base_optimizer.seen[0]
    raw = total_norm(seen[None])
    assert raw > 10 * c  # there is something to clip
    assert total_norm(seen[c]) <= c * (1 + 1e-6)
    for clipped, g in zip(seen[c], seen[None], strict=True):  # scaled, not redirected
        torch.testing.assert_close(clipped, g * (c / raw), rtol=1e-4, atol=1e-9)
    assert all(torch.equal(a, b) for a, b in zip(seen[1e6], seen[None], strict=True))


def test_max_grad_norm_clips_after_grad_hook():
    """The trainer all-reduces in grad_hook; clipping must see the reduced gradient."""
    model, batch = mlp(), data()
    opt = build("sam", model, batch, base=SpySGD, max_grad_norm=0.01)
    hooked = []

    def hook(grads, extra):
        torch._foreach_mul_(grads, 1000.0)  # e.g. a sum over ranks
        hooked.append(total_norm(grads))

    opt.grad_hook = hook
    opt.step(closure_for(model, batch))
    assert hooked[0] > 1.0  # the hook saw the unclipped gradient
    assert total_norm(opt.base_optimizer.seen[0]) <= 0.01 * (1 + 1e-6)


def test_callers_clipping_does_not_reach_the_sam_update():
    """Why max_grad_norm exists: a clipped g(W) only picks e; the base step uses g(W + e)."""
    model, batch = mlp(), data()
    opt = build("sam", model, batch, base=SpySGD)
    ce(model, batch).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1e-4)
    opt.step(closure_for(model, batch))
    assert total_norm(opt.base_optimizer.seen[0]) > 1e-2


def test_nso_with_lam_takes_present_gradients_as_g_of_w():
    batch, k, lam = data(), 2, 0.3
    a, b = mlp(), mlp()
    opt_a = build("nso", a, batch, lam=lam, num_perturbs=k)
    opt_b = build("nso", b, batch, lam=lam, num_perturbs=k)
    for _ in range(2):
        opt_a.zero_grad()
        ce(a, batch).backward()  # the caller's clean pass at W (moves BN statistics once)
        calls: list = []
        opt_a.step(closure_for(a, batch, calls))
        assert len(calls) == 2 * k  # not 1 + 2k
        opt_b.zero_grad()
        calls = []
        opt_b.step(closure_for(b, batch, calls))
        assert len(calls) == 1 + 2 * k
    assert_same(snapshot(a), snapshot(b))  # same update, same BatchNorm statistics


def test_nso_without_lam_discards_present_gradients_and_warns_once():
    batch = data()
    a, b = mlp(bn=False), mlp(bn=False)
    opt_a, opt_b = build("nso", a, batch), build("nso", b, batch)
    with pytest.warns(UserWarning, match="lam=0.*discarded") as record:
        for _ in range(2):
            ce(a, batch).backward()
            torch.nn.utils.clip_grad_norm_(a.parameters(), 1e-4)  # has no effect
            calls: list = []
            opt_a.step(closure_for(a, batch, calls))
            assert len(calls) == 2
    ours = [w for w in record if "lam=0" in str(w.message)]
    assert len(ours) == 1 and ours[0].filename == __file__  # points at the caller
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no gradients present: no warning
        for _ in range(2):
            opt_b.zero_grad()
            opt_b.step(closure_for(b, batch))
    assert_same(snapshot(a), snapshot(b))
