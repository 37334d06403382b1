"""graph_exps.models: the GCN on PyG batches (shapes, gradients, invariances, errors)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch_geometric.data import Batch, Data

from common.errors import UserError
from graph_exps.models import GCN, MODELS, POOLINGS, ModelError, build_graph_model


def random_graph(n: int, features: int, label: int, seed: int) -> Data:
    g = torch.Generator().manual_seed(seed)
    i, j = torch.triu_indices(n, n, 1)
    keep = torch.rand(i.numel(), generator=g) < 0.4
    keep[0] = True
    edge_index = torch.stack([torch.cat([i[keep], j[keep]]), torch.cat([j[keep], i[keep]])])
    return Data(
        x=torch.randn(n, features, generator=g), edge_index=edge_index, y=torch.tensor([label])
    )


def batch_of(k: int = 5, features: int = 6) -> Batch:
    return Batch.from_data_list([random_graph(3 + i, features, i % 3, i) for i in range(k)])


@pytest.mark.parametrize("pooling", sorted(POOLINGS))
def test_forward_shapes_and_backward(pooling):
    torch.manual_seed(0)
    model = build_graph_model("gcn", 6, 3, hidden=16, pooling=pooling)
    batch = batch_of()
    logits = model(batch)
    assert logits.shape == (5, 3) and torch.isfinite(logits).all()
    nn.functional.cross_entropy(logits, batch.y).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert sum(p.grad.abs().sum() for p in model.parameters()) > 0


def test_architecture_options():
    model = GCN(6, 2, hidden=8, layers=3, dropout=0.5, batch_norm=False)
    assert len(model.convs) == 3 and all(isinstance(n, nn.Identity) for n in model.norms)
    default = build_graph_model("GCN", 6, 2)
    assert len(default.convs) == 2 and isinstance(default.norms[0], nn.BatchNorm1d)
    assert default.classifier.in_features == 64 and default.pooling == "mean"
    assert MODELS == ("gcn",)
    batch = batch_of()
    model.train()
    torch.manual_seed(1)
    a = model(batch)
    torch.manual_seed(2)
    assert not torch.equal(a, model(batch))  # dropout is active in training
    model.eval()
    assert torch.equal(model(batch), model(batch))


def test_eval_logits_do_not_depend_on_batching_or_node_order():
    torch.manual_seed(0)
    model = build_graph_model("gcn", 6, 3, hidden=16).eval()
    graphs = [random_graph(4 + i, 6, 0, i) for i in range(4)]
    together = model(Batch.from_data_list(graphs))
    alone = torch.cat([model(Batch.from_data_list([g])) for g in graphs])
    assert torch.allclose(together, alone, atol=1e-5)
    g = graphs[2]
    perm = torch.randperm(g.num_nodes, generator=torch.Generator().manual_seed(3))
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(perm.numel())
    shuffled = Data(x=g.x[perm], edge_index=inverse[g.edge_index])
    assert torch.allclose(model(shuffled), alone[2:3], atol=1e-5)  # a Data without .batch


def test_per_graph_gradients_with_plain_autograd():
    """What SSAM-F does on PyG batches: one graph at a time, autograd, eval mode, no torch.func."""
    torch.manual_seed(0)
    model = build_graph_model("gcn", 6, 3, hidden=8).eval()
    stats = [b.clone() for b in model.buffers()]
    batch = batch_of(3)
    params = list(model.parameters())
    for graph in batch.to_data_list():
        single = Batch.from_data_list([graph])
        loss = nn.functional.cross_entropy(model(single), single.y)
        grads = torch.autograd.grad(loss, params)
        assert all(torch.isfinite(g).all() for g in grads)
    assert all(torch.equal(a, b) for a, b in zip(stats, model.buffers(), strict=True))


def test_errors_name_the_fix():
    with pytest.raises(ModelError, match="Did you mean 'gcn'"):
        build_graph_model("gcm", 6, 2)
    with pytest.raises(ModelError, match="Did you mean 'mean'"):
        build_graph_model("gcn", 6, 2, pooling="maen")
    with pytest.raises(ModelError, match="layers must be an integer >= 1"):
        GCN(6, 2, layers=0)
    with pytest.raises(ModelError, match="dropout"):
        GCN(6, 2, dropout=1.0)
    with pytest.raises(ModelError, match="no node features"):
        GCN(6, 2)(Data(edge_index=torch.zeros(2, 0, dtype=torch.long), num_nodes=3))
    assert issubclass(ModelError, UserError)
