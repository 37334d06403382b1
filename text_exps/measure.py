"""``python -m text_exps.measure KIND run_dir=PATH ...``: any measurement by name."""

from common.entry import run

if __name__ == "__main__":
    run("text_exps.task", "measure")
