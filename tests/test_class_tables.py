"""Per-class sensitivity and PPV over seeds (common.class_tables) from summary.json's
test_details, against hand-computed values."""

from __future__ import annotations

import numpy as np

from common import run_rows, table_render
from common.aggregate import group_runs
from common.class_tables import class_table_markdown
from common.io import read_json, write_json
from tests.test_aggregate import write_run

REPORTS = [  # two seeds; S has no prediction in seed 1 (PPV undefined there)
    {"sensitivity": {"N": 99.0, "S": 50.0, "Q": None}, "ppv": {"N": 98.0, "S": 40.0, "Q": None}},
    {"sensitivity": {"N": 97.0, "S": 0.0, "Q": None}, "ppv": {"N": 96.0, "S": None, "Q": None}},
]


def write_reports(root):
    for seed, report in enumerate(REPORTS):
        run = write_run(root, "sgd", seed, (90.0, 1.0, 1.0, 0.1), name=f"seed{seed}")
        summary = read_json(run / "summary.json", fix="")
        summary["test_details"] = {"class_names": ["N", "S", "Q"], **report}
        summary["data"] = {"class_counts": {"test": {"N": 700, "S": 7, "Q": 0}}}
        write_json(run / "summary.json", summary)
    return group_runs([run_rows.run_row(d) for d in run_rows.find_runs([root])])


def test_per_class_means_leave_undefined_values_out(tmp_path):
    text = class_table_markdown(write_reports(tmp_path))
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| image")]
    by_class = {r[5]: r for r in rows}
    assert set(by_class) == {"N", "S"}  # Q has no test example: no row
    n_std = np.std([99.0, 97.0], ddof=1)
    assert by_class["N"][6:9] == ["700", f"98.0 ± {n_std:.1f}", f"97.0 ± {n_std:.1f}"]
    assert by_class["S"][7:9] == [f"25.0 ± {np.std([50.0, 0.0], ddof=1):.1f}", "40.0"]


def test_the_tables_include_it_only_where_runs_report_classes(tmp_path):
    groups = write_reports(tmp_path / "with")
    assert "per-class test sensitivity" in table_render.tables_markdown(groups)
    write_run(tmp_path / "without", "sgd", 0)
    plain = group_runs([run_rows.run_row(d) for d in run_rows.find_runs([tmp_path / "without"])])
    assert class_table_markdown(plain) == ""
    assert "per-class" not in table_render.tables_markdown(plain)
