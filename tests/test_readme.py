"""The README's example runs as written and its table matches the registry."""

from __future__ import annotations

import re
from pathlib import Path

from common.optim import OPTIMIZERS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_readme_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks, "the README has no python example"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})


def test_readme_table_lists_every_option():
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(\w+)`.*$", README, flags=re.M)}
    for name, info in OPTIMIZERS.items():
        if not info.sharpness_aware:
            continue
        assert name in rows, f"README table lacks {name}"
        for option in info.options:
            assert f"`{option}`" in rows[name], f"README row {name} lacks option {option}"
        for option, value in info.preset.items():
            assert f"`{option}` ({value}" in rows[name], f"README row {name}: preset {option}"
