"""Weighted samples: a compact store for hundreds of millions of inter-token gaps.

Inside an unchanged decode batch every sequence sees the same gap between two steps, so
a step adds one value with a count instead of one value per sequence. Values are counted in
bins that keep a float's exponent and the top `MANTISSA_BITS` bits of its mantissa (the
HdrHistogram idea, on the float's own bits): a bin spans a relative width of 2^-13, so a
quantile read from it is within 0.006% of the exact one, and memory stays fixed (a dense
count array over 1e-7 s..1e5 s) however many samples arrive. The bin of a value is computed
from its bits with integer operations only, so the step-by-step and the fast engine, which
add the same gaps in different groupings, give the same counts bit for bit.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

import numpy as np
from numba import njit

MANTISSA_BITS = 13                         # kept per bin: relative bin width 2^-13 = 1.2e-4
_SHIFT = 52 - MANTISSA_BITS                # float64 bits below the kept ones
_LOWEST, _HIGHEST = 1e-7, 1e5              # seconds; gaps outside count in the edge bins
_FLUSH_AT = 1 << 14                        # values added one at a time, buffered before they are binned


def _key(values: np.ndarray) -> np.ndarray:
    """Sign-less bin key of positive float64 values: monotonic in the value."""
    return values.view(np.int64) >> _SHIFT


_KEY_MIN = int(_key(np.array([_LOWEST]))[0])
_BINS = int(_key(np.array([_HIGHEST]))[0]) - _KEY_MIN + 1


@njit(cache=True)
def _count(counts, values, weight):
    """Add `weight` to the bin of each value and return the largest value; zero and negatives
    (sign bit set) count in the lowest bin, values beyond the range and NaN in the highest."""
    # Element by element: whole-array operations (a shift, .max()) took numba about a second to compile.
    bits = values.view(np.int64)
    largest = values[0]
    for i in range(len(values)):
        counts[min(max((bits[i] >> _SHIFT) - _KEY_MIN, 0), _BINS - 1)] += weight
        largest = max(largest, values[i])
    return largest


@njit(cache=True)
def _count_gaps(counts, times, weight):
    """`_count` of the differences between consecutive `times`."""
    gaps = np.empty(len(times) - 1)
    for i in range(len(gaps)):
        gaps[i] = times[i + 1] - times[i]
    return _count(counts, gaps, weight)


def _bin_middle(bins: np.ndarray) -> np.ndarray:
    """The value in the middle (mantissa-wise) of each bin."""
    return (((bins + _KEY_MIN) << _SHIFT) | (1 << (_SHIFT - 1))).view(np.float64)


class WeightedSamples:
    """Counts of positive values (seconds), binned; `distribution()` gives them back sorted."""

    def __init__(self) -> None:
        self._counts = np.zeros(_BINS, dtype=np.int64)
        self._single = array("d")   # values added one at a time, counted in bulk

    def add(self, value: float) -> None:
        self._single.append(value)
        if len(self._single) >= _FLUSH_AT:
            self._flush()

    def add_gaps(self, times: np.ndarray, count: int) -> float:
        """The gap between each two consecutive `times` (float64, at least two), each `count`
        times; returns the largest."""
        return _count_gaps(self._counts, times, count)

    def _flush(self) -> None:
        if self._single:
            _count(self._counts, np.frombuffer(self._single, dtype=np.float64), 1)
            self._single = array("d")

    def distribution(self) -> "Distribution":
        self._flush()
        bins = np.flatnonzero(self._counts)
        return Distribution(_bin_middle(bins), self._counts[bins].copy())


@dataclass(frozen=True)
class Distribution:
    """Sorted unique `values`, each seen `counts` times."""

    values: np.ndarray
    counts: np.ndarray

    @classmethod
    def of(cls, samples: "Distribution | np.ndarray | list[float]") -> "Distribution":
        """A distribution from raw samples (e.g. measured gaps); a Distribution passes through."""
        if isinstance(samples, Distribution):
            return samples
        values, counts = np.unique(np.asarray(samples, dtype=np.float64), return_counts=True)
        return cls(values, counts.astype(np.int64))

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def quantile(self, q: float) -> float:
        """The q-quantile (0..1): the smallest value whose cumulative count reaches q x total
        (the inverted-CDF definition, exact for any number of samples)."""
        return float(self.quantiles(np.array([q]))[0])

    def quantiles(self, qs: np.ndarray) -> np.ndarray:
        if len(self.values) == 0:
            return np.full(len(qs), np.nan)
        cumulative = np.cumsum(self.counts)
        ranks = np.maximum(1, np.ceil(np.asarray(qs) * cumulative[-1]).astype(np.int64))
        return self.values[np.searchsorted(cumulative, ranks)]
