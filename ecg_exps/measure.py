"""``python -m ecg_exps.measure KIND run_dir=PATH ...``: any measurement by name."""

from common.entry import run

if __name__ == "__main__":
    run("ecg_exps.task", "measure")
