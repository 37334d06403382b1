"""The image data sets' transforms: the normalisation constants, :class:`Cutout`, and the
(train, eval) recipes of CIFAR and of ImageFolder trees. Augmentation draws from torch's RNG."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchvision import transforms as T

from image_exps.models import SMALL_IMAGE

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


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


def cifar_transforms(
    size: int, augment: bool, cutout: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> tuple[Callable, Callable]:
    """(train, eval) transforms of CIFAR's 32-pixel images seen at ``size`` pixels: a
    4-pixel-padded random crop and flip before any resize, then ``mean`` / ``std``."""
    resize = [T.Resize(size, antialias=True)] if size != 32 else []
    tail = [T.ToTensor(), T.Normalize(mean, std)]
    train_tf = T.Compose(
        ([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if augment else [])
        + resize
        + tail
        + ([Cutout(cutout)] if cutout else [])
    )
    return train_tf, T.Compose(resize + tail)


def folder_transforms(size: int, augment: bool, cutout: int) -> tuple[Callable, Callable]:
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


__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Cutout",
    "cifar_transforms",
    "folder_transforms",
]
