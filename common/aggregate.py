"""Runs that differ only in seed (and fold) -> groups, with mean ± standard deviation.

A *group* is the runs of one domain, data set, model, optimizer and *setting*: the config
keys that vary among that optimizer's runs (``optimizer.rho`` in a ρ sweep), leaving out
the seed, the fold and the keys that do not change a result (:data:`RUNTIME_KEYS`: the
measurement options, paths, the device). Its statistics are the mean, the *sample*
standard deviation (ddof = 1, as ``numpy.std(ddof=1)`` and pandas compute it) and n.

The change of an optimizer relative to a reference (SAM, or the base optimizer it wraps)
is computed per *paired* run, same seed and fold, ``100 (x - r) / |r|`` percent, then
averaged with its standard deviation over the pairs: seeds share data order and
initialisation, so pairing removes the seed-to-seed variation both runs have in common.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from common.errors import UserError
from common.measurements import MEASUREMENTS, sharpness_measures
from common.metrics import Metric
from common.optim import OPTIMIZERS
from common.train.config import RUNTIME_KEYS

#: The Hessian's flatness measures (key, title): what the verdict sentence and the
#: trade-off figure weigh.
HESSIAN_MEASURES: tuple[tuple[str, str], ...] = (
    ("trace", "Hessian trace"),
    ("top_eigenvalue", "top Hessian eigenvalue"),
)


def sharpness() -> tuple[tuple[str, str], ...]:
    """Every sharpness measure a row may hold, (key, title), lower is flatter for each: the
    measurements' registry (common.measurements) as it is now, in its order."""
    return tuple((s.key, s.title) for s in sharpness_measures())


_OPTIMIZER_ORDER = {name: i for i, name in enumerate(OPTIMIZERS)}


def optimizer_rank(name: str) -> int:
    """The optimizer's place in the registry (tables' columns, colours); unknown ones last."""
    return _OPTIMIZER_ORDER.get(name, len(_OPTIMIZER_ORDER))


def optimizers_of(groups: Sequence[Group]) -> list[str]:
    """The optimizers of ``groups``, each once, in the tables' order (the registry's rank)."""
    ranked = sorted(groups, key=lambda g: (optimizer_rank(g.optimizer), g.optimizer))
    return list(dict.fromkeys(g.optimizer for g in ranked))


#: After matplotlib's ten default colours (``C0``-``C9``): the dark shades of ``tab20b``,
#: which none of the ten resembles, so that up to 15 optimizers never share a colour.
_MORE_COLOURS = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173")


def optimizer_colour(name: str) -> str:
    """The optimizer's matplotlib colour in every figure, by registry order: ``C0``-``C9``,
    then five more; an unknown optimizer (or one past those) is grey."""
    rank = optimizer_rank(name) if name in OPTIMIZERS else len(_MORE_COLOURS) + 10
    if rank < 10:
        return f"C{rank}"
    return _MORE_COLOURS[rank - 10] if rank - 10 < len(_MORE_COLOURS) else "0.5"


@dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation (None for one value) and count of some values."""

    mean: float
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Stat | None:
        """The statistics of the values that are numbers (None and NaN left out)."""
        xs = [float(v) for v in values if v is not None and not math.isnan(v)]
        if not xs:
            return None
        if not all(map(math.isfinite, xs)):  # statistics' exact arithmetic takes no inf
            mean = math.fsum(xs) / len(xs)
            spread = math.fsum((x - mean) ** 2 for x in xs) / max(1, len(xs) - 1)
            return cls(mean, None if len(xs) == 1 else math.sqrt(spread), len(xs))
        # exact (rational) arithmetic: equal values have a std of 0, not a rounding error
        # (a mean of 0.2, 0.2, 0.2 summed in floats is 0.20000000000000004)
        mean = statistics.mean(xs)
        if len(xs) == 1:
            return cls(mean, None, 1)
        return cls(mean, statistics.stdev(xs, mean), len(xs))

    def interval(self) -> tuple[float, float]:
        """mean ± std (the mean alone when there is no spread)."""
        spread = self.std or 0.0
        return self.mean - spread, self.mean + spread


@dataclass(frozen=True)
class Measure:
    """A column of values a group aggregates: a test metric or a sharpness measure."""

    key: str  # the run row's key: "test_accuracy", "trace", ...
    title: str  # "test acc. (%)", "Hessian trace"
    higher_is_better: bool
    percent: bool = False  # printed with two decimals, as papers print percentages

    @classmethod
    def metric(cls, metric: Metric) -> Measure:
        return cls(
            f"test_{metric.name}",
            f"test {metric.label}",
            metric.higher_is_better,
            "%" in metric.label,
        )


def sharpness_columns() -> tuple[Measure, ...]:
    """:func:`sharpness` as the :class:`Measure` s a group aggregates."""
    return tuple(Measure(key, title, False) for key, title in sharpness())


def _frozen(value: Any) -> Any:
    """A setting's value as a hashable one (a list, e.g. data.records=[100, 208], a tuple)."""
    return tuple(map(_frozen, value)) if isinstance(value, list) else value


def ignored_key(key: str, fold_key: str | None) -> bool:
    """Keys that never make a setting: seed, fold, the optimizer's name, runtime keys."""
    if key in ("seed", "optimizer.name", fold_key):
        return True
    # every registered measurement's section is runtime, a domain's own included
    runtime = {*RUNTIME_KEYS, *MEASUREMENTS}
    return any(key == k or key.startswith(f"{k}.") for k in runtime)


@dataclass
class Group:
    """The runs of one domain, data set, model, optimizer and setting."""

    domain: str
    dataset: str
    model: str
    optimizer: str
    setting: tuple[tuple[str, Any], ...]
    base: str | None  # the base optimizer a sharpness-aware one wraps; None for a base one
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def row(self) -> tuple[str, str, str, tuple[tuple[str, Any], ...]]:
        """What a table row shows: domain, data set, model, setting."""
        return self.domain, self.dataset, self.model, self.setting

    @property
    def metrics(self) -> list[Metric]:
        """Every metric the runs report, in first-seen order."""
        seen: dict[str, Metric] = {}
        for r in self.runs:
            for m in r["metrics"]:
                seen.setdefault(m.name, m)
        return list(seen.values())

    @property
    def headline(self) -> Metric:
        """The metric the domain reports first (accuracy, MCC, Pearson, ...)."""
        return self.runs[0]["metrics"][0]

    def values(self, key: str) -> dict[tuple[int, int | None], float]:
        """``key``'s value of every run that has one, by (seed, fold)."""
        out = {}
        for r in self.runs:
            value = r.get(key)
            if value is not None and not math.isnan(value):
                out[(r["seed"], r.get("fold"))] = float(value)
        return out

    def stat(self, key: str) -> Stat | None:
        return Stat.of(self.values(key).values())

    @property
    def seeds(self) -> list[int]:
        return sorted({r["seed"] for r in self.runs})

    @property
    def folds(self) -> list[int]:
        return sorted({r["fold"] for r in self.runs if r.get("fold") is not None})


def _sort_value(value: Any) -> tuple[int, float, str]:
    """Numbers in numeric order (0.01 < 0.1 < 1), before anything else in text order."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return 0, float(value), ""
    return 1, 0.0, str(value)


def group_key(g: Group, domains: Sequence[str] = ()) -> tuple:
    """Domains in the order given (else by name), then data set, model, setting (numbers in
    numeric order) and optimizer (the registry's order)."""
    return (
        domains.index(g.domain) if g.domain in domains else len(domains),
        g.domain,
        g.dataset,
        g.model,
        tuple((k, _sort_value(v)) for k, v in g.setting),
        optimizer_rank(g.optimizer),
        g.optimizer,
    )


def group_runs(rows: Sequence[dict[str, Any]]) -> list[Group]:
    """Groups of the run rows (:func:`common.tables.run_row`) that differ only in seed and
    fold, sorted by domain (in the rows' order), data set, model, setting and optimizer.

    Raises:
        UserError: two runs of one group have the same seed and fold (the same run twice,
            e.g. a copied directory): aggregating both would count it twice.
    """
    families: dict[tuple[str, str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        families[(r["domain"], r["dataset"], r["model"], r["optimizer"])].append(r)
    groups: dict[tuple, Group] = {}
    for (domain, dataset, model, optimizer), members in families.items():
        configs = [
            {k: v for k, v in r.get("config", {}).items() if not ignored_key(k, r.get("fold_key"))}
            for r in members
        ]
        known = [c for c in configs if c]  # a run without config.yaml: settings unknown
        keys = sorted({k for c in known for k in c})
        varying = [k for k in keys if len({repr(c.get(k)) for c in known}) > 1]
        for r, c in zip(members, configs, strict=True):
            setting = tuple((k, _frozen(c.get(k))) for k in varying) if c else ()
            key = (domain, dataset, model, optimizer, repr(setting))
            group = groups.setdefault(
                key, Group(domain, dataset, model, optimizer, setting, r.get("base"))
            )
            twin = next(
                (o for o in group.runs if (o["seed"], o.get("fold")) == (r["seed"], r.get("fold"))),
                None,
            )
            if twin is not None:
                raise UserError(
                    f"{r['run_dir']} and {twin['run_dir']} are the same run (seed {r['seed']}"
                    + (f", fold {r['fold']}" if r.get("fold") is not None else "")
                    + "): pass the folders of one of them only"
                )
            group.runs.append(r)
    domains = list(dict.fromkeys(r["domain"] for r in rows))
    return sorted(groups.values(), key=lambda g: group_key(g, domains))


def reference(groups: Sequence[Group], group: Group, optimizer: str | None) -> Group | None:
    """The group of ``optimizer`` to compare ``group`` with: same domain, data set, model and
    setting; else that optimizer's only group on the same data set and model (the SGD run
    that a ρ sweep of SAM is measured against); None if there is none, or it is ``group``."""
    if optimizer is None or optimizer == group.optimizer:
        return None
    same = [
        g
        for g in groups
        if (g.domain, g.dataset, g.model, g.optimizer)
        == (group.domain, group.dataset, group.model, optimizer)
    ]
    exact = [g for g in same if g.setting == group.setting]
    if exact:
        return exact[0]
    return same[0] if len(same) == 1 else None


def relative_change(group: Group, ref: Group | None, key: str) -> Stat | None:
    """``group``'s change against ``ref`` in percent, per paired seed and fold: the mean
    and standard deviation of ``100 (x - r) / |r|`` over the pairs (None without pairs)."""
    if ref is None:
        return None
    ours, theirs = group.values(key), ref.values(key)
    return Stat.of(
        100.0 * (ours[k] - theirs[k]) / abs(theirs[k])
        for k in sorted(ours.keys() & theirs.keys(), key=repr)
        if theirs[k] != 0
    )


def rows_of(groups: Sequence[Group]) -> list[tuple]:
    """The distinct table rows (domain, data set, model, setting) in the groups' order."""
    return list(dict.fromkeys(g.row for g in groups))


def folds_text(folds: Sequence[int]) -> str:
    """``fold 0``, ``folds 0–9`` (a contiguous range) or ``folds 0, 2, 5``."""
    if len(folds) == 1:
        return f"fold {folds[0]}"
    if list(folds) == list(range(folds[0], folds[-1] + 1)):
        return f"folds {folds[0]}–{folds[-1]}"
    return f"folds {', '.join(map(str, folds))}"


def seeds_text(
    groups: Sequence[Group], *, sep: str = ", ", averaged_folds_only: bool = False
) -> str:
    """``seeds 0, 1, 2, fold 0``: the seeds and folds of the groups' runs (the folds left
    out with ``averaged_folds_only`` unless some group holds several)."""
    seeds = sorted({s for g in groups for s in g.seeds})
    folds = sorted({f for g in groups for f in g.folds})
    if averaged_folds_only and not any(len(g.folds) > 1 for g in groups):
        folds = []
    text = f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
    return text + (f"{sep}{folds_text(folds)}" if folds else "")


def setting_label(setting: Sequence[tuple[str, Any]]) -> str:
    """``rho=0.1, k=2``: each key by its last part unless two keys share it."""
    lasts = [k.rsplit(".", 1)[-1] for k, _ in setting]
    return ", ".join(
        f"{last if lasts.count(last) == 1 else k}={v}"
        for (k, v), last in zip(setting, lasts, strict=True)
    )


# -- the verdict: does NSO come out flattest and more accurate, beyond the spread? -----------
def _standing(ours: Stat, others: dict[str, Stat], higher_is_better: bool) -> tuple[str, str]:
    """("beyond" | "within" | "not", the best other's name): whether ``ours`` is the best
    and its mean ± std interval clears every other's."""
    sign = 1.0 if higher_is_better else -1.0
    rival = max(others, key=lambda name: sign * others[name].mean)
    if sign * ours.mean <= sign * others[rival].mean:
        return "not", rival
    low, high = ours.interval()
    clear = all(
        (low > o.interval()[1]) if higher_is_better else (high < o.interval()[0])
        for o in others.values()
    )
    return ("beyond" if clear and ours.std is not None else "within"), rival


def verdict(groups: Sequence[Group], row: tuple, optimizer: str = "nso") -> str:
    """One sentence: did ``optimizer`` come out flattest (Hessian trace and top eigenvalue)
    and more accurate (the headline metric) than the others on ``row``, beyond the seeds'
    spread (mean ± sample standard deviation intervals that do not overlap), or not?"""
    here = [g for g in groups if g.row == row]
    ours = next((g for g in here if g.optimizer == optimizer), None)
    domain, dataset, _, setting = row
    where = f"{domain}, {dataset}{', ' + setting_label(setting) if setting else ''}"
    if ours is None or len(here) < 2:
        return f"{where}: no {optimizer} run with others to compare"
    names = " and ".join(g.optimizer.upper() for g in here if g is not ours)
    n = len(ours.runs)
    parts = []
    flat = {}
    for key, title in HESSIAN_MEASURES:
        mine, theirs = ours.stat(key), {g.optimizer: g.stat(key) for g in here if g is not ours}
        if mine is None or any(s is None for s in theirs.values()):
            return f"{where}: the runs were not all measured ({title} missing)"
        flat[title] = _standing(mine, theirs, higher_is_better=False)
    standings = {s for s, _ in flat.values()}
    if standings == {"beyond"}:
        parts.append(
            f"{optimizer.upper()} came out flattest (lowest trace and top eigenvalue) "
            "beyond the seeds' spread"
        )
    elif "not" not in standings:
        parts.append(
            f"{optimizer.upper()} had the lowest trace and top eigenvalue, but "
            "within the seeds' spread"
        )
    else:
        by_rival: dict[str, list[str]] = {}
        for title, (s, rival) in flat.items():
            if s == "not":
                by_rival.setdefault(rival.upper(), []).append(title)
        lowest = ", ".join(
            f"{rival} had the lowest {' and '.join(titles)}" for rival, titles in by_rival.items()
        )
        parts.append(f"{optimizer.upper()} did not come out flattest ({lowest})")
    metric = ours.headline
    mine = ours.stat(f"test_{metric.name}")
    theirs = {g.optimizer: g.stat(f"test_{metric.name}") for g in here if g is not ours}
    if mine is None or any(s is None for s in theirs.values()):
        parts.append(f"not every run reports its test {metric.name}")
    else:
        standing, rival = _standing(mine, theirs, metric.higher_is_better)
        parts.append(
            {
                "beyond": f"its test {metric.name} was better than with {names}, beyond the spread",
                "within": f"its test {metric.name} was the best, but within the spread",
                "not": f"it was not the most accurate ({rival.upper()} had the best test "
                f"{metric.name})",
            }[standing]
        )
    return f"{where}, {_runs_text(ours, n)}: " + "; ".join(parts) + "."


def _runs_text(group: Group, n: int) -> str:
    """``3 seeds``, or ``10 folds`` (one seed), or ``20 runs (2 seeds x 10 folds)``."""
    seeds, folds = len(group.seeds), len(group.folds)
    if folds <= 1:
        return f"{n} seed{'s' * (n != 1)}"
    if seeds == 1:
        return f"{n} fold{'s' * (n != 1)}"
    return f"{n} runs ({seeds} seeds x {folds} folds)"
