"""What every domain's data builder shares: its split options and the :class:`Splits` it returns.

``val_fraction``, ``n_examples`` and ``split_seed`` mean the same in every domain: the part
of the training data held out for selecting ``best.pt``, a cap on the training part, and
the seed of both (never the run's seed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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


SPLITS: tuple[str, ...] = ("train", "val", "test", "train_eval")


def stored_labels(dataset: Any) -> np.ndarray | None:
    """A dataset's ``labels`` attribute as ``(len,)`` int64 (beats, encoded text), or None."""
    labels = getattr(dataset, "labels", None)
    return None if labels is None else np.asarray(labels, dtype=np.int64)


class Splits:
    """Train, validation and test sets of one data set: what every domain's data builder
    returns and the trainer, the evaluation and the measurements read.

    Args:
        train, val, test: the datasets (any ``Dataset`` the domain's collate reads).
        num_classes: the width of the model's output (1 for a regression).
        meta: JSON-able facts recorded in the run (``dataset``, sizes, ``split_seed``...).
        train_eval: the training examples in ``train``'s order with the evaluation
            transforms (what a measurement on the training split reads); None: ``train``
            itself, whatever ``train`` is set to later (data without augmentation).
        extra_test: ``{name: dataset}`` further test splits, reported as
            ``<name>_<metric>`` beside the test metrics and reachable as
            ``splits.test_<name>`` (MNLI's mismatched validation set).
        inputs: what a model must know of the inputs (``in_channels``, ``num_features``...).
        regression: targets are real numbers; :meth:`labels` is then None.
        labels_of: ``dataset -> (len,) int64 labels or None``, read without loading inputs.
    """

    def __init__(
        self,
        train: Any,
        val: Any,
        test: Any,
        *,
        num_classes: int,
        meta: dict[str, Any] | None = None,
        train_eval: Any = None,
        extra_test: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        regression: bool = False,
        labels_of: Callable[[Any], np.ndarray | None] = stored_labels,
    ) -> None:
        self.train, self.val, self.test = train, val, test
        self.num_classes = int(num_classes)
        self.meta = dict(meta or {})
        self._train_eval = train_eval
        self.extra_test = dict(extra_test or {})
        self.inputs = dict(inputs or {})
        self.regression = regression
        self.labels_of = labels_of

    @property
    def train_eval(self) -> Any:
        """The training examples as measurements read them (see the class)."""
        return self.train if self._train_eval is None else self._train_eval

    def __getattr__(self, name: str) -> Any:  # reached only for names not found otherwise
        extra = self.__dict__.get("extra_test", {})
        if name.startswith("test_") and name[len("test_") :] in extra:
            return extra[name[len("test_") :]]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    @property
    def split_names(self) -> tuple[str, ...]:
        """Every split :meth:`labels` and ``getattr`` take: :data:`SPLITS`, ``test_<extra>``."""
        return SPLITS + tuple(f"test_{name}" for name in self.extra_test)

    def labels(self, split: str) -> np.ndarray | None:
        """Class id of every example of ``split`` in order, ``(len,)`` int64; None for a
        regression or a dataset whose labels cannot be read without loading it."""
        if split not in self.split_names:
            raise ValueError(f"split must be one of {', '.join(self.split_names)}, got {split!r}")
        if self.regression:
            return None
        return self.labels_of(getattr(self, split))
