"""The embedded ECG default: generated heartbeats (``beats``) in the Kaggle CSV layout.

``beats`` needs no download, so ``make demo`` and the tests run ECG experiments offline. It
is labelled synthetic wherever its numbers appear (``meta["synthetic"]``).

Each row is one beat as Kachuee et al. (2018) cut them from MIT-BIH, and as the Kaggle
"ECG Heartbeat Categorization" CSVs hold them: :data:`FS` = 125 Hz samples starting at the
beat's R peak and spanning 1.2 T, where T is the nominal R-R interval of the beat's 10 s
window (drawn per beat, 0.6-1.1 s), min-max normalised and zero-padded to
:data:`BEAT_LENGTH` = 187 samples. A segment thus shows the rest of the beat's QRS, its
ST segment and T wave, and, when it comes within 1.2 T, the next beat's P wave and QRS.

Every wave is a Gaussian bump (amplitude, centre, width), rendered on a strip from 0.3 s
before the R peak to past the segment's end; the strip is min-max normalised (as Kachuee
normalise the whole window, so a segment need not span [0, 1] itself), then cut. The five
AAMI classes differ in what the segment shows:

* ``N`` (normal): narrow QRS (q, R, s), upright T 0.26 s after R; the next sinus beat (P
  0.16 s before its R) comes after T (+-8 %).
* ``S`` (supraventricular ectopic): premature (0.65-0.85 T after the previous beat; its
  own P, before the R peak, lies outside the segment), with a narrow, at times slightly
  widened, QRS and a smaller T; half are followed early (0.70-0.90 T: a supraventricular
  run, a shorter R-R) by a beat whose P is flat, inverted or absent, half by a sinus beat
  after a non-compensatory pause (1.05-1.25 T).
* ``V`` (ventricular ectopic): a wide, bizarre QRS (wide R and a deep, wide S), no P, a
  wide discordant (inverted) T, and a compensatory pause (the next R at 1.25-1.50 T, mostly
  beyond the segment).
* ``F`` (fusion of ventricular and normal): the N and V waves mixed with a weight drawn
  from 0.2-0.8, and the next sinus beat after 0.95-1.10 T.
* ``Q`` (paced): a wide QRS and a discordant T; the next paced beat after T (+-1 %,
  a fixed pacing rate), with a sharp pacing spike (one or two samples) 40-60 ms before
  its wide QRS.

Every amplitude, width and time is jittered per beat (``jitter``), and every beat gets a
baseline wander (a 0.1-0.5 Hz sine of amplitude up to ``wander``) and white noise
(``noise``, relative to an R wave of 1). The classes are imbalanced like MIT-BIH, less
extremely (:data:`PROPORTIONS`: N 50 %, S 12 %, V 16 %, F 10 %, Q 12 %), with exact counts
per split, in a seeded random order. With the defaults a logistic regression on the 187
raw samples (fit on the training file) scores about 0.83 on the test file and an MLP with
one hidden layer of 64 units about 0.90 (seeds 0-2: 0.82-0.83 and 0.90-0.92), not 1: F
overlaps N and V, and S differs from N mainly in timing, which a linear read-out of the
samples hardly sees.

:func:`ensure_beats` writes ``<root>/beats/beats_train.csv`` and ``beats_test.csv`` in the
Kaggle layout (no header; 187 samples and the class id as a float per row), read back by the
same reader as the Kaggle files (:func:`ecg_exps.data.read_beats_csv`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import DataError
from common.io import atomic_path, ensure_generated

NAME = "beats"
CLASSES: tuple[str, ...] = ("N", "S", "V", "F", "Q")
FS = 125  # Hz, Kachuee's (and the Kaggle rows') sampling rate
BEAT_LENGTH = 187  # samples per row (1.5 s at 125 Hz)
PROPORTIONS: tuple[float, ...] = (0.50, 0.12, 0.16, 0.10, 0.12)  # N, S, V, F, Q
SPLIT_FILES = {"train": f"{NAME}_train.csv", "test": f"{NAME}_test.csv"}
_BEFORE = 0.3  # s of strip before the R peak (normalisation context)
_AFTER = 0.3  # s of strip past the segment's end


@dataclass(frozen=True)
class BeatsSpec:
    """What :func:`ensure_beats` generates.

    Attributes:
        n_train: beats of ``beats_train.csv`` (``val`` is held out of it).
        n_test: beats of ``beats_test.csv``.
        proportions: share of each class N, S, V, F, Q (normalised to sum to 1); every
            class gets at least one beat per split.
        noise: standard deviation of the white noise, relative to an R wave of amplitude 1.
        wander: largest amplitude of the baseline wander.
        jitter: relative spread of every wave's amplitude and width.
        seed: seed of the generator; the same spec always writes the same files.
    """

    n_train: int = 3000
    n_test: int = 750
    proportions: tuple[float, ...] = PROPORTIONS
    noise: float = 0.05
    wander: float = 0.25
    jitter: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        try:
            props = tuple(float(p) for p in self.proportions)
        except (TypeError, ValueError):
            raise DataError(
                f"beats proportions must be {len(CLASSES)} numbers (N, S, V, F, Q), got "
                f"{self.proportions!r}."
            ) from None
        object.__setattr__(self, "proportions", props)
        if len(props) != len(CLASSES) or min(props) <= 0:
            raise DataError(
                f"beats proportions must be {len(CLASSES)} positive numbers (N, S, V, F, Q), "
                f"got {props}."
            )
        if min(self.n_train, self.n_test) < 2 * len(CLASSES):
            raise DataError(
                f"beats needs at least {2 * len(CLASSES)} beats per split (two per class), got "
                f"n_train={self.n_train}, n_test={self.n_test}."
            )
        if not (0 <= self.noise <= 1 and 0 <= self.wander <= 1 and 0 <= self.jitter <= 0.5):
            raise DataError(
                f"beats noise and wander must be in [0, 1] and jitter in [0, 0.5], got "
                f"noise={self.noise}, wander={self.wander}, jitter={self.jitter}."
            )

    def record(self) -> dict[str, Any]:
        """JSON-able description (what ``beats_spec.json`` holds beside the files)."""
        return {**dataclasses.asdict(self), "proportions": list(self.proportions), "name": NAME}

    def counts(self, n: int) -> np.ndarray:
        """Beats of each class in a split of ``n``: ``n`` times the proportions, rounded by
        largest remainders; a class that would get none takes one from the largest."""
        p = np.asarray(self.proportions) / sum(self.proportions)
        raw = p * n
        counts = np.floor(raw).astype(np.int64)
        rest = n - int(counts.sum())
        counts[np.argsort(-(raw - counts), kind="stable")[:rest]] += 1
        for c in np.flatnonzero(counts == 0):
            counts[np.argmax(counts)] -= 1
            counts[c] = 1
        return counts


# A wave is (amplitude, centre in s relative to its beat's R peak, width in s).
_QRS_N = ((-0.12, -0.025, 0.008), (1.0, 0.0, 0.010), (-0.25, 0.025, 0.010))
_T_N = ((0.30, 0.26, 0.045),)
_P_N = ((0.14, -0.16, 0.022),)
_QRS_V = ((1.0, 0.0, 0.032), (-0.55, 0.075, 0.035))
_T_V = ((-0.35, 0.33, 0.070),)
_QRS_PACED = ((0.9, 0.0, 0.028), (-0.4, 0.07, 0.03))
_T_PACED = ((-0.25, 0.30, 0.065),)


class _Strip:
    """The waves of one strip, each jittered as it is added, then rendered in one go."""

    def __init__(self, rng: np.random.Generator, jitter: float) -> None:
        self.rng, self.jitter = rng, jitter
        self.waves: list[tuple[float, float, float]] = []
        self.spikes: list[tuple[float, float]] = []  # (time in s, amplitude)

    def add(self, waves: Any, at: float, scale: float = 1.0, widen: float = 1.0) -> None:
        j = self.jitter
        for a, mu, s in waves:
            amp = a * scale * max(0.2, 1.0 + j * self.rng.standard_normal())
            width = s * widen * float(np.exp(0.5 * j * self.rng.standard_normal()))
            centre = at + mu * (1.0 + 0.5 * j * self.rng.standard_normal())
            self.waves.append((amp, centre, width))

    def render(self, t: np.ndarray) -> np.ndarray:
        a, mu, s = np.asarray(self.waves).T[:, :, None]
        x = (a * np.exp(-0.5 * ((t - mu) / s) ** 2)).sum(axis=0)
        for at, a in self.spikes:  # a pacing spike: one or two samples, not a smooth bump
            k = int(np.argmin(np.abs(t - at)))
            x[k] += a
            if self.rng.random() < 0.5 and k + 1 < len(x):
                x[k + 1] += 0.5 * a
        return x


def _beat(label: int, rng: np.random.Generator, spec: BeatsSpec) -> np.ndarray:
    """One row: the beat of class ``label`` from its R peak, normalised and zero-padded."""
    period = float(rng.uniform(0.6, 1.1))  # T, the window's median R-R interval
    length = min(BEAT_LENGTH, round(1.2 * period * FS))
    strip = _Strip(rng, spec.jitter)
    name = CLASSES[label]
    # the previous beat (normal, or paced for Q) only shapes the normalisation context
    prev = -period * (rng.uniform(0.65, 0.85) if name == "S" else rng.uniform(0.95, 1.05))
    if name == "Q":
        strip.add(_QRS_PACED + _T_PACED, prev)
    else:
        strip.add(_P_N + _QRS_N + _T_N, prev)
    next_p: Any = _P_N
    next_qrs: Any = _QRS_N
    if name == "N":
        strip.add(_QRS_N + _T_N, 0.0)
        rr = period * rng.uniform(0.92, 1.08)
    elif name == "S":
        strip.add(_QRS_N, 0.0, scale=rng.uniform(0.8, 1.1), widen=rng.uniform(1.0, 1.4))
        strip.add(_T_N, 0.0, scale=rng.uniform(0.6, 1.1))
        if rng.random() < 0.5:  # a supraventricular run: early, with an ectopic P
            rr = period * rng.uniform(0.70, 0.90)
            next_p = (((-1, 1, 0)[int(rng.integers(3))] * 0.12, -0.13, 0.02),)
        else:  # a non-compensatory pause before the next sinus beat
            rr = period * rng.uniform(1.05, 1.25)
    elif name == "V":
        strip.add(_QRS_V + _T_V, 0.0, scale=rng.uniform(0.9, 1.4))
        rr = period * rng.uniform(1.25, 1.50)
    elif name == "F":
        w = float(rng.uniform(0.2, 0.8))  # the ventricular share of the fusion
        strip.add(_QRS_N + _T_N, 0.0, scale=1.0 - w)
        strip.add(_QRS_V + _T_V, 0.0, scale=w)
        rr = period * rng.uniform(0.95, 1.10)
    else:  # Q, paced
        strip.add(_QRS_PACED + _T_PACED, 0.0)
        rr = period * rng.uniform(0.99, 1.01)
        next_p, next_qrs = (), _QRS_PACED
        strip.spikes.append((rr - rng.uniform(0.04, 0.06), float(rng.uniform(0.6, 1.2))))
    strip.add(next_p, rr)
    strip.add(next_qrs, rr)
    t = np.arange(-round(_BEFORE * FS), length + round(_AFTER * FS)) / FS
    x = strip.render(t)
    f, phase = rng.uniform(0.1, 0.5), rng.uniform(0, 2 * np.pi)
    x += rng.uniform(0, spec.wander) * np.sin(2 * np.pi * f * t + phase)
    x += spec.noise * rng.standard_normal(len(t))
    lo, hi = x.min(), x.max()
    x = (x - lo) / (hi - lo)
    row = np.zeros(BEAT_LENGTH)
    start = round(_BEFORE * FS)
    row[:length] = x[start : start + length]
    return row


def generate_beats(spec: BeatsSpec = BeatsSpec()) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (signals, labels), "test": ...}``: ``(n, 187)`` float32 rows in [0, 1]
    and ``(n,)`` int64 class ids, a deterministic function of ``spec``."""
    rng = np.random.default_rng(spec.seed)
    out = {}
    for split, n in (("train", spec.n_train), ("test", spec.n_test)):
        labels = rng.permutation(np.repeat(np.arange(len(CLASSES)), spec.counts(n)))
        rows = np.stack([_beat(int(y), rng, spec) for y in labels])
        out[split] = (rows.astype(np.float32), labels.astype(np.int64))
    return out


def _csv_text(signals: np.ndarray, labels: np.ndarray) -> str:
    """Rows as the Kaggle files hold them: 187 samples, then the class id as a float."""
    lines = []
    for row, y in zip(signals.tolist(), labels.tolist(), strict=True):
        lines.append(",".join(f"{v:.6g}" for v in row) + f",{float(y):.1f}\n")
    return "".join(lines)


def _write(folder: Path, spec: BeatsSpec) -> None:
    for split, (signals, labels) in generate_beats(spec).items():
        with atomic_path(folder / SPLIT_FILES[split]) as tmp, open(tmp, "w") as f:
            f.write(_csv_text(signals, labels))


def ensure_beats(root: str | Path, spec: BeatsSpec = BeatsSpec()) -> Path:
    """``beats`` of ``spec`` in ``<root>/beats/`` (the Kaggle CSV layout); return the folder.

    Generated unless intact files of ``spec`` are there (:func:`common.io.ensure_generated`:
    the spec and each file's SHA-256 are recorded in ``beats_spec.json``, written last;
    missing, damaged or another spec's files are generated again, identically).
    """
    folder = Path(root).expanduser() / NAME
    files = list(SPLIT_FILES.values())
    return ensure_generated(folder, files, spec.record(), lambda f: _write(f, spec), what=NAME)


__all__ = [
    "BEAT_LENGTH",
    "CLASSES",
    "FS",
    "NAME",
    "PROPORTIONS",
    "SPLIT_FILES",
    "BeatsSpec",
    "ensure_beats",
    "generate_beats",
]
