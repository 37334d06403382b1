"""common.metrics against closed forms worked out by hand, degenerate and bad input."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from common import metrics as M
from common.metrics import LOSS, Metric


def logits_for(pred: list[int], num_classes: int) -> torch.Tensor:
    """(N, C) logits whose argmax is ``pred`` (noise elsewhere, so argmax is the only cue)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(len(pred), num_classes, generator=g)
    x[torch.arange(len(pred)), torch.tensor(pred)] = 2.0
    return x


# ---------------------------------------------------------------- classification


def test_accuracy_from_logits_and_class_ids():
    y = torch.tensor([0, 1, 2, 2])
    pred = [0, 1, 2, 0]  # 3 of 4 right
    assert M.accuracy(logits_for(pred, 3), y) == pytest.approx(75.0)
    assert M.accuracy(torch.tensor(pred), y) == pytest.approx(75.0)


def test_accuracy_takes_gradients_bfloat16_and_float_class_ids():
    y = torch.tensor([1.0, 0.0, 1.0])  # integral floats are class ids
    logits = logits_for([1, 1, 1], 2).bfloat16().requires_grad_()
    assert M.accuracy(logits, y) == pytest.approx(200 / 3)


# preds, targets -> TP = 2, FP = 1, FN = 1, TN = 2
BIN_PRED = [1, 1, 0, 0, 1, 0]
BIN_Y = [1, 0, 1, 0, 1, 0]


def test_f1_of_class_one():
    tp, fp, fn = 2, 1, 1
    expected = 100 * 2 * tp / (2 * tp + fp + fn)
    assert M.f1(logits_for(BIN_PRED, 2), torch.tensor(BIN_Y)) == pytest.approx(expected)
    # class 1 is the positive one: TP 1 FP 1 FN 0, while class 0 has TP 2 FP 0 FN 1
    pred, y = torch.tensor([1, 1, 0, 0]), torch.tensor([1, 0, 0, 0])
    assert M.f1(pred, y) == pytest.approx(100 * 2 / 3)
    assert M.f1(1 - pred, 1 - y) == pytest.approx(100 * 4 / 5)


def test_macro_f1_is_the_mean_of_per_class_f1():
    y = [0, 0, 1, 1, 2, 2]
    pred = [0, 1, 1, 1, 2, 0]
    # class 0: TP 1 FP 1 FN 1 -> 2/4; class 1: TP 2 FP 1 FN 0 -> 4/5; class 2: TP 1 FN 1 -> 2/3
    expected = 100 * (2 / 4 + 4 / 5 + 2 / 3) / 3
    assert M.macro_f1(logits_for(pred, 3), torch.tensor(y)) == pytest.approx(expected)


def test_mcc_of_a_two_by_two_confusion_matrix():
    tp, tn, fp, fn = 2, 2, 1, 1
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert M.mcc(logits_for(BIN_PRED, 2), torch.tensor(BIN_Y)) == pytest.approx(expected)
    assert M.mcc(torch.tensor([0, 1, 0, 1]), torch.tensor([1, 0, 1, 0])) == pytest.approx(-1.0)


def test_mcc_multiclass_matches_gorodkins_formula():
    y = np.array([0, 0, 1, 1, 2, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0, 2])
    cm = np.zeros((3, 3))
    np.add.at(cm, (y, pred), 1)
    c, s = np.trace(cm), cm.sum()
    t, p = cm.sum(1), cm.sum(0)
    expected = (c * s - t @ p) / math.sqrt((s**2 - p @ p) * (s**2 - t @ t))
    assert M.mcc(torch.from_numpy(pred), torch.from_numpy(y)) == pytest.approx(expected)


def test_per_class_sensitivity():
    y = [0, 0, 0, 1, 1, 3]
    pred = [0, 0, 1, 1, 1, 0]
    out = M.per_class_sensitivity(logits_for(pred, 4), torch.tensor(y), 4)
    assert list(out) == ["sensitivity_0", "sensitivity_1", "sensitivity_2", "sensitivity_3"]
    assert out["sensitivity_0"] == pytest.approx(100 * 2 / 3)
    assert out["sensitivity_1"] == pytest.approx(100.0)
    assert math.isnan(out["sensitivity_2"])  # no example of class 2: undefined, not 0
    assert out["sensitivity_3"] == 0.0


@pytest.mark.filterwarnings("error")
def test_degenerate_classification_has_no_warnings():
    ones = torch.ones(4, dtype=torch.long)
    assert M.mcc(ones, ones) == 0.0  # one class only: sklearn's convention
    assert M.mcc(ones, torch.tensor([0, 1, 0, 1])) == 0.0  # constant predictions
    zeros = torch.zeros(3, dtype=torch.long)
    assert M.f1(zeros, zeros) == 0.0  # no positive anywhere
    assert M.f1(zeros, torch.tensor([0, 1, 1])) == 0.0  # positives never predicted
    assert M.accuracy(ones[:1], ones[:1]) == 100.0


# ---------------------------------------------------------------- regression


def test_pearson_and_spearman():
    x = torch.tensor([0.1, 0.4, 0.35, 0.8, 1.5])
    y = torch.tensor([0.0, 0.5, 0.2, 1.0, 0.9])
    assert M.pearson(x, y) == pytest.approx(np.corrcoef(x.numpy(), y.numpy())[0, 1])
    # no ties: Spearman is Pearson of the ranks
    rx, ry = np.argsort(np.argsort(x.numpy())), np.argsort(np.argsort(y.numpy()))
    assert M.spearman(x, y) == pytest.approx(np.corrcoef(rx, ry)[0, 1])
    assert M.pearson(x[:, None], y) == M.pearson(x, y[:, None]) == M.pearson(x, y)
    assert M.spearman(x, -y) == pytest.approx(-M.spearman(x, y))
    assert M.pearson(x, 3 * x + 1) == pytest.approx(1.0)


def test_spearman_with_ties_uses_average_ranks():
    x = torch.tensor([1.0, 2.0, 2.0, 3.0])
    y = torch.tensor([1.0, 3.0, 2.0, 4.0])
    ranks_x = np.array([1, 2.5, 2.5, 4])
    assert M.spearman(x, y) == pytest.approx(np.corrcoef(ranks_x, [1, 3, 2, 4])[0, 1])


def test_mse():
    x = torch.tensor([[1.0], [2.0], [4.0]])
    y = torch.tensor([1.5, 2.0, 2.0])
    assert M.mse(x, y) == pytest.approx((0.25 + 0 + 4) / 3)


@pytest.mark.filterwarnings("error")
def test_constant_vectors_have_nan_correlation_without_warnings():
    const, ramp = torch.full((5,), 2.0), torch.arange(5.0)
    for fn in (M.pearson, M.spearman):
        assert math.isnan(fn(const, ramp))
        assert math.isnan(fn(ramp, const))
        assert math.isnan(fn(ramp[:1], ramp[:1]))  # one example
    assert M.mse(const, const) == 0.0


# ---------------------------------------------------------------- bad input

CLASSIFICATION = [M.accuracy, M.f1, M.macro_f1, M.mcc]
REGRESSION = [M.pearson, M.spearman, M.mse]


@pytest.mark.parametrize("fn", CLASSIFICATION, ids=lambda f: f.__name__)
def test_empty_classification_raises(fn):
    with pytest.raises(ValueError, match="empty"):
        fn(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        M.per_class_sensitivity(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), 3)


@pytest.mark.parametrize("fn", REGRESSION, ids=lambda f: f.__name__)
def test_empty_regression_raises(fn):
    with pytest.raises(ValueError, match="empty"):
        fn(torch.zeros(0), torch.zeros(0))


@pytest.mark.parametrize("fn", CLASSIFICATION, ids=lambda f: f.__name__)
def test_bad_classification_shapes_raise(fn):
    y = torch.tensor([0, 1, 1])
    with pytest.raises(ValueError, match="logits"):
        fn(torch.tensor([0.2, 0.9, 0.7]), y)  # 1-D floats: probabilities are not class ids
    with pytest.raises(ValueError, match="logits"):
        fn(torch.zeros(3, 2, 2), y)
    with pytest.raises(ValueError, match="targets"):
        fn(torch.zeros(4, 2), y)
    with pytest.raises(ValueError, match="integer"):
        fn(torch.zeros(3, 2), torch.tensor([0.0, 0.5, 1.0]))


@pytest.mark.parametrize("fn", REGRESSION, ids=lambda f: f.__name__)
def test_bad_regression_shapes_raise(fn):
    with pytest.raises(ValueError, match=r"\(N, 1\)"):
        fn(torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="3 outputs but 4 targets"):
        fn(torch.zeros(3), torch.zeros(4))


def test_f1_of_more_than_two_classes_raises():
    with pytest.raises(ValueError, match="multiclass"):
        M.f1(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]))


def test_sensitivity_checks_classes():
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        M.per_class_sensitivity(torch.tensor([0, 1]), torch.tensor([0, 2]), 2)
    with pytest.raises(ValueError, match="num_classes"):
        M.per_class_sensitivity(torch.tensor([0]), torch.tensor([0]), 0)


# ---------------------------------------------------------------- Metric


def test_better_follows_the_direction():
    acc = Metric("accuracy", "acc. (%)")
    assert acc.better(0.9, 0.8) and not acc.better(0.8, 0.9)
    assert LOSS.better(0.8, 0.9) and not LOSS.better(0.9, 0.8)
    for m in (acc, LOSS):
        assert not m.better(0.5, 0.5)  # strict
        assert m.better(0.5, None)
        assert m.better(-math.inf if m is acc else math.inf, None)


def test_nan_is_never_better():
    for m in (M.ACCURACY, LOSS):
        assert not m.better(math.nan, None)
        assert not m.better(math.nan, 0.5)
        assert not m.better(math.nan, math.nan)
        assert m.better(0.5, math.nan)  # a number replaces a diverged first value


def test_constants():
    constants = [M.ACCURACY, M.F1, M.MACRO_F1, M.MCC, M.PEARSON, M.SPEARMAN, LOSS]
    assert [m.name for m in constants] == [
        "accuracy", "f1", "macro_f1", "mcc", "pearson", "spearman", "loss"
    ]  # fmt: skip
    assert [m.higher_is_better for m in constants] == [True] * 6 + [False]
    assert M.MCC.label == "MCC" and M.ACCURACY.label == "acc. (%)"
    # the names are the functions' names: a task can build its metrics dict from them
    for m in constants[:-1]:
        assert callable(getattr(M, m.name))
    with pytest.raises(dataclasses.FrozenInstanceError):
        LOSS.name = "x"  # type: ignore[misc]
    assert dataclasses.asdict(LOSS) == {"name": "loss", "label": "loss", "higher_is_better": False}
