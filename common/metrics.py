"""Metrics of a whole split, from all its outputs and targets, and how to read them.

Each function takes the model's outputs and the targets of *every* example of a split
(metrics such as F1, MCC or Pearson's r do not average over batches) and returns a plain
``float``. The maths is scikit-learn's and SciPy's, the references GLUE and the ECG
literature report with; this module only fixes shapes, units and degenerate cases:

- classification: ``outputs`` are logits ``(N, C)`` (the prediction is the argmax over
  the last dimension) or already predicted class ids ``(N,)`` of an integer dtype;
  ``targets`` are class ids ``(N,)``. Accuracy, F1 and sensitivity are in percent.
- regression: ``outputs`` are ``(N,)`` or ``(N, 1)``, ``targets`` ``(N,)`` or ``(N, 1)``.
- correlations (MCC, Pearson, Spearman) are the raw coefficient in [-1, 1], as the HF
  ``evaluate`` GLUE metric returns it and ``run_glue.py`` prints it (not ×100).
- empty input raises ``ValueError``; a correlation of a constant vector is ``nan``.

:class:`Metric` names one of them for tables and for picking the best checkpoint.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import stats
from sklearn import metrics as skm


@dataclass(frozen=True)
class Metric:
    """A reported metric: its key in a task's metrics dict, its column header, its direction.

    Attributes:
        name: key in a task's metrics dict (``accuracy``, ``f1``, ``mcc``, ``loss``, ...).
        label: column header (``acc. (%)``, ``F1 (%)``, ``MCC``, ...).
        higher_is_better: ``False`` for losses and errors.
    """

    name: str
    label: str
    higher_is_better: bool = True

    def better(self, new: float, old: float | None) -> bool:
        """Whether ``new`` strictly improves on ``old`` (``None``: nothing measured yet).

        ``nan`` is never better; any number is better than an ``old`` of ``nan``.
        """
        if math.isnan(new):
            return False
        if old is None or math.isnan(old):
            return True
        return new > old if self.higher_is_better else new < old


ACCURACY = Metric("accuracy", "acc. (%)")
F1 = Metric("f1", "F1 (%)")
MACRO_F1 = Metric("macro_f1", "macro-F1 (%)")
MCC = Metric("mcc", "MCC")
PEARSON = Metric("pearson", "Pearson")
SPEARMAN = Metric("spearman", "Spearman")
LOSS = Metric("loss", "loss", higher_is_better=False)


def _numpy(x: Any) -> np.ndarray:
    t = torch.as_tensor(x).detach().cpu()
    if t.is_floating_point():
        t = t.double()  # numpy has no bfloat16; float64 keeps sums exact enough
    return t.numpy()


def _classes(outputs: Any, targets: Any) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class ids, target class ids), both ``(N,)`` int64."""
    out, y = torch.as_tensor(outputs), _numpy(targets)
    if out.ndim == 2 and out.shape[1] > 0:
        pred = _numpy(out.argmax(-1))  # (N, C) logits -> (N,) class ids
    elif out.ndim == 1 and not out.is_floating_point():
        pred = _numpy(out)
    else:
        raise ValueError(
            f"classification outputs must be logits (N, C) or integer class ids (N,), "
            f"got shape {tuple(out.shape)} of {out.dtype}"
        )
    if y.ndim != 1 or len(y) != len(pred):
        raise ValueError(
            f"targets must be class ids (N,) with N = {len(pred)} outputs, got shape {y.shape}"
        )
    if len(y) == 0:
        raise ValueError("no examples: a metric of an empty split is undefined")
    if not np.issubdtype(y.dtype, np.integer) and not np.array_equal(y, np.round(y)):
        raise ValueError("classification targets must be integer class ids")
    return pred.astype(np.int64), y.astype(np.int64)


def _values(outputs: Any, targets: Any) -> tuple[np.ndarray, np.ndarray]:
    """(outputs, targets) of a regression, both ``(N,)`` float64."""
    out, y = _numpy(outputs), _numpy(targets)
    for name, a in (("outputs", out), ("targets", y)):
        if not (a.ndim == 1 or (a.ndim == 2 and a.shape[1] == 1)):
            raise ValueError(f"regression {name} must be (N,) or (N, 1), got shape {a.shape}")
    out, y = out.reshape(-1).astype(np.float64), y.reshape(-1).astype(np.float64)
    if len(out) != len(y):
        raise ValueError(f"{len(out)} outputs but {len(y)} targets")
    if len(y) == 0:
        raise ValueError("no examples: a metric of an empty split is undefined")
    return out, y


def accuracy(outputs: Any, targets: Any) -> float:
    """Top-1 accuracy in percent."""
    pred, y = _classes(outputs, targets)
    return 100.0 * float(skm.accuracy_score(y, pred))


def f1(outputs: Any, targets: Any) -> float:
    """Binary F1 of class 1 in percent (GLUE's MRPC and QQP); 0 when neither the targets
    nor the predictions hold a 1. Raises ``ValueError`` for more than two classes."""
    pred, y = _classes(outputs, targets)
    return 100.0 * float(skm.f1_score(y, pred, pos_label=1, average="binary", zero_division=0.0))


def macro_f1(outputs: Any, targets: Any) -> float:
    """Unweighted mean of the per-class F1 in percent, over the classes that occur in the
    targets or the predictions."""
    pred, y = _classes(outputs, targets)
    return 100.0 * float(skm.f1_score(y, pred, average="macro", zero_division=0.0))


def mcc(outputs: Any, targets: Any) -> float:
    """Matthews correlation coefficient in [-1, 1] (GLUE's CoLA; multi-class too); 0 when
    the predictions or the targets are all one class."""
    pred, y = _classes(outputs, targets)
    with warnings.catch_warnings():  # one class only: sklearn warns, then returns 0
        warnings.filterwarnings("ignore", "A single label was found", UserWarning)
        return float(skm.matthews_corrcoef(y, pred))


def _correlation(fn: Any, outputs: Any, targets: Any) -> float:
    out, y = _values(outputs, targets)
    if np.ptp(out) == 0 or np.ptp(y) == 0:
        return math.nan  # a constant vector has no correlation (SciPy would warn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        return float(fn(out, y).statistic)


def pearson(outputs: Any, targets: Any) -> float:
    """Pearson's r in [-1, 1] (GLUE's STS-B); ``nan`` if either side is constant."""
    return _correlation(stats.pearsonr, outputs, targets)


def spearman(outputs: Any, targets: Any) -> float:
    """Spearman's rank correlation in [-1, 1]; ``nan`` if either side is constant."""
    return _correlation(stats.spearmanr, outputs, targets)


def mse(outputs: Any, targets: Any) -> float:
    """Mean squared error of a regression."""
    out, y = _values(outputs, targets)
    return float(skm.mean_squared_error(y, out))


def _checked_classes(outputs: Any, targets: Any, num_classes: int) -> tuple[np.ndarray, ...]:
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    pred, y = _classes(outputs, targets)
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"targets must lie in [0, {num_classes}), got [{y.min()}, {y.max()}]")
    return pred, y


def per_class_sensitivity(outputs: Any, targets: Any, num_classes: int) -> dict[str, float]:
    """Recall of each class in percent, ``{"sensitivity_<c>": value}`` for c < num_classes;
    ``nan`` for a class without examples in the targets."""
    pred, y = _checked_classes(outputs, targets, num_classes)
    recall = skm.recall_score(
        y, pred, labels=list(range(num_classes)), average=None, zero_division=np.nan
    )
    return {f"sensitivity_{c}": 100.0 * float(r) for c, r in enumerate(recall)}


def per_class_ppv(outputs: Any, targets: Any, num_classes: int) -> dict[str, float]:
    """Positive predictivity (precision) of each class in percent, ``{"ppv_<c>": value}``;
    ``nan`` for a class never predicted."""
    pred, y = _checked_classes(outputs, targets, num_classes)
    precision = skm.precision_score(
        y, pred, labels=list(range(num_classes)), average=None, zero_division=np.nan
    )
    return {f"ppv_{c}": 100.0 * float(p) for c, p in enumerate(precision)}


def confusion_matrix(outputs: Any, targets: Any, num_classes: int) -> list[list[int]]:
    """Counts ``[true class][predicted class]``, ``num_classes`` square (sklearn's layout)."""
    pred, y = _checked_classes(outputs, targets, num_classes)
    return skm.confusion_matrix(y, pred, labels=list(range(num_classes))).tolist()


def _finite_or_none(value: float) -> float | None:
    return None if math.isnan(value) else value  # JSON has no NaN


def class_report(outputs: Any, targets: Any, class_names: Sequence[str]) -> dict[str, Any]:
    """Per-class sensitivity and positive predictivity (percent; None where undefined) and
    the confusion matrix of a whole split, keyed by class name: JSON-able, for
    ``summary.json`` and :func:`common.confusion.plot_confusion`."""
    n = len(class_names)
    sens = per_class_sensitivity(outputs, targets, n).values()
    ppv = per_class_ppv(outputs, targets, n).values()
    return {
        "class_names": list(class_names),
        "sensitivity": {c: _finite_or_none(v) for c, v in zip(class_names, sens, strict=True)},
        "ppv": {c: _finite_or_none(v) for c, v in zip(class_names, ppv, strict=True)},
        "confusion_matrix": confusion_matrix(outputs, targets, n),
    }
