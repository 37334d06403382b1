"""What every measurement of a finished run shares: its saved config with the options
allowed at measurement time, its weights and data, the seeded subset measured, and whether
a result with the same options is already there. The measurements themselves are in
:mod:`common.measurements`, one file each."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Subset

from common.checks import OptionError, config_words
from common.errors import RunDirError, UserError
from common.io import read_json
from common.measurements.spec import output_file
from common.train.checkpoint import load_checkpoint, load_weights, seed_everything
from common.train.config import (
    ConfigError,
    apply_overrides,
    config_changes,
    from_dict,
    parse_overrides,
    read_yaml,
    runtime_keys,
    to_dict,
    validate,
)
from common.train.distributed import resolve_device
from common.train.rundir import BEST, CHECKPOINT, CONFIG, SUMMARY, check_domain
from common.train.task import Task


@contextlib.contextmanager
def option_errors(section: str, keys: Mapping[str, str]) -> Iterator[None]:
    """A library function's :class:`OptionError` (the one check of its options) as a
    :class:`ConfigError` naming the ``section``'s keys (``keys``: argument -> key)."""
    try:
        yield
    except OptionError as e:
        raise ConfigError(config_words(str(e), section, keys)) from None


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
    runtime = runtime_keys(task.config_cls)
    for key in items:
        top = key.split(".")[0]
        if top != section and key not in runtime and top not in runtime:
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
    diffs = config_changes(trained, cfg)
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


def prepare(task: Task, cfg: Any, path: Path, section: str) -> tuple[Any, DataLoader, dict]:
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
    file = path / output_file(kind)
    try:
        out = read_json(file, fix="it is measured again")
    except (OSError, UserError):
        return None
    ok = isinstance(out, dict) and out.get("finished") is True and out.get("options") == options
    return file if ok else None


def params_for(task: Task, section: str, m: Any) -> Any:
    """The parameter selection ``m.params`` names: the task's own for that measurement
    (``Task.param_sets``), else common.sharpness's ("reference": Conv/Linear weights)."""
    if m.params == "all":
        return None
    own = task.param_sets.get(section, {}).get(m.params)
    return own if own is not None else m.params
