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

import contextlib
import difflib
import hashlib
import json
import math
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import Dataset

from common.embedded import embedded_sets
from common.errors import DataError, first_line  # DataError re-exported
from common.io import FileRefused, check_regular_file, load_arrays, save_arrays, sha256_file
from common.splits import SPLITS, Splits, check_split_options, seeded_subset
from ecg_exps import synthetic

CLASSES: tuple[str, ...] = ("N", "S", "V", "F", "Q")
#: annotation symbol -> AAMI class (EC57); other symbols (rhythm, noise, artefact, '!' flutter
#: waves, 'x' non-conducted P waves, ...) are not beats and are skipped
AAMI: dict[str, str] = {
    symbol: cls
    for cls, symbols in (
        ("N", "NLRej"),
        ("S", "AaJS"),
        ("V", "VE"),
        ("F", "F"),
        ("Q", "/fQ"),
    )
    for symbol in symbols
}
#: the 48 records of the MIT-BIH Arrhythmia Database
MITDB_RECORDS: tuple[int, ...] = (
    *(100, 101, 102, 103, 104, 105, 106, 107, 108, 109),
    *(111, 112, 113, 114, 115, 116, 117, 118, 119),
    *(121, 122, 123, 124),
    *(200, 201, 202, 203, 205, 207, 208, 209, 210, 212, 213, 214, 215, 217, 219),
    *(220, 221, 222, 223, 228, 230, 231, 232, 233, 234),
)
#: de Chazal et al. (2004): the training records of the inter-patient division
DS1: tuple[int, ...] = (
    *(101, 106, 108, 109, 112, 114, 115, 116, 118, 119, 122),
    *(124, 201, 203, 205, 207, 208, 209, 215, 220, 223, 230),
)
#: de Chazal et al. (2004): the test records of the inter-patient division
DS2: tuple[int, ...] = (
    *(100, 103, 105, 111, 113, 117, 121, 123, 200, 202, 210),
    *(212, 213, 214, 219, 221, 222, 228, 231, 232, 233, 234),
)
#: the records with paced beats, in neither DS1 nor DS2 (102 and 104 have no MLII lead)
PACED: tuple[int, ...] = (102, 104, 107, 217)

BEAT_LENGTH = synthetic.BEAT_LENGTH  # 187 samples per beat
SAMPLING_RATE = synthetic.FS  # 125 Hz, the rate of every beat
WINDOW_SECONDS = 10  # Kachuee's windows
RR_FACTOR = 1.2  # a beat spans 1.2 T from its R peak
LEAD = "MLII"
TEST_FRACTION = 0.2  # of the pooled beats: the intra-patient test set
PATIENT_SPLITS: tuple[str, ...] = ("intrapatient", "interpatient")
MITBIH_FILES: dict[str, str] = {"train": "mitbih_train.csv", "test": "mitbih_test.csv"}
KAGGLE_SET = "shayanfazeli/heartbeat"
PHYSIONET_FILES = "https://physionet.org/files/mitdb/1.0.0"
#: ``balanced=True`` keeps the Kaggle rows from these (0-based, header-less) row numbers on:
#: the SAM course project's ``[71829:]`` / ``[17956:]`` of frames read with a header row
BALANCED_TRAIN_START = 71830
BALANCED_TEST_START = 17957
#: records shipped with the package (``ecg_exps/embedded/mitdb/``, source and licence in its
#: SOURCE.md), installed into ``<root>/mitdb/`` when missing
EMBEDDED = embedded_sets(Path(__file__).parent).get("mitdb")
CACHE_VERSION = 3  # bump when the cached beats or their key change meaning
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


class Segmented(NamedTuple):
    """:func:`segment_beats`' beats: rows, AAMI class ids, their annotations' indices, and
    which of them the record's end cuts short (zero-padded where the signal ends)."""

    signals: np.ndarray
    labels: np.ndarray
    keep: np.ndarray
    cut: np.ndarray


def segment_beats(
    signal: np.ndarray, fs: float, samples: np.ndarray, symbols: Sequence[str]
) -> Segmented:
    """Kachuee et al.'s (2018) beats of one lead: ``(signals, labels, keep, cut)``.

    ``signal`` is the lead at ``fs`` Hz, ``samples`` and ``symbols`` the reference
    annotations (sample number at ``fs``, symbol). Only beat annotations (:data:`AAMI`)
    within the signal are kept; ``keep`` is their index among the annotations, ``labels``
    their AAMI class ids, ``signals`` ``(n, 187)`` float32 rows in [0, 1]. The recipe, with
    the annotated R peaks in place of Kachuee's detected ones:

    1. resample the lead to 125 Hz (``scipy.signal.resample_poly``; missing samples, NaN,
       are first interpolated linearly) and place each R peak at ``round(sample * 125 / fs)``;
    2. cut the signal into consecutive 10 s windows from its start (the last, shorter, one
       kept) and min-max normalise each window to [0, 1] (a flat window: zeros);
    3. T = the median R-R interval of the window's annotated beats (a window with fewer than
       two beats: the record's median R-R; a record with fewer than two: 1 s);
    4. each beat is the ``round(1.2 T)`` samples from its R peak, zero-padded (or truncated)
       to 187. Edge beats: a beat near its window's end continues into the next samples of
       the signal, scaled by its own window's minimum and maximum and clipped to [0, 1], so
       it is not cut short; a beat near the record's end is zero-padded where the signal
       ends, kept (PhysioNet's beat counts hold) and marked in ``cut``.
    """
    from scipy.signal import resample_poly

    samples = np.asarray(samples, dtype=np.int64)
    is_beat = np.array([s in AAMI for s in symbols], dtype=bool).reshape(-1)
    keep = np.flatnonzero(is_beat & (samples >= 0) & (samples < len(signal)))
    keep = keep[np.argsort(samples[keep], kind="stable")]
    labels = np.array([CLASSES.index(AAMI[symbols[i]]) for i in keep], dtype=np.int64)
    if len(keep) == 0:
        return Segmented(np.zeros((0, BEAT_LENGTH), np.float32), labels, keep, np.zeros(0, bool))
    x = np.asarray(signal, dtype=np.float64).reshape(-1)
    bad = ~np.isfinite(x)
    if bad.any():
        good = np.flatnonzero(~bad)
        x = np.interp(np.arange(len(x)), good, x[good]) if len(good) else np.zeros_like(x)
    ratio = Fraction(SAMPLING_RATE) / Fraction(fs).limit_denominator(10_000)
    x = resample_poly(x, ratio.numerator, ratio.denominator)
    n = len(x)
    at = samples[keep]
    peaks = np.minimum(np.rint(at * SAMPLING_RATE / fs).astype(np.int64), n - 1)
    width = WINDOW_SECONDS * SAMPLING_RATE
    starts = np.arange(0, n, width)
    lo, hi = np.minimum.reduceat(x, starts), np.maximum.reduceat(x, starts)
    window = peaks // width
    rr = np.diff(at) * SAMPLING_RATE / fs  # in 125 Hz samples
    period = np.full(len(starts), float(np.median(rr)) if len(rr) else float(SAMPLING_RATE))
    same = window[1:] == window[:-1]  # R-R intervals inside one window
    for w in np.unique(window[1:][same]):
        period[w] = float(np.median(rr[same & (window[1:] == w)]))
    length = np.minimum(BEAT_LENGTH, np.rint(RR_FACTOR * period[window]).astype(np.int64))
    offsets = np.arange(BEAT_LENGTH)
    index = peaks[:, None] + offsets[None, :]
    valid = (offsets[None, :] < length[:, None]) & (index < n)
    scale = (hi - lo)[window]
    flat = scale <= 0
    scale = np.where(flat, 1.0, scale)
    rows = (x[np.minimum(index, n - 1)] - lo[window][:, None]) / scale[:, None]
    rows = np.where(valid & ~flat[:, None], np.clip(rows, 0.0, 1.0), 0.0)
    cut = peaks + length > n  # the record ends inside the beat's 1.2 T
    return Segmented(rows.astype(np.float32), labels, keep, cut)


@dataclass(frozen=True)
class RecordBeats:
    """The beats of one MIT-BIH record (see :func:`segment_beats`).

    Attributes:
        record: the record number.
        signals: ``(n, 187)`` float32 beats in [0, 1].
        labels: ``(n,)`` int64 AAMI class ids.
        samples: ``(n,)`` int64 R-peak sample numbers at the record's rate (360 Hz).
        symbols: ``(n,)`` the annotation symbols (``<U1``).
        cut: ``(n,)`` bool, the beats the record's end cuts short (see :class:`Segmented`).
    """

    record: int
    signals: np.ndarray
    labels: np.ndarray
    samples: np.ndarray
    symbols: np.ndarray
    cut: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in ("signals", "labels", "samples", "symbols", "cut")}


def _record_path(folder: Path, record: int, ext: str) -> Path:
    return folder / f"{record}.{ext}"


def _refetch(folder: Path, record: int) -> str:
    return (
        f"Re-download record {record}: delete its files and run with download=True, or "
        f"`wfdb.dl_database('mitdb', '{folder}', records=['{record}'])`, or fetch "
        f"{PHYSIONET_FILES}/{record}.hea, .dat and .atr into {folder}/."
    )


# bits per sample of the WFDB storage formats, for the size check of a .dat file
_FORMAT_BITS = {
    "8": 8,
    "16": 16,
    "24": 24,
    "32": 32,
    "61": 16,
    "80": 8,
    "160": 16,
    "212": 12,
    "310": 32 / 3,
    "311": 32 / 3,
}


def _read_header(folder: Path, record: int) -> Any:
    import wfdb

    hea = _record_path(folder, record, "hea")
    try:
        return wfdb.rdheader(str(folder / str(record)))
    except Exception as e:  # wfdb raises many kinds for a damaged header
        raise DataError(
            f"Cannot read the header {hea} ({first_line(e)}): it is damaged. "
            f"{_refetch(folder, record)}"
        ) from None


#: The sampling frequencies the recipe takes: it resamples to SAMPLING_RATE, so a record
#: must have at least that many samples a second; above MAX_FS nothing real is recorded.
MAX_FS = 100_000


def _check_header(folder: Path, record: int, header: Any, lead: int) -> None:
    """The header's sampling frequency, length and the lead's gain are what the recipe
    needs (wfdb takes a frequency it cannot parse, such as -360, as its default 250 Hz)."""
    hea = _record_path(folder, record, "hea")

    def bad(field: str, why: str) -> DataError:
        return DataError(f"{hea}: {field} {why}. The header is damaged. {_refetch(folder, record)}")

    written = _written_fs(hea)
    fs = float(header.fs) if written is None else written
    if not (math.isfinite(fs) and SAMPLING_RATE <= fs <= MAX_FS):
        raise bad(
            "the sampling frequency",
            f"is {fs:g} Hz; the recipe needs {SAMPLING_RATE} to {MAX_FS} Hz (MIT-BIH: 360)",
        )
    length = int(header.sig_len or 0)
    if length < WINDOW_SECONDS * fs:
        raise bad("the number of samples", f"is {length}, less than one {WINDOW_SECONDS}-s window")
    gain = float((header.adc_gain or [200.0] * header.n_sig)[lead])  # wfdb reads 0 as 200
    if not (math.isfinite(gain) and gain > 0):
        raise bad(f"the {LEAD} lead's gain", f"is {gain:g}; it must be a positive number")


def _written_fs(hea: Path) -> float | None:
    """The sampling frequency as the header's record line writes it (``name n_sig fs[/cf]
    [(base)] length``); None where it is left out (WFDB's default, 250 Hz, then holds);
    NaN where it is not a number."""
    line = next(
        (ln for ln in hea.read_text(errors="replace").splitlines() if ln and ln[0] != "#"), ""
    )
    fields = line.split()
    if len(fields) < 3:
        return None
    text = fields[2].split("/")[0].split("(")[0]
    try:
        return float(text)
    except ValueError:
        return math.nan


def _check_dat(folder: Path, record: int, header: Any) -> None:
    """Every signal file the header names is there and holds all its samples."""
    files: dict[str, list[int]] = {}
    for i, name in enumerate(header.file_name or []):
        files.setdefault(name, []).append(i)
    for name, channels in files.items():
        path = folder / name
        if not path.is_file():
            raise DataError(
                f"{path} is missing (its header {_record_path(folder, record, 'hea')} is "
                f"there). {_refetch(folder, record)}"
            )
        fmt = str(header.fmt[channels[0]])
        if fmt not in _FORMAT_BITS:
            continue
        spf = header.samps_per_frame or [1] * header.n_sig
        offset = (header.byte_offset or [None])[channels[0]] or 0
        n_values = int(header.sig_len) * sum(int(spf[c] or 1) for c in channels)
        need = offset + math.ceil(n_values * _FORMAT_BITS[fmt] / 8 - 1e-9)
        size = path.stat().st_size
        if size < need:
            raise DataError(
                f"{path} is truncated ({size} bytes; its header needs {need} for "
                f"{header.sig_len} samples of {len(channels)} signal(s) in format {fmt}). "
                f"{_refetch(folder, record)}"
            )


def read_record_beats(folder: str | Path, record: int) -> tuple[RecordBeats | None, str]:
    """The beats of MIT-BIH record ``record`` in ``folder``, read from its files, or
    ``(None, reason)`` for a record that has none to give (no MLII lead, no beats).

    The MLII lead is chosen by name (``sig_name``), not position: record 114 lists V5
    first, and 102 and 104 have no MLII (they are skipped).

    Raises:
        DataError: a missing, damaged or truncated ``.hea``, ``.dat`` or ``.atr`` file.
    """
    import wfdb

    folder = Path(folder)
    for ext in ("hea", "dat", "atr"):  # a device or FIFO would be read forever or block
        path = _record_path(folder, record, ext)
        try:
            check_regular_file(path)
        except FileNotFoundError:
            pass  # said below, by the file's reader
        except FileRefused as e:
            raise DataError(f"{e}. {_refetch(folder, record)}") from None
    header = _read_header(folder, record)
    names = list(getattr(header, "sig_name", None) or [])
    if LEAD not in names:
        return None, f"no {LEAD} lead (its signals: {', '.join(names) or 'none'})"
    _check_header(folder, record, header, names.index(LEAD))
    _check_dat(folder, record, header)
    dat = folder / (header.file_name[names.index(LEAD)])
    try:
        rec = wfdb.rdrecord(str(folder / str(record)), channels=[names.index(LEAD)])
        signal = np.asarray(rec.p_signal, dtype=np.float64)[:, 0]
        if len(signal) != int(header.sig_len):
            raise ValueError(f"{len(signal)} samples, the header says {header.sig_len}")
    except DataError:
        raise
    except Exception as e:  # a short or damaged .dat: numpy and wfdb errors alike
        raise DataError(
            f"Cannot read {dat} ({first_line(e)}): the record is damaged. "
            f"{_refetch(folder, record)}"
        ) from None
    atr = _record_path(folder, record, "atr")
    if not atr.is_file():
        raise DataError(f"{atr} (the beat annotations) is missing. {_refetch(folder, record)}")
    try:
        with open(atr, "rb") as f:  # WFDB annotation files end with a zero 16-bit word
            f.seek(max(0, atr.stat().st_size - 2))
            if atr.stat().st_size % 2 or f.read(2) != b"\0\0":
                raise ValueError("no end-of-file marker: truncated or not an annotation file")
        ann = wfdb.rdann(str(folder / str(record)), "atr")
        samples = np.asarray(ann.sample, dtype=np.int64)
        if len(samples) == 0 or len(ann.symbol) != len(samples):
            raise ValueError("no annotations")
        if any(not isinstance(s, str) for s in ann.symbol):
            raise ValueError("annotation codes that WFDB does not define")
        if np.any(np.diff(samples) < 0):
            raise ValueError("annotations out of time order")
        symbols = list(ann.symbol)
    except Exception as e:  # a damaged .atr: index, reshape and value errors alike
        raise DataError(
            f"Cannot read the annotations {atr} ({first_line(e)}): the file is damaged. "
            f"{_refetch(folder, record)}"
        ) from None
    signals, labels, keep, cut = segment_beats(signal, float(header.fs), samples, symbols)
    if len(labels) == 0:
        return None, "no beat annotations"
    chosen = np.asarray(symbols, dtype="<U1")[keep] if len(keep) else np.zeros(0, "<U1")
    return RecordBeats(int(record), signals, labels, samples[keep], chosen, cut), ""


def _cache_key(folder: Path, record: int) -> str:
    # the files' contents, not their size and time: an edit that keeps both (a copy with
    # its times preserved, a same-size change) must not be served the old beats
    files = [
        [f"{record}.{ext}", sha256_file(_record_path(folder, record, ext))]
        for ext in ("hea", "dat", "atr")
    ]
    recipe = {
        "sampling_rate": SAMPLING_RATE,
        "window_seconds": WINDOW_SECONDS,
        "rr_factor": RR_FACTOR,
        "beat_length": BEAT_LENGTH,
        "lead": LEAD,
        "aami": sorted(AAMI.items()),
    }
    record_ = {"version": CACHE_VERSION, "record": int(record), "files": files, "recipe": recipe}
    return json.dumps(record_, sort_keys=True)


def _load(path: Path, key: str, record: int) -> RecordBeats | None:
    """The cached beats, or None when absent, unreadable, damaged or for another key."""
    arrays = load_arrays(path, key)
    if arrays is None:
        return None
    try:
        beats = RecordBeats(
            int(record), arrays["signals"], arrays["labels"], arrays["samples"],
            arrays["symbols"], arrays["cut"],
        )  # fmt: skip
    except KeyError:
        return None
    n = len(beats.labels)
    if beats.signals.shape != (n, BEAT_LENGTH) or len(beats.samples) != n or n == 0:
        return None
    if len(beats.cut) != n:
        return None
    return beats


def _cache_path(cache_dir: Path, record: int, key: str) -> Path:
    return cache_dir / f"mitdb-{record}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def cache_file(folder: Path, record: int, cache_dir: Path) -> Path:
    """Where the beats of ``record`` (as its files are now) are cached."""
    return _cache_path(cache_dir, record, _cache_key(folder, record))


def load_record_beats(
    folder: str | Path, record: int, cache_dir: str | Path
) -> tuple[RecordBeats | None, str]:
    """:func:`read_record_beats`, from the cache in ``cache_dir`` when it holds this record.

    The cache file is keyed by the recipe and the size and modification time of the
    record's ``.hea``, ``.dat`` and ``.atr``, and holds a SHA-256 of its arrays; a file
    that does not match (damaged, another version of the record) is recomputed and
    replaced. A cache folder that cannot be written is skipped: the beats are then read
    from the record again next time.
    """
    folder, cache_dir = Path(folder), Path(cache_dir)
    if not _complete(folder, record):  # read_record_beats names the missing file
        return read_record_beats(folder, record)
    key = _cache_key(folder, record)
    path = _cache_path(cache_dir, record, key)
    beats = _load(path, key, record) if path.is_file() else None
    if beats is not None:
        return beats, ""
    beats, reason = read_record_beats(folder, record)
    if beats is not None:
        with contextlib.suppress(OSError):  # a read-only cache: go on without it
            save_arrays(path, beats.arrays(), key)
    return beats, reason


# --------------------------------------------------------------------------- mitdb records


def _complete(folder: Path, record: int) -> bool:
    return all(_record_path(folder, record, e).is_file() for e in ("hea", "dat", "atr"))


def _download_mitdb(folder: Path, records: Sequence[int]) -> str:
    """Fetch ``records`` with ``wfdb.dl_database``; '' or why it failed.

    The files are downloaded into a temporary folder beside the records and then moved in
    (each ``.hea`` last), so a killed download leaves no half-written record behind.
    """
    import wfdb

    tmp = folder / f".download-{os.getpid()}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        wfdb.dl_database("mitdb", str(tmp), records=[str(r) for r in records], annotators=["atr"])
        for path in sorted(tmp.rglob("*"), key=lambda p: (p.suffix == ".hea", str(p))):
            if path.is_file():
                os.replace(path, folder / path.name)
    except Exception as e:  # offline, PhysioNet errors, a full disk: all one message
        return first_line(e)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ""


def _how_to_get(folder: Path) -> str:
    return (
        f"Download the database with `python -c \"import wfdb; wfdb.dl_database('mitdb', "
        f"'{folder}')\"` (what download=True runs), or fetch {PHYSIONET_FILES}/<record>.hea, "
        f".dat and .atr for each record into {folder}/."
    )


def _chosen_records(needed: list[int], records: Sequence[int] | None, split: str) -> list[int]:
    """``records`` (checked against the split's) or, without them, every record of it."""
    if not records:
        return needed
    unknown = sorted({int(r) for r in records} - set(needed))
    if unknown:
        raise DataError(
            f"records {', '.join(map(str, unknown))} are not records of the {split} split of "
            f"the MIT-BIH Arrhythmia Database (its records: {', '.join(map(str, needed))})."
        )
    return sorted({int(r) for r in records})


def _mitdb_records(
    folder: Path, needed: Sequence[int], download: bool, chosen: bool
) -> tuple[list[int], list[int], bool]:
    """(records present, records missing, whether any were downloaded) among ``needed``;
    records the user ``chosen`` by name are installed from the package where it has them
    (a whole split is not quietly run on the package's two records)."""
    if EMBEDDED is not None and chosen:  # verified on every call; installs what is missing
        EMBEDDED.install(folder, [f"{r}.{e}" for r in needed for e in ("hea", "dat", "atr")])
    missing = [r for r in needed if not _complete(folder, r)]
    downloaded = False
    if missing and download:
        why = _download_mitdb(folder, missing)
        if why:
            present = [r for r in needed if _record_path(folder, r, "hea").is_file()]
            use = f"pass download=False to use the {len(present)} present, or " if present else ""
            raise DataError(
                f"Cannot download {len(missing)} MIT-BIH Arrhythmia Database record(s) "
                f"({', '.join(map(str, missing[:8]))}{', ...' * (len(missing) > 8)}) into "
                f"{folder} ({why}): offline? Run once with network access, {use}copy the "
                f"records there. {_how_to_get(folder)}"
            )
        downloaded = True
    present = [r for r in needed if _record_path(folder, r, "hea").is_file()]
    missing = [r for r in needed if r not in present]
    return present, missing, downloaded


def _read_mitdb(
    folder: Path, records: Sequence[int], cache_dir: Path
) -> tuple[dict[int, RecordBeats], dict[int, str]]:
    beats, skipped = {}, {}
    for record in records:
        got, reason = load_record_beats(folder, record, cache_dir)
        if got is None:
            skipped[record] = reason
        else:
            beats[record] = got
    return beats, skipped


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
    needed = _chosen_records(needed, r.records, r.split)
    present, missing, downloaded = _mitdb_records(folder, needed, r.download, bool(r.records))
    if not present:
        why = "" if r.download else " download=False, so nothing is fetched."
        raise DataError(
            f"No MIT-BIH Arrhythmia Database record of the {r.split} split is in {folder} "
            f"(looked for <record>.hea of {len(needed)} records).{why} {_how_to_get(folder)}"
        )
    beats, skipped = _read_mitdb(folder, present, cache)
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
                f"{'training' if part == 'DS1' else 'test'} beats. {_how_to_get(folder)}"
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
            f"{_how_to_get(folder)}"
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
        balanced: ``mitbih`` only: the SAM course project's "balanced" subset, its frames'
            rows from 71829 (train) and 17956 (test) on. The project read the header-less
            CSVs with pandas' default ``header=0``, which takes the first beat for column
            names, so its frame row i is the file's row i + 1 (0-based): the subset is our
            rows from :data:`BALANCED_TRAIN_START` = 71830 and :data:`BALANCED_TEST_START` =
            17957 on, which on the Kaggle files (listed class by class, N first; per their
            published counts of N beats, 72471 and 18118) are the last 641 (train) and 161
            (test) N beats and every S, V, F and Q beat.
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
    if key != "mitdb" and split != "intrapatient":
        raise DataError(
            f"split={split!r} needs the records of each patient (name='mitdb'); {key} comes as "
            f"fixed train and test files: use split='intrapatient'."
        )
    if records and key != "mitdb":
        raise DataError(f"records= picks PhysioNet records (name='mitdb'), not {key}'s beats.")
    if balanced and key != "mitbih":
        raise DataError(f"balanced=True is the SAM course project's mitbih subset, not {key}'s.")
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
        splits.meta["records"] = {
            s: sorted({int(r) for r in d.records}) if d.records is not None else []
            for s, d in parts.items()
        }
    return splits


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
