"""``make demo``: a base optimizer, SAM and NSO on real data shipped with the package, each
sharpness-aware optimizer's own knob chosen on validation data, then compared over seeds:
the digits that ship with scikit-learn (images), MUTAG (graphs, the NSO paper's GCN) and
the MIT-BIH records 100 and 208 (heartbeats, Kachuee's 1-D CNN), both in the package with
their sources; text stays on the generated polarity sentences (labelled synthetic): the
README says why.

The base optimizer (``base`` in ``--optimizers``), which SAM and NSO wrap, is the domain's
own: SGD with momentum (images, heartbeats), Adam (graphs, the paper's recipe) and AdamW
(text: SGD does not train a transformer from scratch in the demo's budget).

The protocol, per domain: the base optimizer over the seeds; SAM at every ρ and NSO at
every σ of :data:`GRIDS` with the first seed; the setting with the best validation metric
(:mod:`common.select`); that setting over the other seeds. Every run is measured (Hessian
trace and top eigenvalue, noise stability). Domains run in parallel processes (``--jobs``).
The report: the grids with their validation values, the tables over seeds of the chosen
settings (mean ± sample standard deviation), and one sentence per domain saying whether
NSO came out flattest and more accurate beyond the seeds' spread; written with the
figures (the trade-off of test metric against sharpness over every grid point among them)
to ``results/demo/`` (``results/demo-smoke/`` for ``smoke=true``, so a smoke run never
overwrites the demo).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from common.aggregate import group_runs, rows_of, verdict
from common.errors import UserError
from common.run_rows import run_row
from common.select import select
from common.tables import selected_results
from common.train.cli import measure
from common.train.config import Config, load_config
from common.train.task import Task
from common.train.trainer import train

OPTIMIZERS = ("base", "sam", "nso")
SEEDS = (0, 1, 2)
#: each sharpness-aware optimizer's own knob and the grid it is chosen from on validation
#: data (the base optimizer's learning rate stays the config's)
GRIDS: dict[str, tuple[str, tuple[float, ...]]] = {
    "sam": ("optimizer.rho", (0.02, 0.05, 0.2)),
    "asam": ("optimizer.rho", (0.2, 0.5, 2.0)),
    "nso": ("optimizer.sigma", (0.01, 0.03, 0.1)),
    "gsam": ("optimizer.rho", (0.02, 0.05, 0.2)),
    "looksam": ("optimizer.rho", (0.02, 0.05, 0.2)),
    "fsam": ("optimizer.rho", (0.02, 0.05, 0.2)),
    # relative to each filter's norm: the authors' 0.01-0.015, a step either side
    "rwp": ("optimizer.noise_scale", (0.005, 0.01, 0.02)),
    "arwp": ("optimizer.noise_scale", (0.005, 0.01, 0.02)),
}
#: the seeds every grid point is trained with; the others train only the chosen point
TUNE_SEEDS = (0,)
# fewer probes and samples than the configs' defaults: the whole demo stays within minutes
MEASURE = {
    "hessian": ["hessian.n_probes=20"],
    "noise_stability": ["noise_stability.sigma=[0.02]", "noise_stability.n_samples=20"],
}


@dataclass(frozen=True)
class Domain:
    """One domain of the demo: its task, config file, base optimizer and overrides."""

    task: Task
    config: Path
    base: str
    overrides: tuple[str, ...] = ()
    cost: float = 1.0  # relative run time: the costliest domains start first

    def optimizer(self, name: str) -> str:
        return self.base if name == "base" else name


def domains() -> list[Domain]:
    """Every domain the demo covers, in the table's order: real data shipped with the
    package in each (the digits ship with scikit-learn)."""
    from ecg_exps.task import CONFIGS as ecg_configs
    from ecg_exps.task import TASK as ecg
    from graph_exps.task import CONFIGS as graph_configs
    from graph_exps.task import TASK as graph
    from image_exps.task import TASK as image
    from text_exps.task import CONFIGS as text_configs
    from text_exps.task import TASK as text

    # the NSO paper's graph recipe at half its epochs (the StepLR period halved with them)
    graph_short = ("train.epochs=100", "schedule.step_size=25")
    # the heartbeats measured on 250 of their 1,046 test beats, as the generated ones were
    ecg_subset = tuple(
        f"{kind}.{key}=250"
        for kind in ("hessian", "noise_stability")
        for key in ("n_examples", "batch_size")
    )
    return [
        Domain(image, image.default_config, "sgd", cost=2.0),
        Domain(text, text_configs / "polarity.yaml", "adamw", cost=2.0),
        Domain(graph, graph_configs / "mutag.yaml", "adam", graph_short),
        Domain(ecg, ecg_configs / "mitdb_records.yaml", "sgd", ecg_subset, cost=3.0),
    ]


@dataclass
class Runner:
    """Trains and measures one run per call, into ``out/runs``; keeps every run's row."""

    out: Path
    extra: Sequence[str]
    progress: bool
    rows: list[dict] = field(default_factory=list)

    def __call__(self, domain: Domain, name: str, seed: int, setting: Sequence[str] = ()) -> None:
        task = domain.task
        point = ",".join(_short(override) for override in setting)
        run_dir = self.out / "runs" / task.domain / name / (point or ".") / f"seed{seed}"
        args = [
            *domain.overrides,
            f"optimizer.name={name}",
            *setting,
            f"seed={seed}",
            f"run_dir={run_dir}",
            f"train.progress={str(self.progress).lower()}",
            *self.extra,
        ]
        start = time.perf_counter()
        train(task, load_config(task.config_cls, domain.config, args))
        for kind, options in MEASURE.items():
            measure(task, kind, [f"run_dir={run_dir}", *options])
        label = f"{name} {point}".strip()
        print(f"[{task.domain} {label} seed {seed}: {time.perf_counter() - start:.0f} s]")
        self.rows.append(run_row(run_dir))


def tune_and_compare(
    runner: Runner, domain: Domain, optimizers: Sequence[str], seeds: Sequence[int]
) -> None:
    """A base optimizer over ``seeds``; each sharpness-aware one at every grid point over
    :data:`TUNE_SEEDS` (those of ``seeds``), its setting chosen on the validation metric,
    then the chosen setting over the remaining seeds."""
    tune_seeds = [s for s in seeds if s in TUNE_SEEDS] or list(seeds[:1])
    first = len(runner.rows)
    for name in map(domain.optimizer, optimizers):
        if name not in GRIDS:
            for seed in seeds:
                runner(domain, name, seed)
            continue
        key, values = GRIDS[name]
        for value in values:
            for seed in tune_seeds:
                runner(domain, name, seed, [f"{key}={value}"])
    for choice in select(group_runs(runner.rows[first:])):
        for seed in (s for s in seeds if s not in tune_seeds):
            runner(domain, choice.optimizer, seed, choice.overrides())


def _domain_job(
    index: int,
    out: Path,
    optimizers: Sequence[str],
    seeds: Sequence[int],
    extra: Sequence[str],
    progress: bool,
    threads: int | None,
) -> list[dict]:
    """One domain's runs (in a worker process with ``threads`` threads, if given): their
    table rows, read from their folders as each run ended."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    runner = Runner(out, extra, progress)
    tune_and_compare(runner, domains()[index], optimizers, seeds)
    return runner.rows


def _run_domains(
    out: Path,
    optimizers: Sequence[str],
    seeds: Sequence[int],
    extra: Sequence[str],
    progress: bool,
    jobs: int,
) -> list[dict]:
    """Every domain's run rows, ``jobs`` domains at once (each in its own process, with an equal
    share of the cores), costliest first; results in the domains' order."""
    every = domains()
    args = (out, optimizers, seeds, extra)
    if jobs <= 1:
        results = [_domain_job(i, *args, progress, None) for i in range(len(every))]
    else:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        context = multiprocessing.get_context("spawn")  # a fork would copy torch's thread pool
        with ProcessPoolExecutor(jobs, mp_context=context) as pool:
            order = sorted(range(len(every)), key=lambda i: -every[i].cost)
            futures = {i: pool.submit(_domain_job, i, *args, False, threads) for i in order}
            results = [futures[i].result() for i in range(len(every))]
    return [row for rows in results for row in rows]


def run(
    out: Path,
    optimizers: Sequence[str],
    seeds: Sequence[int],
    extra: Sequence[str],
    progress: bool,
    jobs: int = 1,
) -> str:
    """Tunes, trains and measures every domain x optimizer x seed into ``out/runs``; writes
    the tables, the selection and the figures into ``out``; returns the printed report."""
    if out.exists():
        shutil.rmtree(out / "runs", ignore_errors=True)  # the demo always starts afresh
    rows = _run_domains(out, optimizers, seeds, extra, progress, jobs)
    groups, tables = selected_results(rows, out)
    verdicts = "\n".join(f"- {verdict(groups, row)}" for row in rows_of(groups))
    return f"{tables}\n### Does NSO find flatter minima, and is it more accurate?\n\n{verdicts}\n"


def _short(override: str) -> str:
    """``optimizer.rho=0.05`` -> ``rho=0.05`` (a run folder's name)."""
    key, _, value = override.partition("=")
    return f"{key.rsplit('.', 1)[-1]}={value}"


def _key(override: str) -> str:
    return override.split("=", 1)[0].strip()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.demo", description=__doc__)
    parser.add_argument(
        "--out", help="output folder (default results/demo, results/demo-smoke for smoke=true)"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS), help="seeds")
    parser.add_argument(
        "--optimizers",
        nargs="+",
        default=list(OPTIMIZERS),
        help="registry names (python -m scripts.demo --optimizers base sam gsam looksam fsam "
        "rwp arwp nso ...; each of these tuned on its grid); 'base' is each domain's base "
        "optimizer (sgd, or adamw for text)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--jobs",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="domains trained at once, each in its own process (default: the cores, at most "
        "4); progress bars only with 1",
    )
    parser.add_argument("overrides", nargs="*", help="key=value for every run (e.g. smoke=true)")
    args = parser.parse_args(argv)
    # "--optimizers sam nso smoke=true": argparse hands the override to --optimizers
    args.overrides += [name for name in args.optimizers if "=" in name]
    args.optimizers = [name for name in args.optimizers if "=" not in name]
    start = time.perf_counter()
    try:
        # smoke=true (any spelling the configs accept) writes to its own folder
        smoke = load_config(Config, None, [o for o in args.overrides if _key(o) == "smoke"]).smoke
        out = Path(args.out or ("results/demo-smoke" if smoke else "results/demo"))
        report = run(
            out, args.optimizers, args.seeds, args.overrides, not args.no_progress, args.jobs
        )
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"\n{report}\nwritten to {out}/: selection.md, table.md, table.csv, table.tex, "
        "tradeoff.png and a figure per measure"
    )
    print(f"demo took {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
