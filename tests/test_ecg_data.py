"""ECG data: the Kaggle CSVs, the MIT-BIH records (wfdb), generated beats, splits, cache."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import wfdb

from common.errors import DataError
from ecg_exps import data as D
from ecg_exps import records as R
from ecg_exps import synthetic as S
from tests import ecg_fixtures as F

SMALL = S.BeatsSpec(n_train=400, n_test=100)


@pytest.fixture(scope="module")
def mitdb_master(tmp_path_factory) -> Path:
    """The fixture records, written once; tests that change them work on a copy."""
    root = tmp_path_factory.mktemp("ecg")
    F.write_mitdb(root)
    return root


@pytest.fixture
def mitdb_root(mitdb_master, tmp_path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(mitdb_master / "mitdb", root / "mitdb")
    return root


def counting_rdrecord(monkeypatch) -> list[str]:
    """Patch wfdb.rdrecord to record which records are read; return the list."""
    calls: list[str] = []
    real = wfdb.rdrecord

    def rdrecord(name, *args, **kwargs):
        calls.append(Path(name).name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(wfdb, "rdrecord", rdrecord)
    return calls


def build_mitdb(root: Path, **kw):
    return D.build_ecg_data("mitdb", root, download=False, **kw)


# --------------------------------------------------------------------------- constants


def test_aami_mapping() -> None:
    groups = {c: {s for s, k in D.AAMI.items() if k == c} for c in D.CLASSES}
    assert groups == {
        "N": set("NLRej"),
        "S": set("AaJS"),
        "V": set("VE"),
        "F": {"F"},
        "Q": set("/fQ"),
    }
    assert D.CLASSES == ("N", "S", "V", "F", "Q")
    assert not {"+", "~", "|", "x", "!", '"', "["} & set(D.AAMI)


def test_record_sets() -> None:
    assert len(D.MITDB_RECORDS) == len(set(D.MITDB_RECORDS)) == 48
    assert len(D.DS1) == len(D.DS2) == 22 and not set(D.DS1) & set(D.DS2)
    assert not set(D.PACED) & (set(D.DS1) | set(D.DS2))
    assert set(D.DS1) | set(D.DS2) | set(D.PACED) == set(D.MITDB_RECORDS)
    assert D.BEAT_LENGTH == 187


@pytest.mark.parametrize(
    ("given", "want"),
    [("MIT-BIH", "mitbih"), ("mit_bih", "mitbih"), ("MITDB", "mitdb"), ("Beats", "beats")],
)
def test_canonical_names(given, want) -> None:
    assert D.canonical_name(given) == want


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(DataError, match="Did you mean 'mitbih'"):
        D.canonical_name("mitbh")


# --------------------------------------------------------------------------- Kaggle CSVs


def test_csv_layout_keeps_the_first_row(tmp_path) -> None:
    frames = F.write_mitbih(tmp_path)
    splits = D.build_ecg_data("mitbih", tmp_path, val_fraction=0)
    train, test = frames["train"], frames["test"]
    assert len(splits.train) == len(train) and len(splits.test) == len(test)
    np.testing.assert_allclose(splits.train.signals, train.iloc[:, :187].to_numpy(), atol=1e-6)
    np.testing.assert_array_equal(splits.train.labels, train[187].to_numpy().astype(int))
    assert splits.train.signals[0, 0] == 0.0 and splits.train.signals[1, 0] > 0  # row 0 kept
    x, y = splits.test[0]
    assert x.shape == (1, 187) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.dim() == 0
    assert splits.labels("train_eval") is splits.train.labels and splits.train_eval is splits.train
    x, y = next(iter(torch.utils.data.DataLoader(splits.train, batch_size=8)))
    assert x.shape == (8, 1, 187) and y.shape == (8,) and y.dtype == torch.int64
    assert splits.meta["synthetic"] is False and splits.meta["dataset"] == "mitbih"
    assert splits.meta["class_counts"]["train"] == dict(zip(D.CLASSES, F.TRAIN_COUNTS, strict=True))
    with pytest.raises(ValueError, match="split must be one of"):
        splits.labels("dev")


def test_mitbih_val_is_stratified_and_n_examples_seeded(tmp_path) -> None:
    F.write_mitbih(tmp_path)
    a = D.build_ecg_data("mitbih", tmp_path, val_fraction=0.25, split_seed=3)
    val = a.meta["class_counts"]["val"]
    for c, n in zip(D.CLASSES, F.TRAIN_COUNTS, strict=True):
        assert abs(val[c] - 0.25 * n) <= 1
    assert a.meta["n_train"] + a.meta["n_val"] == sum(F.TRAIN_COUNTS)
    b = D.build_ecg_data("mitbih", tmp_path, val_fraction=0.25, split_seed=3, n_examples=30)
    c = D.build_ecg_data("mitbih", tmp_path, val_fraction=0.25, split_seed=3, n_examples=50)
    assert len(b.train) == 30 and len(c.train) == 50
    np.testing.assert_array_equal(b.val.signals, a.val.signals)  # val unchanged
    rows = {tuple(r) for r in c.train.signals.tolist()}
    assert all(tuple(r) in rows for r in b.train.signals.tolist())  # nested as n grows
    other = D.build_ecg_data("mitbih", tmp_path, val_fraction=0.25, split_seed=4)
    assert not np.array_equal(other.val.signals, a.val.signals)


def test_balanced_offsets_are_the_course_projects_rows_plus_one() -> None:
    # The course project read the header-less files with pandas' default header=0: the first
    # beat became the column names, so its frame row i is our row i + 1. Its [71829:] and
    # [17956:] are thus our rows from 71830 and 17957.
    assert (D.BALANCED_TRAIN_START, D.BALANCED_TEST_START) == (71829 + 1, 17956 + 1)


def test_balanced_subset_matches_a_header_read_frame(tmp_path, monkeypatch) -> None:
    frames = F.write_mitbih(tmp_path)
    theirs = {"train": 99, "test": 33}  # the course project's offsets, scaled down
    monkeypatch.setattr(D, "BALANCED_TRAIN_START", theirs["train"] + 1)
    monkeypatch.setattr(D, "BALANCED_TEST_START", theirs["test"] + 1)
    splits = D.build_ecg_data("mitbih", tmp_path, balanced=True, val_fraction=0)
    for split, got in (("train", splits.train), ("test", splits.test)):
        path = tmp_path / "mitbih" / f"mitbih_{split}.csv"
        course = pd.read_csv(path).iloc[theirs[split] :]  # as the project read it
        np.testing.assert_allclose(got.signals, course.iloc[:, :187].to_numpy(), atol=1e-6)
        np.testing.assert_array_equal(got.labels, course.iloc[:, 187].to_numpy().astype(int))
        assert len(got) == len(frames[split]) - theirs[split] - 1
    assert splits.meta["balanced"] is True


def test_balanced_needs_the_full_file(tmp_path) -> None:
    F.write_mitbih(tmp_path)
    with pytest.raises(DataError, match="only 140 rows"):
        D.build_ecg_data("mitbih", tmp_path, balanced=True)


def test_missing_csvs_say_how_to_get_them(tmp_path) -> None:
    with pytest.raises(DataError) as e:
        D.build_ecg_data("mitbih", tmp_path, download=True)
    msg = str(e.value)
    assert str(tmp_path / "mitbih") in msg and "mitbih_train.csv" in msg
    assert "kaggle datasets download -d shayanfazeli/heartbeat" in msg and "\n" not in msg


def _corrupt(frame: pd.DataFrame, kind: str) -> pd.DataFrame:
    frame = frame.copy()
    if kind == "187 columns":
        return frame.drop(columns=[100])
    frame[187] = frame[187].astype(object)
    if kind == "label 7":
        frame.iloc[5, 187] = 7.0
    elif kind == "label 1.5":
        frame.iloc[5, 187] = 1.5
    elif kind == "NaN":
        frame[50] = frame[50].astype(object)
        frame.iloc[5, 50] = np.nan
    elif kind == "text":
        frame[50] = frame[50].astype(object)
        frame.iloc[5, 50] = "abc"
    return frame


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        ("187 columns", "has 187 columns"),
        ("label 7", "line 6 has the class 7"),
        ("label 1.5", "line 6 has the class 1.5"),
        ("NaN", "line 6, column 51 is empty"),
        ("text", "line 6, column 51 holds 'abc'"),
    ],
)
def test_bad_csv_names_the_file_and_line(tmp_path, kind, match) -> None:
    frames = F.write_mitbih(tmp_path)
    path = tmp_path / "mitbih" / "mitbih_train.csv"
    F.write_kaggle_csv(path, _corrupt(frames["train"], kind))
    with pytest.raises(DataError, match=match) as e:
        D.build_ecg_data("mitbih", tmp_path)
    assert str(path) in str(e.value) and "shayanfazeli/heartbeat" in str(e.value)


def test_empty_and_ragged_csv(tmp_path) -> None:
    F.write_mitbih(tmp_path)
    path = tmp_path / "mitbih" / "mitbih_test.csv"
    path.write_text("")
    with pytest.raises(DataError, match="it is empty"):
        D.build_ecg_data("mitbih", tmp_path)
    lines = ",".join(["0.5"] * 188) + "\n"
    path.write_text(lines * 3 + ",".join(["0.5"] * 189) + "\n")
    with pytest.raises(DataError, match="line 4"):
        D.build_ecg_data("mitbih", tmp_path)


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("name", "kw", "match"),
    [
        ("mitbih", {"val_fraction": 1.0}, "val_fraction"),
        ("mitbih", {"val_fraction": -0.1}, "val_fraction"),
        ("mitbih", {"split": "interpatient"}, "split='intrapatient'"),
        ("beats", {"split": "inter-patient"}, "split='intrapatient'"),
        ("mitdb", {"split": "leave-one-out"}, "split must be one of"),
        ("mitdb", {"balanced": True}, "balanced=True"),
        ("mitbih", {"n_examples": 0}, "n_examples"),
        ("mitbih", {"split_seed": -1}, "split_seed"),
    ],
)
def test_bad_options(tmp_path, name, kw, match) -> None:
    with pytest.raises(DataError, match=match):
        D.build_ecg_data(name, tmp_path, **kw)


# --------------------------------------------------------------------------- the recipe


def test_segment_beats_follows_the_recipe() -> None:
    fs, n = 360, 360 * 25
    peaks = np.arange(180, n - 180, 288)  # R-R = 0.8 s: T = 100 samples at 125 Hz
    symbols = ["N"] * len(peaks)
    symbols[4] = "+"  # not a beat: skipped, and no peak drawn
    signal = F.spike_train(n, np.delete(peaks, 4), fs)
    rows, labels, keep, _ = D.segment_beats(signal, fs, peaks, symbols)
    assert rows.shape == (len(peaks) - 1, 187) and rows.dtype == np.float32
    assert 4 not in keep and (labels == 0).all()
    assert rows.min() >= 0 and rows.max() <= 1
    assert (rows[:, 0] > 0.85).all()  # every beat starts at its (normalised) R peak
    full = rows[5]
    assert (full[120:] == 0).all() and full[100] > 0.5  # 1.2 T = 120 samples, then zeros
    assert abs(int(np.argmax(full[50:])) + 50 - 100) <= 1  # the next R peak, T later
    # the last beat of the first 10 s window (1250 samples): its next R peak lies in the
    # next window, and its segment runs on into it, not cut short at the window's end
    edge = int(np.flatnonzero(peaks[keep] * 125 / fs > 1250 - 100)[0])
    assert (peaks[keep][edge] * 125 / fs) < 1250
    assert abs(int(np.argmax(rows[edge][50:])) + 50 - 100) <= 1


def test_segment_beats_skips_annotations_outside_the_signal() -> None:
    signal = F.spike_train(3600, np.array([400, 700, 1000, 3500]))
    at = np.array([400, 700, 1000, 3500, 5000])
    rows, labels, keep, cut = D.segment_beats(signal, 360, at, "NVFNN")
    assert list(labels) == [0, 2, 3, 0] and list(keep) == [0, 1, 2, 3]
    # R at 125 Hz sample 1215 of 1250: 35 samples left, then zeros (T = 104: 1.2 T = 125)
    assert (rows[-1, 35:] == 0).all() and rows[-1, 0] > 0.8
    assert (rows[0, 125:] == 0).all() and rows[0, 124] > 0
    assert list(cut) == [False, False, False, True]  # the last beat is marked, not dropped


# --------------------------------------------------------------------------- mitdb


def test_counts_come_from_the_annotations(mitdb_root) -> None:
    splits = build_mitdb(mitdb_root)
    meta = splits.meta
    want: Counter[str] = Counter()
    for record in F.WITH_MLII:
        want += F.fixture_record(record).class_counts()
    got = Counter()
    for part in meta["class_counts"].values():
        got.update(part)
    assert +got == want and set(want) == set(D.CLASSES)
    cut = meta["beats_cut_by_record_end"]  # kept, so the counts above hold; counted
    assert all(isinstance(n, int) and n > 0 for n in cut.values())
    assert meta["n_train"] + meta["n_val"] + meta["n_test"] == sum(want.values())
    assert list(meta["skipped_records"]) == [102] and "MLII" in meta["skipped_records"][102]
    assert set(meta["missing_records"]) == set(D.MITDB_RECORDS) - set(F.RECORDS)
    assert meta["records"]["train"] == sorted(F.WITH_MLII)
    assert meta["sampling_rate"] == 125 and meta["beat_length"] == 187
    assert meta["synthetic"] is False and meta["source"] == str(mitdb_root / "mitdb")
    for part in (splits.train, splits.val, splits.test):
        assert part.signals.shape[1] == 187 and part.signals.dtype == np.float32
        assert part.signals.min() >= 0 and part.signals.max() <= 1
        assert (part.signals[:, 0] > 0.8).all()  # cut from MLII: each starts at an R peak


def test_mlii_is_chosen_by_name(mitdb_master, tmp_path) -> None:
    rec = F.fixture_record(114)
    assert rec.sig_name == ("V5", "MLII")
    swapped = F.FixtureRecord(114, ("MLII", "V5"), rec.signal[:, ::-1].copy(), rec.beats, [])
    F.write_record(tmp_path, swapped)
    a, _ = D.read_record_beats(mitdb_master / "mitdb", 114)
    b, _ = D.read_record_beats(tmp_path, 114)
    np.testing.assert_allclose(a.signals, b.signals, atol=1e-6)
    assert (a.signals[:, 0] > 0.8).all()
    assert list(a.symbols) == [s for _, s in rec.beats]
    assert D.read_record_beats(mitdb_master / "mitdb", 102) == (
        None,
        "no MLII lead (its signals: V5, V2)",
    )


def test_intrapatient_split_is_stratified_and_seeded(mitdb_root) -> None:
    a = build_mitdb(mitdb_root, split_seed=1)
    counts = a.meta["class_counts"]
    for c in D.CLASSES:
        total = counts["train"][c] + counts["val"][c] + counts["test"][c]
        assert abs(counts["test"][c] - D.TEST_FRACTION * total) <= 1
        rest = total - counts["test"][c]
        assert abs(counts["val"][c] - 0.1 * rest) <= 1
    b = build_mitdb(mitdb_root, split_seed=1)
    np.testing.assert_array_equal(a.test.signals, b.test.signals)
    c = build_mitdb(mitdb_root, split_seed=2)
    assert not np.array_equal(a.test.labels, c.test.labels) or not np.array_equal(
        a.test.signals, c.test.signals
    )
    assert a.test.records is not None and len(a.test.records) == len(a.test)


def test_interpatient_split_is_ds1_to_ds2(mitdb_root) -> None:
    splits = build_mitdb(mitdb_root, split="interpatient")
    records = splits.meta["records"]
    assert records["train"] == [101, 106, 114] and records["test"] == [100, 103]
    assert set(records["val"]) <= set(D.DS1)
    assert set(splits.meta["missing_records"]) == set(D.DS1 + D.DS2) - set(F.RECORDS)
    want = sum((F.fixture_record(r).class_counts() for r in (100, 103)), Counter())
    assert +Counter(splits.meta["class_counts"]["test"]) == want
    assert splits.meta["test_fraction"] is None


def test_interpatient_without_ds2_records_is_an_error(tmp_path) -> None:
    F.write_mitdb(tmp_path, records=(101, 107))
    with pytest.raises(DataError, match="None of the DS2 records"):
        build_mitdb(tmp_path, split="interpatient")


def test_no_records_at_all(tmp_path) -> None:
    with pytest.raises(DataError, match=r"download=False.*dl_database\('mitdb'"):
        build_mitdb(tmp_path)


def test_download_fetches_the_missing_records(mitdb_master, tmp_path, monkeypatch) -> None:
    asked = []

    def dl_database(db, dl_dir, records="all", **kw):
        asked.append((db, records))
        for r in (100, 101):
            for ext in ("hea", "dat", "atr"):
                shutil.copy(mitdb_master / "mitdb" / f"{r}.{ext}", Path(dl_dir) / f"{r}.{ext}")

    monkeypatch.setattr(wfdb, "dl_database", dl_database)
    splits = D.build_ecg_data("mitdb", tmp_path, split="interpatient", val_fraction=0)
    assert asked[0][0] == "mitdb" and set(asked[0][1]) == {str(r) for r in D.DS1 + D.DS2}
    assert splits.meta["downloaded"] is True and splits.meta["records"]["test"] == [100]
    assert sorted(p.name for p in (tmp_path / "mitdb").iterdir()) == [
        f"{r}.{e}" for r in (100, 101) for e in ("atr", "dat", "hea")
    ]  # moved in, no temporary folder left


def test_offline_download_is_one_data_error(mitdb_root, monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(wfdb, "dl_database", offline)
    with pytest.raises(DataError, match="offline") as e:
        D.build_ecg_data("mitdb", mitdb_root)
    assert "download=False" in str(e.value) and "\n" not in str(e.value)
    assert not [p for p in (mitdb_root / "mitdb").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    ("damage", "file"),
    [
        ("delete", "dat"),
        ("truncate", "dat"),
        ("garbage", "atr"),
        ("truncate", "atr"),
        ("delete", "atr"),
        ("garbage", "hea"),
    ],
)
def test_damaged_record_names_the_file(mitdb_root, damage, file) -> None:
    path = mitdb_root / "mitdb" / f"106.{file}"
    if damage == "delete":
        path.unlink()
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[: -301 if file == "dat" else -5])
    elif file == "atr":  # parses as 39 N beats, but lacks the end-of-file marker
        path.write_bytes(b"\xff\x07" * 40)
    else:
        path.write_text("106 two 360 14400\n")
    with pytest.raises(DataError, match="Re-download record 106") as e:
        build_mitdb(mitdb_root)
    assert str(path) in str(e.value)


# --------------------------------------------------------------------------- cache


def test_cache_is_reused(mitdb_root, monkeypatch) -> None:
    first = build_mitdb(mitdb_root)

    def refuse(*args, **kwargs):
        raise AssertionError("read a record again")

    monkeypatch.setattr(wfdb, "rdrecord", refuse)
    second = build_mitdb(mitdb_root)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(first, split).signals, getattr(second, split).signals)
        np.testing.assert_array_equal(first.labels(split), second.labels(split))
    assert second.meta == first.meta


def checksums_match_the_samples(folder, record: int) -> None:
    """Rewrites the header's checksum of each signal to its samples' (an intended edit)."""
    import wfdb

    hea = folder / f"{record}.hea"
    st = hea.stat()
    rec = wfdb.rdrecord(str(folder / str(record)), physical=False)
    sums = [int(np.sum(rec.d_signal[:, i], dtype=np.int64)) for i in range(rec.n_sig)]
    lines = hea.read_text().splitlines(keepends=True)
    for i, total in enumerate(sums):  # signal lines: file format gain bits zero init SUM ...
        fields = lines[1 + i].split(" ")
        fields[6] = str((total + 32768) % 65536 - 32768)
        lines[1 + i] = " ".join(fields)
    hea.write_text("".join(lines))
    os.utime(hea, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_cache_is_keyed_on_the_files_contents_not_their_times(mitdb_root, monkeypatch) -> None:
    first = build_mitdb(mitdb_root)
    atr = mitdb_root / "mitdb" / "101.atr"
    st = atr.stat()
    os.utime(atr, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched, not changed
    calls = counting_rdrecord(monkeypatch)
    build_mitdb(mitdb_root)
    assert calls == []
    # a same-size edit with its time restored (the old key, size and mtime, missed it)
    dat = mitdb_root / "mitdb" / "101.dat"
    st, data = dat.stat(), bytearray(dat.read_bytes())
    data[3000:9000] = bytes(6000)  # a flat stretch of signal
    dat.write_bytes(bytes(data))
    os.utime(dat, ns=(st.st_atime_ns, st.st_mtime_ns))
    checksums_match_the_samples(mitdb_root / "mitdb", 101)  # an edit, not damage
    calls.clear()  # the rewrite's own read
    second = build_mitdb(mitdb_root)
    assert calls == ["101"]
    assert any(
        not np.array_equal(getattr(first, s).signals, getattr(second, s).signals)
        for s in ("train", "val", "test")
    )


@pytest.mark.parametrize("damage", ["garbage", "checksum"])
def test_damaged_cache_is_recomputed(mitdb_root, monkeypatch, damage) -> None:
    cache = mitdb_root / ".cache" / "ecg"
    first = build_mitdb(mitdb_root)
    path = D.cache_file(mitdb_root / "mitdb", 103, cache)
    if damage == "garbage":
        path.write_bytes(path.read_bytes()[:200])
    else:  # a valid archive whose arrays no longer match their stored digest
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["labels"] = np.zeros_like(arrays["labels"])
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    calls = counting_rdrecord(monkeypatch)
    second = build_mitdb(mitdb_root)
    assert calls == ["103"]
    np.testing.assert_array_equal(first.test.labels, second.test.labels)
    assert R._load(path, R._cache_key(mitdb_root / "mitdb", 103), 103) is not None  # rewritten


def test_unwritable_cache_is_skipped(mitdb_root) -> None:
    blocker = mitdb_root / "not-a-folder"
    blocker.write_text("x")
    splits = build_mitdb(mitdb_root, cache_dir=blocker / "cache")
    assert splits.meta["n_test"] > 0 and blocker.is_file()


# --------------------------------------------------------------------------- generated beats


def test_generated_beats_are_a_function_of_the_spec(tmp_path) -> None:
    a, b = S.generate_beats(SMALL), S.generate_beats(SMALL)
    for split in a:
        np.testing.assert_array_equal(a[split][0], b[split][0])
        np.testing.assert_array_equal(a[split][1], b[split][1])
    S.ensure_beats(tmp_path / "x", SMALL)
    S.ensure_beats(tmp_path / "y", SMALL)
    for name in S.SPLIT_FILES.values():
        assert (tmp_path / "x/beats" / name).read_bytes() == (
            tmp_path / "y/beats" / name
        ).read_bytes()
    other = S.generate_beats(S.BeatsSpec(n_train=400, n_test=100, seed=1))
    assert not np.array_equal(other["train"][0], a["train"][0])


def test_generated_beats_load_as_a_labelled_synthetic_set(tmp_path) -> None:
    splits = D.build_ecg_data("beats", tmp_path, beats_spec=SMALL)
    meta = splits.meta
    assert meta["synthetic"] is True and meta["dataset"] == "beats" and meta["beats"]["seed"] == 0
    assert meta["n_train"] + meta["n_val"] == 400 and meta["n_test"] == 100
    for split in ("train", "val", "test"):
        assert all(n > 0 for n in meta["class_counts"][split].values())
        x = getattr(splits, split).signals
        assert x.shape[1] == 187 and x.min() >= 0 and x.max() <= 1
    assert (splits.train.signals[:, -20:] == 0).all()  # zero-padded like the Kaggle rows
    want = SMALL.counts(100)
    assert list(meta["class_counts"]["test"].values()) == list(want)
    assert want[0] == 50 and sum(want) == 100


def test_default_beats_are_imbalanced_and_not_trivial(tmp_path) -> None:
    from sklearn.linear_model import LogisticRegression

    splits = D.build_ecg_data("beats", tmp_path, val_fraction=0)
    counts = splits.meta["class_counts"]
    assert sum(counts["train"].values()) == 3000 and sum(counts["test"].values()) == 750
    assert counts["train"]["N"] == 1500 and counts["train"]["F"] == 300
    clf = LogisticRegression(max_iter=300).fit(splits.train.signals, splits.train.labels)
    accuracy = clf.score(splits.test.signals, splits.test.labels)
    assert 0.7 < accuracy < 0.97  # learnable, but no linear read-out separates the classes


@pytest.mark.parametrize("damage", ["truncate", "delete", "marker", "spec"])
def test_damaged_or_other_beats_are_generated_again(tmp_path, damage) -> None:
    folder = S.ensure_beats(tmp_path, SMALL)
    train = folder / S.SPLIT_FILES["train"]
    want = train.read_bytes()
    spec = SMALL
    if damage == "truncate":
        train.write_bytes(want[: len(want) // 2])
    elif damage == "delete":
        (folder / S.SPLIT_FILES["test"]).unlink()
    elif damage == "marker":
        (folder / "beats_spec.json").write_text("{")
    else:
        spec = S.BeatsSpec(n_train=400, n_test=100, seed=5)
    S.ensure_beats(tmp_path, spec)
    if damage == "spec":
        assert train.read_bytes() != want
    else:
        assert train.read_bytes() == want
    splits = D.build_ecg_data("beats", tmp_path, beats_spec=spec)
    assert splits.meta["n_test"] == 100
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_intact_beats_are_not_rewritten(tmp_path) -> None:
    folder = S.ensure_beats(tmp_path, SMALL)
    stamps = [(folder / f).stat().st_mtime_ns for f in S.SPLIT_FILES.values()]
    S.ensure_beats(tmp_path, SMALL)
    assert [(folder / f).stat().st_mtime_ns for f in S.SPLIT_FILES.values()] == stamps


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda lines: ["106 2 0 14400", *lines[1:]], "sampling frequency is 0 Hz"),
        (lambda lines: ["106 2 -360 14400", *lines[1:]], "sampling frequency is -360 Hz"),
        (lambda lines: ["106 2 1e9 14400", *lines[1:]], "sampling frequency is 1e+09 Hz"),
        (lambda lines: ["106 2 100 14400", *lines[1:]], "sampling frequency is 100 Hz"),
        (lambda lines: ["106 2 36O 14400", *lines[1:]], "sampling frequency is nan Hz"),
        (lambda lines: ["106 2 360 1000", *lines[1:]], "number of samples is 1000"),
        (
            lambda lines: [lines[0], lines[1].replace("3720.0000000000055", "-200"), *lines[2:]],
            "the MLII lead's gain is -200",  # 0 is WFDB's default, 200: allowed
        ),
    ],
)
def test_a_header_the_recipe_cannot_use_names_the_record_and_field(mitdb_root, edit, says):
    # wfdb took -360 for its default 250 Hz and 0 as a division by zero; 1e9 trained on noise
    hea = mitdb_root / "mitdb" / "106.hea"
    hea.write_text("\n".join(edit(hea.read_text().splitlines())) + "\n")
    with pytest.raises(DataError, match="Re-download record 106") as e:
        build_mitdb(mitdb_root)
    assert str(hea) in str(e.value) and says in str(e.value)


@pytest.mark.parametrize("name", ["../../beats", "/data/mitdb", "mitdb/", "beats.csv"])
def test_a_data_name_with_path_parts_is_refused_not_normalised_away(name):
    with pytest.raises(DataError, match="is not a data set's name"):
        D.canonical_name(name)
    assert D.canonical_name("MIT-BIH") == "mitbih" and D.canonical_name(" MITDB ") == "mitdb"
