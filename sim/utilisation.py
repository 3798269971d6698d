"""Utilisation over time: the FLOPs and bytes of every step, spread over fixed time bins.

Means over a run hide the pattern that matters for monolithic serving (saturated during
prefills, idle between them); per-bin values keep it at a memory cost independent of the
number of steps.
"""

from __future__ import annotations

import math

import numpy as np


_FEW_STEPS = 16   # below this many steps, plain Python beats numpy's per-call overhead


_FEW_STEPS = 16   # up to this many steps, plain Python beats numpy's per-call overhead


class UtilisationTimeline:
    """Busy seconds, FLOPs and bytes per `bin_s`-wide bin of one instance."""

    def __init__(self, bin_s: float):
        self.bin_s = bin_s
        self.busy_s = np.zeros(64)
        self.flops = np.zeros(64)
        self.bytes = np.zeros(64)

    def _grow(self, bins: int) -> None:
        size = max(bins, 2 * len(self.busy_s))
        for name in ("busy_s", "flops", "bytes"):
            old = getattr(self, name)
            new = np.zeros(size)
            new[: len(old)] = old
            setattr(self, name, new)

    def add(self, start_s: float, end_s: float, flops: float, nbytes: float) -> None:
        """Spread one step's work uniformly over its duration."""
        first = int(start_s // self.bin_s)
        last = max(first, math.ceil(end_s / self.bin_s) - 1)
        if last >= len(self.busy_s):
            self._grow(last + 1)
        duration = end_s - start_s
        if first == last or duration <= 0:
            self.busy_s[first] += duration
            self.flops[first] += flops
            self.bytes[first] += nbytes
            return
        for b in range(first, last + 1):
            overlap = min(end_s, (b + 1) * self.bin_s) - max(start_s, b * self.bin_s)
            share = overlap / duration
            self.busy_s[b] += overlap
            self.flops[b] += flops * share
            self.bytes[b] += nbytes * share

    def add_many(self, starts: np.ndarray, ends: np.ndarray, flops: np.ndarray, nbytes: np.ndarray) -> None:
        """Consecutive steps at once; the same sums, in the same order, as calling `add` for each."""
        if len(starts) <= _FEW_STEPS:
            for args in zip(starts.tolist(), ends.tolist(), flops.tolist(), nbytes.tolist()):
                self.add(*args)
            return
        first = np.floor_divide(starts, self.bin_s).astype(np.int64)
        last = np.maximum(first, np.ceil(ends / self.bin_s).astype(np.int64) - 1)
        if last[-1] >= len(self.busy_s):
            self._grow(int(last[-1]) + 1)
        durations = ends - starts
        spanning = np.flatnonzero((first != last) & (durations > 0))
        begin = 0
        for i in [*spanning.tolist(), len(starts)]:
            # steps begin..i-1 lie inside one bin each: accumulate them in order, unbuffered
            index = first[begin:i]
            np.add.at(self.busy_s, index, durations[begin:i])
            np.add.at(self.flops, index, flops[begin:i])
            np.add.at(self.bytes, index, nbytes[begin:i])
            if i < len(starts):
                self.add(float(starts[i]), float(ends[i]), float(flops[i]), float(nbytes[i]))
            begin = i + 1

    def series(self, end_s: float) -> dict[str, np.ndarray]:
        """Per-bin arrays up to `end_s` (the last bin is partly empty when end_s is not on a bin edge)."""
        bins = max(1, math.ceil(end_s / self.bin_s))
        if bins > len(self.busy_s):
            self._grow(bins)
        return {"busy_s": self.busy_s[:bins].copy(), "flops": self.flops[:bins].copy(),
                "bytes": self.bytes[:bins].copy()}
