"""Loss landscapes (Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets").

* :func:`random_direction`: a Gaussian direction with filter normalisation.
* :func:`loss_landscape`: the full-data loss on a 1-D or 2-D grid ``W + a·d1 + b·d2``, kept
  in an HDF5 file that a rerun with the same options resumes.
* :func:`interpolate`: the loss along the line between two checkpoints.

The grid files' layout and integrity: :mod:`common.sharpness.grid_store`.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from common.checks import check_int
from common.rng import generator as make_generator
from common.sharpness.core import (
    LossFn,
    ParamSpec,
    Record,
    describe_params,
    full_loss,
    measuring,
    model_device,
    progress_off,
    record_for,
    select_params,
    selected_batches,
    weighted_batches,
)
from common.sharpness.grid_store import Grid, GridFileError, open_grid, read_grid

__all__ = [
    "GridFileError",
    "InterpolationResult",
    "LandscapeResult",
    "interpolate",
    "loss_landscape",
    "random_direction",
    "read_grid",
]

#: ``metric_fn(model, batch) -> mean metric over the batch`` (e.g. accuracy).
MetricFn = Callable[[nn.Module, Any], Tensor | float]
StateSource = Mapping[str, Tensor] | str | os.PathLike | nn.Module


# ---------------------------------------------------------------------------------------------
# Directions


def random_direction(
    model: nn.Module,
    *,
    seed: int = 0,
    ignore_bias_bn: bool = True,
    params: ParamSpec = None,
) -> dict[str, Tensor]:
    """A random Gaussian direction, filter-normalised (Li et al. 2018).

    For every parameter with ``ndim >= 2`` each output filter (slice along dim 0) is scaled
    to the Frobenius norm of the same filter of the weight: ``d_i ← d_i·‖W_i‖/‖d_i‖``.
    Parameters with ``ndim <= 1`` (biases, BatchNorm weights and biases) get zeros if
    ``ignore_bias_bn`` (the paper's default), else ``d ← d·‖W‖/‖d‖``.

    Deterministic from ``core.generator(seed, "loss_landscape")`` on the CPU (the same
    direction on any device); the draws do not depend on ``ignore_bias_bn``. Only the
    parameters chosen by ``params`` (see :func:`select_params`) get a direction.
    """
    return _draw_directions(select_params(model, params), seed, ignore_bias_bn, 1)[0]


def _draw_directions(
    chosen: Sequence[tuple[str, nn.Parameter]], seed: int, ignore_bias_bn: bool, count: int
) -> list[dict[str, Tensor]]:
    """``count`` successive directions from one generator: the first is random_direction's."""
    generator = make_generator(int(seed), "loss_landscape")
    directions: list[dict[str, Tensor]] = []
    with torch.no_grad():
        for _ in range(count):
            direction = {}
            for name, p in chosen:
                dtype = torch.float64 if p.dtype == torch.float64 else torch.float32
                d = torch.randn(p.shape, generator=generator, dtype=dtype)
                direction[name] = _normalise(d.to(p.device), p.detach(), ignore_bias_bn)
            directions.append(direction)
    return directions


def _normalise(d: Tensor, weight: Tensor, ignore_bias_bn: bool) -> Tensor:
    w = weight.to(d.dtype)
    if weight.ndim <= 1:
        if ignore_bias_bn:
            return torch.zeros_like(weight)
        scale = _ratio(w.norm(), d.norm())
    else:
        w_norms = w.reshape(w.shape[0], -1).norm(dim=1)
        d_norms = d.reshape(d.shape[0], -1).norm(dim=1)
        scale = _ratio(w_norms, d_norms).reshape(-1, *[1] * (d.ndim - 1))
    return (d * scale).to(weight.dtype)


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    return torch.where(den > 0, num / den, torch.zeros_like(num))


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class LandscapeResult:
    """A loss landscape; ``loss[i, j]`` is the loss at ``W + x[i]·d1 + y[j]·d2``."""

    x: np.ndarray
    y: np.ndarray | None  # None in 1-D
    loss: np.ndarray
    metric: np.ndarray | None  # only with metric_fn
    done: np.ndarray  # bool: which points were computed
    base_loss: float  # the loss at W
    path: str
    record: Record

    @property
    def dims(self) -> int:
        return 1 if self.y is None else 2

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary (no arrays); non-finite numbers become None."""
        coords = [self.x] if self.y is None else [self.x, self.y]
        return {
            "measure": "loss_landscape",
            "path": self.path,
            "dims": self.dims,
            "steps": len(self.x),
            "span": [float(self.x[0]), float(self.x[-1])],
            "base_loss": _number(self.base_loss),
            **_extremes(self.loss, coords),
            "n_points": int(self.loss.size),
            "n_computed": int(self.done.sum()),
            "record": self.record.to_dict(),
        }


@dataclass
class InterpolationResult:
    """The loss at ``(1−t)·θ_start + t·θ_end`` for each ``t``."""

    t: np.ndarray
    loss: np.ndarray
    metric: np.ndarray | None
    path: str | None
    record: Record

    @property
    def start_loss(self) -> float | None:
        """The loss at t = 0 (start's weights), None if 0 is not on the grid."""
        return self._at(0.0)

    @property
    def end_loss(self) -> float | None:
        """The loss at t = 1 (end's weights), None if 1 is not on the grid."""
        return self._at(1.0)

    def _at(self, t: float) -> float | None:
        hits = np.flatnonzero(self.t == t)
        return float(self.loss[hits[0]]) if hits.size else None

    @property
    def barrier(self) -> float | None:
        """``max over t in [0, 1] of L(t) − ((1−t)·L(0) + t·L(1))``: how far the loss rises
        above the straight line between the end points (None if 0 or 1 is not on the grid)."""
        l0, l1 = self.start_loss, self.end_loss
        if l0 is None or l1 is None:
            return None
        inside = (self.t >= 0) & (self.t <= 1)
        t = self.t[inside]
        return float(np.max(self.loss[inside] - ((1 - t) * l0 + t * l1)))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary (no arrays); non-finite numbers become None."""
        return {
            "measure": "interpolation",
            "path": self.path,
            "steps": len(self.t),
            "span": [float(self.t[0]), float(self.t[-1])],
            "start_loss": _number(self.start_loss),
            "end_loss": _number(self.end_loss),
            "barrier": _number(self.barrier),
            **_extremes(self.loss, [self.t]),
            "record": self.record.to_dict(),
        }


def _number(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _extremes(loss: np.ndarray, coords: list[np.ndarray]) -> dict[str, Any]:
    finite = np.isfinite(loss)
    if not finite.any():
        return {"min_loss": None, "min_at": None, "max_loss": None, "n_nonfinite": 0}
    at = np.unravel_index(np.argmin(np.where(finite, loss, np.inf)), loss.shape)
    return {
        "min_loss": float(loss[at]),
        "min_at": [float(c[k]) for c, k in zip(coords, at, strict=True)],
        "max_loss": float(loss[finite].max()),
        "n_nonfinite": int((~np.isnan(loss) & ~finite).sum()),
    }


# ---------------------------------------------------------------------------------------------
# Loss landscape


def loss_landscape(
    model: nn.Module,
    loss_fn: LossFn,
    data: Iterable[Any],
    *,
    path: str | os.PathLike,
    steps: int = 21,
    span: tuple[float, float] = (-1.0, 1.0),
    dims: int = 2,
    seed: int = 0,
    ignore_bias_bn: bool = True,
    params: ParamSpec = None,
    metric_fn: MetricFn | None = None,
    progress: bool | None = None,
) -> LandscapeResult:
    """The full-data loss at ``W + a·d1 (+ b·d2)`` for a, b in ``linspace(*span, steps)``.

    ``d1`` is ``random_direction(model, seed=seed, ...)``; ``d2`` the next draw of the same
    generator. The grid lives in the HDF5 file ``path`` (layout in the module docstring),
    flushed after each row: a rerun with the same options (and the same model weights and
    number of examples) computes only the missing points, with the directions read from the
    file. A rerun with other options, or a file that is damaged, empty, foreign or of an
    older format, raises :class:`GridFileError` (a UserError: its message says the fix).
    Coordinates within 1e-12·(span width) of 0 are set to exactly 0, so that an odd
    ``steps`` over a symmetric span has ``W`` itself on the grid.

    Args:
        metric_fn: optional ``metric_fn(model, batch)`` (e.g. accuracy), averaged over the
            data like the loss and stored as ``metric``.
        progress: tqdm bar over the grid points (None: only on a terminal).

    The model's weights, gradients and modes are as before afterwards, also after an error
    (the points computed until then stay in the file).
    """
    steps = check_int("steps", steps, 2)
    if isinstance(dims, bool) or dims not in (1, 2):
        raise ValueError(f"dims must be 1 or 2, got {dims!r}")
    lo, hi = _check_span(span)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    chosen, batches = selected_batches(model, data, params)
    coords = _coords(lo, hi, steps)
    options = {
        "seed": int(seed),
        "span": [lo, hi],
        "steps": steps,
        "dims": dims,
        "ignore_bias_bn": bool(ignore_bias_bn),
        "params": describe_params(params),
        "n_examples": sum(n for _, n in batches),
        "metric": _metric_name(metric_fn),
        "model_sha256": _fingerprint(model.state_dict()),
    }
    groups = ["d1", "d2"][:dims]

    def contents() -> dict[str, np.ndarray]:
        out = {"xcoords": coords} | ({"ycoords": coords} if dims == 2 else {})
        drawn = _draw_directions(chosen, seed, ignore_bias_bn, dims)
        for group, direction in zip(groups, drawn, strict=True):
            out |= {f"{group}/{name}": _to_numpy(d) for name, d in direction.items()}
        return out

    path = os.fspath(path)
    with open_grid(path, "loss_landscape", options, contents, (steps,) * dims) as grid:
        x = grid.read("xcoords", (steps,), np.float64)
        y = grid.read("ycoords", (steps,), np.float64) if dims == 2 else None
        directions = [
            {n: _from_numpy(grid.read(f"{g}/{n}", _stored_shape(p)), p) for n, p in chosen}
            for g in groups
        ]
        with measuring(model), torch.no_grad():
            weights = {n: p.data for n, p in chosen}  # the original storages, never written

            def move_to(index: tuple[int, ...]) -> None:
                a = float(x[index[0]])
                b = None if y is None else float(y[index[1]])
                for n, p in chosen:
                    moved = weights[n] + a * directions[0][n]
                    p.data = moved if b is None else moved + b * directions[1][n]

            _fill(grid, move_to, model, loss_fn, metric_fn, batches, progress, "loss landscape")
            centre = tuple(int(i) for i in np.flatnonzero(coords == 0.0)[:1]) * dims
            base_loss = grid.attr("base_loss", float) if len(centre) < dims else None
            if len(centre) == dims:
                base_loss = float(grid.loss[centre])
            elif base_loss is None:
                for n, p in chosen:
                    p.data = weights[n]
                base_loss = _evaluate(model, loss_fn, None, batches)[0]
                grid.f.attrs["base_loss"] = base_loss
        result = LandscapeResult(
            x=x,
            y=y,
            loss=grid.loss.copy(),
            metric=None if grid.metric is None else grid.metric.copy(),
            done=grid.done.copy(),
            base_loss=base_loss,
            path=path,
            record=record_for(
                "loss_landscape",
                batches,
                chosen,
                params,
                int(seed),
                steps=steps,
                span=[lo, hi],
                dims=dims,
                ignore_bias_bn=bool(ignore_bias_bn),
                metric=options["metric"] or None,
                path=path,
            ),
        )
    return result


# ---------------------------------------------------------------------------------------------
# Interpolation between checkpoints


def interpolate(
    model: nn.Module,
    loss_fn: LossFn,
    data: Iterable[Any],
    *,
    start: StateSource,
    end: StateSource,
    path: str | os.PathLike | None = None,
    steps: int = 21,
    span: tuple[float, float] = (0.0, 1.0),
    metric_fn: MetricFn | None = None,
    progress: bool | None = None,
) -> InterpolationResult:
    """The full-data loss of ``model`` with the state ``(1−t)·θ_start + t·θ_end``, for t in
    ``linspace(*span, steps)`` (a span beyond [0, 1] extrapolates).

    ``start`` and ``end``: state dicts with the model's keys, models, or paths of ``.pt``
    files holding state dicts (``torch.load(weights_only=True)``). Floating-point parameters
    and buffers (BatchNorm running statistics too) are interpolated with ``torch.lerp``
    (exactly θ_start at t = 0 and θ_end at t = 1); integer buffers (``num_batches_tracked``)
    are start's. With ``path`` the points go to an HDF5 file that a rerun resumes as in
    :func:`loss_landscape` (and refuses in the same ways). The model's own parameters,
    buffers, gradients and modes are restored exactly afterwards, also after an error.
    """
    steps = check_int("steps", steps, 2)
    lo, hi = _check_span(span)
    entries = _state_entries(model)
    start_state = _load_state(start, "start", entries)
    end_state = _load_state(end, "end", entries)
    batches = weighted_batches(data, model_device(model))
    options = {
        "steps": steps,
        "span": [lo, hi],
        "n_examples": sum(n for _, n in batches),
        "metric": _metric_name(metric_fn),
        "start_sha256": _fingerprint(start_state),
        "end_sha256": _fingerprint(end_state),
    }
    info = {"start": _describe_source(start), "end": _describe_source(end)}
    t_grid = _coords(lo, hi, steps)
    file_path = None if path is None else os.fspath(path)
    with open_grid(
        file_path, "interpolation", options, lambda: {"t": t_grid}, (steps,), info
    ) as grid:
        t_values = grid.read("t", (steps,), np.float64)
        with measuring(model), torch.no_grad(), _restoring_buffers(entries):

            def move_to(index: tuple[int, ...]) -> None:
                t = float(t_values[index[0]])
                for key, (module, attr, tensor) in entries.items():
                    s, e = start_state[key], end_state[key]
                    new = torch.lerp(s, e, t) if tensor.is_floating_point() else s.clone()
                    if isinstance(tensor, nn.Parameter):
                        tensor.data = new
                    else:
                        setattr(module, attr, new)

            _fill(grid, move_to, model, loss_fn, metric_fn, batches, progress, "interpolation")
        result = InterpolationResult(
            t=t_values,
            loss=grid.loss.copy(),
            metric=None if grid.metric is None else grid.metric.copy(),
            path=file_path,
            record=record_for(
                "interpolation",
                batches,
                list(model.named_parameters()),
                None,
                0,
                steps=steps,
                span=[lo, hi],
                metric=options["metric"] or None,
                **info,
                path=file_path,
            ),
        )
    return result


def _state_entries(model: nn.Module) -> dict[str, tuple[nn.Module, str, Tensor]]:
    """State-dict key -> (owning module, attribute, the parameter or buffer itself)."""
    entries = {}
    for key, value in model.state_dict(keep_vars=True).items():
        if not isinstance(value, Tensor):
            continue  # extra state: left as it is
        prefix, _, attr = key.rpartition(".")
        module = model.get_submodule(prefix)
        if getattr(module, attr, None) is not value:
            raise ValueError(f"cannot interpolate {key!r}: it is not an attribute of its module")
        entries[key] = (module, attr, value)
    return entries


@contextlib.contextmanager
def _restoring_buffers(entries: Mapping[str, tuple[nn.Module, str, Tensor]]) -> Iterator[None]:
    buffers = [(m, a, t) for m, a, t in entries.values() if not isinstance(t, nn.Parameter)]
    try:
        yield
    finally:
        for module, attr, tensor in buffers:
            setattr(module, attr, tensor)


def _load_state(
    source: StateSource, which: str, entries: Mapping[str, tuple[nn.Module, str, Tensor]]
) -> dict[str, Tensor]:
    """``source`` as tensors with the model's keys, dtypes and devices (copies)."""
    if isinstance(source, nn.Module):
        state = source.state_dict()
    elif isinstance(source, str | os.PathLike):
        state = torch.load(source, map_location="cpu", weights_only=True)
    else:
        state = source
    if not isinstance(state, Mapping):
        raise ValueError(f"{which} must be a state dict, a model or a path to a saved state dict")
    state = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    missing = [k for k in entries if k not in state]
    unexpected = [k for k in state if k not in entries]
    if missing or unexpected:
        raise ValueError(
            f"{which} does not match the model's state dict: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    out = {}
    for key, (_, _, ref) in entries.items():
        if state[key].shape != ref.shape:
            raise ValueError(
                f"{which}[{key!r}] has shape {tuple(state[key].shape)}, "
                f"the model's has {tuple(ref.shape)}"
            )
        out[key] = state[key].detach().to(device=ref.device, dtype=ref.dtype, copy=True)
    return out


def _describe_source(source: StateSource) -> str:
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    return "model" if isinstance(source, nn.Module) else "state dict"


# ---------------------------------------------------------------------------------------------
# The grid file and its evaluation


def _check_span(span: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in span)
    except (TypeError, ValueError):
        raise ValueError(f"span must be a pair (start, end) of numbers, got {span!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
        raise ValueError(f"span must be (start, end) with finite start < end, got {span!r}")
    return lo, hi


def _coords(lo: float, hi: float, steps: int) -> np.ndarray:
    x = np.linspace(lo, hi, steps)
    x[np.abs(x) < 1e-12 * (hi - lo)] = 0.0
    return x


def _metric_name(metric_fn: MetricFn | None) -> str:
    if metric_fn is None:
        return ""
    return getattr(metric_fn, "__name__", type(metric_fn).__name__)


def _fingerprint(state: Mapping[str, Any]) -> str:
    """sha256 of the names, dtypes, shapes and bytes of the tensors of a state dict."""
    h = hashlib.sha256()
    for key in sorted(state):
        value = state[key]
        if not isinstance(value, Tensor):
            continue
        t = value.detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def _to_numpy(t: Tensor) -> np.ndarray:
    """bfloat16 and other types numpy lacks are stored as float32 (exact); a 0-d tensor as
    shape (1,), since HDF5 checksums need chunks and a scalar dataset has none."""
    t = t.detach().cpu()
    if t.dtype not in (torch.float16, torch.float32, torch.float64):
        t = t.float()
    return t.numpy().reshape(_stored_shape(t))


def _stored_shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape) or (1,)


def _from_numpy(a: np.ndarray, like: Tensor) -> Tensor:
    return torch.from_numpy(a).reshape(like.shape).to(device=like.device, dtype=like.dtype)


def _fill(
    grid: Grid,
    move_to: Callable[[tuple[int, ...]], None],
    model: nn.Module,
    loss_fn: LossFn,
    metric_fn: MetricFn | None,
    batches: Sequence[tuple[Any, int]],
    progress: bool | None,
    desc: str,
) -> None:
    """Evaluates the points not yet done, row by row, flushing the file after each row."""
    done = grid.done
    bar = tqdm(
        total=done.size,
        initial=int(done.sum()),
        desc=desc,
        disable=progress_off(progress),
        leave=False,
    )
    try:
        for i in range(done.shape[0]):
            row = [(i, j) for j in range(done.shape[1])] if done.ndim == 2 else [(i,)]
            todo = [index for index in row if not done[index]]
            for index in todo:
                move_to(index)
                loss, metric = _evaluate(model, loss_fn, metric_fn, batches)
                grid.store(index, loss, metric)
                bar.update()
            if todo:
                grid.flush()
    finally:
        bar.close()


def _evaluate(
    model: nn.Module,
    loss_fn: LossFn,
    metric_fn: MetricFn | None,
    batches: Sequence[tuple[Any, int]],
) -> tuple[float, float | None]:
    """Size-weighted mean loss and metric; a non-finite loss is a value on the grid."""
    loss = full_loss(model, loss_fn, batches, check=False)
    metric = None if metric_fn is None else full_loss(model, metric_fn, batches, check=False)
    return loss, metric
