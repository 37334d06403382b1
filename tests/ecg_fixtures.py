"""Tiny ECG data in the real formats, so the loaders read what they read in the wild.

* Kaggle "ECG Heartbeat Categorization" CSVs (:func:`write_kaggle_csv`): no header row,
  187 samples in [0, 1] and the class id as a float per row, as ``pandas.to_csv(header=False,
  index=False)`` writes them. Row i of :func:`kaggle_frame` has a distinct first sample
  (``i / n``), so a test can tell whether the first row was kept.
* MIT-BIH Arrhythmia Database records (:func:`write_record`) written by ``wfdb.wrsamp``
  (two signals, 360 Hz, format 212) and ``wfdb.wrann`` (``.atr``): beats of every AAMI
  class, plus annotations that are not beats: a rhythm change ``+`` with aux_note ``(N``, a
  noise marker ``~``, an isolated QRS-like artefact ``|`` and a non-conducted P wave ``x``.
  The MLII signal is a spike train (a 1 mV Gaussian R wave at every beat annotation and a
  T wave 0.25 s later) on a slow wander; the other lead is a sine without spikes, so beats
  cut from the wrong lead do not start at a peak. The record numbers are real ones:
  101, 106, 114 from DS1 (114 lists V5 first and MLII second, as the real 114 does),
  100, 103 from DS2, and the paced 107 (with MLII) and 102 (V5 and V2, no MLII, as the
  real 102).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

FS = 360
SECONDS = 40
AAMI_OF = {
    **dict.fromkeys("NLRej", "N"),
    **dict.fromkeys("AaJS", "S"),
    **dict.fromkeys("VE", "V"),
    "F": "F",
    **dict.fromkeys("/fQ", "Q"),
}

#: record -> (signal names, beat symbols cycled over the record)
PLANS: dict[int, tuple[tuple[str, str], str]] = {
    101: (("MLII", "V1"), "NNANVNFNaNJNSNENQej"),
    106: (("MLII", "V1"), "NLNVNRFANQNE"),
    114: (("V5", "MLII"), "NNVAFNjS"),
    100: (("MLII", "V5"), "NNAVNFNQe"),
    103: (("MLII", "V2"), "NRaVNEF"),
    107: (("MLII", "V1"), "//f/Q/"),
    102: (("V5", "V2"), "/fN"),
}
RECORDS: tuple[int, ...] = tuple(PLANS)
WITH_MLII: tuple[int, ...] = tuple(r for r, (names, _) in PLANS.items() if "MLII" in names)


@dataclass(frozen=True)
class FixtureRecord:
    """One written record: its signals and every annotation, beats and others.

    Attributes:
        record: the record number (also its file names).
        sig_name: the two signal names, in file order.
        signal: ``(n, 2)`` physical signal in mV.
        beats: ``(sample, symbol)`` of every beat annotation, in time order.
        others: ``(sample, symbol, aux_note)`` of the annotations that are not beats.
    """

    record: int
    sig_name: tuple[str, str]
    signal: np.ndarray
    beats: list[tuple[int, str]]
    others: list[tuple[int, str, str]]

    def class_counts(self) -> Counter[str]:
        """AAMI classes of the beat annotations."""
        return Counter(AAMI_OF[s] for _, s in self.beats)


def spike_train(n: int, peaks: np.ndarray, fs: float = FS) -> np.ndarray:
    """An MLII-like lead: R waves (1 mV, sd 14 ms) at ``peaks``, T waves (0.3 mV) 0.25 s
    after each, on a 0.3 Hz wander of 0.05 mV."""
    t = np.arange(n)
    x = 0.05 * np.sin(2 * np.pi * 0.3 * t / fs)
    for p in peaks:
        x += np.exp(-0.5 * ((t - p) / (0.014 * fs)) ** 2)
        x += 0.3 * np.exp(-0.5 * ((t - p - 0.25 * fs) / (0.04 * fs)) ** 2)
    return x


def fixture_record(record: int, seconds: int = SECONDS) -> FixtureRecord:
    """The deterministic contents of fixture record ``record`` (one of :data:`PLANS`)."""
    names, plan = PLANS[record]
    rng = np.random.default_rng(record)
    n = seconds * FS
    peaks, at = [], int(0.5 * FS)
    while at < n - int(0.5 * FS):
        peaks.append(at)
        at += int(FS * rng.uniform(0.6, 1.0))
    peaks_arr = np.asarray(peaks)
    beats = [(int(p), plan[i % len(plan)]) for i, p in enumerate(peaks)]
    mlii = spike_train(n, peaks_arr)
    other = 0.5 * np.sin(2 * np.pi * 1.3 * np.arange(n) / FS)
    signal = np.stack([mlii, other] if names[0] == "MLII" else [other, mlii], axis=1)
    others = [
        (2, "+", "(N"),
        (peaks[3] + 40, "~", ""),
        (peaks[5] + 60, "|", ""),
        (peaks[7] + 50, "x", ""),
    ]
    return FixtureRecord(record, names, signal, beats, others)


def write_record(folder: str | Path, rec: FixtureRecord) -> None:
    """``<folder>/<record>.hea``, ``.dat`` (format 212, 360 Hz) and ``.atr``."""
    import wfdb

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(
        str(rec.record),
        fs=FS,
        units=["mV", "mV"],
        sig_name=list(rec.sig_name),
        p_signal=rec.signal,
        fmt=["212", "212"],
        write_dir=str(folder),
    )
    notes = sorted([(s, sym, "") for s, sym in rec.beats] + list(rec.others), key=lambda a: a[0])
    wfdb.wrann(
        str(rec.record),
        "atr",
        sample=np.array([a[0] for a in notes]),
        symbol=[a[1] for a in notes],
        aux_note=[a[2] for a in notes],
        write_dir=str(folder),
    )


def write_mitdb(root: str | Path, records: tuple[int, ...] = RECORDS) -> Path:
    """Write ``records`` into ``<root>/mitdb/``; return the folder."""
    folder = Path(root) / "mitdb"
    for record in records:
        write_record(folder, fixture_record(record))
    return folder


# --------------------------------------------------------------------------- Kaggle CSVs


def kaggle_frame(counts: tuple[int, ...], seed: int = 0) -> pd.DataFrame:
    """Rows in the Kaggle layout: ``counts[c]`` beats of class c, class by class.

    Columns 0..186 are samples in [0, 1] (a class-dependent bump, zero-padded from a random
    length on), column 187 the class as a float. Row i's first sample is ``i / n``.
    """
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(counts)), counts)
    n = len(labels)
    t = np.arange(187)
    rows = np.zeros((n, 187))
    for i, y in enumerate(labels):
        length = int(rng.integers(80, 170))
        bump = np.exp(-0.5 * ((t - 20 - 15 * y) / (4 + 2 * y)) ** 2)
        rows[i, :length] = np.clip(bump[:length] + 0.05 * rng.random(length), 0, 1)
        rows[i, 0] = i / n
    frame = pd.DataFrame(rows)
    frame[187] = labels.astype(np.float64)
    return frame


def write_kaggle_csv(path: str | Path, frame: pd.DataFrame) -> Path:
    """``frame`` as the Kaggle files are: comma-separated, no header, no index."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, header=False, index=False)
    return path


TRAIN_COUNTS = (60, 20, 20, 20, 20)
TEST_COUNTS = (20, 8, 8, 8, 8)


def write_mitbih(
    root: str | Path,
    train: tuple[int, ...] = TRAIN_COUNTS,
    test: tuple[int, ...] = TEST_COUNTS,
) -> dict[str, pd.DataFrame]:
    """``<root>/mitbih/mitbih_train.csv`` and ``mitbih_test.csv``; return their frames."""
    folder = Path(root) / "mitbih"
    frames = {"train": kaggle_frame(train, seed=0), "test": kaggle_frame(test, seed=1)}
    for split, frame in frames.items():
        write_kaggle_csv(folder / f"mitbih_{split}.csv", frame)
    return frames


__all__ = [
    "AAMI_OF",
    "FS",
    "PLANS",
    "RECORDS",
    "WITH_MLII",
    "FixtureRecord",
    "fixture_record",
    "kaggle_frame",
    "spike_train",
    "write_kaggle_csv",
    "write_mitbih",
    "write_mitdb",
    "write_record",
]
