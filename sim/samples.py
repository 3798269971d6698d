"""Weighted samples: a compact store for millions of inter-token gaps.

Inside an unchanged decode batch every sequence sees the same gap between two steps, so
a step adds one value with a count instead of one value per sequence. `values_counts`
returns a canonical form (sorted unique values, summed counts) that does not depend on the
order or grouping in which samples were added: the step-by-step and the fast engine give
the same result bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_FLUSH_AT = 1 << 16   # pending entries before merging them into the canonical arrays


class WeightedSamples:
    def __init__(self) -> None:
        self._values = np.empty(0)
        self._counts = np.empty(0, dtype=np.int64)
        self._pending_values: list[np.ndarray | float] = []
        self._pending_counts: list[np.ndarray | int] = []
        self._pending = 0

    def add(self, value: float, count: int = 1) -> None:
        self._pending_values.append(value)
        self._pending_counts.append(count)
        self._pending += 1
        if self._pending >= _FLUSH_AT:
            self._merge()

    def add_many(self, values: np.ndarray, count: int) -> None:
        """Every value in `values`, each `count` times."""
        self._pending_values.append(np.asarray(values, dtype=np.float64))
        self._pending_counts.append(np.full(len(values), count, dtype=np.int64))
        self._pending += len(values)
        if self._pending >= _FLUSH_AT:
            self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        values = np.concatenate([self._values, *map(np.atleast_1d, self._pending_values)]).astype(np.float64)
        counts = np.concatenate([self._counts, *map(np.atleast_1d, self._pending_counts)]).astype(np.int64)
        unique, inverse = np.unique(values, return_inverse=True)
        self._values = unique
        self._counts = np.bincount(inverse, weights=counts, minlength=len(unique)).astype(np.int64)
        self._pending_values, self._pending_counts, self._pending = [], [], 0

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
