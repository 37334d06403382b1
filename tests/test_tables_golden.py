"""The tables' text outputs pinned byte for byte (golden files in tests/golden/tables/):
a refactor of the run records, the aggregation or the rendering must not change them.
Regenerate on purpose with UPDATE_GOLDEN=1 and review the diff."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from common.tables import main
from tests.test_aggregate import MCC, VALUES, write_run

GOLDEN = Path(__file__).parent / "golden" / "tables"
TEXT = (".md", ".csv", ".tex", ".json")


def sweep_with_a_choice(root: Path) -> None:
    """What `sweep.sh --select` leaves: SAM and NSO over a grid with seed 0 (validation
    values that choose rho=0.05 and sigma=0.01), the choice and the base with 3 seeds; a
    second domain with two metrics and a fold key, measured at two noise scales."""
    for (optimizer, seed), values in VALUES.items():
        if optimizer == "sgd":
            write_run(root, optimizer, seed, values, val=90.0 + seed, val_loss=0.3)
            continue
        key = "optimizer.rho" if optimizer == "sam" else "optimizer.sigma"
        chosen = "0.05" if optimizer == "sam" else "0.01"
        grid = ("0.02", "0.05", "0.2") if optimizer == "sam" else ("0.01", "0.03", "0.1")
        for value in grid if seed == 0 else (chosen,):
            shift = 0.0 if value == chosen else 1.5 * grid.index(value) + 0.5
            run_values = (values[0] - shift, values[1] + 10 * shift, values[2] + shift, values[3])
            write_run(
                root, optimizer, seed, run_values, overrides=(f"{key}={value}",),
                name=f"digits/{optimizer}/{key}={value}/seed{seed}",
                val=92.0 - shift + seed, val_loss=0.25 + shift / 10,
            )  # fmt: skip
    for fold in range(3):
        for optimizer, scale in (("sgd", 1.0), ("sam", 0.8)):
            write_run(
                root, optimizer, 0, (70.0 + fold * scale, 40.0 * scale + fold, 4.0 + fold, 0.2),
                dataset="rte", domain="text", metrics=(MCC,), sigmas=(0.01, 0.02),
                fold=fold, name=f"rte/{optimizer}/fold{fold}", val=60.0, val_loss=0.5,
            )  # fmt: skip


def outputs(folder: Path, root: Path) -> dict[str, str]:
    """Every text file written, with the run folders' location made neutral."""
    return {
        str(p.relative_to(folder)): p.read_text().replace(str(root), "<runs>")
        for p in sorted(folder.rglob("*"))
        if p.suffix in TEXT
    }


@pytest.mark.parametrize("select", [False, True], ids=["every-setting", "select"])
def test_the_tables_text_is_unchanged(tmp_path, select):
    root, out = tmp_path / "runs", tmp_path / "out"
    sweep_with_a_choice(root)
    assert main([*(["--select"] if select else []), str(root), "--out", str(out)]) == 0
    got = outputs(out, root)
    golden = GOLDEN / ("select" if select else "every-setting")
    if os.environ.get("UPDATE_GOLDEN"):
        for name, text in got.items():
            (golden / name).parent.mkdir(parents=True, exist_ok=True)
            (golden / name).write_text(text)
    want = {str(p.relative_to(golden)): p.read_text() for p in sorted(golden.rglob("*"))}
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name] == want[name], f"{name} differs from {golden / name}"
