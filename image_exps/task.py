"""Images as a :class:`common.train.Task`: torchvision data sets and models."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from common.splits import Splits
from common.train.config import Config, DataConfig, ModelConfig
from common.train.task import Task
from common.train.typed import keyfield
from image_exps.data import build_image_data, canonical_name
from image_exps.models import build_image_model

CONFIGS = Path(__file__).parent / "configs"


class ImageDataConfig(DataConfig):
    """Image data: augmentation and size."""

    augment: bool = keyfield(True, "training-time augmentation (random crop and flip)")
    cutout: int = keyfield(0, "cutout square side in pixels (0 = off)", min=0)
    image_size: int | None = keyfield(None, "resize images to this side (None = native)", min=1)


class ImageModelConfig(ModelConfig):
    """Image models: torchvision's, optionally with pretrained weights."""

    pretrained: bool = keyfield(False, "start from torchvision's pretrained weights")


class ImageConfig(Config):
    data: ImageDataConfig = keyfield(factory=ImageDataConfig)
    model: ImageModelConfig = keyfield(factory=ImageModelConfig)


def build_data(cfg: ImageConfig) -> Splits:
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
        split_seed=d.split_seed,
    )


def build_model(cfg: ImageConfig, splits: Splits) -> nn.Module:
    m = cfg.model
    return build_image_model(
        m.name,
        splits.num_classes,
        in_channels=splits.inputs["in_channels"],
        image_size=splits.inputs["image_size"],
        pretrained=m.pretrained,
        dropout=m.dropout,
    )


TASK = Task(
    domain="image",
    config_cls=ImageConfig,
    default_config=CONFIGS / "digits.yaml",
    build_data=build_data,
    build_model=build_model,
    canonical_name=canonical_name,
)
