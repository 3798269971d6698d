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
        self._bins = np.zeros((3, 64))   # busy seconds, FLOPs, bytes: one array, one argument to the loops
        self._room_until_s = self._room()

    def add(self, start_s: float, end_s: float, flops: float, nbytes: float) -> None:
        """One step."""
        if end_s >= self._room_until_s:
            self._grow(end_s)
        _spread_step(self._bins, self.bin_s, start_s, end_s, flops, nbytes)

    def add_many(self, start_s: float, work: np.ndarray, steps: int) -> None:
        """The first `steps` of back-to-back steps whose end times, FLOPs and bytes are the rows
        of `work` (float64): the first starts at `start_s`, each later one when the one before ends."""
        if work[0, steps - 1] >= self._room_until_s:
            self._grow(float(work[0, steps - 1]))
        _spread_steps(self._bins, self.bin_s, start_s, work, steps)

    def bin_count(self, end_s: float) -> int:
        """Bins up to `end_s` (the last one partly empty when end_s is not on a bin edge)."""
        return max(1, math.ceil(end_s / self.bin_s))

    def series(self, end_s: float) -> dict[str, np.ndarray]:
        """Per-bin arrays of the `bin_count(end_s)` bins up to `end_s`."""
        bins = self.bin_count(end_s)
        if bins > self._bins.shape[1]:
            self._grow(end_s)
        busy_s, flops, nbytes = self._bins[:, :bins].copy()
        return {"busy_s": busy_s, "flops": flops, "bytes": nbytes}

    def _room(self) -> float:
        """Steps ending before this time fall in the bins allocated (one bin spare for rounding)."""
        return (self._bins.shape[1] - 1) * self.bin_s

    def _grow(self, end_s: float) -> None:
        old = self._bins
        self._bins = np.zeros((3, max(math.ceil(end_s / self.bin_s) + 2, 2 * old.shape[1])))
        self._bins[:, : old.shape[1]] = old
        self._room_until_s = self._room()


@njit(cache=True)
def _spread_step(bins, bin_s, start_s, end_s, step_flops, step_bytes):
    """Add one step to the bins it touches (rows of `bins`: busy seconds, FLOPs, bytes): a
    step inside one bin (or of zero length) whole, a step across bin edges by the overlap of
    its duration with each bin."""
    first = math.floor(start_s / bin_s)
    last = max(first, math.ceil(end_s / bin_s) - 1)
    duration = end_s - start_s
    if first == last or duration <= 0.0:
        bins[0, first] += duration
        bins[1, first] += step_flops
        bins[2, first] += step_bytes
        return
    for b in range(first, last + 1):
        overlap = min(end_s, (b + 1) * bin_s) - max(start_s, b * bin_s)
        bins[0, b] += overlap
        bins[1, b] += step_flops * (overlap / duration)
        bins[2, b] += step_bytes * (overlap / duration)


@njit(cache=True)
def _spread_steps(bins, bin_s, start_s, work, steps):
    """`_spread_step` for the first `steps` columns of `work`, back to back from `start_s`."""
    for i in range(steps):
        _spread_step(bins, bin_s, start_s, work[0, i], work[1, i], work[2, i])
        start_s = work[0, i]
