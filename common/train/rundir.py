"""The run-directory contract: where a run lives, what its files are called, what they hold.

``runs/<domain>/<dataset>/<model>/<optimizer>/seed<k>[/fold<f>]/`` unless ``run_dir`` is
set. ``run.json`` (written first) names the domain that owns the directory;
``config.yaml`` the resolved config; ``checkpoint.pt`` the last state; ``best.pt`` the
weights the selection metric chose; ``metrics.csv`` a row per epoch; ``summary.json``,
written last, exists only for finished runs. Tables, measurements and resumes read these
files and nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common.errors import RunDirError, UserError
from common.io import write_json
from common.train.config import diff_configs

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
SUMMARY = "summary.json"
METRICS = "metrics.csv"
CONFIG = "config.yaml"
RUN = "run.json"

#: The measurements' outputs, by measurement name.
MEASUREMENT_FILES = {
    "hessian": "hessian.json",
    "noise_stability": "noise_stability.json",
    "landscape": "landscape.json",
}


def run_dir_for(task: Any, cfg: Any) -> Path:
    """``cfg.run_dir`` or ``runs/<domain>/<dataset>/<model>/<optimizer>/seed<k>`` (plus
    ``/fold<f>`` for a task with cross-validation folds)."""
    if cfg.run_dir:
        return Path(cfg.run_dir)
    path = (
        Path("runs")
        / task.domain
        / cfg.data.name
        / cfg.model.name
        / cfg.optimizer.name
        / f"seed{cfg.seed}"
    )
    return path / f"fold{task.folds.fold(cfg)}" if task.folds else path


def write_record(run_dir: Path, domain: str) -> None:
    """``run.json``: which domain's commands own this directory."""
    write_json(run_dir / RUN, {"domain": domain, "entry_points": f"python -m {domain}_exps.*"})


def recorded_domain(run_dir: Path) -> str | None:
    """The domain ``run.json`` names; None for a directory without one."""
    path = run_dir / RUN
    if not path.exists():
        return None
    try:
        return str(json.loads(path.read_text(encoding="utf-8"))["domain"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RunDirError(
            f"{path} is damaged ({type(e).__name__}); restore it or train into a new run_dir"
        ) from None


def check_domain(run_dir: Path, domain: str, command: str) -> None:
    """Refuses a run directory that another domain's commands wrote."""
    owner = recorded_domain(run_dir)
    if owner is not None and owner != domain:
        raise RunDirError(
            f"{run_dir} holds a {owner} run, not a {domain} one: use python -m "
            f"{owner}_exps.{command} run_dir={run_dir}"
        )


def refuse_other_config(run_dir: Path, saved: Mapping[str, Any], current: Mapping[str, Any]):
    """Raises when ``run_dir`` holds a run whose config differs from ``current``."""
    diffs = diff_configs(saved, current)  # runtime keys such as the device may change
    if diffs:
        raise RunDirError(
            f"run_dir {run_dir} holds a run with a different config:\n  "
            + "\n  ".join(diffs)
            + "\nrerun with the same settings to resume it, or pass another run_dir"
        )


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """``summary.json`` of a finished run, or None when the run has not finished."""
    path = Path(run_dir) / SUMMARY
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(
            f"{path} is damaged ({type(e).__name__}); delete it and rerun the training "
            "command to write it again"
        ) from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a run summary; delete it and rerun the training")
    return data


def metric_record(metric: Any) -> dict[str, Any]:
    """How a :class:`~common.metrics.Metric` is written into ``summary.json``."""
    return {"name": metric.name, "label": metric.label, "higher_is_better": metric.higher_is_better}
