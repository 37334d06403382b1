"""Graphs as a :class:`common.train.Task`: PyG TUDataset folds and a GCN."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn

from common.train.config import Config, DataConfig, ModelConfig
from common.train.task import Folds, Task
from common.train.typed import keyfield
from graph_exps.data import SBMSpec, build_graph_data, canonical_name, collate
from graph_exps.models import build_graph_model

CONFIGS = Path(__file__).parent / "configs"


class GraphDataConfig(DataConfig):
    """Graph data: ``data.fold`` of ``data.n_folds`` stratified folds is the test set."""

    name: str = "sbm"
    fold: int = keyfield(0, "the fold that is the test set", min=0)
    n_folds: int = keyfield(10, "cross-validation folds", min=2)
    max_degree: int = keyfield(100, "degree one-hot cap (sets without labels)", min=1)
    val_is_test: bool = keyfield(
        False,
        "validate on the test fold (Xu et al. 2019's protocol: optimistic, only to compare "
        "with numbers obtained that way)",
    )
    sbm_graphs: int = keyfield(400, "graphs in the sbm set", min=10)
    # below 11 nodes, 4 communities at the default density would need p_in > 1
    sbm_min_nodes: int = keyfield(20, "sbm graph size, min", min=11)
    sbm_max_nodes: int = keyfield(40, "sbm graph size, max", min=4)


class GraphModelConfig(ModelConfig):
    """The GCN of the NSO paper's graph experiments, sizes configurable."""

    name: str = "gcn"
    hidden: int = keyfield(64, "hidden width", min=1)
    layers: int = keyfield(2, "GCN layers", min=1)
    pooling: str = keyfield("mean", "global pooling", choices=("mean", "sum", "max"))
    batch_norm: bool = keyfield(True, "BatchNorm after each layer")


class GraphConfig(Config):
    data: GraphDataConfig = keyfield(factory=GraphDataConfig)
    model: GraphModelConfig = keyfield(factory=GraphModelConfig)


def build_data(cfg: GraphConfig) -> Any:
    d = cfg.data
    return build_graph_data(
        d.name,
        d.root,
        fold=d.fold,
        n_folds=d.n_folds,
        val_fraction=d.val_fraction,
        split_seed=d.split_seed,
        n_examples=d.n_examples,
        download=d.download,
        max_degree=d.max_degree,
        sbm=SBMSpec(n_graphs=d.sbm_graphs, nodes=(d.sbm_min_nodes, d.sbm_max_nodes)),
        val_is_test=d.val_is_test,
    )


def build_model(cfg: GraphConfig, splits: Any) -> nn.Module:
    m = cfg.model
    return build_graph_model(
        m.name,
        splits.inputs["num_features"],
        splits.num_classes,
        hidden=m.hidden,
        layers=m.layers,
        dropout=m.dropout,
        pooling=m.pooling,
        batch_norm=m.batch_norm,
    )


def forward(model: nn.Module, batch: Any) -> Tensor:
    return model(batch)


def targets(batch: Any) -> Tensor:
    return batch.y


TASK = Task(
    domain="graph",
    config_cls=GraphConfig,
    default_config=CONFIGS / "sbm.yaml",
    build_data=build_data,
    build_model=build_model,
    forward=forward,
    targets=targets,
    collate=collate,
    canonical_name=canonical_name,
    folds=Folds(fold_key="data.fold", count_key="data.n_folds"),
)
