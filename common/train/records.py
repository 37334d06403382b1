"""What a run records besides its weights: the classes its splits hold and their loss
weights, the versions and peak memory in its summary, the metric lines and loggers."""

from __future__ import annotations

import contextlib
import platform
import resource
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from common.errors import DataError, UserError
from common.train.task import Splits, balanced_class_weights


def class_count(splits: Splits, top: int) -> int:
    """The task's number of classes: the splits' own ``num_classes``, else the largest
    label seen, ``top``, plus one."""
    return int(splits.num_classes or top + 1)


def split_classes(splits: Splits, *, warn: bool = True) -> dict[str, Any] | None:
    """The task's number of classes and the classes each split's labels hold (None for a
    regression). A training split of one class is refused; a validation or test split
    that lacks some of the task's classes is said, once, on stderr (its macro-averaged
    metrics then average fewer classes)."""
    labels = {s: splits.labels(s) for s in ("train", "val", "test")}
    if labels["train"] is None:
        return None
    present = {s: sorted(int(c) for c in np.unique(y)) for s, y in labels.items() if y is not None}
    count = class_count(splits, max((c[-1] for c in present.values() if c), default=0))
    names = list(splits.meta.get("class_names") or range(count))
    if len(present["train"]) < 2:
        raise DataError(
            f"the training split holds {len(present['train'])} class(es) of the task's "
            f"{count} ({', '.join(str(names[c]) for c in present['train'])}): there is "
            f"nothing to tell apart; check data.n_examples and the data's labels"
        )
    for split in ("val", "test"):
        missing = sorted(set(range(count)) - set(present.get(split) or range(count)))
        if warn and missing and labels[split] is not None and len(labels[split]):
            print(
                f"warning: the {split} split has no example of class(es) "
                f"{', '.join(str(names[c]) for c in missing)} of the {count}: its macro-"
                "averaged metrics average the classes its labels or predictions hold",
                file=sys.stderr,
            )
    return {"num_classes": count, **present}


def class_weight(
    kind: str, splits: Splits, device: torch.device, *, warn: bool = True
) -> Tensor | None:
    """The loss's class weights for ``train.class_weights`` (None: unweighted); with
    ``warn`` (one process of several), weights that let a few examples rule are said."""
    if kind == "none":
        return None
    labels = splits.labels("train")
    if labels is None:
        raise UserError(
            f"train.class_weights={kind} needs class labels, and this task has none (a "
            f"regression): set train.class_weights=none"
        )
    num_classes = class_count(splits, int(labels.max()))
    weights = balanced_class_weights(labels, num_classes)
    if warn:
        _warn_if_extreme(weights, labels, splits)
    return torch.from_numpy(weights).to(device)


#: a class weighted this many times the lightest one makes its few examples the loss
EXTREME_WEIGHT_RATIO = 100.0


def _warn_if_extreme(weights: np.ndarray, labels: np.ndarray, splits: Splits) -> None:
    """Says when balanced weights let a handful of examples rule the loss (MIT-BIH DS1's 8 Q
    beats weigh about 1,300: every run diverged or predicted Q)."""
    present = weights[weights > 0]
    if present.size < 2 or present.max() < EXTREME_WEIGHT_RATIO * present.min():
        return
    heavy = int(np.argmax(weights))
    names = list(splits.meta.get("class_names") or range(len(weights)))
    print(
        f"warning: train.class_weights=balanced weighs class {names[heavy]} "
        f"{present.max() / present.min():.0f} times the lightest: it has "
        f"{int(np.sum(labels == heavy))} of the {labels.size} training examples, so they "
        "rule the loss (training may diverge or predict that class only); consider "
        "train.class_weights=none",
        file=sys.stderr,
    )


def row_line(row: dict[str, Any]) -> str:
    return "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("flatminima", "torch", "torchvision", "numpy", "transformers", "torch_geometric"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[pkg] = metadata.version(pkg)
    return out


def make_logger(kind: str, run_dir: Path, config: dict[str, Any], main: bool) -> Any:
    """A callable ``log(row, step)`` with ``.close()``; TensorBoard or W&B when asked for."""

    class Log:
        def __init__(self, write: Callable[[dict[str, Any], int], None], close: Callable) -> None:
            self.write, self.close = write, close

        def __call__(self, row: dict[str, Any], step: int) -> None:
            self.write(row, step)

    if kind == "none" or not main:
        return Log(lambda row, step: None, lambda: None)
    try:
        if kind == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(run_dir / "tensorboard"))

            def tb(row: dict[str, Any], step: int) -> None:
                for k, v in row.items():
                    if isinstance(v, int | float):
                        writer.add_scalar(k, v, step)

            return Log(tb, writer.close)
        import wandb

        wrun = wandb.init(config=config, dir=str(run_dir), name=str(run_dir))
        return Log(lambda row, step: wrun.log(row, step=step), wrun.finish)
    except ImportError as e:
        package = "tensorboard" if kind == "tensorboard" else "wandb"
        raise UserError(
            f"train.log={kind} needs the {package} package ({e}); "
            f"install it with '.venv/bin/pip install {package}' or set train.log=none"
        ) from None
