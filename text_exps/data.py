"""The nine GLUE tasks behind one call: :func:`build_text_data` returns tokenized splits.

Where each task's files are and how they are read: :mod:`text_exps.glue`.

Splits: GLUE's test labels are hidden (-1) and never read. The official validation split is
our ``test`` (MNLI: ``validation_matched``, and ``validation_mismatched`` as
``splits.test_mismatched``); ``val``, which picks ``best.pt``, is a stratified
``val_fraction`` of the official training split (STS-B: stratified on the integer part of
the score) held out with ``split_seed`` alone, and ``n_examples`` keeps a ``split_seed``
random subset of the rest. The run's seed never reaches the split.

Tokens: every official split is tokenized once (pairs as pairs, truncated to
``max_seq_length``, unpadded) and its ids cached in ``<root>/.cache/text/`` under a key of
the tokenizer (class, vocabulary, normalisation, special tokens, name), ``max_seq_length``
and the data files' size and mtime; a cache file whose checksum or key does not match is
recomputed, never trusted (:mod:`text_exps.tokens`). Batches are padded to their longest
sequence by :func:`collate`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from common.errors import (
    DataError,
    ModelError,
)  # DataError re-exported: the shared data error
from common.splits import SPLITS, Splits, check_split_options, seeded_subset
from text_exps.glue import (  # re-exported: the tasks and their files
    GLUE_FOLDER,
    GLUE_TASKS,
    HUB_REPO,
    POLARITY,
    TEXT_TASKS,
    GlueSource,
    GlueTask,
    TsvLayout,
    canonical_name,
    locate_glue,
    read_glue,
    read_split,
)
from text_exps.tokens import (  # re-exported: the tokenized splits and their cache
    CACHE_VERSION,
    Encoded,
    encode_split,
    tokenizer_fingerprint,
)

# --------------------------------------------------------------------------- datasets


class EncodedText(Dataset):
    """Rows ``rows`` of a tokenized split; items are dicts of tensors.

    ``input_ids`` and ``attention_mask`` ``(L,)`` int64 (unpadded, L <= max_seq_length),
    ``token_type_ids`` ``(L,)`` when the tokenizer gives them, ``labels`` a 0-dim int64 class
    id or float32 score. :func:`collate` pads a batch of them.
    """

    def __init__(
        self, encoded: Encoded, rows: np.ndarray | None = None, *, pad_token_id: int
    ) -> None:
        self.encoded = encoded
        n = len(encoded)
        self.rows = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
        self.pad_token_id = int(pad_token_id)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        r = int(self.rows[index])
        e = self.encoded
        a, b = int(e.offsets[r]), int(e.offsets[r + 1])
        ids = torch.from_numpy(e.input_ids[a:b].astype(np.int64))
        item = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if e.token_type_ids is not None:
            item["token_type_ids"] = torch.from_numpy(e.token_type_ids[a:b].astype(np.int64))
        item["labels"] = torch.tensor(e.labels[r])
        return item

    @property
    def labels(self) -> np.ndarray:
        """Label of every example in order, ``(len,)``: int64 ids or float32 scores."""
        return self.encoded.labels[self.rows]

    @property
    def idx(self) -> np.ndarray:
        """The hub's ``idx`` of every example (the row number in the official split's file)."""
        return self.encoded.idx[self.rows]

    @property
    def lengths(self) -> np.ndarray:
        """Tokens of every example, ``(len,)`` int64."""
        return np.diff(self.encoded.offsets)[self.rows]


class PadCollate:
    """Pads a list of :class:`EncodedText` items to the longest of the batch.

    ``input_ids`` with ``pad_token_id``, ``attention_mask`` and ``token_type_ids`` with 0,
    each ``(B, L_max)``; ``labels`` stacked to ``(B,)``. A class, not a closure, so that
    data-loader workers can pickle it.
    """

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = int(pad_token_id)

    def __call__(self, items: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
        batch = {}
        for key in items[0]:
            values = [item[key] for item in items]
            if values[0].dim() == 0:
                batch[key] = torch.stack(values)
            else:
                pad = self.pad_token_id if key == "input_ids" else 0
                batch[key] = pad_sequence(values, batch_first=True, padding_value=pad)
        return batch


def collate(dataset: Any) -> Callable[[Sequence[Mapping[str, Tensor]]], dict[str, Tensor]]:
    """The ``collate_fn`` of ``dataset``: dynamic padding with its tokenizer's pad id.

    ``dataset`` is an :class:`EncodedText` or any wrapper of one reachable through
    ``.dataset`` (torch's ``Subset``, the trainer's seeded wrapper).
    """
    inner = dataset
    while not hasattr(inner, "pad_token_id"):
        if not hasattr(inner, "dataset"):
            raise TypeError(f"{type(dataset).__name__} wraps no EncodedText (no pad_token_id)")
        inner = inner.dataset
    return PadCollate(inner.pad_token_id)


# --------------------------------------------------------------------------- entry point


def _held_out(
    task: GlueTask, y: np.ndarray, val_fraction: float, split_seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) rows of the official training split: a stratified, seeded split."""
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(y))
    if val_fraction == 0:
        return rows, rows[:0]
    # STS-B: strata are the score's integer part (0-1, ..., 4-5), so val spans the range
    strata = np.clip(np.floor(y), 0, 4).astype(np.int64) if task.is_regression else y
    try:
        train, val = train_test_split(
            rows, test_size=val_fraction, stratify=strata, random_state=split_seed % 2**32
        )
    except ValueError as e:  # fewer held-out examples than classes, or a class of one
        raise DataError(
            f"val_fraction={val_fraction} cannot hold out a stratified part of {task.name}'s "
            f"{len(y)} training examples ({e})."
        ) from None
    return np.sort(train), np.sort(val)


#: Share of a training split's word pieces a tokenizer may map to its unknown token: real
#: tokenizers on their language map well under 1 %; one without its vocabulary, all.
MAX_UNKNOWN = 0.5


def _refuse_unknown_words(train: Encoded, tokenizer: Any, source: Path) -> None:
    """A tokenizer that maps (almost) every word of the training split to its unknown token
    (a model folder without its vocabulary files) would train on nothing: a ModelError."""
    unknown = getattr(tokenizer, "unk_token_id", None)
    if unknown is None or len(train.input_ids) == 0:
        return
    special = np.asarray(sorted(set(tokenizer.all_special_ids) - {unknown}), dtype=np.int64)
    pieces = train.input_ids[~np.isin(train.input_ids, special)]
    share = float(np.mean(pieces == unknown)) if len(pieces) else 0.0
    if share > MAX_UNKNOWN:
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ModelError(
            f"The tokenizer of model.name={name} maps {share:.0%} of the word pieces of "
            f"{source}'s training split to its unknown token "
            f"{getattr(tokenizer, 'unk_token', '')!r}: its vocabulary is missing or not this "
            f"language's (a save_pretrained folder needs its tokenizer files, e.g. vocab.txt "
            f"or tokenizer.json). Copy them into the folder, or use the model's hub id"
        )


def build_text_data(
    name: str,
    root: str | Path,
    *,
    tokenizer: Any,
    max_seq_length: int = 128,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    n_examples: int | None = None,
    download: bool = True,
    cache_dir: str | Path | None = None,
) -> Splits:
    """Build the tokenized train / val / test splits of GLUE task ``name``.

    Which examples land in which split depends on ``split_seed`` (and the options below)
    alone; neither the tokenizer nor ``max_seq_length`` moves an example.

    Args:
        name: the task (one of :data:`GLUE_TASKS`; ``"SST-2"``, ``"STS-B"`` work).
        root: data root holding ``<task>/*.parquet`` or ``glue_data/<TASK>/*.tsv``.
        tokenizer: a Hugging Face tokenizer (``AutoTokenizer.from_pretrained(...)``) with a
            pad token.
        max_seq_length: tokens per example after truncation (pairs: longest first).
        val_fraction: part of the official training split held out as ``val`` (stratified
            by class; STS-B by the score's integer part); 0 leaves ``val`` empty.
        split_seed: seeds the held-out ``val`` and the ``n_examples`` subset; recorded as
            ``meta["split_seed"]``.
        n_examples: keep a random n of the training part (the first n of a ``split_seed``
            permutation, nested as n grows); ``val`` and ``test`` are unchanged.
        download: fetch a task found in neither layout with ``datasets`` (written to
            ``root/<task>/`` in the hub layout); with False the network is never used.
        cache_dir: where the token ids are cached (default ``root/.cache/text``; any file
            there may be deleted, it is recomputed).

    Raises:
        DataError: unknown task, bad option, or data that is missing or corrupt.
        ModelError: a tokenizer without a pad token.
    """
    key = canonical_name(name)
    split_seed = check_split_options(val_fraction, n_examples, split_seed)
    if int(max_seq_length) < 8:
        raise DataError(f"max_seq_length must be >= 8, got {max_seq_length}.")
    max_len = int(max_seq_length)
    pad_id = _pad_id(tokenizer)
    root = Path(root).expanduser()
    cache = Path(cache_dir).expanduser() if cache_dir is not None else root / ".cache" / "text"
    source = locate_glue(key, root, download=download)
    task = source.task
    encoded = {s: encode_split(source, s, tokenizer, max_len, cache) for s in task.splits}
    _refuse_unknown_words(encoded["train"], tokenizer, source.folder)
    splits = _text_splits(task, encoded, pad_id, val_fraction, split_seed, n_examples)
    splits.meta = _text_meta(
        splits, source, tokenizer, val_fraction, split_seed, n_examples, max_len
    )
    return splits


def _text_splits(
    task: GlueTask,
    encoded: dict[str, Encoded],
    pad_id: int,
    val_fraction: float,
    split_seed: int,
    n_examples: int | None,
) -> Splits:
    """The splits' views of the tokenized official splits: ``val`` held out of the training
    split, the ``n_examples`` subset of the rest, the validation split(s) as ``test``."""
    train_rows, val_rows = _held_out(task, encoded["train"].labels, val_fraction, split_seed)
    train_rows = seeded_subset(train_rows, n_examples, split_seed)

    def view(split: str, rows: np.ndarray | None = None) -> EncodedText:
        return EncodedText(encoded[split], rows, pad_token_id=pad_id)

    test_split, *others = task.val_splits
    extra = {s.split("_")[-1]: view(s) for s in others}  # mnli: {"mismatched": ...}
    return Splits(
        view("train", train_rows),
        view("train", val_rows),
        view(test_split),
        num_classes=task.num_labels,
        extra_test=extra,
        regression=task.is_regression,
    )


def _text_meta(
    splits: Splits,
    source: GlueSource,
    tokenizer: Any,
    val_fraction: float,
    split_seed: int,
    n_examples: int | None,
    max_len: int,
) -> dict[str, Any]:
    """:func:`build_text_data`'s ``meta``: the task and its files, the splits' sizes, the
    options and the tokenizer."""
    task, extra = source.task, splits.extra_test
    return {
        "dataset": task.name,
        "task": task.name,
        "layout": source.layout,
        "downloaded": source.downloaded,
        "source": str(source.folder),
        "n_train": len(splits.train),
        "n_val": len(splits.val),
        "n_test": len(splits.test),
        **{f"n_test_{k}": len(v) for k, v in extra.items()},
        "test_split": task.val_splits[0],
        "extra_test": {k: f"test_{k}" for k in extra},
        "val_fraction": val_fraction,
        "split_seed": split_seed,
        "n_examples": n_examples,
        "max_seq_length": max_len,
        **_tokenizer_meta(tokenizer),
        "num_labels": task.num_labels,
        "is_regression": task.is_regression,
        "classes": list(task.classes),
        "synthetic": task is POLARITY,
    }


def _pad_id(tokenizer: Any) -> int:
    """The tokenizer's pad token id; a tokenizer without one is refused."""
    pad_id = getattr(tokenizer, "pad_token_id", None)
    if pad_id is None:
        raise ModelError(
            f"The tokenizer {getattr(tokenizer, 'name_or_path', type(tokenizer).__name__)} "
            f"has no pad token, which batches of unequal lengths need: set tokenizer.pad_token."
        )
    return int(pad_id)


def _tokenizer_meta(tokenizer: Any) -> dict[str, Any]:
    return {
        "tokenizer": str(getattr(tokenizer, "name_or_path", "")),
        "tokenizer_class": type(tokenizer).__name__,
        "vocab_size": len(tokenizer),
        "pad_token_id": _pad_id(tokenizer),
    }


__all__ = [
    "CACHE_VERSION",
    "GLUE_FOLDER",
    "GLUE_TASKS",
    "HUB_REPO",
    "POLARITY",
    "SPLITS",
    "TEXT_TASKS",
    "DataError",
    "Encoded",
    "EncodedText",
    "GlueSource",
    "GlueTask",
    "PadCollate",
    "Splits",
    "TsvLayout",
    "build_text_data",
    "canonical_name",
    "collate",
    "encode_split",
    "locate_glue",
    "read_glue",
    "read_split",
    "tokenizer_fingerprint",
]
