"""The run configuration's schema: one dataclass per section, plus how a file is read.

>>> cfg = load_config(Config, "image_exps/configs/digits.yaml", ["optimizer.name=nso", "seed=1"])
>>> opt = create_optimizer(cfg.optimizer.name, model, **optimizer_kwargs(cfg.optimizer))

Precedence: field defaults <- a YAML file <- its ``optimizer_overrides`` and
``smoke_overrides`` <- ``key=value`` overrides. The typed-config machinery (parsing,
checks, messages) is :mod:`common.train.typed`. Shared sections hold only what every
domain has; a domain subclasses them for its own keys (``class ImageDataConfig(DataConfig):
cutout: int = ...``) and ``Config`` to use them. The optimizer section is generated from
the optimizer registry, so a new optimizer's options need no edit here.
"""

from __future__ import annotations

import difflib
import inspect
import sys
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import create_model

from common.optim.registry import BASE_OPTIONS, BASES, OPTIMIZERS
from common.train.config_files import read_yaml, save_config
from common.train.distributed import launched_rank
from common.train.typed import (
    COMMAND_LINE,
    ConfigError,
    Section,
    apply_overrides,
    config_help,
    flat_keys,
    flatten,
    from_dict,
    join_key,
    keyfield,
    mapping_of,
    merge,
    parse_overrides,
    to_dict,
    validate,
    validated,
)
from common.train.typed import (
    diff_configs as _diff_configs,
)

__all__ = [
    "RUNTIME_KEYS",
    "SEED_MAX",
    "AdaptiveSharpnessConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "HessianConfig",
    "LandscapeConfig",
    "MeasuredData",
    "MeasurementSection",
    "ModelConfig",
    "NoiseStabilityConfig",
    "OptimizerConfig",
    "PacBayesConfig",
    "ScheduleConfig",
    "Section",
    "TrainConfig",
    "apply_overrides",
    "config_changes",
    "config_help",
    "diff_configs",
    "flat_keys",
    "from_dict",
    "load_config",
    "optimizer_kwargs",
    "parse_overrides",
    "read_yaml",
    "runtime_keys",
    "save_config",
    "to_dict",
    "validate",
]

C = TypeVar("C", bound=Section)

#: Keys that may change when a run is resumed or measured (they do not change the
#: result), besides the measurement sections (see RUNTIME_KEYS below the Config).
_RUN_KEYS: frozenset[str] = frozenset(
    {
        "run_dir",
        "train.progress",
        "train.log",
        "train.checkpoint_every",
        "data.num_workers",
        "data.root",
        "data.download",
        "train.device",
    }
)

#: Largest seed every RNG takes (torch's manual_seed accepts up to 2**64 - 1, numpy is fed
#: the seed modulo 2**32).
SEED_MAX = 2**63 - 1


class DataConfig(Section):
    """Which data set and how it is loaded."""

    name: str = keyfield("digits", "data set name")
    root: str = keyfield("data", "directory holding (or receiving) the data")
    download: bool = keyfield(True, "download the data set if it is missing")
    num_workers: int = keyfield(0, "DataLoader worker processes", min=0)
    val_fraction: float = keyfield(0.1, "fraction of the training set held out", min=0, lt=1)
    n_examples: int | None = keyfield(None, "cap the training set size (smoke runs)", min=1)
    split_seed: int = keyfield(
        0, "seed of the train/val/test split (fixed across run seeds)", min=0, max=SEED_MAX
    )


class ModelConfig(Section):
    """Which model."""

    name: str = keyfield("cnn", "model name")
    dropout: float = keyfield(0.0, "dropout probability", min=0, lt=1)
    weights: str | None = keyfield(
        None, "initial weights: a state dict or checkpoint file to fine-tune from"
    )
    replace_head: bool = keyfield(
        False,
        "a fresh classifier instead of model.weights' (a text model folder's: where it has "
        "another number of classes)",
    )


def diff_configs(
    a: Mapping[str, Any], b: Mapping[str, Any], *, ignore: Collection[str] | None = None
) -> list[str]:
    """``["optimizer.lr: 0.1 -> 0.01", ...]``: the keys whose values differ, runtime keys
    (:data:`RUNTIME_KEYS`) left out unless ``ignore`` says otherwise."""
    return _diff_configs(a, b, ignore=RUNTIME_KEYS if ignore is None else ignore)


class MeasurementSection(Section):
    """The options of a measurement (:mod:`common.measurements`): a config section named
    as the measurement, which may change when the run is measured (a runtime section)."""


# ----------------------------------------------------------------- optimizer section
#: Passed by the trainer from ``train.max_grad_norm`` (it clips every optimizer alike).
_NOT_IN_SECTION = frozenset({"max_grad_norm"})
#: Always passed to the optimizer, so they carry a value rather than None.
_ALWAYS = {"lr": 0.1, "weight_decay": 0.0}


def _owners() -> dict[str, list[str]]:
    """Option name -> the optimizers that have it, for the section's help text."""
    out: dict[str, list[str]] = {}
    for name, info in OPTIMIZERS.items():
        for option in info.specs:
            out.setdefault(option, []).append(name)
    return out


def _option_field(name: str, option: Any, owners: Sequence[str]) -> tuple[str, tuple[Any, Any]]:
    """A section field from a registry :class:`~common.optim.Option`."""
    tp: Any = option.type
    if tp is tuple:
        tp = tuple[(float,) * option.length]  # betas
    checks = {k: getattr(option, k) for k in ("min", "max", "gt", "lt", "choices")}
    checks = {k: v for k, v in checks.items() if v is not None}
    where = f" ({', '.join(owners)})" if owners else ""
    if name in _ALWAYS:
        return name, (tp, keyfield(_ALWAYS[name], option.help, **checks))
    return name, (tp | None, keyfield(None, option.help + where, **checks))


def _check_optimizer(opt: Any, prefix: str) -> None:
    """An option the chosen optimizer (or its base) does not take is refused."""
    info = OPTIMIZERS[opt.name]
    for name in _WRAPPER_OPTIONS:
        if getattr(opt, name) is not None and name not in info.specs:
            has = (
                f"its options: {', '.join(sorted(set(info.specs) - _NOT_IN_SECTION))}"
                if info.sharpness_aware
                else "it has no sharpness-aware options"
            )
            raise ConfigError(
                f"{join_key(prefix, name)} is not an option of {opt.name} ({has}); "
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
                fix = f"set {join_key(prefix, 'base')} to one that accepts it"
            else:
                who = f"optimizer {opt.name} ({torch_name}"
                fix = "pick an optimizer that accepts it"
            raise ConfigError(
                f"{join_key(prefix, name)} is not accepted by {who}; of the base options it "
                f"takes {takes}); remove it or {fix}"
            )


_NAMES = tuple(sorted(OPTIMIZERS))


class _OptimizerSection(Section):
    def check_section(self, prefix: str) -> None:
        _check_optimizer(self, prefix)


def _optimizer_section() -> type[Section]:
    """``OptimizerConfig``: name, base, the base options and every registered optimizer's
    own options (None = that optimizer's default), read from the registry."""
    owners = _owners()
    fields: list[tuple[str, tuple[Any, Any]]] = [
        ("name", (str, keyfield("sgd", "optimizer (registry name)", choices=_NAMES))),
        (
            "base",
            (str, keyfield("sgd", "base of a sharpness-aware optimizer", choices=tuple(BASES))),
        ),
    ]
    fields += [_option_field(n, o, ()) for n, o in BASE_OPTIONS.items()]
    wrapper: dict[str, Any] = {}
    for info in OPTIMIZERS.values():
        for name, option in info.specs.items():
            if name not in _NOT_IN_SECTION:
                wrapper.setdefault(name, option)
    fields += [_option_field(n, o, owners[n]) for n, o in wrapper.items()]
    return create_model(
        "OptimizerConfig",
        __base__=_OptimizerSection,
        __module__=__name__,
        __doc__="The optimizer: name, base optimizer and every option (from the registry).",
        **dict(fields),
    )


_BASE_OPTIONS = tuple(n for n in BASE_OPTIONS if n not in _ALWAYS)
_WRAPPER_OPTIONS = tuple(
    dict.fromkeys(n for info in OPTIMIZERS.values() for n in info.specs if n not in _NOT_IN_SECTION)
)
OptimizerConfig = _optimizer_section()


def optimizer_kwargs(opt: Any) -> dict[str, Any]:
    """Keyword arguments for ``create_optimizer(opt.name, params, **kw)``.

    ``base`` (sharpness-aware optimizers only), ``lr``, ``weight_decay`` and every option
    that is not None.
    """
    validate(opt, prefix="optimizer")
    kw: dict[str, Any] = {}
    if OPTIMIZERS[opt.name].sharpness_aware:
        kw["base"] = opt.base
    kw["lr"], kw["weight_decay"] = opt.lr, opt.weight_decay
    for name in (*_BASE_OPTIONS, *_WRAPPER_OPTIONS):
        value = getattr(opt, name)
        if value is not None:
            kw[name] = tuple(value) if isinstance(value, list | tuple) else value
    return kw


class ScheduleConfig(Section):
    """Learning-rate schedule."""

    name: str = keyfield(
        "none", "schedule", choices=("none", "step", "multistep", "cosine", "linear")
    )
    step_size: int = keyfield(30, "step schedule period (epochs)", min=1)
    gamma: float = keyfield(0.1, "step and multistep schedule factor", gt=0)
    milestones: list[float] = keyfield(
        help="multistep: fractions of training (0-1) after which the LR is x gamma",
        factory=lambda: [0.5, 0.75],
        gt=0,
        lt=1,
        nonempty=True,
    )
    warmup_steps: int = keyfield(0, "linear warm-up (optimizer steps)", min=0)
    min_lr: float = keyfield(0.0, "cosine schedule floor", min=0)

    def check_section(self, prefix: str) -> None:
        if list(self.milestones) != sorted(set(self.milestones)):
            raise ConfigError(
                f"{prefix}.milestones must increase, got {list(self.milestones)}: sort them"
            )


class TrainConfig(Section):
    """The training loop."""

    epochs: int = keyfield(10, "training epochs", min=1)
    max_steps: int | None = keyfield(None, "stop after this many optimizer steps", min=1)
    batch_size: int = keyfield(64, "global batch size (split across processes)", min=1)
    eval_batch_size: int | None = keyfield(None, "evaluation batch size (None = batch_size)", min=1)
    checkpoint_every: int = keyfield(0, "checkpoint period in steps (0 = epoch ends only)", min=0)
    precision: str = keyfield("fp32", "numeric precision", choices=("fp32", "bf16", "fp16"))
    accum_steps: int = keyfield(1, "gradient accumulation steps", min=1)
    max_grad_norm: float | None = keyfield(None, "gradient clipping norm", gt=0)
    label_smoothing: float = keyfield(
        0.0, "label smoothing, passed to the task's loss", min=0, lt=1
    )
    class_weights: str = keyfield(
        "none",
        "class weights of the loss: none, or balanced (n / (classes x n_c) from the training "
        "split's labels, sklearn's 'balanced')",
        choices=("none", "balanced"),
    )
    drop_last: bool = keyfield(True, "drop the last partial training batch of an epoch")
    sync_bn: bool = keyfield(False, "synchronise BatchNorm across processes")
    device: str = keyfield("auto", "device", choices=("auto", "cpu", "cuda"))
    log: str = keyfield("none", "metric logger", choices=("none", "tensorboard", "wandb"))
    progress: bool = keyfield(True, "progress bars")
    eval_every: int = keyfield(1, "evaluation period (epochs)", min=1)


_SPLITS = ("train", "val", "test")
_PARAMS = ("all", "reference")
_CHECKPOINTS = ("best", "last")


class MeasuredData(MeasurementSection):
    """What every measurement of a checkpoint on a data subset states: the split, how many
    of its examples, the batch size, the seed of its subset and draws, and which
    checkpoint; a measurement's section subclasses it (and may change a default)."""

    split: str = keyfield("test", "data split", choices=_SPLITS)
    n_examples: int | None = keyfield(1000, "examples used (None = all)", min=1)
    batch_size: int = keyfield(250, "batch size", min=1)
    seed: int = keyfield(0, "seed of the measurement", min=0, max=SEED_MAX)
    checkpoint: str = keyfield("best", "checkpoint measured", choices=_CHECKPOINTS)


class HessianConfig(MeasuredData):
    """Hessian trace, top eigenvalues and spectral density of a checkpoint."""

    n_probes: int = keyfield(100, "random probes of the trace estimator (the budget)", min=1)
    method: str = keyfield(
        "hutchinson", "trace estimator", choices=("hutchinson", "hutch++", "stratified")
    )
    target_stderr: float | None = keyfield(
        None, "stop the trace once its standard error is at most this (None = every probe)", gt=0
    )
    sketch_size: int | None = keyfield(
        None, "hutch++: vectors of its sketch (None = n_probes // 3)", min=1
    )
    sampling: str = keyfield(
        "full", "trace probes through every batch, or each through one", choices=("full", "batch")
    )
    eig_tol: float = keyfield(1e-4, "relative error of the top eigenvalues", gt=0, lt=1)
    eig_start: str = keyfield(
        "gradient",
        "Lanczos start: the gradient plus a random vector, or random",
        choices=("gradient", "random"),
    )
    params: str = keyfield("all", "parameters measured", choices=_PARAMS)
    top_k: int = keyfield(1, "top eigenvalues", min=1)
    esd: bool = keyfield(False, "also the spectral density")
    esd_iter: int = keyfield(50, "Lanczos iterations of the spectral density", min=2)
    operator: str = keyfield(
        "hessian",
        "curvature matrix measured: the Hessian, the generalised Gauss-Newton or the empirical "
        "Fisher",
        choices=("hessian", "ggn", "fisher"),
    )


class NoiseStabilityConfig(MeasuredData):
    """Loss change under random weight noise."""

    params: str = keyfield("all", "parameters perturbed", choices=_PARAMS)
    sigma: list[float] = keyfield(help="noise scales", factory=lambda: [0.01], min=0, nonempty=True)
    n_samples: int = keyfield(20, "noise draws per scale", min=1)
    two_sided: bool = keyfield(False, "antithetic pairs W ± U")


class AdaptiveSharpnessConfig(MeasuredData):
    """Adaptive sharpness: the loss increase at worst and on average in a |w|-scaled ball."""

    split: str = keyfield("train", "data split (the paper's: training examples)", choices=_SPLITS)
    batch_size: int = keyfield(250, "batch size (per_batch: the size m of each max)", min=1)
    params: str = keyfield("all", "parameters perturbed", choices=_PARAMS)
    cases: list[str] = keyfield(
        help="worst (projected ascent) and/or average (Gaussian) case",
        factory=lambda: ["worst", "average"],
        choices=("worst", "average"),
        nonempty=True,
    )
    scaling: str = keyfield(
        "adaptive", "c = |w| (adaptive) or c = 1 (none)", choices=("adaptive", "none")
    )
    rho: float = keyfield(0.002, "worst case: radius of ||delta / c||_p <= rho", min=0)
    norm: str = keyfield("linf", "worst case: the ball's norm p", choices=("l2", "linf"))
    steps: int = keyfield(20, "worst case: ascent steps (a forward+backward pass each)", min=1)
    restarts: int = keyfield(1, "worst case: random restarts (the largest is kept)", min=1)
    per_batch: bool = keyfield(False, "worst case: a delta per batch, their mean (the paper's)")
    average_rho: float = keyfield(0.1, "average case: delta ~ N(0, rho^2 c^2)", min=0)
    n_samples: int = keyfield(20, "average case: draws", min=1)
    two_sided: bool = keyfield(False, "average case: antithetic pairs +-delta")


class PacBayesConfig(MeasuredData):
    """PAC-Bayes flatness: 1/sigma^2 for the largest weight noise raising the loss by target."""

    split: str = keyfield("train", "data split (the paper's: training examples)", choices=_SPLITS)
    params: str = keyfield("all", "parameters perturbed", choices=_PARAMS)
    noise: list[str] = keyfield(
        help="plain N(0, sigma^2) and/or magnitude-aware N(0, sigma^2 w^2 + eps^2) noise",
        factory=lambda: ["plain", "magnitude"],
        choices=("plain", "magnitude"),
        nonempty=True,
    )
    target: float = keyfield(0.1, "the expected loss increase that defines sigma", gt=0)
    eps: float = keyfield(1e-3, "magnitude-aware noise floor", min=0)
    n_samples: int = keyfield(10, "noise draws per sigma tried", min=1)
    two_sided: bool = keyfield(False, "antithetic pairs +-u")
    sigma_min: float = keyfield(1e-4, "bisection bracket, low end", gt=0)
    sigma_max: float = keyfield(10.0, "bisection bracket, high end", gt=0)
    tol: float = keyfield(0.01, "stop when the bracket's high/low <= 1 + tol", gt=0)

    def check_section(self, prefix: str) -> None:
        if self.sigma_min >= self.sigma_max:
            raise ConfigError(
                f"{prefix}.sigma_min ({self.sigma_min:g}) must be below {prefix}.sigma_max "
                f"({self.sigma_max:g})"
            )


class LandscapeConfig(MeasuredData):
    """Loss along random filter-normalised directions."""

    seed: int = keyfield(0, "seed of the directions", min=0, max=SEED_MAX)
    dims: int = keyfield(2, "1-d curve or 2-d surface", choices=(1, 2))
    steps: int = keyfield(21, "grid points per direction", min=2)
    span: float = keyfield(1.0, "grid half-width", gt=0)
    ignore_bias_bn: bool = keyfield(True, "do not perturb biases and BatchNorm parameters")
    plots: list[str] = keyfield(
        help="plots drawn",
        factory=lambda: ["contour", "contourf", "surface"],
        choices=("contour", "contourf", "surface"),
    )


class Config(Section):
    """A whole run: one section per part, plus the global seed."""

    data: DataConfig = keyfield(factory=DataConfig)
    model: ModelConfig = keyfield(factory=ModelConfig)
    optimizer: OptimizerConfig = keyfield(factory=OptimizerConfig)
    schedule: ScheduleConfig = keyfield(factory=ScheduleConfig)
    train: TrainConfig = keyfield(factory=TrainConfig)
    hessian: HessianConfig = keyfield(factory=HessianConfig)
    noise_stability: NoiseStabilityConfig = keyfield(factory=NoiseStabilityConfig)
    adaptive_sharpness: AdaptiveSharpnessConfig = keyfield(factory=AdaptiveSharpnessConfig)
    pac_bayes: PacBayesConfig = keyfield(factory=PacBayesConfig)
    landscape: LandscapeConfig = keyfield(factory=LandscapeConfig)
    seed: int = keyfield(0, "global seed", min=0, max=SEED_MAX)
    run_dir: str | None = keyfield(None, "run directory (None = derived from the config)")
    smoke: bool = keyfield(False, "smoke run: apply the YAML file's smoke_overrides")


def runtime_keys(config_cls: type) -> frozenset[str]:
    """Keys (or whole sections) of ``config_cls`` that may change when a run is resumed or
    measured: they do not change the result. Every measurement section is one."""
    return _RUN_KEYS | {
        name
        for name, info in config_cls.model_fields.items()
        if isinstance(info.annotation, type) and issubclass(info.annotation, MeasurementSection)
    }


def config_changes(saved: Mapping[str, Any], current: Any) -> list[str]:
    """:func:`diff_configs` of a saved config against the config ``current``, the runtime
    keys of ``current``'s class (its measurement sections included) aside. A key the saved
    config lacks counts as its default: the run was written before the key existed (a
    newer optimizer's option), and a default is what the run behaved as."""
    kept = flatten(saved)
    defaults = flatten(to_dict(type(current)()))
    filled = {**{k: v for k, v in defaults.items() if k not in kept}, **kept}
    return diff_configs(filled, to_dict(current), ignore=runtime_keys(type(current)))


#: :func:`runtime_keys` of the base :class:`Config` (the domains' add no measurement).
RUNTIME_KEYS: frozenset[str] = runtime_keys(Config)


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
        smoke = mapping_of(data.pop("smoke_overrides", None), "smoke_overrides", source)
        per_optimizer = mapping_of(
            data.pop("optimizer_overrides", None), "optimizer_overrides", source
        )
    from_dict(cls, data, source=source)  # the file's own keys and types, named as its
    layers: list[tuple[str, Mapping[str, Any]]] = []
    for name, keys in per_optimizer.items():  # every layer is checked, used or not
        if name not in OPTIMIZERS:
            near = difflib.get_close_matches(str(name), sorted(OPTIMIZERS), n=1)
            hint = f"; did you mean {near[0]}?" if near else f"; valid: {', '.join(OPTIMIZERS)}"
            raise ConfigError(f"optimizer_overrides in {source!r} names {name!r}{hint}")
        layers.append((name, mapping_of(keys, f"optimizer_overrides.{name}", source)))
    layers.append(("smoke", smoke))
    command_line = (cli, COMMAND_LINE, True)
    chosen = _merged(cls, data, [command_line], source)
    applied = []
    for name, keys in layers:
        what = "smoke_overrides" if name == "smoke" else f"optimizer_overrides.{name}"
        layer = (flatten(keys), f"{source} ({what})", False)
        _merged(cls, data, [layer], source)  # checked even where it does not apply
        if chosen.smoke if name == "smoke" else chosen.optimizer.name == name:
            applied.append(layer)
    cfg = _merged(cls, data, [*applied, command_line], source)
    _drop_foreign_base_options(cfg, cli, source)
    validate(cfg)
    return cfg


def _merged(cls: type[C], data: Mapping[str, Any], layers: list, source: str | None) -> C:
    sources: dict[str, Any] = {"": source}
    return validated(cls, merge(cls, data, layers, sources), sources)


def _drop_foreign_base_options(cfg: Any, cli: Mapping[str, Any], source: str | None) -> None:
    """A base option the file sets (``momentum: 0.9`` in an SGD config) that the chosen base
    optimizer does not take (``optimizer.name=adam``) is dropped with a note; on the command
    line it stays, and validation refuses it."""
    opt = getattr(cfg, "optimizer", None)
    info = OPTIMIZERS.get(getattr(opt, "name", None))
    if info is None or (info.sharpness_aware and opt.base not in BASES):
        return  # validation names the problem
    base_cls = BASES[opt.base] if info.sharpness_aware else info.cls
    accepted = inspect.signature(base_cls.__init__).parameters
    for name in _BASE_OPTIONS:
        key, value = f"optimizer.{name}", getattr(opt, name)
        if value is not None and name not in accepted and key not in cli:
            setattr(opt, name, None)
            if launched_rank() == 0:  # once under torchrun
                print(
                    f"note: {key}={value} (from {source}) is not an option of "
                    f"torch.optim.{base_cls.__name__}; dropped",
                    file=sys.stderr,
                )
