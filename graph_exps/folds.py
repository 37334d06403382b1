"""Which graphs go where: stratified ``n_folds``-fold cross-validation seeded by
``split_seed`` alone (:func:`fold_indices`), a stratified validation part of the other
folds, or the test fold itself (``val_is_test``), and the ``n_examples`` subset of the
training graphs (:func:`split_rows`)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch

from common.errors import DataError
from common.splits import seeded_subset


def fold_indices(
    y: Sequence[int] | np.ndarray | torch.Tensor,
    *,
    fold: int = 0,
    n_folds: int = 10,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted ``(train, val, test)`` graph indices of cross-validation fold ``fold``.

    Test: fold ``fold`` of ``StratifiedKFold(n_folds, shuffle=True, random_state=seed)``;
    validation: a stratified ``val_fraction`` of the other graphs (``train_test_split`` with
    the same seed); train: the rest. The same ``y`` and seed always give the same folds.
    """
    from sklearn.model_selection import StratifiedKFold, train_test_split

    y = np.asarray(y).reshape(-1)
    if not 2 <= n_folds <= len(y):
        raise DataError(f"n_folds must be in 2..{len(y)} (the number of graphs), got {n_folds}.")
    if not 0 <= fold < n_folds:
        raise DataError(f"fold must be in 0..{n_folds - 1} for {n_folds}-fold CV, got {fold}.")
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a class with < n_folds members
            rest, test = list(skf.split(np.zeros(len(y)), y))[fold]
    except ValueError as e:
        raise DataError(f"Cannot split {len(y)} graphs into {n_folds} folds: {e}") from None
    val = rest[:0]
    if val_fraction > 0:
        try:
            rest, val = train_test_split(
                rest, test_size=val_fraction, stratify=y[rest], random_state=seed
            )
        except ValueError as e:
            raise DataError(
                f"Cannot carve a stratified validation set (val_fraction={val_fraction}) from "
                f"{len(rest)} training graphs: {e} Use a larger val_fraction, or 0 for none."
            ) from None
    return np.sort(rest), np.sort(val), np.sort(test)


def split_rows(
    y: np.ndarray,
    fold: int,
    n_folds: int,
    val_fraction: float,
    split_seed: int,
    n_examples: int | None,
    val_is_test: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`build_graph_data`'s ``(train, val, test)`` graph indices: fold ``fold``'s,
    validating on the test fold itself with ``val_is_test``, and the training part cut to a
    ``split_seed``-random ``n_examples``."""
    train_idx, val_idx, test_idx = fold_indices(
        y,
        fold=fold,
        n_folds=n_folds,
        val_fraction=0.0 if val_is_test else val_fraction,
        seed=split_seed,
    )
    if val_is_test:
        val_idx = test_idx
    train_idx = seeded_subset(train_idx, n_examples, split_seed)
    return train_idx, val_idx, test_idx


__all__ = ["fold_indices", "split_rows"]
