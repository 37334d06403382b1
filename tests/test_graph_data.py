"""graph_exps.data: PyG's TUDataset on TU raw files written by the fixtures, folds, sbm."""

from __future__ import annotations

import dataclasses
import shutil
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset
from torch_geometric.data import Batch
from torch_geometric.datasets import TUDataset

from common.errors import UserError
from graph_exps.data import (
    SPLITS,
    TU_URL,
    DataError,
    SBMSpec,
    build_graph_data,
    canonical_name,
    collate,
    expected_mean_degree,
    fold_indices,
    graph_labels,
    sbm_block_sizes,
    sbm_edge_probabilities,
    write_sbm_dataset,
)
from tests.graph_fixtures import TOY, toy_graphs, write_tu_dataset, zip_tu_dataset

SMALL_SBM = SBMSpec(n_graphs=60, nodes=(16, 24), density=0.25, ratio=6.0, seed=3)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Nothing here may download: PyG's download would be the only way to the network."""

    def refuse(self):
        raise AssertionError(f"TUDataset tried to download {self.name}")

    monkeypatch.setattr(TUDataset, "download", refuse)


@pytest.fixture(scope="module")
def sbm_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("sbm")
    build_graph_data("sbm", root, sbm=SMALL_SBM, download=False)
    return root


def all_graphs(splits):
    """{original index: Data} over the three splits, and each split's original indices."""
    out, parts = {}, {}
    for part in ("train", "val", "test"):
        ds = getattr(splits, part)
        parts[part] = list(ds.indices())
        for i, k in enumerate(parts[part]):
            out[k] = ds[i]
    return out, parts


# --------------------------------------------------------------------------- TU loader


def test_reads_tu_files_with_node_labels(tmp_path):
    write_tu_dataset(tmp_path)
    splits = build_graph_data(TOY, tmp_path, download=False)
    graphs, parts = all_graphs(splits)
    expected = toy_graphs()
    assert sorted(graphs) == list(range(20))
    assert splits.num_classes == 2 and splits.inputs["num_features"] == 3
    assert splits.meta["features"] == "node labels" and not splits.meta["synthetic"]
    assert splits.meta["n_graphs"] == 20
    assert [splits.meta[f"n_{p}"] for p in parts] == [len(v) for v in parts.values()] == [16, 2, 2]
    for k, data in graphs.items():
        want = expected[k]
        assert data.num_nodes == want.n and int(data.y) == want.label  # -1/1 -> 0/1
        assert data.edge_index.shape[1] == 2 * len(want.edges)
        labels = torch.tensor(want.node_labels) - 1  # 1..3 -> 0..2
        assert torch.equal(data.x, torch.nn.functional.one_hot(labels, 3).float())


def test_degree_one_hot_without_node_labels(tmp_path):
    write_tu_dataset(tmp_path, node_labels=False)
    splits = build_graph_data(TOY, tmp_path, download=False, max_degree=3)
    assert splits.meta["features"] == "degree one-hot" and splits.inputs["num_features"] == 4
    graphs, _ = all_graphs(splits)
    capped = False
    for k, data in graphs.items():
        deg = torch.tensor(toy_graphs()[k].degrees).clamp(max=3)
        capped |= bool((torch.tensor(toy_graphs()[k].degrees) > 3).any())
        assert torch.equal(data.x, torch.nn.functional.one_hot(deg, 4).float())
    assert capped  # the stars' centres exceed max_degree and land in the last column


def test_node_attributes_when_no_labels(tmp_path):
    write_tu_dataset(tmp_path, node_labels=False, node_attributes=True)
    splits = build_graph_data(TOY, tmp_path, download=False)
    assert splits.meta["features"] == "node attributes" and splits.inputs["num_features"] == 2
    graphs, _ = all_graphs(splits)
    assert torch.allclose(graphs[3].x[:, 1], torch.tensor(toy_graphs()[3].degrees).float())


def test_names_are_canonical_and_zip_is_extracted(tmp_path):
    assert canonical_name("imdb_binary") == "IMDB-BINARY" and canonical_name("SBM") == "sbm"
    src = write_tu_dataset(tmp_path / "src")
    zip_tu_dataset(src, tmp_path / "data" / f"{TOY}.zip")
    splits = build_graph_data(TOY, tmp_path / "data", download=False)
    assert splits.meta["n_graphs"] == 20
    assert (tmp_path / "data" / TOY / "raw" / f"{TOY}_A.txt").is_file()


def test_missing_data_offline_names_the_raw_files(tmp_path):
    # PROTEINS: MUTAG and PTC_MR ship with the package, so they are never missing
    with pytest.raises(DataError) as e:
        build_graph_data("proteins", tmp_path, download=False)
    msg = str(e.value)
    raw = tmp_path / "PROTEINS" / "raw"
    for f in ("PROTEINS_A.txt", "PROTEINS_graph_indicator.txt", "PROTEINS_graph_labels.txt"):
        assert f in msg
    assert "PROTEINS_node_labels.txt" in msg and str(raw) in msg
    assert f"{TU_URL}/PROTEINS.zip" in msg
    assert isinstance(e.value, UserError)

    with pytest.raises(DataError, match="Did you mean 'MUTAG'"):
        build_graph_data("MUTAGG", tmp_path, download=False)


def test_failed_download_is_reported(tmp_path):
    with pytest.raises(DataError, match=rf"Downloading {TU_URL}/PROTEINS\.zip failed"):
        build_graph_data("proteins", tmp_path, download=True)  # no_network refuses it


def test_missing_graph_labels_is_named(tmp_path):
    raw = write_tu_dataset(tmp_path)
    (raw / f"{TOY}_graph_labels.txt").unlink()
    with pytest.raises(DataError, match=r"missing: TOY_graph_labels\.txt"):
        build_graph_data(TOY, tmp_path, download=False)


@pytest.mark.parametrize(
    ("kind", "edit", "why"),
    [
        ("A", lambda s: s.replace("2, 1\n", "2, x\n", 1), "ValueError"),
        ("A", lambda s: s + "1, 9999\n", "node ids must be in"),
        ("A", lambda s: s + "1, 7\n", "two different graphs"),
        ("graph_labels", lambda s: s[: s.rindex("\n", 0, -1) + 1], "expected 20 lines"),
        ("graph_indicator", lambda s: s.rstrip("\n"), "newline"),
        ("node_labels", lambda s: "", "empty"),
    ],
)
def test_corrupt_raw_file_is_named(tmp_path, kind, edit, why):
    raw = write_tu_dataset(tmp_path)
    path = raw / f"{TOY}_{kind}.txt"
    path.write_text(edit(path.read_text()))
    with pytest.raises(DataError) as e:
        build_graph_data(TOY, tmp_path, download=False)
    assert str(path) in str(e.value) and why in str(e.value)


def test_bad_options(tmp_path):
    write_tu_dataset(tmp_path)
    with pytest.raises(DataError, match=r"fold must be in 0\.\.9"):
        build_graph_data(TOY, tmp_path, fold=10, download=False)
    with pytest.raises(DataError, match=r"fold must be in 0\.\.4"):
        fold_indices([0, 1] * 10, fold=-1, n_folds=5)
    with pytest.raises(DataError, match="n_folds"):
        fold_indices([0, 1] * 3, n_folds=7)
    with pytest.raises(DataError, match="max_degree"):
        build_graph_data(TOY, tmp_path, max_degree=0, download=False)
    with pytest.raises(DataError, match="split_seed"):
        build_graph_data(TOY, tmp_path, split_seed=-1, download=False)


# --------------------------------------------------------------------------- folds


def imbalanced_labels(n=137):
    rng = np.random.default_rng(0)
    return rng.choice(3, size=n, p=[0.5, 0.3, 0.2])


def test_folds_are_deterministic_and_partition_the_data():
    y = imbalanced_labels()
    tests = []
    for fold in range(10):
        a = fold_indices(y, fold=fold, seed=5)
        b = fold_indices(y, fold=fold, seed=5)
        assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
        train, val, test = a
        assert len(set(train) | set(val) | set(test)) == len(y)
        assert not (set(train) & set(val) or set(train) & set(test) or set(val) & set(test))
        tests.append(test)
    everything = np.concatenate(tests)
    assert sorted(everything.tolist()) == list(range(len(y)))  # test folds partition the data
    other = fold_indices(y, fold=0, seed=6)[2]
    assert not np.array_equal(other, tests[0])


def test_folds_and_validation_are_stratified():
    y = imbalanced_labels()
    counts = Counter(y.tolist())
    for fold in range(10):
        train, val, test = fold_indices(y, fold=fold, val_fraction=0.2, seed=1)
        got = Counter(y[test].tolist())
        for c, n in counts.items():
            assert abs(got[c] - n / 10) <= 1
        rest = np.concatenate([train, val])
        got_val = Counter(y[val].tolist())
        for c in counts:
            assert abs(got_val[c] - 0.2 * np.sum(y[rest] == c)) <= 1


def test_build_uses_the_folds(tmp_path):
    write_tu_dataset(tmp_path)
    y = [g.label for g in toy_graphs()]
    for fold in (0, 7):
        splits = build_graph_data(TOY, tmp_path, fold=fold, split_seed=2, download=False)
        want = fold_indices(y, fold=fold, seed=2)
        got = [list(getattr(splits, p).indices()) for p in ("train", "val", "test")]
        assert got == [w.tolist() for w in want]
        assert splits.meta["fold"] == fold
        assert sorted(y[i] for i in got[2]) == [0, 1]  # one graph per class in each fold
    none = build_graph_data(TOY, tmp_path, val_fraction=0.0, download=False)
    assert len(none.val) == 0 and len(none.train) == 18


def test_collate_gives_pyg_batches(tmp_path):
    write_tu_dataset(tmp_path, node_labels=False)
    splits = build_graph_data(TOY, tmp_path, download=False)
    loader = DataLoader(splits.train, batch_size=5, collate_fn=collate(splits.train))
    sizes = []
    for batch in loader:
        assert isinstance(batch, Batch)
        assert batch.y.shape == (batch.num_graphs,)
        assert batch.x.shape == (batch.num_nodes, splits.inputs["num_features"])
        assert int(batch.batch.max()) + 1 == batch.num_graphs
        sizes.append(batch.num_graphs)
    assert sizes == [5, 5, 5, 1]


# --------------------------------------------------------------------------- sbm


def test_sbm_probabilities_give_equal_expected_density():
    for n in (16, 21, 40):
        for k in (1, 2, 3, 4):
            sizes = sbm_block_sizes(n, k)
            assert sum(sizes) == n and max(sizes) - min(sizes) <= 1
            p_in, p_out = sbm_edge_probabilities(sizes, 0.2, 8.0)
            total = n * (n - 1) / 2
            within = sum(s * (s - 1) / 2 for s in sizes)
            assert p_in * within + p_out * (total - within) == pytest.approx(0.2 * total)
            if k > 1:
                assert p_in == pytest.approx(8.0 * p_out)
    with pytest.raises(DataError, match="p_in"):
        sbm_edge_probabilities(sbm_block_sizes(40, 4), 0.5, 50.0)
    with pytest.raises(DataError, match="2 nodes per community"):
        SBMSpec(nodes=(6, 10), communities=(2, 4))
    with pytest.raises(DataError, match=r"p_in=.* for blocks \[3, 3, 2, 2\]"):
        SBMSpec(nodes=(10, 40), density=0.25, ratio=12.0)  # the small graphs are infeasible
    with pytest.raises(DataError, match="distinct"):
        SBMSpec(communities=(3, 3))


def test_sbm_is_deterministic_tu_format(tmp_path):
    small = {"n_graphs": 12, "nodes": (8, 12), "density": 0.2, "ratio": 4.0}
    a = write_sbm_dataset(tmp_path / "a", **small, seed=1)
    b = write_sbm_dataset(tmp_path / "b", **small, seed=1)
    c = write_sbm_dataset(tmp_path / "c", **small, seed=2)
    assert a == tmp_path / "a" / "sbm" / "raw"
    names = sorted(p.name for p in a.iterdir())
    assert names == [
        "sbm_A.txt",
        "sbm_graph_indicator.txt",
        "sbm_graph_labels.txt",
        "sbm_spec.json",
    ]
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "sbm_A.txt").read_bytes() != (c / "sbm_A.txt").read_bytes()
    first = (a / "sbm_A.txt").read_text().splitlines()[0]
    assert [int(v) for v in first.split(", ")] == [1, int(first.split(", ")[1])]
    ds = TUDataset(str(tmp_path / "a"), "sbm")  # PyG's own loader, offline
    assert len(ds) == 12 and sorted(Counter(ds.y.tolist()).values()) == [6, 6]
    for data in ds:
        assert 8 <= data.num_nodes <= 12 and data.is_undirected()


def test_sbm_build_meta_and_regeneration(sbm_root, tmp_path):
    splits = build_graph_data("sbm", sbm_root, sbm=SMALL_SBM, download=False)
    assert splits.meta["synthetic"] is True and splits.meta["dataset"] == "sbm"
    assert splits.meta["features"] == "degree one-hot" and splits.meta["n_graphs"] == 60
    assert splits.meta["sbm"]["blocks"] == [2, 4]
    assert splits.meta["classes"] == ["2 communities", "4 communities"]
    assert splits.meta["n_train"] + splits.meta["n_val"] + splits.meta["n_test"] == 60
    # a changed spec is written and processed again, without touching the shared root
    root = tmp_path / "copy"
    shutil.copytree(sbm_root, root)
    bigger = dataclasses.replace(SMALL_SBM, n_graphs=70)
    assert build_graph_data("sbm", root, sbm=bigger).meta["n_graphs"] == 70


def test_sbm_classes_have_equal_mean_degree(sbm_root):
    ds = TUDataset(str(sbm_root), "sbm")
    per_class: dict[int, list[float]] = {0: [], 1: [], "expected": []}
    for data in ds:
        n = data.num_nodes
        per_class[int(data.y)].append(data.num_edges / n)  # mean degree = 2|E| / n
        per_class["expected"].append(SMALL_SBM.density * (n - 1))
    means = {k: float(np.mean(v)) for k, v in per_class.items()}
    assert means["expected"] == pytest.approx(expected_mean_degree(SMALL_SBM), rel=0.1)
    for c in (0, 1):
        assert means[c] == pytest.approx(means["expected"], rel=0.08)
    assert means[0] == pytest.approx(means[1], rel=0.1)


# --------------------------------------------------------------------------- split seed


def split_indices(splits) -> list[list[int]]:
    return [list(getattr(splits, p).indices()) for p in ("train", "val", "test")]


def test_split_depends_only_on_split_seed(tmp_path):
    write_tu_dataset(tmp_path, n_graphs=40)

    def build(run_seed, **kw):  # the global RNGs seeded as a run with run_seed would
        torch.manual_seed(run_seed)
        np.random.seed(run_seed)
        return build_graph_data(TOY, tmp_path, n_folds=5, download=False, **kw)

    a, b, c = build(0), build(1), build(0, split_seed=4)
    assert split_indices(a) == split_indices(b)
    assert all(np.array_equal(a.labels(p), b.labels(p)) for p in SPLITS)
    assert split_indices(a)[2] != split_indices(c)[2]  # another test fold
    assert split_indices(a)[1] != split_indices(c)[1]  # and validation part
    assert (a.meta["split_seed"], c.meta["split_seed"]) == (0, 4)
    with pytest.raises(TypeError, match="seed"):  # the run seed has no way in
        build_graph_data(TOY, tmp_path, seed=1, download=False)


# --------------------------------------------------------------------------- labels


def assert_labels(splits) -> None:
    for part in SPLITS:
        ds = getattr(splits, part)
        got = splits.labels(part)
        assert got.dtype == np.int64 and got.shape == (len(ds),)
        assert got.tolist() == [int(d.y) for d in ds]


def test_labels_and_train_eval(tmp_path, sbm_root, monkeypatch):
    write_tu_dataset(tmp_path / "labels")
    write_tu_dataset(tmp_path / "degrees", node_labels=False)
    cases = [
        build_graph_data(TOY, tmp_path / "labels", download=False),
        build_graph_data(TOY, tmp_path / "degrees", fold=3, download=False),  # a transform
        build_graph_data("sbm", sbm_root, sbm=SMALL_SBM, download=False),
    ]
    toy = [g.label for g in toy_graphs()]
    for splits in cases:
        assert splits.train_eval is splits.train  # no augmentation to remove
        assert_labels(splits)
    assert cases[0].labels("test").tolist() == [toy[i] for i in cases[0].test.indices()]
    # a train sliced after building (the smoke runs' first n) is followed
    splits = cases[1]
    splits.train = splits.train[:5]
    assert splits.train_eval is splits.train and len(splits.labels("train_eval")) == 5
    assert_labels(splits)
    # the labels come from the stored y, not from graph-by-graph loads
    want = [{p: s.labels(p).tolist() for p in SPLITS} for s in cases]

    def boom(self, idx):
        raise AssertionError(f"labels() loaded graph {idx}")

    monkeypatch.setattr(TUDataset, "get", boom)
    with pytest.raises(AssertionError, match="loaded graph"):
        cases[0].train[0]
    assert [{p: s.labels(p).tolist() for p in SPLITS} for s in cases] == want
    picked = Subset(cases[0].test, [1, 0])
    assert graph_labels(picked).tolist() == want[0]["test"][::-1]
    with pytest.raises(ValueError, match="train_eval"):
        cases[0].labels("training")


# --------------------------------------------------------------------------- n_examples


def test_n_examples_is_a_seeded_random_subset(tmp_path):
    write_tu_dataset(tmp_path, n_graphs=40, by_class=True)  # 20 class-0 graphs, then class 1
    counts: Counter = Counter()
    for split_seed in range(6):
        kw = {"split_seed": split_seed, "n_folds": 5, "download": False}
        full = build_graph_data(TOY, tmp_path, **kw)
        s = build_graph_data(TOY, tmp_path, n_examples=6, **kw)
        again = build_graph_data(TOY, tmp_path, n_examples=6, **kw)
        assert split_indices(s) == split_indices(again)
        assert len(s.train) == s.meta["n_train"] == 6
        assert set(s.train.indices()) <= set(full.train.indices())
        assert split_indices(s)[1:] == split_indices(full)[1:]  # val and test unchanged
        assert full.labels("train")[:6].tolist() == [0] * 6  # what "the first n" gives
        counts.update(s.labels("train").tolist())
    assert min(counts[0], counts[1]) >= 9  # of 36 draws, about 18 each
    with pytest.raises(DataError, match="n_examples"):
        build_graph_data(TOY, tmp_path, n_examples=0, download=False)


def test_sbm_is_generated_and_processed_once(tmp_path):
    """A second load reuses the raw files and PyG's cache (the spec markers are read with
    their checksum; they were once compared with it left in, so every load rewrote both)."""
    build_graph_data("sbm", tmp_path, sbm=SMALL_SBM, download=False)
    files = sorted(p for p in (tmp_path / "sbm").rglob("*") if p.is_file() and p.name != ".lock")
    stamps = {p: p.stat().st_mtime_ns for p in files}
    build_graph_data("sbm", tmp_path, sbm=SMALL_SBM, download=False)
    assert {p: p.stat().st_mtime_ns for p in files} == stamps


def test_concurrent_first_loads_of_one_root_all_succeed(tmp_path):
    """Runs started together on one data.root (sweep.sh --jobs N): one process at a time
    writes the raw files and PyG's processed/ cache, which PyG writes in place."""
    import subprocess
    import sys

    code = (
        "import sys; from graph_exps.data import build_graph_data, SBMSpec; "
        f"s = build_graph_data('sbm', sys.argv[1], sbm=SBMSpec(n_graphs={SMALL_SBM.n_graphs}, "
        f"nodes={tuple(SMALL_SBM.nodes)}), download=False); print(len(s.train))"
    )
    argv = [sys.executable, "-c", code, str(tmp_path)]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    procs = [subprocess.Popen(argv, **pipes) for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-500:] for _, err in outs]
    assert len({out for out, _ in outs}) == 1


@pytest.mark.parametrize("name", ["../../outside/X", "/tmp/X", "MUTAG/../../X", "", ".hidden"])
def test_a_name_that_is_a_path_is_refused_before_anything_is_made(tmp_path, name):
    root = tmp_path / "data" / "deep"
    root.mkdir(parents=True)
    with pytest.raises(DataError, match="is not a TU data set's name"):
        build_graph_data(name, root, download=False)
    assert [p for p in tmp_path.rglob("*") if p != root and p != root.parent] == []
