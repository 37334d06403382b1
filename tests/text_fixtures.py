"""Tiny GLUE tasks in both real on-disk layouts, and a tiny BERT tokenizer.

:func:`glue_frames` makes the examples of a task as the hub holds them (its text columns,
``label`` as class ids or float32 scores, ``idx`` int32); :func:`write_hub` writes them as a
snapshot of ``nyu-mll/glue`` (``<root>/<task>/<split>-00000-of-00001.parquet``, with the hidden
test split labelled -1), :func:`write_glue` as GLUE's original distribution
(``<root>/glue_data/<TASK>/train.tsv``, ``dev.tsv``, ``test.tsv``) with the original headers,
extra columns and label strings. The formats are spelt out here, not taken from
``text_exps.data``, so the tests check the loader against them.

Sentences are drawn from :data:`WORDS` (plus a word outside the vocabulary, a quoted phrase
and the sentence ``NA``, which a CSV reader must keep as text).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

# the last five are punctuation: BERT's basic tokenizer splits them off words
WORDS = (
    *("the", "a", "cat", "dog", "sat", "ran", "on", "mat", "is", "not", "good", "bad"),
    *("film", "very", "what", "why", "who", "did", "it", "was", "he", "she", "said"),
    *("hi", "ok", ".", ",", "?", '"'),
)
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# the hub's text columns, class names (none: a score 0-5) and validation splits, per task
TEXT = {
    "cola": ("sentence",),
    "sst2": ("sentence",),
    "mrpc": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"),
    "stsb": ("sentence1", "sentence2"),
    "mnli": ("premise", "hypothesis"),
    "qnli": ("question", "sentence"),
    "rte": ("sentence1", "sentence2"),
    "wnli": ("sentence1", "sentence2"),
}
CLASSES = {
    "cola": ("unacceptable", "acceptable"),
    "sst2": ("negative", "positive"),
    "mrpc": ("not_equivalent", "equivalent"),
    "qqp": ("not_duplicate", "duplicate"),
    "stsb": (),
    "mnli": ("entailment", "neutral", "contradiction"),
    "qnli": ("entailment", "not_entailment"),
    "rte": ("entailment", "not_entailment"),
    "wnli": ("not_entailment", "entailment"),
}
VALIDATION = {t: ("validation",) for t in TEXT} | {
    "mnli": ("validation_matched", "validation_mismatched")
}
FOLDER = {
    "cola": "CoLA",
    "sst2": "SST-2",
    "mrpc": "MRPC",
    "qqp": "QQP",
    "stsb": "STS-B",
    "mnli": "MNLI",
    "qnli": "QNLI",
    "rte": "RTE",
    "wnli": "WNLI",
}
TASKS = tuple(TEXT)


def sentence(rng: np.random.Generator, i: int) -> str:
    """3-12 words of :data:`WORDS`; every 7th has an unknown word, two are special cases."""
    if i == 3:
        return 'he said "hi" , ok'  # quotes that are not CSV quoting
    if i == 5:
        return "NA"  # a sentence, not a missing value
    words = list(rng.choice(WORDS[:-5], size=int(rng.integers(3, 13))))
    if i % 7 == 0:
        words.insert(1, "zebra")  # not in the vocabulary: [UNK]
    return " ".join(words)


def glue_frames(
    task: str, n_train: int = 60, n_val: int = 20, seed: int = 0
) -> dict[str, pd.DataFrame]:
    """The hub's train and validation split(s) of ``task``: texts, ``label``, ``idx``.

    Classes are balanced (example i has class i mod C before a shuffle); STS-B scores have
    3 decimals and every integer part 0-4 equally often.
    """
    rng = np.random.default_rng([seed, TASKS.index(task)])
    frames = {}
    for split, n in [("train", n_train)] + [(s, n_val) for s in VALIDATION[task]]:
        cols: dict[str, object] = {
            col: [sentence(rng, i + k) for i in range(n)] for k, col in enumerate(TEXT[task])
        }
        if CLASSES[task]:
            cols["label"] = rng.permutation(np.arange(n) % len(CLASSES[task])).astype(np.int64)
        else:
            whole = rng.permutation(np.arange(n) % 5)
            cols["label"] = np.round(whole + rng.uniform(0, 1, n), 3).astype(np.float32)
        cols["idx"] = np.arange(n, dtype=np.int32)
        frames[split] = pd.DataFrame(cols)
    return frames


def write_hub(root: str | Path, task: str, frames: dict[str, pd.DataFrame]) -> Path:
    """``frames`` as a snapshot of ``nyu-mll/glue``; the test split(s) get labels -1."""
    folder = Path(root) / task
    folder.mkdir(parents=True, exist_ok=True)
    tests = ("test_matched", "test_mismatched") if task == "mnli" else ("test",)
    hidden = {s: frames["train"].head(4).assign(label=-1) for s in tests}
    if not CLASSES[task]:
        hidden = {s: f.astype({"label": np.float32}) for s, f in hidden.items()}
    for split, frame in {**frames, **hidden}.items():
        frame.to_parquet(folder / f"{split}-00000-of-00001.parquet", index=False)
    return folder


def _label_text(task: str, y: np.ndarray) -> list[str]:
    """Labels as the original TSVs write them: names for the NLI tasks, else numbers."""
    if task in ("mnli", "qnli", "rte"):
        return [CLASSES[task][int(v)] for v in y]
    if task == "stsb":
        return [f"{float(v):.3f}" for v in y]
    return [str(int(v)) for v in y]


def _tsv_frame(task: str, frame: pd.DataFrame, dev: bool) -> pd.DataFrame:
    """One split in the columns, order and spelling of GLUE's original files."""
    n = len(frame)
    a = frame[TEXT[task][0]].tolist()
    b = frame[TEXT[task][1]].tolist() if len(TEXT[task]) > 1 else None
    label = _label_text(task, frame["label"].to_numpy())
    ids = [str(1000 + i) for i in range(n)]
    if task == "cola":  # no header: source, label, original judgement ('*' = unacceptable)
        star = ["*" if y == "0" else "" for y in label]
        return pd.DataFrame({0: ["gj04"] * n, 1: label, 2: star, 3: a})
    if task == "sst2":
        return pd.DataFrame({"sentence": a, "label": label})
    if task == "mrpc":
        cols = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
        return pd.DataFrame(dict(zip(cols, [label, ids, ids[::-1], a, b], strict=True)))
    if task == "qqp":
        cols = ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]
        return pd.DataFrame(dict(zip(cols, [ids, ids, ids[::-1], a, b, label], strict=True)))
    if task == "stsb":
        cols = "index genre filename year old_index source1 source2 sentence1 sentence2 score"
        values = [ids, ["main-captions"] * n, ["MSRvid"] * n, ["2012test"] * n, ids]
        values += [["none"] * n, ["none"] * n, a, b, label]
        return pd.DataFrame(dict(zip(cols.split(), values, strict=True)))
    if task == "mnli":
        parse = [f"( ( {s} ) )" for s in a]
        head = ["index", "promptID", "pairID", "genre"]
        head += ["sentence1_binary_parse", "sentence2_binary_parse"]
        head += ["sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]
        values = [ids, ids, [f"{i}n" for i in ids], ["fiction"] * n, parse, parse, parse, parse]
        values += [a, b]
        raters = ["label1", "label2", "label3", "label4", "label5"] if dev else ["label1"]
        cols = dict(zip(head, values, strict=True))
        cols |= {r: label for r in raters}
        cols["gold_label"] = label
        return pd.DataFrame(cols)
    # qnli: index question sentence label; rte, wnli: index sentence1 sentence2 label
    first, second = ("question", "sentence") if task == "qnli" else ("sentence1", "sentence2")
    return pd.DataFrame({"index": ids, first: a, second: b, "label": label})


def tsv_files(task: str) -> dict[str, str]:
    """Hub split -> file name in ``glue_data/<TASK>/`` (the test files are not listed)."""
    if task == "mnli":
        return {
            "train": "train.tsv",
            "validation_matched": "dev_matched.tsv",
            "validation_mismatched": "dev_mismatched.tsv",
        }
    return {"train": "train.tsv", "validation": "dev.tsv"}


def write_tsv(path: Path, frame: pd.DataFrame, *, header: bool = True, bom: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(
        path,
        sep="\t",
        quoting=csv.QUOTE_NONE,
        index=False,
        header=header,
        encoding="utf-8-sig" if bom else "utf-8",
    )


def write_glue(root: str | Path, task: str, frames: dict[str, pd.DataFrame]) -> Path:
    """``frames`` as GLUE's original ``glue_data/<TASK>/`` files (and a label-less test.tsv).

    MRPC's files start with a UTF-8 byte-order mark, as Microsoft's source file does.
    """
    folder = Path(root) / "glue_data" / FOLDER[task]
    for split, name in tsv_files(task).items():
        frame = _tsv_frame(task, frames[split], dev=split != "train")
        write_tsv(folder / name, frame, header=task != "cola", bom=task == "mrpc")
    tests = ["test_matched.tsv", "test_mismatched.tsv"] if task == "mnli" else ["test.tsv"]
    test = frames["train"].head(4)
    columns = {"index": range(4), **{c: test[c] for c in TEXT[task]}}
    for name in tests:  # GLUE's test files: an index and the texts, no label
        write_tsv(folder / name, pd.DataFrame(columns))
    return folder


def write_tokenizer(path: str | Path, words: list[str] | None = None, **kwargs) -> Path:
    """A word-level BERT tokenizer ([PAD] [UNK] [CLS] [SEP] [MASK] + ``words``), saved with
    ``save_pretrained`` for ``AutoTokenizer.from_pretrained(path)``."""
    from transformers import BertTokenizer

    vocab = SPECIAL + list(WORDS if words is None else words)
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, **kwargs)
    tokenizer.save_pretrained(str(path))
    return Path(path)
