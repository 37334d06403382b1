"""The GLUE tasks and their files: what each task is (columns, labels, metric) and where its
files are. Each task is read from the first of these that is there:

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
"""

from __future__ import annotations

import csv
import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from common.errors import DataError, first_line
from common.io import atomic_path, check_regular_file
from text_exps import synthetic

HUB_REPO = "nyu-mll/glue"  # datasets >= 4 runs no loading scripts: the parquet-only repo
GLUE_FOLDER = "glue_data"


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


__all__ = [
    "GLUE_FOLDER",
    "GLUE_TASKS",
    "HUB_REPO",
    "POLARITY",
    "TEXT_TASKS",
    "GlueSource",
    "GlueTask",
    "TsvLayout",
    "canonical_name",
    "locate_glue",
    "read_glue",
    "read_split",
]
