"""The Hessian's trace, top eigenvalues and (optionally) spectral density of a finished run
(``python -m <domain>_exps.hessian run_dir=PATH``; options: the config's ``hessian``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common.io import write_json
from common.measurements.spec import Column, Measurement, Sharpness, output_file, subset_of

#: hessian_trace's, hessian_eigenvalues' and hessian_esd's arguments -> the section's keys
KEYS = {
    "method": "method", "sampling": "sampling", "n_probes": "n_probes",
    "target_stderr": "target_stderr", "sketch_size": "sketch_size", "k": "top_k",
    "start": "eig_start", "tol": "eig_tol", "n_iter": "esd_iter",
}  # fmt: skip


def run(task: Any, cfg: Any, path: Path) -> dict[str, Any]:
    # imported here: the registry (which the tables read) stays light
    from common.sharpness import hessian_eigenvalues, hessian_esd, hessian_trace, plot_esd
    from common.sharpness.hessian import check_trace_options
    from common.train.measuring import option_errors, params_for, prepare

    m = cfg.hessian
    trace_options = {
        "method": m.method, "n_probes": m.n_probes, "target_stderr": m.target_stderr,
        "sketch_size": m.sketch_size, "sampling": m.sampling,
    }  # fmt: skip
    with option_errors("hessian", KEYS):
        check_trace_options(**trace_options)  # before the model and data load
        model, data, info = prepare(task, cfg, path, "hessian")
        loss = task.loss_fn()
        common = {
            "params": params_for(task, "hessian", m), "seed": m.seed,
            "progress": cfg.train.progress,
        }  # fmt: skip
        check_trace_options(**trace_options, model=model, params=common["params"])
        steps = max(100, 2 * m.top_k)  # Lanczos needs more steps than eigenvalues wanted
        # the eigenvalues first: a top_k beyond the parameters fails before the trace's cost
        eigenvalues = hessian_eigenvalues(
            model, loss, data, k=m.top_k, max_iter=steps, tol=m.eig_tol, start=m.eig_start,
            **common,
        ).to_dict()  # fmt: skip
        out: dict[str, Any] = dict(info)
        out["trace"] = hessian_trace(model, loss, data, **trace_options, **common).to_dict()
        out["eigenvalues"] = eigenvalues
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
