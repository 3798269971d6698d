"""Utilisation over time: the FLOPs and bytes of every step, spread over fixed time bins.

Means over a run hide the pattern that matters for monolithic serving (saturated during
prefills, idle between them); per-bin values keep it at a memory cost independent of the
number of steps.

Steps are buffered and spread over the bins in bulk: one numpy pass per few thousand steps
instead of one per step or per decode window, which dominated the simulator's bookkeeping.
The bulk pass adds each step's share to its bins in step order, so the sums are the same,
bit for bit, as adding the steps one at a time.
"""

from __future__ import annotations

import math
from array import array

import numpy as np

FLUSH_STEPS = 4096   # buffered steps per instance before spreading them (4 x 8 bytes each)


class UtilisationTimeline:
    """Busy seconds, FLOPs and bytes per `bin_s`-wide bin of one instance.

    A step's work is spread uniformly over its duration: a step across a bin edge gives
    each bin the share of its duration that falls in it.
    """

    def __init__(self, bin_s: float, flush_steps: int = FLUSH_STEPS):
        self.bin_s = bin_s
        self.flush_steps = flush_steps
        self._busy_s = np.zeros(64)
        self._flops = np.zeros(64)
        self._bytes = np.zeros(64)
        self._pending = tuple(array("d") for _ in range(4))   # starts, ends, flops, bytes

    def add(self, start_s: float, end_s: float, flops: float, nbytes: float) -> None:
        """One step."""
        starts, ends, step_flops, step_bytes = self._pending
        starts.append(start_s)
        ends.append(end_s)
        step_flops.append(flops)
        step_bytes.append(nbytes)
        if len(starts) >= self.flush_steps:
            self._flush()

    def add_many(self, start_s: float, ends: np.ndarray, flops: np.ndarray, nbytes: np.ndarray) -> None:
        """Back-to-back steps (float64 arrays): the first starts at `start_s`, each later one
        when the one before ends."""
        starts, step_ends, step_flops, step_bytes = self._pending
        starts.append(start_s)
        starts.frombytes(ends[:-1].tobytes())
        step_ends.frombytes(ends.tobytes())
        step_flops.frombytes(flops.tobytes())
        step_bytes.frombytes(nbytes.tobytes())
        if len(starts) >= self.flush_steps:
            self._flush()

    def series(self, end_s: float) -> dict[str, np.ndarray]:
        """Per-bin arrays up to `end_s` (the last bin is partly empty when end_s is not on a bin edge)."""
        self._flush()
        bins = max(1, math.ceil(end_s / self.bin_s))
        if bins > len(self._busy_s):
            self._grow(bins)
        return {"busy_s": self._busy_s[:bins].copy(), "flops": self._flops[:bins].copy(),
                "bytes": self._bytes[:bins].copy()}

    def _grow(self, bins: int) -> None:
        size = max(bins, 2 * len(self._busy_s))
        for name in ("_busy_s", "_flops", "_bytes"):
            old = getattr(self, name)
            new = np.zeros(size)
            new[: len(old)] = old
            setattr(self, name, new)

    def _flush(self) -> None:
        if not self._pending[0]:
            return
        starts, ends, flops, nbytes = (np.frombuffer(pending, dtype=np.float64).copy() for pending in self._pending)
        self._pending = tuple(array("d") for _ in range(4))
        bin_s = self.bin_s
        first = np.floor_divide(starts, bin_s).astype(np.int64)
        last = np.maximum(first, np.ceil(ends / bin_s).astype(np.int64) - 1)
        if last.max() >= len(self._busy_s):
            self._grow(int(last.max()) + 1)
        durations = ends - starts
        spanning = (first != last) & (durations > 0)
        if not spanning.any():
            bins, busy, step_flops, step_bytes = first, durations, flops, nbytes
        else:
            # One entry per (step, bin it touches), in step order: a step inside one bin keeps
            # its whole duration; the few that span bins get the overlap with each, written in
            # a second pass over those steps alone.
            counts = np.where(spanning, last - first + 1, 1)
            positions = np.cumsum(counts) - counts      # each step's first entry
            total = int(positions[-1] + counts[-1])
            bins, busy = np.empty(total, dtype=np.int64), np.empty(total)
            step_flops, step_bytes = np.empty(total), np.empty(total)
            bins[positions], busy[positions], step_flops[positions], step_bytes[positions] = \
                first, durations, flops, nbytes
            split = np.flatnonzero(spanning)
            split_counts = counts[split]
            step = np.repeat(split, split_counts)
            offset = np.arange(len(step)) - np.repeat(np.cumsum(split_counts) - split_counts, split_counts)
            entry, split_bins = positions[step] + offset, first[step] + offset
            overlap = (np.minimum(ends[step], (split_bins + 1) * bin_s)
                       - np.maximum(starts[step], split_bins * bin_s))
            share = overlap / durations[step]
            bins[entry], busy[entry] = split_bins, overlap
            step_flops[entry], step_bytes[entry] = flops[step] * share, nbytes[step] * share
        # ufunc.at adds unbuffered, entry after entry: the order of the steps is kept per bin.
        np.add.at(self._busy_s, bins, busy)
        np.add.at(self._flops, bins, step_flops)
        np.add.at(self._bytes, bins, step_bytes)
