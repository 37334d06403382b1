"""Sharpness measurements: Hessian trace, eigenvalues, spectral density, noise stability,
loss landscape. Each takes ``model``, ``loss_fn(model, batch) -> mean loss`` and ``data``.
"""

from common.sharpness.core import Record, measuring, select_params

__all__ = ["Record", "measuring", "select_params"]
