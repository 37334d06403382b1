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

This module holds the names, the loaders and the splits' assembly; the records are read by
:mod:`ecg_exps.records`, the CSVs by :mod:`ecg_exps.kaggle_csv`, and the beats' dataset and
stratified split are :mod:`ecg_exps.beats`'.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import DataError  # DataError re-exported
from common.splits import SPLITS, Splits, check_split_options, seeded_subset
from ecg_exps import synthetic
from ecg_exps.beats import BeatDataset, class_counts, stratified_split  # re-exported
from ecg_exps.kaggle_csv import (  # re-exported: the Kaggle files and their reader
    KAGGLE_SET,
    MITBIH_FILES,
    balanced_rows,
    mitbih_missing,
    read_beats_csv,
    read_csv_pair,
)
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
#: ``balanced=True`` keeps the Kaggle rows from these (0-based, header-less) row numbers on:
#: the SAM course project's ``[71829:]`` / ``[17956:]`` of frames read with a header row.
#: It read the header-less CSVs with pandas' default ``header=0``, which takes the first
#: beat for column names, so its frame row i is the file's row i + 1. On the Kaggle files
#: (listed class by class, N first; 72471 and 18118 N beats per their published counts)
#: these are the last 641 (train) and 161 (test) N beats and every S, V, F and Q beat.
BALANCED_TRAIN_START = 71830
BALANCED_TEST_START = 17957


# --------------------------------------------------------------------------- names


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
        raise mitbih_missing(folder, lacking)
    fix = (
        f"Replace it with the original from the Kaggle data set {KAGGLE_SET} "
        f"(heartbeat.zip, unzipped into {folder}/)."
    )
    arrays = read_csv_pair(folder, MITBIH_FILES, fix)
    if r.balanced:
        train_file, test_file = folder / MITBIH_FILES["train"], folder / MITBIH_FILES["test"]
        arrays["train"] = balanced_rows(arrays["train"], BALANCED_TRAIN_START, train_file)
        arrays["test"] = balanced_rows(arrays["test"], BALANCED_TEST_START, test_file)
    return _csv_pool(arrays, folder, MITBIH_FILES, {})


def _load_beats(r: _Request) -> _Pool:
    """The generated beats (ecg_exps.synthetic), in the Kaggle layout."""
    spec = r.beats_spec if r.beats_spec is not None else synthetic.BeatsSpec()
    folder = synthetic.ensure_beats(r.root, spec)
    arrays = read_csv_pair(
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
        split: ``mitdb``: ``"intrapatient"`` or ``"interpatient"`` (see the module's
            docstring); the CSV sets take only ``"intrapatient"`` (their own files).
        val_fraction: stratified part of the training beats held out as ``val``; 0: none.
        split_seed: seeds ``val``, the intra-patient ``test`` and the ``n_examples`` subset.
        n_examples: keep a random n of the training part (the first n of a ``split_seed``
            permutation, nested as n grows); ``val`` and ``test`` are unchanged.
        download: ``mitdb``: fetch missing records with ``wfdb.dl_database`` (else those
            present are used, the missing named in ``meta["missing_records"]``).
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
    options = {"val_fraction": val_fraction, "split_seed": split_seed, "n_examples": n_examples}
    splits.meta = _splits_meta(splits, key, source, split, options, balanced, meta)
    return splits


def _splits_meta(
    splits: Splits,
    key: str,
    source: Path,
    split: str,
    options: dict[str, Any],
    balanced: bool,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """:func:`build_ecg_data`'s ``meta``: the splits' sizes and class counts, the options
    (``options``: ``val_fraction``, ``split_seed``, ``n_examples``) and the loader's ``meta``."""
    parts = {"train": splits.train, "val": splits.val, "test": splits.test}
    out = {
        "dataset": key,
        "synthetic": key == synthetic.NAME,
        "source": str(source),
        "split": split,
        "class_names": list(CLASSES),
        "class_counts": {s: class_counts(d.labels) for s, d in parts.items()},
        "n_train": len(splits.train),
        "n_val": len(splits.val),
        "n_test": len(splits.test),
        **options,
        "balanced": bool(balanced),
        "sampling_rate": SAMPLING_RATE,
        "beat_length": BEAT_LENGTH,
        "num_classes": len(CLASSES),
        **meta,
    }
    if key == "mitdb":
        out["records"] = {s: _records_of(d) for s, d in parts.items()}
    return out


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
