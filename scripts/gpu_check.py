"""Every CUDA path once, on the GPU at hand, in a few minutes: ``make gpu-check``.

* each domain's smoke training in fp32, bf16 and fp16 (the loss scaler with closures);
* each optimizer's step on the GPU against the same step on the CPU (a small CNN, one
  step from the same weights and batch; max relative difference of the weights);
* Hessian-vector products batched (``is_grads_batched``, the CUDA default) against looped,
  and the forward-over-reverse product compiled by ``torch.compile`` against eager: the
  same values, and the time of each;
* the Hessian trace and the loss landscape on the GPU;
* DDP over NCCL (two processes) when there are two GPUs or more;
* the peak GPU memory of a training step of ResNet-18 (batch 128, 32x32) per optimizer.

It prints one table and exits 1 if any check failed. Without CUDA it says so in one line
and exits 0. ``--device cpu`` runs the same checks on the CPU (the optimizer comparison is
then trivial and NCCL is skipped): a rehearsal of the script itself where no GPU is lent.

    python -m scripts.gpu_check [--device cuda|cpu] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
#: each domain's smoke run, on generated or shipped data and models (no network)
DOMAINS = {"image": [], "graph": [], "text": ["--config", "polarity"], "ecg": []}
PRECISIONS = ("fp32", "bf16", "fp16")
STEP_TOLERANCE = 1e-4  # relative: TF32 is off; kernels differ between devices, not maths
HVP_TOLERANCE = 1e-4


@dataclass
class Row:
    check: str
    setting: str
    status: str  # ok, FAIL, skip
    value: str = ""
    seconds: float = 0.0


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- training ---------------------------------------------------------------------------------
def smoke_training(device: torch.device, out: Path) -> Iterator[Row]:
    """Each domain's smoke run in each precision, in this process (the real CLI)."""
    for domain in DOMAINS:
        for precision in PRECISIONS:
            run_dir = out / f"{domain}-{precision}"
            argv = [
                *DOMAINS[domain],
                "smoke=true", "train.progress=false", f"train.device={device.type}",
                f"train.precision={precision}", f"run_dir={run_dir}", f"data.root={out / 'data'}",
            ]  # fmt: skip
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                rc, seconds = timed(lambda a=argv, d=domain: _train(d, a))
            said = err.getvalue().strip().splitlines()
            status = "ok" if rc == 0 else "FAIL"
            yield Row("smoke training", f"{domain} {precision}", status,
                      said[-1][:80] if rc else "finished", seconds)  # fmt: skip


def _train(domain: str, argv: list[str]) -> int:
    """``python -m <domain>_exps.train ARGV``, in this process."""
    import importlib

    from common.train.cli import train_main

    task = importlib.import_module(f"{domain}_exps.task").TASK
    return train_main(task, argv)


# -- optimizers -------------------------------------------------------------------------------
def _small_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 10),
    )  # fmt: skip


def _options(name: str) -> dict[str, float]:
    """Options that make a step the same maths on every device: weight noise (NSO's σ) is
    drawn by each device's own generator, so it is switched off here."""
    from common.optim import OPTIMIZERS

    info = OPTIMIZERS[name]
    options = {"lr": 0.1, "momentum": 0.9} if name not in ("adam", "adamw") else {"lr": 1e-3}
    noise = {k: 0.0 for k in ("sigma", "noise_scale") if k in info.specs}  # NSO's, RWP's
    return {**options, **noise}


def _one_step(name: str, device: torch.device, x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    from common.optim import OPTIMIZERS, create_optimizer

    model = _small_model(0).to(device)
    target = model if OPTIMIZERS[name].sharpness_aware else model.parameters()
    optimizer = create_optimizer(name, target, **_options(name))
    xb, yb = x.to(device), y.to(device)

    def loss_fn(m: nn.Module, batch: Any) -> torch.Tensor:
        return nn.functional.cross_entropy(m(batch[0]), batch[1])

    if hasattr(optimizer, "prepare_epoch"):  # SSAM-F's Fisher mask, SSAM-D's schedule
        optimizer.prepare_epoch(0, model=model, loss_fn=loss_fn, data=[(xb, yb)])

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = loss_fn(model, (xb, yb))
        loss.backward()
        return loss

    optimizer.step(closure)
    return model


def optimizer_steps(device: torch.device) -> Iterator[Row]:
    from common.optim import OPTIMIZERS

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 3, 16, 16, generator=g), torch.randint(0, 10, (32,), generator=g)
    for name in OPTIMIZERS:
        try:
            (ours, seconds), theirs = timed(lambda n=name: _one_step(n, device, x, y)), None
            theirs = _one_step(name, torch.device("cpu"), x, y)
        except Exception as error:  # a path that fails on this device is what we look for
            yield Row(
                "optimizer step vs CPU", name, "FAIL", f"{type(error).__name__}: {error}"[:80]
            )
            continue
        worst = max(
            float(
                (a.detach().cpu() - b.detach()).abs().max()
                / b.detach().abs().max().clamp_min(1e-12)
            )
            for a, b in zip(ours.parameters(), theirs.parameters(), strict=True)
        )
        status = "ok" if worst <= STEP_TOLERANCE else "FAIL"
        noiseless = {"sigma", "noise_scale"} & set(_options(name))
        setting = f"{name} (noise 0)" if noiseless else name
        yield Row("optimizer step vs CPU", setting, status, f"max rel. diff {worst:.1e}", seconds)


def _scaled_steps(name: str, device: torch.device, x: torch.Tensor, y: torch.Tensor) -> str:
    """An overflowing step then a good one under GradScaler and autocast; '' when right."""
    from common.optim import OPTIMIZERS, create_optimizer
    from common.optim.closures import accumulating_closure, scaled_step

    model = _small_model(0).to(device)
    target = model if OPTIMIZERS[name].sharpness_aware else model.parameters()
    optimizer = create_optimizer(name, target, **_options(name))
    data = [(x.to(device), y.to(device))]
    if hasattr(optimizer, "prepare_epoch"):
        fp32 = lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1])  # noqa: E731
        optimizer.prepare_epoch(0, model=model, loss_fn=fp32, data=data)
    scaler = torch.amp.GradScaler(device.type, init_scale=2.0**16)
    before = [p.detach().clone() for p in model.parameters()]
    for factor in (1e36, 1.0):  # x 1e36: the scaled loss overflows
        optimizer.zero_grad()
        closure = accumulating_closure(
            lambda b, f=factor: _loss(model, b, f), data, scale=scaler.scale
        )
        loss = scaled_step(optimizer, closure, scaler)
        if factor > 1 and (loss is not None or scaler.get_scale() != 2.0**15):
            return "the overflow was not skipped"
        after = model.parameters()
        if factor > 1 and any(not torch.equal(a, b) for a, b in zip(after, before, strict=True)):
            return "the overflow moved the weights"
    if loss is None or not math.isfinite(float(loss)):
        return f"the good step gave loss {loss}"
    return ""


def _loss(model: nn.Module, batch: Any, factor: float) -> torch.Tensor:
    dtype = torch.float16 if batch[0].is_cuda else torch.bfloat16
    with torch.autocast(batch[0].device.type, dtype=dtype):
        return factor * nn.functional.cross_entropy(model(batch[0]).float(), batch[1])


def scaled_steps(device: torch.device) -> Iterator[Row]:
    """Every optimizer under torch.amp.GradScaler (fp16 on CUDA, bf16 on the CPU)."""
    from common.optim import OPTIMIZERS

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 3, 16, 16, generator=g), torch.randint(0, 10, (32,), generator=g)
    for name in OPTIMIZERS:
        try:
            problem, seconds = timed(lambda n=name: _scaled_steps(n, device, x, y))
        except Exception as error:
            problem, seconds = f"{type(error).__name__}: {error}", 0.0
        status = "FAIL" if problem else "ok"
        yield Row("GradScaler overflow, then a step", name, status, problem[:80], seconds)


# -- measurements -----------------------------------------------------------------------------
def _problem(device: torch.device) -> tuple[nn.Module, Callable, list[tuple[Any, int]]]:
    model = _small_model(2).to(device).eval()
    g = torch.Generator().manual_seed(3)
    batches = [
        ((torch.randn(64, 3, 16, 16, generator=g).to(device),
          torch.randint(0, 10, (64,), generator=g).to(device)), 64)
        for _ in range(2)
    ]  # fmt: skip

    def loss_fn(m: nn.Module, batch: Any) -> torch.Tensor:
        return nn.functional.cross_entropy(m(batch[0]), batch[1])

    return model, loss_fn, batches


def hvp_paths(device: torch.device) -> Iterator[Row]:
    """Batched against looped products of the same probes: values, and time per product."""
    from common.sharpness.hvp import HessianOperator

    model, loss_fn, batches = _problem(device)
    params = [p for p in model.parameters() if p.requires_grad]
    dim = sum(p.numel() for p in params)
    g = torch.Generator().manual_seed(4)
    vectors = (torch.randint(0, 2, (16, dim), generator=g) * 2 - 1).to(device, torch.float32)
    results = {}
    for batched in (True, False):
        op = HessianOperator(model, loss_fn, batches, params, keep_graphs=True, batched=batched)
        op.matmat(vectors[:2])  # graphs built, kernels warm
        sync(device)
        times = []
        for _ in range(3):
            out, seconds = timed(lambda o=op: (o.matmat(vectors), sync(device))[0])
            times.append(seconds)
        results[batched] = (out, statistics.median(times))
    (fast, t_batched), (slow, t_looped) = results[True], results[False]
    rel = float((fast - slow).abs().max() / slow.abs().max())
    status = "ok" if rel <= HVP_TOLERANCE else "FAIL"
    yield Row("HVP batched vs looped", "16 probes, 2 batches", status,
              f"rel. diff {rel:.1e}; {1e3 * t_batched / 16:.2f} vs {1e3 * t_looped / 16:.2f} ms",
              t_batched + t_looped)  # fmt: skip
    yield from _compiled_hvp(device, model, batches[0][0])


def _compiled_hvp(device: torch.device, model: nn.Module, batch: Any) -> Iterator[Row]:
    from common.sharpness.hvp import functional_hvp

    params, v, product = functional_hvp(model, batch[0], batch[1])
    eager, _ = timed(lambda: product(params, v))
    try:
        compiled = torch.compile(product)
        _, compile_s = timed(lambda: (compiled(params, v), sync(device)))
        fast, _ = timed(lambda: compiled(params, v))
    except Exception as error:  # inductor needs a C++ compiler / triton; report it
        yield Row(
            "HVP compiled vs eager", "forward-over-reverse", "FAIL", f"{type(error).__name__}"[:80]
        )
        return
    per = {
        k: statistics.median(timed(lambda f=f: (f(params, v), sync(device)))[1] for _ in range(5))
        for k, f in (("eager", product), ("compiled", compiled))
    }
    rel = max(
        float((fast[n] - eager[n]).abs().max() / eager[n].abs().max().clamp_min(1e-12))
        for n in eager
    )
    status = "ok" if rel <= HVP_TOLERANCE else "FAIL"
    yield Row("HVP compiled vs eager", "forward-over-reverse", status,
              f"rel. diff {rel:.1e}; {1e3 * per['compiled']:.2f} vs {1e3 * per['eager']:.2f} ms "
              f"(compile {compile_s:.0f} s)", compile_s)  # fmt: skip


def measurements(device: torch.device, out: Path) -> Iterator[Row]:
    """The trace and the landscape on this device, each once, small."""
    from common.sharpness import hessian_trace, loss_landscape

    model, loss_fn, batches = _problem(device)
    data = [b for b, _ in batches]
    result, seconds = timed(lambda: hessian_trace(model, loss_fn, data, n_probes=20, seed=0))
    finite = torch.isfinite(torch.tensor(result.total)).item()
    yield Row("Hessian trace", "Hutchinson, 20 probes", "ok" if finite else "FAIL",
              f"{result.total:.4g} ± {result.stderr:.2g}", seconds)  # fmt: skip
    path = out / "landscape.h5"
    grid, seconds = timed(lambda: loss_landscape(model, loss_fn, data, path=path, steps=5, dims=2))
    finite = bool(torch.isfinite(torch.as_tensor(grid.loss)).all())
    yield Row("loss landscape", "5x5 grid", "ok" if finite else "FAIL", "", seconds)


# -- several GPUs -------------------------------------------------------------------------------
def nccl(device: torch.device, out: Path) -> Iterator[Row]:
    if device.type != "cuda" or torch.cuda.device_count() < 2:
        yield Row("DDP over NCCL", "2 processes", "skip", "needs 2 GPUs")
        return
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "image_exps.train", "smoke=true", "train.progress=false", "optimizer.name=sam",
           f"run_dir={out / 'nccl'}", f"data.root={out / 'data'}"]  # fmt: skip
    done, seconds = timed(lambda: subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True))
    said = (done.stderr.strip().splitlines() or [""])[-1][:80]
    yield Row(
        "DDP over NCCL", "2 processes, sam", "ok" if done.returncode == 0 else "FAIL", said, seconds
    )


# -- memory -------------------------------------------------------------------------------------
def peak_memory(device: torch.device) -> Iterator[Row]:
    if device.type != "cuda":
        yield Row("peak memory", "resnet18, batch 128", "skip", "CUDA only")
        return
    from common.optim import OPTIMIZERS
    from image_exps.models import build_image_model

    x = torch.randn(128, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (128,), device=device)
    for name in OPTIMIZERS:
        model = build_image_model("resnet18", 10).to(device)
        row = _peak_of(name, model, x, y, device)
        del model
        torch.cuda.empty_cache()
        yield row


def _peak_of(
    name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device
) -> Row:
    from common.optim import OPTIMIZERS, create_optimizer

    aware = OPTIMIZERS[name].sharpness_aware
    optimizer = create_optimizer(name, model if aware else model.parameters(), lr=0.1)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    optimizer.step(closure)  # state allocated
    torch.cuda.reset_peak_memory_stats(device)
    _, seconds = timed(lambda: (optimizer.step(closure), sync(device)))
    peak = torch.cuda.max_memory_allocated(device) / 2**20
    return Row("peak memory", f"resnet18, batch 128, {name}", "ok", f"{peak:.0f} MiB", seconds)


# -- the table ----------------------------------------------------------------------------------
def table(rows: list[Row]) -> str:
    lines = ["| check | setting | result | value | seconds |", "| --- | --- | --- | --- | ---: |"]
    lines += [
        f"| {r.check} | {r.setting} | {r.status} | {r.value} | {r.seconds:.1f} |" for r in rows
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.gpu_check",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--out", help="folder for the runs (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu-check: no CUDA device is visible; nothing to check (--device cpu rehearses it)")
        return 0
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False  # the CPU comparison is about maths
    torch.backends.cudnn.allow_tf32 = False
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        rows: list[Row] = []
        for check in (lambda: smoke_training(device, out), lambda: optimizer_steps(device),
                      lambda: scaled_steps(device), lambda: hvp_paths(device),
                      lambda: measurements(device, out), lambda: nccl(device, out),
                      lambda: peak_memory(device)):  # fmt: skip
            for row in check():
                rows.append(row)
                print(f"{row.status:4} {row.check}: {row.setting} {row.value}", file=sys.stderr)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"gpu-check on {name}, torch {torch.__version__}\n")
    print(table(rows), end="")
    return 1 if any(r.status == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
