"""Graph classifiers by name: :func:`build_graph_model`.

* ``gcn``: ``layers`` x [PyG ``GCNConv`` -> ``BatchNorm1d`` -> ReLU -> dropout], a global
  pooling of the node features per graph (mean, sum or max) and a linear classifier; with
  the defaults (2 layers, hidden 64, mean pooling, batch norm) the model of the NSO paper's
  graph experiments.

Every model's ``forward`` takes a PyG ``Batch`` (``x``, ``edge_index``, ``batch``) and
returns ``(num_graphs, num_classes)`` logits.
"""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch_geometric.nn import GCNConv, global_add_pool, global_max_pool, global_mean_pool

from common.errors import ModelError

MODELS: tuple[str, ...] = ("gcn",)
POOLINGS: dict[str, Callable[..., Tensor]] = {
    "mean": global_mean_pool,
    "sum": global_add_pool,
    "max": global_max_pool,
}


def _choice(kind: str, value: str, valid: tuple[str, ...] | list[str]) -> str:
    key = str(value).strip().lower()
    if key in valid:
        return key
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ModelError(f"Unknown graph {kind} {value!r}.{hint} Known: {', '.join(valid)}.")


class GCN(nn.Module):
    """Graph classification GCN (Kipf & Welling convolutions + global pooling).

    Args:
        in_channels: node feature size.
        num_classes: number of graph classes.
        hidden: width of every convolution.
        layers: number of ``GCNConv`` layers (>= 1).
        dropout: dropout probability on the node features after every convolution block.
        pooling: ``mean``, ``sum`` or ``max`` over each graph's nodes.
        batch_norm: ``BatchNorm1d`` over the nodes after every convolution.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        hidden: int = 64,
        layers: int = 2,
        dropout: float = 0.0,
        pooling: str = "mean",
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        for what, value, lo in (
            ("in_channels", in_channels, 1),
            ("num_classes", num_classes, 2),
            ("hidden", hidden, 1),
            ("layers", layers, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise ModelError(f"GCN {what} must be an integer >= {lo}, got {value!r}.")
        if not 0.0 <= dropout < 1.0:
            raise ModelError(f"GCN dropout must be in [0, 1), got {dropout}.")
        self.pooling = _choice("pooling", pooling, tuple(POOLINGS))
        self.dropout = float(dropout)
        widths = [in_channels] + [hidden] * layers
        self.convs = nn.ModuleList(GCNConv(a, b) for a, b in itertools.pairwise(widths))
        self.norms = nn.ModuleList(
            nn.BatchNorm1d(hidden) if batch_norm else nn.Identity() for _ in range(layers)
        )
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, batch) -> Tensor:
        x, edge_index = batch.x, batch.edge_index
        if x is None:
            raise ModelError(
                "The graph batch has no node features (x is None); the data pipeline must "
                "provide them (graph_exps.data adds one-hot degrees to sets without any)."
            )
        if not x.is_floating_point():
            x = x.float()
        index = getattr(batch, "batch", None)
        if index is None:  # a single graph
            index = torch.zeros(x.size(0), dtype=torch.long, device=x.device)
        size = getattr(batch, "num_graphs", None)
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = torch.relu(norm(conv(x, edge_index)))
            x = nn.functional.dropout(x, self.dropout, self.training)
        return self.classifier(POOLINGS[self.pooling](x, index, size))

    def extra_repr(self) -> str:
        return f"pooling={self.pooling!r}, dropout={self.dropout}"


def build_graph_model(
    name: str,
    in_channels: int,
    num_classes: int,
    *,
    hidden: int = 64,
    layers: int = 2,
    dropout: float = 0.0,
    pooling: str = "mean",
    batch_norm: bool = True,
) -> nn.Module:
    """A freshly initialised graph classifier ``name`` (one of :data:`MODELS`).

    Raises:
        ModelError: unknown name or pooling (with the closest valid one), or a bad option.
    """
    key = _choice("model", name, MODELS)
    if key == "gcn":
        return GCN(in_channels, num_classes, hidden, layers, dropout, pooling, batch_norm)
    raise AssertionError(key)  # pragma: no cover - MODELS and the branches agree


__all__ = ["GCN", "MODELS", "POOLINGS", "ModelError", "build_graph_model"]
