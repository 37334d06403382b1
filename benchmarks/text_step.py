"""One training step on a tiny BERT: our trainer against a plain HF ``Trainer`` step.

    .venv/bin/python -m benchmarks.text_step [--quick] [--json PATH] [--rounds N]

Both sides run in this process, interleaved, on the same model (copied) and batches: our
``Trainer._step`` with AdamW (the closure, micro-batches, one host read) against
``transformers.Trainer.training_step`` plus ``optimizer.step()``, the LR scheduler and
``zero_grad`` (the body of HF's training loop, clipping off on both sides). Then our SAM and
NSO (k = 1) steps against our AdamW step. Medians of interleaved rounds; goals: ours <= 1.05x
HF's, SAM and NSO <= 2.1x our AdamW.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks import cli
from common.train.config import Config, load_config
from common.train.task import Task
from common.train.trainer import Trainer


def tiny_bert(width: int) -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=1000,
        hidden_size=width,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=4 * width,
        max_position_embeddings=128,
        num_labels=2,
    )
    return BertForSequenceClassification(config)


def batches(n: int, size: int, length: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [
        {
            "input_ids": torch.randint(0, 1000, (size, length), generator=g),
            "attention_mask": torch.ones(size, length, dtype=torch.long),
            "labels": torch.randint(0, 2, (size,), generator=g),
        }
        for _ in range(n)
    ]


@dataclass
class _Splits:
    train: list
    val: list = field(default_factory=list)
    test: list = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    @property
    def train_eval(self) -> list:
        return self.train

    def labels(self, split: str) -> None:
        return None


def our_trainer(model: nn.Module, data: list[dict], optimizer: str, lr: float) -> Trainer:
    examples = [{k: v[i] for k, v in b.items()} for b in data for i in range(len(b["labels"]))]
    task = Task(
        domain="bench",
        config_cls=Config,
        default_config=Path("unused.yaml"),
        build_data=lambda cfg: _Splits(examples),
        build_model=lambda cfg, splits: copy.deepcopy(model),
        forward=lambda m, b: m(**{k: v for k, v in b.items() if k != "labels"}).logits,
        targets=lambda b: b["labels"],
    )
    overrides = [
        f"optimizer.name={optimizer}", "optimizer.base=adamw", f"optimizer.lr={lr}",
        "optimizer.weight_decay=0", "optimizer.momentum=null", "train.progress=false",
        f"train.batch_size={len(data[0]['labels'])}", "train.device=cpu",
        f"run_dir={tempfile.mkdtemp()}",
    ]  # fmt: skip
    trainer = Trainer(task, load_config(Config, None, overrides))
    trainer._build()
    trainer.model.train()
    return trainer


def hf_step(model: nn.Module, lr: float, out: str) -> Any:
    from transformers import Trainer as HFTrainer
    from transformers import TrainingArguments

    args = TrainingArguments(
        output_dir=out, learning_rate=lr, weight_decay=0.0, report_to=[], use_cpu=True,
        max_grad_norm=0.0, lr_scheduler_type="constant", optim="adamw_torch",
    )  # fmt: skip
    hf = HFTrainer(model=copy.deepcopy(model), args=args)
    hf.create_optimizer_and_scheduler(num_training_steps=10_000)
    hf.current_gradient_accumulation_steps = 1  # set by Trainer's own loop
    hf.model.train()

    def step(batch: dict[str, torch.Tensor]) -> None:
        hf.training_step(hf.model, batch)
        hf.optimizer.step()
        hf.lr_scheduler.step()
        hf.model.zero_grad()

    return step


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = cli.parser(__doc__)
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
    a = cli.parse(parser, argv)
    width, size, length, rounds = (32, 8, 16, 3) if a.quick else (128, 16, 64, a.rounds)
    model, data, lr = tiny_bert(width), batches(4, size, length), 1e-4
    ours = {name: our_trainer(model, data, name, lr) for name in ("adamw", "sam", "nso")}
    with tempfile.TemporaryDirectory() as out:
        sides = {
            "hf adamw": hf_step(model, lr, out),
            **{f"ours {n}": (lambda b, t=t: t._step(b, 1.0)) for n, t in ours.items()},
        }
        times: dict[str, list[float]] = {name: [] for name in sides}
        for r in range(rounds + 1):
            for name, step in sides.items():
                batch = data[r % len(data)]
                start = time.perf_counter()
                step(batch)
                if r:  # the first round warms up
                    times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    results = {
        "median_s": median,
        "ours_vs_hf": median["ours adamw"] / median["hf adamw"],
        "sam_vs_adamw": median["ours sam"] / median["ours adamw"],
        "nso_vs_adamw": median["ours nso"] / median["ours adamw"],
    }
    print("| measure | ours | reference | ratio | goal |")
    print("| --- | --- | --- | --- | --- |")
    print(
        f"| AdamW step, tiny BERT (width {width}, batch {size}x{length}) | "
        f"{1e3 * median['ours adamw']:.1f} ms | HF Trainer {1e3 * median['hf adamw']:.1f} ms | "
        f"{results['ours_vs_hf']:.2f}x | <= 1.05x |"
    )
    for name in ("sam", "nso"):
        print(
            f"| {name.upper()} step vs our AdamW | {1e3 * median[f'ours {name}']:.1f} ms | "
            f"{1e3 * median['ours adamw']:.1f} ms | {results[f'{name}_vs_adamw']:.2f}x | <= 2.1x |"
        )
    cli.write_json(a.json, results)
    return results


if __name__ == "__main__":
    main()
