"""The loss along random filter-normalised directions around a finished run's weights, a
1-d curve or a 2-d surface with its plots (``python -m <domain>_exps.landscape
run_dir=PATH``; options: the config's ``landscape``). Not tabulated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common.io import write_json
from common.measurements.spec import Measurement, output_file


def run(task: Any, cfg: Any, path: Path) -> dict[str, Any]:
    # imported here: the registry (which the tables read) stays light
    from common.sharpness import loss_landscape, plot_landscape
    from common.train.measuring import prepare

    m = cfg.landscape
    model, data, info = prepare(task, cfg, path, "landscape")
    result = loss_landscape(
        model,
        task.loss_fn(),
        data,
        path=path / "landscape.h5",
        steps=m.steps,
        span=(-m.span, m.span),
        dims=m.dims,
        seed=m.seed,
        ignore_bias_bn=m.ignore_bias_bn,
        progress=cfg.train.progress,
    )
    plots = plot_landscape(result, path / "landscape", kinds=m.plots)
    out = {**info, "file": str(path / "landscape.h5"), "plots": plots}
    write_json(path / output_file("landscape"), out)
    print(f"loss landscape -> {path / 'landscape.h5'}; plots: {', '.join(plots)}")
    return out


MEASUREMENT = Measurement("landscape", run)
