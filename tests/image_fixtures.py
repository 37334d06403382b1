"""Tiny image data sets written in the real on-disk formats, so the real loaders read them.

* :func:`write_cifar10` / :func:`write_cifar100`: python pickle batches laid out exactly as in
  the archives from https://www.cs.toronto.edu/~kriz/cifar.html (latin1-readable dicts with
  ``data`` as a uint8 ``(n, 3072)`` array, channel-major rows, and ``labels`` /
  ``fine_labels``), plus the ``batches.meta`` / ``meta`` files.
* :func:`write_cifar_archive`: the same, packed as ``cifar-10-python.tar.gz`` (or 100).
* :func:`write_image_folder`: an ImageFolder tree ``<root>/<name>/<split>/<class>/<i>.png``.

Image ``k`` of a CIFAR batch is filled with the value :func:`cifar_pixel` (``k``-th image
overall), so tests can recompute exactly what a loader must return.
"""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_NAMES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"
]  # fmt: skip


def cifar_pixel(index: int) -> int:
    """The constant pixel value of the ``index``-th image written (train then test)."""
    return (index * 37 + 11) % 256


def _cifar_images(start: int, n: int) -> np.ndarray:
    """``n`` images as CIFAR rows: channel-major 3x32x32, image k constant, bar a marker.

    Pixel (0, 0) of the red channel is 255 - value, so flips and crops are detectable.
    """
    data = np.empty((n, 3, 32, 32), dtype=np.uint8)
    for k in range(n):
        data[k] = cifar_pixel(start + k)
        data[k, 0, 0, 0] = 255 - cifar_pixel(start + k)
    return data.reshape(n, 3072)


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(
    root: str | Path, n_per_batch: int = 4, n_test: int = 6, num_classes: int = 10
) -> Path:
    """Write ``<root>/cifar-10-batches-py`` (5 training batches, test batch, meta); return it.

    Labels cycle through ``range(num_classes)``: image k (overall) has label ``k % 10``.
    """
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    start = 0
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else n_per_batch
        labels = [(start + k) % num_classes for k in range(n)]
        _dump(
            folder / name,
            {
                "batch_label": f"{name} of 6",
                "labels": labels,
                "data": _cifar_images(start, n),
                "filenames": [f"img_{start + k}.png" for k in range(n)],
            },
        )
        start += n
    _dump(
        folder / "batches.meta",
        {"num_cases_per_batch": n_per_batch, "label_names": CIFAR10_NAMES, "num_vis": 3072},
    )
    return folder


def write_cifar100(root: str | Path, n_train: int = 20, n_test: int = 10) -> Path:
    """Write ``<root>/cifar-100-python`` (``train``, ``test``, ``meta``); return it.

    Image k (overall) has fine label ``(7 * k) % 100`` and coarse label ``fine // 5``.
    """
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, start, n in (("train", 0, n_train), ("test", n_train, n_test)):
        fine = [(7 * (start + k)) % 100 for k in range(n)]
        _dump(
            folder / name,
            {
                "filenames": [f"img_{start + k}.png" for k in range(n)],
                "batch_label": f"{name} batch 1 of 1",
                "fine_labels": fine,
                "coarse_labels": [f // 5 for f in fine],
                "data": _cifar_images(start, n),
            },
        )
    _dump(
        folder / "meta",
        {
            "fine_label_names": [f"fine_{i:02d}" for i in range(100)],
            "coarse_label_names": [f"coarse_{i:02d}" for i in range(20)],
        },
    )
    return folder


def write_cifar_archive(root: str | Path, which: str = "cifar10", **kwargs) -> Path:
    """Write the data set into a scratch dir and pack it as torchvision's archive in ``root``."""
    root = Path(root)
    scratch = root / f".scratch-{which}"
    folder = (write_cifar10 if which == "cifar10" else write_cifar100)(scratch, **kwargs)
    name = "cifar-10-python.tar.gz" if which == "cifar10" else "cifar-100-python.tar.gz"
    with tarfile.open(root / name, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return root / name


def write_image_folder(
    root: str | Path,
    name: str = "flowers",
    splits: tuple[str, ...] = ("train", "test"),
    classes: tuple[str, ...] = ("daisy", "rose", "tulip"),
    n_per_class: int | dict[str, int] = 3,
    size: tuple[int, int] = (14, 12),
) -> Path:
    """Write ``<root>/<name>/<split>/<class>/<i>.png`` RGB images; return ``<root>/<name>``.

    ``n_per_class`` may map split -> count. Class c's images are filled with colour
    ``(40 * c, 255 - 40 * c, 7 * i)`` (image i), so labels are recoverable from pixels.
    """
    base = Path(root) / name
    for split in splits:
        n = n_per_class[split] if isinstance(n_per_class, dict) else n_per_class
        for c, cls in enumerate(classes):
            d = base / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                colour = (40 * c % 256, (255 - 40 * c) % 256, 7 * i % 256)
                Image.new("RGB", size, colour).save(d / f"{i}.png")
    return base


def corrupt(path: str | Path, keep: int = 20) -> Path:
    """Truncate a file to its first ``keep`` bytes (a broken download)."""
    path = Path(path)
    path.write_bytes(path.read_bytes()[:keep])
    return path


__all__ = [
    "CIFAR10_NAMES",
    "cifar_pixel",
    "corrupt",
    "write_cifar10",
    "write_cifar100",
    "write_cifar_archive",
    "write_image_folder",
]
