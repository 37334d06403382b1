"""Batches of any domain: tensor tuples and dicts, PyG ``Batch`` objects."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils._pytree import tree_leaves, tree_map


def batch_size(batch: Any) -> int:
    """Number of examples in a batch: PyG's ``num_graphs`` or dim 0 of its first tensor."""
    if hasattr(batch, "num_graphs"):
        return int(batch.num_graphs)
    leaves = [t for t in tree_leaves(batch) if isinstance(t, Tensor)]
    if not leaves:
        raise ValueError(f"cannot tell the batch size of a {type(batch).__name__}: no tensors")
    return int(leaves[0].shape[0])


def slice_batch(batch: Any, start: int, stop: int) -> Any:
    """Examples ``start:stop`` of a batch: tuples, lists and dicts of tensors, or a PyG
    ``Batch`` (its graphs ``start:stop``, collated again)."""
    if hasattr(batch, "num_graphs") and hasattr(batch, "index_select"):
        from torch_geometric.data import Batch  # only graph batches need PyG

        return Batch.from_data_list(batch.index_select(slice(start, stop)))
    return tree_map(lambda t: t[start:stop] if isinstance(t, Tensor) else t, batch)


def to_device(batch: Any, device: torch.device | str) -> Any:
    """Moves every tensor of a batch (or a PyG batch via its ``.to``) to ``device``."""
    if hasattr(batch, "to") and not isinstance(batch, Tensor):
        return batch.to(device)
    return tree_map(lambda t: t.to(device) if isinstance(t, Tensor) else t, batch)
