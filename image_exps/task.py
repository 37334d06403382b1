"""Images as a :class:`common.train.Task`: torchvision data sets and models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from common.train.config import Config
from common.train.task import Task
from image_exps.data import ImageSplits, build_image_data
from image_exps.models import build_image_model

CONFIGS = Path(__file__).parent / "configs"


def build_data(cfg: Config) -> ImageSplits:
    d = cfg.data
    return build_image_data(
        d.name,
        d.root,
        download=d.download,
        augment=d.augment,
        cutout=d.cutout,
        val_fraction=d.val_fraction,
        image_size=d.image_size,
        n_examples=d.n_examples,
        seed=cfg.seed,
    )


def build_model(cfg: Config, splits: Any) -> nn.Module:
    m = cfg.model
    return build_image_model(
        m.name,
        splits.num_classes,
        in_channels=splits.in_channels,
        image_size=splits.image_size,
        pretrained=m.pretrained,
        dropout=m.dropout,
    )


TASK = Task(
    domain="image",
    config_cls=Config,
    default_config=CONFIGS / "digits.yaml",
    build_data=build_data,
    build_model=build_model,
)
