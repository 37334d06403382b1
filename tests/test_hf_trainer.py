"""common.optim.hf: every registry optimizer inside a transformers.Trainer.

A tiny BertForSequenceClassification on random token ids; no network, no tokenizer.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_bert_config

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # the Trainer needs it

from transformers import Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from common.optim import OPTIMIZERS, SAM  # noqa: E402
from common.optim.hf import SharpnessAwareTrainer  # noqa: E402

LR = 1e-3


def tiny_bert(dropout: float = 0.1):
    torch.manual_seed(0)
    config = tiny_bert_config(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    return transformers.BertForSequenceClassification(config)


def dataset(n: int = 32):
    g = torch.Generator().manual_seed(0)
    return [
        {
            "input_ids": torch.randint(0, 50, (7,), generator=g),
            "labels": int(torch.randint(0, 2, (), generator=g)),
        }
        for _ in range(n)
    ]


def arguments(tmp_path, **kw) -> TrainingArguments:
    base = dict(
        output_dir=str(tmp_path),
        report_to=[],
        use_cpu=True,
        max_steps=3,
        per_device_train_batch_size=4,
        save_strategy="no",
        logging_strategy="no",
        learning_rate=LR,
        seed=0,
        disable_tqdm=True,
    )
    return TrainingArguments(**{**base, **kw})


class PerStep(TrainerCallback):
    """Forward passes and learning rate of every optimizer step."""

    def __init__(self, model) -> None:
        self.forwards, self.per_step, self.lrs = 0, [], []
        model.register_forward_hook(lambda *_: setattr(self, "forwards", self.forwards + 1))

    def on_step_end(self, args, state, control, optimizer=None, **kw):
        self.per_step.append(self.forwards)
        self.forwards = 0
        self.lrs.append(optimizer.param_groups[0]["lr"])


def train(tmp_path, name=None, options=None, *, model=None, data=None, stock=False, **kw):
    model = model or tiny_bert()
    args = arguments(tmp_path, **kw)
    counter = PerStep(model)
    common = dict(model=model, args=args, train_dataset=data or dataset(), callbacks=[counter])
    if stock:
        trainer = Trainer(**common)
    else:
        trainer = SharpnessAwareTrainer(**common, optimizer_name=name, optimizer_options=options)
    trainer.train()
    return trainer, model, counter


def weights(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize(
    "name,options,passes",
    [
        ("sgd", {}, 1),
        ("sam", {"rho": 0.05}, 2),
        ("nso", {"num_perturbs": 1}, 2),
        ("nso", {"num_perturbs": 2, "lam": 0.5}, 5),
    ],
)
@pytest.mark.parametrize("accum", [1, 2])
def test_passes_per_step_weights_and_schedule(tmp_path, name, options, passes, accum):
    before = weights(tiny_bert())
    trainer, model, counter = train(tmp_path, name, options, gradient_accumulation_steps=accum)
    assert OPTIMIZERS[name].evals_per_step(**options) == passes
    assert counter.per_step == [passes * accum] * 3  # every micro-batch, every pass
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    # linear decay from LR to 0 over max_steps, stepped once per optimizer step
    assert counter.lrs == pytest.approx([LR * 2 / 3, LR / 3, 0.0], rel=1e-12, abs=1e-15)
    assert math.isfinite(trainer.state.log_history[-1]["train_loss"])


def test_adamw_is_bit_identical_to_the_stock_trainer(tmp_path):
    _, stock, _ = train(tmp_path / "stock", stock=True, gradient_accumulation_steps=2)
    trainer, ours, _ = train(tmp_path / "ours", "adamw", gradient_accumulation_steps=2)
    assert type(trainer.optimizer.optimizer) is torch.optim.AdamW
    for a, b in zip(weights(stock), ours.parameters(), strict=True):
        assert torch.equal(a, b)


def test_sam_with_rho_zero_is_its_base_under_accumulation(tmp_path):
    """ρ = 0 SAM == AdamW: both passes see the same weights (dropout off, so the same
    function), the loss scaling, windows, weight-decay groups and schedule agree."""
    kw = dict(gradient_accumulation_steps=2, weight_decay=0.1, max_grad_norm=0.5)
    _, base, _ = train(tmp_path / "a", "adamw", model=tiny_bert(dropout=0.0), **kw)
    trainer, sam, _ = train(tmp_path / "s", "sam", {"rho": 0.0}, model=tiny_bert(dropout=0.0), **kw)
    opt = trainer.sharpness_aware_optimizer
    assert isinstance(opt, SAM) and type(opt.base_optimizer) is torch.optim.AdamW
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert opt.max_grad_norm == 0.5
    for a, b in zip(weights(base), sam.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)


def test_max_grad_norm_clips_the_update_not_hf(tmp_path, monkeypatch):
    norms = []
    original = Trainer._clip_grad_norm
    monkeypatch.setattr(
        Trainer, "_clip_grad_norm", lambda self, model: norms.append(1) or original(self, model)
    )
    before = weights(tiny_bert())
    options = {"base": "sgd", "rho": 0.05}
    _, model, _ = train(
        tmp_path, "sam", options, max_steps=1, max_grad_norm=1e-3, lr_scheduler_type="constant"
    )
    assert norms == []  # HF's clipping never ran
    pairs = zip(before, weights(model), strict=True)
    step = math.sqrt(sum(float((a - b).square().sum()) for a, b in pairs))
    assert step == pytest.approx(LR * 1e-3, rel=1e-4)  # plain SGD: lr · clipped norm


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_registry_optimizer_trains(tmp_path, name):
    # SSAM-F's 12 Fisher examples: 4 from the window, the rest from the training set;
    # LookSAM with k = 2: the two steps are one whole period (a full step, one with g(W))
    options = {"ssamf": {"num_samples": 12}, "looksam": {"interval": 2}}.get(name, {})
    before = weights(tiny_bert())
    trainer, model, counter = train(tmp_path, name, options, max_steps=2)
    evals = OPTIMIZERS[name].evals_per_step(**options)
    if name == "looksam":
        assert counter.per_step == [2, 1] and sum(counter.per_step) == 2 * evals
    else:  # (SSAM-F's first step also runs the model for its Fisher mask)
        assert counter.per_step[1] == evals
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert math.isfinite(trainer.state.log_history[-1]["train_loss"])


def test_ssam_masks_are_prepared_once_per_epoch(tmp_path, monkeypatch):
    from common.optim.ssam import SSAMF

    epochs = []
    original = SSAMF.prepare_epoch
    monkeypatch.setattr(
        SSAMF, "prepare_epoch", lambda self, e, **kw: epochs.append(e) or original(self, e, **kw)
    )
    # 8 examples, batches of 4: two steps per epoch, so steps 1-2 are epoch 0, step 3 epoch 1
    train(tmp_path, "ssamf", {"num_samples": 4}, data=dataset(8))
    assert epochs == [0, 1]


def test_a_hand_built_optimizer_and_the_closure_less_step(tmp_path):
    model = tiny_bert()
    opt = SAM(model.parameters(), torch.optim.SGD, lr=LR, rho=0.05)
    counter = PerStep(model)
    args = arguments(tmp_path)
    trainer = SharpnessAwareTrainer(
        model=model, args=args, train_dataset=dataset(), optimizers=(opt, None), callbacks=[counter]
    )
    with pytest.warns(UserWarning, match="max_grad_norm"):  # args' 1.0 is not the optimizer's
        trainer.train()
    assert counter.per_step == [2, 2, 2]
    assert trainer.sharpness_aware_optimizer is opt
    with pytest.raises(RuntimeError, match="without a closure"):
        trainer.optimizer.step()  # no step was taken in training_step


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(optimizer_name="samm"), "unknown optimizer_name"),
        (dict(optimizer_name="sam", optimizer_options={"lr": 0.1}), "learning_rate"),
        (dict(optimizer_name="sam", optimizer_options={"weight_decay": 0.1}), "weight_decay"),
        (dict(optimizer_name="sgd", optimizer_options={"base": "adam"}), "base"),
        (dict(optimizer_options={"rho": 0.1}), "optimizer_name"),
    ],
)
def test_bad_arguments(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        SharpnessAwareTrainer(model=tiny_bert(), args=arguments(tmp_path), **kw)


@pytest.mark.parametrize("name,options", [("nso", {"seed": 1}), ("ssamf", {"num_samples": 4})])
def test_resuming_from_a_checkpoint_is_bit_identical(tmp_path, name, options):
    """The Trainer's checkpoint holds the optimizer's state through the view (NSO's noise
    generator, SSAM-F's mask); resumed mid-epoch, the run ends where an unbroken one does."""
    data = dataset(8)  # two steps per epoch: checkpoint-1 is mid-epoch, step 3 a new epoch
    _, unbroken, _ = train(tmp_path / "a", name, options, data=data, max_steps=4)
    kw = dict(data=data, max_steps=4)
    train(tmp_path / "b", name, options, save_strategy="steps", save_steps=1, **kw)
    model = tiny_bert()
    trainer = SharpnessAwareTrainer(
        model=model,
        args=arguments(tmp_path / "b", max_steps=4),
        train_dataset=data,
        optimizer_name=name,
        optimizer_options=options,
    )
    trainer.train(resume_from_checkpoint=str(tmp_path / "b" / "checkpoint-1"))
    for a, b in zip(weights(unbroken), model.parameters(), strict=True):
        assert torch.equal(a, b)
