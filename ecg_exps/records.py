"""The MIT-BIH Arrhythmia Database's WFDB records, read into beats: the records and de
Chazal et al.'s divisions of them, each record's header and signal checked, the beats cut
by Kachuee et al.'s recipe (:func:`segment_beats`), cached per record (keyed on the files'
content), and the missing records fetched where PhysioNet is reachable. The data sets and
their splits are :mod:`ecg_exps.data`'s."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from common.embedded import embedded_sets
from common.errors import DataError, first_line
from common.io import FileRefused, check_regular_file, load_arrays, save_arrays, sha256_file
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


PHYSIONET_FILES = "https://physionet.org/files/mitdb/1.0.0"


#: records shipped with the package (``ecg_exps/embedded/mitdb/``, source and licence in its
#: SOURCE.md), installed into ``<root>/mitdb/`` when missing
EMBEDDED = embedded_sets(Path(__file__).parent).get("mitdb")


CACHE_VERSION = 3  # bump when the cached beats or their key change meaning


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
    lead = names.index(LEAD)
    dat = folder / (header.file_name[lead])
    try:
        rec = wfdb.rdrecord(str(folder / str(record)), channels=[lead], physical=False)
        digital = np.asarray(rec.d_signal)[:, 0]
        if len(digital) != int(header.sig_len):
            raise ValueError(f"{len(digital)} samples, the header says {header.sig_len}")
        signal = np.asarray(rec.dac(), dtype=np.float64)[:, 0]  # rdrecord's physical values
    except DataError:
        raise
    except Exception as e:  # a short or damaged .dat: numpy and wfdb errors alike
        raise DataError(
            f"Cannot read {dat} ({first_line(e)}): the record is damaged. "
            f"{_refetch(folder, record)}"
        ) from None
    _check_sum(folder, record, header, lead, digital)
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


def _check_sum(folder: Path, record: int, header: Any, lead: int, digital: np.ndarray) -> None:
    """WFDB's own check of the samples, which wfdb itself does not make: the header's 16-bit
    checksum of each signal. A damaged ``.dat`` of the right size fails it."""
    want = (getattr(header, "checksum", None) or [None] * header.n_sig)[lead]
    got = int(np.sum(digital, dtype=np.int64))
    if want is not None and (got - int(want)) % 65536:
        raise DataError(
            f"{folder / header.file_name[lead]} fails its checksum: the {LEAD} samples sum to "
            f"{got % 65536} (mod 65536) where {_record_path(folder, record, 'hea')} says "
            f"{int(want) % 65536}: the record is damaged. {_refetch(folder, record)}"
        )


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


def how_to_get(folder: Path) -> str:
    return (
        f"Download the database with `python -c \"import wfdb; wfdb.dl_database('mitdb', "
        f"'{folder}')\"` (what download=True runs), or fetch {PHYSIONET_FILES}/<record>.hea, "
        f".dat and .atr for each record into {folder}/."
    )


def chosen_records(needed: list[int], records: Sequence[int] | None, split: str) -> list[int]:
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


def mitdb_records(
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
                f"records there. {how_to_get(folder)}"
            )
        downloaded = True
    present = [r for r in needed if _record_path(folder, r, "hea").is_file()]
    missing = [r for r in needed if r not in present]
    return present, missing, downloaded


def read_mitdb(
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


__all__ = [
    "AAMI",
    "BEAT_LENGTH",
    "CACHE_VERSION",
    "CLASSES",
    "DS1",
    "DS2",
    "EMBEDDED",
    "LEAD",
    "MAX_FS",
    "MITDB_RECORDS",
    "PACED",
    "PHYSIONET_FILES",
    "RR_FACTOR",
    "SAMPLING_RATE",
    "WINDOW_SECONDS",
    "RecordBeats",
    "Segmented",
    "cache_file",
    "chosen_records",
    "how_to_get",
    "load_record_beats",
    "mitdb_records",
    "read_mitdb",
    "read_record_beats",
    "segment_beats",
]
