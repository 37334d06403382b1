"""The Hessian's trace, top eigenvalues and (optionally) spectral density of a finished run
(``python -m <domain>_exps.hessian run_dir=PATH``; options: the config's ``hessian``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common.io import write_json
from common.measurements.spec import Column, Measurement, Sharpness, subset_of
from common.sharpness import hessian_eigenvalues, hessian_esd, hessian_trace, plot_esd
from common.sharpness.core import select_params
from common.sharpness.hessian import pilot_probes
from common.train.config import ConfigError
from common.train.measuring import output_file, params_for, prepare
from common.train.task import Task


def run(task: Task, cfg: Any, path: Path) -> dict[str, Any]:
    m = cfg.hessian
    if m.sampling == "batch" and m.method != "hutchinson":
        raise ConfigError(
            "hessian.sampling=batch is a way of hessian.method=hutchinson: drop one of them"
        )
    if m.sketch_size is not None and m.method != "hutch++":
        raise ConfigError("hessian.sketch_size is an option of hessian.method=hutch++: drop it")
    if m.sketch_size is not None and 2 * m.sketch_size >= m.n_probes:
        raise ConfigError(
            f"hessian.sketch_size={m.sketch_size} leaves no probes of hessian.n_probes="
            f"{m.n_probes} for the residual: use at most {(m.n_probes - 1) // 2}"
        )
    model, data, info = prepare(task, cfg, path, "hessian")
    loss = task.loss_fn()
    params = params_for(task, "hessian", m)
    common = {"params": params, "seed": m.seed, "progress": cfg.train.progress}
    size = sum(p.numel() for _, p in select_params(model, params))
    if m.top_k > size:
        raise ConfigError(
            f"hessian.top_k={m.top_k} exceeds the {size} parameters measured: lower it"
        )
    pilot = pilot_probes(select_params(model, params))
    if m.method == "stratified" and m.n_probes < pilot:
        raise ConfigError(
            f"hessian.method=stratified needs 2 probes per layer first: raise "
            f"hessian.n_probes={m.n_probes} to at least {pilot}"
        )
    out: dict[str, Any] = dict(info)
    out["trace"] = hessian_trace(
        model, loss, data, n_probes=m.n_probes, method=m.method, target_stderr=m.target_stderr,
        sketch_size=m.sketch_size, sampling=m.sampling, **common,
    ).to_dict()  # fmt: skip
    steps = max(100, 2 * m.top_k)  # Lanczos needs more steps than eigenvalues wanted
    out["eigenvalues"] = hessian_eigenvalues(
        model, loss, data, k=m.top_k, max_iter=steps, tol=m.eig_tol, start=m.eig_start, **common
    ).to_dict()
    if m.esd:
        esd = hessian_esd(model, loss, data, n_iter=m.esd_iter, **common)
        out["esd_plots"] = plot_esd(esd, path / "hessian_esd")
        out["esd"] = esd.to_dict()
    write_json(path / output_file("hessian"), out)
    eig = out["eigenvalues"]
    print(
        f"hessian trace {out['trace']['total']:.4g} ± {out['trace']['stderr']:.2g}, top "
        f"eigenvalue {eig['eigenvalues'][0]:.4g} ({info['n_examples']} {info['split']} "
        f"examples) -> {path / 'hessian.json'}"
    )
    return out


def read(output: dict[str, Any]) -> dict[str, Any]:
    """The trace (with its standard error) and the top eigenvalue, for the tables."""
    if not output["eigenvalues"]["eigenvalues"]:
        raise ValueError("'eigenvalues' is empty")
    return {
        "trace": output["trace"]["total"],
        "trace_stderr": output["trace"]["stderr"],
        "top_eigenvalue": output["eigenvalues"]["eigenvalues"][0],
        **subset_of(output, "hessian"),
    }


MEASUREMENT = Measurement(
    "hessian",
    run,
    read,
    columns=(
        Column("trace", "Hessian trace", "{:.4g}"),
        Column("trace_stderr", "± (s.e.)", "{:.2g}"),
        Column("top_eigenvalue", "top eigenvalue", "{:.4g}"),
    ),
    sharpness=(
        Sharpness("trace", "Hessian trace", "hessian"),
        Sharpness("top_eigenvalue", "top Hessian eigenvalue", "hessian"),
    ),
)
