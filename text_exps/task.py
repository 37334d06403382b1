"""GLUE as a :class:`common.train.Task`: HF ``datasets`` / local files, HF transformers.

One ``TASK`` serves the nine GLUE tasks; :func:`glue_variant` gives each its loss and
metrics (CoLA: Matthews correlation; MRPC, QQP: F1 and accuracy; STS-B: a regression with
Pearson and Spearman; MNLI: matched and mismatched accuracy; the rest: accuracy).
"""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from common import metrics as M
from common.errors import ModelError
from common.train.config import Config, DataConfig, ModelConfig
from common.train.task import Task, correct, no_running, regression_criterion
from common.train.typed import keyfield
from text_exps.data import build_text_data, canonical_name, collate
from text_exps.models import build_text_model, check_fit, load_tokenizer

CONFIGS = Path(__file__).parent / "configs"
MISMATCHED = M.Metric("mismatched_accuracy", "mm acc. (%)")

#: (reported metrics, in the order the GLUE papers print them; the first selects best.pt)
GLUE_METRICS: dict[str, tuple[M.Metric, ...]] = {
    "cola": (M.MCC,),
    "sst2": (M.ACCURACY,),
    "mrpc": (M.F1, M.ACCURACY),
    "qqp": (M.ACCURACY, M.F1),
    "stsb": (M.PEARSON, M.SPEARMAN),
    "mnli": (M.ACCURACY, MISMATCHED),
    "qnli": (M.ACCURACY,),
    "rte": (M.ACCURACY,),
    "wnli": (M.ACCURACY,),
    "polarity": (M.ACCURACY,),  # the generated task (text_exps.synthetic)
}


class TextDataConfig(DataConfig):
    """A GLUE task and how it is tokenized."""

    name: str = keyfield("rte", "GLUE task or the generated one: " + ", ".join(GLUE_METRICS))
    max_seq_length: int = keyfield(128, "tokens per example (pairs as pairs)", min=8)


class TextModelConfig(ModelConfig):
    """A pretrained encoder from the hub or a save_pretrained directory."""

    name: str = keyfield(
        "bert-base-uncased", "hub id, local directory (save_pretrained) or tiny-bert"
    )
    dropout: float | None = keyfield(
        None, "hidden and attention dropout (None: the checkpoint's)", min=0, lt=1
    )


class TextConfig(Config):
    data: TextDataConfig = keyfield(factory=TextDataConfig)
    model: TextModelConfig = keyfield(factory=TextModelConfig)


@functools.lru_cache(maxsize=4)
def _tokenizer(name: str) -> Any:
    return load_tokenizer(name)


def build_data(cfg: TextConfig) -> Any:
    d = cfg.data
    tokenizer = _tokenizer(cfg.model.name)
    longest = getattr(tokenizer, "model_max_length", None)
    if longest is not None and d.max_seq_length > longest:  # past its positions: an IndexError
        raise ModelError(
            f"data.max_seq_length={d.max_seq_length} is longer than model.name="
            f"{cfg.model.name!r} takes ({longest} tokens): set data.max_seq_length={longest}."
        )
    return build_text_data(
        d.name,
        d.root,
        tokenizer=tokenizer,
        max_seq_length=d.max_seq_length,
        val_fraction=d.val_fraction,
        split_seed=d.split_seed,
        n_examples=d.n_examples,
        download=d.download,
    )


def build_model(cfg: TextConfig, splits: Any) -> nn.Module:
    check_fit(cfg.model.name, _tokenizer(cfg.model.name), cfg.data.max_seq_length)
    return build_text_model(
        cfg.model.name,
        splits.num_classes,
        regression=splits.regression,
        dropout=cfg.model.dropout,
        replace_head=cfg.model.replace_head,
    )


def forward(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """Logits ``(B, num_labels)`` of a dict batch (``labels`` is the target, not an input)."""
    return model(**{k: v for k, v in batch.items() if k != "labels"}).logits


def targets(batch: dict[str, Tensor]) -> Tensor:
    return batch["labels"]


def no_weight_decay(name: str, parameter: nn.Parameter) -> bool:
    """Biases and normalisation weights, as HF's Trainer leaves them out of weight decay."""
    del parameter
    return name.endswith("bias") or "norm" in name.lower()


def reference_trace_params(name: str, parameter: nn.Parameter) -> bool:
    """The NSO reference's Hessian selection: the weights of the ``nn.Linear`` layers without
    the pooler (2-D, not embeddings, not LayerNorm): 73 tensors in BERT-base."""
    return parameter.dim() == 2 and "embeddings" not in name and "pooler" not in name


def reference_noise_params(name: str, parameter: nn.Parameter) -> bool:
    """The NSO reference's noise-stability selection: encoder and classifier weights
    without LayerNorm."""
    del parameter
    inside = ".encoder." in f".{name}" or name.startswith("classifier.")
    return inside and name.endswith("weight") and "LayerNorm" not in name


def _metrics(reported: tuple[M.Metric, ...]):
    names = [m.name for m in reported if m is not MISMATCHED]  # that one is its own split's

    def split_metrics(outputs: Tensor, targets: Tensor) -> dict[str, float]:
        return {name: getattr(M, name)(outputs, targets) for name in names}

    return split_metrics


def glue_variant(cfg: Any) -> Task:
    """The task for ``cfg.data.name``: its loss, metrics and selection metric."""
    name = canonical_name(cfg.data.name)
    reported = GLUE_METRICS[name]
    regression = name == "stsb"
    return replace(
        TASK,
        variant=None,
        criterion=regression_criterion if regression else TASK.criterion,
        metrics=_metrics(reported),
        reported=reported,
        select=reported[0],
        running=no_running if regression else correct,
    )


TASK = Task(
    domain="text",
    config_cls=TextConfig,
    default_config=CONFIGS / "glue.yaml",
    build_data=build_data,
    build_model=build_model,
    forward=forward,
    targets=targets,
    collate=collate,
    canonical_name=canonical_name,
    no_weight_decay=no_weight_decay,
    param_sets={
        "hessian": {"reference": reference_trace_params},
        "noise_stability": {"reference": reference_noise_params},
    },
    variant=glue_variant,
)
