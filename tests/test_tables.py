"""common.tables on run directories written here in the trainer's summary.json format."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from common.errors import UserError
from common.io import write_json
from common.run_rows import markdown, run_row, write_table
from common.tables import main


def record(name: str, label: str, higher_is_better: bool = True) -> dict[str, Any]:
    return {"name": name, "label": label, "higher_is_better": higher_is_better}


ACC, F1 = record("accuracy", "acc. (%)"), record("f1", "F1 (%)")
PEARSON, MSE = record("pearson", "Pearson"), record("mse", "MSE", higher_is_better=False)


def classification_summary() -> dict[str, Any]:
    return {
        "domain": "image",
        "dataset": "digits",
        "synthetic": False,
        "model": "cnn",
        "optimizer": "sgd",
        "seed": 0,
        "run_dir": "runs/image/digits/cnn/sgd/seed0",
        "metrics": [ACC, F1],
        "select": ACC,
        "test": {"loss": 0.12, "accuracy": 96.7, "f1": 95.1},
        "best_val": {"epoch": 3, "step": 120, "loss": 0.1, "accuracy": 97.0, "f1": 96.0},
        "wall_time_s": 5.0,
        "epochs": 3,
    }


def regression_summary() -> dict[str, Any]:
    return {
        "domain": "text",
        "dataset": "stsb",
        "synthetic": True,
        "model": "tiny",
        "optimizer": "sam",
        "seed": 1,
        "run_dir": "runs/text/stsb/tiny/sam/seed1",
        "metrics": [PEARSON, MSE],
        "select": PEARSON,
        "test": {"loss": 0.5, "pearson": 0.88123, "mse": 0.5},
        "best_val": {"epoch": 2, "step": 40, "loss": 0.4, "pearson": 0.9, "mse": 0.4},
        "wall_time_s": 12.4,
    }


HESSIAN = {
    "split": "train",
    "trace": {"total": 123.456, "stderr": 4.5, "per_layer": {}},
    "eigenvalues": {"eigenvalues": [17.25, 3.0], "n_products": 40},
}
# the sweep in a shuffled order: the table takes the smallest sigma
NOISE = {"split": "train", "results": [{"sigma": 0.05, "mean": 0.9}, {"sigma": 0.01, "mean": 0.1}]}


def write_run(
    root: Path,
    name: str,
    summary: dict[str, Any] | str,
    hessian: dict[str, Any] | str | None = None,
    noise: dict[str, Any] | str | None = None,
) -> Path:
    """A run directory ``root/name`` with its JSON files (a str is written as is)."""
    run = root / name
    run.mkdir(parents=True)
    files = {"summary.json": summary, "hessian.json": hessian, "noise_stability.json": noise}
    for file, data in files.items():
        if data is not None:
            if isinstance(data, str):
                (run / file).write_text(data)
            else:
                write_json(run / file, data)  # as the trainer writes it: with its checksum
    return run


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    """A measured classification run and an unmeasured regression run."""
    return [
        write_run(tmp_path / "runs", "cls", classification_summary(), HESSIAN, NOISE),
        write_run(tmp_path / "runs", "reg", regression_summary()),
    ]


def parse(md: str) -> tuple[list[str], list[list[str]]]:
    """(header, rows of cells) of a Markdown table."""
    lines = [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines()]
    return lines[0], lines[2:]


HEADER = [
    "domain",
    "data set",
    "model",
    "optimizer",
    "seed",
    "test acc. (%)",
    "test F1 (%)",
    "test Pearson",
    "test MSE",
    "Hessian trace",
    "± (s.e.)",
    "top eigenvalue",
    "σ",
    "noise stability",
    "train time (s)",
]


def test_row_holds_every_metric_and_the_measurements(runs):
    row = run_row(runs[0])
    assert [m.name for m in row["metrics"]] == ["accuracy", "f1"]
    assert row["metrics"][0].label == "acc. (%)" and row["metrics"][0].higher_is_better
    assert (row["test_accuracy"], row["test_f1"]) == (96.7, 95.1)
    assert (row["trace"], row["trace_stderr"], row["top_eigenvalue"]) == (123.456, 4.5, 17.25)
    assert (row["noise_sigma"], row["noise_stability"]) == (0.01, 0.1)
    reg = run_row(runs[1])
    assert reg["dataset"] == "stsb (synthetic)"
    assert not reg["metrics"][1].higher_is_better
    assert "trace" not in reg and "test_accuracy" not in reg


def test_markdown_has_one_column_per_metric_and_dashes_where_a_run_lacks_it(runs):
    header, cells = parse(markdown([run_row(r) for r in runs]))
    assert header == HEADER
    cls, reg = (dict(zip(header, row, strict=True)) for row in cells)
    assert cls["test acc. (%)"] == "96.70" and cls["test F1 (%)"] == "95.10"
    assert cls["test Pearson"] == cls["test MSE"] == "–"
    assert (cls["Hessian trace"], cls["± (s.e.)"], cls["top eigenvalue"]) == (
        "123.5",
        "4.5",
        "17.25",
    )
    assert (cls["σ"], cls["noise stability"], cls["train time (s)"]) == ("0.01", "0.1", "5")
    assert reg["test Pearson"] == "0.8812" and reg["test MSE"] == "0.5"
    assert reg["test acc. (%)"] == reg["test F1 (%)"] == reg["Hessian trace"] == "–"
    # names left-aligned, numbers right-aligned
    rule = markdown([run_row(r) for r in runs]).splitlines()[1].strip("|").split("|")
    assert [c.strip() for c in rule] == ["---"] * 5 + ["---:"] * (len(HEADER) - 5)


def test_metric_columns_follow_first_seen_order(runs):
    header, _ = parse(markdown([run_row(runs[1]), run_row(runs[0])]))
    assert header[5:9] == ["test Pearson", "test MSE", "test acc. (%)", "test F1 (%)"]


def test_unmeasured_columns_are_left_out_but_reported_metrics_stay(tmp_path):
    summary = regression_summary()
    summary["test"] = {"loss": 0.5, "pearson": float("nan")}  # mse not evaluated
    header, cells = parse(markdown([run_row(write_run(tmp_path, "r", summary))]))
    assert header == [*HEADER[:5], "test Pearson", "test MSE", "train time (s)"]
    assert cells[0][5:7] == ["–", "–"]


def test_csv_has_a_test_column_per_metric(runs, tmp_path):
    written = write_table([run_row(r) for r in runs], tmp_path / "out" / "table.v2")
    assert written == [tmp_path / "out" / "table.v2.md", tmp_path / "out" / "table.v2.csv"]
    with open(written[1], newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == [
        "run_dir",
        *("domain", "dataset", "model", "optimizer", "seed"),
        *("test_accuracy", "test_f1", "test_pearson", "test_mse"),
        *("trace", "trace_stderr", "top_eigenvalue", "noise_sigma", "noise_stability"),
        "wall_time_s",
    ]
    cls, reg = rows
    assert cls["run_dir"] == str(runs[0])
    assert (float(cls["test_accuracy"]), float(cls["test_f1"])) == (96.7, 95.1)
    assert cls["test_pearson"] == cls["test_mse"] == ""
    assert (float(reg["test_pearson"]), float(reg["test_mse"])) == (0.88123, 0.5)
    assert reg["test_accuracy"] == reg["trace"] == ""
    assert written[0].read_text() == markdown([run_row(r) for r in runs])


# ---------------------------------------------------------------- bad run directories


def old_format() -> dict[str, Any]:
    summary = classification_summary()
    del summary["metrics"], summary["select"], summary["test"]
    return summary | {"metric": "accuracy", "test_accuracy": 96.7}


@pytest.mark.parametrize(
    ("summary", "match"),
    [
        (old_format(), "no 'metrics' list: it is in an old format"),
        ({k: v for k, v in classification_summary().items() if k != "optimizer"}, "'optimizer'"),
        ({k: v for k, v in classification_summary().items() if k != "test"}, "lacks 'test'"),
        (classification_summary() | {"metrics": []}, "malformed.*non-empty list"),
        (classification_summary() | {"metrics": ["accuracy"]}, "malformed.*'accuracy'"),
        (classification_summary() | {"metrics": [{"name": "accuracy"}]}, "malformed"),
        (classification_summary() | {"test": [96.7]}, "malformed.*'test' is not an object"),
        (classification_summary() | {"test": {"accuracy": "96.7"}}, "accuracy = '96.7'"),
        (classification_summary() | {"wall_time_s": "5 s"}, "wall_time_s"),
        ([1, 2], "not a run summary"),
        ("{not json", "is damaged \\(JSONDecodeError\\)"),
    ],
    ids=[
        "old",
        "no-optimizer",
        "no-test",
        "no-metric",
        "bare-name",
        "no-label",
        "test-list",
        "test-str",
        "time-str",
        "list",
        "json",
    ],
)
def test_a_bad_summary_is_a_user_error_naming_the_file(tmp_path, summary, match):
    run = write_run(tmp_path, "run", summary)
    with pytest.raises(UserError, match=match) as e:
        run_row(run)
    assert str(run / "summary.json") in str(e.value)
    assert "rerun the training command" in str(e.value)


def test_a_run_without_summary_has_not_finished(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(UserError, match=r"has no summary\.json: the run has not finished"):
        run_row(tmp_path / "run")


def without(d: dict[str, Any], *path: str) -> dict[str, Any]:
    out = json.loads(json.dumps(d))
    inner = out
    for key in path[:-1]:
        inner = inner[key]
    del inner[path[-1]]
    return out


@pytest.mark.parametrize(
    ("file", "content", "match"),
    [
        ("hessian.json", "{", "is damaged \\(JSONDecodeError\\)"),
        ("hessian.json", without(HESSIAN, "trace", "total"), "no 'total'"),
        ("hessian.json", without(HESSIAN, "eigenvalues"), "no 'eigenvalues'"),
        ("hessian.json", HESSIAN | {"eigenvalues": {"eigenvalues": []}}, "'eigenvalues' is empty"),
        ("hessian.json", HESSIAN | {"trace": [1.0]}, "malformed"),
        ("hessian.json", HESSIAN | {"trace": {"total": "big", "stderr": 1}}, "trace = 'big'"),
        ("hessian.json", [], "malformed"),
        ("noise_stability.json", {"results": []}, "'results' is empty"),
        ("noise_stability.json", {"results": [{"sigma": 0.01}]}, "no 'mean'"),
        ("noise_stability.json", {}, "no 'results'"),
    ],
)
def test_a_bad_measurement_is_a_user_error_saying_to_measure_again(tmp_path, file, content, match):
    run = write_run(tmp_path, "run", classification_summary())
    if isinstance(content, str):
        (run / file).write_text(content)
    else:
        write_json(run / file, content)
    with pytest.raises(UserError, match=match) as e:
        run_row(run)
    assert str(e.value).startswith(str(run / file))
    assert str(e.value).endswith("delete it and measure again")


def test_a_nan_stderr_is_a_dash(tmp_path):
    hessian = HESSIAN | {"trace": {"total": 1.0, "stderr": float("nan")}}  # one probe
    run = write_run(tmp_path, "run", classification_summary(), hessian)
    header, cells = parse(markdown([run_row(run)]))
    assert dict(zip(header, cells[0], strict=True))["± (s.e.)"] == "–"


# ---------------------------------------------------------------- the command


def test_main_writes_the_tables_and_the_figures(runs, tmp_path, capsys):
    out = tmp_path / "results"
    assert main([str(tmp_path / "runs"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed == (out / "table.md").read_text()  # the tables over seeds
    assert parse((out / "runs.md").read_text())[0] == HEADER  # and the per-run table
    for name in ("runs.csv", "table.csv", "table.tex", "metric.png", "metric.pdf", "trace.png"):
        assert (out / name).stat().st_size > 0, name
    assert main([str(tmp_path / "runs"), "--runs"]) == 0
    assert parse(capsys.readouterr().out)[0] == HEADER


def test_runs_reached_through_symbolic_links_are_found_once(tmp_path):
    from common.run_rows import find_runs
    from tests.test_aggregate import write_run

    elsewhere, runs = tmp_path / "elsewhere", tmp_path / "runs"
    write_run(runs, "sgd", 0)
    sam = write_run(elsewhere, "sam", 0)
    (runs / "sam").symlink_to(sam.parent.parent, target_is_directory=True)  # all the SAM runs
    (runs / "again").symlink_to(runs / "sam", target_is_directory=True)  # the same, twice
    (runs / "loop").symlink_to(runs, target_is_directory=True)  # a cycle
    found = find_runs([runs])
    # the SAM run once, by the first of its paths in name order
    assert [p.relative_to(runs).as_posix() for p in found] == [
        "again/sam/seed0", "digits/sgd/seed0",
    ]  # fmt: skip


def test_a_run_without_config_and_a_folder_named_in_another_encoding_are_tabulated(
    tmp_path, capsys
):
    # UnicodeEncodeError on a non-UTF-8 folder name; TypeError without config.yaml
    import os

    from tests.test_aggregate import write_run

    runs = tmp_path / "runs"
    for optimizer in ("sgd", "sam"):
        for seed in (0, 1):
            write_run(runs, optimizer, seed)
    (runs / "digits" / "sam" / "seed0" / "config.yaml").unlink()
    write_run(runs / os.fsdecode(b"caf\xe9"), "nso", 0)
    assert main([str(runs), "--out", str(tmp_path / "out")]) == 0
    assert "has no config.yaml: its settings are unknown" in capsys.readouterr().err
    with open(tmp_path / "out" / "runs.csv", encoding="utf-8") as f:
        assert any("caf\\xe9" in line for line in f)


def test_a_full_disk_under_the_tables_is_one_line(tmp_path, monkeypatch, capsys):
    import errno

    from common import run_rows, table_render
    from tests.test_aggregate import write_run

    write_run(tmp_path / "runs", "sgd", 0)

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    for writer in (run_rows, table_render):  # the per-run table is written first
        monkeypatch.setattr(writer, "write_text", full)
    assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write {tmp_path / 'out'}") and "free some space" in err
