"""Shared helpers: tiny models and data small enough to check maths exactly."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from common.optim import OPTIMIZERS, create_optimizer


def mlp(seed: int = 0, bn: bool = True) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Linear(5, 8)] + ([nn.BatchNorm1d(8)] if bn else []) + [nn.Tanh(), nn.Linear(8, 3)]
    return nn.Sequential(*layers)


def data(seed: int = 1, n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)


def ce(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


def closure_for(model: nn.Module, batch, calls: list | None = None):
    def closure():
        if calls is not None:
            calls.append(1)
        loss = ce(model, batch)
        loss.backward()
        return loss.detach()

    return closure


def build(name: str, model: nn.Module, batch=None, **cfg):
    """create_optimizer with small defaults; SSAM-F gets its first mask from ``batch``."""
    cfg.setdefault("lr", 0.1)
    if name in ("sgd", "adam", "adamw"):
        cfg.pop("seed", None)
    elif "seed" in OPTIMIZERS[name].options:  # a noise generator: both copies draw alike
        cfg.setdefault("seed", 0)
    if name == "ssamf":
        cfg.setdefault("num_samples", 4)
    opt = create_optimizer(name, model, **cfg)
    if name == "ssamf":
        opt.update_mask(model, ce, [batch or data()])
    return opt


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


SHARPNESS_AWARE = [n for n, info in OPTIMIZERS.items() if info.sharpness_aware]
ALL = list(OPTIMIZERS)


@pytest.fixture
def model_and_batch():
    return mlp(), data()


__all__ = ["ALL", "SHARPNESS_AWARE", "assert_same", "build", "ce", "closure_for", "copy"]


def linear_problem(seed: int = 0, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(seed)
    w0 = torch.randn(3, 4, generator=g, dtype=dtype)
    x = torch.randn(10, 4, generator=g, dtype=dtype)
    y = torch.randn(10, 3, generator=g, dtype=dtype)

    def loss(w):
        return ((x @ w.T - y) ** 2).mean() + (w**4).sum() / 4  # non-quadratic: g(W+e) != g(W)+He

    return w0, loss


def tiny_bert_config(**overrides):
    """A 2-layer BERT of width 16 (2 heads, vocabulary 50): fractions of a second a step."""
    from transformers import BertConfig

    sizes = dict(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=2,
    )
    return BertConfig(**{**sizes, **overrides})
