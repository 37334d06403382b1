"""The Hessian's trace, top eigenvalues and (optionally) spectral density of a finished run
(``python -m <domain>_exps.hessian run_dir=PATH``; options: the config's ``hessian``), or
those of the GGN or the empirical Fisher instead (``hessian.operator``): their row keys and
titles name the matrix (``ggn_trace``, "GGN trace"), so that they never mix with the
Hessian's over seeds."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.errors import UserError
from common.io import write_json
from common.measurements.spec import Column, Measurement, Sharpness, output_file, subset_of

#: hessian_trace's, hessian_eigenvalues' and hessian_esd's arguments -> the section's keys
KEYS = {
    "method": "method", "sampling": "sampling", "n_probes": "n_probes",
    "target_stderr": "target_stderr", "sketch_size": "sketch_size", "k": "top_k",
    "start": "eig_start", "tol": "eig_tol", "n_iter": "esd_iter", "operator": "operator",
}  # fmt: skip
if TYPE_CHECKING:
    from common.sharpness.curvature import OutputLoss

#: the matrices besides the Hessian (hessian.operator) and their names in rows and titles
OTHERS = {"ggn": "GGN", "fisher": "Fisher"}


def output_loss(task: Any, **loss_options: Any) -> OutputLoss:
    """``task.loss_fn(**loss_options)`` (measurements use the plain one) split at the
    model's outputs, as the GGN needs it: the task's ``forward``, then the task's own loss
    with ``forward`` replaced by the outputs given, so that the targets, the criterion, the
    label smoothing and the class weights are the task's, for every domain alike."""
    from common.sharpness.curvature import OutputLoss

    def given(outputs: Any, batch: Any) -> Any:
        del batch
        return outputs

    return OutputLoss(task.forward, replace(task, forward=given).loss_fn(**loss_options))


def _check_split(split: Any, loss: Any, model: Any, data: Any) -> None:
    """The split loss is the task's loss (a task that overrides ``Task.loss`` would make it
    another's): compared on the first batch."""
    import torch

    from common.batches import to_device
    from common.sharpness.core import model_device

    batch = to_device(next(iter(data)), model_device(model))
    with torch.no_grad():
        a, b = float(split(model, batch)), float(loss(model, batch))
    if not abs(a - b) <= 1e-5 * max(1.0, abs(b)):
        raise UserError(
            f"hessian.operator=ggn: the task's loss ({b:.6g}) is not its criterion of its "
            f"forward's outputs ({a:.6g}); give the task a forward and criterion that make it"
        )


def run(task: Any, cfg: Any, path: Path) -> dict[str, Any]:
    # imported here: the registry (which the tables read) stays light
    from common.sharpness import hessian_eigenvalues, hessian_esd, hessian_trace, plot_esd
    from common.sharpness.curvature import TITLES, check_operator
    from common.sharpness.hessian import check_trace_options
    from common.train.measuring import option_errors, params_for, prepare

    m = cfg.hessian
    trace_options = {
        "method": m.method, "n_probes": m.n_probes, "target_stderr": m.target_stderr,
        "sketch_size": m.sketch_size, "sampling": m.sampling,
    }  # fmt: skip
    with option_errors("hessian", KEYS):
        check_trace_options(**trace_options)  # before the model and data load
        check_operator(m.operator)
        model, data, info = prepare(task, cfg, path, "hessian")
        loss = task.loss_fn()
        if m.operator == "ggn":
            loss, plain = output_loss(task), loss
            _check_split(loss, plain, model, data)
        common = {
            "params": params_for(task, "hessian", m), "seed": m.seed,
            "progress": cfg.train.progress, "operator": m.operator,
        }  # fmt: skip
        check_trace_options(**trace_options, model=model, params=common["params"])
        steps = max(100, 2 * m.top_k)  # Lanczos needs more steps than eigenvalues wanted
        # the eigenvalues first: a top_k beyond the parameters fails before the trace's cost
        eigenvalues = hessian_eigenvalues(
            model, loss, data, k=m.top_k, max_iter=steps, tol=m.eig_tol, start=m.eig_start,
            **common,
        ).to_dict()  # fmt: skip
        out: dict[str, Any] = {**info, "operator": m.operator}
        out["trace"] = hessian_trace(model, loss, data, **trace_options, **common).to_dict()
        out["eigenvalues"] = eigenvalues
        if m.esd:
            esd = hessian_esd(model, loss, data, n_iter=m.esd_iter, **common)
            out["esd_plots"] = plot_esd(esd, path / "hessian_esd")
            out["esd"] = esd.to_dict()
    write_json(path / output_file("hessian"), out)
    eig, name = out["eigenvalues"], "hessian" if m.operator == "hessian" else TITLES[m.operator]
    print(
        f"{name} trace {out['trace']['total']:.4g} ± {out['trace']['stderr']:.2g}, top "
        f"eigenvalue {eig['eigenvalues'][0]:.4g} ({info['n_examples']} {info['split']} "
        f"examples) -> {path / 'hessian.json'}"
    )
    return out


def read(output: dict[str, Any]) -> dict[str, Any]:
    """The trace (with its standard error) and the top eigenvalue, for the tables; keys
    prefixed ``ggn_`` or ``fisher_`` for those matrices (files without an operator: the
    Hessian's)."""
    if not output["eigenvalues"]["eigenvalues"]:
        raise ValueError("'eigenvalues' is empty")
    operator = output.get("operator", "hessian")
    if operator != "hessian" and operator not in OTHERS:
        raise ValueError(f"operator {operator!r} is not one of hessian, {', '.join(OTHERS)}")
    prefix = "" if operator == "hessian" else f"{operator}_"
    return {
        f"{prefix}trace": output["trace"]["total"],
        f"{prefix}trace_stderr": output["trace"]["stderr"],
        f"{prefix}top_eigenvalue": output["eigenvalues"]["eigenvalues"][0],
        **subset_of(output, "hessian"),
    }


MEASUREMENT = Measurement(
    "hessian",
    run,
    read,
    columns=tuple(
        column
        for key, title in {"": "Hessian", **{f"{k}_": t for k, t in OTHERS.items()}}.items()
        for column in (
            Column(f"{key}trace", f"{title} trace", "{:.4g}"),
            Column(f"{key}trace_stderr", "± (s.e.)", "{:.2g}"),
            Column(
                f"{key}top_eigenvalue",
                "top eigenvalue" if not key else f"top {title} eig.",
                "{:.4g}",
            ),
        )
    ),  # a table shows the columns its runs have: a GGN-measured run its GGN's
    sharpness=(
        Sharpness("trace", "Hessian trace", "hessian"),
        Sharpness("top_eigenvalue", "top Hessian eigenvalue", "hessian"),
        *(
            s
            for key, title in OTHERS.items()
            for s in (
                Sharpness(f"{key}_trace", f"{title} trace", "hessian"),
                Sharpness(f"{key}_top_eigenvalue", f"top {title} eigenvalue", "hessian"),
            )
        ),
    ),
)
