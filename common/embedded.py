"""Small real data sets shipped inside the repository (and the wheel), verified when read.

A domain keeps each embedded set in ``<domain>/embedded/<NAME>/``: the data set's own
files, ``SOURCE.md`` (where the files come from, their licence or terms, how they were
obtained) and ``SHA256SUMS`` (``sha256sum``'s format: ``<hex>  <file name>`` per line).
A loader that finds a set missing from its data root installs the embedded copy there
with :meth:`EmbeddedSet.install`: every file is checked against ``SHA256SUMS`` first, the
copies are written atomically, and the copies installed before are checked again on
every later call, so a damaged or edited file is a refusal, never a silently wrong table.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from common.errors import DataError
from common.io import atomic_path, read_json, sha256_file, write_json

SUMS = "SHA256SUMS"
SOURCE = "SOURCE.md"
#: written beside installed copies: which files came from the embedded set
MARKER = ".embedded.json"


@dataclass(frozen=True)
class EmbeddedSet:
    """One embedded data set: a folder with its files, ``SOURCE.md`` and ``SHA256SUMS``."""

    folder: Path

    @property
    def name(self) -> str:
        return self.folder.name

    def checksums(self) -> dict[str, str]:
        """``{file name: hex SHA-256}`` as ``SHA256SUMS`` lists them."""
        sums = self.folder / SUMS
        fix = f"restore {sums} from the repository (git checkout -- {self.folder})"
        try:
            lines = sums.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"Cannot read {sums} ({type(e).__name__}): {fix}.") from None
        listed: dict[str, str] = {}
        for line in filter(None, map(str.strip, lines)):
            digest, _, name = line.partition("  ")
            name = name.lstrip("*")
            if len(digest) != 64 or not name or "/" in name or name.startswith("."):
                raise DataError(f"{sums} has a malformed line {line[:80]!r}: {fix}.")
            listed[name] = digest.lower()
        if not listed:
            raise DataError(f"{sums} lists no file: {fix}.")
        return listed

    def verify(self, names: Iterable[str] | None = None) -> dict[str, str]:
        """Checks the embedded files (all, or ``names``) against ``SHA256SUMS``; returns
        the checksums of those checked."""
        listed = self.checksums()
        wanted = listed if names is None else {n: listed[n] for n in names if n in listed}
        for name, digest in wanted.items():
            path = self.folder / name
            if not path.is_file():
                raise DataError(
                    f"The embedded file {path} is missing: restore it with "
                    f"`git checkout -- {path}` (or reinstall the package)."
                )
            if sha256_file(path) != digest:
                raise DataError(
                    f"The embedded file {path} does not match its checksum in {SUMS}: it was "
                    f"edited or damaged. Restore it with `git checkout -- {path}`."
                )
        return wanted

    def install(self, dest: str | Path, names: Iterable[str] | None = None) -> list[str]:
        """Copies the embedded files (all, or ``names``) into ``dest`` where they are
        missing; returns the names copied now.

        The embedded files are verified first. A file in ``dest`` that an earlier call
        installed (``dest/.embedded.json`` lists it) must still match, else the call
        refuses it. Where ``dest`` already holds a file of the set that did not come from
        here (the user's own copy or download), nothing is installed: the two are never
        mixed, and the loader judges the user's files as they are.

        Raises:
            DataError: a checksum does not match, or ``dest`` cannot be written.
        """
        dest = Path(dest)
        wanted = self.verify(names)
        installed = self._installed(dest)
        if any((dest / n).exists() and n not in installed for n in wanted):
            return []
        copied = []
        for name, digest in wanted.items():
            target = dest / name
            if not target.is_file():
                copied.append(name)
            elif installed.get(name) == digest and sha256_file(target) != digest:
                raise DataError(
                    f"{target} was installed from the embedded {self.name} set and has changed "
                    f"since (its checksum no longer matches): delete it and it is installed "
                    f"again from {self.folder}."
                )
        try:
            for name in copied:
                with atomic_path(dest / name) as tmp:
                    shutil.copyfile(self.folder / name, tmp)
            if copied:
                write_json(dest / MARKER, {**installed, **{n: wanted[n] for n in copied}})
        except OSError as e:
            raise DataError(
                f"Cannot copy the embedded {self.name} set into {dest} ({e.strerror or e}): "
                f"make data.root writable."
            ) from None
        return copied

    def _installed(self, dest: Path) -> dict[str, str]:
        marker = dest / MARKER
        if not marker.is_file():
            return {}
        recorded = read_json(marker, fix=f"delete {marker} and the files it lists.")
        return {str(k): str(v) for k, v in recorded.items()} if isinstance(recorded, dict) else {}


def embedded_sets(package_folder: str | Path) -> dict[str, EmbeddedSet]:
    """The embedded sets of a domain package (``<package>/embedded/<NAME>/``), by name."""
    root = Path(package_folder) / "embedded"
    if not root.is_dir():
        return {}
    return {
        path.name: EmbeddedSet(path)
        for path in sorted(root.iterdir())
        if path.is_dir() and (path / SUMS).is_file()
    }


__all__ = ["MARKER", "SOURCE", "SUMS", "EmbeddedSet", "embedded_sets"]
