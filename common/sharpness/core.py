"""What every sharpness measurement shares: the model's state, parameter selection, data.

Each measurement takes ``model``, ``loss_fn(model, batch) -> mean loss over the batch`` and
``data`` (a re-iterable of batches: a DataLoader or a list). The full-data loss is the
size-weighted mean of the batch losses, so the full-data Hessian is the size-weighted mean
of the batch Hessians. Every measurement runs inside :func:`measuring`, which also routes
attention through differentiable ops (:func:`differentiable_attention`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from common.attention import differentiable_attention
from common.batches import batch_size as _batch_size
from common.batches import to_device

LossFn = Callable[[nn.Module, Any], Tensor]
#: None or "all": every trainable parameter; "reference": weights of Conv and Linear
#: layers only (the original code's selection); a list of parameter names; or a predicate.
ParamSpec = str | Sequence[str] | Callable[[str, nn.Parameter], bool] | None

_REFERENCE_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)


def select_params(model: nn.Module, params: ParamSpec = None) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) pairs chosen by ``params`` (see :data:`ParamSpec`)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if params is None or params == "all":
        chosen = named
    elif params == "reference":
        weights = {id(m.weight) for m in model.modules() if isinstance(m, _REFERENCE_LAYERS)}
        chosen = [(n, p) for n, p in named if id(p) in weights]
    elif isinstance(params, str):
        raise ValueError(
            f"params must be None, 'all', 'reference', a list of names or a predicate, "
            f"got {params!r}"
        )
    elif callable(params):
        chosen = [(n, p) for n, p in named if params(n, p)]
    else:
        wanted = list(params)
        by_name = dict(named)
        unknown = [n for n in wanted if n not in by_name]
        if unknown:
            raise ValueError(
                f"unknown parameter names {unknown[:5]}; the model has {list(by_name)[:8]}..."
            )
        chosen = [(n, by_name[n]) for n in wanted]
    if not chosen:
        raise ValueError(f"params={params!r} selects no trainable parameter of the model")
    return chosen


def describe_params(params: ParamSpec) -> str:
    """How a selection is recorded in results."""
    if params is None or isinstance(params, str):
        return params or "all"
    if callable(params):
        return getattr(params, "__name__", "predicate")
    return ",".join(params)


@contextlib.contextmanager
def measuring(model: nn.Module) -> Iterator[None]:
    """Eval mode and :func:`differentiable_attention` for the duration; afterwards (also
    after an error) every module's mode, every parameter's storage, ``requires_grad`` and
    ``.grad``, the attention backends and the fast-path switch are as they were.

    Measurements that move the weights must do so by pointing ``p.data`` at new tensors,
    never by writing into the original storage: then restoring is exact.
    """
    modes = [(m, m.training) for m in model.modules()]
    params = list(model.parameters())
    saved = [(p, p.data, p.grad, p.requires_grad) for p in params]
    for p in params:
        p.grad = None
    model.eval()
    try:
        with differentiable_attention():
            yield
    finally:
        for p, data, grad, requires_grad in saved:
            p.data = data
            p.grad = grad
            p.requires_grad_(requires_grad)
        for m, training in modes:
            m.training = training


def model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def weighted_batches(
    data: Iterable[Any],
    device: torch.device,
    batch_size: Callable[[Any], int] | None = None,
) -> list[tuple[Any, int]]:
    """The batches of ``data`` on ``device`` with their sizes (read from the batch, or
    from ``batch_size(batch)``), checked to be non-empty."""
    size = _batch_size if batch_size is None else batch_size
    out = [(to_device(b, device), int(size(b))) for b in data]
    if not out or sum(n for _, n in out) == 0:
        raise ValueError("data is empty: pass a DataLoader or a list with at least one batch")
    return out


def selected_batches(
    model: nn.Module,
    data: Iterable[Any],
    params: ParamSpec,
    batch_size: Callable[[Any], int] | None = None,
) -> tuple[list[tuple[str, nn.Parameter]], list[tuple[Any, int]]]:
    """What every measurement starts from: the parameters ``params`` selects
    (:func:`select_params`) and ``data``'s batches on the model's device with their sizes
    (:func:`weighted_batches`)."""
    return select_params(model, params), weighted_batches(data, model_device(model), batch_size)


def progress_off(progress: bool | None) -> bool | None:
    """tqdm's ``disable`` for a ``progress`` option: None shows a bar only on a terminal."""
    return None if progress is None else not progress


def full_loss(
    model: nn.Module, loss_fn: LossFn, batches: Sequence[tuple[Any, int]], *, check: bool = True
) -> float:
    """Size-weighted mean loss over ``batches`` (no graph). With ``check``, a non-finite
    loss raises; without, it is returned (a perturbed loss of inf is a measurement)."""
    total = sum(n for _, n in batches)
    with torch.no_grad():
        value = sum(float(loss_fn(model, b)) * n for b, n in batches) / total
    if check and not math.isfinite(value):
        raise FloatingPointError(f"the loss is {value}: cannot measure sharpness at this point")
    return value


@dataclass
class Record:
    """What a result was computed on; every result carries one as ``.record``."""

    measure: str
    n_examples: int
    n_batches: int
    params: str
    n_params: int
    seed: int
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def record_for(
    measure: str,
    batches: Sequence[tuple[Any, int]],
    chosen: Sequence[tuple[str, nn.Parameter]],
    params: ParamSpec,
    seed: int,
    **options: Any,
) -> Record:
    return Record(
        measure=measure,
        n_examples=sum(n for _, n in batches),
        n_batches=len(batches),
        params=describe_params(params),
        n_params=sum(p.numel() for _, p in chosen),
        seed=seed,
        options=options,
    )
