"""A local model folder (model.name=DIR) that is damaged or does not fit the data is one
ModelError saying what to do, not a traceback from transformers, safetensors or torch."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoModelForSequenceClassification

from common.errors import ModelError
from text_exps import synthetic
from text_exps.models import build_text_model, check_fit


def folder(path: Path, num_labels: int = 2, **config: int) -> tuple[Path, object]:
    """A tiny-bert save_pretrained folder (random weights) and its tokenizer."""
    model = AutoModelForSequenceClassification.from_config(
        synthetic.tiny_bert_config(num_labels, **config)
    )
    model.save_pretrained(str(path))
    tokenizer = synthetic.tiny_tokenizer()
    tokenizer.model_max_length = 512  # past the model's positions: check_fit must say so
    tokenizer.save_pretrained(str(path))
    return path, tokenizer


def test_a_fitting_folder_passes_and_loads(tmp_path):
    path, tokenizer = folder(tmp_path / "ok")
    check_fit(str(path), tokenizer, 64)
    assert build_text_model(str(path), 2).classifier.out_features == 2


def test_fewer_positions_than_max_seq_length_say_the_largest_that_fits(tmp_path):
    path, tokenizer = folder(tmp_path / "short", max_position_embeddings=16)
    with pytest.raises(ModelError, match=r"set data\.max_seq_length=16 or less"):
        check_fit(str(path), tokenizer, 32)


def test_a_vocabulary_smaller_than_the_tokenizers_ids_is_refused(tmp_path):
    path, tokenizer = folder(tmp_path / "small-vocab", vocab_size=10)
    with pytest.raises(ModelError, match="do not belong together"):
        check_fit(str(path), tokenizer, 32)


def test_a_head_of_another_size_is_replaced_only_when_asked(tmp_path):
    path, _ = folder(tmp_path / "three-classes", num_labels=3)
    with pytest.raises(ModelError, match=r"set model\.replace_head=true"):
        build_text_model(str(path), 2)
    assert build_text_model(str(path), 2, replace_head=True).classifier.out_features == 2


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_damaged_weights_are_one_message(tmp_path, damage):
    path, _ = folder(tmp_path / "damaged")
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(
        b"not a safetensors file" if damage == "garbage" else data[: len(data) // 2]
    )
    with pytest.raises(ModelError, match="cannot be read") as e:
        build_text_model(str(path), 2)
    assert "copy the folder again" in str(e.value)
