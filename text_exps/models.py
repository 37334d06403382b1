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
from common.io import sha256_file
from text_exps import synthetic
from text_exps.hub import offline_unless_reachable


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
    offline_unless_reachable(name)
    try:
        return AutoTokenizer.from_pretrained(name, trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise _unavailable(name, "tokenizer", e) from None


def build_text_model(
    name: str,
    num_labels: int,
    *,
    regression: bool = False,
    dropout: float | None = None,
    replace_head: bool = False,
) -> nn.Module:
    """A pretrained encoder with a new classification (or regression) head.

    Args:
        name: hub id or ``save_pretrained`` directory.
        num_labels: classes; 1 with ``regression`` (STS-B).
        dropout: hidden and attention dropout (None: the checkpoint's own).
        replace_head: a checkpoint's classifier of another number of classes is replaced
            by a fresh one (else a ModelError says so).

    Raises:
        ModelError: a model that cannot be had, or whose files are damaged or do not fit.
    """
    from transformers import AutoModelForSequenceClassification

    config = _config(name, num_labels, regression, dropout)
    if name == synthetic.TINY_BERT:  # random weights from the caller's seed: not pretrained
        return AutoModelForSequenceClassification.from_config(config)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            name, config=config, trust_remote_code=False, ignore_mismatched_sizes=replace_head
        )
        if not Path(name).is_dir():
            _verify_cached_weights(name)
        return model
    except ModelError:
        raise
    except Exception as e:  # OSError, ValueError; safetensors' and torch's on a damaged file
        if "size mismatch" in str(e) or "mismatched" in str(e):
            raise _other_head(name, num_labels) from None
        if isinstance(e, OSError | ValueError) and not Path(name).is_dir():
            raise _unavailable(name, "weights", e) from None
        raise ModelError(
            f"the weights of model.name={name!r} cannot be read ({first_line(e)}): the file "
            f"is damaged or truncated; copy the folder again from its source"
        ) from None


WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _verify_cached_weights(name: str) -> None:
    """The hub cache names a weights file by its SHA-256 (``blobs/<sha256>``), which
    huggingface_hub does not check (only the size): a same-size damaged download would be
    loaded for ever. Checked here on every load; a damaged blob is deleted."""
    from huggingface_hub import try_to_load_from_cache

    for filename in WEIGHT_FILES:
        cached = try_to_load_from_cache(name, filename)
        if not isinstance(cached, str):
            continue
        blob = Path(cached).resolve()
        if len(blob.name) != 64 or not all(c in "0123456789abcdef" for c in blob.name):
            continue  # not a content-addressed blob (a small file's git hash)
        digest = sha256_file(blob)
        if digest != blob.name:
            blob.unlink(missing_ok=True)
            raise ModelError(
                f"the cached {filename} of model.name={name!r} is damaged (its SHA-256 is "
                f"{digest[:16]}..., the hub's is {blob.name[:16]}...): it was deleted; rerun "
                "to download it again"
            )


def _config(name: str, num_labels: int, regression: bool, dropout: float | None) -> Any:
    from transformers import AutoConfig

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
    return config


def _other_head(name: str, num_labels: int) -> ModelError:
    return ModelError(
        f"model.name={name!r} holds a classifier for another number of classes than this "
        f"task's {num_labels}: set model.replace_head=true to train a fresh one on its "
        f"encoder (a head of another size is replaced only when asked)"
    )


def check_fit(name: str, tokenizer: Any, max_seq_length: int) -> None:
    """The model's embeddings take what the tokenizer gives: every token id, and
    ``max_seq_length`` positions (else an IndexError or a size mismatch mid-run)."""
    config = _config(name, 2, False, None)
    vocab = getattr(config, "vocab_size", None)
    if vocab is not None and len(tokenizer) > vocab:
        raise ModelError(
            f"the tokenizer of model.name={name!r} has {len(tokenizer)} token ids and the "
            f"model's embeddings {vocab}: the folder's tokenizer and weights do not belong "
            f"together; copy both from one model"
        )
    positions = getattr(config, "max_position_embeddings", None)
    if positions is not None and max_seq_length > positions:
        raise ModelError(
            f"data.max_seq_length={max_seq_length} is more than the {positions} positions of "
            f"model.name={name!r}: set data.max_seq_length={positions} or less"
        )
