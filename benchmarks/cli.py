"""What every benchmark shares: the command line (--quick, --json PATH, --threads N), the
Markdown table and the ending."""

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


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table with its columns padded to their widest cell."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


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
