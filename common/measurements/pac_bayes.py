"""PAC-Bayes flatness of a finished run (Jiang et al. 2020): 1/σ² for the largest weight
noise σ that raises the loss by at most a target, plain and magnitude-aware
(``python -m <domain>_exps.measure pac_bayes run_dir=PATH``; options: the config's
``pac_bayes``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from common.checks import is_number
from common.io import write_json
from common.measurements.spec import Column, Measurement, Sharpness, output_file, subset_of

NAME = "pac_bayes"
#: the section's ``noise`` choices -> the output's keys and the row's
KEYS = {"plain": "pac_bayes_flatness", "magnitude": "pac_bayes_mag_flatness"}


def run(task: Any, cfg: Any, path: Path) -> dict[str, Any]:
    # imported here: the registry (which the tables read) stays light
    from common.sharpness import pac_bayes_sigma
    from common.train.measuring import params_for, prepare

    m = getattr(cfg, NAME)
    model, data, info = prepare(task, cfg, path, NAME)
    loss = task.loss_fn()
    out: dict[str, Any] = dict(info)
    for noise in m.noise:
        result = pac_bayes_sigma(
            model, loss, data, target=m.target, magnitude_aware=noise == "magnitude",
            eps=m.eps, n_samples=m.n_samples, two_sided=m.two_sided, sigma_min=m.sigma_min,
            sigma_max=m.sigma_max, tol=m.tol, params=params_for(task, NAME, m), seed=m.seed,
            progress=cfg.train.progress,
        )  # fmt: skip
        out[noise] = result.to_dict()
        print(f"PAC-Bayes sigma ({noise}): {result.sigma:.4g}, flatness 1/sigma^2 "
              f"{result.flatness:.4g} ({info['n_examples']} {info['split']} examples)")  # fmt: skip
        if result.status != "found":
            bound = "upper" if result.status == "above_max" else "lower"
            print(f"warning: {NAME}.{noise}: sigma is at the bracket's end ({result.status}): "
                  f"1/sigma^2 is an {bound} bound; widen {NAME}.sigma_min/sigma_max",
                  file=sys.stderr)  # fmt: skip
    write_json(path / output_file(NAME), out)
    print(f"-> {path / output_file(NAME)}")
    return out


def read(output: dict[str, Any]) -> dict[str, Any]:
    """1/σ² of each noise measured, with its σ and target."""
    row: dict[str, Any] = {}
    for noise, key in KEYS.items():
        if noise in output:
            result = output[noise]
            if not is_number(result["flatness"]):
                raise ValueError(f"the {noise} flatness is not a number")
            row[key], row[f"{key}_target"] = result["flatness"], result["target"]
    if not row:
        raise ValueError("neither 'plain' nor 'magnitude' was measured")
    return {**row, **subset_of(output, NAME)}


def _heading(title: str, key: str) -> Any:
    def heading(rows: list[dict[str, Any]]) -> str:
        targets = sorted({float(r[f"{key}_target"]) for r in rows if f"{key}_target" in r})
        at = ", ".join(f"{t:g}" for t in targets)
        return f"{title} (lower is flatter; loss increase target d = {at})"

    return heading


MEASUREMENT = Measurement(
    NAME,
    run,
    read,
    columns=(
        Column("pac_bayes_flatness", "PAC-Bayes 1/σ²", "{:.4g}"),
        Column("pac_bayes_mag_flatness", "PAC-Bayes mag. 1/σ'²", "{:.4g}"),
    ),
    sharpness=(
        Sharpness(
            "pac_bayes_flatness", "PAC-Bayes flatness 1/σ²", NAME,
            _heading("PAC-Bayes flatness 1/σ²", "pac_bayes_flatness"),
        ),
        Sharpness(
            "pac_bayes_mag_flatness", "magnitude-aware PAC-Bayes flatness 1/σ'²", NAME,
            _heading("magnitude-aware PAC-Bayes flatness 1/σ'²", "pac_bayes_mag_flatness"),
        ),
    ),
    with_training=False,
)  # fmt: skip
