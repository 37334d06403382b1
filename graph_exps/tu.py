"""TU data sets on disk (https://chrsmrrs.github.io/datasets/docs/format/): the known names,
the raw text files each needs, an official zip left beside them unpacked, the embedded
copies installed, and the raw files checked to parse and agree with each other before PyG's
:class:`~torch_geometric.datasets.TUDataset` processes them (:func:`open_tu`). Every failure
is a :class:`DataError` that says which files go where."""

from __future__ import annotations

import difflib
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
from torch_geometric.datasets import TUDataset

from common.embedded import embedded_sets
from common.errors import DataError
from graph_exps.sbm import SBM_NAME

TU_DATASETS: tuple[str, ...] = (
    "MUTAG",
    "PTC_MR",
    "PROTEINS",
    "NCI1",
    "IMDB-BINARY",
    "IMDB-MULTI",
    "COLLAB",
    "REDDIT-BINARY",
    "REDDIT-MULTI-5K",
)
#: the TU sets shipped with the package, installed into ``<root>/<NAME>/raw/`` when missing
EMBEDDED = embedded_sets(Path(__file__).parent)
DATASETS: tuple[str, ...] = (*TU_DATASETS, SBM_NAME)
#: the official host (PyG's ``TUDataset.url`` at import); the messages name the URL PyG
#: uses when they are written (:func:`tu_url`), which a mirror may have changed since
TU_URL: str = TUDataset.url
REQUIRED_FILES: tuple[str, ...] = ("A", "graph_indicator", "graph_labels")
OPTIONAL_FILES: tuple[str, ...] = (
    "node_labels",
    "node_attributes",
    "edge_labels",
    "edge_attributes",
)


def tu_url(name: str) -> str:
    """The archive PyG's ``TUDataset`` downloads for ``name`` (from its ``url`` now)."""
    return f"{TUDataset.url}/{name}.zip"


def _tu_path(raw: Path, name: str, kind: str) -> Path:
    return raw / f"{name}_{kind}.txt"


def missing_files(raw: Path, name: str) -> list[str]:
    return [k for k in REQUIRED_FILES if not _tu_path(raw, name, k).is_file()]


def _files_text(name: str) -> str:
    req = ", ".join(f"{name}_{k}.txt" for k in REQUIRED_FILES)
    opt = ", ".join(f"{name}_{k}.txt" for k in OPTIONAL_FILES)
    return f"{req} (and, where the set has them, {opt})"


def _extract_zip(root: Path, name: str, raw: Path) -> None:
    """Unpack an official ``<NAME>.zip`` left in ``root`` or the raw directory, if there is one."""
    for archive in (root / f"{name}.zip", raw / f"{name}.zip"):
        if not archive.is_file():
            continue
        try:
            with zipfile.ZipFile(archive) as z:
                members = [
                    m
                    for m in z.infolist()
                    if not m.is_dir()
                    and Path(m.filename).name.startswith(f"{name}_")
                    and m.filename.endswith(".txt")
                ]
                raw.mkdir(parents=True, exist_ok=True)
                for m in members:
                    with z.open(m) as src, open(raw / Path(m.filename).name, "wb") as dst:
                        shutil.copyfileobj(src, dst)
        except (zipfile.BadZipFile, OSError) as e:
            raise DataError(
                f"Cannot extract {archive} ({type(e).__name__}: {e}). The archive looks "
                f"corrupt: delete it and download {tu_url(name)} again."
            ) from None
        return


def _load_array(path: Path, dtype: type, fix: str) -> np.ndarray:
    """A TU text file as a 2-d array; a DataError naming the file if it does not parse."""

    def corrupt(why: str) -> DataError:
        return DataError(f"TU raw file {path} is corrupt: {why.rstrip('.')}. {fix}")

    if path.stat().st_size == 0:
        raise corrupt("it is empty")
    with open(path, "rb") as f:
        f.seek(-1, 2)
        if f.read(1) != b"\n":  # PyG drops the last line of a file without a final newline
            raise corrupt("it does not end with a newline (truncated?)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = np.loadtxt(path, delimiter=",", dtype=dtype, ndmin=2)
    except (ValueError, OSError) as e:
        raise corrupt(f"{type(e).__name__}: {e}") from None
    if arr.size == 0:
        raise corrupt("it holds no numbers")
    return arr


def _check_raw(raw: Path, name: str, fix: str) -> None:
    """Checks the TU raw files parse and agree with each other, before PyG processes them.

    PyG would fail with an opaque error or, for some inconsistencies (fewer labels than
    graphs, an edge across graphs), build a wrong data set without complaint.
    """

    def path(kind: str) -> Path:
        return _tu_path(raw, name, kind)

    def bad(kind: str, why: str) -> DataError:
        return DataError(f"TU raw file {path(kind)} is corrupt: {why}. {fix}")

    gi = _load_array(path("graph_indicator"), np.int64, fix)
    if gi.shape[1] != 1:
        raise bad("graph_indicator", f"expected one graph id per line, got {gi.shape[1]} columns")
    gi = gi[:, 0]
    n_nodes, n_graphs = gi.size, int(gi.max())
    if gi.min() != 1 or np.any(np.diff(gi) < 0) or np.unique(gi).size != n_graphs:
        raise bad("graph_indicator", "graph ids must run 1, 1, ..., 2, ... up to the last graph")
    a = _load_array(path("A"), np.int64, fix)
    if a.shape[1] != 2:
        raise bad("A", f"expected 'i, j' per line, got {a.shape[1]} columns")
    if a.min() < 1 or a.max() > n_nodes:
        raise bad("A", f"node ids must be in 1..{n_nodes} (the graph_indicator's nodes)")
    if np.any(gi[a[:, 0] - 1] != gi[a[:, 1] - 1]):
        raise bad("A", "an edge joins nodes of two different graphs")
    if int(gi[a[:, 0] - 1].max()) != n_graphs:
        raise bad("A", f"the last graph ({n_graphs}) has no edges, which PyG cannot read")
    y = _load_array(path("graph_labels"), np.int64, fix)
    if y.shape != (n_graphs, 1):
        raise bad("graph_labels", f"expected {n_graphs} lines of one label, got shape {y.shape}")
    for kind, rows, dtype in (
        ("node_labels", n_nodes, np.int64),
        ("node_attributes", n_nodes, np.float64),
        ("edge_labels", len(a), np.int64),
        ("edge_attributes", len(a), np.float64),
    ):
        if path(kind).is_file():
            arr = _load_array(path(kind), dtype, fix)
            if len(arr) != rows:
                raise bad(kind, f"expected {rows} lines, got {len(arr)}")


def _missing_error(name: str, root: Path, raw: Path, missing: list[str], why: str) -> DataError:
    known = ""
    if name not in DATASETS:
        close = difflib.get_close_matches(name.upper(), DATASETS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        known = (
            f" ({name!r} is not one of {', '.join(DATASETS)}; any other TU data set works "
            f"once its files are there{'.' + hint if hint else ''})"
        )
    return DataError(
        f"Graph data set {name} not found under {root}{known}.{why} PyG's TUDataset reads the "
        f"raw text files {_files_text(name)} from {raw}/ (missing: "
        f"{', '.join(f'{name}_{k}.txt' for k in missing)}). Download {tu_url(name)} and "
        f"extract its files into {raw}/ (or leave the zip at {root / (name + '.zip')}), or run "
        f"once with network access and data.download=true."
    )


def open_tu(root: Path, name: str, download: bool, force: bool, fix: str) -> TUDataset:
    """``TUDataset(root, name)`` after the checks above; every failure is a DataError."""
    raw = root / name / "raw"
    missing = missing_files(raw, name)
    if missing:
        _extract_zip(root, name, raw)
    if name in EMBEDDED:  # verified on every load; installs only what is missing
        force = bool(EMBEDDED[name].install(raw)) or force
    missing = missing_files(raw, name)
    why = ""
    if missing and download and name != SBM_NAME:
        try:  # PyG downloads the archive (and processes it) when A / graph_indicator lack
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                TUDataset(str(root), name)
        except Exception as e:
            why = f" Downloading {tu_url(name)} failed ({type(e).__name__}: {e})."
        missing = missing_files(raw, name)
    if missing:
        raise _missing_error(name, root, raw, missing, why)
    processed = root / name / "processed"
    if force or not (processed / "data.pt").is_file():
        _check_raw(raw, name, fix)
    try:
        return TUDataset(str(root), name, force_reload=force)
    except Exception as e:
        raise DataError(
            f"PyG's TUDataset could not read {raw} ({type(e).__name__}: {e}). Delete "
            f"{processed} (a cache PyG rebuilds from the raw files) and try again; if that "
            f"fails, the raw files are damaged. {fix}"
        ) from None


__all__ = [
    "DATASETS",
    "EMBEDDED",
    "OPTIONAL_FILES",
    "REQUIRED_FILES",
    "TU_DATASETS",
    "TU_URL",
    "missing_files",
    "open_tu",
    "tu_url",
]
