"""Sharpness-aware optimizers: each wraps a base torch optimizer and shares its groups.

>>> from common.optim import SAM, NSO, WSAM, SSAMF, SSAMD, create_optimizer, OPTIMIZERS
"""

from common.optim.base import SharpnessAwareOptimizer
from common.optim.nso import NSO
from common.optim.registry import OPTIMIZERS, OptimInfo, create_optimizer
from common.optim.sam import SAM
from common.optim.ssam import SSAMD, SSAMF
from common.optim.wsam import WSAM

__all__ = [
    "NSO",
    "OPTIMIZERS",
    "SAM",
    "SSAMD",
    "SSAMF",
    "WSAM",
    "OptimInfo",
    "SharpnessAwareOptimizer",
    "create_optimizer",
]
