"""Graphs as a :class:`common.train.Task`: PyG TUDataset folds and a GCN."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from common.train.config import Config, DataConfig, ModelConfig
from common.train.task import Folds, Task
from graph_exps.data import SBMSpec, build_graph_data, canonical_name, collate
from graph_exps.models import build_graph_model

CONFIGS = Path(__file__).parent / "configs"


@dataclass
class GraphDataConfig(DataConfig):
    """Graph data: ``data.fold`` of ``data.n_folds`` stratified folds is the test set."""

    name: str = "sbm"
    fold: int = field(default=0, metadata={"min": 0, "help": "the fold that is the test set"})
    n_folds: int = field(default=10, metadata={"min": 2, "help": "cross-validation folds"})
    max_degree: int = field(
        default=100, metadata={"min": 1, "help": "degree one-hot cap (sets without labels)"}
    )
    val_is_test: bool = field(
        default=False,
        metadata={
            "help": "validate on the test fold (Xu et al. 2019's protocol: optimistic, only "
            "to compare with numbers obtained that way)"
        },
    )
    sbm_graphs: int = field(default=400, metadata={"min": 10, "help": "graphs in the sbm set"})
    # below 11 nodes, 4 communities at the default density would need p_in > 1
    sbm_min_nodes: int = field(default=20, metadata={"min": 11, "help": "sbm graph size, min"})
    sbm_max_nodes: int = field(default=40, metadata={"min": 4, "help": "sbm graph size, max"})


@dataclass
class GraphModelConfig(ModelConfig):
    """The GCN of the NSO paper's graph experiments, sizes configurable."""

    name: str = "gcn"
    hidden: int = field(default=64, metadata={"min": 1, "help": "hidden width"})
    layers: int = field(default=2, metadata={"min": 1, "help": "GCN layers"})
    pooling: str = field(
        default="mean", metadata={"choices": ("mean", "sum", "max"), "help": "global pooling"}
    )
    batch_norm: bool = field(default=True, metadata={"help": "BatchNorm after each layer"})


@dataclass
class GraphConfig(Config):
    data: GraphDataConfig = field(default_factory=GraphDataConfig)
    model: GraphModelConfig = field(default_factory=GraphModelConfig)


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
