"""Sharpness-aware optimizers: each wraps a base torch optimizer and shares its groups.

>>> from common.optim import SAM, NSO, WSAM, SSAMF, SSAMD, create_optimizer, OPTIMIZERS

Every option is declared once (``Option``, in each class's ``OPTIONS``);
``OPTIMIZERS[name].specs`` and ``BASE_OPTIONS`` expose the declarations.
"""

from common.optim.base import SharpnessAwareOptimizer
from common.optim.nso import NSO
from common.optim.options import BASE_OPTIONS, Option, base_accepts
from common.optim.registry import BASE_ACCEPTS, OPTIMIZERS, OptimInfo, create_optimizer
from common.optim.sam import SAM
from common.optim.ssam import SSAMD, SSAMF
from common.optim.wsam import WSAM

__all__ = [
    "BASE_ACCEPTS",
    "BASE_OPTIONS",
    "NSO",
    "OPTIMIZERS",
    "SAM",
    "SSAMD",
    "SSAMF",
    "WSAM",
    "OptimInfo",
    "Option",
    "SharpnessAwareOptimizer",
    "base_accepts",
    "create_optimizer",
]
