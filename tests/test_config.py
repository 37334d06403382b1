"""The typed config: pydantic sections <- YAML <- key=value overrides, and its messages."""

from __future__ import annotations

import io
import os
import typing
from pathlib import Path

import pytest
import torch
import yaml
from pydantic import ValidationError
from torch import nn

import common.io
from common.errors import UserError
from common.optim import OPTIMIZERS, create_optimizer
from common.train.config import (
    RUNTIME_KEYS,
    Config,
    ConfigError,
    ModelConfig,
    OptimizerConfig,
    TrainConfig,
    apply_overrides,
    config_help,
    diff_configs,
    flat_keys,
    from_dict,
    load_config,
    optimizer_kwargs,
    parse_overrides,
    save_config,
    to_dict,
    validate,
)
from common.train.typed import checks_of, keyfield


# A domain's extension, as graph_exps would write it (module level, string annotations).
class GraphModelConfig(ModelConfig):
    hidden: int = keyfield(64, "hidden width", min=1)
    layers: list[int] = keyfield(factory=lambda: [2, 2])


class GraphConfig(Config):
    model: GraphModelConfig = keyfield(factory=GraphModelConfig)
    task: str = "graph"


def write(tmp_path, text: str, name: str = "c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def load(*overrides: str, path=None) -> Config:
    return load_config(Config, path, list(overrides))


def is_plain(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(is_plain(v) for v in value)
    return value is None or type(value) in (bool, int, float, str)


# ------------------------------------------------------------------ optimizer registry


def test_every_registry_option_has_an_optional_field():
    fields = OptimizerConfig.model_fields
    for name, info in OPTIMIZERS.items():
        for option in info.options:
            if option == "max_grad_norm":  # passed from train.max_grad_norm, for every optimizer
                assert option not in fields
                continue
            assert option in fields, f"OptimizerConfig lacks a field for {name}.{option}"
            assert fields[option].default is None, option
            assert type(None) in typing.get_args(fields[option].annotation), option


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_registry_defaults_and_presets_pass_validation(name):
    info = OPTIMIZERS[name]
    for values in (dict(info.options), dict(info.preset)):
        values.pop("max_grad_norm", None)
        cfg = Config(optimizer=OptimizerConfig(name=name, **values))
        validate(cfg)  # the config's bounds and types admit the optimizer's own defaults
        assert from_dict(Config, to_dict(cfg)) == cfg


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_create_optimizer_builds_from_config(name):
    cfg = load(f"optimizer.name={name}", "optimizer.lr=0.05", "optimizer.weight_decay=1e-4")
    kw = optimizer_kwargs(cfg.optimizer)
    assert ("base" in kw) == OPTIMIZERS[name].sharpness_aware
    assert kw["lr"] == 0.05 and kw["weight_decay"] == 1e-4
    opt = create_optimizer(cfg.optimizer.name, nn.Linear(3, 2), **kw)
    assert isinstance(opt, OPTIMIZERS[name].cls)
    assert opt.param_groups[0]["lr"] == 0.05


def test_optimizer_kwargs_pass_set_options_only():
    cfg = load(
        "optimizer.name=nso",
        "optimizer.base=adamw",
        "optimizer.betas=0.8,0.9",
        "optimizer.sigma=0.02",
        "optimizer.num_perturbs=2",
    )
    kw = optimizer_kwargs(cfg.optimizer)
    assert kw == {
        "base": "adamw",
        "lr": 0.1,
        "weight_decay": 0.0,
        "betas": (0.8, 0.9),
        "sigma": 0.02,
        "num_perturbs": 2,
    }
    opt = create_optimizer("nso", nn.Linear(3, 2), **kw)
    assert isinstance(opt.base_optimizer, torch.optim.AdamW)
    assert opt.param_groups[0]["betas"] == (0.8, 0.9)
    assert opt.param_groups[0]["sigma"] == 0.02 and opt.num_perturbs == 2

    sgd = load("optimizer.momentum=0.9", "optimizer.nesterov=true").optimizer
    assert optimizer_kwargs(sgd) == {
        "lr": 0.1,
        "weight_decay": 0.0,
        "momentum": 0.9,
        "nesterov": True,
    }
    with pytest.raises(ConfigError, match=r"optimizer.sigma is not an option of sgd"):
        optimizer_kwargs(OptimizerConfig(sigma=0.1))


def test_option_of_another_optimizer_is_rejected():
    msg = (
        "optimizer.sigma is not an option of sam (its options: adaptive, eta, rho); "
        "remove it or pick an optimizer that has it"
    )
    with pytest.raises(ConfigError) as info:
        load("optimizer.name=sam", "optimizer.sigma=0.1")
    assert str(info.value) == msg
    with pytest.raises(ConfigError, match=r"optimizer.rho is not an option of nso"):
        load("optimizer.name=nso", "optimizer.rho=0.1")
    # setting it back to null (the optimizer's default) is fine
    assert load("optimizer.name=sam", "optimizer.sigma=0.1", "optimizer.sigma=null")


def test_base_options_are_checked_against_the_base_class():
    with pytest.raises(ConfigError, match=r"optimizer.momentum is not accepted by the base "):
        load("optimizer.name=sam", "optimizer.base=adam", "optimizer.momentum=0.9")
    with pytest.raises(ConfigError, match=r"optimizer.betas .*torch.optim.SGD.*momentum, nest"):
        load("optimizer.name=wsam", "optimizer.betas=[0.9,0.99]")
    with pytest.raises(ConfigError, match=r"optimizer.momentum is not accepted by optimizer adam"):
        load("optimizer.name=adam", "optimizer.momentum=0.9")
    # a plain torch optimizer ignores optimizer.base: its own class decides
    assert load("optimizer.name=adam", "optimizer.base=sgd", "optimizer.eps=1e-6")
    assert load("optimizer.name=sgd", "optimizer.base=adam", "optimizer.momentum=0.9")
    assert load("optimizer.name=asam", "optimizer.base=adamw", "optimizer.eps=1e-6")


# ------------------------------------------------------------------ overrides


def test_override_value_parsing():
    for text, value in [("true", True), ("Yes", True), ("ON", True), ("1", True)]:
        assert load(f"smoke={text}").smoke is value
    for text in ("false", "No", "off", "0"):
        assert load(f"data.download={text}").data.download is False
    cfg = load(
        "optimizer.lr=1e-3",
        "optimizer.weight_decay=.5",
        "train.epochs=3",
        "train.max_steps=100",
        "data.name=cifar10",
        "schedule.name=none",  # a plain str field keeps "none" as a string
        "run_dir=None",
        "data.n_examples=null",
    )
    assert cfg.optimizer.lr == 1e-3 and isinstance(cfg.optimizer.lr, float)
    assert cfg.optimizer.weight_decay == 0.5
    assert cfg.train.epochs == 3 and cfg.train.max_steps == 100
    assert cfg.data.name == "cifar10" and cfg.schedule.name == "none"
    assert cfg.run_dir is None and cfg.data.n_examples is None
    assert load("train.max_steps=5", "train.max_steps=none").train.max_steps is None
    assert load("optimizer.lr=1").optimizer.lr == 1.0


@pytest.mark.parametrize(
    "text, value",
    [("[0.04,0.05]", [0.04, 0.05]), ("0.04, 0.05", [0.04, 0.05]), ("0.1", [0.1]), ("1", [1.0])],
)
def test_override_lists(text, value):
    assert load(f"noise_stability.sigma={text}").noise_stability.sigma == value


def test_override_tuples_and_string_lists():
    assert load("optimizer.name=adam", "optimizer.betas=[0.8, 0.9]").optimizer.betas == (0.8, 0.9)
    assert load("optimizer.name=adam", "optimizer.betas=0.8,0.9").optimizer.betas == (0.8, 0.9)
    with pytest.raises(ConfigError, match=r"'optimizer.betas' expects a list of 2 numbers"):
        load("optimizer.name=adam", "optimizer.betas=0.9")
    with pytest.raises(ConfigError, match=r"'optimizer.betas' expects a list of 2 numbers"):
        load("optimizer.name=adam", "optimizer.betas=0.9,0.99,0.999")
    assert load("landscape.plots=contour,surface").landscape.plots == ["contour", "surface"]
    with pytest.raises(ConfigError, match=r"landscape.plots\[1\] must be one of contour, "):
        load("landscape.plots=[contour,bar]")


def test_apply_overrides_returns_a_new_config():
    base = Config()
    new = apply_overrides(base, {"optimizer.lr": "0.5", "landscape.plots": "surface"})
    assert new.optimizer.lr == 0.5 and new.landscape.plots == ["surface"]
    assert base == Config()  # nothing shared and mutated
    assert new.noise_stability.sigma is not base.noise_stability.sigma
    # non-string values are taken as YAML-typed
    assert apply_overrides(base, {"train.epochs": 7}).train.epochs == 7


def test_parse_overrides():
    assert issubclass(ConfigError, ValueError) and issubclass(ConfigError, UserError)
    assert parse_overrides(["a.b=1", "c=x=y", "d="]) == {"a.b": "1", "c": "x=y", "d": ""}
    with pytest.raises(ConfigError, match=r"invalid override 'optimizer\.lr'.*key=value"):
        parse_overrides(["optimizer.lr"])
    with pytest.raises(ConfigError, match="key=value"):
        load("seed=1", "oops")


# ------------------------------------------------------------------ error messages


def test_unknown_key_suggests_the_nearest():
    with pytest.raises(ConfigError) as info:
        load("optimizer.sigm=0.1")
    assert str(info.value) == (
        "unknown config key 'optimizer.sigm' (from command line); did you mean optimizer.sigma?"
    )
    with pytest.raises(ConfigError, match=r"did you mean optimizer.sigma, noise_stability.sigma"):
        load("sigma=0.1")
    with pytest.raises(ConfigError, match=r"'optimiser.lr' .*did you mean optimizer.lr\?"):
        load("optimiser.lr=0.1")
    with pytest.raises(ConfigError, match=r"'model.lr' .*did you mean optimizer.lr\?"):
        load("model.lr=0.1")
    with pytest.raises(ConfigError, match=r"valid keys under 'model': name, dropout"):
        load("model.xyzzy=1")


def test_unknown_key_in_yaml_names_the_file(tmp_path):
    path = write(tmp_path, "train:\n  epochs: 3\n  epoch: 4\n")
    with pytest.raises(ConfigError) as info:
        load(path=path)
    assert str(info.value) == (
        f"unknown config key 'train.epoch' (from {path}); did you mean train.epochs?"
    )
    with pytest.raises(ConfigError, match=r"unknown config key 'optimizers' \(from .*c.yaml\)"):
        load(path=write(tmp_path, "optimizers:\n  lr: 0.1\n"))


def test_wrong_type_messages():
    with pytest.raises(ConfigError) as info:
        load("train.epochs=ten")
    assert (
        str(info.value)
        == "config key 'train.epochs' expects an integer, got 'ten' (from command line)"
    )
    with pytest.raises(ConfigError, match=r"'train.epochs' expects an integer, got '2.5'"):
        load("train.epochs=2.5")
    with pytest.raises(
        ConfigError, match=r"'noise_stability.sigma\[1\]' expects a number, got 'x'"
    ):
        load("noise_stability.sigma=0.1,x")
    with pytest.raises(ConfigError, match=r"'smoke' expects a boolean .*got 'maybe'"):
        load("smoke=maybe")
    with pytest.raises(ConfigError, match=r"'optimizer.lr' expects a number, got 'none'"):
        load("optimizer.lr=none")  # not Optional: null is no value for it
    with pytest.raises(ConfigError, match=r"'optimizer' is a section, not a value"):
        load("optimizer=3")


def test_choice_and_bound_messages():
    with pytest.raises(ConfigError) as info:
        load("train.precision=fp8")
    assert str(info.value) == "train.precision must be one of fp32, bf16, fp16; got 'fp8'"
    with pytest.raises(ConfigError) as info:
        load("optimizer.name=nso", "optimizer.sigma=-0.5")
    assert str(info.value) == "optimizer.sigma must be >= 0; got -0.5"
    with pytest.raises(ConfigError, match=r"optimizer.lr must be > 0; got 0.0"):
        load("optimizer.lr=0")
    with pytest.raises(ConfigError, match=r"data.val_fraction must be < 1; got 1.0"):
        load("data.val_fraction=1")
    with pytest.raises(ConfigError, match=r"optimizer.name must be one of adam, adamw, arwp, asam"):
        load("optimizer.name=nsoo")
    with pytest.raises(ConfigError, match=r"noise_stability.sigma\[1\] must be >= 0; got -0.1"):
        load("noise_stability.sigma=[0.1,-0.1]")
    with pytest.raises(ConfigError, match=r"noise_stability.sigma must not be empty"):
        load("noise_stability.sigma=[]")
    with pytest.raises(ConfigError, match=r"landscape.dims must be one of 1, 2; got 3"):
        load("landscape.dims=3")
    with pytest.raises(ConfigError, match=r"train.epochs must be >= 1; got 0"):
        load("train.epochs=0")


def test_from_dict_is_strict_about_yaml_types():
    cfg = from_dict(Config, {"optimizer": {"lr": 1, "betas": [0.9, 0.99], "name": "adam"}})
    assert cfg.optimizer.lr == 1.0 and isinstance(cfg.optimizer.lr, float)
    assert cfg.optimizer.betas == (0.9, 0.99)
    with pytest.raises(ConfigError, match=r"'train.epochs' expects an integer, got True"):
        from_dict(Config, {"train": {"epochs": True}})
    with pytest.raises(ConfigError, match=r"'optimizer.lr' expects a number, got False"):
        from_dict(Config, {"optimizer": {"lr": False}})
    with pytest.raises(ConfigError, match=r"'train.epochs' expects an integer, got 3.0"):
        from_dict(Config, {"train": {"epochs": 3.0}})
    with pytest.raises(ConfigError, match=r"'seed' expects an integer, got None"):
        from_dict(Config, {"seed": None})
    with pytest.raises(ConfigError, match=r"'data.name' expects a string, got 10 \(from x.yaml\)"):
        from_dict(Config, {"data": {"name": 10}}, source="x.yaml")
    with pytest.raises(ConfigError, match=r"'train' expects a section"):
        from_dict(Config, {"train": 5})
    assert from_dict(Config, {"run_dir": None, "hessian": None}) == Config()


def test_validate_checks_programmatic_configs():
    validate(Config())
    # types are pydantic's at construction and on assignment; bounds are validate's
    with pytest.raises(ValidationError, match=r"epochs\n  Input should be a valid integer"):
        TrainConfig(epochs=10.0)
    cfg = Config()
    with pytest.raises(ValidationError, match="Input should be a valid integer"):
        cfg.train.epochs = "3"
    with pytest.raises(ConfigError, match=r"optimizer.sigma must be >= 0"):
        validate(Config(optimizer=OptimizerConfig(name="nso", sigma=-1.0)))


# ------------------------------------------------------------------ YAML files


def test_yaml_file_errors(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"config file '.*nope.yaml' not found"):
        load(path=missing)
    with pytest.raises(ConfigError, match=r"config file '.*bad.yaml' is not valid YAML"):
        load(path=write(tmp_path, "train: [1, 2\n", "bad.yaml"))
    with pytest.raises(ConfigError, match=r"config file '.*list.yaml' must hold a mapping"):
        load(path=write(tmp_path, "- 1\n- 2\n", "list.yaml"))
    with pytest.raises(ConfigError, match=r"smoke_overrides in '.*s.yaml' must be a mapping"):
        load(path=write(tmp_path, "smoke_overrides: 3\n", "s.yaml"))


def test_yaml_values(tmp_path):
    path = write(
        tmp_path,
        "optimizer:\n  name: nso\n  lr: 1e-3\n  sigma: 5E-2\n  betas: null\n"
        "hessian:\n"  # an empty section keeps its defaults
        "noise_stability:\n  sigma: [0.01, 0.02]\n",
    )
    cfg = load(path=path)
    assert cfg.optimizer.lr == 1e-3 and cfg.optimizer.sigma == 0.05
    assert cfg.noise_stability.sigma == [0.01, 0.02]
    assert cfg.hessian == Config().hessian
    assert load(path=write(tmp_path, "", "empty.yaml")) == Config()


def test_precedence_defaults_yaml_smoke_command_line(tmp_path):
    path = write(
        tmp_path,
        "train:\n  epochs: 5\n  batch_size: 32\noptimizer:\n  lr: 0.05\n"
        "smoke_overrides:\n  train.epochs: 1\n  data.n_examples: 200\n  optimizer:\n    lr: 0.01\n",
    )
    cfg = load_config(Config, path)
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.optimizer.lr) == (5, 32, 0.05)
    assert cfg.data.n_examples is None and cfg.train.max_steps is None  # defaults
    assert load_config(Config, path, ["train.epochs=7"]).train.epochs == 7

    smoke = load_config(Config, path, ["smoke=true"])
    assert (smoke.train.epochs, smoke.data.n_examples, smoke.optimizer.lr) == (1, 200, 0.01)
    assert smoke.train.batch_size == 32
    both = load_config(Config, path, {"smoke": "yes", "train.epochs": "2"})
    assert (both.train.epochs, both.data.n_examples) == (2, 200)  # command line wins

    in_file = write(tmp_path, "smoke: true\nsmoke_overrides: {train.epochs: 1}\n", "s.yaml")
    assert load_config(Config, in_file).train.epochs == 1
    assert load_config(Config, in_file, ["smoke=false"]).train.epochs == 10


def test_smoke_overrides_are_checked_even_without_smoke(tmp_path):
    path = write(tmp_path, "smoke_overrides:\n  train.epoch: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(Config, path)
    assert str(info.value) == (
        f"unknown config key 'train.epoch' (from {path} (smoke_overrides)); "
        "did you mean train.epochs?"
    )
    path = write(tmp_path, "smoke_overrides:\n  train.epochs: one\n", "t.yaml")
    with pytest.raises(ConfigError, match=r"'train.epochs' expects an integer, got 'one'"):
        load_config(Config, path)


# ------------------------------------------------------------------ round trips, saving


def custom_config() -> Config:
    return load(
        "optimizer.name=wsam",
        "optimizer.base=adam",
        "optimizer.betas=0.8,0.95",
        "optimizer.gamma=0.5",
        "noise_stability.sigma=0.01,0.02",
        "landscape.plots=surface",
        "run_dir=runs/x",
        "train.max_steps=11",
        "hessian.n_examples=null",
    )


def test_to_dict_round_trip():
    for cfg in (Config(), custom_config()):
        data = to_dict(cfg)
        assert is_plain(data)
        assert list(data) == list(Config.model_fields)
        assert from_dict(Config, data) == cfg
        buf = io.BytesIO()
        torch.save({"config": data}, buf)
        buf.seek(0)
        assert torch.load(buf, weights_only=True)["config"] == data
    assert to_dict(custom_config())["optimizer"]["betas"] == [0.8, 0.95]


def test_save_config_writes_yaml_in_field_order(tmp_path):
    cfg = custom_config()
    path = tmp_path / "run" / "config.yaml"
    save_config(cfg, path)
    text = path.read_text()
    assert list(yaml.safe_load(text)) == list(Config.model_fields)
    assert list(yaml.safe_load(text)["train"])[:2] == ["epochs", "max_steps"]
    assert load_config(Config, path) == cfg
    assert os.listdir(path.parent) == ["config.yaml"]  # no temp file left


def test_save_config_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    save_config(Config(), path)
    before = path.read_text()

    def boom(*args, **kwargs):
        raise RuntimeError("serialisation failed")

    monkeypatch.setattr(yaml, "safe_dump", boom)
    with pytest.raises(RuntimeError, match="serialisation failed"):
        save_config(custom_config(), path)
    assert path.read_text() == before
    monkeypatch.undo()

    monkeypatch.setattr(common.io.os, "replace", boom)
    with pytest.raises(RuntimeError):
        save_config(custom_config(), path)
    assert path.read_text() == before
    assert os.listdir(tmp_path) == ["config.yaml"]


# ------------------------------------------------------------------ subclasses


def test_domain_subclass_sections(tmp_path):
    assert "model.hidden" in flat_keys(GraphConfig) and "task" in flat_keys(GraphConfig)
    path = write(tmp_path, "model:\n  hidden: 32\n  layers: [1, 2, 3]\noptimizer:\n  lr: 0.2\n")
    cfg = load_config(GraphConfig, path, ["model.dropout=0.5", "task=node"])
    assert isinstance(cfg, GraphConfig) and isinstance(cfg.model, GraphModelConfig)
    assert (cfg.model.hidden, cfg.model.layers, cfg.model.dropout) == (32, [1, 2, 3], 0.5)
    assert cfg.task == "node" and cfg.optimizer.lr == 0.2
    assert load_config(GraphConfig, None, ["model.layers=4"]).model.layers == [4]
    assert from_dict(GraphConfig, to_dict(cfg)) == cfg
    save_config(cfg, tmp_path / "out.yaml")
    assert load_config(GraphConfig, tmp_path / "out.yaml") == cfg

    with pytest.raises(ConfigError, match=r"did you mean model.hidden\?"):
        load_config(GraphConfig, None, ["model.hiden=3"])
    with pytest.raises(ConfigError, match=r"model.hidden must be >= 1; got 0"):
        load_config(GraphConfig, None, ["model.hidden=0"])
    with pytest.raises(ConfigError, match=r"'model.layers\[0\]' expects an integer, got 'a'"):
        load_config(GraphConfig, None, ["model.layers=a"])
    with pytest.raises(ConfigError, match=r"unknown config key 'model.hidden'"):
        load_config(Config, None, ["model.hidden=3"])  # the base class has no such key


# ------------------------------------------------------------------ keys, diffs, help


def test_flat_keys():
    keys = flat_keys(Config)
    assert len(keys) == len(set(keys))
    assert keys[0] == "data.name" and keys[-3:] == ["seed", "run_dir", "smoke"]
    for key in ("optimizer.sigma", "noise_stability.sigma", "train.precision", "landscape.plots"):
        assert key in keys
    assert "optimizer" not in keys and "hessian" not in keys
    help_text = config_help(Config)
    assert "optimizer.lr=0.1 (float): learning rate [> 0]" in help_text
    assert len(help_text.splitlines()) == len(keys)


def test_diff_configs():
    a = to_dict(Config())
    assert diff_configs(a, a) == []
    b = to_dict(
        load(
            "optimizer.lr=0.01",
            "noise_stability.sigma=0.5",
            "hessian.n_probes=5",
            "train.device=cpu",
            "seed=3",
        )
    )
    assert diff_configs(a, b) == ["optimizer.lr: 0.1 -> 0.01", "seed: 0 -> 3"]
    assert diff_configs(a, b, ignore=()) == [
        "optimizer.lr: 0.1 -> 0.01",
        "train.device: 'auto' -> 'cpu'",
        "hessian.n_probes: 100 -> 5",
        "noise_stability.sigma: [0.01] -> [0.5]",
        "seed: 0 -> 3",
    ]
    assert diff_configs(a, b, ignore={"seed", "optimizer", "hessian", "noise_stability"}) == [
        "train.device: 'auto' -> 'cpu'"
    ]
    only_hessian = diff_configs(a, b, ignore={"optimizer.lr", "seed", "train.device"})
    assert only_hessian == ["hessian.n_probes: 100 -> 5", "noise_stability.sigma: [0.01] -> [0.5]"]
    # missing keys (an older run's config) and bool-vs-int changes are differences
    old = {**a, "train": {k: v for k, v in a["train"].items() if k != "accum_steps"}}
    assert diff_configs(old, a) == ["train.accum_steps: <missing> -> 1"]
    assert diff_configs({"x": 1}, {"x": True}) == ["x: 1 -> True"]
    assert diff_configs({"x": (1, 2)}, {"x": [1, 2]}) == []
    assert {"hessian", "train.device", "run_dir"} <= RUNTIME_KEYS


def test_optimizer_overrides_apply_to_their_optimizer_only(tmp_path):
    path = tmp_path / "paper.yaml"
    path.write_text(
        "optimizer: {name: sgd, lr: 0.1}\n"
        "optimizer_overrides:\n"
        "  sam: {optimizer.rho: 0.1, train.label_smoothing: 0.1}\n"
        "  nso: {optimizer.sigma: 0.02}\n"
        "smoke_overrides: {optimizer.rho: 0.3}\n"
    )
    assert load_config(Config, path, []).optimizer.rho is None
    sam = load_config(Config, path, ["optimizer.name=sam"])
    assert (sam.optimizer.rho, sam.train.label_smoothing) == (0.1, 0.1)
    assert load_config(Config, path, ["optimizer.name=nso"]).optimizer.sigma == 0.02
    # precedence: file < optimizer_overrides < smoke_overrides < command line
    assert load_config(Config, path, ["optimizer.name=sam", "smoke=true"]).optimizer.rho == 0.3
    cli = load_config(Config, path, ["optimizer.name=sam", "smoke=true", "optimizer.rho=0.5"])
    assert cli.optimizer.rho == 0.5


def test_optimizer_overrides_are_checked(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optimizer_overrides:\n  nsoo: {optimizer.sigma: 0.02}\n")
    with pytest.raises(ConfigError, match="names 'nsoo'; did you mean nso"):
        load_config(Config, path, [])
    path.write_text("optimizer_overrides:\n  nso: {optimizer.sigmaa: 0.02}\n")
    with pytest.raises(ConfigError, match=r"did you mean optimizer\.sigma"):
        load_config(Config, path, [])


# ------------------------------------------------------------- defects of the config input


def test_non_finite_floats_are_refused():
    for key in (
        "optimizer.lr",
        "optimizer.weight_decay",
        "noise_stability.sigma",
        "landscape.span",
    ):
        for text in ("inf", "nan", "-inf"):
            with pytest.raises(ConfigError, match=f"{key.split('.')[0]}.* must be a finite"):
                load(f"{key}={text}")


@pytest.mark.parametrize("text", ["-1", "100000000000000000000000"])
def test_seeds_are_bounded_to_what_the_rngs_take(text):
    with pytest.raises(ConfigError, match="seed must be"):
        load(f"seed={text}")
    assert load(f"seed={2**63 - 1}").seed == 2**63 - 1


def test_duplicate_yaml_keys_are_refused(tmp_path):
    path = write(tmp_path, "train:\n  epochs: 2\nseed: 1\ntrain:\n  batch_size: 8\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'train' at line 4 \(first at line 1\)"):
        load(path=path)


def test_a_config_that_is_not_utf8_is_one_clear_error(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("data:\n  name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load(path=path)


def test_optimizer_section_comes_from_the_registry():
    # every wrapper option is a field with the registry's bounds: nothing is declared twice
    fields = OptimizerConfig.model_fields
    for info in OPTIMIZERS.values():
        for name, option in info.specs.items():
            if name == "max_grad_norm":
                continue
            checks = checks_of(OptimizerConfig, name)
            for bound in ("min", "max", "gt", "lt", "choices"):
                assert checks.get(bound) == getattr(option, bound), (name, bound)
            assert option.help in fields[name].description


@pytest.mark.parametrize("kind", ["device", "fifo", "folder", "huge"])
def test_a_config_that_is_not_a_regular_file_of_sane_size_is_refused_at_once(tmp_path, kind):
    # /dev/zero was read until memory ran out; a FIFO blocked forever
    from common.train.cli import train_main
    from image_exps.task import TASK

    if kind == "device":
        path = Path("/dev/zero")
    elif kind == "fifo":
        path = tmp_path / "config.yaml"
        os.mkfifo(path)
    elif kind == "folder":
        path = tmp_path
    else:
        path = tmp_path / "big.yaml"
        path.write_text("# " + "x" * 2**21 + "\n")
    with pytest.raises(ConfigError, match="config file refused") as e:
        load_config(Config, path)
    assert str(path) in str(e.value)
    assert train_main(TASK, ["--config", str(path)]) == 2


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_a_result_file_that_is_not_a_regular_file_is_refused(tmp_path, kind):
    from common.errors import UserError
    from common.io import read_json

    path = tmp_path / "summary.json"
    if kind == "device":
        path.symlink_to("/dev/zero")
    else:
        os.mkfifo(path)
    with pytest.raises(UserError, match="is not a regular file"):
        read_json(path, fix="train again")


def test_a_result_file_past_its_size_is_refused(tmp_path, monkeypatch):
    from common import io
    from common.errors import UserError

    path = tmp_path / "hessian.json"
    io.write_json(path, {"trace": {"total": 1.0}})
    monkeypatch.setattr(io, "MAX_JSON_BYTES", 16)
    with pytest.raises(UserError, match="more than the 16 such a file holds"):
        io.read_json(path, fix="measure again")


@pytest.mark.parametrize("what", ["checkpoint", "weights", "tsv", "beats"])
def test_a_data_or_weights_file_that_is_a_fifo_is_refused_not_waited_on(tmp_path, what):
    # a FIFO given where a file is read blocked forever; /dev/zero was read until memory ran out
    from common.errors import UserError

    fifo = tmp_path / "file"
    os.mkfifo(fifo)
    if what == "checkpoint":
        from common.train.checkpoint import load_checkpoint

        call = lambda: load_checkpoint(fifo, fix="train again")  # noqa: E731
    elif what == "weights":  # model.weights was already checked
        from common.weights import read_state_dict

        call = lambda: read_state_dict(fifo)  # noqa: E731
    elif what == "tsv":
        from text_exps.glue import GLUE_TASKS, _read_tsv

        call = lambda: _read_tsv(GLUE_TASKS["rte"], fifo)  # noqa: E731
    else:
        from ecg_exps.data import read_beats_csv

        call = lambda: read_beats_csv(fifo, fix="fetch it again")  # noqa: E731
    with pytest.raises(UserError, match="is not a regular file"):
        call()
