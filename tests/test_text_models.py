"""A local model folder (model.name=DIR) that is damaged or does not fit the data is one
ModelError saying what to do, not a traceback from transformers, safetensors or torch."""

from __future__ import annotations

import os
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


def test_a_hub_that_does_not_answer_switches_to_offline_mode_at_once(tmp_path, monkeypatch, capsys):
    """Offline, from_pretrained retried for about a minute (55 s measured) before its message;
    one short request now decides, and the hub libraries go offline, saying so once."""
    import http.server
    import socket
    import threading

    from huggingface_hub import constants

    from text_exps import hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed}")
    hub._ask_once.cache_clear()
    hub.offline_unless_reachable("some-org/some-model")
    hub.offline_unless_reachable("another/model")
    assert constants.HF_HUB_OFFLINE and os.environ["HF_HUB_OFFLINE"] == "1"
    err = capsys.readouterr().err
    assert err.count("does not answer") == 1 and "local Hugging Face cache only" in err

    # a hub that answers, even with an error status, stays online; a folder asks nothing
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.delenv("HF_HUB_OFFLINE")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        hub._ask_once.cache_clear()
        hub.offline_unless_reachable(str(tmp_path))  # a local folder: no request
        assert hub._ask_once.cache_info().currsize == 0
        hub.offline_unless_reachable("some-org/some-model")
        assert not constants.HF_HUB_OFFLINE and "HF_HUB_OFFLINE" not in os.environ
    finally:
        server.shutdown()
        hub._ask_once.cache_clear()
