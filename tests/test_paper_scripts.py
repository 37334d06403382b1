"""The paper-table scripts (scripts/paper/*.sh): each runs its matrix through sweep.sh and
then tabulates it; a dry run prints every cell and the table command to run later."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts" / "paper"


def run(script: str, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    return subprocess.run(
        [str(SCRIPTS / script), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=300,
    )


def cells(out: str) -> list[str]:
    return [line for line in out.splitlines() if " -m " in line and ".train --measure" in line]


@pytest.mark.parametrize(
    ("script", "count", "within"),
    [
        # 6 sets x (adam, sam, nso) x 3 seeds
        ("nso_image.sh", 54, ["nso_finetune.yaml", "data.name=cub200", "optimizer.name=adam"]),
        # 9 TU sets x 3 optimizers x 10 folds, seed 0
        ("graph_tu.sh", 270, ["configs/mutag.yaml", "data.fold=9", "configs/collab.yaml"]),
        # 8 GLUE tasks x 3 optimizers x 3 seeds
        ("glue.sh", 72, ["nso_glue.yaml", "data.name=cola", "optimizer.name=adamw"]),
        # 3 optimizers x 3 seeds, then SAM at 7 rho x 3 seeds
        ("mitbih.sh", 30, ["mitbih_attention.yaml", "optimizer.rho=0.01", "optimizer.rho=1.0"]),
        # NSO at 4 sigma x 4 k x 3 seeds, then Adam x 3 seeds
        ("nso_sigma.sh", 51, ["optimizer.sigma=0.008", "optimizer.num_perturbs=4"]),
    ],
)
def test_dry_run_prints_the_paper_matrix_and_the_table_command(tmp_path, script, count, within):
    r = run(script, "--dry-run", env={"RUNS": str(tmp_path / "runs")})
    assert r.returncode == 0, r.stderr
    found = cells(r.stdout)
    assert len(found) == count
    assert len(set(found)) == count  # every cell its own
    for text in within:
        assert any(text in c for c in found), text
    assert "when the runs have finished:" in r.stdout and "-m common.tables" in r.stdout
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


def test_every_script_says_what_it_runs_on_what_data_and_how_long() -> None:
    for script in sorted(SCRIPTS.glob("*.sh")):
        if script.name == "lib.sh":
            continue
        head = script.read_text().split("set -euo pipefail")[0]
        for part in ("# Data:", "# Config:", "# Runtime:", "# Usage:", "# Output:"):
            assert part in head, (script.name, part)
        assert re.search(r"GPU-hours", head), script.name
        assert os.access(script, os.X_OK), script.name


@pytest.mark.heavy  # 40 s: make system-test
def test_mitbih_runs_its_matrix_and_the_rho_sweep_then_tabulates(tmp_path) -> None:
    env = {"SEEDS": "0", "RHOS": "0.1 0.5", "RUNS": str(tmp_path / "runs"),
           "RESULTS": str(tmp_path / "results")}  # fmt: skip
    r = run("mitbih.sh", "--jobs", "2", "--", "smoke=true", f"data.root={tmp_path / 'data'}",
            env=env, cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    main, sweep = tmp_path / "results" / "mitbih", tmp_path / "results" / "mitbih_rho"
    header = (main / "table.md").read_text().splitlines()
    assert any(
        line.startswith("| domain | data set | model | sgd | sam | nso |") for line in header
    )
    assert (sweep / "sweep_optimizer.rho.png").stat().st_size > 0
    # the sweep's table: SAM at rho 0.5 against the SGD runs of the main matrix
    table = (sweep / "table.md").read_text()
    assert "| rho=0.5 |" in table and "sam vs base (%)" in table


@pytest.mark.parametrize(
    ("script", "count", "within", "then"),
    [
        # tuning: 2 sets x 10 folds x (adam + 3 rho + 3 sigma), seed 0 (the only seed)
        (
            "graphs.sh",
            140,
            ["configs/ptc_mr.yaml", "optimizer.sigma=0.1"],
            "common.tables --select",
        ),
        # 2 sets x 10 folds x 2 validation sets
        ("graph_protocols.sh", 40, ["data.val_is_test=true", "model.pooling=sum"], "common.epochs"),
        # tuning: sgd x 3 seeds, then 3 rho and 3 sigma with seed 0
        ("heartbeats.sh", 9, ["mitdb_records.yaml", "model.name=cnn1d"], "common.tables --select"),
        # tuning: adamw x 3 seeds, then 3 rho and 3 sigma with seed 0; where the data are
        (
            "text.sh",
            9,
            ["sst2_minilm.yaml", "data.root=/glue", "model.name=/models/all-MiniLM-L6-v2"],
            "common.tables --select",
        ),
        ("images.sh", 9, ["cifar10_images.yaml", "data.name=/images/cifar"], "common.tables"),
    ],
)
def test_real_data_scripts_dry_run(tmp_path, script, count, within, then):
    r = subprocess.run(
        [str(REPO / "scripts" / "real" / script), "--dry-run", "--", "train.epochs=1"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "RUNS": str(tmp_path / "runs"), "GLUE_ROOT": "/glue",
             "MODEL": "/models/all-MiniLM-L6-v2", "IMAGES": "/images/cifar"},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    found = cells(r.stdout)
    assert len(found) == len(set(found)) == count
    for text in within:
        assert any(text in c for c in found), text
    assert all(c.rstrip().endswith("train.epochs=1") for c in found)  # the caller's win
    assert "when the runs have finished:" in r.stdout and then in r.stdout
    assert not (tmp_path / "runs").exists()


def test_a_paper_script_tunes_with_select_and_tabulates_the_choices(tmp_path):
    grid = ["--grid", "sam:optimizer.rho=0.02,0.05", "--grid", "nso:optimizer.sigma=0.01,0.03"]
    r = run("graph_tu.sh", "--dry-run", *grid, "--select", env={"RUNS": str(tmp_path / "r"),
            "SETS": "mutag"})  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert len(cells(r.stdout)) == 10 * (1 + 2 + 2)  # every fold of every grid point
    assert "-m common.tables --select" in r.stdout


@pytest.mark.heavy  # two trainings and four measurements: make system-test
def test_measure_runs_measures_every_run_once_and_refuses_a_missing_folder(tmp_path):
    """scripts/real/measure_runs.sh on two finished smoke runs: each gets the measurement,
    a second call leaves them alone, a missing folder is one line and exit 2."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHON": sys.executable}
    for seed in (0, 1):
        trained = subprocess.run(
            [sys.executable, "-m", "image_exps.train", "smoke=true", "train.progress=false",
             f"seed={seed}", f"run_dir={tmp_path / 'runs' / f'seed{seed}'}"],
            capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
        )  # fmt: skip
        assert trained.returncode == 0, trained.stderr[-2000:]
    script = str(REPO / "scripts" / "real" / "measure_runs.sh")

    def measure(folder):
        args = [script, "image", str(folder), "pac_bayes", "--jobs", "2", "--",
                "pac_bayes.n_samples=2", "pac_bayes.tol=0.5"]  # fmt: skip
        return subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)

    first = measure(tmp_path / "runs")
    assert first.returncode == 0, first.stderr
    files = sorted((tmp_path / "runs").glob("seed*/pac_bayes.json"))
    assert len(files) == 2 and first.stdout.count("pac_bayes.json") == 2
    assert all(json.loads(f.read_text())["options"]["n_samples"] == 2 for f in files)
    stamps = [f.stat().st_mtime_ns for f in files]
    again = measure(tmp_path / "runs")
    assert again.returncode == 0 and again.stdout == ""
    assert [f.stat().st_mtime_ns for f in files] == stamps
    missing = measure(tmp_path / "nowhere")
    assert missing.returncode == 2 and missing.stderr.strip().startswith("error: no folder")
