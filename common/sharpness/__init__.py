"""Sharpness measurements: Hessian trace, eigenvalues, spectral density, noise stability,
adaptive sharpness, PAC-Bayes flatness, loss landscape. Each takes ``model``,
``loss_fn(model, batch) -> mean loss`` and ``data`` (re-iterable batches), evaluates in
eval mode and leaves the model as it found it.
"""

from common.sharpness.adaptive import (
    AverageCaseResult,
    WorstCaseResult,
    average_sharpness,
    worst_case_sharpness,
)
from common.sharpness.core import Record, measuring, select_params
from common.sharpness.curvature import OPERATORS, OutputLoss
from common.sharpness.hessian import (
    DensityResult,
    EigenResult,
    TraceResult,
    hessian_eigenvalues,
    hessian_esd,
    hessian_trace,
)
from common.sharpness.landscape import (
    InterpolationResult,
    LandscapeResult,
    interpolate,
    loss_landscape,
    random_direction,
)
from common.sharpness.noise import NoiseStabilityResult, noise_stability
from common.sharpness.pac_bayes import PacBayesResult, pac_bayes_sigma
from common.sharpness.plots import plot_esd, plot_interpolation, plot_landscape

__all__ = [
    "OPERATORS",
    "AverageCaseResult",
    "DensityResult",
    "EigenResult",
    "InterpolationResult",
    "LandscapeResult",
    "NoiseStabilityResult",
    "OutputLoss",
    "PacBayesResult",
    "Record",
    "TraceResult",
    "WorstCaseResult",
    "average_sharpness",
    "hessian_eigenvalues",
    "hessian_esd",
    "hessian_trace",
    "interpolate",
    "loss_landscape",
    "measuring",
    "noise_stability",
    "pac_bayes_sigma",
    "plot_esd",
    "plot_interpolation",
    "plot_landscape",
    "random_direction",
    "select_params",
    "worst_case_sharpness",
]
