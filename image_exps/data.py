"""Image data sets behind one call: :func:`build_image_data` returns train / val / test splits.

Every loader is the real one: scikit-learn's bundled handwritten digits, torchvision's CIFAR
classes reading the python pickle batches, and torchvision's ``ImageFolder`` for the
ImageNet-layout data sets. Downloads happen only where torchvision can do them (CIFAR);
anything missing is a :class:`DataError` whose message says which files are expected where.

The split (digits' test set, the validation part carved from a training set, the
``n_examples`` subset) is drawn from ``split_seed`` alone: the run's seed never reaches it, so
a seed sweep varies training, not the test set. Augmentation draws from torch's RNG.
"""

from __future__ import annotations

import copy
import difflib
import os
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torchvision
from torch.utils.data import Dataset, Subset
from torchvision import transforms as T
from torchvision.datasets.folder import default_loader
from torchvision.datasets.utils import calculate_md5, download_url, extract_archive

from common.errors import DataError  # re-exported: the shared data error
from common.splits import SPLITS, Splits, check_split_options
from image_exps.models import SMALL_IMAGE

_FOLDER_TITLES = {
    "imagenet": "ImageNet (ILSVRC-2012)",
    "cub200": "CUB-200-2011",
    "caltech256": "Caltech-256",
    "aircraft": "FGVC-Aircraft",
    "indoor": "MIT Indoor-67",
    "flowers": "Oxford Flowers-102",
    "cars": "Stanford Cars",
    "dogs": "Stanford Dogs",
}

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def dataset_labels(dataset: Dataset) -> np.ndarray | None:
    """Integer label of every item of ``dataset`` in order, read without loading images.

    From the ``targets`` list that torchvision's CIFAR / ImageFolder and :class:`TensorImages`
    keep, through any nesting of ``Subset``; ``None`` for a dataset without one (or with a
    ``target_transform``, which ``targets`` would not reflect).
    """
    if isinstance(dataset, Subset):
        inner = dataset_labels(dataset.dataset)
        return None if inner is None else inner[np.asarray(dataset.indices, dtype=np.int64)]
    targets = getattr(dataset, "targets", None)
    if targets is None or getattr(dataset, "target_transform", None) is not None:
        return None
    return np.asarray(targets, dtype=np.int64).reshape(-1)


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


class Cutout:
    """Zero a random ``size`` x ``size`` square (clipped at the borders) of a CHW tensor.

    The square's centre is uniform over the image (DeVries & Taylor, 2017) and drawn with
    ``torch.randint``, so seeding torch (per DataLoader worker, as torch does) fixes it.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"cutout size must be >= 1, got {size}")
        self.size = int(size)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
        y0, x0 = cy - self.size // 2, cx - self.size // 2
        img = img.clone()
        img[..., max(y0, 0) : y0 + self.size, max(x0, 0) : x0 + self.size] = 0
        return img

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size})"


# --------------------------------------------------------------------------- helpers


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


def _carve(
    n: int, val_fraction: float, split_seed: int, n_examples: int | None, carve: bool = True
) -> tuple[list[int], list[int]]:
    """(train, val) indices of ``range(n)`` from one ``split_seed`` permutation, each sorted.

    The first ``round(val_fraction * n)`` permuted indices are the validation part (when
    ``carve``); ``n_examples`` keeps the first n of the rest in that same permuted order: a
    random subset (ImageFolder lists its files class by class, so ``range(n_examples)`` would
    hold few classes), nested as n grows, and never moving the validation part.
    """
    perm = np.random.default_rng(split_seed).permutation(n)
    n_val = round(val_fraction * n) if carve else 0
    val, train = perm[:n_val], perm[n_val:]
    if n_examples is not None:
        train = train[:n_examples]
    return sorted(train.tolist()), sorted(val.tolist())


def _with_transform(dataset: Any, transform: Callable | None) -> Any:
    """A shallow copy of a torchvision dataset (same arrays / file list), another transform."""
    view = copy.copy(dataset)
    view.transform = transform
    if hasattr(view, "transforms"):
        view.transforms = torchvision.datasets.vision.StandardTransform(
            transform, getattr(view, "target_transform", None)
        )
    return view


def _subset(dataset: Dataset, indices: list[int], n_total: int) -> Dataset:
    return dataset if len(indices) == n_total else Subset(dataset, indices)


# --------------------------------------------------------------------------- digits


def _rgb_splits(
    key: str,
    full_train: Any,
    eval_tf: Callable,
    indices: tuple[list[int], list[int]],
    val: Dataset | None,
    test: Dataset,
    source: Path,
    size: int,
    split_seed: int,
) -> Splits:
    """The splits of an RGB data set on disk (CIFAR or an ImageFolder tree), with its meta.

    ``indices`` = (train, val) of ``full_train`` from :func:`_carve`; ``val`` given means a
    validation set of its own (the val indices are then empty). ``train_eval`` and a carved
    ``val`` read ``full_train``'s images through ``eval_tf``.
    """
    n = len(full_train)
    train_idx, val_idx = indices
    eval_view = _with_transform(full_train, eval_tf)
    train = _subset(full_train, train_idx, n)
    train_eval = _subset(eval_view, train_idx, n)
    if val is None:
        val = Subset(eval_view, val_idx)
    meta = {
        "dataset": key,
        "n_train": len(train),
        "n_val": len(val),
        "n_test": len(test),
        "split_seed": split_seed,
        "synthetic": False,
        "source": str(source),
        "classes": list(full_train.classes),
    }
    return Splits(
        train,
        val,
        test,
        num_classes=len(full_train.classes),
        meta=meta,
        train_eval=train_eval,
        inputs={"in_channels": 3, "image_size": size},
        labels_of=dataset_labels,
    )


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


# --------------------------------------------------------------------------- CIFAR


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


def _cifar(
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
    title, cls, mean, std = _CIFAR[key]
    folder, archive = root / cls.base_folder, root / cls.filename
    how = (
        f"Download {cls.url} and extract it into {root} (tar xzf {cls.filename}), or leave the "
        f"archive there, or run once with network access and data.download=true."
    )
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

    size = image_size or 32
    resize = [T.Resize(size, antialias=True)] if size != 32 else []
    tail = [T.ToTensor(), T.Normalize(mean, std)]
    train_tf = T.Compose(
        ([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if augment else [])
        + resize
        + tail
        + ([Cutout(cutout)] if cutout else [])
    )
    eval_tf = T.Compose(resize + tail)
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

    indices = _carve(len(full_train), val_fraction, split_seed, n_examples)
    return _rgb_splits(key, full_train, eval_tf, indices, None, test, folder, size, split_seed)


# --------------------------------------------------------------------------- ImageFolder


def checked_loader(path: str) -> Any:
    """torchvision's default image loader; a file it cannot read is a DataError naming it."""
    try:
        return default_loader(path)
    except Exception as e:
        raise DataError(
            f"Cannot read image {path} ({type(e).__name__}: {e}). The file is corrupt or not "
            f"an image: delete or replace it."
        ) from None


def _folder_layout(title: str, base: Path) -> str:
    return (
        f"{title} is read in the ImageFolder layout: {base}/train/<class>/"
        f"<image>.jpg for training and {base}/val/<class>/<image>.jpg and/or "
        f"{base}/test/<class>/<image>.jpg for evaluation (the same class folder names in "
        f"every split; with only one of val/test it is the test set and the validation set "
        f"is carved from train). It is not downloaded automatically: get it from its "
        f"authors and arrange it that way."
    )


def _image_folder(directory: Path, transform: Callable, layout: str) -> Any:
    try:
        return torchvision.datasets.ImageFolder(
            str(directory), transform=transform, loader=checked_loader
        )
    except (FileNotFoundError, OSError) as e:
        raise DataError(f"Cannot read {directory}: {e}. {layout}") from None


def _folder(
    key: str,
    base: Path,
    augment: bool,
    cutout: int,
    val_fraction: float,
    image_size: int | None,
    n_examples: int | None,
    split_seed: int,
) -> Splits:
    """An ImageFolder tree at ``base``: one of the named sets or a folder given by path."""
    title = _FOLDER_TITLES.get(key, f"The image folder {base}")
    layout = _folder_layout(title, base)
    train_dir, val_dir, test_dir = base / "train", base / "val", base / "test"
    if not train_dir.is_dir() or not (val_dir.is_dir() or test_dir.is_dir()):
        found = [d.name for d in (train_dir, val_dir, test_dir) if d.is_dir()]
        raise DataError(
            f"{title} not found: {base} has "
            f"{'only ' + ', '.join(found) if found else 'no train/val/test directories'}. "
            f"{layout}"
        )

    size = image_size or 224
    train_tf, eval_tf = _folder_transforms(size, augment, cutout)

    full_train = _image_folder(train_dir, train_tf, layout)
    both = val_dir.is_dir() and test_dir.is_dir()
    test_src = test_dir if test_dir.is_dir() else val_dir
    test = _image_folder(test_src, eval_tf, layout)
    held_out = [test]
    if both:
        held_out.insert(0, _image_folder(val_dir, eval_tf, layout))
    for other in held_out:
        if other.classes != full_train.classes:
            only_train = sorted(set(full_train.classes) - set(other.classes))
            only_other = sorted(set(other.classes) - set(full_train.classes))
            raise DataError(
                f"The class folders of {train_dir} and {other.root} differ (only in train: "
                f"{only_train[:10]}, only in {Path(other.root).name}: {only_other[:10]}); labels "
                f"would not match. {layout}"
            )

    indices = _carve(len(full_train), val_fraction, split_seed, n_examples, carve=not both)
    val = held_out[0] if both else None
    return _rgb_splits(key, full_train, eval_tf, indices, val, test, base, size, split_seed)


def _folder_transforms(size: int, augment: bool, cutout: int) -> tuple[Callable, Callable]:
    """(train, eval) transforms of an ImageFolder set seen at ``size`` pixels: ImageNet's
    resized crop and flip, or, for small images (CIFAR-like, at most ``SMALL_IMAGE``), the
    CIFAR recipe (resize, then a 4-pixel-padded random crop and flip), whose resized crop
    would throw most of a 32-pixel image away."""
    norm = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if size <= SMALL_IMAGE:
        center = [T.Resize((size, size), antialias=True)]
        crop = [*center, T.RandomCrop(size, padding=4), T.RandomHorizontalFlip()]
    else:
        center = [T.Resize(round(256 * size / 224), antialias=True), T.CenterCrop(size)]
        crop = [T.RandomResizedCrop(size, antialias=True), T.RandomHorizontalFlip()]
    cut = [Cutout(cutout)] if cutout else []
    return T.Compose((crop if augment else center) + norm + cut), T.Compose(center + norm)


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
    return _cifar(
        r.key, r.root, r.download, r.augment, r.cutout, r.val_fraction, r.image_size,
        r.n_examples, r.split_seed,
    )  # fmt: skip


def _load_folder(r: ImageRequest) -> Splits:
    """An ImageFolder tree: ``root/<key>`` for a named set, the folder itself for a path."""
    base = Path(r.key) if is_folder_name(r.key) else r.root / r.key
    return _folder(
        r.key, base, r.augment, r.cutout, r.val_fraction, r.image_size, r.n_examples,
        r.split_seed,
    )  # fmt: skip


#: data set name -> its loader; a new data set is a loader and a line here (and, for an
#: ImageFolder set, its title in _FOLDER_TITLES). A folder's path needs no line.
LOADERS: dict[str, Callable[[ImageRequest], Splits]] = {
    "digits": _load_digits,
    "cifar10": _load_cifar,
    "cifar100": _load_cifar,
    **{name: _load_folder for name in _FOLDER_TITLES},
}
DATASETS: tuple[str, ...] = tuple(LOADERS)
FOLDER_DATASETS: tuple[str, ...] = tuple(_FOLDER_TITLES)


__all__ = [
    "DATASETS",
    "FOLDER_DATASETS",
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
