"""Run directories -> one row each: what a finished run holds, read from its files
(``summary.json``, ``config.yaml``, the measurements' JSON), never from memory; and the
per-run table of those rows (``runs.md``, ``runs.csv``)."""

from __future__ import annotations

import csv
import io
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from common.checks import is_number
from common.errors import UserError
from common.io import read_json, write_text
from common.measurements import MEASUREMENTS, measured_columns
from common.metrics import Metric
from common.optim import OPTIMIZERS
from common.train.config_files import read_yaml
from common.train.rundir import CONFIG, SUMMARY_FIX, name_label, read_summary
from common.train.typed import flatten

#: (key, header, format) of the columns before the metric columns, in order
RUN_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("domain", "domain", "{}"),
    ("dataset", "data set", "{}"),
    ("model", "model", "{}"),
    ("optimizer", "optimizer", "{}"),
    ("seed", "seed", "{}"),
)


def after_metric_columns() -> tuple[tuple[str, str, str], ...]:
    """(key, header, format) of the columns after the metric columns, in order: the
    measurements' (common.measurements, as registered now), then the training time."""
    return (*measured_columns(), ("wall_time_s", "train time (s)", "{:.0f}"))


#: keys a summary.json must hold for a table row
#: What a table row needs of summary.json (a subset of what the trainer writes).
SUMMARY_KEYS = ("domain", "dataset", "model", "optimizer", "seed", "metrics", "test")

_REMEASURE = "delete it and measure again"


def _read(path: Path, fix: str) -> Any:
    """The JSON in ``path`` (its checksum verified), None if there is none; a ``UserError``
    saying ``fix`` if it is damaged."""
    if not path.exists():
        return None
    return read_json(path, fix=fix)


def _metric(entry: Any) -> Metric:
    """A :class:`Metric` from its summary.json record; ``ValueError`` if it is not one."""
    if not (
        isinstance(entry, dict)
        and isinstance(entry.get("name"), str)
        and isinstance(entry.get("label"), str)
        and isinstance(entry.get("higher_is_better", True), bool)
    ):
        raise ValueError(f"{entry!r} is not a {{name, label, higher_is_better}} record")
    return Metric(entry["name"], entry["label"], entry.get("higher_is_better", True))


def _summary(path: Path) -> dict[str, Any]:
    """summary.json, checked for what a row needs; a ``UserError`` names what is wrong."""
    summary = read_summary(path.parent, required=SUMMARY_KEYS)
    if summary is None:
        raise UserError(f"{path.parent} has no summary.json: the run has not finished")
    try:
        if not isinstance(summary["metrics"], list) or not summary["metrics"]:
            raise ValueError("'metrics' is not a non-empty list")
        metrics = tuple(map(_metric, summary["metrics"]))
        test = summary["test"]
        if not isinstance(test, dict):
            raise ValueError("'test' is not an object")
        for key, value in [
            *((m.name, test.get(m.name)) for m in metrics),
            ("wall_time_s", summary.get("wall_time_s")),
        ]:
            if value is not None and not is_number(value):
                raise ValueError(f"{key} = {value!r} is not a number")
    except ValueError as e:
        raise UserError(f"{path} is malformed ({e}); {SUMMARY_FIX}") from None
    return {**summary, "metrics": metrics}


def _measured(
    path: Path, read: Callable[[Any], dict[str, Any]], summary: dict[str, Any]
) -> dict[str, Any]:
    """The row entries ``read`` takes from a measurement file, {} if there is none; a
    malformed one, or one measured before the run finished, is a ``UserError`` naming it."""
    data = _read(path, _REMEASURE)
    if data is None:
        return {}
    if isinstance(data, dict) and data.get("finished") is False:
        raise UserError(
            f"{path} measured the run before it finished (step {data.get('step')} of "
            f"{summary.get('steps')}); {_REMEASURE}"
        )
    try:
        out = read(data)
        for key, value in out.items():
            tabulated = key in (k for k, _, _ in after_metric_columns())  # not the split's name
            if tabulated and value is not None and not is_number(value):
                raise ValueError(f"{key} = {value!r} is not a number")
    except KeyError as e:
        raise UserError(f"{path} is malformed (no {e}); {_REMEASURE}") from None
    except (IndexError, TypeError, ValueError) as e:
        raise UserError(f"{path} is malformed ({e}); {_REMEASURE}") from None
    return out


def _number(value: Any) -> float | None:
    return float(value) if is_number(value) else None


def _validation(summary: dict[str, Any]) -> dict[str, Any]:
    """The metric that selects ``best.pt`` and its best validation value: what
    hyper-parameters are chosen on (:mod:`common.select`); {} for runs without them."""
    select, best = summary.get("select"), summary.get("best_val")
    if not isinstance(select, dict) or not isinstance(best, dict):
        return {}
    value, loss, epoch = best.get(select.get("name")), best.get("loss"), best.get("epoch")
    return {
        "select": _metric(select),
        "val_select": value if is_number(value) else None,
        "val_loss": loss if is_number(loss) else None,
        "best_epoch": epoch if isinstance(epoch, int) else None,  # the epoch of best.pt
    }


def _config(run_dir: Path) -> dict[str, Any]:
    """The run's resolved config.yaml as dotted keys ({} for a directory without one)."""
    path = run_dir / CONFIG
    if not path.exists():
        print(
            f"warning: {printable(run_dir)} has no {CONFIG}: its settings are unknown (its "
            f"training command, run again, writes it from the checkpoint)",
            file=sys.stderr,
        )
        return {}
    return flatten(read_yaml(path, verify="rerun the run's training command to rewrite it"))


def _base(optimizer: str, config: dict[str, Any]) -> str | None:
    """The base optimizer a sharpness-aware optimizer wraps (None for a base one)."""
    info = OPTIMIZERS.get(optimizer)
    return config.get("optimizer.base") if info is not None and info.sharpness_aware else None


def printable(path: str | Path) -> str:
    """A path as text any output can hold: bytes that are not UTF-8 (a folder named in
    another encoding) as ``\\xNN`` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def run_row(run_dir: str | Path) -> dict[str, Any]:
    """One table row from a finished run directory (measurements if present).

    The row holds the run's identity, ``metrics`` (its reported :class:`Metric` s, in
    order), ``test_<name>`` for each of them, the training time and the measurements.
    """
    run_dir = Path(run_dir)
    summary = _summary(run_dir / "summary.json")
    dataset = name_label(str(summary["dataset"]))
    dataset += " (synthetic)" if summary.get("synthetic") else ""
    row: dict[str, Any] = {
        "run_dir": printable(run_dir),
        "domain": summary["domain"],
        "dataset": dataset,
        "model": name_label(summary["model"]),
        "optimizer": summary["optimizer"],
        "seed": summary["seed"],
        "metrics": summary["metrics"],
        **{f"test_{m.name}": summary["test"].get(m.name) for m in summary["metrics"]},
        "test_loss": _number(summary["test"].get("loss")),
        "wall_time_s": summary.get("wall_time_s"),
        "fold": summary.get("fold"),
        "fold_key": summary.get("fold_key"),
        **_validation(summary),
        "test_details": summary.get("test_details"),
        "test_counts": ((summary.get("data") or {}).get("class_counts") or {}).get("test"),
    }
    row["config"] = _config(run_dir)
    row["base"] = _base(row["optimizer"], row["config"])
    for measurement in MEASUREMENTS.values():
        if measurement.read is not None:
            row.update(_measured(run_dir / measurement.file, measurement.read, summary))
    return row


def _metric_format(metric: Metric) -> str:
    # percentages with two decimals (as papers print them); coefficients and errors by digits
    return "{:.2f}" if "%" in metric.label else "{:.4g}"


def metric_columns(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(``test_<name>``, ``test <label>``, format) of every metric the rows report, in
    first-seen order (a name's first label heads its column); percentages get two
    decimals, coefficients and errors four digits."""
    seen: dict[str, Metric] = {}
    for r in rows:
        for m in r.get("metrics", ()):
            seen.setdefault(m.name, m)
    return [(f"test_{m.name}", f"test {m.label}", _metric_format(m)) for m in seen.values()]


def columns(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(key, header, format) of a table of ``rows``: run, metrics, measurements."""
    return [*RUN_COLUMNS, *metric_columns(rows), *after_metric_columns()]


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run directories (holding ``summary.json``) at or below ``paths``, sorted; folders
    reached through symbolic links included (each real folder once, a link cycle left)."""
    found: dict[str, Path] = {}  # real path -> the path it was first reached by
    for top in map(Path, paths):
        seen: set[str] = set()
        for folder, subfolders, files in os.walk(top, followlinks=True):
            subfolders.sort()  # the same path for a folder reached twice, on every machine
            real = os.path.realpath(folder)
            if real in seen:  # a link back up the tree, or a second link to one folder
                subfolders.clear()
                continue
            seen.add(real)
            if "summary.json" in files:
                found.setdefault(real, Path(folder))
    return sorted(found.values())


def _cell(row: dict[str, Any], key: str, fmt: str) -> str:
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return fmt.format(value)


def shown_columns(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """:func:`columns` without the measurement columns no row has (every metric column
    stays, a missing value shown as missing)."""
    metric_keys = {k for k, _, _ in metric_columns(rows)}
    return [
        c
        for c in columns(rows)
        if c[0] in metric_keys or any(r.get(c[0]) is not None for r in rows)
    ]


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of ``rows`` (:func:`shown_columns`); "–" where a run lacks a value."""
    cols = shown_columns(rows)
    lines = [
        "| " + " | ".join(h for _, h, _ in cols) + " |",
        "|" + "|".join(" --- " if f == "{}" else " ---: " for _, _, f in cols) + "|",
    ]
    lines += ["| " + " | ".join(_cell(r, k, f) for k, _, f in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_table(rows: Sequence[dict[str, Any]], stem: str | Path) -> list[Path]:
    """``stem.md`` and ``stem.csv`` (the same columns, :func:`shown_columns`; empty where
    a run lacks a value), each written atomically."""
    md = Path(f"{stem}.md")  # not with_suffix: "table.v2" keeps its ".v2", as the plot does
    write_text(md, markdown(rows))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["run_dir", *(k for k, _, _ in shown_columns(rows))])
    writer.writeheader()
    writer.writerows([{k: r.get(k) for k in writer.fieldnames} for r in rows])
    out = Path(f"{stem}.csv")
    write_text(out, buf.getvalue())
    return [md, out]


# -- tables over seeds: rows data sets, columns optimizers, one table per measure -----------
