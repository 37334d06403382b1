"""Adaptive sharpness and PAC-Bayes flatness: what each costs on a small CNN, as a multiple
of one full forward+backward pass over the same data.

Run from the repository root::

    .venv/bin/python -m benchmarks.flatness [--quick] [--json PATH] [--threads N]

The model is the Hessian benchmark's small CNN (BatchNorm, eval mode) on batches of random
CIFAR-sized images. Each measure runs at its config defaults (worst case: 20 ascent steps,
1 restart; average case: 20 draws; PAC-Bayes: 10 draws per σ, bracket [1e-4, 10], tol
0.01) and is timed against the passes it makes:

- worst case: steps + 1 forward+backward passes and one forward (L(w));
- average case: n + 1 forward passes;
- PAC-Bayes: one forward, then ``evaluations`` × n forward passes (the trace says how
  many σ were tried).

Goal: each measure's time within 1.25x of its passes' time (the perturbations, draws and
bookkeeping cost at most a quarter on top of the model). Medians of a few rounds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from benchmarks import cli
from benchmarks.hessian import batches, ce, small_cnn, timed
from common.sharpness import average_sharpness, pac_bayes_sigma, worst_case_sharpness

GOAL = 1.25


def median_time(fn: Callable[[], Any], rounds: int) -> tuple[float, Any]:
    """Median seconds of ``rounds`` calls, and the last call's result."""
    runs = [timed(fn) for _ in range(rounds)]
    return statistics.median(seconds for seconds, _ in runs), runs[-1][1]


def pass_times(model: nn.Module, data: list, rounds: int) -> tuple[float, float]:
    """Seconds of one forward+backward pass over ``data`` and of one forward pass."""
    model.eval()

    def both() -> None:
        for batch in data:
            ce(model, batch).backward()
        model.zero_grad(set_to_none=True)

    def forward() -> None:
        with torch.no_grad():
            for batch in data:
                ce(model, batch)

    both()  # warm-up
    return median_time(both, rounds)[0], median_time(forward, rounds)[0]


def cases(model: nn.Module, data: list) -> dict[str, tuple[str, Callable[[], Any]]]:
    """Name -> (setting, the call)."""
    quiet = {"progress": False}
    return {
        "worst-case, linf adaptive": (
            "rho 0.002, 20 steps",
            lambda: worst_case_sharpness(model, ce, data, rho=0.002, norm="linf", **quiet),
        ),
        "worst-case, l2 adaptive": (
            "rho 0.1, 20 steps",
            lambda: worst_case_sharpness(model, ce, data, rho=0.1, norm="l2", **quiet),
        ),
        "average-case, adaptive": (
            "rho 0.1, 20 draws",
            lambda: average_sharpness(model, ce, data, rho=0.1, **quiet),
        ),
        "PAC-Bayes, plain": (
            "d 0.1, 10 draws per σ",
            lambda: pac_bayes_sigma(model, ce, data, **quiet),
        ),
        "PAC-Bayes, magnitude-aware": (
            "d 0.1, 10 draws per σ, ε 1e-3",
            lambda: pac_bayes_sigma(model, ce, data, magnitude_aware=True, **quiet),
        ),
    }  # fmt: skip


def model_passes(name: str, out: Any, forward: float) -> float:
    """The passes a measure makes, in units of one forward+backward pass (``forward``: a
    forward pass's share of it)."""
    if name.startswith("worst"):
        steps = out.record.options["steps"] * out.record.options["restarts"]
        return steps + out.record.options["restarts"] + forward
    if name.startswith("average"):
        return (out.record.options["n_samples"] + 1) * forward
    return (1 + len(out.trace) * out.record.options["n_samples"]) * forward


def main(argv: list[str] | None = None) -> dict[str, Any]:
    start = time.perf_counter()
    args = cli.parse(cli.parser(__doc__), argv)
    n_batches, size, rounds = (2, 32, 1) if args.quick else (4, 64, 3)
    model, data = small_cnn(), batches(n_batches, size)
    one_pass, forward = pass_times(model, data, 5 * rounds)
    results: dict[str, Any] = {
        "config": {
            "batches": n_batches, "batch_size": size, "rounds": rounds,
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "params": sum(p.numel() for p in model.parameters()),
        },
        "one_pass_s": one_pass, "forward_s": forward, "measures": {},
    }  # fmt: skip
    rows = []
    for name, (setting, call) in cases(model, data).items():
        print(f"{name} ...", flush=True)
        seconds, out = median_time(call, rounds)
        passes = model_passes(name, out, forward / one_pass)
        row = {"seconds": seconds, "passes": seconds / one_pass, "model_passes": passes}
        row["vs_model"] = row["passes"] / passes
        results["measures"][name] = row
        rows.append([name, setting, f"{seconds:.2f} s", f"{row['passes']:.1f}x",
                     f"{passes:.1f}x", f"{row['vs_model']:.2f}x"])  # fmt: skip
    header = ["measure", "setting", "time", "x one fwd+bwd", "its passes", "vs passes"]
    print(f"\none forward+backward pass: {one_pass * 1e3:.1f} ms ({n_batches} x {size} images, "
          f"{results['config']['params']} parameters); a forward: "
          f"{forward / one_pass:.2f} of it\n")  # fmt: skip
    print(cli.format_table(header, rows))
    results["all_goals_met"] = all(r["vs_model"] <= GOAL for r in results["measures"].values())
    return cli.finish(results, args.json, start)


if __name__ == "__main__":
    main()
