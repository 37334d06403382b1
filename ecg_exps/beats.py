"""Heartbeats as a torch dataset (:class:`BeatDataset`), their class counts, and the
stratified, seeded hold-out (:func:`stratified_split`) that the intra-patient test set and
every validation set are made of."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from common.errors import DataError, first_line
from ecg_exps.segment import BEAT_LENGTH, CLASSES


class BeatDataset(Dataset):
    """Single beats; item ``i`` is ``(signal, label)``: a float32 ``(1, 187)`` tensor (one
    channel, for ``Conv1d``) and a 0-dim int64 class id.

    Attributes:
        signals: ``(N, 187)`` float32, each row in [0, 1].
        records: ``(N,)`` int64 MIT-BIH record of each beat (``mitdb``), else None.
    """

    def __init__(
        self, signals: np.ndarray, labels: np.ndarray, records: np.ndarray | None = None
    ) -> None:
        signals = np.ascontiguousarray(signals, dtype=np.float32).reshape(-1, BEAT_LENGTH)
        labels = np.ascontiguousarray(labels, dtype=np.int64).reshape(-1)
        if len(signals) != len(labels) or (records is not None and len(records) != len(labels)):
            raise ValueError(f"{len(signals)} signals but {len(labels)} labels")
        self.signals = signals
        self._labels = labels
        self.records = None if records is None else np.asarray(records, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        i = int(index)
        return torch.tensor(self.signals[i]).unsqueeze(0), torch.tensor(self._labels[i])

    @property
    def labels(self) -> np.ndarray:
        """Class id of every beat in order, ``(N,)`` int64."""
        return self._labels

    def subset(self, rows: np.ndarray) -> BeatDataset:
        """The beats ``rows`` (in that order), as a new dataset."""
        rows = np.asarray(rows, dtype=np.int64)
        records = None if self.records is None else self.records[rows]
        return BeatDataset(self.signals[rows], self._labels[rows], records)


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int, *, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(kept, held_out)`` rows: a stratified, seeded ``fraction`` held out.

    ``sklearn``'s ``train_test_split(stratify=labels, random_state=seed)``; a class with a
    single beat (which it cannot stratify) stays in the kept part. ``what`` names the beats
    in the error a split that cannot be made raises.
    """
    rows = np.arange(len(labels))
    if fraction == 0:
        return rows, rows[:0]
    from sklearn.model_selection import train_test_split

    counts = np.bincount(labels, minlength=len(CLASSES))
    common = counts[labels] >= 2
    try:
        kept, held = train_test_split(
            rows[common], test_size=fraction, stratify=labels[common], random_state=seed % 2**32
        )
    except ValueError as e:  # fewer held-out beats than classes, or too few beats
        raise DataError(
            f"Cannot hold out a stratified {fraction:g} of {what} ({len(labels)} beats; "
            f"{first_line(e)}): use more data or another fraction."
        ) from None
    return np.sort(np.concatenate([kept, rows[~common]])), np.sort(held)


def class_counts(labels: np.ndarray) -> dict[str, int]:
    """Beats of each class: ``{"N": n, "S": ..., "V": ..., "F": ..., "Q": ...}``."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(CLASSES))
    return {c: int(n) for c, n in zip(CLASSES, counts, strict=True)}


__all__ = ["BeatDataset", "class_counts", "stratified_split"]
