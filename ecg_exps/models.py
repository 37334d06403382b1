"""ECG heartbeat classifiers by name: :func:`build_ecg_model`.

Both take channel-first signals ``(B, 1, L)`` (as ``nn.Conv1d`` does; the data yields
``(1, 187)`` beats) and return logits ``(B, num_classes)``.

* ``attention``: the transformer classifier of the SAM course project (mselmangokmen/
  TimeSeriesProject, ``models/model/transformer.py``) at the size it was trained with
  (``model_train.py`` lines 125-131: L = 187, d_model 200, 2 heads, FFN 128, 1 layer,
  dropout 0.1): the signal as a sequence ``(B, L, 1)`` -> ``Linear(1, d_model)`` ->
  sinusoidal position encoding -> dropout -> ``layers`` post-LN encoder layers (self-attention,
  dropout, add & LayerNorm; Linear-ReLU-dropout-Linear, dropout, add & LayerNorm) ->
  LayerNorm -> flatten ``(L * d_model)`` -> 512 -> 256 -> 128 -> ``num_classes`` with ReLU
  between and no dropout in the head (``models/layers/classification_head.py`` lines 7-18).
  19,528,109 parameters at the defaults, 19.15 M of them in the first head layer.
* ``cnn1d``: the residual 1-D CNN of Kachuee, Fazeli & Sarrafzadeh, "ECG Heartbeat
  Classification: A Deep Transferable Representation" (ICHI 2018): ``Conv1d(1, 32, 5)``, five
  residual blocks [conv5 - ReLU - conv5, + skip, ReLU, max-pool 5 stride 2], then
  FC 32 - ReLU - FC 32 - FC ``num_classes``. As in the paper, no dropout (``dropout`` is
  ignored) and no normalisation; 55,013 parameters at L = 187 (the blocks leave 2 of the
  187 steps, 32 channels each), and any ``length >= 125`` works (shorter signals run out of
  steps before the fifth pool).

**The original's position-encoding bug, fixed here.** Its ``PostionalEncoding`` is built
with ``batch_first=False`` (``transformer.py`` line 26) but fed batch-first tensors
``(B, L, d)``, so ``forward`` (``models/embedding/positional_encoding.py`` lines 22 and 34)
adds ``pe[:x.size(0)]``, of shape ``(B, 1, d)``: the encoding indexed by the *batch* index,
broadcast over time. Every time step of a sample gets the same offset, so the
self-attention sees no order at all (the encoder is equivariant to permuting the time
steps), and a sample's output depends on where it sits in its (shuffled) batch. Here the
encoding is indexed by the time step ``t = 0..L-1`` (Vaswani et al. 2017:
``pe[t, 2i] = sin(t / 10000^(2i/d))``, ``pe[t, 2i+1] = cos(...)``), the same for every
sample and every batch size.

Other differences from the original, all small: the encoder layers are PyTorch's
``nn.TransformerEncoderLayer`` (same parameters, same dropout positions; its dropout on the
attention weights, which the original does not have, is switched off), so they take the
fused attention kernels (Hessians need :func:`common.attention.differentiable_attention`,
which the measurements apply), their LayerNorm eps is PyTorch's 1e-5 (the original's own
LayerNorm has 1e-12, ``models/layers/layer_norm.py`` line 7; the head's is 1e-5 in both)
and their attention projections are initialised as ``nn.MultiheadAttention`` does (Xavier
uniform, zero biases) rather than as ``nn.Linear``. The encoding buffer holds ``length``
positions (the original 5000) and is not saved in the state dict; the dropout after it is
``dropout`` (fixed at 0.1 there); ``num_classes`` is a parameter (fixed at 5 there).
"""

from __future__ import annotations

import difflib
import itertools
import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from common.checks import check_int
from common.errors import ModelError

MODELS: tuple[str, ...] = ("attention", "cnn1d")

CNN_CHANNELS = 32
CNN_KERNEL = 5
CNN_BLOCKS = 5
CNN_POOL, CNN_POOL_STRIDE = 5, 2


def _check_input(x: torch.Tensor, length: int, model: str) -> None:
    if x.ndim != 3 or x.shape[1] != 1 or x.shape[2] != length:
        raise ModelError(
            f"the {model} model expects signals of shape (batch, 1, {length}), got "
            f"{tuple(x.shape)}; build it with length={x.shape[-1] if x.ndim else '?'} for "
            "other lengths."
        )


# --------------------------------------------------------------------------- attention


class TimePositionEncoding(nn.Module):
    """Adds the sinusoidal encoding of time step t = 0..L-1 to ``(B, L, d)`` inputs.

    ``pe`` is a ``(length, d_model)`` buffer (not in the state dict: it follows from the
    sizes); every sample of the batch gets the same ``pe[:L]``.
    """

    pe: torch.Tensor

    def __init__(self, d_model: int, length: int) -> None:
        super().__init__()
        position = torch.arange(length, dtype=torch.float64).unsqueeze(1)
        freq = torch.exp(
            torch.arange(0, d_model, 2, dtype=torch.float64) * (-math.log(10000.0) / d_model)
        )
        pe = torch.zeros(length, d_model, dtype=torch.float64)
        pe[:, 0::2] = torch.sin(position * freq)
        pe[:, 1::2] = torch.cos(position * freq[: d_model // 2])
        self.register_buffer("pe", pe.to(torch.get_default_dtype()), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[1] > self.pe.shape[0] or x.shape[2] != self.pe.shape[1]:
            raise ModelError(
                f"position encoding of {self.pe.shape[0]} steps x {self.pe.shape[1]} features "
                f"cannot take an input of shape {tuple(x.shape)} (expected (batch, steps, "
                f"{self.pe.shape[1]}))."
            )
        return x + self.pe[: x.shape[1]]


class AttentionModel(nn.Module):
    """Transformer-encoder classifier of ``(B, 1, length)`` signals (see the module docstring).

    ``encode`` returns the encoder's output ``(B, length, d_model)``; ``forward`` puts the
    LayerNorm-flatten-MLP head on it.
    """

    def __init__(
        self,
        num_classes: int = 5,
        *,
        length: int = 187,
        dropout: float = 0.1,
        d_model: int = 200,
        heads: int = 2,
        ffn: int = 128,
        layers: int = 1,
        hidden: Sequence[int] = (512, 256, 128),
    ) -> None:
        super().__init__()
        if d_model % heads:
            raise ModelError(f"d_model ({d_model}) must be divisible by heads ({heads}).")
        self.length = length
        self.embed = nn.Linear(1, d_model)
        self.position = TimePositionEncoding(d_model, length)
        self.dropout = nn.Dropout(dropout)
        blocks = []
        for _ in range(layers):  # built one by one: independent initial weights
            block = nn.TransformerEncoderLayer(
                d_model,
                heads,
                dim_feedforward=ffn,
                dropout=dropout,
                activation="relu",
                batch_first=True,
                norm_first=False,
            )
            block.self_attn.dropout = 0.0  # the original has no dropout on attention weights
            blocks.append(block)
        self.encoder = nn.Sequential(*blocks)
        self.norm = nn.LayerNorm(d_model)
        widths = [length * d_model, *hidden]
        head: list[nn.Module] = [nn.Flatten()]
        for w_in, w_out in itertools.pairwise(widths):
            head += [nn.Linear(w_in, w_out), nn.ReLU()]
        head.append(nn.Linear(widths[-1], num_classes))
        self.head = nn.Sequential(*head)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, L)`` signals -> encoder output ``(B, L, d_model)``."""
        _check_input(x, self.length, "attention")
        h = self.embed(x.transpose(1, 2))  # (B, L, 1) -> (B, L, d)
        return self.encoder(self.dropout(self.position(h)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.encode(x)))


# --------------------------------------------------------------------------- Kachuee CNN


class ResidualBlock1d(nn.Module):
    """conv5 - ReLU - conv5, plus the input, ReLU, then max-pool 5 with stride 2."""

    def __init__(self, channels: int = CNN_CHANNELS) -> None:
        super().__init__()
        pad = CNN_KERNEL // 2
        self.conv1 = nn.Conv1d(channels, channels, CNN_KERNEL, padding=pad)
        self.conv2 = nn.Conv1d(channels, channels, CNN_KERNEL, padding=pad)
        self.pool = nn.MaxPool1d(CNN_POOL, stride=CNN_POOL_STRIDE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(torch.relu(self.conv1(x)))
        return self.pool(torch.relu(out + x))


def cnn1d_steps(length: int) -> int:
    """Time steps left after the five residual blocks of :class:`Cnn1d` (2 for 187; < 1
    when the signal is too short)."""
    for _ in range(CNN_BLOCKS):
        length = (length - CNN_POOL) // CNN_POOL_STRIDE + 1 if length >= CNN_POOL else 0
    return length


class Cnn1d(nn.Module):
    """Kachuee et al. (2018) residual CNN of ``(B, 1, length)`` signals, ``length >= 125``."""

    def __init__(self, num_classes: int = 5, *, length: int = 187) -> None:
        super().__init__()
        steps = cnn1d_steps(length)
        if steps < 1:
            raise ModelError(
                f"cnn1d needs signals of at least {min_cnn1d_length()} steps (five max-pools "
                f"of size {CNN_POOL}, stride {CNN_POOL_STRIDE}), got length={length}."
            )
        self.length = length
        self.stem = nn.Conv1d(1, CNN_CHANNELS, CNN_KERNEL, padding=CNN_KERNEL // 2)
        self.blocks = nn.Sequential(*(ResidualBlock1d() for _ in range(CNN_BLOCKS)))
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(CNN_CHANNELS * steps, 32),
            nn.ReLU(),
            nn.Linear(32, 32),
            nn.Linear(32, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.length, "cnn1d")
        return self.head(self.blocks(self.stem(x)))


def min_cnn1d_length() -> int:
    """The shortest signal :class:`Cnn1d` takes (125)."""
    n = 1
    while cnn1d_steps(n) < 1:
        n += 1
    return n


# --------------------------------------------------------------------------- factory


def _int(name: str, value: Any, lo: int) -> int:
    """common.checks.check_int, refusing with the domain's ModelError (one line, exit 2)."""
    try:
        return check_int(name, value, lo)
    except ValueError as e:
        raise ModelError(f"{e}.") from None


def build_ecg_model(
    name: str,
    num_classes: int = 5,
    *,
    length: int = 187,
    dropout: float = 0.1,
    d_model: int = 200,
    heads: int = 2,
    ffn: int = 128,
    layers: int = 1,
    hidden: tuple[int, ...] = (512, 256, 128),
) -> nn.Module:
    """Build ECG classifier ``name`` (one of :data:`MODELS`) with ``num_classes`` outputs.

    Args:
        name: model name (case-insensitive).
        num_classes: number of output logits.
        length: time steps per signal; fixes the attention head's flattened width and the
            CNN's (>= 125 for ``cnn1d``).
        dropout: attention: after the position encoding and in every encoder layer (after
            self-attention, inside and after the FFN); 0 disables it. ``cnn1d`` has none
            (Kachuee et al.) and ignores it.
        d_model, heads, ffn, layers: attention only: width, heads (dividing ``d_model``),
            FFN width and number of encoder layers.
        hidden: attention only: widths of the head's hidden layers (ReLU after each; empty:
            one linear layer from the flattened encoder output).

    Raises:
        ModelError: unknown name or bad option, with a one-line message.
    """
    key = str(name).strip().lower()
    if key not in MODELS:
        close = difflib.get_close_matches(key, MODELS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ModelError(f"Unknown ECG model {name!r}.{hint} Known: {', '.join(MODELS)}.")
    num_classes = _int("num_classes", num_classes, 1)
    length = _int("length", length, 1)
    ok = isinstance(dropout, numbers.Real) and not isinstance(dropout, bool)
    if not (ok and 0.0 <= dropout < 1.0):
        raise ModelError(f"dropout must be a number in [0, 1), got {dropout!r}.")
    if key == "cnn1d":
        return Cnn1d(num_classes, length=length)
    if isinstance(hidden, str | bytes) or not isinstance(hidden, Sequence):
        raise ModelError(f"hidden must be a sequence of layer widths, got {hidden!r}.")
    return AttentionModel(
        num_classes,
        length=length,
        dropout=float(dropout),
        d_model=_int("d_model", d_model, 1),
        heads=_int("heads", heads, 1),
        ffn=_int("ffn", ffn, 1),
        layers=_int("layers", layers, 1),
        hidden=tuple(_int(f"hidden[{i}]", w, 1) for i, w in enumerate(hidden)),
    )


__all__ = [
    "MODELS",
    "AttentionModel",
    "Cnn1d",
    "ModelError",
    "ResidualBlock1d",
    "TimePositionEncoding",
    "build_ecg_model",
    "cnn1d_steps",
    "min_cnn1d_length",
]
