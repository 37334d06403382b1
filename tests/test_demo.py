"""``make demo`` end to end in smoke mode: every domain trains, is measured and tabulated."""

from __future__ import annotations

import csv

from scripts import demo


def test_demo_covers_every_domain_with_each_base_optimizer(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    argv = ["--out", str(out), "--no-progress", "--optimizers", "base", "nso", "smoke=true"]
    assert demo.main(argv) == 0
    with open(out / "table.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    got = {(r["domain"], r["dataset"], r["optimizer"]) for r in rows}
    assert got == {
        ("image", "digits", "sgd"),
        ("image", "digits", "nso"),
        ("text", "polarity (synthetic)", "adamw"),  # SGD does not train a transformer here
        ("text", "polarity (synthetic)", "nso"),
        ("graph", "sbm (synthetic)", "sgd"),
        ("graph", "sbm (synthetic)", "nso"),
        ("ecg", "beats (synthetic)", "sgd"),
        ("ecg", "beats (synthetic)", "nso"),
    }
    assert all(r["trace"] and r["noise_stability"] for r in rows)
    assert (out / "table.png").is_file()
    assert "| text | polarity (synthetic)" in capsys.readouterr().out


def test_demo_base_optimizer_per_domain() -> None:
    bases = {d.task.domain: d.optimizer("base") for d in demo.domains()}
    assert bases == {"image": "sgd", "text": "adamw", "graph": "sgd", "ecg": "sgd"}
    assert all(d.optimizer("sam") == "sam" for d in demo.domains())
