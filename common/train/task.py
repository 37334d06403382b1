"""What a domain plugs into the one trainer: data, model, and how a batch is read."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from torch import Tensor, nn
from torch.utils.data import Dataset


class Splits(Protocol):
    """Train, validation and test sets of one data set (the domains' split classes)."""

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    meta: dict[str, Any]


def first_is_input(model: nn.Module, batch: Any) -> Tensor:
    """``model(x)`` for ``(x, y)`` batches (images, signals)."""
    return model(batch[0])


def last_is_target(batch: Any) -> Tensor:
    """``y`` of ``(x, y)`` batches."""
    return batch[-1]


def accuracy(logits: Tensor, targets: Tensor) -> dict[str, float]:
    """Top-1 accuracy in percent."""
    return {"accuracy": 100.0 * float((logits.argmax(-1) == targets).float().mean())}


@dataclass(frozen=True)
class Task:
    """A domain's plug-in to :mod:`common.train`.

    Attributes:
        domain: run-directory prefix and name in messages (``image``, ``graph``, ...).
        config_cls: the domain's :class:`~common.train.config.Config` (sub)class.
        default_config: the YAML file used when ``--config`` is not given.
        build_data: ``cfg -> Splits``; raises a ``UserError`` when data is missing.
        build_model: ``(cfg, splits) -> nn.Module`` (on CPU, freshly initialised).
        forward: ``(model, batch) -> logits``.
        targets: ``batch -> targets``.
        collate: the DataLoader's ``collate_fn`` (PyG's Collater for graphs).
        metrics: ``(logits, targets) -> {name: value}`` over a whole split.
        metric: the key of ``metrics`` that picks the best checkpoint (higher is better).
    """

    domain: str
    config_cls: type
    default_config: Path
    build_data: Callable[[Any], Splits]
    build_model: Callable[[Any, Splits], nn.Module]
    forward: Callable[[nn.Module, Any], Tensor] = first_is_input
    targets: Callable[[Any], Tensor] = last_is_target
    collate: Callable[[Any], Callable[[list[Any]], Any] | None] = lambda dataset: None
    metrics: Callable[[Tensor, Tensor], Mapping[str, float]] = accuracy
    metric: str = "accuracy"

    def loss_fn(self, label_smoothing: float = 0.0) -> Callable[[nn.Module, Any], Tensor]:
        """``loss(model, batch) -> mean cross-entropy``: what optimizers and measurements use."""

        def loss(model: nn.Module, batch: Any) -> Tensor:
            return nn.functional.cross_entropy(
                self.forward(model, batch), self.targets(batch), label_smoothing=label_smoothing
            )

        return loss


def run_dir_for(task: Task, cfg: Any) -> Path:
    """``cfg.run_dir`` or ``runs/<domain>/<dataset>/<model>/<optimizer>/seed<k>`` (plus
    ``/fold<f>`` where the data has cross-validation folds)."""
    if cfg.run_dir:
        return Path(cfg.run_dir)
    path = (
        Path("runs")
        / task.domain
        / cfg.data.name
        / cfg.model.name
        / cfg.optimizer.name
        / f"seed{cfg.seed}"
    )
    # cross-validated domains: one run per fold
    return path / f"fold{cfg.data.fold}" if hasattr(cfg.data, "n_folds") else path
