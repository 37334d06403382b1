"""Files that matter are written atomically: a crash never leaves a half-written one."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common.errors import UserError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[str]:
    """Yields a temporary name beside ``path``; on success it replaces ``path``.

    The temporary file is in the same folder (so the rename is atomic), is synced to disk
    before the rename, and is removed if the body raises; ``path`` is then untouched.
    """
    target = Path(path).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(target.parent / f".{target.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Writes ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


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


def read_json(path: str | os.PathLike[str], *, fix: str) -> Any:
    """The contents of a file :func:`write_json` wrote, its digest checked (and removed).

    A file that cannot be read, is not JSON, lacks its digest or does not match it raises
    :class:`~common.errors.UserError` naming the file and ``fix`` (what to do)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError included
        raise UserError(f"{path} is damaged ({type(e).__name__}); {fix}") from None
    if isinstance(data, dict):
        expected = data.pop(CHECKSUM, None)
        if expected is None:
            raise UserError(f"{path} has no checksum (written by hand or by an old version); {fix}")
        if _digest(data) != expected:
            raise UserError(f"{path} is damaged (its checksum does not match); {fix}")
    return data
