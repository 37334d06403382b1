"""The splits of the RGB image data sets (CIFAR and ImageFolder trees): the validation part
and the ``n_examples`` subset carved from one ``split_seed`` permutation of the training set
(:func:`carve_indices`), the views that read it through another transform, and the labels
of any (nested) subset, read without loading an image (:func:`dataset_labels`)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torchvision
from torch.utils.data import Dataset, Subset

from common.splits import Splits


def dataset_labels(dataset: Dataset) -> np.ndarray | None:
    """Integer label of every item of ``dataset`` in order, read without loading images.

    From the ``targets`` list that torchvision's CIFAR / ImageFolder and :class:`TensorImages`
    keep, through any nesting of ``Subset``; ``None`` for a dataset without one (or with a
    ``target_transform``, which ``targets`` would not reflect).
    """
    if isinstance(dataset, Subset):
        inner = dataset_labels(dataset.dataset)
        return None if inner is None else inner[np.asarray(dataset.indices, dtype=np.int64)]
    targets = getattr(dataset, "targets", None)
    if targets is None or getattr(dataset, "target_transform", None) is not None:
        return None
    return np.asarray(targets, dtype=np.int64).reshape(-1)


def carve_indices(
    n: int, val_fraction: float, split_seed: int, n_examples: int | None, carve: bool = True
) -> tuple[list[int], list[int]]:
    """(train, val) indices of ``range(n)`` from one ``split_seed`` permutation, each sorted.

    The first ``round(val_fraction * n)`` permuted indices are the validation part (when
    ``carve``); ``n_examples`` keeps the first n of the rest in that same permuted order: a
    random subset (ImageFolder lists its files class by class, so ``range(n_examples)`` would
    hold few classes), nested as n grows, and never moving the validation part.
    """
    perm = np.random.default_rng(split_seed).permutation(n)
    n_val = round(val_fraction * n) if carve else 0
    val, train = perm[:n_val], perm[n_val:]
    if n_examples is not None:
        train = train[:n_examples]
    return sorted(train.tolist()), sorted(val.tolist())


def _with_transform(dataset: Any, transform: Callable | None) -> Any:
    """A shallow copy of a torchvision dataset (same arrays / file list), another transform."""
    view = copy.copy(dataset)
    view.transform = transform
    if hasattr(view, "transforms"):
        view.transforms = torchvision.datasets.vision.StandardTransform(
            transform, getattr(view, "target_transform", None)
        )
    return view


def _subset(dataset: Dataset, indices: list[int], n_total: int) -> Dataset:
    return dataset if len(indices) == n_total else Subset(dataset, indices)


def rgb_splits(
    key: str,
    full_train: Any,
    eval_tf: Callable,
    indices: tuple[list[int], list[int]],
    val: Dataset | None,
    test: Dataset,
    source: Path,
    size: int,
    split_seed: int,
) -> Splits:
    """The splits of an RGB data set on disk (CIFAR or an ImageFolder tree), with its meta.

    ``indices`` = (train, val) of ``full_train`` from :func:`carve_indices`; ``val`` given means a
    validation set of its own (the val indices are then empty). ``train_eval`` and a carved
    ``val`` read ``full_train``'s images through ``eval_tf``.
    """
    n = len(full_train)
    train_idx, val_idx = indices
    eval_view = _with_transform(full_train, eval_tf)
    train = _subset(full_train, train_idx, n)
    train_eval = _subset(eval_view, train_idx, n)
    if val is None:
        val = Subset(eval_view, val_idx)
    meta = {
        "dataset": key,
        "n_train": len(train),
        "n_val": len(val),
        "n_test": len(test),
        "split_seed": split_seed,
        "synthetic": False,
        "source": str(source),
        "classes": list(full_train.classes),
    }
    return Splits(
        train,
        val,
        test,
        num_classes=len(full_train.classes),
        meta=meta,
        train_eval=train_eval,
        inputs={"in_channels": 3, "image_size": size},
        labels_of=dataset_labels,
    )


__all__ = ["carve_indices", "dataset_labels", "rgb_splits"]
