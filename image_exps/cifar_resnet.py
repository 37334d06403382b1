"""The CIFAR ResNets of He et al. (2016, section 4.2): ``resnet20``, ``resnet32``, ``resnet44``,
``resnet56``.

Three stages of ``n`` basic blocks at 16, 32 and 64 channels (depth ``6n + 2``), a 3x3
stem, global average pooling and one linear layer. Where a stage halves the resolution and
doubles the channels, the shortcut is the paper's option A: the input subsampled by 2 and
zero-padded with the new channels, so the shortcut has no parameters. The parameter names
(``conv1``, ``bn1``, ``layer1.0.conv1``, ..., ``linear``) are those of the widely used
public CIFAR-10 checkpoints of these models, so ``model.weights=resnet20-12fca82f.th``
loads one as it is.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

DEPTHS: dict[str, int] = {"resnet20": 20, "resnet32": 32, "resnet44": 44, "resnet56": 56}
WIDTHS = (16, 32, 64)


class PaddedShortcut(nn.Module):
    """Option A: every second pixel of every second row, new channels zero on both sides."""

    def __init__(self, in_planes: int, planes: int) -> None:
        super().__init__()
        self.pad = (planes - in_planes) // 2

    def forward(self, x: Tensor) -> Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        changes = stride != 1 or in_planes != planes
        self.shortcut = PaddedShortcut(in_planes, planes) if changes else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small images; any input side of at least 4 pixels."""

    def __init__(
        self, depth: int, num_classes: int, in_channels: int = 3, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2, got {depth}")
        blocks = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, WIDTHS[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(WIDTHS[0])
        in_planes = WIDTHS[0]
        for stage, planes in enumerate(WIDTHS, start=1):
            stride = 1 if stage == 1 else 2
            layers = []
            for index in range(blocks):
                layers.append(BasicBlock(in_planes, planes, stride if index == 0 else 1))
                in_planes = planes
            setattr(self, f"layer{stage}", nn.Sequential(*layers))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.linear = nn.Linear(WIDTHS[-1], num_classes)
        for module in self.modules():  # He et al.'s initialisation of the weights
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        return self.linear(self.dropout(out))


__all__ = ["DEPTHS", "BasicBlock", "CifarResNet", "PaddedShortcut"]
