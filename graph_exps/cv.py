"""``python -m graph_exps.cv``: every fold of a data set; see :mod:`common.train.cli`."""

from common.train.cli import cv_main
from graph_exps.task import TASK

if __name__ == "__main__":
    raise SystemExit(cv_main(TASK))
