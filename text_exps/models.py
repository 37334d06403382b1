"""Transformers for GLUE: ``AutoModelForSequenceClassification`` and its tokenizer.

``model.name`` is a hub id (``bert-base-uncased``, ``roberta-base``, ...), a local
directory written by ``save_pretrained``, or the reserved ``tiny-bert``: the randomly
initialised 2-layer BERT of :mod:`text_exps.synthetic` with its own word-level vocabulary
(for the generated ``polarity`` task; nothing is downloaded). Remote code is never run.
Offline, a model that is not in the Hugging Face cache is one message saying where to put
it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from common.errors import ModelError, first_line
from text_exps import synthetic


def _cache() -> str:
    return os.environ.get("HF_HUB_CACHE") or str(
        Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"
    )


def _unavailable(name: str, what: str, error: Exception) -> ModelError:
    first = first_line(error)
    return ModelError(
        f"cannot load the {what} of model.name={name!r} ({first}): it is neither a local "
        f"directory written by save_pretrained nor in the Hugging Face cache ({_cache()}). "
        f"Where there is a network, run `hf download {name}` (or set data.download and "
        "rerun), or point model.name at a local copy"
    )


def load_tokenizer(name: str) -> Any:
    """The model's tokenizer (fast where one exists)."""
    from transformers import AutoTokenizer

    if name == synthetic.TINY_BERT:
        return synthetic.tiny_tokenizer()
    try:
        return AutoTokenizer.from_pretrained(name, trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise _unavailable(name, "tokenizer", e) from None


def build_text_model(
    name: str, num_labels: int, *, regression: bool = False, dropout: float | None = None
) -> nn.Module:
    """A pretrained encoder with a new classification (or regression) head.

    Args:
        name: hub id or ``save_pretrained`` directory.
        num_labels: classes; 1 with ``regression`` (STS-B).
        dropout: hidden and attention dropout (None: the checkpoint's own).
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    if name == synthetic.TINY_BERT:
        config = synthetic.tiny_bert_config(num_labels)
    else:
        try:
            config = AutoConfig.from_pretrained(name, trust_remote_code=False)
        except (OSError, ValueError) as e:
            raise _unavailable(name, "config", e) from None
    config.num_labels = num_labels
    config.problem_type = "regression" if regression else "single_label_classification"
    if dropout is not None:
        for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if hasattr(config, key):
                setattr(config, key, dropout)
    if name == synthetic.TINY_BERT:  # random weights from the caller's seed: not pretrained
        return AutoModelForSequenceClassification.from_config(config)
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            name, config=config, trust_remote_code=False
        )
    except (OSError, ValueError) as e:
        raise _unavailable(name, "weights", e) from None
