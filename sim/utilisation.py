"""Utilisation over time: the FLOPs and bytes of every step, spread over fixed time bins.

Means over a run hide the pattern that matters for monolithic serving (saturated during
prefills, idle between them); per-bin values keep it at a memory cost independent of the
number of steps.

Each step's share is added to its bins as it is reported, in step order, by a compiled loop:
a decode window's hundreds of steps cost one call, and the sums are the same, bit for bit,
whether the steps come one at a time (the step-by-step engine) or as windows.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


class UtilisationTimeline:
    """Busy seconds, FLOPs and bytes per `bin_s`-wide bin of one instance.

    A step's work is spread uniformly over its duration: a step across a bin edge gives
    each bin the share of its duration that falls in it.
    """

    def __init__(self, bin_s: float):
        self.bin_s = bin_s
        self._busy_s = np.zeros(64)
        self._flops = np.zeros(64)
        self._bytes = np.zeros(64)
        self._room_until_s = self._room()

    def add(self, start_s: float, end_s: float, flops: float, nbytes: float) -> None:
        """One step."""
        if end_s >= self._room_until_s:
            self._grow(end_s)
        _spread_step(self._busy_s, self._flops, self._bytes, self.bin_s, start_s, end_s, flops, nbytes)

    def add_many(self, start_s: float, ends: np.ndarray, flops: np.ndarray, nbytes: np.ndarray) -> None:
        """Back-to-back steps (float64 arrays): the first starts at `start_s`, each later one
        when the one before ends."""
        if ends[-1] >= self._room_until_s:
            self._grow(float(ends[-1]))
        _spread_steps(self._busy_s, self._flops, self._bytes, self.bin_s, start_s, ends, flops, nbytes)

    def series(self, end_s: float) -> dict[str, np.ndarray]:
        """Per-bin arrays up to `end_s` (the last bin is partly empty when end_s is not on a bin edge)."""
        bins = max(1, math.ceil(end_s / self.bin_s))
        if bins > len(self._busy_s):
            self._grow(end_s)
        return {"busy_s": self._busy_s[:bins].copy(), "flops": self._flops[:bins].copy(),
                "bytes": self._bytes[:bins].copy()}

    def _room(self) -> float:
        """Steps ending before this time fall in the bins allocated (one bin spare for rounding)."""
        return (len(self._busy_s) - 1) * self.bin_s

    def _grow(self, end_s: float) -> None:
        size = max(math.ceil(end_s / self.bin_s) + 2, 2 * len(self._busy_s))
        for name in ("_busy_s", "_flops", "_bytes"):
            old = getattr(self, name)
            new = np.zeros(size)
            new[: len(old)] = old
            setattr(self, name, new)
        self._room_until_s = self._room()


@njit(cache=True)
def _spread_step(busy_s, flops, nbytes, bin_s, start_s, end_s, step_flops, step_bytes):
    """Add one step to the bins it touches: a step inside one bin (or of zero length) whole,
    a step across bin edges by the overlap of its duration with each bin."""
    first = int(start_s // bin_s)
    last = max(first, math.ceil(end_s / bin_s) - 1)
    duration = end_s - start_s
    if first == last or duration <= 0.0:
        busy_s[first] += duration
        flops[first] += step_flops
        nbytes[first] += step_bytes
        return
    for b in range(first, last + 1):
        overlap = min(end_s, (b + 1) * bin_s) - max(start_s, b * bin_s)
        busy_s[b] += overlap
        flops[b] += step_flops * (overlap / duration)
        nbytes[b] += step_bytes * (overlap / duration)


@njit(cache=True)
def _spread_steps(busy_s, flops, nbytes, bin_s, start_s, ends, step_flops, step_bytes):
    """`_spread_step` for back-to-back steps, the first starting at `start_s`."""
    for i in range(len(ends)):
        _spread_step(busy_s, flops, nbytes, bin_s, start_s, ends[i], step_flops[i], step_bytes[i])
        start_s = ends[i]
