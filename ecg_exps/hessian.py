"""``python -m ecg_exps.hessian``: see :mod:`common.train.cli`."""

from common.entry import run

if __name__ == "__main__":
    run("ecg_exps.task", "hessian")
