"""Hyper-parameter selection on validation data: each optimizer's own knob (NSO's σ,
SAM's ρ, ...) chosen from a grid, per domain, data set and model, before the comparison
over seeds, as the papers' protocols do.

The runs of a grid are grouped as the tables group them (:func:`common.aggregate.group_runs`:
same domain, data set, model, optimizer and setting; seeds and folds pooled). For each
optimizer the setting with the best mean *validation* value of the metric that selects
``best.pt`` (``summary.json``'s ``select`` and ``best_val``), over the seeds and folds that
every setting has, wins; a tie (frequent on small
validation sets, where accuracy moves in coarse steps) goes to the lower mean validation
loss at the same checkpoints, then to the first setting in the grid's order. The test
metric plays no part::

    python -m common.select runs/sweeps/mutag --out results/mutag   # selection.md / .json
    python -m common.select runs/sweeps/mutag --overrides sam        # optimizer.rho=0.05
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.aggregate import Group, Stat, group_runs, setting_label
from common.errors import UserError
from common.io import write_json, write_text
from common.metrics import Metric

SELECTION = "selection"  # selection.json / selection.md


@dataclass(frozen=True)
class Selection:
    """The grid of one optimizer on one data set and model, and the setting chosen."""

    domain: str
    dataset: str
    model: str
    optimizer: str
    metric: Metric  # the validation metric compared
    candidates: tuple[tuple[tuple[tuple[str, Any], ...], Stat], ...]  # (setting, val stat)
    chosen: tuple[tuple[str, Any], ...]

    @property
    def family(self) -> tuple[str, str, str, str]:
        return self.domain, self.dataset, self.model, self.optimizer

    def overrides(self) -> list[str]:
        """The chosen setting as ``key=value`` overrides of the training command."""
        return [f"{key}={value}" for key, value in self.chosen]

    def record(self) -> dict[str, Any]:
        """What ``selection.json`` holds of this selection."""
        return {
            "domain": self.domain,
            "dataset": self.dataset,
            "model": self.model,
            "optimizer": self.optimizer,
            "metric": {"name": self.metric.name, "higher_is_better": self.metric.higher_is_better},
            "chosen": dict(self.chosen),
            "grid": [
                {"setting": dict(s), "val_mean": st.mean, "val_std": st.std, "n": st.n}
                for s, st in self.candidates
            ],
        }


def _runs_key(run: dict[str, Any]) -> tuple[Any, Any]:
    return run["seed"], run.get("fold")


def _shared(members: Sequence[Group]) -> list[Group]:
    """The groups cut down to the (seed, fold) pairs every one of them has: each setting
    is judged on the same runs (a grid tuned with seed 0 and its winner then run with more
    seeds is still compared on seed 0), where they share any."""
    keys = [{_runs_key(r) for r in g.runs if r.get("val_select") is not None} for g in members]
    common = set.intersection(*keys) if keys else set()
    if not common:
        return list(members)
    return [
        dataclasses.replace(g, runs=[r for r in g.runs if _runs_key(r) in common]) for g in members
    ]


def _metric_of(members: Sequence[Group]) -> Metric | None:
    """The metric every run of one optimizer's groups selects ``best.pt`` by (None where
    none records one); runs that select by different metrics cannot be compared."""
    metrics = {r["select"] for g in members for r in g.runs if r.get("select") is not None}
    if len(metrics) > 1:
        g = members[0]
        raise UserError(
            f"the runs of {g.optimizer} on {g.dataset} select best.pt by different metrics "
            f"({', '.join(sorted(m.name for m in metrics))}): they cannot be compared"
        )
    return next(iter(metrics), None)


def _validation(group: Group) -> Stat | None:
    """The validation statistics of the group's runs (None where none recorded a value)."""
    return Stat.of(r.get("val_select") for r in group.runs)


def _mean_loss(group: Group) -> float:
    """Mean validation loss of the group's best checkpoints (inf when none was recorded)."""
    stat = Stat.of(r.get("val_loss") for r in group.runs)
    return stat.mean if stat is not None else math.inf


def select(groups: Sequence[Group]) -> list[Selection]:
    """For each domain, data set, model and optimizer with two settings or more, the setting
    with the best mean validation value (a single setting is no choice and is left out)."""
    families: dict[tuple[str, str, str, str], list[Group]] = {}
    for group in groups:
        families.setdefault((group.domain, group.dataset, group.model, group.optimizer), []).append(
            group
        )
    out = []
    for (domain, dataset, model, optimizer), members in families.items():
        metric = _metric_of(members)
        judged = _shared([g for g in members if _validation(g) is not None])
        scored = [(g, stat) for g in judged if (stat := _validation(g)) is not None]
        if metric is None or len(scored) < 2:
            continue
        sign = 1.0 if metric.higher_is_better else -1.0
        ranks = [(sign * stat.mean, -_mean_loss(g)) for g, stat in scored]
        best = scored[ranks.index(max(ranks))]  # index: the first of equal ranks
        out.append(
            Selection(
                domain,
                dataset,
                model,
                optimizer,
                metric,
                tuple((g.setting, stat) for g, stat in scored),
                best[0].setting,
            )
        )
    return out


CHOSEN = "chosen on val"  # the setting a compared group shows: what each optimizer used


def compared_groups(groups: Sequence[Group], selections: Sequence[Selection]) -> list[Group]:
    """The groups to compare over seeds: each selected optimizer at its chosen setting and
    the optimizers that had no choice to make (the base optimizers), all of one data set in
    one table row, whose setting names what was chosen (``chosen on val=sam rho=0.05;
    nso sigma=0.03``). Other data sets' groups pass unchanged."""
    chosen = {s.family: s.chosen for s in selections}
    labels: dict[tuple[str, str, str], list[str]] = {}
    for s in selections:
        labels.setdefault(s.family[:3], []).append(f"{s.optimizer} {setting_label(s.chosen)}")
    out = []
    for g in groups:
        family = (g.domain, g.dataset, g.model, g.optimizer)
        if family in chosen and chosen[family] != g.setting:
            continue
        label = labels.get(family[:3])
        out.append(dataclasses.replace(g, setting=((CHOSEN, "; ".join(label)),)) if label else g)
    return out


def chosen_runs(
    groups: Sequence[Group], selections: Sequence[Selection], optimizer: str
) -> list[str]:
    """The run directories of ``optimizer``'s chosen setting on every data set and model
    where it had a choice, sorted (what ``sweep.sh --select`` continues from)."""
    chosen = {s.family: s.chosen for s in selections if s.optimizer == optimizer}
    return sorted(
        r["run_dir"]
        for g in groups
        if chosen.get((g.domain, g.dataset, g.model, g.optimizer), ()) == g.setting
        and (g.domain, g.dataset, g.model, g.optimizer) in chosen
        for r in g.runs
    )


def _value(stat: Stat, metric: Metric) -> str:
    scale = "{:.2f}" if "%" in metric.label else "{:.4g}"
    spread = f" ± {scale.format(stat.std)}" if stat.std is not None else ""
    return f"{scale.format(stat.mean)}{spread} (n={stat.n})"


def selection_markdown(selections: Sequence[Selection]) -> str:
    """A table of every grid: each setting's validation mean ± sample std, the chosen one
    in bold."""
    if not selections:
        return ""
    lines = [
        "| domain | data set | model | optimizer | validation metric | setting: validation "
        "value (chosen in bold) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for s in selections:
        cells = []
        for setting, stat in s.candidates:
            text = f"{setting_label(setting)}: {_value(stat, s.metric)}"
            cells.append(f"**{text}**" if setting == s.chosen else text)
        lines.append(
            f"| {s.domain} | {s.dataset} | {s.model} | {s.optimizer} | val {s.metric.label} | "
            f"{'; '.join(cells)} |"
        )
    return "\n".join(lines) + "\n"


def write_selection(selections: Sequence[Selection], out: str | Path) -> list[Path]:
    """``out/selection.json`` (checksummed) and ``out/selection.md``."""
    out = Path(out)
    json_path, md_path = out / f"{SELECTION}.json", out / f"{SELECTION}.md"
    write_json(json_path, {"selections": [s.record() for s in selections]})
    write_text(md_path, selection_markdown(selections))
    return [json_path, md_path]


def _script_lines(
    args: argparse.Namespace, groups: Sequence[Group], selections: Sequence[Selection]
) -> list[str] | None:
    """What ``--chosen-runs`` or ``--overrides`` prints, one item a line (None without them;
    nothing for an optimizer that had no choice to make)."""
    if args.chosen_runs is not None:
        return chosen_runs(groups, selections, args.chosen_runs)
    if args.overrides is None:
        return None
    mine = [s for s in selections if s.optimizer == args.overrides]
    if len(mine) > 1:
        raise UserError(
            f"{len(mine)} grids of {args.overrides} under {', '.join(args.paths)} (several data "
            f"sets or models): pass one data set's runs, or use --chosen-runs"
        )
    return mine[0].overrides() if mine else []


def main(argv: Sequence[str] | None = None) -> int:
    from common.tables import finished_rows, one_line_errors, runs_parser

    parser = runs_parser("python -m common.select", __doc__)
    parser.add_argument("--out", help="folder for selection.md and selection.json")
    parser.add_argument(
        "--overrides",
        metavar="OPTIMIZER",
        help="print only OPTIMIZER's chosen setting as key=value lines (for scripts); nothing "
        "when its runs offer no choice",
    )
    parser.add_argument(
        "--chosen-runs",
        metavar="OPTIMIZER",
        help="print only the run directories of OPTIMIZER's chosen setting on every data set "
        "(for scripts)",
    )
    args = parser.parse_args(argv)

    def command() -> None:
        groups = group_runs(finished_rows(args.paths))
        selections = select(groups)
        lines = _script_lines(args, groups, selections)
        if lines is None:
            print(selection_markdown(selections) or "no optimizer has two settings to choose from")
        elif lines:
            print("\n".join(lines))
        if args.out:
            write_selection(selections, args.out)

    return one_line_errors(command)


if __name__ == "__main__":
    raise SystemExit(main())
