"""Image data sets in torchvision's ImageFolder layout: the named sets (ImageNet, CUB-200,
...) under ``root/<name>`` and any folder given by its path. Nothing here downloads: a
missing split, class folders that differ between splits or an unreadable image is a
:class:`DataError` that says how the tree must look."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torchvision
from torchvision.datasets.folder import default_loader

from common.errors import DataError
from common.splits import Splits
from image_exps.splitting import carve_indices, rgb_splits
from image_exps.transforms import folder_transforms

#: the named ImageFolder sets and the titles their messages give them
FOLDER_TITLES = {
    "imagenet": "ImageNet (ILSVRC-2012)",
    "cub200": "CUB-200-2011",
    "caltech256": "Caltech-256",
    "aircraft": "FGVC-Aircraft",
    "indoor": "MIT Indoor-67",
    "flowers": "Oxford Flowers-102",
    "cars": "Stanford Cars",
    "dogs": "Stanford Dogs",
}


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


def _check_classes(full_train: Any, held_out: list[Any], train_dir: Path, layout: str) -> None:
    """The held-out splits have the training split's class folders (else labels differ)."""
    for other in held_out:
        if other.classes != full_train.classes:
            only_train = sorted(set(full_train.classes) - set(other.classes))
            only_other = sorted(set(other.classes) - set(full_train.classes))
            raise DataError(
                f"The class folders of {train_dir} and {other.root} differ (only in train: "
                f"{only_train[:10]}, only in {Path(other.root).name}: {only_other[:10]}); labels "
                f"would not match. {layout}"
            )


def folder_splits(
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
    title = FOLDER_TITLES.get(key, f"The image folder {base}")
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
    train_tf, eval_tf = folder_transforms(size, augment, cutout)

    full_train = _image_folder(train_dir, train_tf, layout)
    both = val_dir.is_dir() and test_dir.is_dir()
    test_src = test_dir if test_dir.is_dir() else val_dir
    test = _image_folder(test_src, eval_tf, layout)
    held_out = [test]
    if both:
        held_out.insert(0, _image_folder(val_dir, eval_tf, layout))
    _check_classes(full_train, held_out, train_dir, layout)

    indices = carve_indices(len(full_train), val_fraction, split_seed, n_examples, carve=not both)
    val = held_out[0] if both else None
    return rgb_splits(key, full_train, eval_tf, indices, val, test, base, size, split_seed)


__all__ = ["FOLDER_TITLES", "checked_loader", "folder_splits"]
