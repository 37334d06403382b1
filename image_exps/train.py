"""``python -m image_exps.train``: see :mod:`common.train.cli`."""

from common.train.cli import train_main
from image_exps.task import TASK

if __name__ == "__main__":
    raise SystemExit(train_main(TASK))
