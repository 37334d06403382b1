"""Adaptive sharpness of a finished run (Andriushchenko et al. 2023): the loss increase at
worst (projected ascent) and on average (Gaussian) when the weights move in a ball scaled
by |w| (``python -m <domain>_exps.measure adaptive_sharpness run_dir=PATH``; options: the
config's ``adaptive_sharpness``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from common.checks import is_number
from common.io import write_json
from common.measurements.spec import Column, Measurement, Sharpness, output_file, subset_of

NAME = "adaptive_sharpness"


def run(task: Any, cfg: Any, path: Path) -> dict[str, Any]:
    # imported here: the registry (which the tables read) stays light
    from common.sharpness import average_sharpness, worst_case_sharpness
    from common.train.measuring import params_for, prepare

    m = getattr(cfg, NAME)
    model, data, info = prepare(task, cfg, path, NAME)
    loss = task.loss_fn()
    common = {
        "scaling": m.scaling, "params": params_for(task, NAME, m), "seed": m.seed,
        "progress": cfg.train.progress,
    }  # fmt: skip
    out: dict[str, Any] = dict(info)
    if "worst" in m.cases:
        out["worst"] = worst_case_sharpness(
            model, loss, data, rho=m.rho, norm=m.norm, steps=m.steps, restarts=m.restarts,
            per_batch=m.per_batch, **common,
        ).to_dict()  # fmt: skip
    if "average" in m.cases:
        out["average"] = average_sharpness(
            model, loss, data, rho=m.average_rho, n_samples=m.n_samples,
            two_sided=m.two_sided, **common,
        ).to_dict()  # fmt: skip
    write_json(path / output_file(NAME), out)
    _say(out, info, path)
    return out


def _say(out: Mapping[str, Any], info: Mapping[str, Any], path: Path) -> None:
    on = f"({info['n_examples']} {info['split']} examples)"
    if "worst" in out:
        w = out["worst"]
        print(f"worst-case sharpness ({w['norm']}, rho={w['rho']:g}, {w['scaling']}): "
              f"{w['value']:.4g} {on}")  # fmt: skip
    if "average" in out:
        a = out["average"]
        print(f"average sharpness (rho={a['rho']:g}, {a['scaling']}): {a['mean']:.4g} ± "
              f"{a['stderr']:.2g} {on}")  # fmt: skip
    print(f"-> {path / output_file(NAME)}")


def read(output: dict[str, Any]) -> dict[str, Any]:
    """The worst-case value and the average-case mean, with the settings behind them."""
    row: dict[str, Any] = {}
    if "worst" in output:
        w = output["worst"]
        row.update(adaptive_worst=w["value"], adaptive_setting=_setting(w, w["norm"]))
    if "average" in output:
        a = output["average"]
        row.update(adaptive_average=a["mean"], adaptive_average_setting=_setting(a, "gauss"))
    if not row:
        raise ValueError("neither 'worst' nor 'average' was measured")
    if not all(is_number(row[k]) for k in ("adaptive_worst", "adaptive_average") if k in row):
        raise ValueError("an adaptive sharpness value is not a number")
    return {**row, **subset_of(output, "adaptive")}


def _setting(result: Mapping[str, Any], norm: str) -> str:
    """``linf, ρ=0.002, c=|w|``: what a value was measured with, for the tables' titles."""
    c = "c=|w|" if result["scaling"] == "adaptive" else "c=1"
    return f"{norm}, ρ={float(result['rho']):g}, {c}"


def _heading(title: str, key: str) -> Any:
    def heading(rows: Sequence[Mapping[str, Any]]) -> str:
        settings = sorted({str(r[key]) for r in rows if key in r})
        return f"{title} ({'; '.join(settings)})" if settings else title

    return heading


MEASUREMENT = Measurement(
    NAME,
    run,
    read,
    columns=(
        Column("adaptive_worst", "adaptive worst-case", "{:.4g}"),
        Column("adaptive_average", "adaptive average", "{:.4g}"),
    ),
    sharpness=(
        Sharpness(
            "adaptive_worst", "adaptive worst-case sharpness", "adaptive",
            _heading("adaptive worst-case sharpness", "adaptive_setting"),
        ),
        Sharpness(
            "adaptive_average", "adaptive average sharpness", "adaptive",
            _heading("adaptive average sharpness", "adaptive_average_setting"),
        ),
    ),
    with_training=False,
)  # fmt: skip
