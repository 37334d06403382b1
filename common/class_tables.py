"""Per-class results over seeds: each class's sensitivity (recall) and positive
predictivity (precision) on the test set, mean ± sample std over a group's runs, as
heartbeat papers report them (AAMI EC57). Read from ``summary.json``'s ``test_details``,
which tasks with a class report write (:func:`common.metrics.class_report`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from common.aggregate import Group, Stat, setting_label


def _cell(stat: Stat | None) -> str:
    if stat is None:
        return "–"
    spread = f" ± {stat.std:.1f}" if stat.std is not None else ""
    return f"{stat.mean:.1f}{spread}"


def _report(run: dict[str, Any]) -> dict[str, Any] | None:
    details = run.get("test_details")
    if isinstance(details, dict) and isinstance(details.get("class_names"), list):
        return details
    return None


def class_table_markdown(groups: Sequence[Group]) -> str:
    """A row per group and class: test beats of the class, sensitivity and PPV (%); '' when
    no run has a class report. Undefined values (no beat of the class, nothing predicted as
    it) are left out of the mean; a cell with none is '–'; a class without test examples
    has no row."""
    lines = []
    for g in groups:
        reports = [r for r in map(_report, g.runs) if r is not None]
        if not reports:
            continue
        counts = (g.runs[0].get("test_counts") or {}) if g.runs else {}
        for name in reports[0]["class_names"]:
            if counts.get(name) == 0:  # no test example: nothing to report
                continue
            sens = Stat.of(r.get("sensitivity", {}).get(name) for r in reports)
            ppv = Stat.of(r.get("ppv", {}).get(name) for r in reports)
            lines.append(
                f"| {g.domain} | {g.dataset} | {g.model} | {setting_label(g.setting) or '–'} | "
                f"{g.optimizer} | {name} | {counts.get(name, '–')} | {_cell(sens)} | "
                f"{_cell(ppv)} | {len(reports)} |"
            )
    if not lines:
        return ""
    head = (
        "#### per-class test sensitivity and positive predictivity (%)\n\n"
        "mean ± sample standard deviation over the runs (n); '–' where a class has no test "
        "example or none was predicted as it.\n\n"
        "| domain | data set | model | setting | optimizer | class | test examples | "
        "sensitivity | PPV | n |\n"
        "| --- | --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: |\n"
    )
    return head + "\n".join(lines) + "\n"


__all__ = ["class_table_markdown"]
