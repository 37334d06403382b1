"""``make demo`` end to end in smoke mode: every domain trains, is measured and tabulated."""

from __future__ import annotations

import csv

from common.io import read_json
from scripts import demo


def test_demo_covers_every_domain_with_each_base_optimizer_over_seeds(
    tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)  # the default output folders are relative
    argv = ["--no-progress", "--seeds", "0", "1", "--optimizers", "base", "nso", "smoke=true"]
    assert demo.main(argv) == 0
    out = tmp_path / "results" / "demo-smoke"  # its own folder: the full demo's stays intact
    assert not (tmp_path / "results" / "demo").exists()
    with open(out / "table.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    got = {(r["domain"], r["dataset"], r["optimizer"]) for r in rows}
    assert got == {
        ("image", "digits", "sgd"),
        ("image", "digits", "nso"),
        ("text", "polarity (synthetic)", "adamw"),  # SGD does not train a transformer here
        ("text", "polarity (synthetic)", "nso"),
        ("graph", "MUTAG", "adam"),  # real data shipped with the package
        ("graph", "MUTAG", "nso"),
        ("ecg", "mitdb", "sgd"),
        ("ecg", "mitdb", "nso"),
    }
    assert {r["n"] for r in rows} == {"2"} and {r["seeds"] for r in rows} == {"0 1"}
    # NSO's sigma was chosen on validation data from its grid (seed 0), then run with seed 1
    key, grid = demo.GRIDS["nso"]
    selection = read_json(out / "selection.json", fix="")["selections"]
    assert [s["optimizer"] for s in selection] == ["nso"] * 4
    for choice in selection:
        assert [p["setting"][key] for p in choice["grid"]] == list(grid)
        assert all(p["n"] == 1 for p in choice["grid"])
        (value,) = choice["chosen"].values()
        runs = sorted((out / "runs" / choice["domain"] / "nso").glob("*=*/seed*"))
        assert len(runs) == len(grid) + 1  # every grid point with seed 0, the chosen with 1
        assert (out / "runs" / choice["domain"] / "nso" / f"sigma={value}" / "seed1").is_dir()
    assert (out / "tradeoff.png").is_file()
    measured = {(r["domain"], r["optimizer"]) for r in rows if r["measure"] == "trace"}
    assert measured == {(d, o) for d, _, o in got}
    assert {r["measure"] for r in rows} >= {"trace", "top_eigenvalue", "noise_stability"}
    for name in (
        "metric.png",
        "trace.png",
        "noise_stability.png",
        "table.tex",
        "runs.md",
        "selection.md",
    ):
        assert (out / name).is_file(), name
    printed = capsys.readouterr().out
    assert "| text | polarity (synthetic) |" in printed
    assert "### Hyper-parameters chosen on validation data" in printed
    verdicts = [line for line in printed.splitlines() if line.startswith("- ")]
    assert [v.split(",")[0] for v in verdicts] == ["- image", "- text", "- graph", "- ecg"]
    assert all(", 2 seeds: NSO " in v for v in verdicts), verdicts


def test_demo_base_optimizer_per_domain() -> None:
    bases = {d.task.domain: d.optimizer("base") for d in demo.domains()}
    assert bases == {"image": "sgd", "text": "adamw", "graph": "adam", "ecg": "sgd"}
    assert all(d.optimizer("sam") == "sam" for d in demo.domains())


def test_every_grid_tunes_an_option_of_its_own_optimizer() -> None:
    from common.optim import OPTIMIZERS

    for name, (key, values) in demo.GRIDS.items():
        section, option = key.split(".")
        assert section == "optimizer" and option in OPTIMIZERS[name].options, (name, key)
        assert len(values) >= 3 and list(values) == sorted(values)
