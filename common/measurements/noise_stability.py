"""Noise stability of a finished run: the loss increase under Gaussian weight noise, per
noise scale (``python -m <domain>_exps.noise_stability run_dir=PATH``; options: the
config's ``noise_stability``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from common.checks import is_number
from common.io import write_json
from common.measurements.spec import Column, Measurement, Sharpness, output_file, subset_of


def run(task: Any, cfg: Any, path: Path) -> dict[str, Any]:
    # imported here: the registry (which the tables read) stays light
    from common.sharpness import noise_stability
    from common.train.measuring import params_for, prepare

    m = cfg.noise_stability
    model, data, info = prepare(task, cfg, path, "noise_stability")
    results = noise_stability(
        model,
        task.loss_fn(),
        data,
        sigma=list(m.sigma),
        n_samples=m.n_samples,
        two_sided=m.two_sided,
        params=params_for(task, "noise_stability", m),
        seed=m.seed,
        progress=cfg.train.progress,
    )
    out = {**info, "results": [r.to_dict() for r in results]}
    write_json(path / output_file("noise_stability"), out)
    for r in results:
        print(f"noise stability sigma={r.sigma:g}: {r.mean:.4g} ± {r.std:.2g}")
    return out


def read(output: dict[str, Any]) -> dict[str, Any]:
    """The loss increase at the smallest scale measured, and the whole curve (its plot)."""
    if not output["results"]:
        raise ValueError("'results' is empty")
    first = min(output["results"], key=lambda r: r["sigma"])  # the smallest sigma measured
    curve = {float(r["sigma"]): r["mean"] for r in output["results"]}
    if not all(map(is_number, curve.values())):
        raise ValueError("a noise stability mean is not a number")
    return {
        "noise_sigma": first["sigma"],
        "noise_stability": first["mean"],
        **subset_of(output, "noise"),
        "noise_curve": curve,  # every sigma measured: the noise-vs-sigma plot
    }


def heading(rows: Sequence[Mapping[str, Any]]) -> str:
    """The table's title names the scales its cells were measured at."""
    sigmas = sorted({r["noise_sigma"] for r in rows if "noise_sigma" in r})
    at = ", ".join(f"{s:g}" for s in sigmas)
    return f"noise stability (loss increase under weight noise, smallest σ measured: {at})"


MEASUREMENT = Measurement(
    "noise_stability",
    run,
    read,
    columns=(
        Column("noise_sigma", "σ", "{:g}"),
        Column("noise_stability", "noise stability", "{:.4g}"),
    ),
    sharpness=(Sharpness("noise_stability", "noise stability", "noise", heading),),
)
