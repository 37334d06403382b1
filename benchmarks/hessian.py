"""Hessian trace and top eigenvalue: ``common.sharpness`` against the ``pyhessian`` package.

Run from the repository root::

    .venv/bin/python -m benchmarks.hessian [--quick] [--json PATH] [--threads N]

Both run side by side in one process on the same small CNN (eval mode) and the same
random CIFAR-sized data, interleaved, median of several rounds:

1. trace on one batch, the same number of Rademacher probes (PyHessian with its early
   stop disabled); PyHessian's single-batch mode already reuses one gradient graph, ours
   pushes all probes through it in one batched backward pass;
2. trace on several batches, same probes: PyHessian runs a forward and a backward per
   probe per batch, ours one per batch for all probes;
3. the top eigenvalue on one batch: PyHessian's power iteration (its defaults: tol 1e-3,
   at most 100 iterations) against our Lanczos; both errors are reported against a
   converged Lanczos reference (tol 1e-10), and ours must be at least as accurate.

Goal: each of ours <= 0.5x PyHessian's time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from pyhessian import hessian as PyHessian
from torch import nn

from common.sharpness import hessian_eigenvalues, hessian_trace

GOAL = 0.5
SEED = 0


def small_cnn() -> nn.Module:
    torch.manual_seed(SEED)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
        nn.Flatten(), nn.Linear(32 * 16, 10),
    ).eval()  # fmt: skip


def batches(n: int, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(SEED + 1)
    return [
        (torch.randn(size, 3, 32, 32, generator=g), torch.randint(0, 10, (size,), generator=g))
        for _ in range(n)
    ]


def ce(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def compare(ours: Callable[[], Any], theirs: Callable[[], Any], rounds: int) -> dict[str, Any]:
    """Median seconds of each, interleaved (alternating which goes first)."""
    t_ours, t_theirs, out = [], [], {}
    for r in range(rounds):
        order = [("ours", ours, t_ours), ("pyhessian", theirs, t_theirs)]
        for name, fn, times in order if r % 2 == 0 else order[::-1]:
            seconds, out[name] = timed(fn)
            times.append(seconds)
    ours_s, theirs_s = statistics.median(t_ours), statistics.median(t_theirs)
    return {"ours_s": ours_s, "pyhessian_s": theirs_s, "ratio": ours_s / theirs_s, "out": out}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    # PyHessian calls loss.backward(create_graph=True); torch warns about the cycle it makes
    warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
    probes, n_batches, size, rounds = (6, 2, 16, 1) if args.quick else (50, 4, 64, 3)
    model = small_cnn()
    one = batches(1, size)
    several = batches(n_batches, size)
    criterion = nn.CrossEntropyLoss()
    results: dict[str, Any] = {
        "config": {
            "probes": probes, "batches": n_batches, "batch_size": size, "rounds": rounds,
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "params": sum(p.numel() for p in model.parameters()),
        }
    }  # fmt: skip

    def py_trace(data=None, loader=None) -> list[float]:
        h = PyHessian(model, criterion, data=data, dataloader=loader, cuda=False)
        try:
            return h.trace(maxIter=probes, tol=-1.0)  # tol < 0: never stop early
        finally:
            model.zero_grad(set_to_none=True)  # PyHessian leaves graph-carrying .grads

    print(f"trace, one batch of {size}, {probes} probes ...", flush=True)
    results["trace_one_batch"] = compare(
        lambda: hessian_trace(model, ce, one, n_probes=probes).total,
        lambda: sum(py_trace(data=one[0])) / probes,
        rounds,
    )
    print(f"trace, {n_batches} batches of {size}, {probes} probes ...", flush=True)
    results["trace_batches"] = compare(
        lambda: hessian_trace(model, ce, several, n_probes=probes).total,
        lambda: sum(py_trace(loader=several)) / probes,
        rounds,
    )
    print("top eigenvalue, one batch ...", flush=True)
    exact = hessian_eigenvalues(model, ce, one, tol=1e-10, max_iter=200).eigenvalues[0]

    def py_top() -> float:
        torch.manual_seed(SEED)
        h = PyHessian(model, criterion, data=one[0], cuda=False)
        try:
            return h.eigenvalues(maxIter=100, tol=1e-3)[0][0]
        finally:
            model.zero_grad(set_to_none=True)

    eig = compare(
        lambda: hessian_eigenvalues(model, ce, one, tol=1e-3).eigenvalues[0], py_top, rounds
    )
    eig["reference"] = exact
    eig["error_ours"] = abs(eig["out"]["ours"] - exact) / abs(exact)
    eig["error_pyhessian"] = abs(eig["out"]["pyhessian"] - exact) / abs(exact)
    results["top_eigenvalue"] = eig

    rows = [
        ("trace, 1 batch", results["trace_one_batch"], ""),
        (f"trace, {n_batches} batches", results["trace_batches"], ""),
        (
            "top eigenvalue",
            eig,
            f"rel. error {eig['error_ours']:.1e} vs {eig['error_pyhessian']:.1e}",
        ),
    ]
    print()
    print("| measure | ours | pyhessian | ratio | goal | met | note |")
    print("|---|---|---|---|---|---|---|")
    met_all = eig["error_ours"] <= eig["error_pyhessian"] + 1e-12
    for name, r, note in rows:
        met = r["ratio"] <= GOAL
        met_all &= met
        print(
            f"| {name} | {r['ours_s'] * 1e3:.0f} ms | {r['pyhessian_s'] * 1e3:.0f} ms | "
            f"{r['ratio']:.2f}x | <= {GOAL}x | {'yes' if met else 'NO'} | {note} |"
        )
    print(f"\nall goals met: {'yes' if met_all else 'NO'}")
    results["all_goals_met"] = met_all
    if args.json:
        tmp = f"{args.json}.tmp"
        with open(tmp, "w") as f:
            json.dump(results, f, indent=2, default=float)
        os.replace(tmp, args.json)
    return results


if __name__ == "__main__":
    main()
