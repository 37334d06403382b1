"""Shared training options the ECG domain brought: the multistep schedule, class-weighted
losses, and the per-class report with its confusion matrix."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from sklearn.utils.class_weight import compute_class_weight

from common import metrics as M
from common.confusion import plot_confusion
from common.errors import UserError
from common.train.config import Config, ScheduleConfig, load_config
from common.train.records import class_weight
from common.train.schedule import lr_factor
from common.train.task import Task, balanced_class_weights, cross_entropy
from common.train.typed import ConfigError, validate


def test_multistep_matches_torch_multisteplr() -> None:
    schedule = ScheduleConfig(name="multistep", milestones=[0.3, 0.6, 0.8], gamma=0.2)
    factor = lr_factor(schedule, 10, 100, 0.01)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    reference = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[30, 60, 80], gamma=0.2)
    for step in range(100):
        assert factor(step) == pytest.approx(opt.param_groups[0]["lr"]), step
        opt.step()
        reference.step()


@pytest.mark.parametrize("milestones", [[0.6, 0.3], [0.3, 0.3], [0.5, 1.0], [0.0], []])
def test_bad_milestones_are_refused(milestones) -> None:
    with pytest.raises(ConfigError, match="milestones"):
        validate(ScheduleConfig(name="multistep", milestones=milestones), prefix="schedule")


def test_balanced_weights_are_sklearns() -> None:
    labels = np.array([0] * 80 + [1] * 15 + [3] * 5)
    got = balanced_class_weights(labels, 5)
    want = compute_class_weight("balanced", classes=np.array([0, 1, 3]), y=labels)
    np.testing.assert_allclose(got[[0, 1, 3]], want, rtol=1e-6)
    assert got[2] == 0 and got[4] == 0  # absent: never a target
    assert got.dtype == np.float32
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        balanced_class_weights(np.array([0, 5]), 5)


def test_the_weighted_loss_is_the_weighted_mean_of_the_nll() -> None:
    torch.manual_seed(0)
    logits, y = torch.randn(12, 3), torch.randint(0, 3, (12,))
    w = torch.tensor([0.5, 2.0, 1.0])
    nll = -torch.log_softmax(logits, -1)[torch.arange(12), y]
    want = (w[y] * nll).sum() / w[y].sum()
    torch.testing.assert_close(cross_entropy(logits, y, 0.0, weight=w), want)
    task = Task("t", Config, None, None, None, forward=lambda m, b: m(b[0]))  # type: ignore[arg-type]
    model = torch.nn.Identity()
    out = task.loss(model, (logits, y), class_weight=w)
    torch.testing.assert_close(out.loss, want)
    assert not torch.allclose(task.loss(model, (logits, y)).loss, want)


class _Splits:
    num_classes = 4

    def __init__(self, labels):
        self._labels = labels

    def labels(self, split):
        assert split == "train"
        return self._labels


def test_trainer_weights_come_from_the_training_labels() -> None:
    labels = np.array([0, 0, 0, 1, 2, 2])
    w = class_weight("balanced", _Splits(labels), torch.device("cpu"))
    np.testing.assert_allclose(w.numpy(), balanced_class_weights(labels, 4))
    assert class_weight("none", _Splits(labels), torch.device("cpu")) is None
    with pytest.raises(UserError, match=r"train\.class_weights=none"):
        class_weight("balanced", _Splits(None), torch.device("cpu"))


def test_class_weights_is_a_checked_key(tmp_path) -> None:
    from image_exps.task import TASK

    cfg = load_config(TASK.config_cls, TASK.default_config, ["train.class_weights=balanced"])
    assert cfg.train.class_weights == "balanced"
    with pytest.raises(ConfigError, match="balanced"):
        load_config(TASK.config_cls, TASK.default_config, ["train.class_weights=inverse"])


def test_class_report_against_sklearn(tmp_path) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    y[y == 3] = 0  # class 3 never a target
    pred = np.where(rng.random(200) < 0.7, y, rng.integers(0, 3, 200))  # never predicts 3
    logits = torch.nn.functional.one_hot(torch.from_numpy(pred), 4).float()
    report = M.class_report(logits, torch.from_numpy(y), ["a", "b", "c", "d"])
    recall = skm.recall_score(y, pred, labels=[0, 1, 2], average=None)
    precision = skm.precision_score(y, pred, labels=[0, 1, 2], average=None)
    for i, name in enumerate("abc"):
        assert report["sensitivity"][name] == pytest.approx(100 * recall[i])
        assert report["ppv"][name] == pytest.approx(100 * precision[i])
    assert report["sensitivity"]["d"] is None and report["ppv"]["d"] is None  # JSON: no NaN
    assert report["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=[0, 1, 2, 3]).tolist()
    paths = plot_confusion(report, tmp_path / "confusion", title="test")
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size for p in paths)


def test_balanced_weights_that_let_a_few_examples_rule_the_loss_are_said(capsys) -> None:
    """MIT-BIH DS1 has 8 Q beats of 45,918: balanced weights gave them about 1,300 times the
    weight of N and every inter-patient run diverged or predicted Q, without a word."""
    from types import SimpleNamespace

    from common.splits import Splits

    def splits_of(counts: list[int]) -> Splits:
        labels = np.repeat(np.arange(len(counts)), counts)
        part = SimpleNamespace(labels=labels)
        return Splits(
            part, part, part, num_classes=len(counts), meta={"class_names": list("NSVFQ")}
        )

    class_weight("balanced", splits_of([4000, 300, 500, 100, 2]), torch.device("cpu"))
    err = capsys.readouterr().err
    assert err.startswith("warning: train.class_weights=balanced weighs class Q 2000 times")
    assert "it has 2 of the 4902 training examples" in err and "class_weights=none" in err
    class_weight("balanced", splits_of([4000, 300, 500, 100, 60]), torch.device("cpu"))
    assert capsys.readouterr().err == ""  # 67 times: within what balancing is for
