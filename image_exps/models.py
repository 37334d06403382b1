"""Image classifiers by name: :func:`build_image_model`.

* ``cnn``: a small CNN (no BatchNorm, no dropout by default) for digits and smoke runs; its
  results do not depend on how a batch is split across processes.
* ``resnet18/34/50``, ``vgg11_bn``, ``vit_b_16``: torchvision's architectures. Trained from
  scratch on small images (``image_size <= 64``) the ResNets get the usual CIFAR stem (3x3
  stride-1 first convolution, no max-pool) and VGG a global-average-pool + one linear layer
  head instead of the 4096-wide ImageNet classifier. Pretrained models keep the ImageNet
  architecture (the weights belong to it) and get a fresh head for ``num_classes``.
* ``wrn16_2``, ``wrn16_8``, ``wrn28_10``: Wide ResNets (Zagoruyko & Komodakis, 2016) for
  32x32 images.
* ``resnet20/32/44/56``: the CIFAR ResNets of He et al. (2016), named as the public CIFAR-10
  checkpoints name their weights (:mod:`image_exps.cifar_resnet`).
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Callable
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from common.errors import ModelError
from image_exps.cifar_resnet import DEPTHS as CIFAR_DEPTHS
from image_exps.cifar_resnet import CifarResNet

MODELS: tuple[str, ...] = (
    "cnn",
    "resnet18",
    "resnet34",
    "resnet50",
    "vgg11_bn",
    "vit_b_16",
    "wrn16_2",
    "wrn16_8",
    "wrn28_10",
    *CIFAR_DEPTHS,
)
_TORCHVISION = ("resnet18", "resnet34", "resnet50", "vgg11_bn", "vit_b_16")
_WRN = {"wrn16_2": (16, 2), "wrn16_8": (16, 8), "wrn28_10": (28, 10)}
SMALL_IMAGE = 64  # image_size <= this: CIFAR-style ResNet stem and VGG head (from scratch)


# --------------------------------------------------------------------------- small CNN


class SmallCNN(nn.Sequential):
    """conv(32)-ReLU-conv(64)-ReLU-maxpool-avgpool(2x2)-linear(128)-ReLU-linear; any size >= 2."""

    def __init__(self, num_classes: int, in_channels: int = 1, dropout: float = 0.0) -> None:
        super().__init__(
            nn.Conv2d(in_channels, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 2 * 2, 128),
            nn.ReLU(),
            *([nn.Dropout(dropout)] if dropout > 0 else []),
            nn.Linear(128, num_classes),
        )


# --------------------------------------------------------------------------- Wide ResNet


class WideBasic(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3, plus shortcut.

    When the shape changes, the shortcut is a 1x1 convolution of the pre-activated input.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = (
            None if c_in == c_out and stride == 1 else nn.Conv2d(c_in, c_out, 1, stride, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.dropout(torch.relu(self.bn2(out))))
        return out + skip


class WideResNet(nn.Module):
    """WRN-``depth``-``widen``: depth = 6n + 4, three groups of n blocks, widths 16k/32k/64k."""

    def __init__(
        self,
        depth: int,
        widen: int,
        num_classes: int,
        in_channels: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if (depth - 4) % 6 or depth < 10:
            raise ModelError(f"Wide ResNet depth must be 6n + 4 (10, 16, 22, 28, ...), got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        blocks: list[nn.Module] = []
        for group in range(3):
            for i in range(n):
                c_in = widths[group] if i == 0 else widths[group + 1]
                stride = 2 if group > 0 and i == 0 else 1
                blocks.append(WideBasic(c_in, widths[group + 1], stride, dropout))
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(widths[3])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn(self.blocks(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(out), 1))


# --------------------------------------------------------------------------- torchvision


def _conv_like(conv: nn.Conv2d, in_channels: int, keep_weights: bool) -> nn.Conv2d:
    """``conv`` rebuilt for ``in_channels`` inputs.

    With ``keep_weights`` (pretrained), each new input channel gets the mean of the RGB
    filters times 3 / in_channels, so an image repeated over the channels gives the old output.
    """
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        bias=conv.bias is not None,
    )
    if keep_weights:
        with torch.no_grad():
            mean = conv.weight.mean(1, keepdim=True) * (conv.in_channels / in_channels)
            new.weight.copy_(mean.expand_as(new.weight))
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
    else:  # torchvision's ResNet / VGG convolution initialisation
        nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
        if new.bias is not None:
            nn.init.zeros_(new.bias)
    return new


def _small_vgg(num_classes: int, in_channels: int, dropout: float) -> nn.Module:
    """vgg11_bn's convolutional trunk with a CIFAR head: global average pool + one linear layer.

    Built on the meta device, so the 4096-wide ImageNet classifier that torchvision's
    constructor makes is never allocated, then initialised as torchvision initialises VGG.
    """
    with torch.device("meta"):
        model = torchvision.models.vgg11_bn(weights=None, dropout=dropout)
        model.features[0] = nn.Conv2d(in_channels, 64, 3, padding=1)
        model.avgpool = nn.AdaptiveAvgPool2d(1)
        model.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(512, num_classes))
    model.to_empty(device=torch.get_default_device())
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
    return model


def _checkpoint_path(weights: torchvision.models.WeightsEnum) -> str:
    name = os.path.basename(urlparse(weights.url).path)
    return os.path.join(torch.hub.get_dir(), "checkpoints", name)


def _load_pretrained(name: str, ctor: Callable[..., nn.Module], **kwargs) -> nn.Module:
    weights = torchvision.models.get_model_weights(name).DEFAULT
    path = _checkpoint_path(weights)
    cached = os.path.isfile(path)
    try:
        return ctor(weights=weights, progress=False, **kwargs)
    except Exception as e:
        why = f"{type(e).__name__}: {e}"
        if cached:
            raise ModelError(
                f"The cached {name} weights {path} cannot be loaded ({why}). The file is "
                f"corrupt or incomplete: delete it and run again with network access, or put "
                f"a fresh copy of {weights.url} there."
            ) from None
        raise ModelError(
            f"Pretrained {name} weights ({weights}) are not in the torch hub cache and could "
            f"not be downloaded ({why}). Download {weights.url} and save it as {path} "
            f"(the directory is torch.hub.get_dir()/checkpoints, set by $TORCH_HOME), or run "
            f"once with network access, or set pretrained=false."
        ) from None


def _torchvision_model(
    name: str,
    num_classes: int,
    in_channels: int,
    image_size: int,
    pretrained: bool,
    dropout: float,
) -> nn.Module:
    ctor = getattr(torchvision.models, name)
    small = image_size <= SMALL_IMAGE and not pretrained
    kwargs: dict = {}
    if name == "vgg11_bn":
        kwargs["dropout"] = dropout
    if name == "vit_b_16":
        kwargs["dropout"] = dropout
        if pretrained and image_size != 224:
            raise ModelError(
                f"Pretrained vit_b_16 expects image_size=224 (its position embeddings), got "
                f"{image_size}; set data.image_size=224 or pretrained=false."
            )
        if image_size % 16:
            raise ModelError(f"vit_b_16 needs image_size divisible by 16, got {image_size}.")
        if not pretrained:
            kwargs["image_size"] = image_size

    if name == "vgg11_bn" and small:
        return _small_vgg(num_classes, in_channels, dropout)
    if pretrained:
        model = _load_pretrained(name, ctor, **kwargs)
    else:
        model = ctor(weights=None, num_classes=num_classes, **kwargs)

    if name.startswith("resnet"):
        if small:  # CIFAR stem: keep 32x32 resolution into the first residual stage
            model.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
            nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
            model.maxpool = nn.Identity()
        elif in_channels != 3:
            model.conv1 = _conv_like(model.conv1, in_channels, pretrained)
        if pretrained:
            model.fc = nn.Linear(model.fc.in_features, num_classes)
        if dropout > 0:
            model.fc = nn.Sequential(nn.Dropout(dropout), model.fc)
    elif name == "vgg11_bn":
        if in_channels != 3:
            model.features[0] = _conv_like(model.features[0], in_channels, pretrained)
        if pretrained:
            model.classifier[-1] = nn.Linear(model.classifier[-1].in_features, num_classes)
    else:  # vit_b_16
        if in_channels != 3:
            model.conv_proj = _conv_like(model.conv_proj, in_channels, pretrained)
            if not pretrained:  # torchvision's patch-embedding initialisation
                fan_in = model.conv_proj.in_channels * 16 * 16
                nn.init.trunc_normal_(model.conv_proj.weight, std=math.sqrt(1 / fan_in))
                nn.init.zeros_(model.conv_proj.bias)
        if pretrained:  # zero-initialised, as torchvision initialises the ViT head
            model.heads.head = nn.Linear(model.heads.head.in_features, num_classes)
            nn.init.zeros_(model.heads.head.weight)
            nn.init.zeros_(model.heads.head.bias)
    return model


# --------------------------------------------------------------------------- entry point


def build_image_model(
    name: str,
    num_classes: int,
    *,
    in_channels: int = 3,
    image_size: int = 32,
    pretrained: bool = False,
    dropout: float = 0.0,
) -> nn.Module:
    """Build image classifier ``name`` (one of :data:`MODELS`) with ``num_classes`` outputs.

    Args:
        name: model name (case-insensitive).
        num_classes: number of output logits.
        in_channels: input channels; torchvision models get a new first convolution when
            it is not 3 (pretrained: initialised from the mean of the RGB filters).
        image_size: input side; picks the CIFAR stem/head for ResNets and VGG trained from
            scratch when <= 64, and sets the ViT's position embeddings (multiple of 16).
        pretrained: load torchvision's DEFAULT ImageNet weights (torch hub cache, downloading
            if it can) and put a fresh ``num_classes`` head on them; torchvision models only.
        dropout: dropout probability before the classifier (ResNet, VGG, CNN), inside the
            residual blocks (WRN), or in the encoder (ViT); 0 disables it.

    Raises:
        ModelError: unknown name, bad option, or pretrained weights that cannot be had.
    """
    key = str(name).strip().lower()
    if key not in MODELS:
        close = difflib.get_close_matches(key, MODELS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ModelError(f"Unknown image model {name!r}.{hint} Known: {', '.join(MODELS)}.")
    if num_classes < 1 or in_channels < 1 or image_size < 1:
        raise ModelError(
            f"num_classes, in_channels and image_size must be >= 1, got {num_classes}, "
            f"{in_channels}, {image_size}."
        )
    if not 0.0 <= dropout < 1.0:
        raise ModelError(f"dropout must be in [0, 1), got {dropout}.")
    if pretrained and key not in _TORCHVISION:
        raise ModelError(
            f"No pretrained weights for {key!r}; pretrained models: {', '.join(_TORCHVISION)}."
        )
    if key == "cnn":
        return SmallCNN(num_classes, in_channels, dropout)
    if key in _WRN:
        depth, widen = _WRN[key]
        return WideResNet(depth, widen, num_classes, in_channels, dropout)
    if key in CIFAR_DEPTHS:
        return CifarResNet(CIFAR_DEPTHS[key], num_classes, in_channels, dropout)
    return _torchvision_model(key, num_classes, in_channels, image_size, pretrained, dropout)


__all__ = ["MODELS", "ModelError", "SmallCNN", "WideBasic", "WideResNet", "build_image_model"]
