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

import torch
from torch.utils.data import DataLoader, Subset

from common.errors import UserError
from common.io import write_json, write_text
from common.sharpness import (
    hessian_eigenvalues,
    hessian_esd,
    hessian_trace,
    loss_landscape,
    noise_stability,
    plot_esd,
    plot_landscape,
)
from common.train.checkpoint import load_checkpoint, seed_everything
from common.train.config import (
    RUNTIME_KEYS,
    ConfigError,
    apply_overrides,
    from_dict,
    load_config,
    parse_overrides,
    read_yaml,
    validate,
)
from common.train.task import Task, run_dir_for
from common.train.trainer import BEST, CHECKPOINT, CONFIG, SUMMARY, train

EXIT_USAGE = 2


def _guard(run: Callable[[], Any]) -> int:
    """Runs a command; a user error becomes one line on stderr and exit status 2."""
    try:
        run()
    except (UserError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog="overrides: dotted config keys, e.g. optimizer.name=nso train.epochs=3 seed=1",
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    return parser


def train_main(task: Task, argv: Sequence[str] | None = None) -> int:
    """``python -m <domain>.train``: config file + overrides -> a trained run directory."""
    parser = _parser(f"python -m {task.domain}_exps.train", "Train a model into a run directory.")
    parser.add_argument("--config", help=f"YAML file (default: {task.default_config})")
    parser.add_argument(
        "--measure",
        action="store_true",
        help="then measure the run: Hessian, noise stability, loss landscape",
    )
    args = parser.parse_intermixed_args(argv)

    def run() -> None:
        cfg = load_config(task.config_cls, args.config or task.default_config, args.overrides)
        summary = train(task, cfg)
        if summary and args.measure:  # rank 0 only: the measurements are one process
            for kind in MEASUREMENTS:
                measure(task, kind, [f"run_dir={summary['run_dir']}"])
        if summary:
            metric = summary["metric"]
            print(
                f"done: test {metric} {summary.get(f'test_{metric}', float('nan')):.2f}, best "
                f"val {metric} {summary.get(f'best_val_{metric}') or float('nan'):.2f} (epoch "
                f"{summary['best_epoch']}); {summary['wall_time_s']:.1f} s; "
                f"{summary['run_dir']}/{SUMMARY}"
            )

    return _guard(run)


# -- cross-validation ----------------------------------------------------------------------
def cross_validate(task: Task, config: str | Path | None, overrides: Sequence[str]) -> dict:
    """Trains every fold (``data.fold`` = 0 .. ``data.n_folds`` − 1) and reports the test
    metric's mean and standard deviation over folds (``cv.json`` and ``cv.md``, written
    beside the fold run directories)."""
    items = parse_overrides(overrides)
    first = load_config(task.config_cls, config or task.default_config, items)
    if not hasattr(first.data, "n_folds"):
        raise UserError(f"the {task.domain} domain has no cross-validation folds")
    base = Path(first.run_dir) if first.run_dir else run_dir_for(task, first).parent
    metric, scores, runs, synthetic = task.metric, [], [], False
    for fold in range(first.data.n_folds):
        fold_items = {**items, "data.fold": str(fold), "run_dir": str(base / f"fold{fold}")}
        summary = train(
            task, load_config(task.config_cls, config or task.default_config, fold_items)
        )
        scores.append(summary[f"test_{metric}"])
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
        f"| data set | optimizer | folds | test {metric} (mean ± std) |\n"
        "| --- | --- | ---: | ---: |\n"
        f"| {label} | {first.optimizer.name} | {len(scores)} | {mean:.2f} ± {std:.2f} |\n"
    )
    write_text(base / "cv.md", table)
    print(f"\n{table}folds: {', '.join(f'{x:.2f}' for x in scores)} -> {base / 'cv.json'}")
    return out


def cv_main(task: Task, argv: Sequence[str] | None = None) -> int:
    """``python -m <domain>.cv [--config FILE] key=value ...``: every fold, mean and std."""
    parser = _parser(f"python -m {task.domain}_exps.cv", "Train every cross-validation fold.")
    parser.add_argument("--config", help=f"YAML file (default: {task.default_config})")
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
    for key in items:
        top = key.split(".")[0]
        if top != section and key not in RUNTIME_KEYS and top not in RUNTIME_KEYS:
            raise UserError(
                f"{key} belongs to the trained run and cannot change when measuring it; "
                f"pass {section}.* options (or data.root) only"
            )
    saved = read_yaml(path / CONFIG)
    cfg = apply_overrides(from_dict(task.config_cls, saved, source=str(path / CONFIG)), items)
    validate(cfg)
    return cfg, path


def load_trained(task: Task, cfg: Any, path: Path, which: str) -> tuple[torch.nn.Module, Any]:
    """The run's model with the ``best`` or ``last`` weights, and its data splits."""
    name = BEST if which == "best" else CHECKPOINT
    if which == "best" and not (path / BEST).exists():
        name = CHECKPOINT  # no validation set: the last weights are the result
    ckpt = load_checkpoint(path / name)
    seed_everything(cfg.seed)
    splits = task.build_data(cfg)
    model = task.build_model(cfg, splits)
    model.load_state_dict(ckpt["model"])
    return model.eval(), splits


def measurement_data(task: Task, splits: Any, m: Any) -> tuple[DataLoader, dict[str, Any]]:
    """The first ``m.n_examples`` examples of split ``m.split``, in batches of ``m.batch_size``."""
    dataset = getattr(splits, m.split)
    n = len(dataset) if m.n_examples is None else min(m.n_examples, len(dataset))
    if n == 0:
        raise UserError(f"the {m.split} split is empty: pick another with {m.split}=...")
    subset = Subset(dataset, range(n))
    loader = DataLoader(subset, batch_size=m.batch_size, collate_fn=task.collate(dataset))
    return loader, {"split": m.split, "n_examples": n, "checkpoint": m.checkpoint}


def _params(m: Any) -> str | None:
    return None if m.params == "all" else m.params


def _hessian(task: Task, cfg: Any, path: Path) -> dict[str, Any]:
    m = cfg.hessian
    model, splits = load_trained(task, cfg, path, m.checkpoint)
    data, info = measurement_data(task, splits, m)
    loss = task.loss_fn()
    common = {"params": _params(m), "seed": m.seed, "progress": cfg.train.progress}
    out: dict[str, Any] = dict(info)
    out["trace"] = hessian_trace(
        model, loss, data, n_probes=m.n_probes, method=m.method, **common
    ).to_dict()
    out["eigenvalues"] = hessian_eigenvalues(model, loss, data, k=m.top_k, **common).to_dict()
    if m.esd:
        esd = hessian_esd(model, loss, data, n_iter=m.esd_iter, **common)
        out["esd_plots"] = plot_esd(esd, path / "hessian_esd")
        out["esd"] = esd.to_dict()
    write_json(path / "hessian.json", out)
    eig = out["eigenvalues"]
    print(
        f"hessian trace {out['trace']['total']:.4g} ± {out['trace']['stderr']:.2g}, top "
        f"eigenvalue {eig['eigenvalues'][0]:.4g} ({info['n_examples']} {info['split']} "
        f"examples) -> {path / 'hessian.json'}"
    )
    return out


def _noise(task: Task, cfg: Any, path: Path) -> dict[str, Any]:
    m = cfg.noise_stability
    model, splits = load_trained(task, cfg, path, m.checkpoint)
    data, info = measurement_data(task, splits, m)
    results = noise_stability(
        model,
        task.loss_fn(),
        data,
        sigma=list(m.sigma),
        n_samples=m.n_samples,
        two_sided=m.two_sided,
        params=_params(m),
        seed=m.seed,
        progress=cfg.train.progress,
    )
    out = {**info, "results": [r.to_dict() for r in results]}
    write_json(path / "noise_stability.json", out)
    for r in results:
        print(f"noise stability sigma={r.sigma:g}: {r.mean:.4g} ± {r.std:.2g}")
    return out


def _landscape(task: Task, cfg: Any, path: Path) -> dict[str, Any]:
    m = cfg.landscape
    model, splits = load_trained(task, cfg, path, m.checkpoint)
    data, info = measurement_data(task, splits, m)
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
    write_json(path / "landscape.json", out)
    print(f"loss landscape -> {path / 'landscape.h5'}; plots: {', '.join(plots)}")
    return out


MEASUREMENTS = {"hessian": _hessian, "noise_stability": _noise, "landscape": _landscape}


def measure(task: Task, kind: str, overrides: Sequence[str]) -> dict[str, Any]:
    """Runs measurement ``kind`` on a finished run (``run_dir=PATH`` in ``overrides``)."""
    cfg, path = load_run(task, overrides, kind)
    return MEASUREMENTS[kind](task, cfg, path)


def measure_main(task: Task, kind: str, argv: Sequence[str] | None = None) -> int:
    """``python -m <domain>.<kind> run_dir=PATH [kind.option=value ...]``."""
    parser = _parser(
        f"python -m {task.domain}_exps.{kind}",
        f"Measure {kind.replace('_', ' ')} of a trained run; writes into its run directory.",
    )
    args = parser.parse_intermixed_args(argv)
    return _guard(lambda: measure(task, kind, args.overrides))
