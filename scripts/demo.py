"""``make demo``: a base optimizer, SAM and NSO on data that needs no download, trained and
measured: the digits that ship with scikit-learn (images), the generated polarity sentences
with a tiny BERT (text), the synthetic sbm graphs (graphs) and generated heartbeats with
Kachuee's 1-D CNN (ECG).

The base optimizer (``base`` in ``--optimizers``), which SAM and NSO wrap, is SGD with
momentum for images and graphs and AdamW for text: SGD does not train a transformer from
scratch in the demo's budget (at learning rates 0.03 to 1.5 it stayed at chance).

Each domain runs every optimizer with three seeds, through the same trainer and
measurement commands as the paper configs (``python -m image_exps.train`` ...), in this one
process to pay the imports once. The tables over seeds (mean ± sample standard deviation)
are printed with one sentence per domain saying whether NSO came out flattest and more
accurate beyond the seeds' spread, and written with their figures to ``results/demo/``
(``results/demo-smoke/`` for ``smoke=true``, so a smoke run never overwrites the demo).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from common.aggregate import group_runs, rows_of, verdict
from common.errors import UserError
from common.tables import run_row, tables_markdown, write_results
from common.train.cli import measure
from common.train.config import Config, load_config
from common.train.task import Task
from common.train.trainer import train

OPTIMIZERS = ("base", "sam", "nso")
SEEDS = (0, 1, 2)
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

    def optimizer(self, name: str) -> str:
        return self.base if name == "base" else name


def domains() -> list[Domain]:
    """Every domain the demo covers, in the table's order."""
    from ecg_exps.task import CONFIGS as ecg_configs
    from ecg_exps.task import TASK as ecg
    from graph_exps.task import TASK as graph
    from image_exps.task import TASK as image
    from text_exps.task import CONFIGS as text_configs
    from text_exps.task import TASK as text

    # one base optimizer per domain's rows: the graph configs' Adam would confound SGD vs SAM
    graph_sgd = ("optimizer.base=sgd", "optimizer.momentum=0.9", "optimizer.lr=0.05")
    return [
        Domain(image, image.default_config, "sgd"),
        Domain(text, text_configs / "polarity.yaml", "adamw"),
        Domain(graph, graph.default_config, "sgd", graph_sgd),
        Domain(ecg, ecg_configs / "beats.yaml", "sgd"),
    ]


def run(
    out: Path, optimizers: Sequence[str], seeds: Sequence[int], extra: Sequence[str], progress: bool
) -> str:
    """Trains and measures every domain x optimizer x seed into ``out/runs``; writes the
    tables and figures into ``out``; returns the printed report."""
    if out.exists():
        shutil.rmtree(out / "runs", ignore_errors=True)  # the demo always starts afresh
    rows = []
    for domain in domains():
        task = domain.task
        for name in map(domain.optimizer, optimizers):
            for seed in seeds:
                run_dir = out / "runs" / task.domain / name / f"seed{seed}"
                args = [
                    *domain.overrides,
                    f"optimizer.name={name}",
                    f"seed={seed}",
                    f"run_dir={run_dir}",
                    f"train.progress={str(progress).lower()}",
                    *extra,
                ]
                start = time.perf_counter()
                train(task, load_config(task.config_cls, domain.config, args))
                for kind, options in MEASURE.items():
                    measure(task, kind, [f"run_dir={run_dir}", *options])
                print(f"[{task.domain} {name} seed {seed}: {time.perf_counter() - start:.0f} s]")
                rows.append(run_row(run_dir))
    groups = group_runs(rows)
    write_results(rows, groups, out)
    tables = tables_markdown(groups)
    verdicts = "\n".join(f"- {verdict(groups, row)}" for row in rows_of(groups))
    return f"{tables}\n### Does NSO find flatter minima, and is it more accurate?\n\n{verdicts}\n"


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
        help="optimizer names; 'base' is each domain's base optimizer (sgd, or adamw for text)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
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
        report = run(out, args.optimizers, args.seeds, args.overrides, not args.no_progress)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"\n{report}\nwritten to {out}/: table.md, table.csv, table.tex, a figure per measure")
    print(f"demo took {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
