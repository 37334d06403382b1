"""Sharpness-aware optimizers: each wraps a base torch optimizer and shares its groups.

>>> from common.optim import SAM, NSO, WSAM, SSAMF, SSAMD, GSAM, LookSAM, FSAM, RWP
>>> from common.optim import create_optimizer, OPTIMIZERS

Every option is declared once (``Option``, in each class's ``OPTIONS``);
``OPTIMIZERS[name].specs`` and ``BASE_OPTIONS`` expose the declarations.
"""

from common.optim.base import SharpnessAwareOptimizer
from common.optim.fsam import FSAM
from common.optim.gsam import GSAM
from common.optim.looksam import LookSAM
from common.optim.nso import NSO
from common.optim.options import BASE_OPTIONS, Option, base_accepts
from common.optim.registry import BASE_ACCEPTS, OPTIMIZERS, OptimInfo, create_optimizer
from common.optim.rwp import RWP
from common.optim.sam import SAM
from common.optim.ssam import SSAMD, SSAMF
from common.optim.wsam import WSAM

__all__ = [
    "BASE_ACCEPTS",
    "BASE_OPTIONS",
    "FSAM",
    "GSAM",
    "NSO",
    "OPTIMIZERS",
    "RWP",
    "SAM",
    "SSAMD",
    "SSAMF",
    "WSAM",
    "LookSAM",
    "OptimInfo",
    "Option",
    "SharpnessAwareOptimizer",
    "base_accepts",
    "create_optimizer",
]
