"""Beats in the Kaggle "ECG Heartbeat Categorization" layout (Kachuee's beats of MIT-BIH,
and the generated ``beats`` written the same way): header-less CSVs of 188 numeric columns,
187 samples then the class id. :func:`read_beats_csv` reads and checks one; the rest says
where the Kaggle files are expected and cuts the SAM course project's balanced subset."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from common.errors import DataError, first_line
from common.io import FileRefused, check_regular_file
from ecg_exps.segment import BEAT_LENGTH, CLASSES

MITBIH_FILES: dict[str, str] = {"train": "mitbih_train.csv", "test": "mitbih_test.csv"}
KAGGLE_SET = "shayanfazeli/heartbeat"
N_COLUMNS = BEAT_LENGTH + 1


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


def read_csv_pair(
    folder: Path, files: Mapping[str, str], fix: str
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {split: read_beats_csv(folder / name, fix=fix) for split, name in files.items()}


def mitbih_missing(folder: Path, missing: Sequence[str]) -> DataError:
    expected = " and ".join(MITBIH_FILES.values())
    return DataError(
        f"The Kaggle MIT-BIH beats are not in {folder}: expected {expected} (missing: "
        f"{', '.join(missing)}). Kaggle needs an account, so download=True does not "
        f"fetch them: run `kaggle datasets download -d {KAGGLE_SET}` (with an API token in "
        f"~/.kaggle/kaggle.json) and unzip heartbeat.zip into {folder}/ (the PTB files in it "
        f"are not read)."
    )


def balanced_rows(
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


__all__ = [
    "KAGGLE_SET",
    "MITBIH_FILES",
    "N_COLUMNS",
    "balanced_rows",
    "mitbih_missing",
    "read_beats_csv",
    "read_csv_pair",
]
