"""Command-line entry points shared by every domain.

``python -m <domain>.train [--config FILE] key=value ...`` trains; ``python -m
<domain>.hessian | .noise_stability | .landscape run_dir=PATH key=value ...`` measures a
finished run with :mod:`common.sharpness` and writes the result into its run directory.
Bad input prints ``error: ...`` (no traceback) and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Subset

from common.errors import RunDirError, UserError
from common.io import read_json, write_json, write_text
from common.sharpness import (
    hessian_eigenvalues,
    hessian_esd,
    hessian_trace,
    loss_landscape,
    noise_stability,
    plot_esd,
    plot_landscape,
)
from common.sharpness.core import select_params
from common.sharpness.hessian import pilot_probes
from common.train.checkpoint import load_checkpoint, load_weights, seed_everything
from common.train.config import (
    RUNTIME_KEYS,
    ConfigError,
    apply_overrides,
    config_help,
    diff_configs,
    from_dict,
    load_config,
    parse_overrides,
    read_yaml,
    to_dict,
    validate,
)
from common.train.distributed import launched_rank, resolve_device
from common.train.rundir import (
    BEST,
    CHECKPOINT,
    CONFIG,
    MEASUREMENT_FILES,
    SUMMARY,
    check_domain,
    locked,
    run_dir_for,
)
from common.train.task import Task
from common.train.trainer import train

EXIT_USAGE = 2


def _guard(run: Callable[[], Any]) -> int:
    """Runs a command; a user error becomes one line on stderr and exit status 2.

    Under torchrun every process meets the same error: only rank 0 prints it."""
    try:
        run()
    except (UserError, ConfigError) as e:
        if launched_rank() == 0:
            print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


def _parser(prog: str, description: str, task: Task, sections: Sequence[str] = ()) -> Any:
    """The command's parser; ``--help`` lists every config key with its default (only the
    ``sections`` given, for a measurement command)."""
    keys = config_help(task.config_cls)
    if sections:
        keys = "\n".join(
            line for line in keys.splitlines() if line.strip().split(".")[0] in sections
        )
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="overrides: dotted config keys, e.g. optimizer.name=nso train.epochs=3 seed=1\n"
        f"keys (default, type: meaning [allowed]):\n{keys}",
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    if not sections:  # training: the config comes from a file; a measurement: its run's
        parser.add_argument(
            "--config",
            help=f"YAML file, or a config's name (default: {task.default_config.stem})",
        )
    return parser


def train_main(task: Task, argv: Sequence[str] | None = None) -> int:
    """``python -m <domain>.train``: config file + overrides -> a trained run directory."""
    parser = _parser(
        f"python -m {task.domain}_exps.train", "Train a model into a run directory.", task
    )
    parser.add_argument(
        "--measure",
        action="store_true",
        help="then measure the run: Hessian, noise stability, loss landscape (each one not "
        "already measured on the finished run with the same options)",
    )
    args = parser.parse_intermixed_args(argv)

    def run() -> None:
        cfg = load_config(task.config_cls, task.config_path(args.config), args.overrides)
        summary = train(task, cfg)
        if summary and args.measure:  # rank 0 only: the measurements are one process
            for kind in MEASUREMENTS:
                done = measured(Path(summary["run_dir"]), kind, to_dict(cfg)[kind])
                if done:
                    print(f"{kind}: already measured ({done}); delete it to measure again")
                else:
                    measure(task, kind, [f"run_dir={summary['run_dir']}"])
        if summary:
            print(f"done: {_result_line(summary)}; {summary['run_dir']}/{SUMMARY}")

    return _guard(run)


def _result_line(summary: dict[str, Any]) -> str:
    """``test accuracy 97.2, f1 96.0; best val accuracy 97.8 (epoch 3); 12.0 s``."""
    names = [m["name"] for m in summary["metrics"]]
    test = ", ".join(f"{n} {summary['test'].get(n, float('nan')):.4g}" for n in names)
    select, best = summary["select"]["name"], summary["best_val"]
    value = best.get(select)
    chosen = (
        f"best val {select} {value:.4g} (epoch {best.get('epoch')})"
        if value is not None
        else "no validation set: the last weights"
    )
    return f"test {test}; {chosen}; {summary['wall_time_s']:.1f} s"


# -- cross-validation ----------------------------------------------------------------------
def cross_validate(task: Task, config: str | Path | None, overrides: Sequence[str]) -> dict:
    """Trains every fold (the task's ``folds.fold_key`` = 0 .. count − 1) and reports the test
    metric's mean and standard deviation over folds (``cv.json`` and ``cv.md``, written
    beside the fold run directories)."""
    items = parse_overrides(overrides)
    first = load_config(task.config_cls, task.config_path(config), items)
    task = task.resolve(first)
    if task.folds is None:
        raise UserError(f"the {task.domain} domain has no cross-validation folds")
    base = Path(first.run_dir) if first.run_dir else run_dir_for(task, first).parent
    reported = task.reported[0]  # the task's headline metric
    metric, scores, runs, synthetic = reported.name, [], [], False
    for fold in range(task.folds.count(first)):
        fold_items = {
            **items,
            task.folds.fold_key: str(fold),
            "run_dir": str(base / f"fold{fold}"),
        }
        summary = train(task, load_config(task.config_cls, task.config_path(config), fold_items))
        scores.append(summary["test"][metric])
        runs.append(summary["run_dir"])
        synthetic = synthetic or bool(summary.get("synthetic"))
    mean = sum(scores) / len(scores)
    std = (sum((x - mean) ** 2 for x in scores) / len(scores)) ** 0.5  # over folds, ddof 0
    out = {
        "dataset": first.data.name,
        "synthetic": synthetic,
        "optimizer": first.optimizer.name,
        "metric": f"test_{metric}",
        "mean": mean,
        "std": std,
        "folds": scores,
        "runs": runs,
    }
    write_json(base / "cv.json", out)
    label = first.data.name + (" (synthetic)" if out["synthetic"] else "")
    table = (
        f"| data set | optimizer | folds | test {reported.label} (mean ± std) |\n"
        "| --- | --- | ---: | ---: |\n"
        f"| {label} | {first.optimizer.name} | {len(scores)} | {mean:.2f} ± {std:.2f} |\n"
    )
    write_text(base / "cv.md", table)
    print(f"\n{table}folds: {', '.join(f'{x:.2f}' for x in scores)} -> {base / 'cv.json'}")
    return out


def cv_main(task: Task, argv: Sequence[str] | None = None) -> int:
    """``python -m <domain>.cv [--config FILE] key=value ...``: every fold, mean and std."""
    parser = _parser(f"python -m {task.domain}_exps.cv", "Train every cross-validation fold.", task)
    args = parser.parse_intermixed_args(argv)
    return _guard(lambda: cross_validate(task, args.config, args.overrides))


# -- measuring a finished run -----------------------------------------------------------------
def load_run(task: Task, overrides: Sequence[str], section: str) -> tuple[Any, Path]:
    """The run's saved config with the overrides allowed at measurement time applied."""
    items = parse_overrides(overrides)
    run_dir = items.pop("run_dir", None)
    if not run_dir:
        raise UserError(
            f"which run? pass run_dir=PATH (a directory written by python -m "
            f"{task.domain}_exps.train)"
        )
    path = Path(run_dir)
    if not (path / CONFIG).exists():
        raise UserError(f"{path} is not a run directory: it has no {CONFIG}")
    check_domain(path, task.domain, section)
    for key in items:
        top = key.split(".")[0]
        if top != section and key not in RUNTIME_KEYS and top not in RUNTIME_KEYS:
            raise UserError(
                f"{key} belongs to the trained run and cannot change when measuring it; "
                f"pass {section}.* options (or data.root, train.device) only"
            )
    saved = read_yaml(
        path / CONFIG,
        verify=f"rerun the run's training command to write it again from {CHECKPOINT}",
    )
    trained = from_dict(task.config_cls, saved, source=str(path / CONFIG))
    try:
        validate(trained)
    except ConfigError as e:
        raise ConfigError(f"{path / CONFIG}: {e}") from None
    cfg = apply_overrides(trained, items)
    validate(cfg)
    return cfg, path


def load_trained(
    task: Task, cfg: Any, path: Path, which: str
) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """The run's model with the ``best`` or ``last`` weights on ``train.device``, its data
    splits, and a record of the file measured."""
    name = BEST if which == "best" else CHECKPOINT
    if which == "best" and not (path / BEST).exists():
        name = CHECKPOINT  # no validation set: the last weights are the result
    ckpt = load_checkpoint(
        path / name, fix=f"delete {path} and train the run again (its weights are lost)"
    )
    trained = ckpt.get("config") if isinstance(ckpt, dict) else None
    if trained is None or "model" not in ckpt:
        raise RunDirError(f"{path / name} is not a checkpoint of this project: train again")
    diffs = diff_configs(trained, to_dict(cfg))
    if diffs:
        raise RunDirError(
            f"{path / CONFIG} and {name} disagree (the run directory's config was edited "
            "after training):\n  " + "\n  ".join(diffs) + f"\nrestore {CONFIG} to the values "
            "on the left, or train a new run"
        )
    finished = (path / SUMMARY).exists()
    if not finished:
        print(
            f"warning: {path} has not finished training (no {SUMMARY}); measuring {name} "
            f"as it is now (step {ckpt.get('step')})",
            file=sys.stderr,
        )
    seed_everything(cfg.seed)
    splits = task.build_data(cfg)
    model = task.build_model(cfg, splits)
    load_weights(model, ckpt, path / name)
    device = resolve_device(cfg.train.device)
    record = {
        "checkpoint": which,
        "checkpoint_file": name,
        "step": ckpt.get("step"),
        "finished": finished,
        "device": str(device),
    }
    return model.to(device).eval(), splits, record


def measurement_subset(labels: np.ndarray | None, size: int, n: int, seed: int) -> list[int]:
    """``n`` of ``size`` example indices drawn with ``seed``: stratified by ``labels`` where
    every class can be represented, else uniformly; sorted. All of them when ``n >= size``."""
    if n >= size:
        return list(range(size))
    stratify = None
    if labels is not None and len(labels) == size:
        _, counts = np.unique(labels, return_counts=True)
        if counts.min() >= 2 and len(counts) <= min(n, size - n):
            stratify = labels
    chosen, _ = train_test_split(
        np.arange(size), train_size=n, random_state=seed % 2**32, stratify=stratify
    )
    return sorted(int(i) for i in chosen)


def measurement_data(task: Task, splits: Any, m: Any) -> tuple[DataLoader, dict[str, Any]]:
    """A seeded random subset of ``m.n_examples`` examples of split ``m.split`` (stratified
    by class where the task has labels), in batches of ``m.batch_size``. The training split
    is read with the evaluation transforms."""
    dataset = splits.train_eval if m.split == "train" else getattr(splits, m.split)
    size = len(dataset)
    if size == 0:
        raise UserError(f"the {m.split} split is empty: pick another with {m.split}=...")
    n = size if m.n_examples is None else min(m.n_examples, size)
    indices = measurement_subset(splits.labels(m.split), size, n, m.seed)
    loader = DataLoader(
        Subset(dataset, indices), batch_size=m.batch_size, collate_fn=task.collate(dataset)
    )
    info = {"split": m.split, "n_examples": n, "subset_seed": m.seed, "indices": indices}
    return loader, info


def _prepare(task: Task, cfg: Any, path: Path, section: str) -> tuple[Any, DataLoader, dict]:
    """The model to measure, its data and what the result records about both, with the
    section's options (so that :func:`measured` can tell a result that need not be redone)."""
    m = getattr(cfg, section)
    model, splits, record = load_trained(task, cfg, path, m.checkpoint)
    data, info = measurement_data(task, splits, m)
    return model, data, {**record, **info, "options": to_dict(cfg)[section]}


def measured(path: Path, kind: str, options: dict[str, Any]) -> Path | None:
    """The output of measurement ``kind`` in run directory ``path`` if it is of the finished
    run and was made with ``options``; else None. A damaged file is None too: measuring
    again replaces it atomically."""
    file = path / MEASUREMENT_FILES[kind]
    try:
        out = read_json(file, fix="it is measured again")
    except (OSError, UserError):
        return None
    ok = isinstance(out, dict) and out.get("finished") is True and out.get("options") == options
    return file if ok else None


def _params(task: Task, section: str, m: Any) -> Any:
    """The parameter selection ``m.params`` names: the task's own for that measurement
    (``Task.param_sets``), else common.sharpness's ("reference": Conv/Linear weights)."""
    if m.params == "all":
        return None
    own = task.param_sets.get(section, {}).get(m.params)
    return own if own is not None else m.params


def _hessian(task: Task, cfg: Any, path: Path) -> dict[str, Any]:
    m = cfg.hessian
    if m.sampling == "batch" and m.method != "hutchinson":
        raise ConfigError(
            "hessian.sampling=batch is a way of hessian.method=hutchinson: drop one of them"
        )
    if m.sketch_size is not None and m.method != "hutch++":
        raise ConfigError("hessian.sketch_size is an option of hessian.method=hutch++: drop it")
    if m.sketch_size is not None and 2 * m.sketch_size >= m.n_probes:
        raise ConfigError(
            f"hessian.sketch_size={m.sketch_size} leaves no probes of hessian.n_probes="
            f"{m.n_probes} for the residual: use at most {(m.n_probes - 1) // 2}"
        )
    model, data, info = _prepare(task, cfg, path, "hessian")
    loss = task.loss_fn()
    params = _params(task, "hessian", m)
    common = {"params": params, "seed": m.seed, "progress": cfg.train.progress}
    size = sum(p.numel() for _, p in select_params(model, params))
    if m.top_k > size:
        raise ConfigError(
            f"hessian.top_k={m.top_k} exceeds the {size} parameters measured: lower it"
        )
    pilot = pilot_probes(select_params(model, params))
    if m.method == "stratified" and m.n_probes < pilot:
        raise ConfigError(
            f"hessian.method=stratified needs 2 probes per layer first: raise "
            f"hessian.n_probes={m.n_probes} to at least {pilot}"
        )
    out: dict[str, Any] = dict(info)
    out["trace"] = hessian_trace(
        model, loss, data, n_probes=m.n_probes, method=m.method, target_stderr=m.target_stderr,
        sketch_size=m.sketch_size, sampling=m.sampling, **common,
    ).to_dict()  # fmt: skip
    steps = max(100, 2 * m.top_k)  # Lanczos needs more steps than eigenvalues wanted
    out["eigenvalues"] = hessian_eigenvalues(
        model, loss, data, k=m.top_k, max_iter=steps, tol=m.eig_tol, start=m.eig_start, **common
    ).to_dict()
    if m.esd:
        esd = hessian_esd(model, loss, data, n_iter=m.esd_iter, **common)
        out["esd_plots"] = plot_esd(esd, path / "hessian_esd")
        out["esd"] = esd.to_dict()
    write_json(path / MEASUREMENT_FILES["hessian"], out)
    eig = out["eigenvalues"]
    print(
        f"hessian trace {out['trace']['total']:.4g} ± {out['trace']['stderr']:.2g}, top "
        f"eigenvalue {eig['eigenvalues'][0]:.4g} ({info['n_examples']} {info['split']} "
        f"examples) -> {path / 'hessian.json'}"
    )
    return out


def _noise(task: Task, cfg: Any, path: Path) -> dict[str, Any]:
    m = cfg.noise_stability
    model, data, info = _prepare(task, cfg, path, "noise_stability")
    results = noise_stability(
        model,
        task.loss_fn(),
        data,
        sigma=list(m.sigma),
        n_samples=m.n_samples,
        two_sided=m.two_sided,
        params=_params(task, "noise_stability", m),
        seed=m.seed,
        progress=cfg.train.progress,
    )
    out = {**info, "results": [r.to_dict() for r in results]}
    write_json(path / MEASUREMENT_FILES["noise_stability"], out)
    for r in results:
        print(f"noise stability sigma={r.sigma:g}: {r.mean:.4g} ± {r.std:.2g}")
    return out


def _landscape(task: Task, cfg: Any, path: Path) -> dict[str, Any]:
    m = cfg.landscape
    model, data, info = _prepare(task, cfg, path, "landscape")
    result = loss_landscape(
        model,
        task.loss_fn(),
        data,
        path=path / "landscape.h5",
        steps=m.steps,
        span=(-m.span, m.span),
        dims=m.dims,
        seed=m.seed,
        ignore_bias_bn=m.ignore_bias_bn,
        progress=cfg.train.progress,
    )
    plots = plot_landscape(result, path / "landscape", kinds=m.plots)
    out = {**info, "file": str(path / "landscape.h5"), "plots": plots}
    write_json(path / MEASUREMENT_FILES["landscape"], out)
    print(f"loss landscape -> {path / 'landscape.h5'}; plots: {', '.join(plots)}")
    return out


MEASUREMENTS = {"hessian": _hessian, "noise_stability": _noise, "landscape": _landscape}


def measure(task: Task, kind: str, overrides: Sequence[str]) -> dict[str, Any]:
    """Runs measurement ``kind`` on a finished run (``run_dir=PATH`` in ``overrides``),
    holding the run directory's lock (no training or other measurement meanwhile)."""
    cfg, path = load_run(task, overrides, kind)
    task = task.resolve(cfg)
    with locked(path, f"python -m {task.domain}_exps.{kind}", create=False):
        return MEASUREMENTS[kind](task, cfg, path)


def measure_main(task: Task, kind: str, argv: Sequence[str] | None = None) -> int:
    """``python -m <domain>.<kind> run_dir=PATH [kind.option=value ...]``."""
    parser = _parser(
        f"python -m {task.domain}_exps.{kind}",
        f"Measure {kind.replace('_', ' ')} of a trained run; writes into its run directory.",
        task,
        sections=(kind, "train", "data"),
    )
    args = parser.parse_intermixed_args(argv)
    return _guard(lambda: measure(task, kind, args.overrides))
