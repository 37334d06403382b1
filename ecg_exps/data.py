"""ECG heartbeat classification data behind one call: :func:`build_ecg_data`.

Every set is a table of single beats, :data:`BEAT_LENGTH` = 187 samples at 125 Hz starting
at the beat's R peak (Kachuee et al. 2018, "ECG Heartbeat Classification: A Deep
Transferable Representation"), labelled with the five AAMI classes :data:`CLASSES`
(N normal, S supraventricular ectopic, V ventricular ectopic, F fusion, Q paced or
unclassifiable; ids 0..4). Three sources (``name``):

1. ``mitbih``: the Kaggle "ECG Heartbeat Categorization" CSVs (Kachuee's beats of MIT-BIH),
   ``<root>/mitbih/mitbih_train.csv`` and ``mitbih_test.csv``: no header row, 188 columns
   per row (187 samples in [0, 1], zero-padded, then the class id 0..4 as a float). Kaggle
   needs an account, so ``download`` does not fetch them: ``kaggle datasets download -d
   shayanfazeli/heartbeat`` and unzip the archive into ``<root>/mitbih/``. ``test`` is
   ``mitbih_test.csv``; ``val`` a stratified ``val_fraction`` of ``mitbih_train.csv``.
   ``balanced=True`` keeps the SAM course project's subset (:data:`BALANCED_TRAIN_START`).
2. ``mitdb``: the PhysioNet MIT-BIH Arrhythmia Database itself, WFDB records
   ``<root>/mitdb/<record>.hea``, ``.dat``, ``.atr`` (what ``wfdb.dl_database("mitdb",
   dir)`` writes, and what ``download=True`` fetches for missing records), segmented into
   beats by :func:`segment_beats` from the MLII lead and the reference annotations. The
   beats of each record are cached (``cache_dir``, default ``<root>/.cache/ecg/``).
   ``split="intrapatient"`` pools the beats of every usable record (a stratified
   :data:`TEST_FRACTION` is ``test``); ``split="interpatient"`` is de Chazal et al.'s
   (2004) division: the records :data:`DS1` train, :data:`DS2` test, the paced records
   :data:`PACED` in neither.
3. ``beats``: generated heartbeats with class-specific morphology
   (:mod:`ecg_exps.synthetic`), written in the Kaggle layout under ``<root>/beats/`` and
   read by the same CSV reader; labelled synthetic (``meta["synthetic"]``).

For every source ``val`` is a stratified ``val_fraction`` of the training part, held out
with ``split_seed`` (``sklearn.model_selection.train_test_split``), and ``n_examples`` keeps
a ``split_seed`` random subset of the rest; the run's seed never moves a beat.
``meta["class_counts"]`` counts the classes of each split from the labels returned.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import Dataset

from common.errors import DataError, first_line  # DataError re-exported
from common.io import FileRefused, check_regular_file
from common.splits import SPLITS, Splits, check_split_options, seeded_subset
from ecg_exps import synthetic
from ecg_exps.records import (  # the record-level names are re-exported
    AAMI,
    BEAT_LENGTH,
    CLASSES,
    DS1,
    DS2,
    LEAD,
    MITDB_RECORDS,
    PACED,
    SAMPLING_RATE,
    RecordBeats,
    cache_file,
    chosen_records,
    how_to_get,
    load_record_beats,
    mitdb_records,
    read_mitdb,
    read_record_beats,
    segment_beats,
)

TEST_FRACTION = 0.2  # of the pooled beats: the intra-patient test set
PATIENT_SPLITS: tuple[str, ...] = ("intrapatient", "interpatient")
MITBIH_FILES: dict[str, str] = {"train": "mitbih_train.csv", "test": "mitbih_test.csv"}
KAGGLE_SET = "shayanfazeli/heartbeat"
#: ``balanced=True`` keeps the Kaggle rows from these (0-based, header-less) row numbers on:
#: the SAM course project's ``[71829:]`` / ``[17956:]`` of frames read with a header row.
#: It read the header-less CSVs with pandas' default ``header=0``, which takes the first
#: beat for column names, so its frame row i is the file's row i + 1. On the Kaggle files
#: (listed class by class, N first; 72471 and 18118 N beats per their published counts)
#: these are the last 641 (train) and 161 (test) N beats and every S, V, F and Q beat.
BALANCED_TRAIN_START = 71830
BALANCED_TEST_START = 17957
N_COLUMNS = BEAT_LENGTH + 1


# --------------------------------------------------------------------------- names, datasets


def canonical_name(name: str) -> str:
    """The :data:`DATASETS` name of ``name`` (case, ``-``, ``_`` and spaces ignored).

    ``"MIT-BIH"`` is ``"mitbih"``, ``"MITDB"`` ``"mitdb"``; an unknown name is a
    :class:`DataError` with the closest known one.
    """
    if not re.fullmatch(r"[A-Za-z0-9 _-]+", str(name).strip()):  # "../../beats" was beats
        raise DataError(
            f"data.name={name!r} is not a data set's name (letters, digits, '-' and '_', "
            f"e.g. mitdb or MIT-BIH); the data's folder is data.root"
        )
    key = "".join(c for c in str(name).strip().lower() if c.isalnum())
    if key in DATASETS:
        return key
    close = difflib.get_close_matches(key, DATASETS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise DataError(f"Unknown ECG data set {name!r}.{hint} Known: {', '.join(DATASETS)}.")


def _patient_split(split: str) -> str:
    key = "".join(c for c in str(split).strip().lower() if c.isalnum())
    if key not in PATIENT_SPLITS:
        raise DataError(
            f"split must be one of {', '.join(PATIENT_SPLITS)}, got {split!r}: intrapatient "
            f"pools every record's beats, interpatient trains on DS1 and tests on DS2."
        )
    return key


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


# --------------------------------------------------------------------------- Kaggle CSVs


def read_beats_csv(path: str | Path, *, fix: str) -> tuple[np.ndarray, np.ndarray]:
    """The beats of a Kaggle-layout CSV: ``(N, 187)`` float32 signals, ``(N,)`` int64 labels.

    The file has no header row (every line is a beat, the first included) and 188 numeric
    columns: 187 samples, then the class id 0..4 written as a float (``0.0``). Anything else
    (another number of columns, a cell that is not a number, an empty or NaN cell, a class
    that is not an integer in 0..4) is a :class:`DataError` naming the file, the first bad
    line (1-based) and ``fix``.
    """
    path = Path(path)

    def bad(why: str) -> DataError:
        return DataError(
            f"{path} is not a beat CSV of {N_COLUMNS} columns ({BEAT_LENGTH} samples, then the "
            f"class id 0..4): {why}. {fix}"
        )

    try:
        check_regular_file(path)
        frame = pd.read_csv(path, header=None)
    except FileNotFoundError:
        raise
    except FileRefused as e:
        raise bad(str(e)) from None
    except pd.errors.EmptyDataError:
        raise bad("it is empty") from None
    except pd.errors.ParserError as e:  # "Expected 188 fields in line 7, saw 189"
        raise bad(first_line(e).removeprefix("ParserError: ")) from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"Cannot read {path} ({first_line(e)}). {fix}") from None
    if frame.shape[1] != N_COLUMNS:
        raise bad(f"it has {frame.shape[1]} columns")
    text_columns = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    for c in text_columns:  # the first cell that does not parse as a number
        numbers = pd.to_numeric(frame[c], errors="coerce")
        wrong = numbers.isna().to_numpy() & frame[c].notna().to_numpy()
        if wrong.any():
            row = int(np.flatnonzero(wrong)[0])
            raise bad(f"line {row + 1}, column {c + 1} holds {frame[c].iloc[row]!r}, not a number")
    values = frame.to_numpy(dtype=np.float64)
    missing = ~np.isfinite(values)
    if missing.any():
        row, col = (int(v[0]) for v in np.nonzero(missing))
        raise bad(f"line {row + 1}, column {col + 1} is empty, NaN or infinite")
    y = values[:, -1]
    wrong = (y != np.round(y)) | (y < 0) | (y >= len(CLASSES))
    if wrong.any():
        row = int(np.flatnonzero(wrong)[0])
        raise bad(
            f"line {row + 1} has the class {y[row]:g}, not an integer in 0..{len(CLASSES) - 1} "
            f"({', '.join(CLASSES)}); {int(wrong.sum())} such lines"
        )
    return values[:, :BEAT_LENGTH].astype(np.float32), y.astype(np.int64)


def _read_csv_pair(
    folder: Path, files: Mapping[str, str], fix: str
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {split: read_beats_csv(folder / name, fix=fix) for split, name in files.items()}


def _mitbih_missing(folder: Path, missing: Sequence[str]) -> DataError:
    expected = " and ".join(MITBIH_FILES.values())
    return DataError(
        f"The Kaggle MIT-BIH beats are not in {folder}: expected {expected} (missing: "
        f"{', '.join(missing)}). Kaggle needs an account, so download=True does not "
        f"fetch them: run `kaggle datasets download -d {KAGGLE_SET}` (with an API token in "
        f"~/.kaggle/kaggle.json) and unzip heartbeat.zip into {folder}/ (the PTB files in it "
        f"are not read)."
    )


def _balanced(
    arrays: tuple[np.ndarray, np.ndarray], start: int, path: Path
) -> tuple[np.ndarray, np.ndarray]:
    signals, labels = arrays
    if len(labels) <= start:
        raise DataError(
            f"balanced=True keeps the rows of {path} from row {start} on (the SAM course "
            f"project's subset of the full Kaggle file), but it has only {len(labels)} rows: use "
            f"the original file from {KAGGLE_SET}, or balanced=False."
        )
    return signals[start:], labels[start:]


# --------------------------------------------------------------------------- beats of a record


# --------------------------------------------------------------------------- mitdb records


def _pool(beats: Mapping[int, RecordBeats], records: Sequence[int]) -> BeatDataset:
    used = [r for r in records if r in beats]
    if not used:
        return BeatDataset(np.zeros((0, BEAT_LENGTH), np.float32), np.zeros(0, np.int64))
    return BeatDataset(
        np.concatenate([beats[r].signals for r in used]),
        np.concatenate([beats[r].labels for r in used]),
        np.concatenate([np.full(len(beats[r]), r, dtype=np.int64) for r in used]),
    )


# --------------------------------------------------------------------------- splits


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


# --------------------------------------------------------------------------- entry point


@dataclass(frozen=True)
class _Request:
    """What :func:`build_ecg_data` asks a data set's loader for (see its arguments)."""

    root: Path
    split: str
    split_seed: int
    download: bool
    balanced: bool
    cache_dir: str | Path | None
    beats_spec: synthetic.BeatsSpec | None
    records: Sequence[int] | None


#: A loader's answer: the training pool (validation is carved from it), the test beats,
#: the folder read and what the data set adds to ``meta``.
_Pool = tuple["BeatDataset", "BeatDataset", Path, dict[str, Any]]


def _load_mitdb(r: _Request) -> _Pool:
    """PhysioNet's records (WFDB), split intra- or inter-patient."""
    folder = r.root / "mitdb"
    cache = Path(r.cache_dir).expanduser() if r.cache_dir is not None else r.root / ".cache" / "ecg"
    needed = sorted({*DS1, *DS2}) if r.split == "interpatient" else list(MITDB_RECORDS)
    needed = chosen_records(needed, r.records, r.split)
    present, missing, downloaded = mitdb_records(folder, needed, r.download, bool(r.records))
    if not present:
        why = "" if r.download else " download=False, so nothing is fetched."
        raise DataError(
            f"No MIT-BIH Arrhythmia Database record of the {r.split} split is in {folder} "
            f"(looked for <record>.hea of {len(needed)} records).{why} {how_to_get(folder)}"
        )
    beats, skipped = read_mitdb(folder, present, cache)
    if r.split == "interpatient":
        pool, test = _interpatient(beats, folder)
    else:
        pool, test = _intrapatient(beats, present, skipped, folder, r.split_seed)
    meta = {
        "missing_records": missing,
        "skipped_records": skipped,
        # kept (PhysioNet's beat counts hold), zero-padded where the signal ends: counted
        "beats_cut_by_record_end": {
            r: int(b.cut.sum()) for r, b in sorted(beats.items()) if b.cut.any()
        },
        "downloaded": downloaded,
        "lead": LEAD,
        "test_fraction": TEST_FRACTION if r.split == "intrapatient" else None,
        "cache_dir": str(cache),
    }
    return pool, test, folder, meta


def _interpatient(beats: Any, folder: Path) -> tuple[BeatDataset, BeatDataset]:
    """DS1's beats to train on, DS2's to test on."""
    parts = {"DS1": _pool(beats, DS1), "DS2": _pool(beats, DS2)}
    for part, pool in parts.items():
        if len(pool) == 0:
            ds = DS1 if part == "DS1" else DS2
            raise DataError(
                f"None of the {part} records ({', '.join(map(str, ds))}) is usable in "
                f"{folder} (missing or skipped), so the inter-patient split has no "
                f"{'training' if part == 'DS1' else 'test'} beats. {how_to_get(folder)}"
            )
    return parts["DS1"], parts["DS2"]


def _intrapatient(
    beats: Any, present: Sequence[int], skipped: dict, folder: Path, split_seed: int
) -> tuple[BeatDataset, BeatDataset]:
    """Every record's beats pooled, a stratified :data:`TEST_FRACTION` of them to test on."""
    everything = _pool(beats, present)
    if len(everything) == 0:
        raise DataError(
            f"No record in {folder} has beats to give (skipped: "
            f"{'; '.join(f'{r}: {why}' for r, why in skipped.items())}). "
            f"{how_to_get(folder)}"
        )
    rest, held = stratified_split(
        everything.labels, TEST_FRACTION, split_seed, what=f"the beats of {folder}"
    )
    return everything.subset(rest), everything.subset(held)


def _load_mitbih(r: _Request) -> _Pool:
    """Kaggle's CSVs (optionally the SAM course project's balanced subset)."""
    folder = r.root / "mitbih"
    lacking = [f for f in MITBIH_FILES.values() if not (folder / f).is_file()]
    if lacking:
        raise _mitbih_missing(folder, lacking)
    fix = (
        f"Replace it with the original from the Kaggle data set {KAGGLE_SET} "
        f"(heartbeat.zip, unzipped into {folder}/)."
    )
    arrays = _read_csv_pair(folder, MITBIH_FILES, fix)
    if r.balanced:
        train_file, test_file = folder / MITBIH_FILES["train"], folder / MITBIH_FILES["test"]
        arrays["train"] = _balanced(arrays["train"], BALANCED_TRAIN_START, train_file)
        arrays["test"] = _balanced(arrays["test"], BALANCED_TEST_START, test_file)
    return _csv_pool(arrays, folder, MITBIH_FILES, {})


def _load_beats(r: _Request) -> _Pool:
    """The generated beats (ecg_exps.synthetic), in the Kaggle layout."""
    spec = r.beats_spec if r.beats_spec is not None else synthetic.BeatsSpec()
    folder = synthetic.ensure_beats(r.root, spec)
    arrays = _read_csv_pair(
        folder, synthetic.SPLIT_FILES, f"Delete {folder}; it is generated again."
    )
    return _csv_pool(arrays, folder, synthetic.SPLIT_FILES, {"beats": spec.record()})


def _csv_pool(arrays: dict, folder: Path, files: dict[str, str], meta: dict) -> _Pool:
    pool, test = BeatDataset(*arrays["train"]), BeatDataset(*arrays["test"])
    return pool, test, folder, {**meta, "files": {s: str(folder / f) for s, f in files.items()}}


#: Every data set's loader, by its name (one loader and one line per data set).
LOADERS: dict[str, Callable[[_Request], _Pool]] = {
    "mitbih": _load_mitbih,
    "mitdb": _load_mitdb,
    synthetic.NAME: _load_beats,
}
DATASETS: tuple[str, ...] = tuple(LOADERS)


def build_ecg_data(
    name: str,
    root: str | Path,
    *,
    split: str = "intrapatient",
    val_fraction: float = 0.1,
    split_seed: int = 0,
    n_examples: int | None = None,
    download: bool = True,
    balanced: bool = False,
    cache_dir: str | Path | None = None,
    beats_spec: synthetic.BeatsSpec | None = None,
    records: Sequence[int] | None = None,
) -> Splits:
    """Build the train / val / test beats of ECG data set ``name``.

    Which beats land in which split depends on ``split_seed`` (and the options below)
    alone, never on the run's seed or the global RNGs.

    Args:
        name: ``"mitbih"``, ``"mitdb"`` or ``"beats"`` (case, ``-``, ``_`` ignored).
        root: data root holding ``mitbih/``, ``mitdb/`` (``beats/`` is written there).
        split: ``mitdb`` only: ``"intrapatient"`` (every usable record's beats pooled,
            a stratified :data:`TEST_FRACTION` of them ``test``) or ``"interpatient"``
            (:data:`DS1` records train, :data:`DS2` test). The CSV sets take only
            ``"intrapatient"`` (their own train / test files).
        val_fraction: stratified part of the training beats held out as ``val``; 0: none.
        split_seed: seeds ``val``, the intra-patient ``test`` and the ``n_examples`` subset.
        n_examples: keep a random n of the training part (the first n of a ``split_seed``
            permutation, nested as n grows); ``val`` and ``test`` are unchanged.
        download: ``mitdb``: fetch missing records with ``wfdb.dl_database`` (else the
            records present are used, and the missing ones named in
            ``meta["missing_records"]``). The Kaggle CSVs need an account and are never
            downloaded; ``beats`` is generated.
        balanced: ``mitbih`` only: the SAM course project's "balanced" subset (see
            :data:`BALANCED_TRAIN_START`).
        cache_dir: ``mitdb``: where each record's beats are cached (default
            ``root/.cache/ecg``; any file there may be deleted, it is recomputed).
        beats_spec: what ``beats`` holds (default :class:`~ecg_exps.synthetic.BeatsSpec()`).
        records: ``mitdb`` only: use these records (of the split's) instead of all of them,
            e.g. ``(100, 208)``, the two shipped with the package (:data:`EMBEDDED`).

    Raises:
        DataError: unknown set, bad option, or data that is missing or corrupt.
    """
    key = canonical_name(name)
    split = _patient_split(split)
    _check_set_options(key, split, records, balanced)
    split_seed = check_split_options(val_fraction, n_examples, split_seed)
    request = _Request(
        Path(root).expanduser(), split, split_seed, download, balanced, cache_dir,
        beats_spec, records,
    )  # fmt: skip
    pool, test, source, meta = LOADERS[key](request)

    train_rows, val_rows = stratified_split(
        pool.labels, val_fraction, split_seed, what=f"the {key} training beats"
    )
    train_rows = seeded_subset(train_rows, n_examples, split_seed)
    splits = Splits(pool.subset(train_rows), pool.subset(val_rows), test, num_classes=len(CLASSES))
    parts = {"train": splits.train, "val": splits.val, "test": splits.test}
    splits.meta = {
        "dataset": key,
        "synthetic": key == synthetic.NAME,
        "source": str(source),
        "split": split,
        "class_names": list(CLASSES),
        "class_counts": {s: class_counts(d.labels) for s, d in parts.items()},
        "n_train": len(splits.train),
        "n_val": len(splits.val),
        "n_test": len(splits.test),
        "val_fraction": val_fraction,
        "split_seed": split_seed,
        "n_examples": n_examples,
        "balanced": bool(balanced),
        "sampling_rate": SAMPLING_RATE,
        "beat_length": BEAT_LENGTH,
        "num_classes": len(CLASSES),
        **meta,
    }
    if key == "mitdb":
        splits.meta["records"] = {s: _records_of(d) for s, d in parts.items()}
    return splits


def _check_set_options(key: str, split: str, records: Sequence[int] | None, balanced: bool) -> None:
    """Refuses the options that belong to another data set than ``key``."""
    if key != "mitdb" and split != "intrapatient":
        raise DataError(
            f"split={split!r} needs the records of each patient (name='mitdb'); {key} comes as "
            f"fixed train and test files: use split='intrapatient'."
        )
    if records and key != "mitdb":
        raise DataError(f"records= picks PhysioNet records (name='mitdb'), not {key}'s beats.")
    if balanced and key != "mitbih":
        raise DataError(f"balanced=True is the SAM course project's mitbih subset, not {key}'s.")


def _records_of(beats: BeatDataset) -> list[int]:
    return [] if beats.records is None else sorted({int(r) for r in beats.records})


__all__ = [
    "AAMI",
    "BALANCED_TEST_START",
    "BALANCED_TRAIN_START",
    "BEAT_LENGTH",
    "CLASSES",
    "DATASETS",
    "DS1",
    "DS2",
    "MITBIH_FILES",
    "MITDB_RECORDS",
    "PACED",
    "SAMPLING_RATE",
    "SPLITS",
    "TEST_FRACTION",
    "BeatDataset",
    "DataError",
    "RecordBeats",
    "Splits",
    "build_ecg_data",
    "cache_file",
    "canonical_name",
    "class_counts",
    "load_record_beats",
    "read_beats_csv",
    "read_record_beats",
    "segment_beats",
    "stratified_split",
]
