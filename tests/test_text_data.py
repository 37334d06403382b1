"""text_exps.data: GLUE read from both real layouts (hub parquet, original TSVs) written by the
fixtures, tokenized by a tiny BERT tokenizer, cached, split and padded; errors are one line."""

from __future__ import annotations

import csv
import os
from collections import Counter

import datasets
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, Subset
from transformers import AutoTokenizer

from common.batches import batch_size, slice_batch, to_device
from common.errors import ModelError, UserError
from tests.text_fixtures import (
    CLASSES,
    FOLDER,
    TASKS,
    TEXT,
    WORDS,
    glue_frames,
    tsv_files,
    write_glue,
    write_hub,
    write_tokenizer,
    write_tsv,
)
from text_exps.data import (
    GLUE_TASKS,
    HUB_REPO,
    SPLITS,
    DataError,
    EncodedText,
    build_text_data,
    canonical_name,
    collate,
    read_glue,
    tokenizer_fingerprint,
)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """``datasets.load_dataset`` fails at once, as offline, and records its calls."""
    calls: list[tuple] = []

    def offline(*args, **kwargs):
        calls.append(args)
        raise ConnectionError("network unreachable (test)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    return calls


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    return write_tokenizer(tmp_path_factory.mktemp("tok") / "bert-tiny")


@pytest.fixture
def tok(tok_dir):
    return AutoTokenizer.from_pretrained(str(tok_dir))


@pytest.fixture(scope="module")
def frames():
    return {t: glue_frames(t) for t in TASKS}


@pytest.fixture(scope="module")
def roots(tmp_path_factory, frames):
    """The same examples of every task in the hub layout and in the GLUE layout."""
    hub, glue = tmp_path_factory.mktemp("hub"), tmp_path_factory.mktemp("glue")
    for t, f in frames.items():
        write_hub(hub, t, f)
        write_glue(glue, t, f)
    return {"hub": hub, "glue": glue}


@pytest.fixture
def calls(monkeypatch, tok):
    """The number of times any tokenizer of ``tok``'s class is called."""
    cls, count = type(tok), Counter()
    original = cls.__call__

    def counting(self, *args, **kwargs):
        count["calls"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, "__call__", counting)
    return count


def build(name, root, tok, **kw):
    kw.setdefault("download", False)
    return build_text_data(name, root, tokenizer=tok, **kw)


def items(dataset):
    return [dataset[i] for i in range(len(dataset))]


def assert_same_items(a, b):
    assert len(a) == len(b)
    for x, y in zip(items(a), items(b), strict=True):
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]) and x[k].dtype == y[k].dtype, k


# --------------------------------------------------------------------------- registry, names


def test_registry_matches_the_hub():
    assert list(GLUE_TASKS) == list(TASKS)
    for name, task in GLUE_TASKS.items():
        assert task.text == TEXT[name] and task.classes == CLASSES[name]
        assert task.folder == FOLDER[name]
        assert set(task.tsv.files) == set(tsv_files(name)) == set(task.splits)
    assert GLUE_TASKS["stsb"].is_regression and GLUE_TASKS["stsb"].num_labels == 1
    assert GLUE_TASKS["mnli"].num_labels == 3 and GLUE_TASKS["rte"].num_labels == 2
    assert GLUE_TASKS["mnli"].val_splits == ("validation_matched", "validation_mismatched")


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("SST-2", "sst2"),
        ("sst_2", "sst2"),
        ("STS-B", "stsb"),
        ("CoLA", "cola"),
        ("glue/rte", "rte"),
    ],
)
def test_canonical_name(name, key):
    assert canonical_name(name) == key


def test_unknown_name_suggests():
    with pytest.raises(DataError, match=r"Did you mean 'sst2'") as e:
        canonical_name("sst3")
    assert isinstance(e.value, UserError) and "\n" not in str(e.value)


# --------------------------------------------------------------------------- both layouts


@pytest.mark.parametrize("task", TASKS)
def test_both_layouts_give_the_hub_frames(task, roots, frames):
    hub = read_glue(task, roots["hub"], download=False)
    glue = read_glue(task, roots["glue"], download=False)
    assert list(hub) == list(glue) == ["train", *GLUE_TASKS[task].val_splits]
    for split, want in frames[task].items():
        pd.testing.assert_frame_equal(hub[split], glue[split])
        got = hub[split]
        assert list(got.columns) == [*TEXT[task], "label", "idx"]
        for col in TEXT[task]:
            assert got[col].tolist() == want[col].tolist()
        np.testing.assert_array_equal(got["label"].to_numpy(), want["label"].to_numpy())
        assert got["label"].dtype == (np.float32 if task == "stsb" else np.int64)
        np.testing.assert_array_equal(got["idx"].to_numpy(), np.arange(len(want)))
    assert 'he said "hi" , ok' in hub["train"][TEXT[task][0]].tolist()  # quotes kept
    assert "NA" in glue["train"][TEXT[task][0]].tolist()  # not a missing value


@pytest.mark.parametrize("task", ["mnli", "qnli", "rte"])
def test_label_strings_map_to_the_hub_ids(task, roots):
    """The TSVs' label words, read raw, against the ids the loader gives (hub's order)."""
    name = "dev_matched.tsv" if task == "mnli" else "dev.tsv"
    raw = pd.read_csv(
        roots["glue"] / "glue_data" / FOLDER[task] / name,
        sep="\t",
        quoting=csv.QUOTE_NONE,
        dtype=str,
    )
    words = raw["gold_label" if task == "mnli" else "label"].tolist()
    order = {
        "mnli": ["entailment", "neutral", "contradiction"],
        "qnli": ["entailment", "not_entailment"],
        "rte": ["entailment", "not_entailment"],
    }[task]
    split = "validation_matched" if task == "mnli" else "validation"
    got = read_glue(task, roots["glue"], download=False)[split]["label"].tolist()
    assert got == [order.index(w) for w in words]
    assert set(words) == set(order)


def test_tsv_rows_with_a_missing_field_are_dropped_as_the_hub_did(tmp_path):
    """A short row or an empty label is skipped; idx stays the row's number in the file; a
    row with an extra tab keeps its first fields."""
    folder = tmp_path / "glue_data" / "RTE"
    folder.mkdir(parents=True)
    rows = [
        "index\tsentence1\tsentence2\tlabel",
        "0\ta cat\tthe dog\tentailment",
        "1\tshort row",
        "2\ta\tb\t",
        "3\tthe mat\tit sat\tnot_entailment\textra",
        "4\tNA\tnull\tentailment",
    ]
    (folder / "train.tsv").write_text("\n".join(rows) + "\n")
    (folder / "dev.tsv").write_text("\n".join(rows[:2]) + "\n")
    train = read_glue("rte", tmp_path, download=False)["train"]
    assert train["idx"].tolist() == [0, 3, 4]
    assert train["label"].tolist() == [0, 1, 0]
    assert train["sentence1"].tolist() == ["a cat", "the mat", "NA"]
    assert train["sentence2"].tolist() == ["the dog", "it sat", "null"]


@pytest.mark.parametrize("task", ["cola", "mrpc", "stsb", "mnli"])
def test_both_layouts_give_the_same_tokens(task, roots, tok):
    a, b = build(task, roots["hub"], tok), build(task, roots["glue"], tok)
    assert a.meta["layout"] == "hub" and b.meta["layout"] == "glue"
    for split in a.split_names:
        assert_same_items(getattr(a, split), getattr(b, split))
    assert a.meta["source"].endswith(task) and b.meta["source"].endswith(FOLDER[task])


def test_hub_layout_is_preferred_when_both_are_there(tmp_path, frames, tok):
    write_hub(tmp_path, "rte", frames["rte"])
    write_glue(tmp_path, "rte", frames["rte"])
    assert build("rte", tmp_path, tok).meta["layout"] == "hub"
    (tmp_path / "rte" / "validation-00000-of-00001.parquet").unlink()  # hub incomplete
    assert build("rte", tmp_path, tok).meta["layout"] == "glue"


# --------------------------------------------------------------------------- splits


def test_validation_split_is_the_test_set(roots, frames, tok):
    splits = build("rte", roots["glue"], tok)
    dev = frames["rte"]["validation"]
    assert len(splits.test) == splits.meta["n_test"] == len(dev)
    np.testing.assert_array_equal(splits.labels("test"), dev["label"].to_numpy())
    np.testing.assert_array_equal(splits.test.idx, dev["idx"].to_numpy())
    assert splits.meta["test_split"] == "validation" and splits.meta["extra_test"] == {}
    assert splits.num_classes == 2 and not splits.regression
    for split in SPLITS:
        assert set(splits.labels(split).tolist()) <= {0, 1}  # no hidden test labels (-1)


def test_mnli_reports_matched_and_mismatched(roots, frames, tok):
    splits = build("MNLI", roots["hub"], tok)
    f = frames["mnli"]
    assert splits.meta["test_split"] == "validation_matched"
    assert splits.meta["extra_test"] == {"mismatched": "test_mismatched"}
    mismatched = getattr(splits, splits.meta["extra_test"]["mismatched"])
    assert mismatched is splits.extra_test["mismatched"]
    assert splits.split_names == (*SPLITS, "test_mismatched")
    assert splits.meta["n_test_mismatched"] == len(mismatched) == len(f["validation_mismatched"])
    np.testing.assert_array_equal(splits.test.labels, f["validation_matched"]["label"])
    np.testing.assert_array_equal(
        splits.labels("test_mismatched"), f["validation_mismatched"]["label"]
    )
    assert splits.num_classes == 3
    with pytest.raises(AttributeError):
        _ = splits.test_nothing
    with pytest.raises(ValueError, match="test_mismatched"):
        splits.labels("validation")


def test_val_is_a_stratified_seeded_part_of_train(roots, frames, tok, tmp_path):
    y = frames["mnli"]["train"]["label"].to_numpy()
    splits = build("mnli", roots["hub"], tok, val_fraction=0.25, split_seed=3)
    train, val = splits.train.rows, splits.val.rows
    assert len(val) == 15 and len(train) == 45 and not set(train) & set(val)
    assert sorted([*train, *val]) == list(range(60))
    assert Counter(y[val].tolist()) == {0: 5, 1: 5, 2: 5}  # stratified: 20 of each class
    np.testing.assert_array_equal(splits.labels("val"), y[val])
    assert splits.meta["n_val"] == 15 and splits.meta["split_seed"] == 3
    # the same split_seed: the same val, whatever the layout, tokenizer or sequence length
    # (another vocabulary: the same words at other ids; a one-word one is now refused)
    other_words = ["cat", *reversed(WORDS)]
    other_tok = AutoTokenizer.from_pretrained(str(write_tokenizer(tmp_path / "t2", other_words)))
    again = build("mnli", roots["glue"], other_tok, val_fraction=0.25, split_seed=3)
    shorter = build("mnli", roots["hub"], tok, val_fraction=0.25, split_seed=3, max_seq_length=8)
    np.testing.assert_array_equal(again.val.rows, val)
    np.testing.assert_array_equal(shorter.val.rows, val)
    assert not np.array_equal(build("mnli", roots["hub"], tok, val_fraction=0.25).val.rows, val)
    assert len(build("mnli", roots["hub"], tok, val_fraction=0.0).val) == 0


def test_stsb_has_float_targets_and_binned_strata(roots, frames, tok):
    splits = build("STS-B", roots["glue"], tok, val_fraction=0.25)
    assert splits.regression and splits.num_classes == 1
    assert all(splits.labels(s) is None for s in SPLITS)
    item = splits.test[0]
    assert item["labels"].dtype == torch.float32 and item["labels"].dim() == 0
    dev = frames["stsb"]["validation"]["label"].to_numpy()
    np.testing.assert_array_equal(splits.test.labels, dev)
    scores = frames["stsb"]["train"]["label"].to_numpy()
    assert Counter(np.floor(scores[splits.val.rows]).tolist()) == {b: 3 for b in range(5)}
    batch = next(iter(DataLoader(splits.train, batch_size=4, collate_fn=collate(splits.train))))
    assert batch["labels"].dtype == torch.float32 and batch["labels"].shape == (4,)


def test_n_examples_is_a_seeded_subset_of_train(roots, tok):
    full = build("cola", roots["hub"], tok)
    small = build("cola", roots["hub"], tok, n_examples=10)
    smaller = build("cola", roots["hub"], tok, n_examples=5)
    assert len(small.train) == small.meta["n_train"] == 10
    assert set(small.train.rows) <= set(full.train.rows)
    assert set(smaller.train.rows) <= set(small.train.rows)  # nested as n grows
    assert small.train.rows.tolist() != list(full.train.rows[:10])  # random, not the first n
    np.testing.assert_array_equal(small.val.rows, full.val.rows)
    assert len(small.test) == len(full.test)
    assert small.train_eval is small.train


# --------------------------------------------------------------------------- tokens, batches


def test_pairs_are_encoded_as_pairs_and_batches_padded_to_their_longest(roots, frames, tok):
    splits = build("mrpc", roots["hub"], tok)
    ds = splits.test
    f = frames["mrpc"]["validation"]
    for i in (0, 3, 7):
        want = tok(f["sentence1"][i], f["sentence2"][i], truncation=True, max_length=128)
        got = ds[i]
        assert got["input_ids"].tolist() == want["input_ids"]
        assert got["token_type_ids"].tolist() == want["token_type_ids"]
        assert 1 in got["token_type_ids"].tolist()
        assert got["input_ids"].dtype == torch.int64 and got["labels"].dtype == torch.int64
    loader = DataLoader(ds, batch_size=5, collate_fn=collate(ds))
    for start, batch in zip(range(0, len(ds), 5), loader, strict=True):
        lengths = [len(ds[i]["input_ids"]) for i in range(start, min(start + 5, len(ds)))]
        b, length = batch["input_ids"].shape
        assert (b, length) == (len(lengths), max(lengths)) and length < 128
        assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
        assert batch["attention_mask"].sum(1).tolist() == lengths
        for row, n in enumerate(lengths):
            assert (batch["input_ids"][row, n:] == tok.pad_token_id).all()
            assert (batch["token_type_ids"][row, n:] == 0).all()
            assert batch["input_ids"][row, n - 1] == tok.sep_token_id
    half = slice_batch(batch, 0, 1)
    assert batch_size(half) == 1 and half["input_ids"].shape[1] == length
    assert to_device(batch, "cpu")["labels"].shape == (b,)


def test_single_sentences_and_truncation(roots, tok):
    splits = build("cola", roots["hub"], tok, max_seq_length=8)
    lengths = splits.train.lengths
    assert lengths.max() == 8 and (lengths <= 8).all()
    assert all((splits.train[i]["token_type_ids"] == 0).all() for i in range(len(splits.train)))
    long = build("cola", roots["hub"], tok)
    assert long.train.lengths.max() > 8


def test_no_token_type_ids_when_the_tokenizer_gives_none(roots, tmp_path):
    path = write_tokenizer(tmp_path / "no-types", model_input_names=["input_ids", "attention_mask"])
    tok = AutoTokenizer.from_pretrained(str(path))
    splits = build("rte", roots["hub"], tok)
    assert set(splits.test[0]) == {"input_ids", "attention_mask", "labels"}
    batch = collate(splits.test)([splits.test[0], splits.test[1]])
    assert set(batch) == {"input_ids", "attention_mask", "labels"}


def test_collate_finds_the_pad_id_through_wrappers(roots, tok):
    splits = build("rte", roots["hub"], tok)
    wrapped = Subset(Subset(splits.train, [0, 1, 2]), [0, 1])
    assert collate(wrapped).pad_token_id == tok.pad_token_id == splits.meta["pad_token_id"]
    with pytest.raises(TypeError, match="EncodedText"):
        collate(Subset(list(range(3)), [0]))
    assert isinstance(splits.train, EncodedText)


# --------------------------------------------------------------------------- the token cache


def cache_files(root, task):
    return sorted((root / ".cache" / "text").glob(f"{task}-*.npz"))


def test_cache_is_reused(tmp_path, frames, tok, calls):
    write_glue(tmp_path, "mnli", frames["mnli"])
    first = build("mnli", tmp_path, tok)
    assert calls["calls"] == 3  # train, matched, mismatched: one chunk each
    assert len(cache_files(tmp_path, "mnli")) == 3
    second = build("mnli", tmp_path, tok, val_fraction=0.2, split_seed=1)  # a new split
    assert calls["calls"] == 3  # nothing tokenized again
    assert_same_items(first.test, second.test)
    assert_same_items(first.test_mismatched, second.test_mismatched)
    reloaded = AutoTokenizer.from_pretrained(tok.name_or_path)  # the same tokenizer again
    build("mnli", tmp_path, reloaded)
    assert calls["calls"] == 3


def test_cache_is_invalidated(tmp_path, frames, tok, calls):
    write_hub(tmp_path, "rte", frames["rte"])
    build("rte", tmp_path, tok)
    assert calls["calls"] == 2
    build("rte", tmp_path, tok, max_seq_length=16)
    assert calls["calls"] == 4
    other_words = ["mat", *reversed(WORDS)]  # another vocabulary (the same words, other ids)
    other = AutoTokenizer.from_pretrained(str(write_tokenizer(tmp_path / "other", other_words)))
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(tok)
    build("rte", tmp_path, other)
    assert calls["calls"] == 6
    cased = AutoTokenizer.from_pretrained(
        str(write_tokenizer(tmp_path / "bert-tiny", do_lower_case=False))
    )
    assert tokenizer_fingerprint(cased) != tokenizer_fingerprint(tok)
    # new data in the training file: train tokenized again, validation reused
    frame = frames["rte"]["train"].assign(sentence1="the cat")
    path = tmp_path / "rte" / "train-00000-of-00001.parquet"
    frame.to_parquet(path, index=False)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    splits = build("rte", tmp_path, tok)
    assert calls["calls"] == 7
    assert splits.train[0]["input_ids"].tolist()[:3] == tok("the cat")["input_ids"][:3]


@pytest.mark.parametrize("damage", ["flip", "rewritten", "truncate", "empty", "foreign"])
def test_damaged_cache_is_recomputed(tmp_path, frames, tok, calls, damage):
    write_glue(tmp_path, "sst2", frames["sst2"])
    first = build("sst2", tmp_path, tok)
    assert calls["calls"] == 2
    path = next(p for p in cache_files(tmp_path, "sst2") if "-train-" in p.name)
    data = bytearray(path.read_bytes())
    if damage == "flip":  # a flipped bit inside the token ids
        data[len(data) // 2] ^= 0x01
    elif damage == "rewritten":  # a valid archive, other ids, the old checksum and key
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["input_ids"] = arrays["input_ids"][::-1].copy()
        with open(path, "wb") as f:
            np.savez(f, **arrays)
        data = bytearray(path.read_bytes())
    elif damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "empty":
        data = bytearray()
    else:  # another split's valid cache file under this name: its key does not match
        other = next(p for p in cache_files(tmp_path, "sst2") if "-validation-" in p.name)
        data = bytearray(other.read_bytes())
    path.write_bytes(bytes(data))
    again = build("sst2", tmp_path, tok)
    assert calls["calls"] == 3  # the training split only
    assert_same_items(first.train, again.train)
    build("sst2", tmp_path, tok)
    assert calls["calls"] == 3  # and cached again


# --------------------------------------------------------------------------- errors, download


def test_missing_data_is_one_error_naming_both_layouts(tmp_path, tok, no_network):
    with pytest.raises(DataError) as e:
        build("rte", tmp_path, tok)
    msg = str(e.value)
    assert "\n" not in msg and not no_network
    assert str(tmp_path / "rte") in msg and str(tmp_path / "glue_data" / "RTE") in msg
    assert "train-00000-of-00001.parquet" in msg and "validation-00000-of-00001.parquet" in msg
    assert "train.tsv" in msg and "dev.tsv" in msg and "download=False" in msg
    assert HUB_REPO in msg and "download_glue_data.py" in msg
    with pytest.raises(DataError, match=r"dev_matched.tsv and dev_mismatched.tsv"):
        build("mnli", tmp_path, tok)


def test_failed_download_is_the_same_one_error(tmp_path, tok, no_network):
    with pytest.raises(DataError) as e:
        build("cola", tmp_path, tok, download=True)
    msg = str(e.value)
    assert no_network == [(HUB_REPO, "cola")]
    assert "ConnectionError: network unreachable (test)" in msg
    assert "glue_data" in msg and "train-00000-of-00001.parquet" in msg and "\n" not in msg


def test_download_is_written_in_the_hub_layout(tmp_path, frames, tok, monkeypatch):
    def hub(repo, task):
        names = CLASSES[task]
        out = {}
        for split, frame in frames[task].items():
            feats = {c: datasets.Value("string") for c in TEXT[task]}
            feats["label"] = datasets.ClassLabel(names=list(names))
            feats["idx"] = datasets.Value("int32")
            out[split] = datasets.Dataset.from_pandas(frame, features=datasets.Features(feats))
        return datasets.DatasetDict(out)

    monkeypatch.setattr(datasets, "load_dataset", hub)
    got = build("wnli", tmp_path, tok, download=True)
    assert got.meta["layout"] == "hub" and got.meta["downloaded"]
    assert (tmp_path / "wnli" / "validation-00000-of-00001.parquet").is_file()
    want_root = tmp_path / "reference"
    write_hub(want_root, "wnli", frames["wnli"])
    want = build("wnli", want_root, tok)
    for split in SPLITS:
        assert_same_items(getattr(got, split), getattr(want, split))
    monkeypatch.undo()  # offline again: the written files are read
    assert not build("wnli", tmp_path, tok).meta["downloaded"]


def test_corrupt_parquet_is_an_error_naming_it(tmp_path, frames, tok):
    write_hub(tmp_path, "mrpc", frames["mrpc"])
    path = tmp_path / "mrpc" / "validation-00000-of-00001.parquet"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match="is corrupt") as e:
        build("mrpc", tmp_path, tok)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_parquet_of_another_task_is_an_error(tmp_path, frames, tok):
    write_hub(tmp_path, "rte", frames["cola"] | {"validation": frames["cola"]["validation"]})
    with pytest.raises(DataError, match=r"lacks the column\(s\) sentence1, sentence2"):
        build("rte", tmp_path, tok)


def test_hidden_test_labels_are_refused(tmp_path, frames, tok):
    write_hub(tmp_path, "rte", frames["rte"])
    test = tmp_path / "rte" / "test-00000-of-00001.parquet"
    test.replace(tmp_path / "rte" / "validation-00000-of-00001.parquet")
    with pytest.raises(DataError, match=r"label -1 .*hidden test labels"):
        build("rte", tmp_path, tok)


@pytest.mark.parametrize("damage", ["label", "header", "encoding"])
def test_corrupt_tsv_is_an_error_naming_it(tmp_path, frames, tok, damage):
    folder = write_glue(tmp_path, "qnli", frames["qnli"])
    path = folder / "train.tsv"
    if damage == "label":
        lines = path.read_text().splitlines()
        lines[4] = lines[4].rsplit("\t", 1)[0] + "\tmaybe"
        path.write_text("\n".join(lines) + "\n")
        match = "'maybe'"
    elif damage == "header":
        frame = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str)
        write_tsv(path, frame.rename(columns={"question": "q"}))
        match = r"lacks the column\(s\) question"
    else:
        path.write_bytes(b"index\tquestion\tsentence\tlabel\n0\t\xff\xfe\tx\tentailment\n")
        match = "UnicodeDecodeError"
    with pytest.raises(DataError, match=match) as e:
        build("qnli", tmp_path, tok)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_bad_options(roots, tok):
    for kw, match in [
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"max_seq_length": 4}, "max_seq_length"),
        ({"n_examples": 0}, "n_examples"),
        ({"split_seed": -1}, "split_seed"),
        ({"val_fraction": 0.01}, "stratified"),
    ]:
        with pytest.raises(DataError, match=match):
            build("mnli", roots["hub"], tok, **kw)
    no_pad = AutoTokenizer.from_pretrained(tok.name_or_path)
    no_pad.pad_token = None
    with pytest.raises(ModelError, match="pad token"):
        build("rte", roots["hub"], no_pad)


def test_meta_describes_the_run(roots, tok):
    meta = build("sst2", roots["hub"], tok, n_examples=20, max_seq_length=32).meta
    assert meta["task"] == meta["dataset"] == "sst2" and meta["layout"] == "hub"
    assert (meta["n_train"], meta["n_val"], meta["n_test"]) == (20, 6, 20)
    assert meta["max_seq_length"] == 32 and meta["tokenizer"] == tok.name_or_path
    assert meta["vocab_size"] == len(tok) and meta["classes"] == ["negative", "positive"]
    assert not meta["synthetic"] and not meta["is_regression"] and meta["num_labels"] == 2


@pytest.mark.parametrize("name", ["../../rte", "/data/rte", "rte/..", "glue/../rte", "rte.tsv"])
def test_a_name_with_path_parts_is_refused_not_normalised_away(name):
    with pytest.raises(DataError, match="is not a task's name"):
        canonical_name(name)
    assert canonical_name("glue/SST-2") == "sst2" and canonical_name("sst_2") == "sst2"
