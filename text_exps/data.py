"""The nine GLUE tasks behind one call: :func:`build_text_data` returns tokenized splits.

Each task is read from the first of these that is there:

1. the Hugging Face hub snapshot of ``nyu-mll/glue``:
   ``<root>/<task>/<split>-00000-of-00001.parquet`` with the hub's columns (the texts,
   ``label``, ``idx``), as ``hf download nyu-mll/glue --repo-type dataset --include
   '<task>/*' --local-dir <root>`` writes it;
2. the original GLUE distribution (what GLUE's ``download_glue_data.py`` writes):
   ``<root>/glue_data/<TASK>/train.tsv`` and ``dev.tsv`` (MNLI: ``dev_matched.tsv``,
   ``dev_mismatched.tsv``), read the way the hub's own conversion read them: tab-separated
   with no quoting, columns renamed to the hub's, label strings mapped to the hub's class ids,
   a row with a missing field or an empty label dropped, ``idx`` = the row's number in the
   file. Both layouts thus give the same frames (:func:`read_glue`);
3. with ``download=True``, ``datasets.load_dataset("nyu-mll/glue", task)``, written into
   layout 1 so the next run needs no network.

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
import csv
import difflib
import hashlib
import json
import re
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
    first_line,
)  # DataError re-exported: the shared data error
from common.io import atomic_path, check_regular_file, load_arrays, save_arrays
from common.splits import SPLITS, Splits, check_split_options, seeded_subset
from text_exps import synthetic

HUB_REPO = "nyu-mll/glue"  # datasets >= 4 runs no loading scripts: the parquet-only repo
GLUE_FOLDER = "glue_data"
CACHE_VERSION = 1  # bump when the cache file's contents change meaning
_CHUNK = 2048  # examples per tokenizer call: batched (fast in Rust) but bounded in memory


@dataclass(frozen=True)
class TsvLayout:
    """How the original GLUE distribution stores a task in ``glue_data/<folder>/``.

    Attributes:
        files: hub split name -> TSV file name (the test files are never read).
        columns: TSV column -> hub column, for the texts and the label.
        names: the column names of a file without a header line (CoLA); None: a header.
    """

    files: Mapping[str, str]
    columns: Mapping[str, str]
    names: tuple[str, ...] | None = None


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task as the hub lays it out, and where the original TSVs keep it.

    Attributes:
        name: hub config name (``sst2``), the key of :data:`GLUE_TASKS`.
        folder: folder of the original distribution (``SST-2``).
        text: the hub's text columns, one or a pair (encoded as a pair).
        classes: the hub's class names in id order; empty for STS-B (a float score 0-5).
        val_splits: the official validation splits, the first our ``test``.
        tsv: the original TSV layout (None: a task with only the hub layout).
    """

    name: str
    folder: str
    text: tuple[str, ...]
    classes: tuple[str, ...]
    val_splits: tuple[str, ...]
    tsv: TsvLayout | None

    @property
    def is_regression(self) -> bool:
        return not self.classes

    @property
    def num_labels(self) -> int:
        """Model outputs: the number of classes, 1 for the regression task."""
        return len(self.classes) or 1

    @property
    def splits(self) -> tuple[str, ...]:
        """The official splits read: train and the validation split(s)."""
        return ("train", *self.val_splits)


def _tsv(columns: Mapping[str, str], *, dev: Mapping[str, str] | None = None, **kw) -> TsvLayout:
    files = {"train": "train.tsv", **(dev or {"validation": "dev.tsv"})}
    return TsvLayout(files=files, columns=columns, **kw)


def _same(*names: str) -> dict[str, str]:
    return {n: n for n in names}


# Headers as GLUE's download_glue_data.py leaves them and the hub's conversion (the retired
# glue.py loading script of huggingface/datasets) read them. Unverified against the files
# themselves: that MRPC's train.tsv/dev.tsv start with the UTF-8 byte-order mark of Microsoft's
# msr_paraphrase_train.txt (the script copies its header line); the reader accepts either.
GLUE_TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in (
        # no header: source code, label 0/1, the original '*' judgement, sentence
        GlueTask(
            "cola",
            "CoLA",
            ("sentence",),
            ("unacceptable", "acceptable"),
            ("validation",),
            _tsv(
                _same("sentence", "label"),
                names=("source", "label", "original_label", "sentence"),
            ),
        ),
        # header: sentence label
        GlueTask(
            "sst2",
            "SST-2",
            ("sentence",),
            ("negative", "positive"),
            ("validation",),
            _tsv(_same("sentence", "label")),
        ),
        # header: Quality #1 ID #2 ID #1 String #2 String
        GlueTask(
            "mrpc",
            "MRPC",
            ("sentence1", "sentence2"),
            ("not_equivalent", "equivalent"),
            ("validation",),
            _tsv({"#1 String": "sentence1", "#2 String": "sentence2", "Quality": "label"}),
        ),
        # header: id qid1 qid2 question1 question2 is_duplicate
        GlueTask(
            "qqp",
            "QQP",
            ("question1", "question2"),
            ("not_duplicate", "duplicate"),
            ("validation",),
            _tsv({**_same("question1", "question2"), "is_duplicate": "label"}),
        ),
        # header: index genre filename year old_index source1 source2 sentence1 sentence2 score
        GlueTask(
            "stsb",
            "STS-B",
            ("sentence1", "sentence2"),
            (),
            ("validation",),
            _tsv({**_same("sentence1", "sentence2"), "score": "label"}),
        ),
        # header: index promptID pairID genre sentence{1,2}_binary_parse sentence{1,2}_parse
        # sentence1 sentence2 label1 [label2..label5 in dev] gold_label
        GlueTask(
            "mnli",
            "MNLI",
            ("premise", "hypothesis"),
            ("entailment", "neutral", "contradiction"),
            ("validation_matched", "validation_mismatched"),
            _tsv(
                {"sentence1": "premise", "sentence2": "hypothesis", "gold_label": "label"},
                dev={
                    "validation_matched": "dev_matched.tsv",
                    "validation_mismatched": "dev_mismatched.tsv",
                },
            ),
        ),
        # header: index question sentence label (QNLIv2; labels entailment / not_entailment)
        GlueTask(
            "qnli",
            "QNLI",
            ("question", "sentence"),
            ("entailment", "not_entailment"),
            ("validation",),
            _tsv(_same("question", "sentence", "label")),
        ),
        # header: index sentence1 sentence2 label (entailment / not_entailment)
        GlueTask(
            "rte",
            "RTE",
            ("sentence1", "sentence2"),
            ("entailment", "not_entailment"),
            ("validation",),
            _tsv(_same("sentence1", "sentence2", "label")),
        ),
        # header: index sentence1 sentence2 label (0 / 1; 1 = entailment, as on the hub)
        GlueTask(
            "wnli",
            "WNLI",
            ("sentence1", "sentence2"),
            ("not_entailment", "entailment"),
            ("validation",),
            _tsv(_same("sentence1", "sentence2", "label")),
        ),
    )
}


#: the generated task of :mod:`text_exps.synthetic` (hub layout only, written on demand)
POLARITY = GlueTask(
    synthetic.NAME, "", ("sentence",), ("negative", "positive"), ("validation",), None
)
#: every task ``data.name`` takes: GLUE's nine and the generated one
TEXT_TASKS: dict[str, GlueTask] = {**GLUE_TASKS, POLARITY.name: POLARITY}


def canonical_name(name: str) -> str:
    """The :data:`TEXT_TASKS` key of ``name`` (case, ``-``, ``_``, a ``glue`` prefix ignored).

    ``"SST-2"``, ``"sst_2"`` and ``"glue/sst2"`` are all ``"sst2"``; an unknown name is a
    :class:`DataError` with the closest known one.
    """
    text = str(name).strip()
    bare = text[len("glue/") :] if text.lower().startswith("glue/") else text
    if not re.fullmatch(r"[A-Za-z0-9 _-]+", bare):  # "../../rte" was read as rte
        raise DataError(
            f"data.name={name!r} is not a task's name (letters, digits, '-' and '_', e.g. "
            f"sst2, SST-2 or glue/sst2); the data's folder is data.root"
        )
    key = "".join(c for c in text.lower() if c.isalnum())
    if key.startswith("glue") and key[4:] in GLUE_TASKS:
        key = key[4:]
    if key in TEXT_TASKS:
        return key
    close = difflib.get_close_matches(key, TEXT_TASKS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise DataError(f"Unknown text task {name!r}.{hint} Known: {', '.join(TEXT_TASKS)}.")


# --------------------------------------------------------------------------- finding the files


@dataclass(frozen=True)
class GlueSource:
    """Where a task's official splits are read from: the layout and each split's files."""

    task: GlueTask
    layout: str  # "hub" (parquet) or "glue" (the original TSVs)
    folder: Path
    files: dict[str, tuple[Path, ...]]
    downloaded: bool = False


def _hub_name(split: str) -> str:
    return f"{split}-00000-of-00001.parquet"


def _hub_files(folder: Path, split: str) -> tuple[Path, ...]:
    """The parquet shards of ``split`` (one on the hub; ``-0000k-of-0000n`` if more)."""
    return tuple(sorted(folder.glob(f"{split}-[0-9]*-of-[0-9]*.parquet")))


def _find(task: GlueTask, root: Path) -> tuple[GlueSource | None, str]:
    """The first complete layout under ``root``, or None and what each layout lacks."""
    hub = root / task.name
    shards = {split: _hub_files(hub, split) for split in task.splits}
    if all(shards.values()):
        return GlueSource(task, "hub", hub, shards), ""
    if task.tsv is None:
        return None, f"the hub layout: {', '.join(str(hub / _hub_name(s)) for s in task.splits)}"
    glue = root / GLUE_FOLDER / task.folder
    tsvs = {split: (glue / task.tsv.files[split],) for split in task.splits}
    if all(f[0].is_file() for f in tsvs.values()):
        return GlueSource(task, "glue", glue, tsvs), ""
    hub_missing = [_hub_name(s) for s, f in shards.items() if not f]
    tsv_missing = [f[0].name for f in tsvs.values() if not f[0].is_file()]
    hub_files = " and ".join(str(hub / _hub_name(s)) for s in task.splits)
    tsv_files = " and ".join(task.tsv.files[s] for s in task.splits)
    layouts = (
        f"(1) the Hugging Face hub layout of {HUB_REPO}: {hub_files} (missing: "
        f"{', '.join(hub_missing)}), e.g. from `hf download {HUB_REPO} --repo-type dataset "
        f"--include '{task.name}/*' --local-dir {root}`; or (2) the original GLUE "
        f"distribution (GLUE's download_glue_data.py): {tsv_files} in {glue} (missing: "
        f"{', '.join(tsv_missing)})"
    )
    return None, layouts


def _download(task: GlueTask, root: Path) -> str:
    """Fetch ``task`` with ``datasets`` and write it in the hub layout; '' or why it failed."""
    try:
        import datasets  # only a download needs it (seconds to import)

        loaded = datasets.load_dataset(HUB_REPO, task.name)
        frames = {split: loaded[split].to_pandas() for split in task.splits}
    except Exception as e:  # offline, hub errors, a missing split: all one message
        return f" Downloading {HUB_REPO} ({task.name}) with datasets failed ({first_line(e)})."
    folder = root / task.name
    try:
        for split, frame in frames.items():
            with atomic_path(folder / _hub_name(split)) as tmp:
                frame.to_parquet(tmp, index=False)
    except OSError as e:
        raise DataError(
            f"Downloaded GLUE {task.name} but cannot write it to {folder} ({first_line(e)}): make "
            f"the data root writable or put the files there by hand."
        ) from None
    return ""


def locate_glue(name: str, root: str | Path, *, download: bool = True) -> GlueSource:
    """Where GLUE task ``name`` is under ``root`` (hub parquet, else the original TSVs).

    With neither there and ``download``, the task is fetched with ``datasets`` and written in
    the hub layout under ``root/<task>/``.

    Raises:
        DataError: unknown task, or no layout complete (one message naming both, the folders
            looked in and the files expected).
    """
    task = TEXT_TASKS[canonical_name(name)]
    root = Path(root).expanduser()
    if task is POLARITY:  # generated, never downloaded
        synthetic.ensure_polarity(root)
    source, layouts = _find(task, root)
    if source is not None:
        return source
    why = " download=False (data.download), so nothing is fetched."
    if download:
        why = _download(task, root)
        source, _ = _find(task, root)
        if source is not None and source.layout == "hub":
            return GlueSource(task, "hub", source.folder, source.files, downloaded=True)
    raise DataError(
        f"GLUE task {task.name!r} not found under {root} (looked in {root / task.name} and "
        f"{root / GLUE_FOLDER / task.folder}).{why} Put either layout there: {layouts}; or "
        f"run once with network access and download=True."
    )


# --------------------------------------------------------------------------- reading frames


def _labels(task: GlueTask, values: pd.Series, where: Path) -> np.ndarray:
    """Class ids (int64) or scores (float32) of a split, checked; strings -> the hub's ids.

    A label is a class name or an integer id, as the hub's conversion took it.
    """
    if task.is_regression:
        try:
            y = pd.to_numeric(values, errors="raise").to_numpy(dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise DataError(
                f"{where} holds a score that is not a number ({first_line(e)})."
            ) from None
        if not np.isfinite(y).all():
            raise DataError(f"{where} holds {int((~np.isfinite(y)).sum())} missing scores.")
        return y
    if pd.api.types.is_numeric_dtype(values.dtype):
        if values.isna().any():
            raise DataError(f"{where} holds {int(values.isna().sum())} missing labels.")
        y = values.to_numpy()
        if not np.array_equal(y, np.round(y)):
            raise DataError(f"{where} holds labels that are not class ids.")
        y = y.astype(np.int64)
    else:
        ids = {c: i for i, c in enumerate(task.classes)}
        out = []
        for v in values.tolist():
            text = str(v).strip()
            if text in ids:
                out.append(ids[text])
                continue
            try:
                out.append(int(text))
            except ValueError:
                raise DataError(
                    f"{where} holds the label {v!r}, not one of {', '.join(task.classes)} "
                    f"or a class id: the file is corrupt or belongs to another task."
                ) from None
        y = np.asarray(out, dtype=np.int64)
    bad = (y < 0) | (y >= len(task.classes))
    if bad.any():
        raise DataError(
            f"{where} holds the label {int(y[bad][0])} ({int(bad.sum())} such rows), outside "
            f"0..{len(task.classes) - 1} of {task.name}: GLUE's hidden test labels are -1, so "
            f"this may be a test split in place of a training or validation one."
        )
    return y


def _frame(task: GlueTask, texts: dict[str, pd.Series], y: np.ndarray, idx: Any) -> pd.DataFrame:
    """The one form both layouts give: the hub's text columns (str), label, idx (int64)."""
    cols = {c: texts[c].fillna("").to_numpy(dtype=object) for c in task.text}
    frame = pd.DataFrame({**cols, "label": y, "idx": np.asarray(idx, dtype=np.int64)})
    return frame.astype({c: "str" for c in task.text})


def _read_parquet(task: GlueTask, files: Sequence[Path]) -> pd.DataFrame:
    parts = []
    for path in files:
        try:
            check_regular_file(path)
            parts.append(pd.read_parquet(path))
        except Exception as e:  # pyarrow raises many kinds for a damaged file
            raise DataError(
                f"Cannot read {path} ({first_line(e)}). The file is corrupt: delete it and fetch "
                f"it again (hf download {HUB_REPO} --repo-type dataset --include "
                f"'{task.name}/*', or download=True)."
            ) from None
    frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    missing = [c for c in (*task.text, "label") if c not in frame.columns]
    if missing:
        raise DataError(
            f"{files[0]} lacks the column(s) {', '.join(missing)} of the {HUB_REPO} layout of "
            f"{task.name} (it has {', '.join(map(str, frame.columns))}): it belongs to another "
            f"task or was written by another tool."
        )
    idx = frame["idx"] if "idx" in frame.columns else np.arange(len(frame))
    y = _labels(task, frame["label"], files[0])
    return _frame(task, {c: frame[c] for c in task.text}, y, idx)


def _read_tsv(task: GlueTask, path: Path) -> pd.DataFrame:
    layout = task.tsv
    fix = (
        f"The file is corrupt or not GLUE's: replace it with the one from GLUE's "
        f"{task.folder}.zip (download_glue_data.py)."
    )
    try:
        check_regular_file(path)
        if layout.names is None:
            with open(path, encoding="utf-8-sig") as f:
                n_fields = len(f.readline().rstrip("\r\n").split("\t"))
        else:
            n_fields = len(layout.names)
        frame = pd.read_csv(
            path,
            sep="\t",
            quoting=csv.QUOTE_NONE,  # GLUE's texts hold quotes that are not CSV quoting
            header=None if layout.names else 0,
            names=list(layout.names) if layout.names else None,
            dtype=str,
            keep_default_na=False,  # "NA" and "null" are sentences, not missing values
            encoding="utf-8-sig",  # MRPC's header may start with a byte-order mark
            # the python engine marks a missing field NaN (the C engine: ""), and a row with
            # extra tabs keeps its first fields, as the hub's csv.DictReader did
            engine="python",
            on_bad_lines=lambda fields: fields[:n_fields],
        )
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, ValueError) as e:
        raise DataError(f"Cannot read {path} ({first_line(e)}). {fix}") from None
    missing = [c for c in layout.columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path} lacks the column(s) {', '.join(missing)} of GLUE's {task.folder} files "
            f"(its header: {', '.join(map(str, frame.columns))}). {fix}"
        )
    frame = frame.rename(columns=dict(layout.columns))[list(layout.columns.values())]
    idx = np.arange(len(frame))  # the row's number in the file, before any row is dropped
    # as the hub's conversion: a row with a missing field or an empty label is corrupt, dropped
    keep = frame.notna().all(axis=1) & (frame["label"].str.strip() != "")
    frame, idx = frame[keep.to_numpy()], idx[keep.to_numpy()]
    y = _labels(task, frame["label"], path)
    return _frame(task, {c: frame[c] for c in task.text}, y, idx)


def read_split(source: GlueSource, split: str) -> pd.DataFrame:
    """Official split ``split`` of ``source`` as a frame: the hub's text columns, ``label``
    (int64 class ids, float32 for STS-B) and ``idx`` (int64), whichever the layout."""
    files = source.files[split]
    if source.layout == "hub":
        return _read_parquet(source.task, files)
    return _read_tsv(source.task, files[0])


def read_glue(name: str, root: str | Path, *, download: bool = True) -> dict[str, pd.DataFrame]:
    """The official train and validation frames of GLUE task ``name`` (see :func:`read_split`).

    Raises:
        DataError: unknown task, data missing (and not downloadable) or corrupt.
    """
    source = locate_glue(name, root, download=download)
    return {split: read_split(source, split) for split in source.task.splits}


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
    pad_id = getattr(tokenizer, "pad_token_id", None)
    if pad_id is None:
        raise ModelError(
            f"The tokenizer {getattr(tokenizer, 'name_or_path', type(tokenizer).__name__)} "
            f"has no pad token, which batches of unequal lengths need: set tokenizer.pad_token."
        )
    max_len = int(max_seq_length)
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
        "tokenizer": str(getattr(tokenizer, "name_or_path", "")),
        "tokenizer_class": type(tokenizer).__name__,
        "vocab_size": len(tokenizer),
        "pad_token_id": int(pad_id),
        "num_labels": task.num_labels,
        "is_regression": task.is_regression,
        "classes": list(task.classes),
        "synthetic": task is POLARITY,
    }
    return splits


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
