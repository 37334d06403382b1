"""``python -m image_exps.measure KIND run_dir=PATH ...``: any measurement by name."""

from common.entry import run

if __name__ == "__main__":
    run("image_exps.task", "measure")
