"""The WFDB files of one MIT-BIH record, checked before and while they are read: each is a
regular file, the header parses and holds a sampling frequency, length and gain the recipe
can use, the ``.dat`` holds every sample the header promises and matches its checksum, and
the ``.atr`` is a whole annotation file in time order. Every failure is a
:class:`DataError` naming the file and how to fetch the record again."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import DataError, first_line
from common.io import FileRefused, check_regular_file
from ecg_exps.segment import SAMPLING_RATE, WINDOW_SECONDS

LEAD = "MLII"


PHYSIONET_FILES = "https://physionet.org/files/mitdb/1.0.0"


def record_path(folder: Path, record: int, ext: str) -> Path:
    return folder / f"{record}.{ext}"


def refetch(folder: Path, record: int) -> str:
    return (
        f"Re-download record {record}: delete its files and run with download=True, or "
        f"`wfdb.dl_database('mitdb', '{folder}', records=['{record}'])`, or fetch "
        f"{PHYSIONET_FILES}/{record}.hea, .dat and .atr into {folder}/."
    )


def check_regular_files(folder: Path, record: int) -> None:
    """The record's files that exist are regular files (a missing one is said by its reader)."""
    for ext in ("hea", "dat", "atr"):  # a device or FIFO would be read forever or block
        path = record_path(folder, record, ext)
        try:
            check_regular_file(path)
        except FileNotFoundError:
            pass  # said below, by the file's reader
        except FileRefused as e:
            raise DataError(f"{e}. {refetch(folder, record)}") from None


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


def read_header(folder: Path, record: int) -> Any:
    import wfdb

    hea = record_path(folder, record, "hea")
    try:
        return wfdb.rdheader(str(folder / str(record)))
    except Exception as e:  # wfdb raises many kinds for a damaged header
        raise DataError(
            f"Cannot read the header {hea} ({first_line(e)}): it is damaged. "
            f"{refetch(folder, record)}"
        ) from None


#: The sampling frequencies the recipe takes: it resamples to SAMPLING_RATE, so a record
#: must have at least that many samples a second; above MAX_FS nothing real is recorded.
MAX_FS = 100_000


def check_header(folder: Path, record: int, header: Any, lead: int) -> None:
    """The header's sampling frequency, length and the lead's gain are what the recipe
    needs (wfdb takes a frequency it cannot parse, such as -360, as its default 250 Hz)."""
    hea = record_path(folder, record, "hea")

    def bad(field: str, why: str) -> DataError:
        return DataError(f"{hea}: {field} {why}. The header is damaged. {refetch(folder, record)}")

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


def check_dat(folder: Path, record: int, header: Any) -> None:
    """Every signal file the header names is there and holds all its samples."""
    files: dict[str, list[int]] = {}
    for i, name in enumerate(header.file_name or []):
        files.setdefault(name, []).append(i)
    for name, channels in files.items():
        path = folder / name
        if not path.is_file():
            raise DataError(
                f"{path} is missing (its header {record_path(folder, record, 'hea')} is "
                f"there). {refetch(folder, record)}"
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
                f"{refetch(folder, record)}"
            )


def check_sum(folder: Path, record: int, header: Any, lead: int, digital: np.ndarray) -> None:
    """WFDB's own check of the samples, which wfdb itself does not make: the header's 16-bit
    checksum of each signal. A damaged ``.dat`` of the right size fails it."""
    want = (getattr(header, "checksum", None) or [None] * header.n_sig)[lead]
    got = int(np.sum(digital, dtype=np.int64))
    if want is not None and (got - int(want)) % 65536:
        raise DataError(
            f"{folder / header.file_name[lead]} fails its checksum: the {LEAD} samples sum to "
            f"{got % 65536} (mod 65536) where {record_path(folder, record, 'hea')} says "
            f"{int(want) % 65536}: the record is damaged. {refetch(folder, record)}"
        )


def read_annotations(folder: Path, record: int) -> tuple[np.ndarray, list[str]]:
    """The record's reference annotations: sample numbers (in time order) and symbols."""
    import wfdb

    atr = record_path(folder, record, "atr")
    if not atr.is_file():
        raise DataError(f"{atr} (the beat annotations) is missing. {refetch(folder, record)}")
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
            f"{refetch(folder, record)}"
        ) from None
    return samples, symbols


__all__ = [
    "LEAD",
    "MAX_FS",
    "PHYSIONET_FILES",
    "check_dat",
    "check_header",
    "check_regular_files",
    "check_sum",
    "read_annotations",
    "read_header",
    "record_path",
    "refetch",
]
