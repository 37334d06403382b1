"""The MIT-BIH Arrhythmia Database's WFDB records, read into beats: the records and de
Chazal et al.'s divisions of them, each record's header and signal checked
(:mod:`ecg_exps.record_files`), the beats cut by Kachuee et al.'s recipe
(:func:`~ecg_exps.segment.segment_beats`), cached per record (keyed on the files' content),
and the missing records fetched where PhysioNet is reachable. The data sets and their
splits are :mod:`ecg_exps.data`'s."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.embedded import embedded_sets
from common.errors import DataError, first_line
from common.io import load_arrays, save_arrays, sha256_file
from ecg_exps.record_files import (  # re-exported: the lead, host and frequency bound
    LEAD,
    MAX_FS,
    PHYSIONET_FILES,
    check_dat,
    check_header,
    check_regular_files,
    check_sum,
    read_annotations,
    read_header,
    record_path,
    refetch,
)
from ecg_exps.segment import (  # re-exported: the classes and the recipe
    AAMI,
    BEAT_LENGTH,
    CLASSES,
    RR_FACTOR,
    SAMPLING_RATE,
    WINDOW_SECONDS,
    Segmented,
    segment_beats,
)

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


#: records shipped with the package (``ecg_exps/embedded/mitdb/``, source and licence in its
#: SOURCE.md), installed into ``<root>/mitdb/`` when missing
EMBEDDED = embedded_sets(Path(__file__).parent).get("mitdb")


CACHE_VERSION = 3  # bump when the cached beats or their key change meaning


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
    check_regular_files(folder, record)
    header = read_header(folder, record)
    names = list(getattr(header, "sig_name", None) or [])
    if LEAD not in names:
        return None, f"no {LEAD} lead (its signals: {', '.join(names) or 'none'})"
    check_header(folder, record, header, names.index(LEAD))
    check_dat(folder, record, header)
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
            f"Cannot read {dat} ({first_line(e)}): the record is damaged. {refetch(folder, record)}"
        ) from None
    check_sum(folder, record, header, lead, digital)
    samples, symbols = read_annotations(folder, record)
    signals, labels, keep, cut = segment_beats(signal, float(header.fs), samples, symbols)
    if len(labels) == 0:
        return None, "no beat annotations"
    chosen = np.asarray(symbols, dtype="<U1")[keep] if len(keep) else np.zeros(0, "<U1")
    return RecordBeats(int(record), signals, labels, samples[keep], chosen, cut), ""


def _cache_key(folder: Path, record: int) -> str:
    # the files' contents, not their size and time: an edit that keeps both (a copy with
    # its times preserved, a same-size change) must not be served the old beats
    files = [
        [f"{record}.{ext}", sha256_file(record_path(folder, record, ext))]
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
    return all(record_path(folder, record, e).is_file() for e in ("hea", "dat", "atr"))


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
            present = [r for r in needed if record_path(folder, r, "hea").is_file()]
            use = f"pass download=False to use the {len(present)} present, or " if present else ""
            raise DataError(
                f"Cannot download {len(missing)} MIT-BIH Arrhythmia Database record(s) "
                f"({', '.join(map(str, missing[:8]))}{', ...' * (len(missing) > 8)}) into "
                f"{folder} ({why}): offline? Run once with network access, {use}copy the "
                f"records there. {how_to_get(folder)}"
            )
        downloaded = True
    present = [r for r in needed if record_path(folder, r, "hea").is_file()]
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
