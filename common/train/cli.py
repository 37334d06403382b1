"""Command-line entry points shared by every domain.

``python -m <domain>.train [--config FILE] key=value ...`` trains; ``python -m
<domain>.measure KIND run_dir=PATH key=value ...`` (or ``<domain>.hessian`` etc.) measures
a finished run with a measurement of :mod:`common.measurements` and writes the result into
its run directory.
Bad input prints ``error: ...`` (no traceback) and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from common.errors import UserError, one_line
from common.io import write_json, write_text
from common.measurements import MEASUREMENTS
from common.train.config import (
    ConfigError,
    config_help,
    load_config,
    parse_overrides,
    to_dict,
)
from common.train.distributed import launched_rank, lost_peer, lost_peer_message
from common.train.measuring import load_run, measured
from common.train.rundir import SUMMARY, locked, run_dir_for
from common.train.task import Task
from common.train.trainer import train

EXIT_USAGE = 2


def _guard(run: Callable[[], Any]) -> int:
    """Runs a command; a user error becomes one line on stderr and exit status 2.

    Under torchrun every process meets the same error: only rank 0 prints it. A process
    whose collective fails because another process died says so in one line, not gloo's or
    NCCL's traceback."""
    try:
        return one_line(run, speak=launched_rank() == 0)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    except RuntimeError as error:  # a collective whose other end died: not this process' fault
        if not lost_peer(error):
            raise
        print(f"error: {lost_peer_message()}", file=sys.stderr)
        return EXIT_USAGE


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
    kinds = measurements_of(task)
    defaults = [k for k in kinds if MEASUREMENTS[k].with_training]
    parser.add_argument(
        "--measure",
        action="store_true",
        help=f"then measure the run: {', '.join(defaults)} (each one not already measured on "
        "the finished run with the same options)",
    )
    parser.add_argument(
        "--measurements",
        metavar="KIND,...",
        help=f"then measure the run with these instead (any of {', '.join(kinds)}, or all)",
    )
    args = parser.parse_intermixed_args(argv)

    def run() -> None:
        chosen = _chosen(args.measurements, kinds) if args.measurements else defaults
        cfg = load_config(task.config_cls, task.config_path(args.config), args.overrides)
        summary = train(task, cfg)
        wanted = args.measure or args.measurements
        if summary and wanted:  # rank 0 only: the measurements are one process
            for kind in chosen:
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
    task, first = task.bind(load_config(task.config_cls, task.config_path(config), items))
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


def _chosen(text: str, kinds: Sequence[str]) -> list[str]:
    """``--measurements``: names separated by commas, or ``all``, in the registry's order."""
    names = {n.strip() for n in text.split(",") if n.strip()}
    if names == {"all"}:
        return list(kinds)
    unknown = ", ".join(map(repr, sorted(names - set(kinds)) or [""]))
    if not names or names - set(kinds):
        raise UserError(
            f"--measurements: no measurement named {unknown}; choose from {', '.join(kinds)}, "
            "or all"
        )
    return [k for k in kinds if k in names]


def measurements_of(task: Task) -> list[str]:
    """The registered measurements this domain's config has a section for, in order."""
    sections = set(task.config_cls.model_fields)
    return [kind for kind in MEASUREMENTS if kind in sections]


def measure(task: Task, kind: str, overrides: Sequence[str]) -> dict[str, Any]:
    """Runs measurement ``kind`` on a finished run (``run_dir=PATH`` in ``overrides``),
    holding the run directory's lock (no training or other measurement meanwhile)."""
    if kind not in measurements_of(task):
        raise ConfigError(
            f"measurement {kind} has no section in the {task.domain} domain's config: add "
            f"a field {kind}: <its MeasurementSection> to {task.config_cls.__name__}"
        )
    cfg, path = load_run(task, overrides, kind)
    task, cfg = task.bind(cfg)
    with locked(path, f"python -m {task.domain}_exps.{kind}", create=False):
        return MEASUREMENTS[kind].run(task, cfg, path)


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


def measure_any_main(task: Task, argv: Sequence[str] | None = None) -> int:
    """``python -m <domain>.measure KIND run_dir=PATH [KIND.option=value ...]``: any
    measurement of the registry (:mod:`common.measurements`) by name."""
    argv = list(sys.argv[1:] if argv is None else argv)
    kinds = ", ".join(MEASUREMENTS)
    usage = f"python -m {task.domain}_exps.measure KIND run_dir=PATH ..., KIND one of: {kinds}"
    if argv[:1] in (["-h"], ["--help"]):
        print(f"usage: {usage} (KIND --help lists its options)")
        return 0
    if not argv or argv[0] not in MEASUREMENTS:
        which = f"no measurement named {argv[0]!r}" if argv else "which measurement?"
        print(f"error: {which}: {usage}", file=sys.stderr)
        return EXIT_USAGE
    return measure_main(task, argv[0], argv[1:])
