"""Typed run configuration: dataclasses <- a YAML file <- ``key=value`` overrides.

>>> cfg = load_config(Config, "image_exps/configs/digits.yaml", ["optimizer.name=nso", "seed=1"])
>>> opt = create_optimizer(cfg.optimizer.name, model, **optimizer_kwargs(cfg.optimizer))

Every field has a default; its ``metadata`` may hold ``help`` (one line), ``choices``,
``min`` / ``max`` (inclusive), ``gt`` / ``lt`` (exclusive) and ``nonempty`` (lists); for a
list field the bounds and choices apply to each element. Domains subclass the sections to
add keys (``class GraphModelConfig(ModelConfig): hidden: int = 64``) and ``Config`` to use
them; types are resolved on the concrete class with ``typing.get_type_hints``.

``from_dict`` and ``apply_overrides`` check keys and types; ``validate`` (which
``load_config`` runs on the final config) checks bounds, choices and that the optimizer
options fit the chosen optimizer. Every problem is a ``ConfigError`` whose message is
meant for the user as is.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import inspect
import re
import types
import typing
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from common.errors import UserError
from common.io import write_text
from common.optim.nso import SIGMA_SCHEDULES
from common.optim.perturb import DISTRIBUTIONS
from common.optim.registry import BASES, OPTIMIZERS
from common.optim.ssam import STRATEGIES

__all__ = [
    "RUNTIME_KEYS",
    "Config",
    "ConfigError",
    "DataConfig",
    "HessianConfig",
    "LandscapeConfig",
    "ModelConfig",
    "NoiseStabilityConfig",
    "OptimizerConfig",
    "ScheduleConfig",
    "TrainConfig",
    "apply_overrides",
    "config_help",
    "diff_configs",
    "flat_keys",
    "from_dict",
    "load_config",
    "optimizer_kwargs",
    "parse_overrides",
    "save_config",
    "to_dict",
    "validate",
]

C = TypeVar("C")

#: Keys (or whole sections) that may change when a run is resumed or measured.
RUNTIME_KEYS: frozenset[str] = frozenset(
    {
        "hessian",
        "noise_stability",
        "landscape",
        "run_dir",
        "train.progress",
        "train.log",
        "data.num_workers",
        "data.root",
        "data.download",
        "train.device",
    }
)


class ConfigError(UserError, ValueError):
    """A configuration problem; the message is shown to the user without a traceback."""


def _f(default: Any = None, help: str = "", *, factory: Any = None, **checks: Any) -> Any:
    """A dataclass field with ``help`` and checks (choices, min, max, gt, lt, nonempty)."""
    meta = {"help": help, **checks}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# ----------------------------------------------------------------------------- sections


@dataclass
class DataConfig:
    """Which data set and how it is loaded."""

    name: str = _f("digits", "data set name")
    root: str = _f("data", "directory holding (or receiving) the data")
    download: bool = _f(True, "download the data set if it is missing")
    num_workers: int = _f(0, "DataLoader worker processes", min=0)
    augment: bool = _f(True, "training-time augmentation")
    cutout: int = _f(0, "cutout square side in pixels (0 = off)", min=0)
    val_fraction: float = _f(0.1, "fraction of the training set held out", min=0, lt=1)
    image_size: int | None = _f(None, "resize images to this side (None = native)", min=1)
    n_examples: int | None = _f(None, "cap the training set size (smoke runs)", min=1)
    fold: int = _f(0, "cross-validation fold", min=0)


@dataclass
class ModelConfig:
    """Which model."""

    name: str = _f("cnn", "model name")
    pretrained: bool = _f(False, "start from pretrained weights")
    dropout: float = _f(0.0, "dropout probability", min=0, lt=1)


@dataclass
class OptimizerConfig:
    """The optimizer: name, base optimizer and every option; None = the optimizer's default."""

    name: str = _f("sgd", "optimizer (registry name)", choices=tuple(sorted(OPTIMIZERS)))
    base: str = _f(
        "sgd", "base optimizer of a sharpness-aware one", choices=("sgd", "adam", "adamw")
    )
    lr: float = _f(0.1, "learning rate", gt=0)
    weight_decay: float = _f(0.0, "weight decay", min=0)
    # base-optimizer options
    momentum: float | None = _f(None, "SGD momentum", min=0)
    nesterov: bool | None = _f(None, "SGD Nesterov momentum")
    betas: tuple[float, float] | None = _f(None, "Adam(W) betas")
    eps: float | None = _f(None, "Adam(W) epsilon", gt=0)
    # sharpness-aware options (OPTIMIZERS[name].options)
    rho: float | None = _f(None, "SAM-family neighbourhood radius", min=0)
    adaptive: bool | None = _f(None, "ASAM-style adaptive perturbation")
    eta: float | None = _f(None, "ASAM offset added to |W|", min=0)
    sparsity: float | None = _f(None, "SSAM fraction of coordinates not perturbed", min=0, lt=1)
    num_samples: int | None = _f(None, "SSAM-F examples in the Fisher estimate", min=1)
    update_freq: int | None = _f(None, "SSAM mask update period (epochs)", min=1)
    chunk_size: int | None = _f(None, "SSAM-F per-example gradient chunk", min=1)
    drop_rate: float | None = _f(None, "SSAM-D mask drop rate", min=0, max=1)
    drop_strategy: str | None = _f(None, "SSAM-D drop score", choices=STRATEGIES)
    growth_strategy: str | None = _f(None, "SSAM-D growth score", choices=STRATEGIES)
    epochs: int | None = _f(None, "SSAM-D cosine schedule length (epochs)", min=1)
    gamma: float | None = _f(None, "WSAM sharpness weight", min=0, lt=1)
    decouple: bool | None = _f(None, "WSAM decoupled sharpness term")
    max_norm: float | None = _f(None, "WSAM gradient clipping norm", min=0)
    sigma: float | None = _f(None, "NSO noise scale", min=0)
    num_perturbs: int | None = _f(None, "NSO noise draws per step", min=1)
    use_neg: bool | None = _f(None, "NSO antithetic pairs W ± U")
    lam: float | None = _f(None, "NSO weight of the clean gradient", min=0, max=1)
    distribution: str | None = _f(None, "NSO noise distribution", choices=DISTRIBUTIONS)
    sigma_schedule: str | None = _f(None, "NSO sigma ramp", choices=SIGMA_SCHEDULES)
    schedule_steps: int | None = _f(None, "NSO sigma ramp length (steps)", min=1)
    seed: int | None = _f(None, "seed of the optimizer's own generator (SSAM-D, NSO)")


@dataclass
class ScheduleConfig:
    """Learning-rate schedule."""

    name: str = _f("none", "schedule", choices=("none", "step", "cosine"))
    step_size: int = _f(30, "step schedule period (epochs)", min=1)
    gamma: float = _f(0.1, "step schedule factor", gt=0)
    warmup_steps: int = _f(0, "linear warm-up (optimizer steps)", min=0)
    min_lr: float = _f(0.0, "cosine schedule floor", min=0)


@dataclass
class TrainConfig:
    """The training loop."""

    epochs: int = _f(10, "training epochs", min=1)
    max_steps: int | None = _f(None, "stop after this many optimizer steps", min=1)
    batch_size: int = _f(64, "global batch size (split across processes)", min=1)
    eval_batch_size: int | None = _f(None, "evaluation batch size (None = batch_size)", min=1)
    checkpoint_every: int = _f(0, "checkpoint period in steps (0 = epoch ends only)", min=0)
    precision: str = _f("fp32", "numeric precision", choices=("fp32", "bf16", "fp16"))
    accum_steps: int = _f(1, "gradient accumulation steps", min=1)
    max_grad_norm: float | None = _f(None, "gradient clipping norm", gt=0)
    label_smoothing: float = _f(0.0, "cross-entropy label smoothing", min=0, lt=1)
    sync_bn: bool = _f(False, "synchronise BatchNorm across processes")
    device: str = _f("auto", "device", choices=("auto", "cpu", "cuda"))
    log: str = _f("none", "metric logger", choices=("none", "tensorboard", "wandb"))
    progress: bool = _f(True, "progress bars")
    eval_every: int = _f(1, "evaluation period (epochs)", min=1)


_SPLITS = ("train", "val", "test")
_PARAMS = ("all", "reference")
_CHECKPOINTS = ("best", "last")


@dataclass
class HessianConfig:
    """Hessian trace, top eigenvalues and spectral density of a checkpoint."""

    split: str = _f("test", "data split", choices=_SPLITS)
    n_examples: int | None = _f(1000, "examples used (None = all)", min=1)
    batch_size: int = _f(250, "batch size", min=1)
    n_probes: int = _f(100, "random probes of the trace estimator", min=1)
    method: str = _f("hutchinson", "trace estimator", choices=("hutchinson", "hutch++"))
    params: str = _f("all", "parameters measured", choices=_PARAMS)
    top_k: int = _f(1, "top eigenvalues", min=1)
    esd: bool = _f(False, "also the spectral density")
    esd_iter: int = _f(50, "Lanczos iterations of the spectral density", min=2)
    seed: int = _f(0, "seed of the measurement")
    checkpoint: str = _f("best", "checkpoint measured", choices=_CHECKPOINTS)


@dataclass
class NoiseStabilityConfig:
    """Loss change under random weight noise."""

    split: str = _f("test", "data split", choices=_SPLITS)
    n_examples: int | None = _f(1000, "examples used (None = all)", min=1)
    batch_size: int = _f(250, "batch size", min=1)
    params: str = _f("all", "parameters perturbed", choices=_PARAMS)
    seed: int = _f(0, "seed of the measurement")
    checkpoint: str = _f("best", "checkpoint measured", choices=_CHECKPOINTS)
    sigma: list[float] = field(
        default_factory=lambda: [0.01],
        metadata={"help": "noise scales", "min": 0, "nonempty": True},
    )
    n_samples: int = _f(20, "noise draws per scale", min=1)
    two_sided: bool = _f(False, "antithetic pairs W ± U")


@dataclass
class LandscapeConfig:
    """Loss along random filter-normalised directions."""

    split: str = _f("test", "data split", choices=_SPLITS)
    n_examples: int | None = _f(1000, "examples used (None = all)", min=1)
    batch_size: int = _f(250, "batch size", min=1)
    seed: int = _f(0, "seed of the directions")
    checkpoint: str = _f("best", "checkpoint measured", choices=_CHECKPOINTS)
    dims: int = _f(2, "1-d curve or 2-d surface", choices=(1, 2))
    steps: int = _f(21, "grid points per direction", min=2)
    span: float = _f(1.0, "grid half-width", gt=0)
    ignore_bias_bn: bool = _f(True, "do not perturb biases and BatchNorm parameters")
    plots: list[str] = field(
        default_factory=lambda: ["contour", "contourf", "surface"],
        metadata={"help": "plots drawn", "choices": ("contour", "contourf", "surface")},
    )


@dataclass
class Config:
    """A whole run: one section per part, plus the global seed."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    hessian: HessianConfig = field(default_factory=HessianConfig)
    noise_stability: NoiseStabilityConfig = field(default_factory=NoiseStabilityConfig)
    landscape: LandscapeConfig = field(default_factory=LandscapeConfig)
    seed: int = _f(0, "global seed")
    run_dir: str | None = _f(None, "run directory (None = derived from the config)")
    smoke: bool = _f(False, "smoke run: apply the YAML file's smoke_overrides")


_BASE_OPTIONS = ("momentum", "nesterov", "betas", "eps")
_ALL_OPTIONS = {name for info in OPTIMIZERS.values() for name in info.options}
#: OptimizerConfig fields that are sharpness-aware options, in field order.
_SHARPNESS_OPTIONS = tuple(
    f.name for f in dataclasses.fields(OptimizerConfig) if f.name in _ALL_OPTIONS
)

# ------------------------------------------------------------------------------- types


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _init_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init]


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _unwrap_optional(tp: Any) -> tuple[bool, Any]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported config field type {tp!r}")
        return True, args[0]
    return False, tp


_NAMES = {bool: "a boolean (true or false)", int: "an integer", float: "a number", str: "a string"}
_PLURALS = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}


def _describe(tp: Any) -> str:
    optional, tp = _unwrap_optional(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if _is_section(tp):
        text = "a section (a mapping of keys)"
    elif origin is list:
        text = f"a list of {_PLURALS.get(args[0], 'values')}"
    elif origin is tuple and args and args[-1] is not Ellipsis:
        text = f"a list of {len(args)} {_PLURALS.get(args[0], 'values')}"
    elif origin is tuple:
        text = f"a list of {_PLURALS.get(args[0] if args else None, 'values')}"
    else:
        text = _NAMES.get(tp, getattr(tp, "__name__", str(tp)))
    return f"{text} or null" if optional else text


def _short(tp: Any) -> str:
    """``int | None``, ``list[float]``, a section's class name."""
    optional, tp = _unwrap_optional(tp)
    args = typing.get_args(tp)
    if args:
        inner = ", ".join("..." if a is Ellipsis else _short(a) for a in args)
        text = f"{typing.get_origin(tp).__name__}[{inner}]"
    else:
        text = getattr(tp, "__name__", str(tp))
    return f"{text} | None" if optional else text


def _src(source: str | None) -> str:
    return f" (from {source})" if source else ""


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NULL = {"null", "none"}


def _split_list(text: str) -> list[str]:
    s = text.strip()
    if len(s) >= 2 and s[0] in "[(" and s[-1] in "])":
        s = s[1:-1]
    if not s.strip():
        return []
    items = [item.strip() for item in s.split(",")]
    return [i[1:-1] if len(i) >= 2 and i[0] == i[-1] and i[0] in "'\"" else i for i in items]


def _convert(value: Any, tp: Any, key: str, source: str | None, *, text: bool, root: Any) -> Any:
    """``value`` as type ``tp``; ``text``: a command-line string to parse."""
    optional, inner = _unwrap_optional(tp)

    def bad() -> ConfigError:
        return ConfigError(
            f"config key {key!r} expects {_describe(tp)}, got {value!r}{_src(source)}"
        )

    if _is_section(inner):
        if text:
            example = _init_fields(inner)[0].name
            raise ConfigError(
                f"config key {key!r} is a section, not a value; set one of its keys instead, "
                f"e.g. {key}.{example}=...{_src(source)}"
            )
        if value is None:  # an empty section in YAML
            value = {}
        if isinstance(value, inner):
            return value
        if not isinstance(value, Mapping):
            raise bad()
        return _build(inner, value, source, key, root)
    if value is None or (text and optional and value.strip().lower() in _NULL):
        if optional:
            return None
        raise bad()
    origin, args = typing.get_origin(inner), typing.get_args(inner)
    if origin in (list, tuple):
        if text:
            items = _split_list(value)
        elif isinstance(value, list | tuple):
            items = list(value)
        else:
            raise bad()
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(items) != len(args):
                raise bad()
            elem_types = list(args)
        else:
            elem_types = [args[0] if args else Any] * len(items)
        out = [
            _convert(v, t, f"{key}[{i}]", source, text=text, root=root)
            for i, (v, t) in enumerate(zip(items, elem_types, strict=True))
        ]
        return tuple(out) if origin is tuple else out
    if inner is Any:
        return value
    if text:
        s = value.strip()
        if inner is str:
            return value
        if inner is bool:
            if s.lower() in _TRUE:
                return True
            if s.lower() in _FALSE:
                return False
            raise bad()
        if inner not in (int, float):
            raise TypeError(f"unsupported config field type {tp!r} for {key!r}")
        try:
            return inner(s)
        except ValueError:
            raise bad() from None
    if inner is bool:
        if isinstance(value, bool):
            return value
    elif inner is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif inner is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif inner is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"unsupported config field type {tp!r} for {key!r}")
    raise bad()


# ---------------------------------------------------------------------------- keys


def _leaf_keys(obj: Any, prefix: str = "") -> list[str]:
    cls = obj if isinstance(obj, type) else type(obj)
    hints, out = _hints(cls), []
    for f in _init_fields(cls):
        key = _join(prefix, f.name)
        tp = hints[f.name]
        if _is_section(tp):
            sub = tp if isinstance(obj, type) else getattr(obj, f.name)
            out.extend(_leaf_keys(sub, key))
        else:
            out.append(key)
    return out


def flat_keys(cls: type) -> list[str]:
    """Every dotted leaf key of config class ``cls`` (or of a config instance), in order."""
    return _leaf_keys(cls)


def _children(keys: list[str]) -> dict[str, dict[str, str]]:
    """Section (``""`` = top level) -> {child name: dotted child key}; children may be sections."""
    out: dict[str, dict[str, str]] = {"": {}}
    for k in keys:
        parts = k.split(".")
        for i in range(1, len(parts) + 1):
            parent, child = ".".join(parts[: i - 1]), ".".join(parts[:i])
            out.setdefault(parent, {})[parts[i - 1]] = child
    return out


def _close_children(children: dict[str, str], name: str) -> list[str]:
    return [children[n] for n in difflib.get_close_matches(name, list(children), n=3)]


def _unknown(root: Any, key: str, source: str | None) -> ConfigError:
    """Unknown ``key``, with suggestions: siblings, the same name in other sections, typos."""
    keys = _leaf_keys(root)
    tree = _children(keys)
    prefix, _, last = key.rpartition(".")
    near: list[str] = []
    if prefix in tree:
        near = _close_children(tree[prefix], last)
    else:  # a misspelled section: look in the sections it resembles
        for section in difflib.get_close_matches(prefix, [s for s in tree if s], n=2):
            near += _close_children(tree[section], last)
    if not near:  # the same (or a similar) name in another section
        lasts = {k.rpartition(".")[2] for k in keys}
        close = difflib.get_close_matches(last, list(lasts), n=3, cutoff=0.75)
        near = [k for name in close for k in keys if k.rpartition(".")[2] == name]
        if prefix not in tree:
            near += difflib.get_close_matches(key, keys, n=3)
    near = list(dict.fromkeys(n for n in near if n != key))[:4]
    msg = f"unknown config key {key!r}{_src(source)}"
    if near:
        return ConfigError(f"{msg}; did you mean {', '.join(near)}?")
    if prefix in tree:
        where = f"under '{prefix}'" if prefix else "at the top level"
        return ConfigError(f"{msg}; valid keys {where}: {', '.join(tree[prefix])}")
    return ConfigError(msg)


# ------------------------------------------------------------------------ building


def _build(cls: type[C], data: Mapping[str, Any], source: str | None, prefix: str, root: Any) -> C:
    if not isinstance(data, Mapping):
        what = f"config section {prefix!r}" if prefix else "the config"
        raise ConfigError(f"{what} expects a mapping of keys, got {data!r}{_src(source)}")
    hints = _hints(cls)
    names = {f.name for f in _init_fields(cls)}
    kwargs = {}
    for k, v in data.items():
        key = _join(prefix, str(k))
        if k not in names:
            raise _unknown(root, key, source)
        kwargs[k] = _convert(v, hints[k], key, source, text=False, root=root)
    return cls(**kwargs)


def from_dict(cls: type[C], data: Mapping[str, Any], *, source: str = "config") -> C:
    """Builds ``cls`` from a nested mapping of YAML-typed values; missing keys keep defaults.

    Strict: unknown keys and wrong types raise ConfigError (an int is accepted for a float
    field, a bool is not accepted for a number, a list for a tuple, None only where the
    field is Optional; an empty section means its defaults). Bounds, choices and optimizer
    options are checked by ``validate``.
    """
    return _build(cls, data, source, "", cls)


def parse_overrides(args: Sequence[str]) -> dict[str, str]:
    """``["key=value", ...]`` -> ``{key: value}`` (later items win)."""
    out: dict[str, str] = {}
    for item in args:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"invalid override {item!r}: expected key=value with a dotted key, "
                "e.g. optimizer.lr=0.05 or train.epochs=3"
            )
        out[key.strip()] = value
    return out


def _set(cfg: Any, key: str, value: Any, source: str | None, *, text: bool) -> None:
    """Sets dotted ``key`` of ``cfg`` in place (``text``: parse a command-line string)."""
    obj, parts = cfg, key.split(".")
    for i, part in enumerate(parts):
        cls = type(obj)
        names = {f.name for f in _init_fields(cls)} if dataclasses.is_dataclass(obj) else set()
        if part not in names:
            raise _unknown(cfg, key, source)
        tp = _hints(cls)[part]
        sub_key = ".".join(parts[: i + 1])
        if i == len(parts) - 1:
            if _is_section(tp) and not text and isinstance(value, Mapping):
                for k, v in value.items():
                    _set(cfg, f"{sub_key}.{k}", v, source, text=text)
                return
            setattr(obj, part, _convert(value, tp, sub_key, source, text=text, root=cfg))
            return
        if not _is_section(tp):
            raise _unknown(cfg, key, source)
        obj = getattr(obj, part)


def apply_overrides(
    cfg: C, overrides: Mapping[str, Any], *, source: str | None = "command line"
) -> C:
    """A copy of ``cfg`` with dotted-key overrides applied in order.

    String values are parsed by the field's type: booleans true/false/yes/no/on/off/1/0,
    numbers, ``null``/``none`` for Optional fields, lists and tuples as ``[a,b]``, ``a,b``
    or a single item; strings are taken as they are. Other values are taken as YAML-typed.
    """
    out = copy.deepcopy(cfg)
    for key, value in overrides.items():
        _set(out, str(key), value, source, text=isinstance(value, str))
    return out


# ------------------------------------------------------------------------- validate


def _check_value(key: str, value: Any, meta: Mapping[str, Any]) -> None:
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(
            f"{key} must be one of {', '.join(str(c) for c in choices)}; got {value!r}"
        )
    for name, op, ok in (
        ("min", ">=", lambda v, b: v >= b),
        ("gt", ">", lambda v, b: v > b),
        ("max", "<=", lambda v, b: v <= b),
        ("lt", "<", lambda v, b: v < b),
    ):
        bound = meta.get(name)
        if bound is not None and not ok(value, bound):
            raise ConfigError(f"{key} must be {op} {bound}; got {value!r}")


def _check_optimizer(opt: OptimizerConfig, prefix: str) -> None:
    info = OPTIMIZERS[opt.name]
    for name in _SHARPNESS_OPTIONS:
        if getattr(opt, name) is not None and name not in info.options:
            has = (
                f"its options: {', '.join(sorted(info.options))}"
                if info.options
                else "it has no sharpness-aware options"
            )
            raise ConfigError(
                f"{_join(prefix, name)} is not an option of {opt.name} ({has}); "
                "remove it or pick an optimizer that has it"
            )
    base_cls = BASES[opt.base] if info.sharpness_aware else info.cls
    accepted = inspect.signature(base_cls.__init__).parameters
    for name in _BASE_OPTIONS:
        if getattr(opt, name) is not None and name not in accepted:
            takes = ", ".join(n for n in _BASE_OPTIONS if n in accepted) or "none"
            torch_name = f"torch.optim.{base_cls.__name__}"
            if info.sharpness_aware:
                who = f"the base optimizer {opt.base} ({torch_name}"
                fix = f"set {_join(prefix, 'base')} to one that accepts it"
            else:
                who = f"optimizer {opt.name} ({torch_name}"
                fix = "pick an optimizer that accepts it"
            raise ConfigError(
                f"{_join(prefix, name)} is not accepted by {who}; of the base options it takes "
                f"{takes}); remove it or {fix}"
            )


def _validate(obj: Any, prefix: str) -> None:
    hints = _hints(type(obj))
    for f in _init_fields(type(obj)):
        key, value, tp = _join(prefix, f.name), getattr(obj, f.name), hints[f.name]
        if _is_section(tp):
            if not isinstance(value, tp):
                raise ConfigError(f"config key {key!r} expects {_describe(tp)}, got {value!r}")
            _validate(value, key)
            continue
        _convert(value, tp, key, None, text=False, root=obj)  # type check
        if value is None:
            continue
        if isinstance(value, list):
            if f.metadata.get("nonempty") and not value:
                raise ConfigError(f"{key} must not be empty")
            for i, v in enumerate(value):
                _check_value(f"{key}[{i}]", v, f.metadata)
        else:
            _check_value(key, value, f.metadata)
    if isinstance(obj, OptimizerConfig):
        _check_optimizer(obj, prefix)


def validate(cfg: Any) -> None:
    """Checks types, choices, bounds and optimizer-option consistency; raises ConfigError."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"validate expects a config instance, got {cfg!r}")
    _validate(cfg, "")


def optimizer_kwargs(opt: OptimizerConfig) -> dict[str, Any]:
    """Keyword arguments for ``create_optimizer(opt.name, params, **kw)``.

    ``base`` (sharpness-aware optimizers only), ``lr``, ``weight_decay`` and every option
    that is not None.
    """
    _validate(opt, "optimizer")
    kw: dict[str, Any] = {}
    if OPTIMIZERS[opt.name].sharpness_aware:
        kw["base"] = opt.base
    kw["lr"], kw["weight_decay"] = opt.lr, opt.weight_decay
    for name in (*_BASE_OPTIONS, *_SHARPNESS_OPTIONS):
        value = getattr(opt, name)
        if value is not None:
            kw[name] = tuple(value) if isinstance(value, list | tuple) else value
    return kw


# ----------------------------------------------------------------------- plain / yaml


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"config value {value!r} of type {type(value).__name__} is not plain data")


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested dict of plain Python values (tuples become lists), in field order."""
    return {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` (no dot) as a float, as YAML 1.2 does."""


_FLOAT = "tag:yaml.org,2002:float"
_Loader.yaml_implicit_resolvers = {
    ch: [r for r in resolvers if r[0] != _FLOAT]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
            |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
            |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
            |[-+]?\.(?:inf|Inf|INF)
            |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a config YAML file (``1e-3`` read as a float); a missing,
    unreadable or malformed file raises :class:`ConfigError` naming it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} not found") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {str(path)!r}: {e}") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"config file {str(path)!r} must hold a mapping of keys at the top level, "
            f"got {type(data).__name__}"
        )
    return dict(data)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = _join(prefix, str(k))
        if isinstance(v, Mapping):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def load_config(
    cls: type[C],
    path: str | Path | None,
    overrides: Sequence[str] | Mapping[str, str] = (),
) -> C:
    """Defaults <- YAML file ``path`` (if given) <- ``key=value`` overrides, then validated.

    Besides config fields, the file may hold two top-level mappings of dotted keys:
    ``optimizer_overrides: {<optimizer name>: {optimizer.rho: 0.05, ...}}``, applied when
    the final ``optimizer.name`` is that name (a paper's setting per optimizer), and
    ``smoke_overrides``, applied when the final ``smoke`` is true. Precedence: defaults <
    file < optimizer_overrides < smoke_overrides < command line.
    """
    if isinstance(overrides, str):
        overrides = [overrides]
    cli = dict(overrides) if isinstance(overrides, Mapping) else parse_overrides(overrides)
    data: dict[str, Any] = {}
    smoke: Mapping[str, Any] = {}
    per_optimizer: Mapping[str, Any] = {}
    source = None
    if path is not None:
        source = str(path)
        data = read_yaml(Path(path))
        smoke = _mapping(data.pop("smoke_overrides", None), "smoke_overrides", source)
        per_optimizer = _mapping(
            data.pop("optimizer_overrides", None), "optimizer_overrides", source
        )
    cfg = _build(cls, data, source, "", cls)
    layers: list[tuple[Mapping[str, Any], str]] = []
    for name, keys in per_optimizer.items():  # every layer is checked, used or not
        if name not in OPTIMIZERS:
            near = difflib.get_close_matches(str(name), sorted(OPTIMIZERS), n=1)
            hint = f"; did you mean {near[0]}?" if near else f"; valid: {', '.join(OPTIMIZERS)}"
            raise ConfigError(f"optimizer_overrides in {source!r} names {name!r}{hint}")
        layers.append((_mapping(keys, f"optimizer_overrides.{name}", source), name))
    layers.append((smoke, "smoke"))
    chosen = apply_overrides(cfg, cli)
    for keys, name in layers:
        trial = copy.deepcopy(cfg)
        label = (
            f"{source} ({'smoke_overrides' if name == 'smoke' else f'optimizer_overrides.{name}'})"
        )
        for key, value in _flatten(keys).items():
            _set(trial, key, value, label, text=False)
        applies = (
            getattr(chosen, "smoke", False) if name == "smoke" else (chosen.optimizer.name == name)
        )
        if applies:
            cfg = trial
    cfg = apply_overrides(cfg, cli)
    validate(cfg)
    return cfg


def _mapping(value: Any, what: str, source: str | None) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{what} in {source!r} must be a mapping of dotted keys, got {value!r}")
    return value


def save_config(cfg: Any, path: str | Path) -> None:
    """Writes ``to_dict(cfg)`` as YAML atomically (temp file, fsync, ``os.replace``)."""
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=False)
    write_text(path, text)


# --------------------------------------------------------------------------- compare


def _flat_values(data: Any, prefix: str = "") -> dict[str, Any]:
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        data = to_dict(data)
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = _join(prefix, str(k))
        if isinstance(v, Mapping) or (dataclasses.is_dataclass(v) and not isinstance(v, type)):
            out.update(_flat_values(v, key))
        else:
            out[key] = _plain(v) if isinstance(v, tuple) else v
    return out


def _ignored(key: str, ignore: Collection[str]) -> bool:
    parts = key.split(".")
    return any(".".join(parts[:i]) in ignore for i in range(1, len(parts) + 1))


_MISSING = object()


def _same(a: Any, b: Any) -> bool:
    """Equal, with True != 1 (bools and numbers never match)."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def diff_configs(
    a: Mapping[str, Any], b: Mapping[str, Any], *, ignore: Collection[str] = RUNTIME_KEYS
) -> list[str]:
    """``["optimizer.lr: 0.1 -> 0.01", ...]`` for dotted keys whose values differ.

    ``a`` and ``b`` are nested mappings (``to_dict`` output) or config instances; keys in
    ``ignore``, or under a section named there, are skipped. A missing key shows as
    ``<missing>``.
    """
    fa, fb = _flat_values(a), _flat_values(b)
    out = []
    for key in [*fa, *(k for k in fb if k not in fa)]:
        if _ignored(key, ignore):
            continue
        va, vb = fa.get(key, _MISSING), fb.get(key, _MISSING)
        if va is _MISSING or vb is _MISSING or not _same(va, vb):
            show = ["<missing>" if v is _MISSING else repr(v) for v in (va, vb)]
            out.append(f"{key}: {show[0]} -> {show[1]}")
    return out


def config_help(cls: type) -> str:
    """One line per dotted key: default, type, help and allowed values (for ``--help``)."""
    lines = []

    def walk(c: type, prefix: str) -> None:
        hints = _hints(c)
        for f in _init_fields(c):
            key, tp = _join(prefix, f.name), hints[f.name]
            if _is_section(tp):
                walk(tp, key)
                continue
            factory = f.default_factory
            default = factory() if factory is not dataclasses.MISSING else f.default
            meta = f.metadata
            extra = [f"one of {', '.join(map(str, meta['choices']))}"] if "choices" in meta else []
            ops = (("min", ">="), ("gt", ">"), ("max", "<="), ("lt", "<"))
            extra += [f"{op} {meta[name]}" for name, op in ops if name in meta]
            note = f" [{'; '.join(extra)}]" if extra else ""
            help_ = meta.get("help", "")
            lines.append(f"  {key}={_plain(default)!r} ({_short(tp)}): {help_}{note}")

    walk(cls, "")
    return "\n".join(lines)
