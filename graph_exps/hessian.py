"""``python -m graph_exps.hessian``: see :mod:`common.train.cli`."""

from common.train.cli import measure_main
from graph_exps.task import TASK

if __name__ == "__main__":
    raise SystemExit(measure_main(TASK, "hessian"))
