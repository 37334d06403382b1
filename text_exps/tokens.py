"""GLUE splits tokenized once and cached: :func:`encode_split` tokenizes every example of an
official split (pairs as pairs, truncated to ``max_seq_length``, unpadded) into one
:class:`Encoded` and caches its ids in ``cache_dir`` under a key of the tokenizer
(:func:`tokenizer_fingerprint`), ``max_seq_length`` and the data files' size and mtime; a
cache file whose checksum or key does not match is recomputed, never trusted."""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from common.io import load_arrays, save_arrays
from text_exps.glue import GlueSource, GlueTask, read_split

CACHE_VERSION = 1  # bump when the cache file's contents change meaning
_CHUNK = 2048  # examples per tokenizer call: batched (fast in Rust) but bounded in memory


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


__all__ = ["CACHE_VERSION", "Encoded", "encode_split", "tokenizer_fingerprint"]
