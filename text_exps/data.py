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
recomputed, never trusted. Batches are padded to their longest sequence by :func:`collate`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from common.errors import (
    DataError,
    ModelError,
)  # DataError re-exported: the shared data error
from common.io import load_arrays, save_arrays
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

CACHE_VERSION = 1  # bump when the cache file's contents change meaning
_CHUNK = 2048  # examples per tokenizer call: batched (fast in Rust) but bounded in memory


# --------------------------------------------------------------------------- finding the files


# --------------------------------------------------------------------------- reading frames


# --------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class Encoded:
    """One official split, tokenized without padding; example i's ids are
    ``input_ids[offsets[i]:offsets[i + 1]]`` (all examples concatenated: one array to save
    and load, not a tensor per example)."""

    input_ids: np.ndarray  # (T,) int32
    offsets: np.ndarray  # (N + 1,) int64
    token_type_ids: np.ndarray | None  # (T,) int8, None when the tokenizer gives none
    labels: np.ndarray  # (N,) int64 class ids or float32 scores
    idx: np.ndarray  # (N,) int64, the hub's idx

    def __len__(self) -> int:
        return len(self.labels)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {k: getattr(self, k) for k in ("input_ids", "offsets", "labels", "idx")}
        if self.token_type_ids is not None:
            out["token_type_ids"] = self.token_type_ids
        return out


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of everything that decides a Hugging Face tokenizer's ids.

    Its class, ``name_or_path``, vocabulary (``get_vocab()``), lower-casing, special tokens
    and their ids, truncation side, model inputs and, for a tokenizers-backed one, its whole
    pipeline (normaliser, pre-tokenizer, post-processor, model) less the truncation and
    padding state that each call sets.
    """
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: (kv[1], kv[0]))
    record: dict[str, Any] = {
        "class": type(tokenizer).__name__,
        "name_or_path": str(getattr(tokenizer, "name_or_path", "")),
        "vocab": _sha256(json.dumps(vocab, ensure_ascii=False).encode("utf-8")),
        "do_lower_case": getattr(tokenizer, "do_lower_case", None),
        "special": {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
        "special_ids": list(tokenizer.all_special_ids),
        "truncation_side": getattr(tokenizer, "truncation_side", None),
        "model_input_names": list(getattr(tokenizer, "model_input_names", [])),
    }
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        pipeline = json.loads(backend.to_str())
        pipeline.pop("truncation", None)  # set by every call with truncation=True
        pipeline.pop("padding", None)
        record["backend"] = _sha256(json.dumps(pipeline, sort_keys=True).encode("utf-8"))
    return _sha256(json.dumps(record, sort_keys=True).encode("utf-8"))


def _encode(frame: pd.DataFrame, task: GlueTask, tokenizer: Any, max_len: int) -> Encoded:
    """Tokenize every example of ``frame``: ``tokenizer(a[, b], truncation, max_length)``."""
    with_types = "token_type_ids" in getattr(tokenizer, "model_input_names", ())
    ids: list[list[int]] = []
    types: list[list[int]] = []
    for start in range(0, len(frame), _CHUNK):
        part = frame.iloc[start : start + _CHUNK]
        enc = tokenizer(
            *(part[c].tolist() for c in task.text),  # a pair task is encoded as a pair
            truncation=True,
            max_length=max_len,
            return_attention_mask=False,  # all ones before padding; collate builds it
            return_token_type_ids=with_types,
        )
        ids += enc["input_ids"]
        if with_types:
            types += enc["token_type_ids"]
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.fromiter(chain.from_iterable(ids), dtype=np.int32, count=int(offsets[-1]))
    flat_types = None
    if with_types:
        flat_types = np.fromiter(chain.from_iterable(types), dtype=np.int8, count=len(flat))
    return Encoded(
        flat, offsets, flat_types, frame["label"].to_numpy(), frame["idx"].to_numpy(np.int64)
    )


def _load(path: Path, key: str) -> Encoded | None:
    """The cached split, or None when absent, unreadable, damaged or for another key."""
    arrays = load_arrays(path, key)
    if arrays is None:
        return None
    try:
        encoded = Encoded(
            arrays["input_ids"],
            arrays["offsets"],
            arrays.get("token_type_ids"),
            arrays["labels"],
            arrays["idx"],
        )
    except KeyError:
        return None
    n, total = len(encoded.labels), len(encoded.input_ids)
    if len(encoded.offsets) != n + 1 or len(encoded.idx) != n or encoded.offsets[-1] != total:
        return None
    return encoded


def _cache_key(source: GlueSource, split: str, tokenizer_key: str, max_len: int) -> str:
    files = []
    for f in source.files[split]:
        st = f.stat()
        files.append([str(f.relative_to(source.folder.parent)), st.st_size, st.st_mtime_ns])
    record = {
        "version": CACHE_VERSION,
        "task": source.task.name,
        "split": split,
        "layout": source.layout,
        "files": files,
        "tokenizer": tokenizer_key,
        "max_seq_length": int(max_len),
    }
    return json.dumps(record, sort_keys=True)


def encode_split(
    source: GlueSource, split: str, tokenizer: Any, max_seq_length: int, cache_dir: Path
) -> Encoded:
    """Official split ``split`` tokenized, from the cache or computed (and then cached)."""
    key = _cache_key(source, split, tokenizer_fingerprint(tokenizer), max_seq_length)
    path = cache_dir / f"{source.task.name}-{split}-{_sha256(key.encode())[:16]}.npz"
    encoded = _load(path, key) if path.is_file() else None
    if encoded is None:
        encoded = _encode(read_split(source, split), source.task, tokenizer, max_seq_length)
        # a read-only cache folder: the run goes on, and tokenizes again next time
        with contextlib.suppress(OSError):
            save_arrays(path, encoded.arrays(), key)
    return encoded


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

    train_rows, val_rows = _held_out(task, encoded["train"].labels, val_fraction, split_seed)
    train_rows = seeded_subset(train_rows, n_examples, split_seed)

    def view(split: str, rows: np.ndarray | None = None) -> EncodedText:
        return EncodedText(encoded[split], rows, pad_token_id=pad_id)

    test_split, *others = task.val_splits
    extra = {s.split("_")[-1]: view(s) for s in others}  # mnli: {"mismatched": ...}
    splits = Splits(
        view("train", train_rows),
        view("train", val_rows),
        view(test_split),
        num_classes=task.num_labels,
        extra_test=extra,
        regression=task.is_regression,
    )
    splits.meta = {
        "dataset": task.name,
        "task": task.name,
        "layout": source.layout,
        "downloaded": source.downloaded,
        "source": str(source.folder),
        "n_train": len(splits.train),
        "n_val": len(splits.val),
        "n_test": len(splits.test),
        **{f"n_test_{k}": len(v) for k, v in extra.items()},
        "test_split": test_split,
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
    return splits


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
