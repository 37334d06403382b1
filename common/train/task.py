"""What a domain plugs into the one trainer: data, model, the loss of a batch, metrics.

A domain hands :mod:`common.train` one :class:`Task`. The trainer, the evaluation, SSAM-F's
Fisher and every sharpness measurement compute a batch's loss through :meth:`Task.loss`
and nothing else; a split's metrics come from :attr:`Task.metrics` over all of its outputs
and targets; :attr:`Task.select` names the metric that picks ``best.pt`` and its
direction. The trainer knows nothing of labels, cross-entropy or argmax.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from torch import Tensor, nn

from common.metrics import ACCURACY, LOSS, Metric, accuracy
from common.splits import Splits  # re-exported: what build_data returns
from common.train.typed import ConfigError


class BatchLoss(NamedTuple):
    """The loss of a batch (a 0-dim tensor with its graph), its outputs and targets."""

    loss: Tensor
    outputs: Tensor
    targets: Tensor


def first_is_input(model: nn.Module, batch: Any) -> Tensor:
    """``model(x)`` for ``(x, y)`` batches (images, signals)."""
    return model(batch[0])


def last_is_target(batch: Any) -> Tensor:
    """``y`` of ``(x, y)`` batches."""
    return batch[-1]


def cross_entropy(
    outputs: Tensor, targets: Tensor, label_smoothing: float, weight: Tensor | None = None
) -> Tensor:
    """Mean cross-entropy of logits ``(B, C)`` against class ids ``(B,)``; with ``weight``
    ``(C,)`` the weighted mean, as :func:`torch.nn.functional.cross_entropy` takes it."""
    return nn.functional.cross_entropy(
        outputs, targets, weight=weight, label_smoothing=label_smoothing
    )


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``n / (k * n_c)`` for each class c with ``n_c`` of the ``n`` labels, ``k`` the number
    of classes present (scikit-learn's ``class_weight="balanced"``); 0 for a class absent
    from ``labels`` (it is never a target there). Float32 ``(num_classes,)``."""
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.asarray(labels, dtype=np.int64)
    if labels.size == 0 or labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must be class ids in [0, {num_classes}), got {labels[:5]}...")
    present = np.unique(labels)
    weights = np.zeros(num_classes, dtype=np.float32)
    weights[present] = compute_class_weight("balanced", classes=present, y=labels)
    return weights


def correct(outputs: Tensor, targets: Tensor) -> dict[str, Tensor]:
    """Per-batch sums for the running training accuracy: 100 x the number correct."""
    return {"accuracy": 100.0 * (outputs.argmax(-1) == targets).sum()}


def classification_metrics(outputs: Tensor, targets: Tensor) -> dict[str, float]:
    """Top-1 accuracy in percent over a whole split."""
    return {"accuracy": accuracy(outputs, targets)}


@dataclass(frozen=True)
class Folds:
    """A task with cross-validation folds: the dotted config keys of the fold and the count."""

    fold_key: str  # e.g. "data.fold"
    count_key: str  # e.g. "data.n_folds"

    def fold(self, cfg: Any) -> int:
        return int(_get(cfg, self.fold_key))

    def count(self, cfg: Any) -> int:
        return int(_get(cfg, self.count_key))


def _get(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


@dataclass(frozen=True)
class Task:
    """A domain's plug-in to :mod:`common.train`.

    Attributes:
        domain: run-directory prefix and name in messages (``image``, ``graph``, ...).
        config_cls: the domain's :class:`~common.train.config.Config` subclass.
        default_config: the YAML file used when ``--config`` is not given.
        build_data: ``cfg -> Splits``; raises a ``DataError`` when data is missing.
        build_model: ``(cfg, splits) -> nn.Module`` (on CPU, freshly initialised).
        forward: ``(model, batch) -> outputs``.
        targets: ``batch -> targets`` (class ids, or floats for regression).
        criterion: ``(outputs, targets, label_smoothing) -> mean loss`` (float outputs);
            with ``train.class_weights`` set it is also passed ``weight=`` (a ``(C,)``
            tensor), which a classification criterion applies as cross-entropy does.
        metrics: ``(outputs, targets) -> {name: value}`` over a whole split; ``loss`` is
            added by the evaluation.
        reported: the metrics in tables and summaries, in order, with their labels.
        select: the metric that picks ``best.pt`` (one of ``reported``, or ``LOSS``).
        running: ``(outputs, targets) -> {name: sum over the batch}``, shown during
            training as ``sum / examples`` (no host sync per batch); empty: loss only.
        collate: ``dataset -> collate_fn`` (PyG's Collater for graphs).
        folds: cross-validation folds, when the data has them.
        canonical_name: ``data.name`` as the domain spells it (``D_I-GITS`` -> ``digits``),
            applied before the run directory is named; raises for an unknown name.
        no_weight_decay: ``(name, parameter) -> bool``: parameters kept out of weight
            decay (their own param group with ``weight_decay=0``), e.g. biases and
            LayerNorm weights of transformers; None: every parameter decays.
        param_sets: ``{measurement: {name: selection}}``: what ``hessian.params=<name>``
            (or ``noise_stability.params``) selects for this domain, a predicate
            ``(name, parameter) -> bool`` or a list of names (the reference code's choice);
            names not given fall back to common.sharpness's (``reference``: Conv and Linear
            weights).
        variant: ``cfg -> Task`` for a domain whose loss or metrics depend on the data set
            (GLUE: CoLA reports MCC, STS-B is a regression); see :meth:`bind`.
        details: ``(outputs, targets) -> JSON-able dict`` over the test split, written to
            ``summary.json`` as ``test_details`` (not tabulated); one with a
            ``confusion_matrix`` and ``class_names`` (:func:`common.metrics.class_report`)
            is also drawn as ``confusion.png``. None: no details.
    """

    domain: str
    config_cls: type
    default_config: Path
    build_data: Callable[[Any], Splits]
    build_model: Callable[[Any, Splits], nn.Module]
    forward: Callable[[nn.Module, Any], Tensor] = first_is_input
    targets: Callable[[Any], Tensor] = last_is_target
    criterion: Callable[[Tensor, Tensor, float], Tensor] = cross_entropy
    metrics: Callable[[Tensor, Tensor], Mapping[str, float]] = classification_metrics
    reported: Sequence[Metric] = (ACCURACY,)
    select: Metric = ACCURACY
    running: Callable[[Tensor, Tensor], Mapping[str, Tensor]] = correct
    collate: Callable[[Any], Callable[[list[Any]], Any] | None] = lambda dataset: None
    folds: Folds | None = None
    canonical_name: Callable[[str], str] = str
    no_weight_decay: Callable[[str, nn.Parameter], bool] | None = None
    param_sets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    variant: Callable[[Any], Task] | None = None
    details: Callable[[Tensor, Tensor], Mapping[str, Any]] | None = None

    def __post_init__(self) -> None:
        names = [m.name for m in self.reported]
        if self.select != LOSS and self.select.name not in names:
            raise ValueError(f"select={self.select.name!r} is not among reported {names}")

    def config_path(self, config: str | Path | None) -> Path:
        """The YAML file ``--config`` names: a path, or the name of one of the domain's
        shipped configs (``--config digits``: ``<domain>_exps/configs/digits.yaml``, found
        in an installed wheel as in a checkout); None: ``default_config``."""
        if config is None:
            return self.default_config
        path = Path(config).expanduser()
        if path.is_file():
            return path
        shipped = self.default_config.parent
        named = shipped / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
        if path.parent == Path(".") and named.is_file():
            return named
        if path.exists():  # a device, FIFO or folder: reading it refuses it, saying why
            return path
        names = ", ".join(sorted(p.stem for p in shipped.glob("*.yaml")))
        raise ConfigError(
            f"--config {config}: no such file, nor a config of the {self.domain} domain by "
            f"that name; give a YAML file's path or one of: {names}"
        )

    def bind(self, cfg: Any) -> tuple[Task, Any]:
        """The task and config of one run, the one place both are settled: a copy of ``cfg``
        with ``data.name`` as the domain spells it, and this task or the variant its data
        set needs (GLUE's metrics per task). Binding a bound pair again changes nothing."""
        cfg = cfg.model_copy(deep=True)
        cfg.data.name = self.canonical_name(cfg.data.name)  # one run_dir per data set
        return (self if self.variant is None else self.variant(cfg)), cfg

    def loss(
        self,
        model: nn.Module,
        batch: Any,
        *,
        label_smoothing: float = 0.0,
        class_weight: Tensor | None = None,
    ) -> BatchLoss:
        """The loss of ``batch`` under ``model``: the one definition every caller uses."""
        outputs = self.forward(model, batch)
        targets = self.targets(batch)
        extra = {} if class_weight is None else {"weight": class_weight}
        return BatchLoss(
            self.criterion(outputs.float(), targets, label_smoothing, **extra), outputs, targets
        )

    def loss_fn(
        self, label_smoothing: float = 0.0, class_weight: Tensor | None = None
    ) -> Callable[[nn.Module, Any], Tensor]:
        """``loss(model, batch) -> mean loss``: the form optimizers and measurements take.

        Measurements use the plain loss (the one ``val_loss`` and ``test_loss`` report), so
        runs trained with other loss options compare; an optimizer's own passes (SSAM-F's
        Fisher) the training objective, ``label_smoothing`` and ``class_weight`` included.
        With class weights it is the weighted sum over the batch divided by the batch size,
        the training loss times a constant of the batch: on a batch of one example (the
        Fisher's), that example's weighted loss, which a weighted mean would cancel.
        """

        def loss(model: nn.Module, batch: Any) -> Tensor:
            out = self.loss(
                model, batch, label_smoothing=label_smoothing, class_weight=class_weight
            )
            if class_weight is None:
                return out.loss
            return out.loss * class_weight[out.targets].mean()

        return loss

    def split_metrics(self, outputs: Tensor, targets: Tensor, loss: float) -> dict[str, float]:
        """``loss`` and the task's metrics over a whole split."""
        return {"loss": loss, **self.metrics(outputs, targets)}


def regression_criterion(outputs: Tensor, targets: Tensor, label_smoothing: float) -> Tensor:
    """Mean squared error of one output per example against float targets."""
    if label_smoothing:
        raise ConfigError("train.label_smoothing applies to classification; set it to 0")
    return nn.functional.mse_loss(outputs.reshape(targets.shape), targets.float())


def no_running(outputs: Tensor, targets: Tensor) -> dict[str, Tensor]:
    """No running metric besides the loss (regression)."""
    del outputs, targets
    return {}


__all__ = [
    "BatchLoss",
    "Folds",
    "Splits",
    "Task",
    "balanced_class_weights",
    "classification_metrics",
    "correct",
    "cross_entropy",
    "first_is_input",
    "last_is_target",
    "no_running",
    "regression_criterion",
]
