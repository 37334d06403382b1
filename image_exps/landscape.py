"""``python -m image_exps.landscape``: see :mod:`common.train.cli`."""

from common.entry import run

if __name__ == "__main__":
    run("image_exps.task", "landscape")
