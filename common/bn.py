"""Freeze and unfreeze BatchNorm running statistics during extra gradient passes.

A sharpness-aware step runs several forward passes on one batch; only the first should
move the running mean and variance. Turning ``track_running_stats`` off in train mode
makes BatchNorm normalise with the batch statistics (as in training) while leaving
``running_mean``, ``running_var`` and ``num_batches_tracked`` untouched. (Setting the
momentum to 0, as the reference code does, still increments ``num_batches_tracked`` and
so shifts the cumulative average used when ``momentum=None``.)
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

_SAVED = "_flatminima_track_running_stats"


def _batchnorms(model: nn.Module):
    # _BatchNorm covers BatchNorm1d/2d/3d, their Lazy forms and SyncBatchNorm; wrappers
    # such as torch_geometric.nn.BatchNorm hold one of these as a submodule.
    return (m for m in model.modules() if isinstance(m, _BatchNorm))


def disable_running_stats(model: nn.Module) -> None:
    """Stops every BatchNorm in ``model`` from updating its running statistics."""
    for m in _batchnorms(model):
        if not hasattr(m, _SAVED):
            setattr(m, _SAVED, m.track_running_stats)
        m.track_running_stats = False


def enable_running_stats(model: nn.Module) -> None:
    """Undoes :func:`disable_running_stats` (a no-op for modules it did not touch)."""
    for m in _batchnorms(model):
        if hasattr(m, _SAVED):
            m.track_running_stats = getattr(m, _SAVED)
            delattr(m, _SAVED)
