"""BERT on GLUE through the one trainer: a tiny BERT saved like a hub checkpoint (no
classifier head) and GLUE files written in the hub's layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_bert_config

from common import run_rows
from common.train.cli import measure_main, train_main
from common.train.config import load_config
from common.train.trainer import Trainer, train
from tests.text_fixtures import glue_frames, write_glue, write_hub, write_tokenizer
from text_exps.task import TASK, TextConfig

CONFIG = TASK.default_config


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    """A 2-layer BERT of width 16 and its tokenizer, as ``save_pretrained`` writes them."""
    from transformers import AutoTokenizer, BertModel

    path = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = write_tokenizer(path)
    vocab = len(AutoTokenizer.from_pretrained(tokenizer))
    config = tiny_bert_config(vocab_size=vocab, max_position_embeddings=128)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(path)  # an encoder only: the head is new, as on the hub
    return path


@pytest.fixture(scope="module")
def glue(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("glue")
    for task in ("mrpc", "stsb", "cola", "mnli"):
        write_hub(root, task, glue_frames(task, n_train=64, n_val=24))
    write_glue(root, "rte", glue_frames("rte", n_train=64, n_val=24))
    return root


def args(bert: Path, glue: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        "--config", str(CONFIG), f"model.name={bert}", f"data.root={glue}",
        "data.download=false", "train.progress=false", "train.batch_size=8",
        "train.epochs=2", "optimizer.lr=1e-3", f"run_dir={run_dir}", *extra,
    ]  # fmt: skip


def summary_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.parametrize("optimizer", ["adamw", "sam", "nso", "ssamf"])
def test_mrpc_trains_with_accuracy_and_f1(bert, glue, tmp_path, optimizer) -> None:
    run_dir = tmp_path / optimizer
    assert train_main(TASK, args(bert, glue, run_dir, "data.name=mrpc",
                                 f"optimizer.name={optimizer}")) == 0  # fmt: skip
    s = summary_of(run_dir)
    assert [m["name"] for m in s["metrics"]] == ["f1", "accuracy"] and s["select"]["name"] == "f1"
    assert s["data"]["n_test"] == 24  # the official validation split
    assert 0 <= s["test"]["f1"] <= 100 and "train_accuracy" in (run_dir / "metrics.csv").read_text()
    weights = torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_stsb_is_a_regression_end_to_end(bert, glue, tmp_path) -> None:
    run_dir = tmp_path / "stsb"
    assert train_main(TASK, args(bert, glue, run_dir, "data.name=stsb")) == 0
    s = summary_of(run_dir)
    assert [m["name"] for m in s["metrics"]] == ["pearson", "spearman"]
    assert (
        -1 <= s["test"]["pearson"] <= 1
        and "train_accuracy" not in (run_dir / "metrics.csv").read_text()
    )
    run = [f"run_dir={run_dir}", "train.progress=false", "hessian.n_probes=2"]
    assert (
        measure_main(TASK, "hessian", [*run, "hessian.n_examples=16", "hessian.batch_size=8"]) == 0
    )
    header = run_rows.markdown([run_rows.run_row(run_dir)]).splitlines()[0]
    assert "test Pearson" in header and "test Spearman" in header


def test_cola_reports_mcc_and_mnli_both_validation_sets(bert, glue, tmp_path) -> None:
    assert train_main(TASK, args(bert, glue, tmp_path / "cola", "data.name=cola")) == 0
    assert [m["label"] for m in summary_of(tmp_path / "cola")["metrics"]] == ["MCC"]
    assert train_main(TASK, args(bert, glue, tmp_path / "mnli", "data.name=MNLI")) == 0
    s = summary_of(tmp_path / "mnli")
    assert {"accuracy", "mismatched_accuracy"} <= set(s["test"]) and s["dataset"] == "mnli"


@pytest.mark.parametrize("config", ["glue.yaml", "nso_glue.yaml"])
def test_the_paper_configs_have_a_smoke_switch(bert, glue, tmp_path, config) -> None:
    run_dir = tmp_path / "run"
    argv = ["--config", str(CONFIG.parent / config), f"model.name={bert}", f"data.root={glue}"]
    argv += ["data.download=false", "train.progress=false", "smoke=true", f"run_dir={run_dir}"]
    assert train_main(TASK, [*argv, "data.name=mrpc", "--measure"]) == 0
    s = summary_of(run_dir)
    assert s["steps"] == 4 and s["data"]["n_train"] == 57  # 64 less the 10 % held out
    assert json.loads((run_dir / "hessian.json").read_text())["n_examples"] == 24  # all of test


def test_the_original_glue_layout_trains_too(bert, glue, tmp_path) -> None:
    assert train_main(TASK, args(bert, glue, tmp_path, "data.name=rte")) == 0
    assert summary_of(tmp_path)["data"]["layout"] == "glue"


def test_accumulation_over_dict_batches_equals_one_batch(bert, glue, tmp_path) -> None:
    common = ["data.name=mrpc", "train.max_steps=3", "model.dropout=0"]
    for name, extra in (("one", ()), ("acc", ("train.accum_steps=4",))):
        overrides = args(bert, glue, tmp_path / name, *common, *extra)[2:]  # (after --config)
        train(TASK, load_config(TextConfig, CONFIG, overrides))
    a = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "acc" / "checkpoint.pt", weights_only=True)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)


def test_biases_and_layer_norms_do_not_decay(bert, glue, tmp_path) -> None:
    cfg = load_config(TextConfig, CONFIG, args(bert, glue, tmp_path, "data.name=mrpc")[2:])
    trainer = Trainer(TASK, cfg)
    trainer._build()
    decay, free = trainer.optimizer.param_groups
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    assert decay["weight_decay"] == 0.01 and free["weight_decay"] == 0.0
    assert {names[id(p)].rsplit(".", 1)[-1] for p in free["params"]} == {"bias", "weight"}
    assert all("LayerNorm" in names[id(p)] or names[id(p)].endswith("bias") for p in free["params"])


def test_a_model_that_cannot_be_had_is_one_message(glue, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc = train_main(
        TASK, args(tmp_path / "no-such-model", glue, tmp_path / "run", "data.name=mrpc")
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "local copy" in err and "Hugging Face cache" in err


def test_the_reference_parameter_selections(bert, glue, tmp_path) -> None:
    from common.sharpness.core import select_params
    from text_exps.task import reference_noise_params, reference_trace_params

    cfg = load_config(TextConfig, CONFIG, args(bert, glue, tmp_path, "data.name=mrpc")[2:])
    model = TASK.build_model(cfg, TASK.build_data(cfg))
    trace = [n for n, _ in select_params(model, reference_trace_params)]
    # per layer: query, key, value, attention output, intermediate, output; plus the head
    assert len(trace) == 2 * 6 + 1 and "classifier.weight" in trace
    assert not any("pooler" in n or "embeddings" in n or "LayerNorm" in n for n in trace)
    noise = [n for n, _ in select_params(model, reference_noise_params)]
    assert set(trace) <= set(noise) | {"classifier.weight"} and "classifier.weight" in noise
    assert all(n.endswith("weight") and "LayerNorm" not in n for n in noise)
    assert train_main(TASK, args(bert, glue, tmp_path / "run", "data.name=mrpc",
                                 "train.max_steps=2")) == 0  # fmt: skip
    run = [f"run_dir={tmp_path / 'run'}", "train.progress=false", "hessian.params=reference"]
    assert measure_main(TASK, "hessian", [*run, "hessian.n_probes=2", "hessian.n_examples=8"]) == 0
    out = json.loads((tmp_path / "run" / "hessian.json").read_text())
    assert out["trace"]["record"]["params"] == "reference_trace_params"
    assert out["trace"]["record"]["n_params"] == sum(
        p.numel() for _, p in select_params(model, reference_trace_params)
    )
