"""The files of a loss landscape or an interpolation: HDF5, verified when read, resumable.

HDF5 layout of a landscape file (``attrs["kind"] == "loss_landscape"``)::

    attrs    kind, format_version (2), seed, span, steps, dims, ignore_bias_bn, params,
             n_examples, metric ("" without metric_fn), model_sha256; base_loss (only when
             the centre is not a grid point); strings are fixed-length UTF-8 (bytes in h5py)
    xcoords  (steps,)            float64, the coefficients a of d1
    ycoords  (steps,)            float64, the coefficients b of d2 (2-D only)
    loss     (steps,) or (steps, steps) float64, NaN until computed;
             loss[i, j] = L(W + xcoords[i]·d1 + ycoords[j]·d2)
    metric   same shape, only with metric_fn
    done     same shape, uint8: 1 where computed (a loss may itself be NaN or inf)
    row_hash (steps,) uint64: a hash of (i, loss[i], done[i], metric[i]) for each row i
    d1/<parameter name>, d2/<parameter name>   the directions (a 0-d parameter's as (1,))

An interpolation file (``attrs["kind"] == "interpolation"``) has ``t``, ``loss``, ``done``,
``row_hash`` (and ``metric``) with the attributes steps, span, n_examples, metric,
start_sha256, end_sha256 (compared on resume), start and end (descriptions, not compared).

Integrity. Every dataset is chunked (``loss``, ``done``, ``metric``: a row per chunk) with
HDF5's Fletcher-32 checksums, which h5py verifies on every read; the attributes live in the
object headers, which HDF5's 1.8 file format checksums. Fletcher-32 cannot tell 0x0000 from
0xFFFF and the chunk index has no checksum (a lost chunk reads as the fill value), so the
datasets written once (coordinates, directions) also carry a hash of their values (the
attribute ``blake2b``) and the rows of the grid theirs in ``row_hash``. A check that fails,
or a file that is empty, truncated, foreign or of another format version, raises
:class:`GridFileError`, whose message says to delete the file. A row whose hash does not
match (a run killed between the writes of a point) counts as not computed and a resume
computes it again: a row is either there and verified, or recomputed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import h5py
import numpy as np

from common.errors import RunDirError
from common.io import atomic_path

#: 2: checksummed datasets and metadata, and row hashes; 1 (no checksums) is refused
FORMAT_VERSION = 2
#: HDF5 1.8 file format: checksummed superblock and object headers, but not the superblock 3
#: of 1.10+, whose "open for writing" flag a killed run would leave set (the file unopenable)
_LIBVER = ("v108", "v108")


class GridFileError(RunDirError, ValueError):
    """A landscape or interpolation file that cannot be used as asked (empty, damaged,
    foreign, of another format version, computed with other options): the message names
    the file and the fix. A ValueError too, as the option checks always raised."""


_NOUN = {"loss_landscape": "loss landscape", "interpolation": "interpolation"}
_COORDS = {"loss_landscape": ("xcoords", "ycoords"), "interpolation": ("t",)}
_GRID_DATASETS = ("loss", "done", "metric", "row_hash")  # chunked by row
_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: what h5py raises on a damaged file (OSError where a checksum fails)
_READ_ERRORS = (OSError, KeyError, ValueError, TypeError, RuntimeError)


def _refuse(path: str | None, kind: str, problem: str) -> GridFileError:
    """A file that is damaged, foreign or outdated: the fix is to compute it again."""
    return GridFileError(
        f"{path} {problem}: delete it and run the {_NOUN[kind]} again (it restarts from scratch)"
    )


def _reason(error: BaseException) -> str:
    """h5py's message, one line, without its "Unable to ... (...)" wrapper."""
    lines = str(error).strip().splitlines()
    line = lines[0] if lines else type(error).__name__
    inner = line.partition(" (")[2]
    return inner[:-1] if inner.endswith(")") else line


@contextlib.contextmanager
def _reading(path: str | None, kind: str, what: str) -> Iterator[None]:
    """h5py's errors on a damaged file as a GridFileError about ``what``."""
    try:
        yield
    except GridFileError:
        raise
    except _READ_ERRORS as e:
        raise _refuse(path, kind, f"is damaged ({what} cannot be read: {_reason(e)})") from e


def _open_file(path: str, kind: str, mode: str) -> h5py.File:
    """``path`` opened with ``mode`` ("r" or "r+"), its kind and format version checked."""
    if os.path.isfile(path) and os.path.getsize(path) == 0:  # "r+" would make it a new file
        raise _refuse(path, kind, "is empty (0 bytes)")
    try:
        f = h5py.File(path, mode)
    except BlockingIOError as e:  # HDF5 locks a file while it is open for writing
        raise GridFileError(
            f"{path} is open in another process (HDF5 cannot lock it): let that run finish "
            "or stop it, then run again"
        ) from e
    except OSError as e:
        if e.errno is not None:  # missing, a folder, no permission
            raise GridFileError(
                f"{path} cannot be opened ({os.strerror(e.errno)}): check the path and its "
                "permissions"
            ) from e
        with open(path, "rb") as raw:
            head = raw.read(len(_SIGNATURE))
        if head != _SIGNATURE:
            raise _refuse(path, kind, "is not an HDF5 file") from e
        raise _refuse(path, kind, f"is damaged or truncated ({_reason(e)})") from e
    try:
        _check_header(f, path, kind)
    except BaseException:
        f.close()
        raise
    return f


def _check_header(f: h5py.File, path: str, kind: str) -> None:
    with _reading(path, kind, "its attributes"):
        names = set(f.attrs)  # a failed checksum raises here; attrs.get would say "missing"
        found = _plain(f.attrs["kind"]) if "kind" in names else None
        version = _plain(f.attrs["format_version"]) if "format_version" in names else None
    noun = _NOUN[kind]
    if found != kind:
        what = "has no 'kind' attribute" if found is None else f"is of kind {found!r}"
        raise GridFileError(
            f"{path} is not a {noun} file (it {what}: another program or command wrote it): "
            f"move it away or delete it, then run the {noun} again"
        )
    if version == FORMAT_VERSION:
        return
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise GridFileError(
            f"{path} was written by a newer version (format {version}; this one reads "
            f"{FORMAT_VERSION}): use that version, or delete it and run the {noun} again"
        )
    was = "no format version" if version is None else f"format {version!r}"
    old = f"was written by an older version ({was}, without checksums) and cannot be verified"
    raise _refuse(path, kind, old)


def open_grid(
    path: str | None,
    kind: str,
    options: Mapping[str, Any],
    contents: Callable[[], Mapping[str, np.ndarray]],
    shape: tuple[int, ...],
    info: Mapping[str, Any] | None = None,
) -> Grid:
    """The grid file at ``path``, created atomically if new (in memory if ``path`` is None),
    checked to have been made with ``options`` if it exists."""
    if path is None:
        f = h5py.File(io.BytesIO(), "w", libver=_LIBVER)
        _initialise(f, kind, options, contents(), shape, info)
    else:
        if not os.path.exists(path):
            # built in memory and written by Python: a full disk or a file size limit is
            # then one OSError naming the file, where HDF5's own writes failing would leave
            # the library in a state that crashes the process (SIGSEGV) when it closes
            memory = io.BytesIO()
            with h5py.File(memory, "w", libver=_LIBVER) as new:
                _initialise(new, kind, options, contents(), shape, info)
            with atomic_path(path) as tmp, open(tmp, "wb") as out:
                out.write(memory.getbuffer())
        f = _open_file(path, kind, "r+")
    try:
        if path is not None:
            _check_options(f, path, kind, options)
        return Grid(f, path, kind, shape, bool(options["metric"]))
    except BaseException:
        f.close()
        raise


def read_grid(path: str | os.PathLike, kind: str) -> dict[str, np.ndarray | None]:
    """The arrays of a grid file of ``kind`` ("loss_landscape" or "interpolation"), verified.

    Returns its coordinates (``xcoords`` and ``ycoords``, or ``t``), ``loss``, ``metric``
    (None without) and ``done``; points not computed are NaN. Raises :class:`GridFileError`
    if the file is damaged, empty, foreign or of another format version.
    """
    path = os.fspath(path)
    with _open_file(path, kind, "r") as f:
        shape, has_metric = _saved_shape(f, path, kind)
        grid = Grid(f, path, kind, shape, has_metric)
        names = _COORDS[kind][: len(shape)]
        coords = {name: grid.read(name, shape[:1], np.float64) for name in names}
    return coords | {"loss": grid.loss, "metric": grid.metric, "done": grid.done}


def _saved_shape(f: h5py.File, path: str, kind: str) -> tuple[tuple[int, ...], bool]:
    """The grid's shape and whether it has a metric, from the attributes."""
    with _reading(path, kind, "its attributes"):
        steps = _plain(f.attrs.get("steps"))
        dims = _plain(f.attrs.get("dims")) if kind == "loss_landscape" else 1
        metric = _plain(f.attrs.get("metric"))
    if type(steps) is not int or steps < 2 or type(dims) is not int or dims not in (1, 2):
        raise _refuse(path, kind, f"is damaged (steps {steps!r} and dims {dims!r} are not valid)")
    if not isinstance(metric, str):
        raise _refuse(path, kind, f"is damaged (metric {metric!r} is not a name)")
    return (steps,) * dims, bool(metric)


def _initialise(
    f: h5py.File,
    kind: str,
    options: Mapping[str, Any],
    contents: Mapping[str, np.ndarray],
    shape: tuple[int, ...],
    info: Mapping[str, Any] | None,
) -> None:
    _set_attr(f, "kind", kind)
    f.attrs["format_version"] = FORMAT_VERSION
    for key, value in {**options, **(info or {})}.items():
        _set_attr(f, key, value)
    for name, array in contents.items():
        _create(f, name, array)
    loss, done = np.full(shape, np.nan), np.zeros(shape, np.uint8)
    metric = np.full(shape, np.nan) if options["metric"] else None
    row = (1, *shape[1:])  # one row per chunk
    _create(f, "loss", loss, row)
    _create(f, "done", done, row)
    if metric is not None:
        _create(f, "metric", metric, row)
    sums = [_row_sum(i, loss, done, metric) for i in range(shape[0])]
    _create(f, "row_hash", np.array(sums, np.uint64), (1,))


def _set_attr(obj: h5py.HLObject, key: str, value: Any) -> None:
    """Strings as fixed-length UTF-8, which HDF5 keeps with the checksummed attributes (a
    variable-length string lives in the global heap, which has no checksum)."""
    if isinstance(value, str):
        data = value.encode()
        obj.attrs.create(key, data, dtype=h5py.string_dtype("utf-8", max(len(data), 1)))
    else:
        obj.attrs[key] = value


def _create(f: h5py.File, name: str, array: np.ndarray, chunks: Any = None) -> None:
    """A dataset with Fletcher-32 checksums, which h5py verifies on every read. One written
    only here (``chunks`` None: h5py's) also gets the attribute ``blake2b``, a hash of its
    contents: a chunk whose index entry is damaged reads as the fill value, unnoticed by
    Fletcher-32 (the rows of a grid have their hashes in ``row_hash``)."""
    ds = f.create_dataset(name, data=array, chunks=chunks or True, fletcher32=True)
    if chunks is None:
        _set_attr(ds, "blake2b", _digest(array))


def _digest(array: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(array), digest_size=16).hexdigest()


def _row_sum(i: int, loss: np.ndarray, done: np.ndarray, metric: np.ndarray | None) -> int:
    """A hash of row ``i``: a row whose stored hash differs was torn by a kill."""
    h = hashlib.blake2b(np.int64(i).tobytes(), digest_size=8)
    h.update(np.asarray(loss[i], "<f8").tobytes())
    h.update(np.asarray(done[i], np.uint8).tobytes())
    if metric is not None:
        h.update(np.asarray(metric[i], "<f8").tobytes())
    return int.from_bytes(h.digest(), "little")


def _chunks_intact(ds: h5py.Dataset) -> bool:
    """Whether the chunk index lists every chunk once, with its checksum filter applied.

    The index (a version 1 B-tree in this file format) has no checksum of its own: a damaged
    key hides a chunk, and HDF5 would read the fill value in its place. All the chunks are
    written when the file is created, so all must be there.
    """
    starts = [range(0, n, c) for n, c in zip(ds.shape, ds.chunks, strict=True)]
    found: list[Any] = []
    ds.id.chunk_iter(found.append)
    offsets = [info.chunk_offset for info in found]
    return not any(info.filter_mask for info in found) and (
        sorted(offsets) == sorted(itertools.product(*starts))
    )


class Grid:
    """An open grid file whose ``loss``, ``done`` and ``metric`` are verified and held in
    memory, a torn row (its hash differs from its contents) reset to not computed."""

    def __init__(
        self, f: h5py.File, path: str | None, kind: str, shape: tuple[int, ...], metric: bool
    ):
        self.f, self.path, self.kind = f, path, kind
        self.loss = self.read("loss", shape, np.float64)
        self.done = self.read("done", shape, np.uint8).astype(bool)
        self.metric = self.read("metric", shape, np.float64) if metric else None
        sums = self.read("row_hash", shape[:1], np.uint64)
        for i in range(shape[0]):
            if int(sums[i]) != _row_sum(i, self.loss, self.done, self.metric):
                self.loss[i], self.done[i] = np.nan, False  # computed again on resume
                if self.metric is not None:
                    self.metric[i] = np.nan

    def __enter__(self) -> Grid:
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()

    def read(self, name: str, shape: tuple[int, ...], dtype: Any = None) -> np.ndarray:
        """The dataset ``name``, checked to have ``shape`` (and ``dtype``), its checksums
        verified, and its hash if it is written only at creation (not a grid dataset)."""
        digest = None
        with _reading(self.path, self.kind, repr(name)):
            ds = self.f.get(name)
            if not isinstance(ds, h5py.Dataset):
                raise _refuse(self.path, self.kind, f"is damaged (it has no dataset {name!r})")
            if ds.shape != shape or (dtype is not None and ds.dtype != dtype):
                raise _refuse(
                    self.path,
                    self.kind,
                    f"is damaged ({name!r} is {ds.dtype} {ds.shape}, not "
                    f"{np.dtype(dtype or ds.dtype)} {shape})",
                )
            if not ds.fletcher32:
                raise _refuse(self.path, self.kind, f"is damaged ({name!r} has no checksums)")
            if not _chunks_intact(ds):
                raise _refuse(self.path, self.kind, f"is damaged ({name!r} has lost chunks)")
            if name not in _GRID_DATASETS:
                if "blake2b" not in ds.attrs:
                    raise _refuse(self.path, self.kind, f"is damaged ({name!r} has no hash)")
                digest = _plain(ds.attrs["blake2b"])
        try:
            array = ds[...]
        except _READ_ERRORS as e:
            raise _refuse(self.path, self.kind, f"is damaged ({self._failing(ds, name)})") from e
        if digest is not None and digest != _digest(array):
            raise _refuse(self.path, self.kind, f"is damaged ({name!r} differs from its hash)")
        return array

    def _failing(self, ds: h5py.Dataset, name: str) -> str:
        """Which rows of ``ds`` fail their checksums."""
        if name not in _GRID_DATASETS:
            return f"{name!r} fails its checksum"
        bad = []
        for i in range(len(ds)):
            try:
                ds[i]
            except _READ_ERRORS:
                bad.append(i)
        rows = ", ".join(map(str, bad))
        if len(bad) == 1:
            return f"row {rows} of {len(ds)} in {name!r} fails its checksum"
        return f"rows {rows} of {len(ds)} in {name!r} fail their checksums"

    def attr(self, name: str, convert: Callable[[Any], Any]) -> Any:
        """The attribute ``name`` through ``convert``; None if there is none."""
        with _reading(self.path, self.kind, f"attribute {name!r}"):
            return convert(self.f.attrs[name]) if name in self.f.attrs else None

    def store(self, index: tuple[int, ...], loss: float, metric: float | None) -> None:
        """Sets one point and writes its row back, then the row's hash: a kill between these
        writes leaves a hash that does not match the row, which is then computed again."""
        i = index[0]
        self.loss[index], self.done[index] = loss, True
        if self.metric is not None and metric is not None:
            self.metric[index] = metric
            self.f["metric"][i] = self.metric[i]
        self.f["loss"][i] = self.loss[i]
        self.f["done"][i] = np.asarray(self.done[i], np.uint8)
        self.f["row_hash"][i] = _row_sum(i, self.loss, self.done, self.metric)

    def flush(self) -> None:
        self.f.flush()


_WHAT = {
    "model_sha256": "the model's weights or buffers",
    "start_sha256": "start's weights",
    "end_sha256": "end's weights",
}
_MISSING = object()


def _check_options(f: h5py.File, path: str, kind: str, options: Mapping[str, Any]) -> None:
    with _reading(path, kind, "its attributes"):
        saved = {key: _plain(f.attrs[key]) if key in f.attrs else _MISSING for key in options}
    missing = [key for key, value in saved.items() if value is _MISSING]
    if missing:
        raise _refuse(path, kind, f"is damaged (it has no attribute {missing[0]!r})")
    differing = []
    for key, value in options.items():
        if saved[key] != _plain(value):
            what = f" ({_WHAT[key]} differ)" if key in _WHAT else ""
            differing.append(
                f"{key}{what}: saved {_show(key, saved[key])}, requested {_show(key, value)}"
            )
    if differing:
        raise GridFileError(
            f"{path} was computed with other options ({'; '.join(differing)}): pass the saved "
            "ones to resume it, or delete it (or use another path) to start afresh"
        )


def _show(key: str, value: Any) -> str:
    if key.endswith("_sha256") and isinstance(value, str):
        return value[:12]  # enough to tell them apart
    return repr(_plain(value))


def _plain(value: Any) -> Any:
    """h5py attribute values as plain Python values, for comparison."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
