"""What every benchmark's command line shares: --quick, --json PATH, --threads N."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from typing import Any

import torch


def parser(
    doc: str | None, *, quick_help: str = "small sizes: a smoke run"
) -> argparse.ArgumentParser:
    """The benchmark's parser, described by the first paragraph of its docstring."""
    p = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    return p


def parse(p: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parses ``argv`` and sets torch's intra-op threads (one by default: timings of two
    sides sharing a machine are steadier single-threaded)."""
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    return args


def write_json(path: str | None, data: dict[str, Any]) -> None:
    """Writes ``data`` to ``path`` atomically (a reader never sees half a file); nothing
    without a path."""
    if not path:
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, default=float)
        f.write("\n")
    os.replace(tmp, path)


def finish(results: dict[str, Any], path: str | None, start: float) -> dict[str, Any]:
    """Records and prints the verdict (``results["all_goals_met"]``) and the elapsed time,
    writes the JSON; returns ``results``."""
    results["elapsed_s"] = time.perf_counter() - start
    met = "yes" if results["all_goals_met"] else "NO"
    print(f"\nall goals met: {met}; took {results['elapsed_s']:.0f} s", flush=True)
    write_json(path, results)
    return results
