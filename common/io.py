"""Files that matter are written atomically: a crash never leaves a half-written one."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from common.errors import RunDirError, UserError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[str]:
    """Yields a temporary name beside ``path``; on success it replaces ``path``.

    The temporary file is in the same folder (so the rename is atomic), is synced to disk
    before the rename, and is removed if the body raises; ``path`` is then untouched.
    """
    target = Path(path).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(target.parent / f".{target.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # a leftover, or a link planted there: written through, it would
        # overwrite the link's target
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(error, OSError) and error.filename is None:
            error.filename = str(target)  # a refused write() names no file: name the one meant
        raise


def open_lock(path: str | os.PathLike[str]) -> int:
    """The descriptor of lock file ``path`` (created if needed), opened never through a
    symbolic link: a link there would let the lock's writes land in its target."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        raise RunDirError(
            f"{path} is a symbolic link, which no command of this project makes: delete it "
            f"(rm {path}) and run again"
        ) from None


@contextlib.contextmanager
def exclusive(path: str | os.PathLike[str]) -> Iterator[None]:
    """Holds an exclusive ``flock`` on ``path`` (created if needed), waiting for it: one
    process at a time builds a cache that another library writes in place (PyG's
    ``processed/``). Where the lock file cannot be created (a read-only data folder, which
    no one writes either) it runs without one."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fd = open_lock(path)
    except RunDirError:
        raise
    except OSError:
        yield  # a read-only folder: no one writes there either
        return
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Writes ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


#: The key under which :func:`write_json` stores the digest of a JSON object.
CHECKSUM = "sha256"


def _digest(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Writes ``data`` as indented JSON to ``path`` atomically; an object gets a ``sha256``
    digest of its contents, which :func:`read_json` verifies (a flipped digit in a result
    is then a refusal, not a wrong table)."""
    if isinstance(data, dict):
        data = {**data, CHECKSUM: _digest(data)}
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


class FileRefused(OSError):
    """A path that is not a regular file of sane size (a device, a FIFO, a folder, a file
    far larger than its kind), refused before it is read: ``/dev/zero`` would be read until
    memory ran out, a FIFO would block forever."""


def check_regular_file(path: str | os.PathLike[str], mode: int | None = None) -> None:
    """:class:`FileRefused` unless ``path`` (links followed; ``mode``: its ``st_mode`` if
    already known) is a regular file: a data file that is ``/dev/zero`` would be read
    forever, a FIFO would block."""
    if not stat.S_ISREG(os.stat(path).st_mode if mode is None else mode):
        raise FileRefused(f"{path} is not a regular file (a device, FIFO or folder)")


def read_text_file(path: str | os.PathLike[str], *, max_bytes: int) -> str:
    """The UTF-8 text of the regular file ``path``, of at most ``max_bytes`` bytes; else
    :class:`FileRefused` (an OSError) saying why. Opened without blocking, so a FIFO is
    refused rather than waited on."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        check_regular_file(path, info.st_mode)
        if info.st_size > max_bytes:
            raise FileRefused(
                f"{path} is {info.st_size} bytes, more than the {max_bytes} such a file holds"
            )
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:  # it grew while being read
        raise FileRefused(f"{path} grew past {max_bytes} bytes while it was read")
    return data.decode("utf-8")


#: The largest result file read back (a Hessian's per-layer traces and density included).
MAX_JSON_BYTES = 64 * 2**20


def read_json(path: str | os.PathLike[str], *, fix: str) -> Any:
    """The contents of a file :func:`write_json` wrote, its digest checked (and removed).

    A file that cannot be read, is not JSON, lacks its digest or does not match it raises
    :class:`~common.errors.UserError` naming the file and ``fix`` (what to do)."""
    path = Path(path)
    try:
        data = json.loads(read_text_file(path, max_bytes=MAX_JSON_BYTES))
    except FileNotFoundError:
        raise
    except FileRefused as e:
        raise UserError(f"{e}; {fix}") from None
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError included
        raise UserError(f"{path} is damaged ({type(e).__name__}); {fix}") from None
    if isinstance(data, dict):
        expected = data.pop(CHECKSUM, None)
        if expected is None:
            raise UserError(f"{path} has no checksum (written by hand or by an old version); {fix}")
        if _digest(data) != expected:
            raise UserError(f"{path} is damaged (its checksum does not match); {fix}")
    return data


# --------------------------------------------------------------------- verified caches
def _arrays_digest(arrays: Mapping[str, Any]) -> str:
    import numpy as np

    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_arrays(path: str | os.PathLike[str], arrays: Mapping[str, Any], key: str) -> None:
    """``arrays`` as an ``.npz`` written atomically, with ``key`` (what they were computed
    from) and a SHA-256 of everything, which :func:`load_arrays` verifies."""
    import numpy as np

    stored = {**arrays, "key": np.array(key)}
    stored["sha256"] = np.array(_arrays_digest(stored))
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: savez adds no .npz
        np.savez(f, **stored)


def load_arrays(path: str | os.PathLike[str], key: str) -> dict[str, Any] | None:
    """The arrays :func:`save_arrays` wrote for ``key``; None when the file is absent,
    unreadable, damaged or was written for another key (a cache is recomputed, never
    trusted)."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except Exception:  # whatever numpy or zipfile raise for a damaged file
        return None
    stored = arrays.pop("sha256", None)
    if stored is None or str(stored) != _arrays_digest(arrays) or str(arrays.pop("key", "")) != key:
        return None
    return arrays


# --------------------------------------------------------------------- generated data
def ensure_generated(
    folder: str | os.PathLike[str],
    files: Sequence[str],
    spec: Mapping[str, Any],
    write: Callable[[Path], None],
    *,
    what: str,
) -> Path:
    """Data a project generates from ``spec``, in ``folder``, written once and verified.

    ``write(folder)`` writes ``files`` (each atomically); then ``<what>_spec.json`` records
    the spec and each file's SHA-256, last, so the files of a killed writer are not taken
    for finished ones. Missing, damaged or another spec's files are generated again.

    Raises:
        DataError: the folder cannot be written.
    """
    from common.errors import DataError

    folder = Path(folder)
    marker = folder / f"{what}_spec.json"

    def digests() -> dict[str, str]:
        return {name: sha256_file(folder / name) for name in files}

    try:
        intact = read_json(marker, fix="it is regenerated") == {
            "spec": dict(spec),
            "files": digests(),
        }
    except (OSError, UserError):
        intact = False
    if not intact:
        try:
            write(folder)
            write_json(marker, {"spec": dict(spec), "files": digests()})
        except OSError as e:
            raise DataError(
                f"Cannot write the generated {what} data to {folder} ({e.strerror or e}): "
                f"make data.root writable."
            ) from None
    return folder
