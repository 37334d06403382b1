"""The measurements of a finished run, as the optimizers are, a registry: the training
command's ``--measure``, the measurement commands, the run-directory contract and the
tables iterate it. See :mod:`common.measurements.spec` for what an entry holds."""

from __future__ import annotations

from common.measurements import (
    adaptive_sharpness,
    hessian,
    landscape,
    noise_stability,
    pac_bayes,
)
from common.measurements.spec import Column, Measurement, Sharpness

#: Every measurement by name, in the order ``--measure`` runs them and tables show them.
MEASUREMENTS: dict[str, Measurement] = {
    m.name: m
    for m in (
        hessian.MEASUREMENT,
        noise_stability.MEASUREMENT,
        adaptive_sharpness.MEASUREMENT,
        pac_bayes.MEASUREMENT,
        landscape.MEASUREMENT,
    )
}


def register(measurement: Measurement) -> Measurement:
    """Adds a measurement (its config section must be in the domain's config); returns it."""
    if measurement.name in MEASUREMENTS:
        raise ValueError(f"a measurement named {measurement.name!r} is already registered")
    MEASUREMENTS[measurement.name] = measurement
    return measurement


def sharpness_measures() -> tuple[Sharpness, ...]:
    """Every flatness measure the tables aggregate, in the registry's order."""
    return tuple(s for m in MEASUREMENTS.values() for s in m.sharpness)


def measured_columns() -> tuple[Column, ...]:
    """The per-run table's measurement columns, in the registry's order."""
    return tuple(c for m in MEASUREMENTS.values() for c in m.columns)


__all__ = [
    "MEASUREMENTS",
    "Column",
    "Measurement",
    "Sharpness",
    "measured_columns",
    "register",
    "sharpness_measures",
]
