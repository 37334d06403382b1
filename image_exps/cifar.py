"""CIFAR-10 and CIFAR-100 from torchvision's python pickle batches: the files checked for
presence and parsed by torchvision, an archive left in ``root`` extracted, a download
verified by its md5 before it is extracted, and a missing or corrupt file a
:class:`DataError` that says which files are expected where."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import ClassVar

import numpy as np
import torchvision
from torchvision.datasets.utils import calculate_md5, download_url, extract_archive

from common.errors import DataError
from common.splits import Splits
from image_exps.splitting import carve_indices, rgb_splits
from image_exps.transforms import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    cifar_transforms,
)


def _no_md5(files: list[list[str]]) -> list[list[str | None]]:
    return [[name, None] for name, _ in files]


class CIFAR10Files(torchvision.datasets.CIFAR10):
    """torchvision's CIFAR10 whose integrity check tests that the files are present.

    The archive's md5 is verified when it is downloaded (``tgz_md5`` is unchanged here);
    re-hashing the extracted batches on every start adds nothing to that, and would reject
    batches written in the same format by other tools (the tests' tiny fixtures). Parsing is
    torchvision's own ``__init__``.
    """

    train_list: ClassVar = _no_md5(torchvision.datasets.CIFAR10.train_list)
    test_list: ClassVar = _no_md5(torchvision.datasets.CIFAR10.test_list)
    meta: ClassVar = {**torchvision.datasets.CIFAR10.meta, "md5": None}


class CIFAR100Files(torchvision.datasets.CIFAR100):
    """torchvision's CIFAR100 with a presence-only integrity check (see :class:`CIFAR10Files`)."""

    train_list: ClassVar = _no_md5(torchvision.datasets.CIFAR100.train_list)
    test_list: ClassVar = _no_md5(torchvision.datasets.CIFAR100.test_list)
    meta: ClassVar = {**torchvision.datasets.CIFAR100.meta, "md5": None}


_CIFAR = {
    "cifar10": ("CIFAR-10", CIFAR10Files, CIFAR10_MEAN, CIFAR10_STD),
    "cifar100": ("CIFAR-100", CIFAR100Files, CIFAR100_MEAN, CIFAR100_STD),
}


def _cifar_files(cls: type) -> list[str]:
    return [f for f, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]


def _cifar_missing(cls: type, root: Path) -> list[str]:
    return [f for f in _cifar_files(cls) if not (root / cls.base_folder / f).is_file()]


def _cifar_bad_file(cls: type, root: Path) -> tuple[Path, str] | None:
    """The first CIFAR file that does not parse as torchvision expects, and why."""
    for name in _cifar_files(cls):
        path = root / cls.base_folder / name
        try:
            with open(path, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
        except Exception as e:
            return path, f"{type(e).__name__}: {e}"
        if not isinstance(entry, dict):
            return path, f"holds a {type(entry).__name__}, not a dict"
        if name == cls.meta["filename"]:
            if cls.meta["key"] not in entry:
                return path, f"has no {cls.meta['key']!r} entry"
            continue
        labels = entry.get("labels", entry.get("fine_labels"))
        if "data" not in entry or labels is None:
            return path, "lacks the 'data' or 'labels' / 'fine_labels' entry"
        data = np.asarray(entry["data"])
        if data.size % 3072 or data.size // 3072 != len(labels):
            return path, f"data of shape {data.shape} does not match {len(labels)} labels"
    return None


def _download_cifar(cls: type, root: Path) -> str:
    """Download ``cls.url`` and extract it into ``root``: '' or why that failed.

    The archive is written under a temporary name and takes its own only once its md5 is
    ``cls.tgz_md5``, so an interrupted or wrong download leaves nothing that a later run
    would extract (an archive found in ``root`` is extracted unchecked: the user's own).
    """
    partial = root / f".{cls.filename}.part"
    try:
        partial.unlink(missing_ok=True)  # a killed run's: download_url would keep it
        download_url(cls.url, str(root), filename=partial.name)
        md5 = calculate_md5(partial)
        if md5 != cls.tgz_md5:
            return (
                f" Downloading {cls.url} gave a file whose md5 is {md5}, not {cls.tgz_md5} "
                f"(an interrupted transfer, or another file); it was deleted."
            )
        os.replace(partial, root / cls.filename)
        extract_archive(str(root / cls.filename), str(root))
    except Exception as e:
        return f" Downloading {cls.url} failed ({type(e).__name__}: {e})."
    finally:
        partial.unlink(missing_ok=True)
    return ""


def _ensure_cifar(title: str, cls: type, root: Path, download: bool, how: str) -> None:
    """The CIFAR files under ``root``: extracted from an archive left there, else downloaded
    (with ``download``); a DataError naming every expected file when some are still missing."""
    folder, archive = root / cls.base_folder, root / cls.filename
    if _cifar_missing(cls, root) and archive.is_file():
        try:  # an archive put there by hand: extract it (its md5 is the user's business)
            extract_archive(str(archive), str(root))
        except Exception as e:
            raise DataError(
                f"Cannot extract {archive} ({type(e).__name__}: {e}). The archive looks "
                f"corrupt: delete it and download it again. {how}"
            ) from None
    download_error = ""
    if _cifar_missing(cls, root) and download:
        download_error = _download_cifar(cls, root)
    missing = _cifar_missing(cls, root)
    if missing:
        which = "all" if len(missing) == len(_cifar_files(cls)) else ", ".join(missing)
        raise DataError(
            f"{title} not found under {root}.{download_error} Expected the directory {folder} "
            f"with the files {', '.join(_cifar_files(cls))} (missing: {which}), "
            f"or the archive {archive}. {how}"
        )


def cifar_splits(
    key: str,
    root: Path,
    download: bool,
    augment: bool,
    cutout: int,
    val_fraction: float,
    image_size: int | None,
    n_examples: int | None,
    split_seed: int,
) -> Splits:
    """The splits of CIFAR set ``key`` (``cifar10`` or ``cifar100``) under ``root``."""
    title, cls, mean, std = _CIFAR[key]
    folder = root / cls.base_folder
    how = (
        f"Download {cls.url} and extract it into {root} (tar xzf {cls.filename}), or leave the "
        f"archive there, or run once with network access and data.download=true."
    )
    _ensure_cifar(title, cls, root, download, how)

    size = image_size or 32
    train_tf, eval_tf = cifar_transforms(size, augment, cutout, mean, std)
    try:
        full_train = cls(str(root), train=True, transform=train_tf)
        test = cls(str(root), train=False, transform=eval_tf)
    except Exception as e:
        bad = _cifar_bad_file(cls, root)
        where, why = bad if bad else (folder, f"{type(e).__name__}: {e}")
        raise DataError(
            f"{title} file {where} is corrupt ({why}). Delete it (or the whole {folder}) and "
            f"download the data set again. {how}"
        ) from None

    indices = carve_indices(len(full_train), val_fraction, split_seed, n_examples)
    return rgb_splits(key, full_train, eval_tf, indices, None, test, folder, size, split_seed)


__all__ = ["CIFAR10Files", "CIFAR100Files", "cifar_splits"]
