"""What every domain's data builder does alike with its split options.

``val_fraction``, ``n_examples`` and ``split_seed`` mean the same in every domain: the part
of the training data held out for selecting ``best.pt``, a cap on the training part, and
the seed of both (never the run's seed).
"""

from __future__ import annotations

import numpy as np

from common.errors import DataError


def check_split_options(val_fraction: float, n_examples: int | None, split_seed: int) -> int:
    """Raises :class:`DataError` for an option out of range; returns ``split_seed`` as int."""
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    if n_examples is not None and n_examples < 1:
        raise DataError(f"n_examples must be >= 1 or None, got {n_examples}.")
    if int(split_seed) < 0:
        raise DataError(f"split_seed must be >= 0, got {split_seed}.")
    return int(split_seed)


def seeded_subset(rows: np.ndarray, n_examples: int | None, split_seed: int) -> np.ndarray:
    """``n_examples`` of ``rows`` at random, sorted: the first n of a ``split_seed``
    permutation, so the subsets are nested as n grows; all of ``rows`` for None."""
    if n_examples is None:
        return rows
    perm = np.random.default_rng(split_seed).permutation(len(rows))
    return np.sort(rows[perm[:n_examples]])
