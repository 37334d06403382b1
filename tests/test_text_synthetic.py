"""The embedded text default: the generated ``polarity`` task and ``tiny-bert``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from common import run_rows
from common.errors import DataError
from common.train.cli import train_main
from text_exps import synthetic
from text_exps.data import build_text_data
from text_exps.models import build_text_model, load_tokenizer
from text_exps.task import CONFIGS, TASK

SPEC = synthetic.PolaritySpec(n_train=400, n_validation=100)
FILES = ("train-00000-of-00001.parquet", "validation-00000-of-00001.parquet")


def rule(sentence: str) -> int:
    """The label the module documents, recomputed from the words: the sign of the summed
    polarities, each flipped by a negator directly before it."""
    words, total = sentence.split(), 0
    for i, word in enumerate(words):
        polarity = (word in synthetic.POSITIVE) - (word in synthetic.NEGATIVE)
        if polarity and i > 0 and words[i - 1] in synthetic.NEGATORS:
            polarity = -polarity
        total += polarity
    assert total % 2 != 0, sentence  # one or three sentiment words: never a tie
    return int(total > 0)


def test_labels_follow_the_rule_but_for_the_flipped_fraction() -> None:
    frames = synthetic.polarity_frames(synthetic.PolaritySpec())
    both = pd.concat(frames.values())
    clean = np.array([rule(s) for s in both["sentence"]])
    flipped = np.mean(clean != both["label"].to_numpy())
    # 2500 labels, 10 % flipped: 4 standard deviations (0.006 each) either side
    assert 0.075 < flipped < 0.125
    assert 0.4 < both["label"].mean() < 0.6
    negated = both["sentence"].str.split().map(lambda w: bool(set(w) & set(synthetic.NEGATORS)))
    assert 0.2 < negated.mean() < 0.6  # negations are common enough to matter
    assert list(frames["validation"]["idx"]) == list(range(len(frames["validation"])))


def test_generation_is_a_function_of_the_spec() -> None:
    a, b = synthetic.polarity_frames(SPEC), synthetic.polarity_frames(SPEC)
    for split in a:
        pd.testing.assert_frame_equal(a[split], b[split])
    other = synthetic.polarity_frames(synthetic.PolaritySpec(n_train=400, n_validation=100, seed=1))
    assert not a["train"]["sentence"].equals(other["train"]["sentence"])


def test_files_are_written_once_in_the_hub_layout(tmp_path) -> None:
    folder = synthetic.ensure_polarity(tmp_path, SPEC)
    assert folder == tmp_path / "polarity"
    frame = pd.read_parquet(folder / FILES[0])
    assert list(frame.columns) == ["sentence", "label", "idx"] and len(frame) == SPEC.n_train
    stamps = [(folder / f).stat().st_mtime_ns for f in FILES]
    synthetic.ensure_polarity(tmp_path, SPEC)
    assert [(folder / f).stat().st_mtime_ns for f in FILES] == stamps


@pytest.mark.parametrize("damage", ["truncate", "delete", "marker", "spec"])
def test_damaged_missing_or_other_files_are_generated_again(tmp_path, damage) -> None:
    folder = synthetic.ensure_polarity(tmp_path, SPEC)
    want = (folder / FILES[0]).read_bytes()
    spec = SPEC
    if damage == "truncate":
        (folder / FILES[0]).write_bytes(want[: len(want) // 2])
    elif damage == "delete":
        (folder / FILES[1]).unlink()
    elif damage == "marker":
        (folder / "polarity_spec.json").write_text("{")
    else:
        spec = synthetic.PolaritySpec(n_train=300, n_validation=100)
    synthetic.ensure_polarity(tmp_path, spec)
    assert len(pd.read_parquet(folder / FILES[0])) == spec.n_train
    if damage != "spec":
        assert (folder / FILES[0]).read_bytes() == want


def test_an_unwritable_root_is_one_message(tmp_path) -> None:
    root = tmp_path / "file"
    root.write_text("")
    with pytest.raises(DataError, match=r"make data\.root writable"):
        synthetic.ensure_polarity(root, SPEC)


def test_bad_spec() -> None:
    with pytest.raises(DataError, match="noise"):
        synthetic.PolaritySpec(noise=0.5)
    with pytest.raises(DataError, match="min <= max"):
        synthetic.PolaritySpec(words=(5, 2))


def test_the_task_loads_as_a_text_task_with_every_word_known(tmp_path) -> None:
    tokenizer = load_tokenizer(synthetic.TINY_BERT)
    splits = build_text_data("polarity", tmp_path, tokenizer=tokenizer, download=False)
    assert splits.meta["synthetic"] and splits.meta["layout"] == "hub"
    assert (len(splits.train), len(splits.val), len(splits.test)) == (1800, 200, 500)
    ids = np.concatenate([splits.train.encoded.input_ids, splits.test.encoded.input_ids])
    assert tokenizer.unk_token_id not in set(ids.tolist())
    assert splits.train.lengths.max() <= 14  # 6 filler + 3 negated sentiment words + 2 specials


def test_tiny_bert_is_built_from_its_config_with_the_callers_seed() -> None:
    torch.manual_seed(0)
    a = build_text_model(synthetic.TINY_BERT, 2)
    torch.manual_seed(0)
    b = build_text_model(synthetic.TINY_BERT, 2)
    torch.manual_seed(1)
    c = build_text_model(synthetic.TINY_BERT, 2)
    assert a.config.vocab_size == len(synthetic.VOCABULARY) and a.config.num_hidden_layers == 2
    first = next(iter(a.parameters()))
    assert torch.equal(first, next(b.parameters())) and not torch.equal(first, next(c.parameters()))
    assert 20_000 < sum(p.numel() for p in a.parameters()) < 60_000


def test_smoke_run_trains_measures_and_is_labelled_synthetic(tmp_path) -> None:
    run_dir = tmp_path / "run"
    base = ["--config", str(CONFIGS / "polarity.yaml"), f"data.root={tmp_path / 'data'}"]
    base += ["train.progress=false", "smoke=true", f"run_dir={run_dir}"]
    assert train_main(TASK, [*base, "optimizer.name=nso"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["synthetic"] and summary["dataset"] == "polarity"
    assert summary["steps"] <= 6 and set(summary["test"]) >= {"accuracy"}
    row = run_rows.run_row(run_dir)
    assert row["dataset"] == "polarity (synthetic)" and row["model"] == "tiny-bert"


def test_a_sequence_longer_than_the_model_takes_is_one_message(tmp_path, capsys) -> None:
    argv = ["--config", str(CONFIGS / "polarity.yaml"), f"data.root={tmp_path}"]
    argv += ["data.max_seq_length=128", f"run_dir={tmp_path / 'run'}", "smoke=true"]
    assert train_main(TASK, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: data.max_seq_length=128 is longer than model.name='tiny-bert' takes "
        "(64 tokens): set data.max_seq_length=64."
    ]
    assert [p.name for p in (tmp_path / "run").iterdir()] == [".lock"]  # nothing written


def test_polarity_is_a_known_name_in_messages() -> None:
    with pytest.raises(DataError, match="polarity"):
        build_text_data("polarty", Path("/nonexistent"), tokenizer=load_tokenizer("tiny-bert"))


def test_a_tokenizer_without_its_vocabulary_is_refused(tmp_path) -> None:
    # a model folder without its tokenizer files trained with every word as [UNK], exit 0
    from transformers import BertTokenizer

    from common.errors import ModelError

    bare = BertTokenizer(vocab={w: i for i, w in enumerate(synthetic.SPECIAL)})
    bare.name_or_path = str(tmp_path / "model-without-vocab")
    with pytest.raises(ModelError, match=r"maps 100% of the word pieces") as e:
        build_text_data("polarity", tmp_path, tokenizer=bare, download=False)
    assert "model-without-vocab" in str(e.value) and "vocab.txt" in str(e.value)
