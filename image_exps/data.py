"""Image data sets behind one call: :func:`build_image_data` returns train / val / test splits.

Every loader is the real one: scikit-learn's bundled handwritten digits, torchvision's CIFAR
classes reading the python pickle batches, and torchvision's ``ImageFolder`` for the
ImageNet-layout data sets. Downloads happen only where torchvision can do them (CIFAR);
anything missing is a :class:`DataError` whose message says which files are expected where.

The split (digits' test set, the validation part carved from a training set, the
``n_examples`` subset) is drawn from ``split_seed`` alone: the run's seed never reaches it, so
a seed sweep varies training, not the test set. Augmentation draws from torch's RNG.

This module holds the registry, the checks of the options and the digits; CIFAR's files are
:mod:`image_exps.cifar`'s, ImageFolder trees :mod:`image_exps.folder`'s, the transforms
:mod:`image_exps.transforms`' and the RGB sets' splits :mod:`image_exps.splitting`'s.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from common.errors import DataError  # re-exported: the shared data error
from common.splits import SPLITS, Splits, check_split_options
from image_exps.cifar import CIFAR10Files, CIFAR100Files, cifar_splits  # classes re-exported
from image_exps.folder import FOLDER_TITLES, checked_loader, folder_splits  # loader re-exported
from image_exps.splitting import dataset_labels  # re-exported
from image_exps.transforms import (  # re-exported: the constants and Cutout
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Cutout,
)


class TensorImages(Dataset):
    """In-memory images ``(N, C, H, W)`` with integer labels; items are ``(tensor, int)``."""

    def __init__(self, images: torch.Tensor, targets: Sequence[int]) -> None:
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} labels")
        self.images = images
        self.targets = [int(t) for t in targets]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], self.targets[index]


# --------------------------------------------------------------------------- names


def is_folder_name(name: str) -> bool:
    """Whether ``data.name`` is a path to an ImageFolder tree rather than a data set's name
    (as ``model.name`` may be a local folder): it holds a path separator or starts with ``.``
    or ``~``."""
    return "/" in name or os.sep in name or name.startswith((".", "~"))


def canonical_name(name: str) -> str:
    """The registry key of image data set ``name`` (case, ``-`` and ``_`` ignored), or a
    folder's absolute path (see :func:`is_folder_name`)."""
    if is_folder_name(str(name)):  # absolute: the same name from whichever folder it runs
        return os.path.abspath(Path(name).expanduser())
    key = str(name).strip().lower().replace("-", "").replace("_", "")
    if key in DATASETS:
        return key
    close = difflib.get_close_matches(key, DATASETS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise DataError(
        f"Unknown image data set {name!r}.{hint} Known: {', '.join(DATASETS)}, or the path of "
        f"a folder in the ImageFolder layout (DIR/train/<class>/<image> and DIR/test/...)."
    )


# --------------------------------------------------------------------------- digits


def _digits(val_fraction: float, n_examples: int | None, split_seed: int) -> Splits:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = np.asarray(digits.target)
    rest, test = train_test_split(
        np.arange(len(y)), test_size=0.2, stratify=y, random_state=split_seed
    )
    if val_fraction > 0:
        try:
            train, val = train_test_split(
                rest, test_size=val_fraction, stratify=y[rest], random_state=split_seed
            )
        except ValueError as e:  # fewer validation digits than classes
            raise DataError(f"val_fraction={val_fraction} is too small for digits: {e}") from None
    else:
        train, val = rest, rest[:0]
    if n_examples is not None:
        train = train[np.random.default_rng(split_seed).permutation(len(train))[:n_examples]]

    def part(idx: np.ndarray) -> TensorImages:
        idx = np.sort(idx)
        return TensorImages(images[torch.as_tensor(idx, dtype=torch.long)], y[idx].tolist())

    splits = [part(i) for i in (train, val, test)]
    meta = {
        "dataset": "digits",
        "n_train": len(splits[0]),
        "n_val": len(splits[1]),
        "n_test": len(splits[2]),
        "split_seed": split_seed,
        "synthetic": False,
        "source": "sklearn.datasets.load_digits",
        "classes": [str(c) for c in digits.target_names],
    }
    # no transforms: train_eval is train
    return Splits(
        *splits,
        num_classes=10,
        meta=meta,
        inputs={"in_channels": 1, "image_size": 8},
        labels_of=dataset_labels,
    )


# --------------------------------------------------------------------------- entry point


def build_image_data(
    name: str,
    root: str | Path,
    *,
    download: bool = True,
    augment: bool = True,
    cutout: int = 0,
    val_fraction: float = 0.1,
    image_size: int | None = None,
    n_examples: int | None = None,
    split_seed: int = 0,
) -> Splits:
    """Build the train / val / test splits of image data set ``name`` (one of :data:`DATASETS`).

    Which examples land in which split depends on ``split_seed`` alone (and the options
    below), never on the run's seed or the global RNGs.

    Args:
        name: data set name (case, ``-`` and ``_`` are ignored: ``"CIFAR-10"`` works).
        root: directory holding the data (layouts in the error messages and the README).
        download: let torchvision download CIFAR when it is missing (others never download).
        augment: random crop + horizontal flip on the training split (not for ``digits``).
        cutout: side of the Cutout square on training images; 0 disables it (not ``digits``).
        val_fraction: part of the training set held out for validation, by a permutation
            seeded with ``split_seed`` (for ``digits`` a stratified split; ignored for
            ImageFolder sets that have both ``val`` and ``test``).
        image_size: side of the images the model sees (CIFAR: 32, resized when different;
            ImageFolder: 224; ignored for ``digits``, which are 8x8).
        n_examples: keep a random n of the training part (the first n of a
            ``split_seed`` permutation, not the first n files); val and test are unchanged.
        split_seed: seeds the split: digits' test set, the validation carve and the
            ``n_examples`` subset; recorded as ``meta["split_seed"]``. Not the augmentation
            (that draws from torch's RNG).

    Raises:
        DataError: unknown name, bad option, or a data set that is missing or corrupt.
    """
    key = canonical_name(name)
    split_seed = check_split_options(val_fraction, n_examples, split_seed)
    if cutout < 0:
        raise DataError(f"cutout must be >= 0 (0 disables it), got {cutout}.")
    if image_size is not None and image_size < 1:
        raise DataError(f"image_size must be >= 1 or None, got {image_size}.")
    request = ImageRequest(
        key, Path(root).expanduser(), download, augment, cutout, val_fraction, image_size,
        n_examples, split_seed,
    )  # fmt: skip
    return LOADERS.get(key, _load_folder)(request)


@dataclass(frozen=True)
class ImageRequest:
    """What :func:`build_image_data` was asked for, as every loader of :data:`LOADERS` takes it."""

    key: str
    root: Path
    download: bool
    augment: bool
    cutout: int
    val_fraction: float
    image_size: int | None
    n_examples: int | None
    split_seed: int


def _load_digits(r: ImageRequest) -> Splits:
    return _digits(r.val_fraction, r.n_examples, r.split_seed)


def _load_cifar(r: ImageRequest) -> Splits:
    return cifar_splits(
        r.key, r.root, r.download, r.augment, r.cutout, r.val_fraction, r.image_size,
        r.n_examples, r.split_seed,
    )  # fmt: skip


def _load_folder(r: ImageRequest) -> Splits:
    """An ImageFolder tree: ``root/<key>`` for a named set, the folder itself for a path."""
    base = Path(r.key) if is_folder_name(r.key) else r.root / r.key
    return folder_splits(
        r.key, base, r.augment, r.cutout, r.val_fraction, r.image_size, r.n_examples,
        r.split_seed,
    )  # fmt: skip


#: data set name -> its loader; a new data set is a loader and a line here (and, for an
#: ImageFolder set, its title in folder.FOLDER_TITLES). A folder's path needs no line.
LOADERS: dict[str, Callable[[ImageRequest], Splits]] = {
    "digits": _load_digits,
    "cifar10": _load_cifar,
    "cifar100": _load_cifar,
    **{name: _load_folder for name in FOLDER_TITLES},
}
DATASETS: tuple[str, ...] = tuple(LOADERS)
FOLDER_DATASETS: tuple[str, ...] = tuple(FOLDER_TITLES)


__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "DATASETS",
    "FOLDER_DATASETS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SPLITS",
    "CIFAR10Files",
    "CIFAR100Files",
    "Cutout",
    "DataError",
    "Splits",
    "TensorImages",
    "build_image_data",
    "checked_loader",
    "dataset_labels",
]
