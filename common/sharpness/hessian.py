"""Hessian trace (Hutchinson, Hutch++), top eigenvalues (Lanczos), spectral density (SLQ)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from common.checks import OptionError, check_int
from common.rng import generator
from common.sharpness.core import (
    LossFn,
    ParamSpec,
    Record,
    measuring,
    model_device,
    progress_off,
    record_for,
    select_params,
)
from common.sharpness.curvature import check_operator, operator_options
from common.sharpness.curvature import make_operator as _operator
from common.sharpness.hvp import HessianOperator

METHODS = ("hutchinson", "hutch++", "stratified")
SAMPLINGS = ("full", "batch")
STARTS = ("gradient", "random")


def _rademacher(m: int, dim: int, gen: torch.Generator, device: torch.device) -> Tensor:
    return (torch.randint(0, 2, (m, dim), generator=gen, dtype=torch.float64) * 2 - 1).to(device)


# ---------------------------------------------------------------------------------------
# trace
# ---------------------------------------------------------------------------------------
@dataclass
class TraceResult:
    """tr(H) of the full-data loss: ``total`` ± ``stderr``, split by parameter."""

    total: float
    stderr: float
    per_layer: dict[str, float]
    n_probes: int
    n_examples: int
    method: str
    record: Record
    samples: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "stderr": self.stderr,
            "per_layer": self.per_layer,
            "n_probes": self.n_probes,
            "n_examples": self.n_examples,
            "method": self.method,
            "record": self.record.to_dict(),
        }


def check_trace_options(
    *,
    method: str = "hutchinson",
    sampling: str = "full",
    n_probes: int = 100,
    tol: float | None = None,
    target_stderr: float | None = None,
    sketch_size: int | None = None,
    model: nn.Module | None = None,
    params: ParamSpec = None,
) -> None:
    """The checks of :func:`hessian_trace`'s options, the one place they live
    (:class:`OptionError`); without ``model`` those that need none, so that a command runs
    them before it loads one, and with it the stratified budget too."""
    if method not in METHODS:
        raise OptionError(f"method={method} is not a trace estimator: use one of {METHODS}")
    if sampling not in SAMPLINGS:
        raise OptionError(f"sampling={sampling} is not a sampling: use one of {SAMPLINGS}")
    if sampling == "batch" and method != "hutchinson":
        raise OptionError("sampling=batch is a way of method=hutchinson: drop one of them")
    check_int("n_probes", n_probes, 3 if method == "hutch++" else 1)
    for name, value in (("tol", tol), ("target_stderr", target_stderr)):
        if value is not None and not (isinstance(value, int | float) and value > 0):
            raise OptionError(f"{name} must be a positive number or None, got {value!r}")
    if sketch_size is not None:
        if method != "hutch++":
            raise OptionError(f"sketch_size={sketch_size} is an option of method=hutch++: drop it")
        check_int("sketch_size", sketch_size, 1)
        if 2 * sketch_size >= n_probes:
            raise OptionError(
                f"sketch_size={sketch_size} leaves no probes for the residual of "
                f"n_probes={n_probes}: use at most {(n_probes - 1) // 2}"
            )
    if method == "stratified" and model is not None:
        pilot = pilot_probes(select_params(model, params))
        if n_probes < pilot:
            raise OptionError(
                f"method=stratified needs 2 probes per layer first: n_probes={n_probes} "
                f"is below the {pilot} of the layers selected: raise it, or select fewer "
                f"parameters"
            )


def hessian_trace(
    model: nn.Module,
    loss_fn: LossFn,
    data: Iterable[Any],
    *,
    n_probes: int = 100,
    method: str = "hutchinson",
    params: ParamSpec = None,
    seed: int = 0,
    tol: float | None = None,
    target_stderr: float | None = None,
    sketch_size: int | None = None,
    sampling: str = "full",
    chunk_size: int | None = None,
    batch_size: Callable[[Any], int] | None = None,
    keep_graphs: bool | None = None,
    progress: bool | None = None,
    operator: str = "hessian",
) -> TraceResult:
    """Estimates tr(H) of the full-data loss with at most ``n_probes`` Hessian-vector products.

    Args:
        model, loss_fn, data: the loss is the size-weighted mean of
            ``loss_fn(model, batch)`` over ``data``; the model runs in eval mode.
        n_probes: Hessian-vector products to spend (Hutchinson: Rademacher probes).
        method: "hutchinson" (mean of vᵀHv), "hutch++" (Meyer et al. 2021: a third of
            the budget sketches the top eigenspace, whose trace is taken exactly, the rest
            estimates the remainder; far lower variance when a few directions dominate) or
            "stratified": tr(H) = Σ tr(H_ll) over the layers l (see :func:`layer_of`:
            a numbered block of a container, else a module), each diagonal block by
            Hutchinson with probes supported on l alone. Such a probe costs a full product,
            but its variance leaves out every block coupling two layers, which dominates
            Hutchinson's at random weights. Two probes per layer first (one for a layer of
            one coordinate, exact), then each probe goes where it cuts the variance most
            (Neyman allocation). A block's variance, and so ``stderr``, is the larger of
            the exact Rademacher formula 2(‖H_ll‖²_F − Σ H_ii²) estimated from the
            products and the sample variance. Needs ``n_probes`` >= that pilot. On a
            block of a few coordinates and low rank (a tiny softmax head) every probe can
            miss its large values (2 of 400 runs on a 4-coordinate head): give such
            models more probes, or use "hutchinson". ``samples`` are the blocks' values
            grouped by block (their mean is not the total).
        params: which parameters (see :func:`select_params`); per_layer has one entry each.
        seed: seed of the probe vectors.
        tol: stop early once stderr <= tol·|total| (checked after each chunk, never before
            10 random probes). The sign of the estimate never stops it.
        target_stderr: stop early once stderr <= this (the same checks): time to a given
            accuracy, ``n_probes`` being the budget.
        sketch_size: Hutch++ only: the sketch's vectors s (2s products: H·S, then H·Q);
            default n_probes // 3, Meyer et al.'s split. With a target, a small sketch of
            the few dominant directions and early stopping on the rest costs least.
        sampling: Hutchinson over several batches: "full" (each probe through every batch:
            vᵀHv of the full-data H, as the reference code does) or "batch" (each probe
            through one batch, round robin, the estimate the size-weighted mean of the
            batches' means and its standard error the stratified one: a probe costs 1/B
            as much, its variance is that of one batch's Hessian; it pays where the
            batches' Hessians are alike, and the trace is the same quantity).
        chunk_size: probes pushed through one gradient graph at once (memory ~ chunk ×
            parameters); default: all of them, capped at about 1 GiB of probe vectors
            (with ``tol`` or ``target_stderr``, 10 at a time, or 1 on a CPU with the
            graphs kept, the stop being checked between chunks).
        batch_size: callable overriding how a batch's size is read.
        keep_graphs: keep every batch's gradient graph between chunks (default: only when
            ``data`` is one batch).
        progress: tqdm bar (None: only on a terminal).
        operator: the matrix whose trace it is: "hessian", "ggn" (the generalised
            Gauss-Newton matrix; ``loss_fn`` an :class:`OutputLoss`) or "fisher" (the
            empirical Fisher); see :mod:`common.sharpness.curvature`.
    """
    check_operator(operator, loss_fn)
    check_trace_options(
        method=method, sampling=sampling, n_probes=n_probes, tol=tol,
        target_stderr=target_stderr, sketch_size=sketch_size, model=model, params=params,
    )  # fmt: skip
    stop = _Stop(tol, target_stderr)
    with measuring(model):
        op, chosen = _operator(model, loss_fn, data, params, batch_size, keep_graphs, operator)
        # with a stop, small chunks: it is checked between them. One probe at a time where
        # that costs nothing extra (a CPU loops over the probes anyway, and kept graphs are
        # not rebuilt per chunk), so that it stops at the first probe that reaches it
        looped = model_device(model).type == "cpu" and op.keep_graphs
        default = (1 if looped else 10) if stop.active else n_probes
        chunk = chunk_size or max(1, min(default, 2**30 // (8 * 3 * op.dim)))
        check_int("chunk_size", chunk, 1)
        gen = generator(seed, "hessian_trace")
        device = model_device(model)
        if method == "hutchinson" and sampling == "batch" and len(op.batches) > 1:
            total, stderr, layers, samples = _hutchinson_per_batch(
                op, n_probes, gen, device, stop, progress
            )
        elif method == "hutchinson":
            total, stderr, layers, samples = _hutchinson(
                op, n_probes, chunk, gen, device, stop, progress
            )
        elif method == "stratified":
            total, stderr, layers, samples = _stratified(
                op, [name for name, _ in chosen], n_probes, chunk, gen, device, stop, progress
            )
        else:
            s_size = n_probes // 3 if sketch_size is None else sketch_size
            total, stderr, layers, samples = _hutchpp(
                op, n_probes, s_size, chunk, gen, device, stop, progress
            )
    per_layer = {name: float(v) for (name, _), v in zip(chosen, layers, strict=True)}
    record = record_for(
        "hessian_trace",
        op.batches,
        chosen,
        params,
        seed,
        method=method,
        n_probes=n_probes,
        tol=tol,
        target_stderr=target_stderr,
        sketch_size=sketch_size,
        sampling=sampling,
        **operator_options(operator, op),
    )
    return TraceResult(
        total=total,
        stderr=stderr,
        per_layer=per_layer,
        n_probes=op.products // len(op.batches),
        n_examples=op.n_examples,
        method=method,
        record=record,
        samples=samples,
    )


def _per_layer(op: HessianOperator, v: Tensor, hv: Tensor) -> Tensor:
    """Σ over each parameter's coordinates of v⊙Hv, summed over the rows of the block."""
    return _per_layer_rows(op, v, hv).sum(0)


def _per_layer_rows(op: HessianOperator, v: Tensor, hv: Tensor) -> Tensor:
    """(rows, parameters): Σ over each parameter's coordinates of v⊙Hv, row by row."""
    prod = v * hv
    return torch.stack([prod[:, s].sum(1) for s in op.layer_slices()], dim=1)


def _mean_stderr(samples: list[float]) -> tuple[float, float]:
    n = len(samples)
    mean = sum(samples) / n if n else 0.0
    stderr = math.sqrt(sum((s - mean) ** 2 for s in samples) / (n - 1) / n) if n > 1 else math.nan
    return mean, stderr


@dataclass(frozen=True)
class _Stop:
    """When a trace estimate may stop: its standard error below ``tol``·|estimate| or
    below ``target``, with at least ``MIN_SAMPLES`` random probes behind it (fewer give
    a standard error too noisy to stop on)."""

    tol: float | None
    target: float | None
    MIN_SAMPLES = 10

    @property
    def active(self) -> bool:
        return self.tol is not None or self.target is not None

    def __call__(self, estimate: float, stderr: float, n: int) -> bool:
        if not self.active or n < self.MIN_SAMPLES or math.isnan(stderr):
            return False
        if self.target is not None and stderr <= self.target:
            return True
        return self.tol is not None and stderr <= self.tol * abs(estimate)


def _hutchinson(op, n_probes, chunk, gen, device, stop, progress):
    samples: list[float] = []
    layers = torch.zeros(len(op.params), dtype=torch.float64, device=device)
    bar = tqdm(total=n_probes, desc="hessian trace", disable=progress_off(progress), leave=False)
    while len(samples) < n_probes:
        m = min(chunk, n_probes - len(samples))
        v = _rademacher(m, op.dim, gen, device)
        hv = op.matmat(v)
        samples.extend((v * hv).sum(1).tolist())
        layers += _per_layer(op, v, hv)
        bar.update(m)
        if stop(*_mean_stderr(samples), len(samples)):
            break
    bar.close()
    return *_mean_stderr(samples), (layers / len(samples)).tolist(), samples


def _hutchinson_per_batch(op, n_probes, gen, device, stop, progress):
    """Stratified Hutchinson: probe i through batch i mod B only; whole rounds (every batch
    as many probes), so the per-probe samples B·w_b·vᵀH_b v average to the estimate."""
    n_batches = len(op.batches)
    weights = [n / op.n_examples for _, n in op.batches]
    per_batch: list[list[float]] = [[] for _ in op.batches]
    layers = [torch.zeros(len(op.params), dtype=torch.float64, device=device) for _ in op.batches]
    rounds = max(2, n_probes // n_batches)  # a stratum needs 2 samples for its variance
    bar = tqdm(
        total=rounds * n_batches, desc="hessian trace", disable=progress_off(progress), leave=False
    )

    def estimate() -> tuple[float, float]:
        means = [sum(x) / len(x) for x in per_batch]
        var = sum(
            w**2 * sum((s - m) ** 2 for s in x) / (len(x) - 1) / len(x)
            for w, m, x in zip(weights, means, per_batch, strict=True)
        )
        return sum(w * m for w, m in zip(weights, means, strict=True)), math.sqrt(var)

    for _ in range(rounds):
        for b in range(n_batches):
            v = _rademacher(1, op.dim, gen, device)
            hv = op.batch_matmat(v, b)
            per_batch[b].append(float((v * hv).sum()))
            layers[b] += _per_layer(op, v, hv)
            bar.update(1)
        if len(per_batch[0]) >= 2 and stop(*estimate(), len(per_batch[0]) * n_batches):
            break
    bar.close()
    total, stderr = estimate()
    m = len(per_batch[0])
    per_layer = sum(w * layer / m for w, layer in zip(weights, layers, strict=True))
    samples = [  # in probe order: batch 0, 1, ..., B - 1, 0, 1, ...
        n_batches * weights[b] * per_batch[b][i] for i in range(m) for b in range(n_batches)
    ]
    return total, stderr, per_layer.tolist(), samples


def layer_of(name: str) -> str:
    """The layer ``method="stratified"`` puts a parameter in: the numbered entry of a
    container it lies in (a ``Sequential``'s module, a ResNet's or a BERT's block:
    ``layer1.0``, ``encoder.layer.3``), else the module owning it (a weight and its bias
    together). Fewer, coarser layers make a cheaper pilot; the blocks' internal couplings
    stay in their variance."""
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    return name.rpartition(".")[0]


def _strata(names: list[str]) -> list[list[int]]:
    """Indices of the selected parameters grouped by :func:`layer_of`, in order of first
    appearance."""
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        groups.setdefault(layer_of(name), []).append(i)
    return list(groups.values())


def pilot_probes(chosen: list[tuple[str, nn.Parameter]]) -> int:
    """The probes ``method="stratified"`` spends before it allocates: 2 per layer, 1 for a
    layer of one coordinate (its block is a number, exact after one probe)."""
    sizes = [sum(chosen[i][1].numel() for i in group) for group in _strata([n for n, _ in chosen])]
    return sum(1 if size == 1 else 2 for size in sizes)


class _Stratum:
    """Hutchinson on one diagonal block A of H with probes z supported on it (the
    coordinates ``parts`` of the flat vectors). The variance of zᵀAz is
    2(‖A‖²_F − Σ A_ii²) for Rademacher z; ‖Az‖² is an unbiased estimate of ‖A‖²_F, and
    Σ_i u_i u'_i of Σ A_ii² for u = z⊙Az, u' the same for an independent z'. On a block of
    high rank these sums over its coordinates are far steadier than the sample variance of
    a few zᵀAz; on a block of low rank they are as noisy as it, so the variance used is the
    larger of the two."""

    def __init__(self, parts: list[slice], device: torch.device) -> None:
        self.parts = parts
        self.size = sum(part.stop - part.start for part in parts)
        self.values: list[float] = []
        self.frobenius = 0.0  # Σ ‖Az‖²
        self.u_sum = torch.zeros(self.size, dtype=torch.float64, device=device)
        self.u_squares = 0.0  # Σ ‖u‖²

    @property
    def exact(self) -> bool:
        """One coordinate: zᵀAz = A_11 for either sign."""
        return self.size == 1 and bool(self.values)

    def gather(self, flat: Tensor) -> Tensor:
        return torch.cat([flat[part] for part in self.parts])

    def add(self, z: Tensor, hz: Tensor) -> None:
        az, u = self.gather(hz), self.gather(z * hz)
        self.values.append(float(u.sum()))
        self.frobenius += float(az @ az)
        self.u_sum += u
        self.u_squares += float(u @ u)

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    @property
    def formula_variance(self) -> float:
        """2(‖A‖²_F − Σ A_ii²) estimated from the products (two probes on)."""
        n = len(self.values)
        diagonal = (float(self.u_sum @ self.u_sum) - self.u_squares) / (n * (n - 1))
        return 2 * (self.frobenius / n - diagonal)

    @property
    def variance(self) -> float:
        """Of one probe's zᵀAz: the larger of the formula's and the sample variance (from
        two probes on; 0 for an exact block)."""
        n = len(self.values)
        if self.exact or n < 2:
            return 0.0
        sample = sum((x - self.mean) ** 2 for x in self.values) / (n - 1)
        return max(0.0, self.formula_variance, sample)


RECHECKS = 8  # probes of a block that came out 0 before its zero is believed


def _stratified(op, names, n_probes, chunk, gen, device, stop, progress):
    """Hutchinson per layer block: a pilot of 2 probes each (1 for a one-coordinate
    block), then probes allocated greedily by Neyman's rule, ``chunk`` per product call."""
    slices = op.layer_slices()
    groups = _strata(names)
    strata = [_Stratum([slices[i] for i in group], device) for group in groups]
    layers = torch.zeros(len(slices), dtype=torch.float64, device=device)
    counts = torch.zeros(len(slices), dtype=torch.float64, device=device)
    bar = tqdm(total=n_probes, desc="hessian trace (stratified)", disable=progress_off(progress),
               leave=False)  # fmt: skip

    def probe(chosen: list[int]) -> None:
        v = torch.zeros(len(chosen), op.dim, dtype=torch.float64, device=device)
        for row, k in enumerate(chosen):
            for part in strata[k].parts:
                v[row, part] = _rademacher(1, part.stop - part.start, gen, device)[0]
        hv = op.matmat(v)
        per = _per_layer_rows(op, v, hv)  # (m, parameters): each row's share per parameter
        for row, k in enumerate(chosen):
            strata[k].add(v[row], hv[row])
            layers[groups[k]] += per[row, groups[k]]
            counts[groups[k]] += 1
        bar.update(len(chosen))

    def estimate() -> tuple[float, float]:
        total = sum(st.mean for st in strata)
        return total, math.sqrt(sum(st.variance / len(st.values) for st in strata))

    def allocate(m: int) -> list[int]:
        """The next m probes, one at a time where it cuts the variance most: one more probe
        of a block cuts it by var / (n (n + 1)). Blocks whose variance came out 0 but are
        not exact (a probe can fall into a block's null space) share the probes when no
        block has a positive one, so none is left at a wrong 0 for good."""
        planned = [len(st.values) for st in strata]
        chosen = []
        # a block whose every probe gave Az = 0 (to rounding) while others did not may
        # have had probes that fell into its null space (a softmax head's shift directions
        # with few coordinates): it is probed again first, up to RECHECKS times, before its
        # zero is believed
        scale = max(st.frobenius / len(st.values) for st in strata)
        for k, st in enumerate(strata):
            vanished = st.frobenius / len(st.values) <= 1e-24 * scale
            if vanished and not st.exact and len(st.values) < RECHECKS and len(chosen) < m:
                chosen.append(k)
                planned[k] += 1
        for _ in range(m - len(chosen)):
            gains = [st.variance / (k * (k + 1)) for st, k in zip(strata, planned, strict=True)]
            best = max(range(len(strata)), key=gains.__getitem__)
            if gains[best] == 0:
                open_ = [i for i, st in enumerate(strata) if not st.exact]
                if not open_:
                    break
                best = min(open_, key=planned.__getitem__)
            chosen.append(best)
            planned[best] += 1
        return chosen

    pilot = [k for rep in range(2) for k, st in enumerate(strata) if rep == 0 or st.size > 1]
    for start in range(0, len(pilot), chunk):
        probe(pilot[start : start + chunk])
    n = len(pilot)
    while n < n_probes and not stop(*estimate(), n):
        chosen = allocate(min(chunk, n_probes - n))
        if not chosen:  # every block exact
            break
        probe(chosen)
        n += len(chosen)
    bar.close()
    total, stderr = estimate()
    return total, stderr, (layers / counts).tolist(), [x for st in strata for x in st.values]


def _hutchpp(op, n_probes, s, chunk, gen, device, stop, progress):
    r = n_probes - 2 * s
    bar = tqdm(
        total=n_probes, desc="hessian trace (hutch++)", disable=progress_off(progress), leave=False
    )
    sketch = torch.cat([op.matmat(b) for b in _blocks(_rademacher(s, op.dim, gen, device), chunk)])
    bar.update(s)
    q = torch.linalg.qr(sketch.T).Q.T  # (s, P): orthonormal basis of the sketched range
    hq = torch.cat([op.matmat(b) for b in _blocks(q, chunk)])
    bar.update(s)
    det_layers = _per_layer(op, q, hq)  # tr(QᵀHQ) split by parameter: exact, no variance
    exact = float(det_layers.sum())
    samples: list[float] = []
    layers = torch.zeros_like(det_layers)
    while len(samples) < r:
        g = _rademacher(min(chunk, r - len(samples)), op.dim, gen, device)
        hg = op.matmat(g)
        rest = hg - (hg @ q.T) @ q  # (I − QQᵀ)Hg: Hutchinson on what the sketch missed
        samples.extend((g * rest).sum(1).tolist())
        layers += _per_layer(op, g, rest)
        bar.update(g.shape[0])
        mean, stderr = _mean_stderr(samples)
        if stop(exact + mean, stderr, len(samples)):
            break
    bar.close()
    mean, stderr = _mean_stderr(samples)
    per_layer = (det_layers + layers / len(samples)).tolist()
    return exact + mean, stderr, per_layer, [exact + x for x in samples]


def _blocks(rows: Tensor, chunk: int) -> list[Tensor]:
    return list(torch.split(rows, chunk)) if rows.shape[0] else []


# ---------------------------------------------------------------------------------------
# Lanczos: eigenvalues and spectral density
# ---------------------------------------------------------------------------------------
def lanczos(
    matvec: Callable[[Tensor], Tensor],
    v0: Tensor,
    n_iter: int,
    *,
    k: int | None = None,
    tol: float | None = None,
    progress: bool | None = None,
) -> tuple[Tensor, Tensor]:
    """Lanczos with full reorthogonalisation; returns the Ritz values (ascending) and the
    squared first components of their vectors (the quadrature weights, summing to 1).

    Stops early when the Krylov space is exhausted, or, with ``k`` and ``tol``, when each
    of the top-k Ritz values θ is within tol·|θ| of an eigenvalue by its residual bound:
    the residual of the Ritz pair is r = β·|last component of its vector|, and θ is within
    min(r, r²/gap) of an eigenvalue (Kahan; Parlett, *The Symmetric Eigenvalue Problem*,
    ch. 11), gap being the distance to the nearest other Ritz value (an estimate of the
    true gap, which it approaches as the iteration converges).
    """
    # the basis rows in one matrix, grown by doubling (restacking a list every step cost more
    # than the reorthogonalisation; a matrix of all n_iter rows up front could be gigabytes)
    basis = torch.empty(min(n_iter, 16), v0.numel(), dtype=v0.dtype, device=v0.device)
    basis[0] = v0 / torch.linalg.vector_norm(v0)
    alphas: list[float] = []
    betas: list[float] = []
    bar = tqdm(total=n_iter, desc="lanczos", disable=progress_off(progress), leave=False)
    for j in range(n_iter):
        w = matvec(basis[j])
        alpha = float(w @ basis[j])
        alphas.append(alpha)
        stacked = basis[: j + 1]
        w = w - stacked.T @ (stacked @ w)  # full reorthogonalisation, twice is enough
        w = w - stacked.T @ (stacked @ w)
        beta = float(torch.linalg.vector_norm(w))
        bar.update(1)
        if j + 1 == n_iter or beta <= 1e-10 * max(1.0, max(abs(a) for a in alphas)):
            break
        if (
            k is not None
            and tol is not None
            and j + 1 > k
            and _converged(alphas, betas, beta, k, tol)
        ):
            break
        betas.append(beta)
        if j + 1 == basis.shape[0]:
            grown = basis.new_empty(min(n_iter, 2 * basis.shape[0]), basis.shape[1])
            grown[: j + 1] = basis
            basis = grown
        basis[j + 1] = w / beta
    bar.close()
    theta, vecs = _tridiagonal_eigh(alphas, betas[: len(alphas) - 1])
    return theta, vecs[0] ** 2


def ritz_error_bounds(
    alphas: list[float], betas: list[float], beta: float
) -> tuple[Tensor, Tensor]:
    """The Ritz values (ascending) of the tridiagonal matrix of ``alphas`` and ``betas``,
    and a bound on each one's distance to an eigenvalue of the operator, given the next
    off-diagonal ``beta``: min(r, r²/gap) with r = beta·|last component of the Ritz vector|."""
    theta, vecs = _tridiagonal_eigh(alphas, betas)
    r = beta * vecs[-1].abs()
    if theta.numel() == 1:
        return theta, r
    others = (theta[:, None] - theta[None, :]).abs() + torch.diag(torch.full_like(theta, math.inf))
    gap = others.min(1).values
    return theta, torch.minimum(r, r**2 / gap.clamp_min(1e-300))


def _converged(alphas: list[float], betas: list[float], beta: float, k: int, tol: float) -> bool:
    theta, bound = ritz_error_bounds(alphas, betas, beta)
    top, err = theta[-k:], bound[-k:]
    return bool((err <= tol * top.abs().clamp_min(1e-12)).all())


def _tridiagonal_eigh(alphas: list[float], betas: list[float]) -> tuple[Tensor, Tensor]:
    t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if betas:
        off = torch.tensor(betas[: len(alphas) - 1], dtype=torch.float64)
        t += torch.diag(off, 1) + torch.diag(off, -1)
    return torch.linalg.eigh(t)


def _towards_gradient(random: Tensor, gradient: Tensor) -> Tensor:
    """random/‖random‖ + gradient/‖gradient‖; the random vector alone where the gradient is
    zero or not finite (at a stationary point it says nothing)."""
    v0 = random / torch.linalg.vector_norm(random)
    norm = float(torch.linalg.vector_norm(gradient))
    return v0 + gradient / norm if math.isfinite(norm) and norm > 0 else v0


@dataclass
class EigenResult:
    """The k largest (algebraic) eigenvalues of the full-data Hessian, descending."""

    eigenvalues: list[float]
    n_products: int
    record: Record

    def to_dict(self) -> dict[str, Any]:
        return {
            "eigenvalues": self.eigenvalues,
            "n_products": self.n_products,
            "record": self.record.to_dict(),
        }


def hessian_eigenvalues(
    model: nn.Module,
    loss_fn: LossFn,
    data: Iterable[Any],
    *,
    k: int = 1,
    seed: int = 0,
    tol: float = 1e-4,
    max_iter: int = 100,
    start: str = "gradient",
    params: ParamSpec = None,
    batch_size: Callable[[Any], int] | None = None,
    keep_graphs: bool | None = None,
    progress: bool | None = None,
    operator: str = "hessian",
) -> EigenResult:
    """Top-k eigenvalues of the Hessian of the whole selected parameter vector (Lanczos).

    The reference code (PyHessian as used by the original repositories) normalises each
    layer's block of the iterate separately, so its "top eigenvalue" is not an eigenvalue
    of H; this is the true one. Lanczos needs far fewer products than power iteration,
    and finds the largest *algebraic* eigenvalues (power iteration finds the largest in
    magnitude, which is a negative one when the spectrum's negative side dominates).

    Args:
        k: how many eigenvalues.
        seed: seed of the starting vector.
        tol: the relative error wanted: stop when each top-k Ritz value's residual bound
            (see :func:`lanczos`) is at most tol·|value|.
        max_iter: at most this many Hessian-vector products (Lanczos steps); each keeps
            one parameter-sized vector in memory.
        start: Lanczos's starting vector. "gradient": the unit gradient of the loss plus a
            unit Gaussian vector. A network's gradient lies mostly in the span of its
            Hessian's top eigenvectors (Gur-Ari, Roberts and Dyer 2018), so the iteration
            starts near them and stops after fewer products; the random half keeps every
            eigenvector's expected squared share of the start at least half a random
            start's, so none is missed (Lanczos cannot find an eigenvector orthogonal to
            its start). The gradient comes free with kept graphs (one batch); otherwise it
            costs a forward and backward pass per batch, less than a product, not counted
            in ``n_products``.
            "random": the Gaussian vector alone.
        operator: the matrix, as in :func:`hessian_trace`.
    """
    check_operator(operator, loss_fn)
    check_int("k", k, 1)
    check_int("max_iter", max_iter, k)
    if start not in STARTS:
        raise OptionError(f"start={start} is not a Lanczos start: use one of {STARTS}")
    with measuring(model):
        op, chosen = _operator(model, loss_fn, data, params, batch_size, keep_graphs, operator)
        if k > op.dim:
            raise OptionError(f"k={k} exceeds the {op.dim} parameters measured: lower it")
        gen = generator(seed, "hessian_eigenvalues")
        v0 = torch.randn(op.dim, generator=gen, dtype=torch.float64).to(model_device(model))
        if start == "gradient":
            v0 = _towards_gradient(v0, op.gradient())
        theta, _ = lanczos(op.matvec, v0, min(max_iter, op.dim), k=k, tol=tol, progress=progress)
    top = theta.flip(0)[:k].tolist()
    record = record_for(
        "hessian_eigenvalues", op.batches, chosen, params, seed, k=k, tol=tol, start=start,
        **operator_options(operator, op),
    )  # fmt: skip
    return EigenResult(eigenvalues=top, n_products=op.products // len(op.batches), record=record)


@dataclass
class DensityResult:
    """Smoothed eigenvalue density of H (stochastic Lanczos quadrature)."""

    grid: list[float]
    density: list[float]
    nodes: list[list[float]]  # per run: Ritz values
    weights: list[list[float]]  # per run: quadrature weights (sum to 1)
    record: Record

    def to_dict(self) -> dict[str, Any]:
        return {"nodes": self.nodes, "weights": self.weights, "record": self.record.to_dict()}


def hessian_esd(
    model: nn.Module,
    loss_fn: LossFn,
    data: Iterable[Any],
    *,
    n_iter: int = 100,
    n_runs: int = 1,
    seed: int = 0,
    n_grid: int = 10_000,
    sigma_squared: float = 1e-5,
    params: ParamSpec = None,
    batch_size: Callable[[Any], int] | None = None,
    keep_graphs: bool | None = None,
    progress: bool | None = None,
    operator: str = "hessian",
) -> DensityResult:
    """Eigenvalue spectral density by stochastic Lanczos quadrature (Ghorbani et al. 2019).

    Each of ``n_runs`` runs starts Lanczos from a Rademacher vector and runs ``n_iter``
    steps; the Ritz values θ with weights w (squared first eigenvector components) are a
    quadrature of the spectral measure. The density is Σ w·N(θ, s²) averaged over runs, with
    s² = ``sigma_squared``·max(1, λmax − λmin) as in PyHessian, on ``n_grid`` points
    spanning the nodes ±1%, normalised to integrate to 1 (trapezoid rule). Plot it on a
    log scale. ``operator``: the matrix, as in :func:`hessian_trace`.
    """
    check_operator(operator, loss_fn)
    check_int("n_iter", n_iter, 1)
    check_int("n_runs", n_runs, 1)
    with measuring(model):
        op, chosen = _operator(model, loss_fn, data, params, batch_size, keep_graphs, operator)
        gen = generator(seed, "hessian_esd")
        nodes, weights = [], []
        for _ in range(n_runs):
            v0 = _rademacher(1, op.dim, gen, model_device(model))[0]
            theta, w = lanczos(op.matvec, v0, min(n_iter, op.dim), progress=progress)
            nodes.append(theta.tolist())
            weights.append(w.tolist())
    grid, density = _smooth(nodes, weights, n_grid, sigma_squared)
    record = record_for(
        "hessian_esd",
        op.batches,
        chosen,
        params,
        seed,
        n_iter=n_iter,
        n_runs=n_runs,
        sigma_squared=sigma_squared,
        **operator_options(operator, op),
    )
    return DensityResult(grid.tolist(), density.tolist(), nodes, weights, record)


def _smooth(nodes, weights, n_grid: int, sigma_squared: float) -> tuple[Tensor, Tensor]:
    theta = torch.tensor([t for run in nodes for t in run], dtype=torch.float64)
    w = torch.tensor([x for run in weights for x in run], dtype=torch.float64) / len(nodes)
    lo, hi = float(theta.min()), float(theta.max())
    pad = 0.01 * max(hi - lo, abs(hi), abs(lo), 1e-12)
    grid = torch.linspace(lo - pad, hi + pad, n_grid, dtype=torch.float64)
    var = sigma_squared * max(1.0, hi - lo)
    kernel = torch.exp(-((grid[:, None] - theta[None, :]) ** 2) / (2 * var))
    density = kernel @ w / math.sqrt(2 * math.pi * var)
    density = density / torch.trapezoid(density, grid)
    return grid, density
