"""The real data shipped with the package: checksums, counts against the published ones,
and the installer's refusals (edited, damaged, unwritable)."""

from __future__ import annotations

import collections
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from common.embedded import MARKER, SOURCE, SUMS, EmbeddedSet, embedded_sets
from common.errors import DataError, UserError
from common.io import sha256_file
from ecg_exps import data as ecg_data
from graph_exps import data as graph_data

ROOT = Path(__file__).resolve().parents[1]
EVERY_SET = [
    embedded
    for domain in ("image_exps", "text_exps", "graph_exps", "ecg_exps")
    for embedded in embedded_sets(ROOT / domain).values()
]


def test_the_domains_ship_real_sets():
    names = {s.name for s in EVERY_SET}
    assert {"MUTAG", "PTC_MR", "mitdb"} <= names


@pytest.mark.parametrize(
    "embedded", EVERY_SET, ids=lambda s: s.folder.parent.parent.name + ":" + s.name
)
def test_every_embedded_file_is_listed_verified_and_attributed(embedded: EmbeddedSet):
    listed = embedded.verify()
    on_disk = {p.name for p in embedded.folder.iterdir() if p.name not in (SUMS, SOURCE)}
    assert set(listed) == on_disk  # nothing shipped unchecked
    note = (embedded.folder / SOURCE).read_text(encoding="utf-8")
    for heading in ("What", "How obtained", "Checksums"):
        assert f"**{heading}" in note
    assert "Licence" in note or "Terms" in note


# published statistics: TU collection (graphs, positive / negative) and PhysioNet's mitdb
# record directory (beats per AAMI class; record 100's 33 'A' beats are S)
@pytest.mark.parametrize(
    ("name", "graphs", "nodes", "positive", "negative"),
    [("MUTAG", 188, 3371, 125, 63), ("PTC_MR", 344, 4915, 152, 192)],
)
def test_tu_sets_match_the_collection(tmp_path, name, graphs, nodes, positive, negative):
    splits = graph_data.build_graph_data(name, tmp_path, download=False)
    assert splits.meta["n_graphs"] == graphs and splits.meta["embedded"]
    raw_labels = np.loadtxt(tmp_path / name / "raw" / f"{name}_graph_labels.txt", dtype=int)
    assert (raw_labels == 1).sum() == positive and (raw_labels == -1).sum() == negative
    assert round(splits.meta["mean_nodes"] * graphs) == nodes


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (100, {"N": 2239, "S": 33, "V": 1, "F": 0, "Q": 0}),
        (208, {"N": 1586, "S": 2, "V": 992, "F": 373, "Q": 2}),
    ],
)
def test_mitdb_records_have_physionets_beats(tmp_path, record, expected):
    splits = ecg_data.build_ecg_data("mitdb", tmp_path, records=[record], download=False)
    counts = collections.Counter()
    for part in splits.meta["class_counts"].values():
        counts.update(part)
    assert dict(counts) == expected
    assert splits.meta["records"]["test"] == [record]


def test_embedded_records_are_installed_only_when_asked_for(tmp_path):
    # a split over the whole database is not silently run on the two shipped records
    with pytest.raises(DataError, match="No MIT-BIH Arrhythmia Database record"):
        ecg_data.build_ecg_data("mitdb", tmp_path, download=False)
    assert not (tmp_path / "mitdb" / "100.dat").exists()


def test_records_outside_the_split_are_refused(tmp_path):
    with pytest.raises(DataError, match="999 are not records"):
        ecg_data.build_ecg_data("mitdb", tmp_path, records=[100, 999], download=False)
    with pytest.raises(DataError, match="name='mitdb'"):
        ecg_data.build_ecg_data("beats", tmp_path, records=[100])


# --------------------------------------------------------------------- the installer
@pytest.fixture
def copy_of_mutag(tmp_path) -> EmbeddedSet:
    folder = tmp_path / "embedded" / "MUTAG"
    shutil.copytree(graph_data.EMBEDDED["MUTAG"].folder, folder)
    return EmbeddedSet(folder)


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


def test_a_damaged_embedded_file_is_refused_by_name(copy_of_mutag, tmp_path):
    _flip_a_byte(copy_of_mutag.folder / "MUTAG_A.txt")
    with pytest.raises(DataError, match=r"MUTAG_A\.txt does not match its checksum"):
        copy_of_mutag.install(tmp_path / "dest")
    assert not (tmp_path / "dest").exists()  # nothing half-installed


def test_a_missing_embedded_file_is_named(copy_of_mutag, tmp_path):
    (copy_of_mutag.folder / "MUTAG_graph_labels.txt").unlink()
    with pytest.raises(DataError, match=r"MUTAG_graph_labels\.txt is missing"):
        copy_of_mutag.install(tmp_path / "dest")


def test_a_malformed_checksum_list_is_refused(copy_of_mutag, tmp_path):
    (copy_of_mutag.folder / SUMS).write_text("not a checksum line\n", encoding="utf-8")
    with pytest.raises(DataError, match="malformed line"):
        copy_of_mutag.install(tmp_path / "dest")


def test_install_copies_once_and_reverifies_its_copies(copy_of_mutag, tmp_path):
    dest = tmp_path / "dest"
    assert len(copy_of_mutag.install(dest)) == 6
    assert copy_of_mutag.install(dest) == []  # second call: nothing to copy
    for name, digest in copy_of_mutag.checksums().items():
        assert sha256_file(dest / name) == digest
    _flip_a_byte(dest / "MUTAG_node_labels.txt")
    with pytest.raises(DataError, match="has changed since"):
        copy_of_mutag.install(dest)
    (dest / "MUTAG_node_labels.txt").unlink()  # the fix the message gives
    assert copy_of_mutag.install(dest) == ["MUTAG_node_labels.txt"]


def test_the_users_own_files_are_never_mixed_with_the_embedded_ones(copy_of_mutag, tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "MUTAG_A.txt").write_text("1, 2\n2, 1\n", encoding="utf-8")  # a set of their own
    assert copy_of_mutag.install(dest) == []
    assert sorted(p.name for p in dest.iterdir()) == ["MUTAG_A.txt"]
    assert (dest / "MUTAG_A.txt").read_text(encoding="utf-8") == "1, 2\n2, 1\n"


def test_an_edited_install_of_a_graph_set_fails_the_loader(tmp_path):
    graph_data.build_graph_data("MUTAG", tmp_path, download=False)
    _flip_a_byte(tmp_path / "MUTAG" / "raw" / "MUTAG_A.txt")
    with pytest.raises(DataError, match="has changed since"):
        graph_data.build_graph_data("MUTAG", tmp_path, download=False)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_root_is_one_message(copy_of_mutag, tmp_path):
    dest = tmp_path / "ro"
    dest.mkdir()
    dest.chmod(0o500)
    try:
        with pytest.raises(DataError, match=r"make data\.root writable"):
            copy_of_mutag.install(dest)
    finally:
        dest.chmod(0o700)


def test_the_marker_is_verified(copy_of_mutag, tmp_path):
    dest = tmp_path / "dest"
    copy_of_mutag.install(dest)
    _flip_a_byte(dest / MARKER)
    with pytest.raises(UserError, match="damaged"):
        copy_of_mutag.install(dest)
