"""ECG heartbeats as a :class:`common.train.Task`: MIT-BIH beats, an attention model or a
1-D CNN, five AAMI classes.

Reported: accuracy and macro-F1 (macro-F1 selects ``best.pt``: with N about 83 % of the
beats, accuracy alone rewards a model that never finds the rare classes). Each split's
per-class sensitivity and positive predictivity and the confusion matrix go to
``summary.json`` (``test_details``) and ``confusion.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn

from common import metrics as M
from common.train.config import Config, DataConfig, ModelConfig
from common.train.task import Task
from common.train.typed import keyfield
from ecg_exps.data import CLASSES, build_ecg_data, canonical_name
from ecg_exps.models import MODELS, build_ecg_model

CONFIGS = Path(__file__).parent / "configs"


class EcgDataConfig(DataConfig):
    """Heartbeats: the Kaggle CSVs (mitbih), the PhysioNet records (mitdb) or generated."""

    name: str = keyfield("beats", "mitbih (Kaggle CSVs), mitdb (WFDB records) or beats (generated)")
    split: str = keyfield(
        "intrapatient",
        "intrapatient (beats pooled) or interpatient (de Chazal DS1 -> DS2; mitdb only)",
        choices=("intrapatient", "interpatient"),
    )
    balanced: bool = keyfield(False, "mitbih: the SAM course project's balanced subset")
    records: list[int] = keyfield(
        help="mitdb: the records to use (default: every record of the split)", factory=list
    )


class EcgModelConfig(ModelConfig):
    """The course project's attention model (its sizes are the defaults) or Kachuee's CNN."""

    name: str = keyfield("attention", "model: " + ", ".join(MODELS), choices=MODELS)
    dropout: float = keyfield(0.1, "dropout (attention model)", min=0, lt=1)
    d_model: int = keyfield(200, "attention model: embedding width", min=1)
    heads: int = keyfield(2, "attention model: attention heads", min=1)
    ffn: int = keyfield(128, "attention model: feed-forward width", min=1)
    layers: int = keyfield(1, "attention model: encoder layers", min=1)
    hidden: list[int] = keyfield(
        help="attention model: widths of the classifier head",
        factory=lambda: [512, 256, 128],
        min=1,
    )


class EcgConfig(Config):
    data: EcgDataConfig = keyfield(factory=EcgDataConfig)
    model: EcgModelConfig = keyfield(factory=EcgModelConfig)


def build_data(cfg: EcgConfig) -> Any:
    d = cfg.data
    return build_ecg_data(
        d.name,
        d.root,
        split=d.split,
        val_fraction=d.val_fraction,
        split_seed=d.split_seed,
        n_examples=d.n_examples,
        download=d.download,
        balanced=d.balanced,
        records=tuple(d.records) or None,
    )


def build_model(cfg: EcgConfig, splits: Any) -> nn.Module:
    m = cfg.model
    return build_ecg_model(
        m.name,
        splits.num_classes,
        dropout=m.dropout,
        d_model=m.d_model,
        heads=m.heads,
        ffn=m.ffn,
        layers=m.layers,
        hidden=tuple(m.hidden),
    )


def metrics(outputs: Tensor, targets: Tensor) -> dict[str, float]:
    return {"accuracy": M.accuracy(outputs, targets), "macro_f1": M.macro_f1(outputs, targets)}


def details(outputs: Tensor, targets: Tensor) -> dict[str, Any]:
    """Per-class sensitivity and positive predictivity, and the confusion matrix."""
    return M.class_report(outputs, targets, CLASSES)


TASK = Task(
    domain="ecg",
    config_cls=EcgConfig,
    default_config=CONFIGS / "beats.yaml",
    build_data=build_data,
    build_model=build_model,
    metrics=metrics,
    reported=(M.ACCURACY, M.MACRO_F1),
    select=M.MACRO_F1,
    details=details,
    canonical_name=canonical_name,
)
