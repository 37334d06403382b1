"""A tiny graph data set written in the TU raw text format, so PyG's real TUDataset reads it.

:func:`write_tu_dataset` writes ``<root>/<name>/raw/<name>_A.txt`` (1-based ``i, j`` lines,
both directions of each undirected edge), ``_graph_indicator.txt``, ``_graph_labels.txt``
(raw labels -1 / 1, as MUTAG and PTC write them) and optionally ``_node_labels.txt`` (raw
labels 1..3) and ``_node_attributes.txt``, as in https://chrsmrrs.github.io/datasets/.

Graph ``g`` (see :func:`toy_graphs`) has class ``g % 2`` and ``4 + (g // 2) % 4`` nodes;
class 0 graphs are cycles, class 1 graphs stars with one extra edge between two leaves, so
tests can recompute every degree and label a loader must return. With ``by_class=True`` the
same graphs are written class by class (all of class 0 first), as PROTEINS or IMDB-BINARY
list theirs, so "the first n graphs" is a one-class sample.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

TOY = "TOY"
RAW_LABELS = (-1, 1)  # class c is written as RAW_LABELS[c]


@dataclass(frozen=True)
class ToyGraph:
    n: int
    edges: list[tuple[int, int]]  # undirected, 0-based, i < j
    label: int  # class 0 / 1
    node_labels: list[int]  # raw values 1..3

    @property
    def degrees(self) -> list[int]:
        deg = [0] * self.n
        for i, j in self.edges:
            deg[i] += 1
            deg[j] += 1
        return deg


def toy_graphs(n_graphs: int = 20, by_class: bool = False) -> list[ToyGraph]:
    """The graphs in the order they are written (class 0 first if ``by_class``)."""
    graphs = []
    for g in range(n_graphs):
        label, n = g % 2, 4 + (g // 2) % 4
        if label == 0:
            edges = [(i, (i + 1) % n) for i in range(n)]
        else:
            edges = [(0, i) for i in range(1, n)] + [(1, 2)]
        edges = sorted((min(e), max(e)) for e in edges)
        graphs.append(ToyGraph(n, edges, label, [1 + (i + g) % 3 for i in range(n)]))
    if by_class:
        graphs.sort(key=lambda graph: graph.label)  # stable: within a class, as before
    return graphs


def write_tu_dataset(
    root: str | Path,
    name: str = TOY,
    *,
    n_graphs: int = 20,
    node_labels: bool = True,
    node_attributes: bool = False,
    by_class: bool = False,
) -> Path:
    """Write the toy set in TU raw text format under ``root/name/raw``; return that folder."""
    raw = Path(root) / name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    a, indicator, labels, nlabels, nattrs = [], [], [], [], []
    offset = 0
    for g, graph in enumerate(toy_graphs(n_graphs, by_class), start=1):
        both = sorted([(i, j) for i, j in graph.edges] + [(j, i) for i, j in graph.edges])
        a += [f"{i + offset + 1}, {j + offset + 1}" for i, j in both]
        indicator += [str(g)] * graph.n
        labels.append(str(RAW_LABELS[graph.label]))
        nlabels += [str(v) for v in graph.node_labels]
        pairs = zip(graph.node_labels, graph.degrees, strict=True)
        nattrs += [f"{0.5 * v:.2f}, {d:.1f}" for v, d in pairs]
        offset += graph.n
    files = {"A": a, "graph_indicator": indicator, "graph_labels": labels}
    if node_labels:
        files["node_labels"] = nlabels
    if node_attributes:
        files["node_attributes"] = nattrs
    for kind, lines in files.items():
        (raw / f"{name}_{kind}.txt").write_text("\n".join(lines) + "\n")
    return raw


def zip_tu_dataset(raw: Path, archive: Path, name: str = TOY) -> Path:
    """Pack the raw files as the official archives do: ``<name>/<name>_*.txt`` in a zip."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted(raw.glob(f"{name}_*.txt")):
            z.write(f, f"{name}/{f.name}")
    return archive
