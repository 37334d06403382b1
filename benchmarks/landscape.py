"""ESD and 2-D loss landscape: ``common.sharpness`` against the reference code's way, on CPU.

Run from the repository root::

    .venv/bin/python -m benchmarks.landscape [--quick] [--json PATH] [--threads N]

Everything runs side by side in one process, interleaved (alternating which goes first),
median of the rounds:

1. ESD (stochastic Lanczos quadrature): ``hessian_esd(n_iter=n, n_runs=1)`` against
   PyHessian's ``density(iter=n, n_v=1)``, on the small CNN (eval mode) and one batch of
   the random data of ``benchmarks/hessian.py``. Ours includes smoothing the density on its
   default 10,000-point grid; PyHessian returns only nodes and weights. PyHessian calls
   ``torch.eig``, which torch removed in 2.0: it gets an equivalent for the symmetric
   tridiagonal matrix (``torch.linalg.eigh``) for the duration of the call. Both spectra's
   top Ritz values are compared with a converged top eigenvalue (Lanczos, tol 1e-10). The
   issue sets no goal beyond "a line": the goal here is parity, ours <= 1.0x.
2. 2-D landscape, 21x21 grid over [-1, 1]^2, filter-normalised directions with biases and
   BatchNorm ignored: ``loss_landscape`` against the way Li et al.'s code
   (tomgoldstein/loss-landscape, ``plot_surface.crunch`` and ``evaluation.eval_loss``) does
   it: for each grid point, point each parameter at ``W + (a·d1 + b·d2)``, evaluate the
   loss over the whole data by iterating a DataLoader (a CIFAR-10-style Dataset of uint8
   images: ``PIL.Image.fromarray``, ``ToTensor``, ``Normalize``; batch 128, no workers),
   then write the whole grid to its HDF5 file and flush. The reference uses our directions
   (read from our file), so both grids must agree (relative difference <= 1e-6). Our
   ``loss_landscape`` reads the DataLoader once and keeps its batches on the device.
   Goal: ours <= 0.2x the reference's time. The original also counts the accuracy in the
   same pass; neither does here (no ``metric_fn``). Then where the time goes: one
   DataLoader pass, one model pass over the batches on the device, setting the weights
   (each sampled between the grid runs), and our own work (the same grid with a loss that
   does not run the model). The floor no loop with the same kernels can beat is one model
   pass per point: ratio >= model / (data + model + setting the weights).
3. Several grid points per forward: one grid row with ``torch.func.functional_call`` and
   ``torch.vmap`` over a stack of K weight sets (BatchNorm in eval mode, buffers shared),
   against the loop of one forward per point that ``loss_landscape`` runs, at the same
   values; and the same loop with the batches in channels_last memory format (a choice of
   the caller's: ``loss_landscape`` keeps the batches as it is given them).

On this CPU the landscape goal is out of reach, and the floor row shows why: the model
pass is about three quarters of a reference point, the data pipeline (which ours skips)
the rest, so the bound is about 0.75x. Several points per forward do the same FLOPs through
grouped convolutions and batched pooling and BatchNorm, 2-3x slower per point here; vmap
only gains on a model whose point costs well under a millisecond (the tiny MLP), where the
whole grid takes a fraction of a second anyway. On a GPU the model pass of this CNN
shrinks to a fraction of a millisecond while the reference's per-point pipeline stays on
the CPU (PIL, ToTensor, Normalize, and a host-to-device copy per batch), so the same bound
falls far below 0.2x, and vmap may pay where a small model's forward is launch-bound
(not measured here: no GPU).

One intra-op thread by default (``--threads``): see ``benchmarks/optim_step.py``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pyhessian import hessian as PyHessian
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from benchmarks import cli
from benchmarks.hessian import batches, ce, small_cnn
from common.sharpness import hessian_eigenvalues, hessian_esd, loss_landscape
from common.sharpness.landscape import LandscapeResult

SEED = 0
GOAL_ESD = 1.0  # ours / PyHessian: the issue asks for a line only; parity
GOAL_LANDSCAPE = 0.2  # ours / reference: ">= 5x faster on a 21x21 grid"
SAME_VALUES = 1e-6  # max relative difference of the two grids
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def interleaved(
    fns: dict[str, Callable[[], Any]], rounds: int, warmup: bool = False
) -> tuple[dict, dict]:
    """Median seconds of each function over ``rounds``, the order rotating every round
    (after one untimed call of each with ``warmup``); and each one's last output."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    out: dict[str, Any] = {}
    names = list(fns)
    for name in names if warmup else []:
        fns[name]()
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            seconds, out[name] = timed(fns[name])
            times[name].append(seconds)
    return {name: statistics.median(t) for name, t in times.items()}, out


# ---------------------------------------------------------------------------------------
# ESD
# ---------------------------------------------------------------------------------------
def _eig_for_pyhessian(t: Tensor, eigenvectors: bool = False) -> tuple[Tensor, Tensor]:
    """What the removed ``torch.eig`` returned for PyHessian's symmetric tridiagonal T:
    eigenvalues as (n, 2) real and imaginary parts, and the eigenvectors as columns."""
    values, vectors = torch.linalg.eigh(t)
    return torch.stack([values, torch.zeros_like(values)], 1), vectors


@contextlib.contextmanager
def torch_eig_for_pyhessian() -> Iterator[None]:
    saved = torch.eig
    torch.eig = _eig_for_pyhessian
    try:
        yield
    finally:
        torch.eig = saved


def measure_esd(n_iter: int, size: int, rounds: int) -> dict[str, Any]:
    model = small_cnn()
    one = batches(1, size)
    criterion = nn.CrossEntropyLoss()

    def ours() -> list[float]:
        return hessian_esd(model, ce, one, n_iter=n_iter, n_runs=1).nodes[0]

    def theirs() -> list[float]:
        torch.manual_seed(SEED)  # PyHessian draws its Rademacher vector from torch's RNG
        h = PyHessian(model, criterion, data=one[0], cuda=False)
        try:
            with torch_eig_for_pyhessian():
                nodes, _ = h.density(iter=n_iter, n_v=1)
        finally:
            model.zero_grad(set_to_none=True)  # PyHessian leaves graph-carrying .grads
        return [float(v) for v in nodes[0]]

    seconds, out = interleaved({"ours": ours, "pyhessian": theirs}, rounds, warmup=True)
    exact = hessian_eigenvalues(model, ce, one, tol=1e-10, max_iter=200).eigenvalues[0]
    return {
        "n_iter": n_iter,
        "batch_size": size,
        "rounds": rounds,
        "ours_s": seconds["ours"],
        "pyhessian_s": seconds["pyhessian"],
        "ratio": seconds["ours"] / seconds["pyhessian"],
        "top_eigenvalue": exact,
        "top_ritz": {k: max(v) for k, v in out.items()},
        "bottom_ritz": {k: min(v) for k, v in out.items()},
        "error_ours": abs(max(out["ours"]) - exact) / abs(exact),
        "error_pyhessian": abs(max(out["pyhessian"]) - exact) / abs(exact),
    }


# ---------------------------------------------------------------------------------------
# Landscape: the data, the reference
# ---------------------------------------------------------------------------------------
class CifarLike(Dataset):
    """``torchvision.datasets.CIFAR10`` without the download: HWC uint8 images in memory,
    each one made a PIL image and transformed when it is fetched."""

    def __init__(self, n: int, seed: int = SEED) -> None:
        rng = np.random.default_rng(seed)
        self.data = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        self.targets = rng.integers(0, 10, n).tolist()
        self.transform = transforms.Compose(
            [transforms.ToTensor(), transforms.Normalize(CIFAR_MEAN, CIFAR_STD)]
        )

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        img = Image.fromarray(self.data[index])
        return self.transform(img), self.targets[index]


def set_weights(
    params: Sequence[nn.Parameter],
    weights: Sequence[Tensor],
    directions: Sequence[Sequence[Tensor]],
    step: tuple[float, float],
) -> None:
    """``net_plotter.set_weights``: each parameter pointed at W + (a·d1 + b·d2)."""
    dx, dy = directions
    changes = [d0 * step[0] + d1 * step[1] for d0, d1 in zip(dx, dy, strict=True)]
    for p, w, d in zip(params, weights, changes, strict=True):
        p.data = w + d


def eval_loss(model: nn.Module, loader: DataLoader) -> float:
    """``evaluation.eval_loss`` (the loss part): mean cross-entropy over the loader."""
    criterion = nn.CrossEntropyLoss()
    total_loss, total = 0.0, 0
    model.eval()
    with torch.no_grad():
        for inputs, targets in loader:
            batch_size = inputs.size(0)
            total += batch_size
            total_loss += criterion(model(inputs), targets).item() * batch_size
    return total_loss / total


def reference_landscape(
    model: nn.Module,
    loader: DataLoader,
    directions: Sequence[Sequence[Tensor]],
    xs: np.ndarray,
    ys: np.ndarray,
    path: str,
) -> np.ndarray:
    """``plot_surface.crunch``: every point set, evaluated over the loader, the grid written."""
    params = list(model.parameters())
    weights = [p.data for p in params]  # never written into: restored below
    losses = -np.ones((len(xs), len(ys)))
    try:
        with h5py.File(path, "w") as f:
            f["train_loss"] = losses
            for i, a in enumerate(xs):
                for j, b in enumerate(ys):
                    set_weights(params, weights, directions, (float(a), float(b)))
                    losses[i, j] = eval_loss(model, loader)
                    f["train_loss"][:] = losses
                    f.flush()
    finally:
        for p, w in zip(params, weights, strict=True):
            p.data = w
    return losses


def our_directions(model: nn.Module, batch: Any, folder: str) -> list[list[Tensor]]:
    """d1 and d2 (in ``model.parameters()`` order) as ``loss_landscape`` draws them, read
    from the file of a 2x2 grid on ``batch`` (the directions depend on the seed only)."""
    path = os.path.join(folder, "directions.h5")
    loss_landscape(model, ce, [batch], path=path, steps=2, dims=2, progress=False)
    named = list(model.named_parameters())
    with h5py.File(path, "r") as f:
        directions = [
            [torch.from_numpy(f[f"{g}/{n}"][...]).reshape(p.shape) for n, p in named]
            for g in ("d1", "d2")
        ]
    os.remove(path)
    return directions


# ---------------------------------------------------------------------------------------
# Several grid points per forward
# ---------------------------------------------------------------------------------------
def row_loop(
    model: nn.Module,
    data: Sequence[tuple[Tensor, Tensor]],
    directions: Sequence[Sequence[Tensor]],
    xs: Sequence[float],
    b: float,
) -> list[float]:
    """One forward per point, as ``loss_landscape`` runs (W + a·d1 + b·d2, then the batches)."""
    params = list(model.parameters())
    weights = [p.data for p in params]
    n = sum(len(y) for _, y in data)
    out = []
    try:
        with torch.no_grad():
            for a in xs:
                for p, w, u, v in zip(params, weights, *directions, strict=True):
                    p.data = w + a * u + b * v
                out.append(sum(float(ce(model, batch)) * len(batch[1]) for batch in data) / n)
    finally:
        for p, w in zip(params, weights, strict=True):
            p.data = w
    return out


def row_vmap(
    model: nn.Module,
    data: Sequence[tuple[Tensor, Tensor]],
    directions: Sequence[Sequence[Tensor]],
    xs: Sequence[float],
    b: float,
    k: int,
) -> list[float]:
    """``k`` points per forward: ``functional_call`` vmapped over a stack of k weight sets
    (the same W + a·d1 + b·d2, bit for bit), the buffers (BatchNorm's statistics) shared."""
    names = [name for name, _ in model.named_parameters()]
    weights = [p.detach() for p in model.parameters()]
    buffers = dict(model.named_buffers())

    def loss_at(params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(model, (params, buffers), (x,)), y)

    batched = torch.vmap(loss_at, in_dims=(0, None, None))
    n = sum(len(y) for _, y in data)
    out: list[float] = []
    with torch.no_grad():
        for start in range(0, len(xs), k):
            a = torch.tensor(list(xs[start : start + k]))
            stacked = {
                name: w + a.to(w.dtype).view(-1, *[1] * w.ndim) * u + b * v
                for name, w, u, v in zip(names, weights, *directions, strict=True)
            }
            total = sum(batched(stacked, x, y) * len(y) for x, y in data)
            out += (total / n).tolist()
    return out


def measure_points_per_forward(
    model: nn.Module,
    data: Sequence[tuple[Tensor, Tensor]],
    directions: Sequence[Sequence[Tensor]],
    xs: np.ndarray,
    b: float,
    ks: Sequence[int],
    rounds: int,
) -> dict[str, Any]:
    """Per-point time of one grid row: the loop, vmap with each k, and for images the loop
    on channels_last batches."""
    row = [float(a) for a in xs]
    fns: dict[str, Callable[[], list[float]]] = {
        "loop": lambda: row_loop(model, data, directions, row, b)
    }
    for k in ks:
        fns[f"vmap, {k} per forward"] = lambda k=k: row_vmap(model, data, directions, row, b, k)
    if data[0][0].ndim == 4:
        cl = [(x.contiguous(memory_format=torch.channels_last), y) for x, y in data]
        fns["loop, channels_last batches"] = lambda: row_loop(model, cl, directions, row, b)
    seconds, out = interleaved(fns, rounds, warmup=True)
    base = np.asarray(out["loop"])
    return {
        name: {
            "per_point_s": s / len(row),
            "vs_loop": s / seconds["loop"],
            "max_rel_diff": float(np.max(np.abs(np.asarray(out[name]) - base) / np.abs(base))),
        }
        for name, s in seconds.items()
    }


def zero_loss(model: nn.Module, batch: Any) -> Tensor:
    """A loss that does not run the model: what is left of ``loss_landscape`` is its own
    work (moving the weights, the file, the row hashes)."""
    return torch.zeros(())


def tiny_mlp() -> nn.Module:
    """Where per-call overhead dominates: 20 -> 64 -> 64 -> 10."""
    torch.manual_seed(SEED)
    return nn.Sequential(
        nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)
    ).eval()  # fmt: skip


def mlp_batches(n: int, size: int) -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(SEED + 2)
    return [
        (torch.randn(size, 20, generator=g), torch.randint(0, 10, (size,), generator=g))
        for _ in range(n)
    ]


# ---------------------------------------------------------------------------------------
# Landscape: the measurement
# ---------------------------------------------------------------------------------------
def measure_landscape(
    steps: int,
    n_images: int,
    rounds: int,
    pass_rounds: int,
    row_rounds: int,
    ks: Sequence[int],
    folder: str,
) -> dict[str, Any]:
    model = small_cnn()
    loader = DataLoader(CifarLike(n_images), batch_size=128, shuffle=False, num_workers=0)
    directions = our_directions(model, batches(1, 2)[0], folder)
    xs = np.linspace(-1.0, 1.0, steps)  # loss_landscape's coordinates: checked below
    runs = iter(range(10**6))

    def ours() -> LandscapeResult:
        path = os.path.join(folder, f"ours{next(runs)}.h5")  # a new file: no resume
        try:
            return loss_landscape(model, ce, loader, path=path, steps=steps, progress=False)
        finally:
            os.remove(path)

    def theirs() -> np.ndarray:
        path = os.path.join(folder, "reference.h5")
        try:
            return reference_landscape(model, loader, directions, xs, xs, path)
        finally:
            os.remove(path)

    # where the time goes, per grid point: single passes, sampled before, between and after
    # the grid runs (so that both see the same load on the machine)
    data = [(x, y) for x, y in loader]
    params = list(model.parameters())
    weights = [p.data for p in params]

    def one_pass_data() -> None:
        for _ in loader:
            pass

    def one_pass_model() -> float:
        with torch.no_grad():
            return sum(float(ce(model, batch)) * len(batch[1]) for batch in data) / n_images

    def set_point() -> None:
        try:
            set_weights(params, weights, directions, (0.5, -0.5))
        finally:
            for p, w in zip(params, weights, strict=True):
                p.data = w

    parts = {"data_pass": one_pass_data, "model_pass": one_pass_model, "set_weights": set_point}
    samples: dict[str, list[float]] = {name: [] for name in parts}

    def sample_parts() -> None:
        for name, fn in parts.items():
            samples[name].append(timed(fn)[0])

    def ours_without_model() -> None:
        """Our own work: the same grid with a loss that does not run the model."""
        path = os.path.join(folder, "machinery.h5")
        try:
            loss_landscape(model, zero_loss, data, path=path, steps=steps, progress=False)
        finally:
            os.remove(path)

    for fn in parts.values():
        fn()  # warm-up
    sample_parts()
    grids = {"ours": ours, "reference": theirs}
    times: dict[str, list[float]] = {name: [] for name in grids}
    machinery: list[float] = []
    out: dict[str, Any] = {}
    for r in range(rounds):
        for name in list(grids)[:: 1 if r % 2 == 0 else -1]:
            seconds, out[name] = timed(grids[name])
            times[name].append(seconds)
            machinery.append(timed(ours_without_model)[0])
            for _ in range(pass_rounds):
                sample_parts()
    if not (np.array_equal(out["ours"].x, xs) and np.array_equal(out["ours"].y, xs)):
        raise AssertionError("the reference's grid coordinates are not loss_landscape's")
    grid, ref = out["ours"].loss, out["reference"]
    diff = float(np.max(np.abs(grid - ref) / np.abs(ref)))
    part = {name: statistics.median(t) for name, t in samples.items()}
    ours_s, ref_s = statistics.median(times["ours"]), statistics.median(times["reference"])
    parts_sum = sum(part.values())  # the reference's point, but for its file write

    mlp = tiny_mlp()
    mlp_data = mlp_batches(4, 128)
    mlp_directions = our_directions(mlp, mlp_data[0], folder)
    points = steps * steps
    b = float(xs[steps // 4])
    return {
        "steps": steps,
        "n_images": n_images,
        "batch_size": 128,
        "rounds": rounds,
        "ours_s": ours_s,
        "reference_s": ref_s,
        "ratio": ours_s / ref_s,
        "max_rel_diff": diff,
        "per_point_s": {
            "ours": ours_s / points,
            "reference": ref_s / points,
            **part,
            "ours_without_model": statistics.median(machinery) / points,
        },
        # shares of a reference point (data pass + model pass + setting the weights)
        "reference_share": {name: t / parts_sum for name, t in part.items()},
        # one model pass per point and nothing else, against the reference's parts
        "floor_ratio": part["model_pass"] / parts_sum,
        "points_per_forward": measure_points_per_forward(
            model, data, directions, xs, b, ks, row_rounds
        ),
        "points_per_forward_tiny_mlp": measure_points_per_forward(
            mlp, mlp_data, mlp_directions, xs, b, ks, row_rounds
        ),
    }


# ---------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------
def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def report(results: dict[str, Any]) -> bool:
    """Prints the tables; returns whether every goal is met."""
    esd, land = results["esd"], results["landscape"]
    esd["met"] = esd["ratio"] <= GOAL_ESD
    land["same_values"] = land["max_rel_diff"] <= SAME_VALUES
    land["met"] = land["ratio"] <= GOAL_LANDSCAPE and land["same_values"]
    share, pp = land["reference_share"], land["per_point_s"]
    steps, points = land["steps"], land["steps"] ** 2
    rows = [
        [
            f"ESD (SLQ), {esd['n_iter']} iterations, 1 batch of {esd['batch_size']}",
            _ms(esd["ours_s"]),
            _ms(esd["pyhessian_s"]),
            f"{esd['ratio']:.2f}x",
            f"<= {GOAL_ESD}x (parity)",
            "yes" if esd["met"] else "NO",
            f"top Ritz value rel. error {esd['error_ours']:.1e} vs {esd['error_pyhessian']:.1e}",
        ],
        [
            f"landscape {steps}x{steps}, {land['n_images']} images, batch 128",
            _ms(land["ours_s"]),
            _ms(land["reference_s"]),
            f"{land['ratio']:.2f}x",
            f"<= {GOAL_LANDSCAPE}x",
            "yes" if land["met"] else "NO",
            f"grids differ by {land['max_rel_diff']:.1e} (rel.); a reference point is "
            f"{share['data_pass']:.0%} data loading, {share['model_pass']:.0%} model",
        ],
        [
            "landscape floor: a model pass per point",
            _ms(pp["model_pass"] * points),
            _ms((pp["data_pass"] + pp["model_pass"] + pp["set_weights"]) * points),
            f"{land['floor_ratio']:.2f}x",
            f"<= {GOAL_LANDSCAPE}x",
            "yes" if land["floor_ratio"] <= GOAL_LANDSCAPE else "NO",
            "the best any loop can do with these kernels; reference: data + model + set",
        ],
    ]
    header = ["measure", "ours", "reference", "ratio", "goal", "met", "note"]
    print()
    print(cli.format_table(header, rows))
    print(
        f"\nper grid point: reference {pp['reference'] * 1e3:.1f} ms (DataLoader pass "
        f"{pp['data_pass'] * 1e3:.1f} ms, model pass {pp['model_pass'] * 1e3:.1f} ms, setting "
        f"the weights {pp['set_weights'] * 1e3:.2f} ms, the rest its file); ours "
        f"{pp['ours'] * 1e3:.1f} ms, of which {pp['ours_without_model'] * 1e3:.2f} ms its own "
        "work (weights, file, hashes: the grid with a loss that does not run the model)"
    )
    rows = [
        [
            model,
            name,
            f"{r['per_point_s'] * 1e3:.2f} ms",
            f"{r['vs_loop']:.2f}x",
            "-" if name == "loop" else f"{r['max_rel_diff']:.1e}",
        ]
        for model, key in (
            ("small CNN, 1 batch of 128", "points_per_forward"),
            ("tiny MLP, 4 batches of 128", "points_per_forward_tiny_mlp"),
        )
        for name, r in land[key].items()
    ]
    print(f"\none grid row ({steps} points), per point:")
    header = ["model", "evaluation", "per point", "vs loop", "max rel. diff"]
    print(cli.format_table(header, rows))
    return bool(esd["met"] and land["met"])


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = cli.parse(cli.parser(__doc__), argv)
    # PyHessian calls loss.backward(create_graph=True); torch warns about the cycle it makes
    warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
    if args.quick:
        n_iter, esd_size, esd_rounds = 10, 16, 1
        steps, n_images, rounds, pass_rounds, row_rounds, ks = 5, 128, 1, 1, 1, (5,)
    else:
        n_iter, esd_size, esd_rounds = 50, 64, 3
        steps, n_images, rounds, pass_rounds, row_rounds, ks = 21, 128, 3, 2, 3, (3, 7, 21)
    start = time.perf_counter()
    results: dict[str, Any] = {
        "config": {
            "quick": args.quick,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        }
    }
    print(f"ESD: {n_iter} Lanczos iterations, one batch of {esd_size} ...", flush=True)
    results["esd"] = measure_esd(n_iter, esd_size, esd_rounds)
    print(f"landscape: {steps}x{steps} grid, {n_images} images ...", flush=True)
    folder = tempfile.mkdtemp(prefix="bench_landscape_")
    try:
        results["landscape"] = measure_landscape(
            steps, n_images, rounds, pass_rounds, row_rounds, ks, folder
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    results["all_goals_met"] = report(results)
    return cli.finish(results, args.json, start)


if __name__ == "__main__":
    main()
