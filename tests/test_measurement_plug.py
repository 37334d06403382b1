"""The measurement plug: a measurement defined only in this file (the distance the weights
moved from their initialisation, a per-layer-free flatness proxy) is one Measurement, one
registry call and one config section; the training command's --measure, the generic
measurement command, the run-directory checks and the tables pick it up without anything
in common/ knowing about it."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from common import measurements, tables
from common.io import write_json
from common.measurements import Column, Measurement, Sharpness
from common.train import cli
from common.train.config import MeasurementSection, runtime_keys
from common.train.measuring import load_trained, output_file
from common.train.typed import keyfield
from image_exps.task import TASK, ImageConfig


class WeightNormConfig(MeasurementSection):
    """Options of the toy measurement."""

    power: float = keyfield(2.0, "the norm's order", gt=0)
    checkpoint: str = keyfield("best", "checkpoint measured", choices=("best", "last"))


class PluggedConfig(ImageConfig):
    weight_norm: WeightNormConfig = keyfield(factory=WeightNormConfig)


def run(task: Any, cfg: Any, path: Path) -> dict[str, Any]:
    m = cfg.weight_norm
    model, _, record = load_trained(task, cfg, path, m.checkpoint)
    weights = torch.cat([p.detach().flatten() for p in model.parameters()])
    norm = float(torch.linalg.vector_norm(weights, ord=m.power))
    out = {**record, "split": "weights", "n_examples": 0, "norm": norm,
           "options": {"power": m.power, "checkpoint": m.checkpoint}}  # fmt: skip
    write_json(path / output_file("weight_norm"), out)
    return out


def read(output: dict[str, Any]) -> dict[str, Any]:
    return {"weight_norm": output["norm"], "weight_norm_split": output["split"]}


TOY = Measurement(
    "weight_norm",
    run,
    read,
    columns=(Column("weight_norm", "weight norm", "{:.4g}"),),
    sharpness=(Sharpness("weight_norm", "weight norm", "weight_norm"),),
)
PLUGGED = type(TASK)(**{**TASK.__dict__, "config_cls": PluggedConfig})


@pytest.fixture
def registered():
    yield measurements.register(TOY)  # the one registry line a new measurement adds
    del measurements.MEASUREMENTS[TOY.name]  # the other tests see the built-in five


def test_a_new_measurement_is_trained_measured_checked_and_tabulated(tmp_path, registered):
    assert "weight_norm" in runtime_keys(PluggedConfig)  # options may change when measuring
    runs = tmp_path / "runs"
    for optimizer in ("sgd", "sam"):
        run_dir = runs / optimizer
        argv = [f"optimizer.name={optimizer}", "smoke=true", "train.progress=false",
                f"run_dir={run_dir}"]  # fmt: skip
        assert cli.train_main(PLUGGED, ["--measure", *argv]) == 0
        measured = json.loads((run_dir / "weight_norm.json").read_text())
        assert measured["finished"] and measured["norm"] > 0  # --measure ran it
        # the generic command by name, with the section's own option
        assert cli.measure_any_main(PLUGGED, ["weight_norm", f"run_dir={run_dir}",
                                              "weight_norm.power=1"]) == 0  # fmt: skip
        l1 = json.loads((run_dir / "weight_norm.json").read_text())["norm"]
        assert l1 > measured["norm"]  # the L1 norm of a vector of many weights
        # a training key still cannot change at measurement time
        assert cli.measure_any_main(PLUGGED, ["weight_norm", f"run_dir={run_dir}",
                                              "optimizer.lr=1"]) == 2  # fmt: skip
    out = tmp_path / "tables"
    assert tables.main([str(runs), "--out", str(out)]) == 0
    with open(out / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert all(float(r["weight_norm"]) > 0 for r in rows)
    assert "### weight norm" in (out / "table.md").read_text()  # aggregated over seeds


def test_the_generic_command_names_the_measurements_it_knows(capsys):
    assert cli.measure_any_main(TASK, ["curvature", "run_dir=x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no measurement named 'curvature'")
    assert err.endswith(
        "KIND one of: hessian, noise_stability, adaptive_sharpness, pac_bayes, landscape"
    )
    assert cli.measure_any_main(TASK, []) == 2
    assert "which measurement?" in capsys.readouterr().err


def test_a_name_is_registered_once(registered):
    with pytest.raises(ValueError, match="already registered"):
        measurements.register(TOY)


def test_a_registered_measurement_a_domain_has_no_section_for_is_one_line(
    tmp_path, registered, capsys
):
    # the image domain's own config has no weight_norm section: --measure skips it, and
    # asking for it is a one-line error, not a KeyError
    run_dir = tmp_path / "run"
    argv = ["smoke=true", "train.progress=false", f"run_dir={run_dir}", "--measure"]
    assert cli.train_main(TASK, argv) == 0
    assert (run_dir / "hessian.json").exists() and not (run_dir / "weight_norm.json").exists()
    capsys.readouterr()
    assert cli.measure_any_main(TASK, ["weight_norm", f"run_dir={run_dir}"]) == 2
    assert "has no section in the image domain's config" in capsys.readouterr().err


def test_measure_runs_the_defaults_and_measurements_picks_any(tmp_path, capsys):
    base = ["smoke=true", "train.progress=false"]
    assert cli.train_main(TASK, ["--measure", *base, f"run_dir={tmp_path / 'a'}"]) == 0
    written = {p.stem for p in (tmp_path / "a").glob("*.json")}
    assert {"hessian", "noise_stability", "landscape"} <= written  # the opt-out ones are not
    assert not {"adaptive_sharpness", "pac_bayes"} & written
    assert cli.train_main(TASK, [*base, "--measurements", "pac_bayes",
                                 f"run_dir={tmp_path / 'b'}"]) == 0  # fmt: skip
    written = {p.stem for p in (tmp_path / "b").glob("*.json")}
    assert "pac_bayes" in written and not {"hessian", "adaptive_sharpness"} & written
    capsys.readouterr()
    assert cli.train_main(TASK, [*base, "--measurements", "hessian,curvature",
                                 f"run_dir={tmp_path / 'c'}"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "no measurement named 'curvature'; choose from hessian" in err and "all" in err
    assert not (tmp_path / "c").exists()  # refused before training
