"""Kachuee et al.'s (2018) heartbeats cut from one lead of a record: the AAMI classes and the
annotation symbols of each, the recipe's constants, and :func:`segment_beats`. Reading the
records is :mod:`ecg_exps.records`'."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import NamedTuple

import numpy as np

from ecg_exps import synthetic

CLASSES: tuple[str, ...] = ("N", "S", "V", "F", "Q")


#: annotation symbol -> AAMI class (EC57); other symbols (rhythm, noise, artefact, '!' flutter
#: waves, 'x' non-conducted P waves, ...) are not beats and are skipped
AAMI: dict[str, str] = {
    symbol: cls
    for cls, symbols in (
        ("N", "NLRej"),
        ("S", "AaJS"),
        ("V", "VE"),
        ("F", "F"),
        ("Q", "/fQ"),
    )
    for symbol in symbols
}


BEAT_LENGTH = synthetic.BEAT_LENGTH  # 187 samples per beat


SAMPLING_RATE = synthetic.FS  # 125 Hz, the rate of every beat


WINDOW_SECONDS = 10  # Kachuee's windows


RR_FACTOR = 1.2  # a beat spans 1.2 T from its R peak


class Segmented(NamedTuple):
    """:func:`segment_beats`' beats: rows, AAMI class ids, their annotations' indices, and
    which of them the record's end cuts short (zero-padded where the signal ends)."""

    signals: np.ndarray
    labels: np.ndarray
    keep: np.ndarray
    cut: np.ndarray


def segment_beats(
    signal: np.ndarray, fs: float, samples: np.ndarray, symbols: Sequence[str]
) -> Segmented:
    """Kachuee et al.'s (2018) beats of one lead: ``(signals, labels, keep, cut)``.

    ``signal`` is the lead at ``fs`` Hz, ``samples`` and ``symbols`` the reference
    annotations (sample number at ``fs``, symbol). Only beat annotations (:data:`AAMI`)
    within the signal are kept; ``keep`` is their index among the annotations, ``labels``
    their AAMI class ids, ``signals`` ``(n, 187)`` float32 rows in [0, 1]. The recipe, with
    the annotated R peaks in place of Kachuee's detected ones:

    1. resample the lead to 125 Hz (``scipy.signal.resample_poly``; missing samples, NaN,
       are first interpolated linearly) and place each R peak at ``round(sample * 125 / fs)``;
    2. cut the signal into consecutive 10 s windows from its start (the last, shorter, one
       kept) and min-max normalise each window to [0, 1] (a flat window: zeros);
    3. T = the median R-R interval of the window's annotated beats (a window with fewer than
       two beats: the record's median R-R; a record with fewer than two: 1 s);
    4. each beat is the ``round(1.2 T)`` samples from its R peak, zero-padded (or truncated)
       to 187. Edge beats: a beat near its window's end continues into the next samples of
       the signal, scaled by its own window's minimum and maximum and clipped to [0, 1], so
       it is not cut short; a beat near the record's end is zero-padded where the signal
       ends, kept (PhysioNet's beat counts hold) and marked in ``cut``.
    """
    samples = np.asarray(samples, dtype=np.int64)
    is_beat = np.array([s in AAMI for s in symbols], dtype=bool).reshape(-1)
    keep = np.flatnonzero(is_beat & (samples >= 0) & (samples < len(signal)))
    keep = keep[np.argsort(samples[keep], kind="stable")]
    labels = np.array([CLASSES.index(AAMI[symbols[i]]) for i in keep], dtype=np.int64)
    if len(keep) == 0:
        return Segmented(np.zeros((0, BEAT_LENGTH), np.float32), labels, keep, np.zeros(0, bool))
    x = _resampled(signal, fs)
    n = len(x)
    at = samples[keep]
    peaks = np.minimum(np.rint(at * SAMPLING_RATE / fs).astype(np.int64), n - 1)
    rr = np.diff(at) * SAMPLING_RATE / fs  # in 125 Hz samples
    rows, cut = _cut_beats(x, peaks, rr)
    return Segmented(rows, labels, keep, cut)


def _resampled(signal: np.ndarray, fs: float) -> np.ndarray:
    """Step 1: the lead at :data:`SAMPLING_RATE`, its NaN samples interpolated first."""
    from scipy.signal import resample_poly

    x = np.asarray(signal, dtype=np.float64).reshape(-1)
    bad = ~np.isfinite(x)
    if bad.any():
        good = np.flatnonzero(~bad)
        x = np.interp(np.arange(len(x)), good, x[good]) if len(good) else np.zeros_like(x)
    ratio = Fraction(SAMPLING_RATE) / Fraction(fs).limit_denominator(10_000)
    return resample_poly(x, ratio.numerator, ratio.denominator)


def _cut_beats(x: np.ndarray, peaks: np.ndarray, rr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Steps 2-4 on the resampled lead ``x``: the float32 beat rows at the R ``peaks`` and
    which of them the record's end cuts short; ``rr`` = the R-R intervals in its samples."""
    n = len(x)
    width = WINDOW_SECONDS * SAMPLING_RATE
    starts = np.arange(0, n, width)
    lo, hi = np.minimum.reduceat(x, starts), np.maximum.reduceat(x, starts)
    window = peaks // width
    period = np.full(len(starts), float(np.median(rr)) if len(rr) else float(SAMPLING_RATE))
    same = window[1:] == window[:-1]  # R-R intervals inside one window
    for w in np.unique(window[1:][same]):
        period[w] = float(np.median(rr[same & (window[1:] == w)]))
    length = np.minimum(BEAT_LENGTH, np.rint(RR_FACTOR * period[window]).astype(np.int64))
    offsets = np.arange(BEAT_LENGTH)
    index = peaks[:, None] + offsets[None, :]
    valid = (offsets[None, :] < length[:, None]) & (index < n)
    scale = (hi - lo)[window]
    flat = scale <= 0
    scale = np.where(flat, 1.0, scale)
    rows = (x[np.minimum(index, n - 1)] - lo[window][:, None]) / scale[:, None]
    rows = np.where(valid & ~flat[:, None], np.clip(rows, 0.0, 1.0), 0.0)
    cut = peaks + length > n  # the record ends inside the beat's 1.2 T
    return rows.astype(np.float32), cut


__all__ = [
    "AAMI",
    "BEAT_LENGTH",
    "CLASSES",
    "RR_FACTOR",
    "SAMPLING_RATE",
    "WINDOW_SECONDS",
    "Segmented",
    "segment_beats",
]
