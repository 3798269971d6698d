"""Weighted samples: a compact store for millions of inter-token gaps.

Inside an unchanged decode batch every sequence sees the same gap between two steps, so
a step adds one value with a count instead of one value per sequence. `values_counts`
returns a canonical form (sorted unique values, summed counts) that does not depend on the
order or grouping in which samples were added: the step-by-step and the fast engine give
the same result bit for bit.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

import numpy as np

_FLUSH_AT = 1 << 16   # pending entries before merging them into the canonical arrays


class WeightedSamples:
    def __init__(self) -> None:
        self._values = np.empty(0)
        self._counts = np.empty(0, dtype=np.int64)
        self._single = array("d")           # values seen once, appended one by one
        self._batches: list[tuple[np.ndarray, int]] = []
        self._pending = 0

    def add(self, value: float) -> None:
        self._single.append(value)
        self._pending += 1
        if self._pending >= _FLUSH_AT:
            self._merge()

    def add_many(self, values: np.ndarray, count: int) -> None:
        """Every value in `values`, each `count` times."""
        self._batches.append((values, count))
        self._pending += len(values)
        if self._pending >= _FLUSH_AT:
            self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        values = np.concatenate([self._values, np.frombuffer(self._single, dtype=np.float64),
                                 *(v for v, _ in self._batches)])
        counts = np.concatenate([self._counts, np.ones(len(self._single), dtype=np.int64),
                                 *(np.full(len(v), c, dtype=np.int64) for v, c in self._batches)])
        unique, inverse = np.unique(values, return_inverse=True)
        self._values = unique
        self._counts = np.bincount(inverse, weights=counts, minlength=len(unique)).astype(np.int64)
        self._single, self._batches, self._pending = array("d"), [], 0

    def distribution(self) -> "Distribution":
        self._merge()
        return Distribution(self._values.copy(), self._counts.copy())


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
