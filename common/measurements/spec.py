"""What a measurement is: a name (its config section, its command and its output file),
the function that measures a finished run, and what its output adds to a run's table row
(a reader, the per-run columns, and the flatness measures the tables aggregate).

A new measurement is one file beside these (its ``MEASUREMENT``), one line in
:data:`common.measurements.MEASUREMENTS` and one section in
:class:`common.train.config.Config` (a dataclass subclassing ``MeasurementSection``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple


def output_file(name: str) -> str:
    """The file measurement ``name`` writes into a run directory: ``<name>.json``."""
    return f"{name}.json"


class Column(NamedTuple):
    """A number a measurement adds to the per-run table: row key, header, format."""

    key: str
    header: str
    format: str


@dataclass(frozen=True)
class Sharpness:
    """A flatness measure (lower is flatter) that the tables over seeds aggregate, plot and
    compare between optimizers."""

    key: str  # the run row's key
    title: str  # tables' and figures' title
    subset: str  # rows hold "<subset>_split" and "<subset>_examples": what it was measured on
    #: the title of its table over seeds, from the rows it holds (default: ``title``)
    heading: Callable[[Sequence[Mapping[str, Any]]], str] | None = None

    def table_title(self, rows: Sequence[Mapping[str, Any]]) -> str:
        return self.heading(rows) if self.heading else self.title


@dataclass(frozen=True)
class Measurement:
    """One measurement of a finished run (see the module's docstring)."""

    name: str
    #: ``(task, cfg, run_dir) -> output``: measures the run (its options in
    #: ``cfg.<name>``), writes ``output`` to :attr:`file` and returns it
    run: Callable[[Any, Any, Path], dict[str, Any]]
    #: ``output -> row entries`` for the tables (None: not tabulated, e.g. a landscape);
    #: raises KeyError, IndexError, TypeError or ValueError on a malformed output
    read: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    columns: tuple[Column, ...] = ()
    sharpness: tuple[Sharpness, ...] = ()
    #: run by the training command's plain ``--measure`` (the others when named in
    #: ``--measurements``): the three every table was built on are; newer ones opt in
    with_training: bool = True

    @property
    def file(self) -> str:
        return output_file(self.name)


def subset_of(output: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """What a measurement was made on (split, number of examples), for titles."""
    return {f"{prefix}_split": output.get("split"), f"{prefix}_examples": output.get("n_examples")}
